//! Recount step 3: the recount against the store, version by version.
//!
//! Every window that the recount expects or the store settled is checked on
//! one store snapshot (a consistent point in its commit history):
//!
//! - each expected version must be in the window's version history
//!   (`row_versions`) with the same status and clicks, and a distinct-user
//!   estimate within [`distinct_tolerance`];
//! - each stored final or restated version must be expected;
//! - if all of that holds, the latest row (`rows`, what queries read) must be
//!   the newest version.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::event::{Key, KeyType};
use crate::row::{granularity_label, Row, Status};
use crate::store::{EmbeddedReader, WindowKey};

use super::{ExpectedVersion, Recount, VerifyError};

/// Mismatches a [`Report`] keeps in full; the rest are only counted.
pub const MAX_MISMATCHES_KEPT: usize = 1_000;
/// Mismatches [`Report::summary`] lists.
pub const SUMMARY_MISMATCH_LINES: usize = 10;
/// HyperLogLog standard error of a dense sketch of 4096 registers:
/// 1.04 / √4096.
const HLL_STANDARD_ERROR: f64 = 1.04 / 64.0;
/// How many standard errors an estimate may be off.
const TOLERANCE_STANDARD_ERRORS: f64 = 4.0;
/// The tolerance of small counts (sparse sketches are within ±1).
const MIN_TOLERANCE: u64 = 2;

/// The largest accepted `|estimate − exact|` of a distinct-user count:
/// `max(2, 4 × 1.04/√4096 × exact)`, rounded down.
pub fn distinct_tolerance(exact: u64) -> u64 {
    let relative = (TOLERANCE_STANDARD_ERRORS * HLL_STANDARD_ERROR * exact as f64) as u64;
    relative.max(MIN_TOLERANCE)
}

/// One version of one window where the store and the recount disagree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub key_type: KeyType,
    pub key: Key,
    pub granularity_ms: u64,
    pub window_start: u64,
    pub version: u32,
    /// `(status, clicks, exact distinct users)`; `None` if not expected.
    pub expected: Option<(Status, u64, u64)>,
    /// `(status, clicks, estimated distinct users)`; `None` if not stored.
    pub found: Option<(Status, u64, u64)>,
    pub reason: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let granularity = granularity_label(self.granularity_ms);
        write!(
            f,
            "{} {} {granularity} window {} version {}: {}",
            self.key_type.as_str(),
            self.key,
            self.window_start,
            self.version,
            self.reason
        )
    }
}

/// The outcome of [`compare`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Windows the recount expects or the store holds a settled version of.
    pub windows_checked: u64,
    /// The first [`MAX_MISMATCHES_KEPT`] mismatches, in window order.
    pub mismatches: Vec<Mismatch>,
    /// All mismatches, kept or not.
    pub mismatch_count: u64,
}

impl Report {
    /// `verify: N windows checked, M mismatches`, then one line for each of
    /// the first [`SUMMARY_MISMATCH_LINES`] mismatches.
    pub fn summary(&self) -> String {
        let mut out = format!("verify: {} windows checked, {} mismatches", self.windows_checked, self.mismatch_count);
        for mismatch in self.mismatches.iter().take(SUMMARY_MISMATCH_LINES) {
            out.push_str(&format!("\n  {mismatch}"));
        }
        out
    }

    pub fn is_clean(&self) -> bool {
        self.mismatch_count == 0
    }

    fn push(&mut self, mismatch: Mismatch) {
        self.mismatch_count += 1;
        if self.mismatches.len() < MAX_MISMATCHES_KEPT {
            self.mismatches.push(mismatch);
        }
    }
}

/// Compares every final/restated version the store holds against the
/// recount, and every expected version against the store (a missing version
/// is a mismatch too), on one snapshot of the store.
pub fn compare(recount: &Recount, store: &EmbeddedReader) -> Result<Report, VerifyError> {
    let snapshot = store.snapshot()?;
    let mut latest: BTreeMap<WindowKey, Row> = BTreeMap::new();
    for row in snapshot.iter_rows()? {
        let row = row?;
        latest.insert(WindowKey::of(&row), row);
    }
    let windows: BTreeSet<&WindowKey> = recount.windows.keys().chain(latest.keys()).collect();
    let mut report = Report::default();
    for window in windows {
        let expected = recount.versions(window);
        let history = snapshot.row_history(window)?;
        if expected.is_empty() && history.is_empty() {
            continue; // only partial rows: informative, not checked
        }
        report.windows_checked += 1;
        let check = Check { window, distinct_users: recount.distinct_users };
        let before = report.mismatch_count;
        check.versions(expected, &history, &mut report);
        if report.mismatch_count == before {
            check.latest(expected.last(), latest.get(window), &mut report);
        }
    }
    Ok(report)
}

