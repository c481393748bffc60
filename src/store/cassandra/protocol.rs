//! The commit record of a job (its `jobs` row) and every decision taken on
//! it. Pure: the I/O is in `commit.rs`, so each decision is tested alone.
//!
//! Every write to a `jobs` row is a lightweight transaction, and a
//! transaction that fails in any way (a timeout, a lost connection, an
//! error) may still have been applied. It is never retried blindly: the row
//! is read back with SERIAL consistency, which completes or buries any
//! Paxos round in flight on it, so what the read shows is final, and the
//! functions here say what happened.

use super::layout::{signed, unsigned};
use super::payload::PayloadSummary;
use crate::store::PartitionCheckpoint;

/// "Nothing yet" in `committed_epoch` and `applied_epoch`.
pub const NO_EPOCH: i64 = -1;

/// A job's `jobs` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRow {
    /// The newest generation begun, and who began it.
    pub generation: u64,
    pub owner: String,
    pub committed: Option<CommitRecord>,
    pub applied: Option<AppliedRecord>,
}

/// The last committed epoch: its payload is staged under
/// `(job, epoch, generation)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitRecord {
    pub epoch: u64,
    pub generation: u64,
    pub payload: PayloadSummary,
    /// Every partition's checkpoint after this epoch.
    pub checkpoints: Vec<PartitionCheckpoint>,
}

/// The last epoch written to the serving tables in full: readers read as
/// of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedRecord {
    pub epoch: u64,
    pub generation: u64,
    pub checkpoints: Vec<PartitionCheckpoint>,
}

/// The columns of a `jobs` row, in the order `commit.rs` selects them.
pub type JobColumns = (
    Option<i64>,     // generation
    Option<String>,  // owner
    Option<i64>,     // committed_epoch
    Option<i64>,     // committed_generation
    Option<i32>,     // chunks
    Option<i64>,     // payload_bytes
    Option<i64>,     // payload_crc
    Option<Vec<u8>>, // checkpoints
    Option<i64>,     // applied_epoch
    Option<i64>,     // applied_generation
    Option<Vec<u8>>, // applied_checkpoints
);

impl JobRow {
    /// Reads the columns of a `jobs` row; `Err` names what is malformed.
    pub fn from_columns(columns: JobColumns) -> Result<JobRow, String> {
        let (generation, owner, epoch, committed_generation, chunks, bytes, crc, checkpoints, applied, applied_generation, applied_cp) =
            columns;
        let number = |name: &str, value: Option<i64>| value.and_then(unsigned).ok_or_else(|| format!("jobs.{name} is {value:?}"));
        let generation = number("generation", generation)?;
        let committed = match epoch.unwrap_or(NO_EPOCH) {
            NO_EPOCH => None,
            _ => Some(CommitRecord {
                epoch: number("committed_epoch", epoch)?,
                generation: number("committed_generation", committed_generation)?,
                payload: PayloadSummary {
                    chunks: chunks.and_then(|c| u32::try_from(c).ok()).ok_or_else(|| format!("jobs.chunks is {chunks:?}"))?,
                    bytes: number("payload_bytes", bytes)?,
                    crc: crc.and_then(|c| u32::try_from(c).ok()).ok_or_else(|| format!("jobs.payload_crc is {crc:?}"))?,
                },
                checkpoints: decode_checkpoints(checkpoints.as_deref()).ok_or("jobs.checkpoints is malformed")?,
            }),
        };
        let applied = match applied.unwrap_or(NO_EPOCH) {
            NO_EPOCH => None,
            _ => Some(AppliedRecord {
                epoch: number("applied_epoch", applied)?,
                generation: number("applied_generation", applied_generation)?,
                checkpoints: decode_checkpoints(applied_cp.as_deref()).ok_or("jobs.applied_checkpoints is malformed")?,
            }),
        };
        Ok(JobRow { generation, owner: owner.unwrap_or_default(), committed, applied })
    }

    pub fn committed_epoch(&self) -> Option<u64> {
        self.committed.as_ref().map(|c| c.epoch)
    }

    pub fn applied_epoch(&self) -> Option<u64> {
        self.applied.as_ref().map(|a| a.epoch)
    }

