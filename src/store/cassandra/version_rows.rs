//! The versions partition of a job, `output_versions(JOB)`, as read, and
//! every decision taken on it. Pure: the reads and lightweight
//! transactions are in `versions.rs`, so each decision is tested alone.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::layout::unsigned;
use crate::store::versions::{check_name, Manifest, VersionError, LIVE};

/// How long a backfill's claim on a name holds without a heartbeat: after
/// that, a backfill of another name takes it for interrupted and deletes
/// its build (a backfill of the same name takes it over at once).
pub const CLAIM_LEASE: Duration = Duration::from_secs(60);

/// The version served, as the pointer names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    pub name: String,
    /// The build serving it; `None` for `live`. A name replaced by a new
    /// build is another `Served`.
    pub build: Option<String>,
}

/// What a published version counts, and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CassandraManifest {
    /// Name, job file, range as given and resolved (its start is the
    /// build's origin), creation time: as the embedded store's.
    pub manifest: Manifest,
    /// The log counted: `log DIR` or `kafka BROKERS topic TOPIC`.
    pub source: String,
    /// Windows with a row, and the last epoch, when it was published.
    pub rows: u64,
    pub committed_epoch: Option<u64>,
}

/// A build in progress, as its claim records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub build: String,
    /// Host and process of the backfill.
    pub owner: String,
    /// Unix ms of its last heartbeat.
    pub beat_ms: u64,
}

/// The versions partition of a job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Partition {
    /// The static columns as stored (`None`: never switched).
    pub serving: Option<String>,
    pub serving_build: Option<String>,
    pub names: BTreeMap<String, NameRow>,
}

/// One name's row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameRow {
    pub published: Option<Published>,
    pub pending: Option<Pending>,
    pub retired: BTreeSet<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub build: String,
    pub manifest: CassandraManifest,
}

impl Partition {
    pub fn served(&self) -> Result<Served, String> {
        served(self.serving.clone(), self.serving_build.clone())
    }

    /// The build published as `name`.
    pub fn published(&self, name: &str) -> Option<&str> {
        self.names.get(name)?.published.as_ref().map(|p| p.build.as_str())
    }

    pub fn from_rows(rows: Vec<Columns>) -> Result<Partition, String> {
        let mut partition = Partition::default();
        for row in rows {
            partition.serving = row.serving.clone();
            partition.serving_build = row.serving_build.clone();
            // A partition with static columns only reads as one row without a name.
            let Some(name) = row.name.clone() else { continue };
            let parsed = row.into_name_row(&name).map_err(|reason| format!("output_versions row {name:?}: {reason}"))?;
            partition.names.insert(name, parsed);
        }
        Ok(partition)
    }
}

/// The pointer as stored, checked.
pub fn served(serving: Option<String>, build: Option<String>) -> Result<Served, String> {
    match (serving, build) {
        (None, _) => Ok(Served { name: LIVE.to_owned(), build: None }),
        (Some(name), None) if name == LIVE => Ok(Served { name, build: None }),
        (Some(name), Some(build)) if name != LIVE && check_name(&name).is_ok() => Ok(Served { name, build: Some(build) }),
        (serving, build) => Err(format!("serving pointer {serving:?} with build {build:?}")),
    }
}

/// May `name` be built: not existing (unless `replace`), and not served.
pub fn buildable(partition: &Partition, served: &Served, name: &str, replace: bool) -> Result<(), VersionError> {
    if partition.published(name).is_none() {
        return Ok(());
    }
    if !replace {
        return Err(VersionError::Exists(name.to_owned()));
    }
    if served.name == name {
        return Err(VersionError::Serving { name: name.to_owned(), action: "switch to another version before replacing it" });
    }
    Ok(())
}

/// What a change decides from the partition as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision<T> {
    /// Its effect is there already: nothing to write.
    Done,
    /// Write it, with this.
    Write(T),
}

