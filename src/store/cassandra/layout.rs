//! Where a value goes in Cassandra, and with which write timestamp: pure
//! functions of the data, part of the schema (`schema.cql`).

use crate::event::EventTime;

/// Windows per partition of a series (`window_rows`, `row_versions`,
/// `windows`): a day of 1m windows, 60 days of 1h ones.
pub const SERIES_BUCKET_WINDOWS: u64 = 1440;
/// Ledger partitions hold one day of window starts.
pub const LATE_DAY_MS: u64 = 86_400_000;
/// Partitions of a job's open-window state.
pub const STATE_SHARDS: i32 = 32;
/// Microseconds per millisecond: write timestamps are microseconds, as
/// Cassandra's own are.
const MICROS_PER_MS: i64 = 1_000;
/// Cassandra refuses a TTL above 20 years.
pub const MAX_TTL_S: i32 = 630_720_000;

/// The first window start of the partition `window_start` falls in.
pub fn bucket(granularity_ms: u64, window_start: EventTime) -> u64 {
    let span = granularity_ms.max(1).saturating_mul(SERIES_BUCKET_WINDOWS);
    window_start - window_start % span
}

/// The ledger day of a 1m window.
pub fn late_day(window_start: EventTime) -> u64 {
    window_start - window_start % LATE_DAY_MS
}

/// The state partition of a key.
pub fn shard(key: &[u8]) -> i32 {
    (crc32c::crc32c(key) % STATE_SHARDS as u32) as i32
}

/// The write timestamp of every cell an epoch writes to the serving
/// tables and the state: the epoch in microseconds. Epochs only grow, so a
/// later epoch's value always wins over an earlier one's, whatever order the
/// writes reach a replica in, and writing an epoch again writes the same
/// cells at the same timestamp. Event times end in 9999 (`MAX_EVENT_TIME_MS`),
/// far inside an `i64` of microseconds.
pub fn write_timestamp(epoch: u64) -> i64 {
    i64::try_from(epoch).expect("epochs are event times, far below 2^63") * MICROS_PER_MS
}

/// A retention in ms as a Cassandra TTL in seconds (at least 1, at most
/// [`MAX_TTL_S`]).
pub fn ttl_seconds(retention_ms: u64) -> i32 {
    i32::try_from(retention_ms / 1_000).unwrap_or(MAX_TTL_S).clamp(1, MAX_TTL_S)
}

/// An `i64` column read back as the `u64` written (negative: corrupt).
pub fn unsigned(value: i64) -> Option<u64> {
    u64::try_from(value).ok()
}

/// A `u64` as the `bigint` that stores it; every value tally stores (event
/// times, offsets, counts, generations) is far below 2^63.
pub fn signed(value: u64) -> i64 {
    i64::try_from(value).expect("stored values are below 2^63")
}

/// A bound of a range read as a `bigint`: a bound past every stored value
/// (`u64::MAX` for "no end") reads as the largest one.
pub fn saturating_signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000;

    #[test]
    fn buckets_hold_1440_windows_of_their_granularity() {
        assert_eq!(bucket(MINUTE, 0), 0);
        assert_eq!(bucket(MINUTE, 1439 * MINUTE), 0);
        assert_eq!(bucket(MINUTE, 1440 * MINUTE), 1440 * MINUTE);
        let hour = 60 * MINUTE;
        assert_eq!(bucket(hour, 1_767_225_600_000), 1_767_225_600_000 - 1_767_225_600_000 % (1440 * hour));
        assert_eq!(late_day(LATE_DAY_MS + 5 * MINUTE), LATE_DAY_MS);
    }

    #[test]
    fn later_epochs_write_later_timestamps() {
        assert!(write_timestamp(2_000) > write_timestamp(1_000));
        assert_eq!(write_timestamp(1_767_225_600_000), 1_767_225_600_000_000);
        write_timestamp(crate::event::MAX_EVENT_TIME_MS);
    }

    #[test]
    fn ttls_are_clamped_to_what_cassandra_takes() {
        assert_eq!(ttl_seconds(2 * 365 * 86_400_000), 63_072_000);
        assert_eq!(ttl_seconds(0), 1);
        assert_eq!(ttl_seconds(u64::MAX), MAX_TTL_S);
    }

    #[test]
    fn shards_spread_and_stay_in_range() {
        let shards: std::collections::BTreeSet<i32> = (0..1000u32).map(|i| shard(&i.to_le_bytes())).collect();
        assert_eq!(shards.len(), STATE_SHARDS as usize);
        assert!(shards.iter().all(|&s| (0..STATE_SHARDS).contains(&s)));
    }
}