    /// The committed epoch, when it is not applied yet.
    pub fn unapplied(&self) -> Option<&CommitRecord> {
        self.committed.as_ref().filter(|c| Some(c.epoch) != self.applied_epoch())
    }
}

/// An epoch as the `bigint` of `committed_epoch` / `applied_epoch`.
pub fn epoch_column(epoch: Option<u64>) -> i64 {
    epoch.map_or(NO_EPOCH, signed)
}

pub fn encode_checkpoints(checkpoints: &[PartitionCheckpoint]) -> Vec<u8> {
    bincode::serialize(checkpoints).expect("checkpoints serialize to memory")
}

fn decode_checkpoints(bytes: Option<&[u8]>) -> Option<Vec<PartitionCheckpoint>> {
    bincode::deserialize(bytes?).ok()
}

/// What a commit of `epoch` by `generation`, on top of `previous`, did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The commit record is this one: the epoch is committed.
    Committed,
    /// A newer generation began: this one may never commit again.
    Fenced { current: u64 },
    /// The record still shows `previous`: the transaction did not apply,
    /// and after the SERIAL read it never will. Trying again is safe.
    NotCommitted,
    /// The record is none of the above: something other than this
    /// protocol wrote it.
    Inconsistent(String),
}

/// Decides a commit from the `jobs` row read back (SERIAL) after it.
pub fn commit_outcome(row: &JobRow, generation: u64, epoch: u64, previous: Option<u64>) -> CommitOutcome {
    if let Some(committed) = &row.committed {
        if (committed.epoch, committed.generation) == (epoch, generation) {
            return CommitOutcome::Committed;
        }
    }
    if row.generation > generation {
        return CommitOutcome::Fenced { current: row.generation };
    }
    if row.generation < generation {
        return CommitOutcome::Inconsistent(format!("generation {} is older than ours, {generation}", row.generation));
    }
    if row.committed_epoch() == previous && row.applied_epoch() == previous {
        return CommitOutcome::NotCommitted;
    }
    CommitOutcome::Inconsistent(format!(
        "generation {generation} committing epoch {epoch} on epoch {previous:?} finds committed {:?}, applied {:?}",
        row.committed_epoch(),
        row.applied_epoch()
    ))
}

/// Whether the row read back after beginning `generation` as `owner` shows
/// that this begin won. If not, another process began it (or a newer one),
/// or the transaction did not apply: begin again from the row.
pub fn began(row: Option<&JobRow>, generation: u64, owner: &str) -> bool {
    row.is_some_and(|row| row.generation == generation && row.owner == owner)
}

/// What marking `epoch` applied did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MarkOutcome {
    /// The epoch (or a later one) is marked applied.
    Marked,
    /// It is still committed and not applied: mark it again.
    NotMarked,
    /// The record is none of the above.
    Inconsistent(String),
}

