//! Byte encodings of the embedded store's values, format version
//! [`FORMAT_VERSION`](super::FORMAT_VERSION).
//!
//! Keys are redb tuples (redb orders them field by field, so a key's windows
//! are adjacent and sorted by start); values are fixed little-endian layouts
//! written here, so the file format is ours and versioned in the `meta` table
//! rather than a side effect of a serialization library. Changing any layout
//! or code below means a new format version.
//!
//! - row value: `clicks u64 | distinct_users u64 | status u8 | version u32 |
//!   epoch u64 | sketch bytes (the rest, possibly none)`
//! - last commit: `epoch u64 | generation u64 | count u32 | count ×
//!   (partition u32 | offset u64 | max_ts u64 | floor u64 |
//!   dedup_replay_offset u64 | dedup_replay_max_ts u64)`, partitions in
//!   increasing order
//! - key type: ad 0, campaign 1, advertiser 2; status: partial 0, final 1,
//!   restated 2

use crate::row::{Row, Status};
use crate::store::codes::{status_code, status_of};
use crate::store::PartitionCheckpoint;

const ROW_HEADER_BYTES: usize = 8 + 8 + 1 + 4 + 8;
const CHECKPOINT_BYTES: usize = 4 + 8 * 5;

/// A decoded row value; the key fields live in the table key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RowValue<'a> {
    pub clicks: u64,
    pub distinct_users: u64,
    pub status: Status,
    pub version: u32,
    /// The epoch that wrote this value.
    pub epoch: u64,
    pub sketch: &'a [u8],
}

pub(super) fn encode_row(row: &Row, epoch: u64, sketch: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ROW_HEADER_BYTES + sketch.len());
    out.extend_from_slice(&row.clicks.to_le_bytes());
    out.extend_from_slice(&row.distinct_users.to_le_bytes());
    out.push(status_code(row.status));
    out.extend_from_slice(&row.version.to_le_bytes());
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(sketch);
    out
}

pub(super) fn decode_row(mut bytes: &[u8]) -> Option<RowValue<'_>> {
    let clicks = u64::from_le_bytes(take(&mut bytes)?);
    let distinct_users = u64::from_le_bytes(take(&mut bytes)?);
    let [status] = take(&mut bytes)?;
    let version = u32::from_le_bytes(take(&mut bytes)?);
    let epoch = u64::from_le_bytes(take(&mut bytes)?);
    Some(RowValue { clicks, distinct_users, status: status_of(status)?, version, epoch, sketch: bytes })
}

/// The `epochs` table's one value: the last committed epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct LastCommit {
    pub epoch: u64,
    pub generation: u64,
    pub partitions: Vec<PartitionCheckpoint>,
}

pub(super) fn encode_last(last: &LastCommit) -> Vec<u8> {
    let count = u32::try_from(last.partitions.len()).expect("partition count fits u32");
    let mut out = Vec::with_capacity(20 + CHECKPOINT_BYTES * last.partitions.len());
    out.extend_from_slice(&last.epoch.to_le_bytes());
    out.extend_from_slice(&last.generation.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    for p in &last.partitions {
        out.extend_from_slice(&p.partition.to_le_bytes());
        for field in [p.offset, p.max_ts, p.floor, p.dedup_replay_offset, p.dedup_replay_max_ts] {
            out.extend_from_slice(&field.to_le_bytes());
        }
    }
    out
}

pub(super) fn decode_last(mut bytes: &[u8]) -> Option<LastCommit> {
    let epoch = u64::from_le_bytes(take(&mut bytes)?);
    let generation = u64::from_le_bytes(take(&mut bytes)?);
    let count = u32::from_le_bytes(take(&mut bytes)?) as usize;
    if bytes.len() != count.checked_mul(CHECKPOINT_BYTES)? {
        return None;
    }
    let mut partitions = Vec::with_capacity(count);
    for _ in 0..count {
        partitions.push(PartitionCheckpoint {
            partition: u32::from_le_bytes(take(&mut bytes)?),
            offset: u64::from_le_bytes(take(&mut bytes)?),
            max_ts: u64::from_le_bytes(take(&mut bytes)?),
            floor: u64::from_le_bytes(take(&mut bytes)?),
            dedup_replay_offset: u64::from_le_bytes(take(&mut bytes)?),
            dedup_replay_max_ts: u64::from_le_bytes(take(&mut bytes)?),
        });
    }
    Some(LastCommit { epoch, generation, partitions })
}

/// Splits `N` bytes off the front of `bytes`.
fn take<const N: usize>(bytes: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = bytes.split_first_chunk::<N>()?;
    *bytes = rest;
    Some(*head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::KeyType;

    fn row(status: Status, version: u32) -> Row {
        Row {
            key_type: KeyType::Campaign,
            key: "c1".into(),
            granularity_ms: 60_000,
            window_start: 120_000,
            clicks: 7,
            distinct_users: 5,
            status,
            version,
        }
    }

    #[test]
    fn row_value_round_trips_with_and_without_sketch() {
        for sketch in [&[][..], &[1, 2, 3][..]] {
            let bytes = encode_row(&row(Status::Restated, 3), 42, sketch);
            let value = decode_row(&bytes).unwrap();
            assert_eq!(value, RowValue { clicks: 7, distinct_users: 5, status: Status::Restated, version: 3, epoch: 42, sketch });
        }
    }

    #[test]
    fn row_value_layout_is_fixed() {
        let bytes = encode_row(&row(Status::Final, 1), 2, &[9]);
        assert_eq!(bytes.len(), ROW_HEADER_BYTES + 1);
        assert_eq!(&bytes[..8], &7u64.to_le_bytes());
        assert_eq!(bytes[16], 1);
        assert_eq!(&bytes[17..21], &1u32.to_le_bytes());
        assert_eq!(bytes[29], 9);
    }

    #[test]
    fn truncated_or_unknown_values_are_rejected() {
        let bytes = encode_row(&row(Status::Final, 1), 2, &[]);
        assert_eq!(decode_row(&bytes[..ROW_HEADER_BYTES - 1]), None);
        let mut bad_status = bytes.clone();
        bad_status[16] = 3;
        assert_eq!(decode_row(&bad_status), None);
    }

    #[test]
    fn last_commit_round_trips() {
        let last = LastCommit {
            epoch: 9,
            generation: 2,
            partitions: vec![
                PartitionCheckpoint { partition: 0, offset: 10, max_ts: 11, floor: 12, dedup_replay_offset: 3, dedup_replay_max_ts: 4 },
                PartitionCheckpoint { partition: 5, offset: 1, max_ts: 2, floor: 0, dedup_replay_offset: 0, dedup_replay_max_ts: 0 },
            ],
        };
        let bytes = encode_last(&last);
        assert_eq!(decode_last(&bytes), Some(last));
        assert_eq!(decode_last(&bytes[..bytes.len() - 1]), None);
    }
}
