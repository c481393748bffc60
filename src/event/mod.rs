//! The click as it travels from a source into the dataflow.
//!
//! A [`Click`] is already validated and scrubbed: the user is a keyed 64-bit
//! hash ([`UserKey`]), never the raw `user_id`, and the request id is the
//! 128-bit UUID value. Everything downstream of a source sees only this type.
//!
//! Every way into the job makes its clicks with the parts below, so a click
//! means the same whichever way it came: [`validate`] (the rules of each
//! field and the [`validate::ClickError`] that names the one broken),
//! [`salt`] (the keyed hash that replaces the `user_id`) and [`json`] (a
//! click line or array element into a checked click).

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

pub mod json;
pub mod salt;
pub mod validate;

/// An ad, campaign or advertiser identifier (1–64 bytes, safe charset).
pub type Key = CompactString;

/// Event time in milliseconds since the Unix epoch, set by the client.
pub type EventTime = u64;

/// Keyed hash of a `user_id`: uniform over 64 bits, so sketches use it as is.
pub type UserKey = u64;

/// The idempotency key of a click: a UUID as a 128-bit integer.
pub type RequestId = u128;

/// Length of the base window; every other window is a multiple of it.
pub const MINUTE_MS: u64 = 60_000;

/// The largest event time a click may carry: the last millisecond of the
/// year 9999 UTC, 9999-12-31T23:59:59.999Z. Every way into the job (file,
/// `tally log import`, HTTP, the generator) refuses a larger timestamp as
/// field `timestamp`, and the log treats a stored one as a corrupt record,
/// so arithmetic on event times (a window's end plus the allowed lateness,
/// the restatement horizon, a retention age) stays ~5 orders of magnitude
/// below `u64::MAX`.
pub const MAX_EVENT_TIME_MS: EventTime = 253_402_300_799_999;

/// [`MAX_EVENT_TIME_MS`] as a reason for refusing a larger timestamp.
pub const MAX_EVENT_TIME_REASON: &str = "must be at most 253402300799999 (9999-12-31T23:59:59.999Z)";

/// What a row is grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    Ad,
    Campaign,
    Advertiser,
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Ad => "ad",
            KeyType::Campaign => "campaign",
            KeyType::Advertiser => "advertiser",
        }
    }
}

/// A validated click.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Click {
    pub ad: Key,
    pub ts: EventTime,
    pub user: UserKey,
    pub request_id: RequestId,
}

/// The log partition of a request id, in `0..partitions`.
///
/// Derived from the request id, not the ad: a retry lands where the original
/// did (dedup stays partition-local) and a viral ad spreads over all
/// partitions. The function is part of the log format and must never change:
/// the 64-bit halves are xor-folded and passed through the SplitMix64
/// finalizer, then reduced modulo the partition count.
pub fn partition_of(request_id: RequestId, partitions: u32) -> u32 {
    debug_assert!(partitions > 0);
    let folded = (request_id as u64) ^ ((request_id >> 64) as u64);
    (mix64(folded) % u64::from(partitions)) as u32
}

/// SplitMix64 finalizer: a cheap bijective mixer with full avalanche.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Start of the 1-minute window holding `ts`. Never overflows; its end,
/// `minute_start(ts) + MINUTE_MS`, does not either for a valid event time
/// (`ts <= MAX_EVENT_TIME_MS`), nor does that end plus any duration a job
/// file accepts below `u64::MAX - MAX_EVENT_TIME_MS` (~584,000 years).
pub fn minute_start(ts: EventTime) -> EventTime {
    ts - ts % MINUTE_MS
}

/// A seeded xorshift generator, for the tests that throw random bytes at
/// the decoders.
#[cfg(test)]
pub(crate) struct XorShift(pub u64);

#[cfg(test)]
impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_is_stable_and_in_range() {
        let id: RequestId = 0x0123_4567_89ab_cdef_0011_2233_4455_6677;
        let p = partition_of(id, 16);
        assert!(p < 16);
        assert_eq!(p, partition_of(id, 16));
    }

    #[test]
    fn minute_start_aligns_to_utc_minutes() {
        assert_eq!(minute_start(119_999), 60_000);
        assert_eq!(minute_start(120_000), 120_000);
    }

    #[test]
    fn the_largest_event_time_ends_the_year_9999() {
        // 10000-01-01T00:00:00Z is 253402300800000 ms after the Unix epoch.
        assert_eq!(minute_start(MAX_EVENT_TIME_MS) + MINUTE_MS, 253_402_300_800_000);
        assert!(MAX_EVENT_TIME_MS.checked_add(1 << 60).is_some(), "room for any window end plus horizon");
        assert!(MAX_EVENT_TIME_REASON.contains(&MAX_EVENT_TIME_MS.to_string()));
    }
}