/// Decides a mark of `epoch` as applied from the `jobs` row read back.
pub fn mark_outcome(row: &JobRow, epoch: u64) -> MarkOutcome {
    if row.applied_epoch().is_some_and(|applied| applied >= epoch) {
        MarkOutcome::Marked
    } else if row.committed_epoch() == Some(epoch) {
        MarkOutcome::NotMarked
    } else {
        MarkOutcome::Inconsistent(format!(
            "marking epoch {epoch} applied finds committed {:?}, applied {:?}",
            row.committed_epoch(),
            row.applied_epoch()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(generation: u64, committed: Option<(u64, u64)>, applied: Option<u64>) -> JobRow {
        let payload = PayloadSummary { chunks: 1, bytes: 10, crc: 5 };
        JobRow {
            generation,
            owner: "me".into(),
            committed: committed.map(|(epoch, generation)| CommitRecord { epoch, generation, payload, checkpoints: vec![] }),
            applied: applied.map(|epoch| AppliedRecord { epoch, generation: 1, checkpoints: vec![] }),
        }
    }

    #[test]
    fn a_commit_is_decided_by_the_record_read_back() {
        // The transaction applied (its answer was lost): committed.
        assert_eq!(commit_outcome(&row(2, Some((2_000, 2)), Some(1_000)), 2, 2_000, Some(1_000)), CommitOutcome::Committed);
        // It applied, and a newer generation began since: still committed.
        assert_eq!(commit_outcome(&row(3, Some((2_000, 2)), Some(1_000)), 2, 2_000, Some(1_000)), CommitOutcome::Committed);
        // It did not apply: the record is where it was; try again.
        assert_eq!(commit_outcome(&row(2, Some((1_000, 2)), Some(1_000)), 2, 2_000, Some(1_000)), CommitOutcome::NotCommitted);
        assert_eq!(commit_outcome(&row(1, None, None), 1, 1_000, None), CommitOutcome::NotCommitted);
        // A newer generation began: fenced, whatever it committed.
        assert_eq!(commit_outcome(&row(3, Some((1_000, 2)), Some(1_000)), 2, 2_000, Some(1_000)), CommitOutcome::Fenced { current: 3 });
        assert_eq!(commit_outcome(&row(3, Some((2_000, 3)), Some(1_000)), 2, 2_000, Some(1_000)), CommitOutcome::Fenced { current: 3 });
    }

    #[test]
    fn a_record_this_protocol_cannot_produce_is_inconsistent() {
        // Our generation, but an epoch we did not commit on top of ours.
        let other = commit_outcome(&row(2, Some((3_000, 2)), Some(1_000)), 2, 2_000, Some(1_000));
        assert!(matches!(other, CommitOutcome::Inconsistent(_)), "{other:?}");
        // Our previous epoch committed but not applied: we apply before we commit.
        let unapplied = commit_outcome(&row(2, Some((1_000, 2)), Some(500)), 2, 2_000, Some(1_000));
        assert!(matches!(unapplied, CommitOutcome::Inconsistent(_)), "{unapplied:?}");
        assert!(matches!(commit_outcome(&row(1, None, None), 2, 1_000, None), CommitOutcome::Inconsistent(_)));
    }

    #[test]
    fn a_begin_won_only_with_its_generation_and_owner() {
        let mine = row(4, None, None);
        assert!(began(Some(&mine), 4, "me"));
        assert!(!began(Some(&mine), 4, "someone else"));
        assert!(!began(Some(&mine), 5, "me"));
        assert!(!began(None, 1, "me"));
    }

    #[test]
    fn a_mark_is_decided_by_the_record_read_back() {
        assert_eq!(mark_outcome(&row(2, Some((2_000, 2)), Some(2_000)), 2_000), MarkOutcome::Marked);
        assert_eq!(mark_outcome(&row(3, Some((3_000, 3)), Some(3_000)), 2_000), MarkOutcome::Marked);
        assert_eq!(mark_outcome(&row(2, Some((2_000, 2)), Some(1_000)), 2_000), MarkOutcome::NotMarked);
        assert!(matches!(mark_outcome(&row(2, Some((1_000, 2)), Some(1_000)), 2_000), MarkOutcome::Inconsistent(_)));
    }

    #[test]
    fn columns_round_trip_and_malformed_ones_are_named() {
        let checkpoints =
            vec![PartitionCheckpoint { partition: 0, offset: 3, max_ts: 4, floor: 0, dedup_replay_offset: 1, dedup_replay_max_ts: 2 }];
        let blob = Some(encode_checkpoints(&checkpoints));
        let columns =
            (Some(2), Some("me".to_owned()), Some(9), Some(2), Some(3), Some(100), Some(7), blob.clone(), Some(8), Some(1), blob.clone());
        let row = JobRow::from_columns(columns).unwrap();
        assert_eq!(row.committed_epoch(), Some(9));
        assert_eq!(row.applied.as_ref().unwrap().checkpoints, checkpoints);
        assert_eq!(row.unapplied().map(|c| c.payload), Some(PayloadSummary { chunks: 3, bytes: 100, crc: 7 }));
        let fresh =
            JobRow::from_columns((Some(1), None, Some(NO_EPOCH), None, None, None, None, None, Some(NO_EPOCH), None, None)).unwrap();
        assert!(fresh.unapplied().is_none());
        assert_eq!((fresh.committed, fresh.applied), (None, None));
        let broken = JobRow::from_columns((Some(1), None, Some(9), None, None, None, None, None, None, None, None));
        assert_eq!(broken.unwrap_err(), "jobs.committed_generation is None");
    }
}
