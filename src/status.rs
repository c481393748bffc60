//! `tally status`: where a job stands, read from what it committed and from
//! its log, beside a running job or without one.
//!
//! Everything here is read, never written: the store through a reader that
//! takes no lock, the log through a [`crate::log::LogView`] or a Kafka
//! consumer's end offsets. So the report answers the operator's questions
//! (is it keeping up, how far behind is the data, what counted the rows)
//! without disturbing the job it describes. The command in `src/cmd/`
//! gathers the inputs and prints this report, as text or JSON.

use std::collections::HashSet;
use std::path::Path;

use serde::Serialize;

use crate::event::KeyType;
use crate::row::LateEntry;
use crate::store::settings::{RunSettings, SETTINGS_KEY};
use crate::store::{StoreError, StoreSnapshot};

/// The report of `tally status`.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// The job the store belongs to.
    pub job: String,
    /// Where the committed rows live (the store's path or keyspace).
    pub store: String,
    /// The log read (the embedded log's path, or the Kafka topic).
    pub log: String,
    /// The process holding the store or the log, if one is running.
    pub running_pid: Option<u32>,
    /// The version the query API and `tally export` serve.
    pub serving: String,
    /// The last committed epoch; `None` before the first commit.
    pub committed: Option<Committed>,
    pub partitions: Vec<PartitionStatus>,
    /// Clicks not yet committed, over every partition whose end is known.
    pub lag_total: Option<u64>,
    /// A fingerprint of the settings that decide counts (SEMANTICS.md), so
    /// that two stores can be told to count alike, and the catalog's.
    pub settings_fingerprint: Option<String>,
    pub catalog: Option<String>,
    pub late: LateTotals,
    /// Rows in the store (every version of every window).
    pub rows: u64,
    /// The versions of the output (`live` and each backfill).
    pub versions: Vec<VersionLine>,
}

/// One version of the output, as `tally versions` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct VersionLine {
    pub name: String,
    pub serving: bool,
    /// Clicks between its origin and its committed offsets.
    pub clicks: Option<u64>,
    pub rows: u64,
    pub committed_epoch: Option<u64>,
}

impl From<&crate::store::versions::VersionInfo> for VersionLine {
    fn from(info: &crate::store::versions::VersionInfo) -> VersionLine {
        VersionLine {
            name: info.name.clone(),
            serving: info.serving,
            clicks: info.clicks(),
            rows: info.rows,
            committed_epoch: info.committed_epoch,
        }
    }
}

/// The last committed epoch.
#[derive(Clone, Debug, Serialize)]
pub struct Committed {
    /// The epoch: the event time (ms) below which everything is committed.
    pub epoch: u64,
    /// How far the wall clock is ahead of the epoch, in ms: the age of the
    /// freshest committed data.
    pub age_ms: i64,
    /// The generation (restart count) that committed it.
    pub generation: u64,
}

/// One log partition: how much of it is committed.
#[derive(Clone, Debug, Serialize)]
pub struct PartitionStatus {
    pub partition: u32,
    /// The oldest offset the log still has, where known.
    pub start_offset: Option<u64>,
    /// The offset the next click will be written at, where known.
    pub end_offset: Option<u64>,
    /// The offset the job reads next; 0 before its first commit.
    pub committed_offset: u64,
    /// `end_offset - committed_offset`.
    pub lag: Option<u64>,
    /// Largest event time committed minus the watermark slack, in ms.
    pub watermark_ms: Option<u64>,
}

/// What the late ledger holds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LateTotals {
    /// Distinct too-late clicks that restated a window.
    pub restated_clicks: u64,
    /// Distinct too-late clicks held (too old to restate).
    pub held_clicks: u64,
}

/// The log's offsets, as far as they are known.
#[derive(Clone, Debug, Default)]
pub struct LogOffsets {
    pub starts: Option<Vec<u64>>,
    pub ends: Option<Vec<u64>>,
}

/// Where the report's inputs come from.
pub struct Sources<'a> {
    pub job: &'a crate::job::Job,
    pub store: String,
    pub log: String,
    pub serving: String,
    pub running_pid: Option<u32>,
    pub offsets: LogOffsets,
    pub versions: Vec<VersionLine>,
    /// The wall clock, ms since the Unix epoch.
    pub now_ms: u64,
}

/// Builds the report from one snapshot of the store.
pub fn status(snapshot: &dyn StoreSnapshot, sources: Sources) -> Result<Status, StoreError> {
    let last = snapshot.last_committed()?;
    let job = sources.job;
    let settings = snapshot.state(SETTINGS_KEY)?.and_then(|bytes| RunSettings::from_json(&bytes).ok());
    let committed_at = |p: u32| last.as_ref().and_then(|l| l.partitions.iter().find(|c| c.partition == p));
    let known = |offsets: &Option<Vec<u64>>, p: u32| offsets.as_ref().and_then(|o| o.get(p as usize).copied());
    let partitions: Vec<PartitionStatus> = (0..job.partitions)
        .map(|p| {
            let checkpoint = committed_at(p);
            let committed_offset = checkpoint.map_or(0, |c| c.offset);
            let end_offset = known(&sources.offsets.ends, p);
            PartitionStatus {
                partition: p,
                start_offset: known(&sources.offsets.starts, p),
                end_offset,
                committed_offset,
                lag: end_offset.map(|end| end.saturating_sub(committed_offset)),
                watermark_ms: checkpoint.filter(|c| c.offset > 0).map(|c| c.max_ts.saturating_sub(job.slack_ms)),
            }
        })
        .collect();
    let lag_total = partitions.iter().map(|p| p.lag).sum::<Option<u64>>();
    Ok(Status {
        job: job.name.clone(),
        store: sources.store,
        log: sources.log,
        running_pid: sources.running_pid,
        serving: sources.serving,
        committed: last.as_ref().map(|l| Committed {
            epoch: l.epoch,
            age_ms: sources.now_ms as i64 - l.epoch as i64,
            generation: l.generation,
        }),
        partitions,
        lag_total,
        settings_fingerprint: settings.as_ref().map(fingerprint),
        catalog: settings.and_then(|s| s.catalog).map(|c| format!("{} ({})", c.path, c.fingerprint)),
        late: late_totals(&snapshot.late_entries(0, u64::MAX)?),
        rows: snapshot.row_count()?,
        versions: sources.versions,
    })
}