/// A switch to `name` from `served`: `Write(None)` points at `live`,
/// `Write(Some(build))` at the build published as `name`.
pub fn switch_to(partition: &Partition, served: &Served, name: &str) -> Result<Decision<Option<String>>, VersionError> {
    let build = match name {
        LIVE => None,
        _ => Some(partition.published(name).ok_or_else(|| VersionError::Unknown(name.to_owned()))?.to_owned()),
    };
    if served.name == name && served.build == build {
        return Ok(Decision::Done);
    }
    Ok(Decision::Write(build))
}

/// Unpublishing `name` (a delete): `Write(build)` to retire. `attempted`
/// is the build an earlier attempt of this delete unpublished, with an
/// unknown outcome: if it is no longer published, the delete is done.
pub fn unpublish(partition: &Partition, served: &Served, name: &str, attempted: Option<&str>) -> Result<Decision<String>, VersionError> {
    let published = partition.published(name);
    if attempted.is_some_and(|build| published != Some(build)) {
        return Ok(Decision::Done);
    }
    let build = published.ok_or_else(|| VersionError::Unknown(name.to_owned()))?;
    if served.name == name {
        return Err(VersionError::Serving { name: name.to_owned(), action: "switch to another version first" });
    }
    Ok(Decision::Write(build.to_owned()))
}

/// Publishing `build`, claimed for `name`: `Write(old)` with the build it
/// replaces. Refused when the claim went to another backfill, when the
/// name exists (unless `replace`) and when it is served.
pub fn publish(
    partition: &Partition,
    served: &Served,
    name: &str,
    build: &str,
    replace: bool,
) -> Result<Decision<Option<String>>, VersionError> {
    let row = partition.names.get(name);
    let old = partition.published(name);
    if old == Some(build) {
        return Ok(Decision::Done);
    }
    if row.and_then(|row| row.pending.as_ref()).is_none_or(|pending| pending.build != build) {
        return Err(VersionError::TakenOver(name.to_owned()));
    }
    buildable(partition, served, name, replace)?;
    Ok(Decision::Write(old.map(str::to_owned)))
}

/// Whether a claim's backfill has not renewed it for [`CLAIM_LEASE`].
pub fn stale(pending: &Pending, now_ms: u64) -> bool {
    now_ms.saturating_sub(pending.beat_ms) > CLAIM_LEASE.as_millis() as u64
}

/// The internal job name of a version's build.
pub fn build_job(job: &str, name: &str, build: &str) -> String {
    format!("{job}/{name}/{build}")
}

/// The columns every read of the partition selects, in [`Columns`].
pub const COLUMNS: &str =
    "name, build, job_file, source, from_pos, to_pos, start_offsets, end_offsets, created_ms, rows, committed_epoch, \
                           pending, pending_owner, pending_beat, retired, serving, serving_build";

/// The columns of `output_versions`, as `versions.rs` selects them
/// ([`COLUMNS`]).
#[derive(scylla::DeserializeRow)]
pub struct Columns {
    name: Option<String>,
    build: Option<String>,
    job_file: Option<String>,
    source: Option<String>,
    from_pos: Option<String>,
    to_pos: Option<String>,
    start_offsets: Option<Vec<i64>>,
    end_offsets: Option<Vec<i64>>,
    created_ms: Option<i64>,
    rows: Option<i64>,
    committed_epoch: Option<i64>,
    pending: Option<String>,
    pending_owner: Option<String>,
    pending_beat: Option<i64>,
    retired: Option<Vec<String>>,
    serving: Option<String>,
    serving_build: Option<String>,
}

