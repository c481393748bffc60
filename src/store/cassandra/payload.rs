//! An epoch's payload: the whole [`EpochCommit`] as bytes, cut into the
//! chunks of its staging partition, and put back together for a re-apply.
//!
//! Layout: `PAYLOAD_FORMAT u8 | bincode(EpochCommit)`, cut every
//! [`STAGE_CHUNK_BYTES`]. The commit record names the chunk count, the
//! length and the CRC32C of the whole, so a re-apply uses exactly the bytes
//! that were committed or refuses.

use crate::store::EpochCommit;

/// Version of the payload layout. A payload may outlive the process that
/// staged it (a committed epoch not yet applied when it crashed), so a
/// newer tally must still read it or refuse by this number.
pub const PAYLOAD_FORMAT: u8 = 1;
/// Largest chunk: one staging row. Cassandra keeps a mutation far smaller
/// than its limits (half a commit-log segment, 16 MiB by default) and a
/// large epoch spreads over many rows written in parallel.
pub const STAGE_CHUNK_BYTES: usize = 128 * 1024;

/// A payload ready to stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Staged {
    pub chunks: Vec<Vec<u8>>,
    pub bytes: u64,
    pub crc: u32,
}

/// What the commit record says of a payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadSummary {
    pub chunks: u32,
    pub bytes: u64,
    pub crc: u32,
}

impl Staged {
    pub fn summary(&self) -> PayloadSummary {
        PayloadSummary { chunks: self.chunks.len() as u32, bytes: self.bytes, crc: self.crc }
    }
}

pub fn encode(commit: &EpochCommit) -> Staged {
    let mut bytes = vec![PAYLOAD_FORMAT];
    bincode::serialize_into(&mut bytes, commit).expect("an epoch commit serializes to memory");
    let crc = crc32c::crc32c(&bytes);
    Staged { chunks: bytes.chunks(STAGE_CHUNK_BYTES).map(<[u8]>::to_vec).collect(), bytes: bytes.len() as u64, crc }
}

/// The payload from its chunks, as `(chunk number, bytes)` in any order;
/// every chunk of `summary` must be there, and nothing else.
pub fn decode(mut chunks: Vec<(u32, Vec<u8>)>, summary: &PayloadSummary) -> Result<EpochCommit, String> {
    chunks.sort_by_key(|(number, _)| *number);
    let numbers: Vec<u32> = chunks.iter().map(|(number, _)| *number).collect();
    if numbers != (0..summary.chunks).collect::<Vec<_>>() {
        return Err(format!("{} of its {} chunks are staged (numbers {numbers:?})", chunks.len(), summary.chunks));
    }
    let bytes: Vec<u8> = chunks.into_iter().flat_map(|(_, bytes)| bytes).collect();
    if bytes.len() as u64 != summary.bytes || crc32c::crc32c(&bytes) != summary.crc {
        return Err(format!("the staged bytes ({}) are not the {} committed (length or CRC32C differ)", bytes.len(), summary.bytes));
    }
    match bytes.split_first() {
        Some((&PAYLOAD_FORMAT, rest)) => bincode::deserialize(rest).map_err(|e| format!("payload: {e}")),
        Some((format, _)) => Err(format!("payload format {format}, this build reads {PAYLOAD_FORMAT}")),
        None => Err("empty payload".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::KeyType;
    use crate::row::{Row, Status};
    use crate::store::{PartitionCheckpoint, StoredRow};

    fn commit(rows: usize) -> EpochCommit {
        let row = |i: usize| StoredRow {
            row: Row {
                key_type: KeyType::Ad,
                key: format!("ad-{i}").into(),
                granularity_ms: 60_000,
                window_start: 0,
                clicks: i as u64,
                distinct_users: 1,
                status: Status::Final,
                version: 1,
            },
            sketch: vec![7; 4096],
        };
        EpochCommit {
            epoch: 1_000,
            generation: 3,
            rows: (0..rows).map(row).collect(),
            partitions: vec![PartitionCheckpoint {
                partition: 1,
                offset: 9,
                max_ts: 5,
                floor: 0,
                dedup_replay_offset: 2,
                dedup_replay_max_ts: 1,
            }],
            state_upserts: vec![(b"Wk".to_vec(), b"v".to_vec())],
            state_deletes: vec![b"Wold".to_vec()],
            ..Default::default()
        }
    }

    fn numbered(staged: &Staged) -> Vec<(u32, Vec<u8>)> {
        (0..).zip(staged.chunks.iter().cloned()).collect()
    }

    #[test]
    fn a_large_epoch_is_cut_into_chunks_and_put_back_in_any_order() {
        let commit = commit(100);
        let staged = encode(&commit);
        assert!(staged.chunks.len() > 3 && staged.chunks.iter().all(|c| c.len() <= STAGE_CHUNK_BYTES));
        let mut chunks = numbered(&staged);
        chunks.reverse();
        assert_eq!(decode(chunks, &staged.summary()), Ok(commit));
    }

    #[test]
    fn a_missing_changed_or_foreign_chunk_is_refused() {
        let staged = encode(&commit(100));
        let mut missing = numbered(&staged);
        missing.remove(1);
        assert!(decode(missing, &staged.summary()).unwrap_err().contains("chunks are staged"));
        let mut changed = numbered(&staged);
        changed[2].1[5] ^= 1;
        assert!(decode(changed, &staged.summary()).unwrap_err().contains("CRC32C"));
        let mut extra = numbered(&staged);
        extra.push((99, vec![1]));
        assert!(decode(extra, &staged.summary()).is_err());
        let empty = encode(&EpochCommit::default());
        assert_eq!(decode(numbered(&empty), &empty.summary()), Ok(EpochCommit::default()));
    }
}
