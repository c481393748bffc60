//! Exact per-partition duplicate detection within an event-time horizon.
//!
//! A retry carries the request id of its original and lands in the same
//! partition, so each partition remembers the ids it has counted, with the
//! partition's event-time progress (`max_ts`) when it first saw them. An id
//! remembered at `t` is a duplicate while `t >= max_ts - horizon` (see
//! SEMANTICS.md). Remembering progress rather than the click's own time means
//! a retry of a very late click is caught too. Expired ids are swept out in
//! bulk every quarter horizon of event time; the check itself compares times,
//! so when the sweep runs never changes a decision, which keeps replays exact.
//!
//! Memory: the table is open addressing with linear probing over 20-byte
//! slots — the id (16 bytes) and its time in milliseconds after the table's
//! base (4 bytes; the base moves up at every sweep) — kept between 68 % and
//! 85 % full: 23.5–29.5 bytes per remembered id, a little more while the
//! table grows (its old and new slots both exist until the move is done).
//! Sweeps work in place. Slots are found by a keyed hash, so request ids
//! chosen to collide cannot pile up in one place.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use crate::event::{mix64, EventTime, RequestId};

/// Longest horizon the table's 32-bit times can hold with room for a
/// quarter horizon between sweeps: 7 days.
pub const MAX_HORIZON_MS: u64 = 7 * 86_400_000;
/// Smallest table, in slots.
const MIN_SLOTS: usize = 1_024;
/// Grow past this fill, in per cent ...
const MAX_FILL_PERCENT: usize = 85;
/// ... to this one (and shrink to it when a sweep leaves less than
/// [`MIN_FILL_PERCENT`]).
const TARGET_FILL_PERCENT: usize = 68;
const MIN_FILL_PERCENT: usize = 30;

/// One slot: the id as four 32-bit words, then its time as `t - base + 1`
/// (0: empty). Plain `u32`s, so the slot is 20 bytes with 4-byte alignment
/// and a new table is zeroed memory.
type Slot = [u32; 5];
const AT: usize = 4;

/// The dedup memory of one partition.
pub struct Dedup {
    horizon_ms: u64,
    slots: Vec<Slot>,
    len: usize,
    /// Times are stored relative to this; every stored time is at or after it.
    base: EventTime,
    /// Floor of the last sweep.
    swept_at: EventTime,
    key: u64,
}

impl Dedup {
    pub fn new(horizon_ms: u64) -> Self {
        assert!(horizon_ms <= MAX_HORIZON_MS, "dedup horizon {horizon_ms} ms is over the {MAX_HORIZON_MS} ms a slot can hold");
        Dedup { horizon_ms, slots: vec![[0; 5]; MIN_SLOTS], len: 0, base: 0, swept_at: 0, key: RandomState::new().hash_one(0u64) }
    }

    /// Decides whether `id` is a duplicate, given the partition's `max_ts`
    /// including this click; remembers it at `max_ts` if not.
    #[inline]
    pub fn is_duplicate(&mut self, id: RequestId, max_ts: EventTime) -> bool {
        let floor = max_ts.saturating_sub(self.horizon_ms);
        if max_ts - self.base >= u64::from(u32::MAX) {
            // Only after a jump in event time: what is stored is older than
            // the floor, and the floor becomes the base.
            self.sweep(floor);
        }
        let words = words(id);
        let at = (max_ts - self.base + 1) as u32;
        let mut i = self.home(id);
        loop {
            let slot = &mut self.slots[i];
            if slot[AT] == 0 {
                *slot = [words[0], words[1], words[2], words[3], at];
                self.len += 1;
                if self.len * 100 > self.slots.len() * MAX_FILL_PERCENT {
                    self.resize(self.len * 100 / TARGET_FILL_PERCENT);
                }
                self.maybe_sweep(floor);
                return false;
            }
            if slot[..AT] == words {
                if self.base + u64::from(slot[AT]) - 1 >= floor {
                    return true;
                }
                slot[AT] = at;
                return false;
            }
            i = if i + 1 == self.slots.len() { 0 } else { i + 1 };
        }
    }

