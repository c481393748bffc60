//! Verify step 4: the recount against one snapshot of the store (a
//! consistent point in its commit history).
//!
//! Per window the recount counts a click in or the store holds a row of:
//!
//! - settled (a `final` or `restated` version): its version history must be
//!   well formed and its newest version must hold the recount's totals;
//! - not settled: it must not be closed (end + allowed lateness at or below
//!   the committed epoch) if the recount counts a click in it; else it is
//!   open and not checked.
//!
//! Then per key and 1m window, the late ledger's request ids against the
//! recount's too-late clicks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::event::{EventTime, RequestId};
use crate::row::{format_uuid, granularity_label, Row, Status};
use crate::store::{StoreSnapshot, WindowKey};

use super::{Recount, Totals, VerifyError};

/// Mismatches `tally verify` lists unless told otherwise (`--show`).
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

/// Which check a window failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MismatchKind {
    /// The newest settled version does not hold the recount's totals.
    Totals,
    /// The version history is not numbered 1, 2, … with the right statuses
    /// and non-decreasing clicks.
    Versions,
    /// A closed window the recount counts clicks in has no settled row.
    Missing,
    /// A settled window the recount counts no click in.
    Unexpected,
    /// The late ledger of a key and 1m window holds other request ids.
    Ledger,
}

/// One way in which the store and the recount disagree about one window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// For [`MismatchKind::Ledger`], a 1m window.
    pub window: WindowKey,
    pub kind: MismatchKind,
    /// The stored version the mismatch is about, if one.
    pub version: Option<u32>,
    pub reason: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = &self.window;
        write!(f, "{} {} {} window {}", w.key_type.as_str(), w.key, granularity_label(w.granularity_ms), w.window_start)?;
        if let Some(version) = self.version {
            write!(f, " version {version}")?;
        }
        if self.kind == MismatchKind::Ledger {
            write!(f, " late ledger")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// The outcome of [`compare`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Windows checked: settled, or closed with counted clicks.
    pub windows_checked: u64,
    /// Windows the recount counts clicks in that are still open (not
    /// settled, end + allowed lateness beyond the committed epoch).
    pub windows_open: u64,
    /// (key, 1m window) pairs whose late ledger was compared.
    pub ledger_windows_checked: u64,
    /// The first mismatches, in window order (as many as [`compare`] was
    /// asked to keep).
    pub mismatches: Vec<Mismatch>,
    /// All mismatches, kept or not.
    pub mismatch_count: u64,
    /// What could not be checked, one line each.
    pub notes: Vec<String>,
    keep: usize,
}

impl Report {
    /// `verify: N windows checked, …, M mismatches`, then one line per kept
    /// mismatch and per note.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "verify: {} windows checked, {} still open, {} late-ledger windows checked, {} mismatches",
            self.windows_checked, self.windows_open, self.ledger_windows_checked, self.mismatch_count
        );
        for mismatch in &self.mismatches {
            out.push_str(&format!("\n  {mismatch}"));
        }
        let unlisted = self.mismatch_count - self.mismatches.len() as u64;
        if unlisted > 0 {
            out.push_str(&format!("\n  ({unlisted} more not listed)"));
        }
        for note in &self.notes {
            out.push_str(&format!("\n{note}"));
        }
        out
    }

    pub fn is_clean(&self) -> bool {
        self.mismatch_count == 0
    }

    fn push(&mut self, window: &WindowKey, kind: MismatchKind, version: Option<u32>, reason: String) {
        self.mismatch_count += 1;
        if self.mismatches.len() < self.keep {
            self.mismatches.push(Mismatch { window: window.clone(), kind, version, reason });
        }
    }
}

/// Compares the recount with one snapshot of the store; the report keeps
/// the first `keep` mismatches in full and counts the rest.
pub fn compare(recount: &Recount, snapshot: &dyn StoreSnapshot, keep: usize) -> Result<Report, VerifyError> {
    let committed = snapshot.committed_epoch()?;
    let mut stored = BTreeSet::new();
    for row in snapshot.iter_rows()? {
        stored.insert(WindowKey::of(&row?));
    }
    let mut report = Report { keep, ..Report::default() };
    let windows: BTreeSet<&WindowKey> = recount.windows.keys().chain(&stored).collect();
    for window in windows {
        let history = snapshot.row_history(window)?;
        let check = WindowCheck { window, distinct_users: recount.distinct_users };
        let expected = recount.windows.get(window);
        if history.is_empty() {
            let Some(expected) = expected else { continue }; // only partial rows: not checked
            match committed.filter(|&epoch| closes_by(window, recount.allowed_lateness_ms, epoch)) {
                Some(epoch) => {
                    report.windows_checked += 1;
                    check.missing(expected, epoch, &mut report);
                }
                None => report.windows_open += 1,
            }
            continue;
        }
        report.windows_checked += 1;
        check.versions(&history, &mut report);
        check.totals(expected, &history, &mut report);
    }
    compare_ledger(recount, snapshot, &mut report)?;
    Ok(report)
}

