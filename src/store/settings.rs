//! The job settings a store's committed state was made with, and where in
//! the log its count starts.
//!
//! The first epoch commit of every run stores the settings beside the
//! window state (state key [`SETTINGS_KEY`], JSON). A restarted job compares
//! its own settings with them and refuses a change that would count the
//! same log differently (the committed windows, checkpoints and dedup replay
//! points were made under the old rules); `tally verify` compares the
//! catalog it is given with the one the job ran with.
//!
//! The first commit of a store also records its [`Origin`] (state key
//! [`ORIGIN_KEY`], JSON): the offset every partition's count started at.
//! It is never written again. A store without one (made before origins
//! were recorded) started at offset 0.

use serde::{Deserialize, Serialize};

/// State key of the settings record (a tag byte no window or pending
/// partial key uses).
pub const SETTINGS_KEY: &[u8] = b"S";

/// State key of the origin record.
pub const ORIGIN_KEY: &[u8] = b"O";

/// The start offsets of a store's count, by partition: the job read every
/// partition from here with empty dedup memory and no progress (SEMANTICS.md,
/// "Where a count starts").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// Offset of partition `p` at index `p`.
    pub offsets: Vec<u64>,
}

impl Origin {
    /// The origin of a store that records none: offset 0 everywhere.
    pub fn zero(partitions: u32) -> Origin {
        Origin { offsets: vec![0; partitions as usize] }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("origin serializes")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Origin, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("stored origin: {e}"))
    }

    /// The origin offset of `partition` (0 for a partition it does not list).
    pub fn offset(&self, partition: u32) -> u64 {
        self.offsets.get(partition as usize).copied().unwrap_or(0)
    }
}

/// The settings that decide what a click counts toward, and the catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSettings {
    /// `source.partitions`.
    pub partitions: u32,
    /// `time.epoch`.
    pub epoch_ms: u64,
    /// `time.watermark_slack`.
    pub slack_ms: u64,
    /// `time.allowed_lateness`.
    pub allowed_lateness_ms: u64,
    /// `dedup.horizon`.
    pub dedup_horizon_ms: u64,
    /// `windows.sizes`.
    pub windows_ms: Vec<u64>,
    /// `aggregate.group_by`, as the job file spells the key types.
    pub group_by: Vec<String>,
    /// Whether `aggregate.measures` includes `distinct_users`.
    pub distinct_users: bool,
    /// `late.restate_within` under `late.policy = "restate"`; `None` for `hold`.
    pub restate_within_ms: Option<u64>,
    /// The catalog the job ran with, if any.
    pub catalog: Option<CatalogStamp>,
    /// The log the offsets belong to: `local` (the embedded log, a file or
    /// the generator, whose offsets count clicks alike) or `kafka topic
    /// NAME`; empty in stores written before it was recorded.
    #[serde(default)]
    pub log: String,
}

/// Which catalog a job ran with: where it was read from and a fingerprint of
/// its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogStamp {
    pub path: String,
    /// FNV-1a 64 of the file's bytes, hex.
    pub fingerprint: String,
}

impl CatalogStamp {
    /// The stamp of a catalog file's bytes.
    pub fn of(path: &std::path::Path, bytes: &[u8]) -> CatalogStamp {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        CatalogStamp { path: path.display().to_string(), fingerprint: format!("{hash:016x}") }
    }
}

/// A setting that differs from the stored one in a way that would recount
/// committed windows differently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incompatible {
    /// The job file key, e.g. `dedup.horizon`.
    pub key: &'static str,
    pub stored: String,
    pub given: String,
}