impl Columns {
    fn into_name_row(self, name: &str) -> Result<NameRow, String> {
        let number = |column: &str, value: Option<i64>| value.and_then(unsigned).ok_or_else(|| format!("{column} is {value:?}"));
        let offsets = |column: &str, values: Option<Vec<i64>>| -> Result<Vec<u64>, String> {
            values.unwrap_or_default().into_iter().map(|v| unsigned(v).ok_or_else(|| format!("{column} holds {v}"))).collect()
        };
        let text = |column: &str, value: Option<String>| value.ok_or_else(|| format!("{column} is null"));
        let published = match self.build {
            None => None,
            Some(build) => Some(Published {
                build,
                manifest: CassandraManifest {
                    manifest: Manifest {
                        name: name.to_owned(),
                        job: text("job_file", self.job_file)?,
                        from: text("from_pos", self.from_pos)?,
                        to: text("to_pos", self.to_pos)?,
                        start: offsets("start_offsets", self.start_offsets)?,
                        end: offsets("end_offsets", self.end_offsets)?,
                        created_ms: number("created_ms", self.created_ms)?,
                    },
                    source: text("source", self.source)?,
                    rows: number("rows", self.rows)?,
                    committed_epoch: self.committed_epoch.map(|e| number("committed_epoch", Some(e))).transpose()?,
                },
            }),
        };
        let pending = match self.pending {
            None => None,
            Some(build) => {
                Some(Pending { build, owner: self.pending_owner.unwrap_or_default(), beat_ms: number("pending_beat", self.pending_beat)? })
            }
        };
        Ok(NameRow { published, pending, retired: self.retired.unwrap_or_default().into_iter().collect() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(build: &str) -> NameRow {
        let manifest = Manifest {
            name: String::new(),
            job: "job.toml".into(),
            from: "earliest".into(),
            to: "latest".into(),
            start: vec![0],
            end: vec![5],
            created_ms: 1,
        };
        let manifest = CassandraManifest { manifest, source: "log d".into(), rows: 3, committed_epoch: Some(9) };
        NameRow { published: Some(Published { build: build.into(), manifest }), ..NameRow::default() }
    }

    fn partition(serving: Option<(&str, Option<&str>)>, names: &[(&str, NameRow)]) -> Partition {
        Partition {
            serving: serving.map(|(name, _)| name.to_owned()),
            serving_build: serving.and_then(|(_, build)| build.map(str::to_owned)),
            names: names.iter().map(|(name, row)| (name.to_string(), row.clone())).collect(),
        }
    }

    #[test]
    fn the_pointer_reads_as_live_until_switched_and_a_version_always_has_its_build() {
        let live = Served { name: LIVE.into(), build: None };
        assert_eq!(served(None, None), Ok(live.clone()));
        assert_eq!(served(Some(LIVE.into()), None), Ok(live));
        assert_eq!(served(Some("v1".into()), Some("b".into())), Ok(Served { name: "v1".into(), build: Some("b".into()) }));
        assert!(served(Some("v1".into()), None).is_err(), "a version without its build");
        assert!(served(Some(LIVE.into()), Some("b".into())).is_err());
        assert!(served(Some("../x".into()), Some("b".into())).is_err());
    }

    fn pending(build: &str) -> Option<Pending> {
        Some(Pending { build: build.into(), owner: String::new(), beat_ms: 0 })
    }

    fn serving(name: &str, build: Option<&str>) -> Served {
        Served { name: name.into(), build: build.map(str::to_owned) }
    }

    #[test]
    fn a_name_is_buildable_when_new_or_replaced_and_never_while_served() {
        let p = partition(Some(("v1", Some("b1"))), &[("v1", published("b1")), ("v2", published("b2"))]);
        let served = p.served().unwrap();
        assert!(buildable(&p, &served, "v3", false).is_ok());
        assert!(matches!(buildable(&p, &served, "v2", false), Err(VersionError::Exists(_))));
        assert!(buildable(&p, &served, "v2", true).is_ok());
        assert!(matches!(buildable(&p, &served, "v1", true), Err(VersionError::Serving { .. })));
        let claimed = NameRow { pending: pending("b9"), ..NameRow::default() };
        assert!(buildable(&partition(None, &[("v4", claimed)]), &served, "v4", false).is_ok(), "a claim alone is no version");
    }

    #[test]
    fn a_switch_needs_the_version_published_and_is_done_once_it_serves_that_build() {
        let p = partition(Some(("v1", Some("b1"))), &[("v1", published("b1")), ("v2", published("b2"))]);
        let live = serving(LIVE, None);
        assert_eq!(switch_to(&p, &live, "v2").unwrap(), Decision::Write(Some("b2".into())));
        assert_eq!(switch_to(&p, &serving("v2", Some("b2")), "v2").unwrap(), Decision::Done);
        assert_eq!(switch_to(&p, &serving("v2", Some("b0")), "v2").unwrap(), Decision::Write(Some("b2".into())), "a replaced build");
        assert_eq!(switch_to(&p, &serving("v1", Some("b1")), LIVE).unwrap(), Decision::Write(None));
        assert_eq!(switch_to(&p, &live, LIVE).unwrap(), Decision::Done);
        assert!(matches!(switch_to(&p, &live, "v3"), Err(VersionError::Unknown(_))));
        let claimed = partition(None, &[("v4", NameRow { pending: pending("b4"), ..NameRow::default() })]);
        assert!(matches!(switch_to(&claimed, &live, "v4"), Err(VersionError::Unknown(_))), "a build in progress is no version");
    }

    #[test]
    fn a_delete_never_unpublishes_the_served_version_and_recognizes_its_own_effect() {
        let p = partition(Some(("v1", Some("b1"))), &[("v1", published("b1")), ("v2", published("b2"))]);
        let served = p.served().unwrap();
        assert_eq!(unpublish(&p, &served, "v2", None).unwrap(), Decision::Write("b2".into()));
        assert!(matches!(unpublish(&p, &served, "v1", None), Err(VersionError::Serving { .. })));
        assert!(matches!(unpublish(&p, &served, "v3", None), Err(VersionError::Unknown(_))));
        let gone = partition(None, &[("v2", NameRow { retired: ["b2".to_owned()].into(), ..NameRow::default() })]);
        assert_eq!(unpublish(&gone, &serving(LIVE, None), "v2", Some("b2")).unwrap(), Decision::Done);
        assert!(matches!(unpublish(&gone, &serving(LIVE, None), "v2", None), Err(VersionError::Unknown(_))));
    }

    #[test]
    fn a_publish_needs_its_claim_and_never_replaces_the_served_version() {
        let claimed = |published_as: Option<&str>, claim: &str| {
            let row = NameRow { pending: pending(claim), ..published(published_as.unwrap_or("")) };
            let row = NameRow { published: published_as.and(row.published.clone()), ..row };
            partition(None, &[("v", row)])
        };
        let live = serving(LIVE, None);
        assert_eq!(publish(&claimed(None, "b2"), &live, "v", "b2", false).unwrap(), Decision::Write(None));
        assert_eq!(publish(&claimed(Some("b1"), "b2"), &live, "v", "b2", true).unwrap(), Decision::Write(Some("b1".into())));
        assert!(matches!(publish(&claimed(Some("b1"), "b2"), &live, "v", "b2", false), Err(VersionError::Exists(_))));
        let served = serving("v", Some("b1"));
        assert!(matches!(publish(&claimed(Some("b1"), "b2"), &served, "v", "b2", true), Err(VersionError::Serving { .. })));
        assert!(matches!(publish(&claimed(None, "b3"), &live, "v", "b2", false), Err(VersionError::TakenOver(_))));
        assert_eq!(publish(&claimed(Some("b2"), "b9"), &live, "v", "b2", false).unwrap(), Decision::Done, "published by this attempt");
    }

    #[test]
    fn a_claim_is_stale_only_past_its_lease() {
        let pending = Pending { build: "b".into(), owner: String::new(), beat_ms: 1_000_000 };
        let lease = CLAIM_LEASE.as_millis() as u64;
        assert!(!stale(&pending, 1_000_000 + lease));
        assert!(stale(&pending, 1_000_001 + lease));
        assert!(!stale(&pending, 0), "a heartbeat from a clock ahead is fresh");
    }
}