/// Whether `window` closes by the epoch `committed`: its end plus the
/// allowed lateness is at most `committed` (never if that overflows).
fn closes_by(window: &WindowKey, allowed_lateness_ms: u64, committed: EventTime) -> bool {
    let close = window.window_start.checked_add(window.granularity_ms).and_then(|end| end.checked_add(allowed_lateness_ms));
    close.is_some_and(|close| close <= committed)
}

/// The checks of one window.
struct WindowCheck<'a> {
    window: &'a WindowKey,
    /// Whether distinct users are compared.
    distinct_users: bool,
}

impl WindowCheck<'_> {
    fn missing(&self, expected: &Totals, committed: EventTime, report: &mut Report) {
        let reason = format!(
            "missing: no final or restated row, though end + allowed lateness is within the committed epoch {committed}; the recount counts {} clicks",
            expected.clicks
        );
        report.push(self.window, MismatchKind::Missing, None, reason);
    }

    /// Versions 1, 2, … without gaps; 1 final or restated, later ones
    /// restated; clicks never going down.
    fn versions(&self, history: &[Row], report: &mut Report) {
        let mut previous: Option<&Row> = None;
        for (row, number) in history.iter().zip(1u32..) {
            if let Some(reason) = version_problem(row, number, previous) {
                report.push(self.window, MismatchKind::Versions, Some(row.version), reason);
                if row.version != number {
                    break; // one gap is enough: the later numbers are all off
                }
            }
            previous = Some(row);
        }
    }

    /// The newest settled version against the recount's totals.
    fn totals(&self, expected: Option<&Totals>, history: &[Row], report: &mut Report) {
        let newest = history.last().expect("a settled window has a version");
        let Some(want) = expected else {
            let reason =
                format!("unexpected: {} with {} clicks, the recount counts no click in this window", newest.status.as_str(), newest.clicks);
            report.push(self.window, MismatchKind::Unexpected, Some(newest.version), reason);
            return;
        };
        let mut reasons = Vec::new();
        if want.clicks != newest.clicks {
            reasons.push(format!("clicks: expected {}, found {}", want.clicks, newest.clicks));
        }
        let tolerance = distinct_tolerance(want.distinct_users);
        if self.distinct_users && want.distinct_users.abs_diff(newest.distinct_users) > tolerance {
            reasons.push(format!(
                "distinct_users: estimate {} is more than {tolerance} off the exact {}",
                newest.distinct_users, want.distinct_users
            ));
        }
        if !reasons.is_empty() {
            report.push(self.window, MismatchKind::Totals, Some(newest.version), reasons.join("; "));
        }
    }
}

/// What is wrong with the `number`th settled version `row` of a window
/// after `previous`, if anything.
fn version_problem(row: &Row, number: u32, previous: Option<&Row>) -> Option<String> {
    if row.version != number {
        return Some(match previous {
            None => format!("the first settled version is {}, not 1", row.version),
            Some(p) => format!("version {} follows version {}: settled versions are numbered without gaps", row.version, p.version),
        });
    }
    if row.status == Status::Partial || (number > 1 && row.status != Status::Restated) {
        return Some(format!("status {}: version 1 is final or restated, every later version restated", row.status.as_str()));
    }
    let fewer = previous.filter(|p| row.clicks < p.clicks)?;
    Some(format!("clicks go down from {} (version {}) to {}", fewer.clicks, fewer.version, row.clicks))
}