/// The checks of one window.
struct Check<'a> {
    window: &'a WindowKey,
    /// Whether distinct users are compared.
    distinct_users: bool,
}

impl Check<'_> {
    /// Expected and stored versions, matched by version number.
    fn versions(&self, expected: &[ExpectedVersion], history: &[Row], report: &mut Report) {
        let mut stored: BTreeMap<u32, &Row> = BTreeMap::new();
        for row in history {
            if stored.insert(row.version, row).is_some() {
                report.push(self.mismatch(row.version, None, Some(row), "the history holds this version twice".into()));
            }
        }
        let expected: BTreeMap<u32, &ExpectedVersion> = expected.iter().map(|v| (v.version, v)).collect();
        let numbers: BTreeSet<u32> = expected.keys().chain(stored.keys()).copied().collect();
        for version in numbers {
            let (want, found) = (expected.get(&version).copied(), stored.get(&version).copied());
            if let Some(reason) = self.differences(want, found) {
                report.push(self.mismatch(version, want, found, reason));
            }
        }
    }

    /// The latest row must be the newest version, once the history matched.
    fn latest(&self, newest: Option<&ExpectedVersion>, latest: Option<&Row>, report: &mut Report) {
        let reason = match (newest, latest) {
            (None, None) => return,
            (None, Some(row)) if row.status == Status::Partial => return,
            (Some(want), Some(row)) if row.version == want.version && self.differences(Some(want), Some(row)).is_none() => return,
            (None, Some(_)) => "the latest row is settled but no version is expected".to_string(),
            (Some(want), None) => format!("no latest row, expected version {}", want.version),
            (Some(want), Some(row)) => {
                format!("the latest row is version {} ({:?}), expected the newest version {}", row.version, row.status, want.version)
            }
        };
        let version = newest.map_or_else(|| latest.map_or(0, |row| row.version), |want| want.version);
        report.push(self.mismatch(version, newest, latest, reason));
    }

    /// Why a stored version differs from the expected one, or `None`.
    fn differences(&self, want: Option<&ExpectedVersion>, found: Option<&Row>) -> Option<String> {
        let (want, found) = match (want, found) {
            (None, None) => return None,
            (Some(_), None) => return Some("missing: the store has no such version".into()),
            (None, Some(_)) => return Some("unexpected: the recount expects no such version".into()),
            (Some(want), Some(found)) => (want, found),
        };
        let mut reasons = Vec::new();
        if want.status != found.status {
            reasons.push(format!("status: expected {:?}, found {:?}", want.status, found.status));
        }
        if want.clicks != found.clicks {
            reasons.push(format!("clicks: expected {}, found {}", want.clicks, found.clicks));
        }
        let tolerance = distinct_tolerance(want.distinct_users);
        if self.distinct_users && want.distinct_users.abs_diff(found.distinct_users) > tolerance {
            reasons.push(format!(
                "distinct_users: estimate {} is more than {tolerance} off the exact {}",
                found.distinct_users, want.distinct_users
            ));
        }
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }

    fn mismatch(&self, version: u32, want: Option<&ExpectedVersion>, found: Option<&Row>, reason: String) -> Mismatch {
        Mismatch {
            key_type: self.window.key_type,
            key: self.window.key.clone(),
            granularity_ms: self.window.granularity_ms,
            window_start: self.window.window_start,
            version,
            expected: want.map(|v| (v.status, v.clicks, v.distinct_users)),
            found: found.map(|row| (row.status, row.clicks, row.distinct_users)),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_is_two_for_small_counts_and_four_standard_errors_beyond() {
        assert_eq!(distinct_tolerance(0), 2);
        assert_eq!(distinct_tolerance(30), 2);
        assert_eq!(distinct_tolerance(1_000), 65);
        assert_eq!(distinct_tolerance(100_000), 6_500);
    }

    #[test]
    fn summary_lists_at_most_ten_mismatches() {
        let mismatch = |v: u32| Mismatch {
            key_type: KeyType::Ad,
            key: "a".into(),
            granularity_ms: 60_000,
            window_start: 0,
            version: v,
            expected: Some((Status::Final, 2, 2)),
            found: None,
            reason: "missing: the store has no such version".into(),
        };
        let mut report = Report { windows_checked: 20, ..Report::default() };
        (1..=12).for_each(|v| report.push(mismatch(v)));
        let summary = report.summary();
        let lines: Vec<&str> = summary.lines().collect();
        assert_eq!(lines[0], "verify: 20 windows checked, 12 mismatches");
        assert_eq!(lines.len(), 11);
        assert_eq!(lines[1], "  ad a 1m window 0 version 1: missing: the store has no such version");
    }
}