/// The ledger lists a click once per key type it counts under: each click
/// is counted once here, by request id.
fn late_totals(entries: &[LateEntry]) -> LateTotals {
    let (mut restated, mut held) = (HashSet::new(), HashSet::new());
    for entry in entries.iter().filter(|e| e.key_type == KeyType::Ad || e.key_type == first_type(entries)) {
        let into = if entry.held { &mut held } else { &mut restated };
        into.extend(entry.request_ids.iter().copied());
    }
    LateTotals { restated_clicks: restated.len() as u64, held_clicks: held.len() as u64 }
}

fn first_type(entries: &[LateEntry]) -> KeyType {
    entries.iter().map(|e| e.key_type).min().unwrap_or(KeyType::Ad)
}

/// 16 hex digits of a hash of the settings that decide counts, catalog
/// excluded (it is shown on its own).
fn fingerprint(settings: &RunSettings) -> String {
    use std::hash::Hasher;
    let counted = RunSettings { catalog: None, ..settings.clone() };
    let mut hasher = siphasher::sip::SipHasher13::new_with_keys(0, 0);
    hasher.write(&counted.to_json());
    format!("{:016x}", hasher.finish())
}

/// The process whose pid is recorded in `dir/LOCK`, if it is alive. The
/// lock itself is not tried: a status poll must never stand in the way of
/// a job starting. A recycled pid can make a stopped job look running.
pub fn lock_holder(dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(dir.join(crate::lockfile::LOCK_FILE)).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    Path::new("/proc").join(pid.to_string()).exists().then_some(pid)
}

impl Status {
    /// The report for a terminal.
    pub fn to_text(&self) -> String {
        let mut out = format!("job {}: store {}, log {}\n", self.job, self.store, self.log);
        out += &match self.running_pid {
            Some(pid) => format!("running: pid {pid}\n"),
            None => "running: no process holds the data directory\n".to_owned(),
        };
        out += &format!("serving: {}\n", self.serving);
        out += &match &self.committed {
            Some(c) => format!(
                "committed: epoch {} ({}), {} behind the wall clock, generation {}\n",
                c.epoch,
                crate::time::format_rfc3339(c.epoch),
                age(c.age_ms),
                c.generation
            ),
            None => "committed: nothing yet\n".to_owned(),
        };
        let text = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
        out += &format!("{:>9} {:>12} {:>12} {:>12} {:>10}  {}\n", "PARTITION", "START", "END", "COMMITTED", "LAG", "WATERMARK");
        for p in &self.partitions {
            let watermark = p.watermark_ms.map_or("-".to_owned(), crate::time::format_rfc3339);
            out += &format!(
                "{:>9} {:>12} {:>12} {:>12} {:>10}  {watermark}\n",
                p.partition,
                text(p.start_offset),
                text(p.end_offset),
                p.committed_offset,
                text(p.lag)
            );
        }
        out += &format!("lag: {} clicks\n", text(self.lag_total));
        out += &format!("settings: {}\n", self.settings_fingerprint.as_deref().unwrap_or("-"));
        out += &format!("catalog: {}\n", self.catalog.as_deref().unwrap_or("none"));
        out += &format!("late: {} clicks restated, {} held\n", self.late.restated_clicks, self.late.held_clicks);
        out += &format!("rows: {}\n", self.rows);
        for v in &self.versions {
            let mark = if v.serving { " (serving)" } else { "" };
            out += &format!(
                "version {}{mark}: {} clicks, {} rows, committed epoch {}\n",
                v.name,
                text(v.clicks),
                v.rows,
                text(v.committed_epoch)
            );
        }
        out
    }
}

/// `1.2 s`, `3 min 4 s`, `5 h 6 min`, or `ahead by …` for a negative age.
fn age(ms: i64) -> String {
    if ms < 0 {
        return format!("ahead by {}", age(-ms));
    }
    let s = ms as f64 / 1000.0;
    match ms / 1000 {
        secs if secs < 60 => format!("{s:.1} s"),
        secs if secs < 3600 => format!("{} min {} s", secs / 60, secs % 60),
        secs => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_an_operator_would_say_them() {
        assert_eq!(age(1_234), "1.2 s");
        assert_eq!(age(184_000), "3 min 4 s");
        assert_eq!(age(5 * 3_600_000 + 6 * 60_000), "5 h 6 min");
        assert_eq!(age(-2_000), "ahead by 2.0 s");
    }

    #[test]
    fn a_late_click_counts_once_whatever_the_key_types_it_is_listed_under() {
        let entry = |key_type, held, ids: &[u128]| LateEntry {
            key_type,
            key: "k".into(),
            window_start: 0,
            batch: 0,
            held,
            request_ids: ids.to_vec(),
        };
        let entries = [
            entry(KeyType::Ad, false, &[1, 2]),
            entry(KeyType::Campaign, false, &[1, 2]),
            entry(KeyType::Ad, true, &[3]),
            entry(KeyType::Advertiser, true, &[3]),
        ];
        let totals = late_totals(&entries);
        assert_eq!((totals.restated_clicks, totals.held_clicks), (2, 1));
    }
}