/// Per key and 1m window, the ledger's request ids (any batch, held or
/// restating) against the recount's too-late clicks.
fn compare_ledger(recount: &Recount, snapshot: &dyn StoreSnapshot, report: &mut Report) -> Result<(), VerifyError> {
    let mut stored: BTreeMap<WindowKey, BTreeSet<RequestId>> = BTreeMap::new();
    for entry in snapshot.late_entries(0, EventTime::MAX)? {
        let window = WindowKey {
            key_type: entry.key_type,
            key: entry.key,
            granularity_ms: crate::event::MINUTE_MS,
            window_start: entry.window_start,
        };
        stored.entry(window).or_default().extend(entry.request_ids);
    }
    let empty = BTreeSet::new();
    let windows: BTreeSet<&WindowKey> = recount.ledger.keys().chain(stored.keys()).collect();
    for window in windows {
        report.ledger_windows_checked += 1;
        let (want, found) = (recount.ledger.get(window).unwrap_or(&empty), stored.get(window).unwrap_or(&empty));
        if want == found {
            continue;
        }
        let mut reasons = Vec::new();
        for (ids, whose) in [(want - found, "the recount"), (found - want, "the store")] {
            if let Some(first) = ids.first() {
                reasons.push(format!("{} request ids only in {whose} (first {})", ids.len(), format_uuid(*first)));
            }
        }
        report.push(window, MismatchKind::Ledger, None, reasons.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::KeyType;

    fn window(granularity_ms: u64, window_start: u64) -> WindowKey {
        WindowKey { key_type: KeyType::Ad, key: "a".into(), granularity_ms, window_start }
    }

    #[test]
    fn tolerance_is_two_for_small_counts_and_four_standard_errors_beyond() {
        assert_eq!(distinct_tolerance(0), 2);
        assert_eq!(distinct_tolerance(30), 2);
        assert_eq!(distinct_tolerance(1_000), 65);
        assert_eq!(distinct_tolerance(100_000), 6_500);
    }

    #[test]
    fn a_window_closes_at_its_end_plus_lateness_and_never_on_overflow() {
        assert!(closes_by(&window(60_000, 0), 10_000, 70_000));
        assert!(!closes_by(&window(60_000, 0), 10_000, 69_999));
        let last = u64::MAX - u64::MAX % 60_000;
        assert!(!closes_by(&window(60_000, last), 0, u64::MAX), "the end overflows");
        assert!(!closes_by(&window(60_000, last - 60_000), 60_000, u64::MAX), "end + lateness overflows");
        assert!(closes_by(&window(60_000, last - 60_000), 0, u64::MAX));
    }

    #[test]
    fn versions_are_numbered_from_1_final_or_restated_first_then_restated() {
        let row = |version: u32, status: Status, clicks: u64| Row {
            key_type: KeyType::Ad,
            key: "a".into(),
            granularity_ms: 60_000,
            window_start: 0,
            clicks,
            distinct_users: clicks,
            status,
            version,
        };
        let (fin, restated) = (row(1, Status::Final, 2), row(2, Status::Restated, 3));
        assert_eq!(version_problem(&fin, 1, None), None);
        assert_eq!(version_problem(&row(1, Status::Restated, 2), 1, None), None);
        assert_eq!(version_problem(&restated, 2, Some(&fin)), None);
        assert_eq!(version_problem(&row(2, Status::Restated, 2), 1, None).unwrap(), "the first settled version is 2, not 1");
        let gap = version_problem(&row(3, Status::Restated, 3), 2, Some(&fin)).unwrap();
        assert_eq!(gap, "version 3 follows version 1: settled versions are numbered without gaps");
        let twice_final = version_problem(&row(2, Status::Final, 3), 2, Some(&fin)).unwrap();
        assert_eq!(twice_final, "status final: version 1 is final or restated, every later version restated");
        assert!(version_problem(&row(1, Status::Partial, 3), 1, None).unwrap().starts_with("status partial"));
        let fewer = version_problem(&row(2, Status::Restated, 1), 2, Some(&fin)).unwrap();
        assert_eq!(fewer, "clicks go down from 2 (version 1) to 1");
    }

    #[test]
    fn the_summary_lists_the_kept_mismatches_and_counts_the_rest() {
        let mut report = Report { windows_checked: 20, keep: 2, ..Report::default() };
        for start in 0..3 {
            report.push(&window(60_000, start * 60_000), MismatchKind::Totals, Some(1), "clicks: expected 2, found 1".into());
        }
        report.notes.push("note: x".into());
        let summary = report.summary();
        let lines: Vec<&str> = summary.lines().collect();
        assert_eq!(
            lines,
            [
                "verify: 20 windows checked, 0 still open, 0 late-ledger windows checked, 3 mismatches",
                "  ad a 1m window 0 version 1: clicks: expected 2, found 1",
                "  ad a 1m window 60000 version 1: clicks: expected 2, found 1",
                "  (1 more not listed)",
                "note: x",
            ]
        );
    }
}