impl RunSettings {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("settings serialize")
    }

    pub fn from_json(bytes: &[u8]) -> Result<RunSettings, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("stored job settings: {e}"))
    }

    /// The first setting of `self` (the job about to run) that differs from
    /// `stored` (what the committed state was made with). The catalog and
    /// every setting not listed here (early results, retention, the name)
    /// may change between runs.
    pub fn incompatible_with(&self, stored: &RunSettings) -> Option<Incompatible> {
        fn ms(v: u64) -> String {
            format!("{v} ms")
        }
        let checks: [(&'static str, String, String); 9] = [
            ("source.partitions", stored.partitions.to_string(), self.partitions.to_string()),
            ("time.epoch", ms(stored.epoch_ms), ms(self.epoch_ms)),
            ("time.watermark_slack", ms(stored.slack_ms), ms(self.slack_ms)),
            ("time.allowed_lateness", ms(stored.allowed_lateness_ms), ms(self.allowed_lateness_ms)),
            ("dedup.horizon", ms(stored.dedup_horizon_ms), ms(self.dedup_horizon_ms)),
            ("windows.sizes", format!("{:?} ms", stored.windows_ms), format!("{:?} ms", self.windows_ms)),
            ("aggregate.group_by", format!("{:?}", stored.group_by), format!("{:?}", self.group_by)),
            ("aggregate.measures", measures(stored.distinct_users), measures(self.distinct_users)),
            ("late.policy", late(stored.restate_within_ms), late(self.restate_within_ms)),
        ];
        if !stored.log.is_empty() && stored.log != self.log {
            return Some(Incompatible { key: "source", stored: stored.log.clone(), given: self.log.clone() });
        }
        checks.into_iter().find(|(_, stored, given)| stored != given).map(|(key, stored, given)| Incompatible { key, stored, given })
    }
}

fn measures(distinct_users: bool) -> String {
    if distinct_users { "clicks, distinct_users" } else { "clicks" }.to_string()
}

fn late(restate_within_ms: Option<u64>) -> String {
    match restate_within_ms {
        Some(within) => format!("restate within {within} ms"),
        None => "hold".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RunSettings {
        RunSettings {
            partitions: 8,
            epoch_ms: 1_000,
            slack_ms: 5_000,
            allowed_lateness_ms: 10_000,
            dedup_horizon_ms: 60_000,
            windows_ms: vec![60_000, 300_000],
            group_by: vec!["ad".into()],
            distinct_users: true,
            restate_within_ms: Some(3_600_000),
            catalog: None,
            log: "local".into(),
        }
    }

    #[test]
    fn a_changed_counting_setting_is_named_and_the_catalog_may_change() {
        let stored = settings();
        let mut given = settings();
        given.catalog = Some(CatalogStamp::of(std::path::Path::new("c.csv"), b"x"));
        assert_eq!(given.incompatible_with(&stored), None);
        given.restate_within_ms = None;
        let change = given.incompatible_with(&stored).expect("a policy change is refused");
        assert_eq!((change.key, change.given.as_str()), ("late.policy", "hold"));
        let mut given = settings();
        given.dedup_horizon_ms = 120_000;
        assert_eq!(given.incompatible_with(&stored).map(|c| c.key), Some("dedup.horizon"));
        let mut given = settings();
        given.log = "kafka topic raw_clicks".into();
        assert_eq!(given.incompatible_with(&stored).map(|c| c.key), Some("source"));
        let old = RunSettings { log: String::new(), ..settings() };
        assert_eq!(given.incompatible_with(&old), None, "stores that did not record their log accept any");
    }

    #[test]
    fn origins_round_trip_and_default_to_zero() {
        let origin = Origin { offsets: vec![3, 0, 7] };
        assert_eq!(Origin::from_json(&origin.to_json()), Ok(origin.clone()));
        assert_eq!(String::from_utf8(origin.to_json()).unwrap(), r#"{"offsets":[3,0,7]}"#);
        assert_eq!((origin.offset(2), origin.offset(9)), (7, 0));
        assert_eq!(Origin::zero(2).offsets, [0, 0]);
        assert!(Origin::from_json(b"{}").unwrap_err().starts_with("stored origin: "));
    }

    #[test]
    fn settings_round_trip_and_fingerprints_tell_bytes_apart() {
        let s = settings();
        assert_eq!(RunSettings::from_json(&s.to_json()), Ok(s));
        let a = CatalogStamp::of(std::path::Path::new("c.csv"), b"ad,campaign");
        let b = CatalogStamp::of(std::path::Path::new("c.csv"), b"ad,campaigm");
        assert_ne!(a.fingerprint, b.fingerprint);
    }
}