    /// Starts loading the slot where `id`'s search begins, so that the call
    /// of [`Dedup::is_duplicate`] for it a few clicks later finds it in cache.
    #[inline]
    pub fn prefetch(&self, id: RequestId) {
        let slot: *const Slot = &self.slots[self.home(id)];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is a hint; it never faults and reads nothing
        // into the program, and `slot` points into the table anyway.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(slot.cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    /// The first slot to look at for `id`.
    #[inline]
    fn home(&self, id: RequestId) -> usize {
        let hash = mix64(mix64(id as u64 ^ self.key) ^ (id >> 64) as u64);
        ((u128::from(hash) * self.slots.len() as u128) >> 64) as usize
    }

    /// Sweeps once the floor has moved a quarter horizon since the last sweep.
    fn maybe_sweep(&mut self, floor: EventTime) {
        if floor >= self.swept_at + self.horizon_ms / 4 {
            self.sweep(floor);
            if self.len * 100 < self.slots.len() * MIN_FILL_PERCENT && self.slots.len() > MIN_SLOTS {
                self.resize(self.len * 100 / TARGET_FILL_PERCENT);
            }
        }
    }

    /// Drops every id remembered before `floor` and moves the base up to it,
    /// in place. Walking the table once in probe order from an empty slot,
    /// each survivor is taken out and put back at the first free slot from
    /// its home: that is never after where it was, and every slot between
    /// its home and there stays occupied, so every survivor stays reachable.
    fn sweep(&mut self, floor: EventTime) {
        debug_assert!(floor >= self.base);
        let cap = self.slots.len();
        let start = self.slots.iter().position(|slot| slot[AT] == 0).expect("a table below full has an empty slot");
        let shift = floor - self.base;
        for k in 1..=cap {
            let i = (start + k) % cap;
            let mut slot = std::mem::take(&mut self.slots[i]);
            if slot[AT] == 0 {
                continue;
            }
            if u64::from(slot[AT]) <= shift {
                self.len -= 1;
                continue;
            }
            slot[AT] -= shift as u32;
            self.place(slot);
        }
        self.base = floor;
        self.swept_at = floor;
    }

    /// Moves every id into a table of `slots` slots (at least [`MIN_SLOTS`]).
    fn resize(&mut self, slots: usize) {
        let old = std::mem::replace(&mut self.slots, vec![[0; 5]; slots.max(MIN_SLOTS)]);
        for slot in old.into_iter().filter(|slot| slot[AT] != 0) {
            self.place(slot);
        }
    }

    /// Puts a slot at the first free place from its id's home.
    fn place(&mut self, slot: Slot) {
        let id = u128::from(slot[0]) | u128::from(slot[1]) << 32 | u128::from(slot[2]) << 64 | u128::from(slot[3]) << 96;
        let mut i = self.home(id);
        while self.slots[i][AT] != 0 {
            i = if i + 1 == self.slots.len() { 0 } else { i + 1 };
        }
        self.slots[i] = slot;
    }

    /// Number of remembered ids.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of the table.
    pub fn table_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot>()
    }
}

fn words(id: RequestId) -> [u32; 4] {
    [id as u32, (id >> 32) as u32, (id >> 64) as u32, (id >> 96) as u32]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_within_horizon_counts_once() {
        let mut d = Dedup::new(60_000);
        assert!(!d.is_duplicate(7, 1_000));
        assert!(d.is_duplicate(7, 50_000));
        assert!(d.is_duplicate(7, 61_000));
    }

    #[test]
    fn duplicate_beyond_horizon_counts_again() {
        let mut d = Dedup::new(60_000);
        assert!(!d.is_duplicate(7, 1_000));
        assert!(!d.is_duplicate(7, 61_001));
        // Re-remembered at 61 001: a duplicate again from now on.
        assert!(d.is_duplicate(7, 61_001));
    }

    /// The rule of SEMANTICS.md by brute force, for comparison.
    #[derive(Default)]
    struct Naive(std::collections::HashMap<u128, u64>);

    impl Naive {
        fn is_duplicate(&mut self, id: u128, max_ts: u64, horizon: u64) -> bool {
            let floor = max_ts.saturating_sub(horizon);
            let dup = matches!(self.0.get(&id), Some(&t) if t >= floor);
            if !dup {
                self.0.insert(id, max_ts);
            }
            dup
        }
    }

    #[test]
    fn sweeps_growth_and_shrinking_never_change_a_decision() {
        // Bursts of ids at a varying rate: the table grows, sweeps (and
        // rebases) every quarter horizon, and shrinks when the rate drops.
        let horizon = 1_000;
        let mut table = Dedup::new(horizon);
        let mut naive = Naive::default();
        let mut rng = 0x1234_5678_u64;
        let mut max_ts = 1_767_225_600_000;
        let mut largest = 0;
        for step in 0..400_000u64 {
            rng = mix64(rng);
            let busy = (step / 100_000) % 2 == 0;
            max_ts += u64::from(rng % if busy { 16 } else { 1 } == 0);
            // Ids from a small space, so that both fresh ids and retries
            // (within and beyond the horizon) are common; high bits vary too.
            let id = u128::from(rng >> 46) * 0x0001_0000_0000_0001_0000_0000_0000_0001;
            assert_eq!(table.is_duplicate(id, max_ts), naive.is_duplicate(id, max_ts, horizon), "step {step}, id {id:x}");
            largest = largest.max(table.slots.len());
        }
        assert!(largest > 4 * MIN_SLOTS, "the table grew ({largest} slots)");
        assert!(table.slots.len() < largest, "and shrank again ({} slots)", table.slots.len());
        let live = naive.0.values().filter(|&&t| t >= max_ts - horizon).count();
        assert!(table.len() >= live && table.len() <= naive.0.len(), "{} ids kept, {live} live", table.len());
    }

    #[test]
    fn a_jump_in_event_time_rebases_without_forgetting_live_ids() {
        let mut d = Dedup::new(60_000);
        assert!(!d.is_duplicate(1, 1_000));
        // 60 days later: beyond what 32 bits of milliseconds reach from the base.
        let later = 1_000 + 60 * 86_400_000;
        assert!(!d.is_duplicate(2, later));
        assert!(!d.is_duplicate(1, later), "id 1 is long expired");
        assert!(d.is_duplicate(2, later + 59_000));
        assert!(d.is_duplicate(1, later + 60_000));
    }

    #[test]
    fn fill_stays_between_its_bounds() {
        let mut d = Dedup::new(3_600_000);
        for id in 0..2_000_000u128 {
            d.is_duplicate(id * 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834, 1_000);
            if id > 10_000 {
                let fill = d.len() * 100 / d.slots.len();
                assert!((TARGET_FILL_PERCENT - 1..=MAX_FILL_PERCENT).contains(&fill), "{fill} % full at {id}");
            }
        }
        let per_id = d.table_bytes() as f64 / d.len() as f64;
        assert!(per_id < 30.0, "{per_id:.1} bytes per id");
    }
}
