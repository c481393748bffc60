//! Exact per-partition duplicate detection within an event-time horizon.
//!
//! A retry carries the request id of its original and lands in the same
//! partition, so each partition remembers the ids it has counted, with the
//! partition's event-time progress (`max_ts`) when it last saw them: every
//! sighting, a dropped duplicate included, remembers the id again. An id
//! remembered at `t` is a duplicate while `t >= max_ts - horizon` (see
//! SEMANTICS.md). Remembering progress rather than the click's own time means
//! a retry of a very late click is caught too. The check compares times, so
//! when expired ids are dropped never changes a decision, which keeps replays
//! exact.
//!
//! Layout. Progress never goes back, so ids are remembered in time order and
//! expire in the same order: they live in a **ring** of fixed-size chunks,
//! appended at the back and dropped from the front once a whole chunk is
//! older than the horizon (16 bytes an id, plus each chunk's times, one entry
//! per distinct time). An **index** finds them: open addressing with linear
//! probing over 5-byte slots holding a 7-bit tag of the id's keyed hash
//! (lowest bit set, so a used slot is never 0) and the low 32 bits of its
//! position in the ring. A slot whose position has left the ring is dead: a
//! later insert on its probe path reuses it, and a rebuild drops it. A new
//! id costs a few index slot reads in one or two cache lines (prefetched a
//! few clicks ahead) and a sequential append; only a tag match (1 in 128
//! slots looked at) reads the ring. A rebuild walks the ring, hashing each
//! id again and prefetching its home slot a few ids before it is inserted;
//! an id remembered again has its older sighting marked stale (a bit per
//! id, in chunks that have one), which the rebuild skips.
//!
//! Memory: 16 bytes in the ring plus 5 bytes per index slot at 70–85 %
//! fill, about 22–23 bytes per remembered id, and no large copy ever exists
//! at once: the ring grows and shrinks by chunks, and only the index (under
//! a third of the memory) is rebuilt to grow or shrink, each time to the
//! size that holds the ring at 70 % (while the ring spans less than the
//! horizon, what the horizon will hold at the rate so far). Slots are found by a keyed hash, so request ids chosen to
//! collide cannot pile up in one place. The index and each chunk's ids are
//! mappings of their own (`mmap`), unmapped when dropped: the global
//! allocator would keep a freed index a while for reuse, beside the new one
//! a rebuild makes, and put a chunk in a page with room to spare.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::BuildHasher;

use crate::event::{mix64, EventTime, RequestId};

/// Shortest dedup horizon: below this, ordinary retries slip through.
pub const MIN_DEDUP_HORIZON_MS: u64 = 1_000;
/// Longest dedup horizon: a restart re-reads this much of every partition
/// (without counting) to rebuild the dedup memory.
pub const MAX_DEDUP_HORIZON_MS: u64 = 7 * 86_400_000;
/// Default `dedup.horizon`; also the Redis pre-filter's TTL when no job
/// tells it another (`tally ingest`).
pub const DEFAULT_DEDUP_HORIZON_MS: u64 = 60_000;

/// Ids per ring chunk.
const CHUNK_IDS: usize = 65_536;
/// Smallest index, in slots.
const MIN_SLOTS: usize = 1_024;
/// Largest index: positions are kept as their low 32 bits, which stay
/// unambiguous while fewer ids than this separate a slot from the newest.
const MAX_SLOTS: usize = 1 << 31;
/// Bytes of an index slot: the tag, then the position's low 32 bits.
const SLOT_BYTES: usize = 5;
/// The index is rebuilt past this fill (live and dead slots), in per cent ...
const MAX_FILL_PERCENT: usize = 85;
/// ... to hold the ring at this fill (see [`Dedup::wanted_slots`]) ...
const TARGET_FILL_PERCENT: usize = 70;
/// ... and shrunk at a quarter-horizon check when that would be at most this.
const SHRINK_BELOW_PERCENT: usize = 50;
/// How many ids ahead a rebuild prefetches their home slots.
const REBUILD_AHEAD: usize = 16;

/// Bytes of a remembered id in the ring.
const ID_BYTES: usize = 16;

/// A chunk's ids: room for [`CHUNK_IDS`] in a mapping of its own, so that a
/// chunk costs its ids and nothing more (the global allocator would put a
/// block of this size in a page with room to spare), and a dropped chunk's
/// memory goes straight back.
struct ChunkIds {
    bytes: Mapped,
    len: usize,
}

impl ChunkIds {
    fn len(&self) -> usize {
        self.len
    }

    /// The ids pushed so far.
    #[inline]
    fn ids(&self) -> &[[u32; 4]] {
        // SAFETY: the mapping holds CHUNK_IDS * ID_BYTES bytes, page-aligned
        // (more than `[u32; 4]` needs), every bit pattern is a valid
        // `[u32; 4]`, and `len <= CHUNK_IDS` ids of it were written.
        unsafe { std::slice::from_raw_parts(self.bytes.ptr.as_ptr().cast::<[u32; 4]>(), self.len) }
    }

    #[inline]
    fn get(&self, offset: usize) -> [u32; 4] {
        self.ids()[offset]
    }

    #[inline]
    fn push(&mut self, words: [u32; 4]) {
        assert!(self.len < CHUNK_IDS && self.bytes.len() == CHUNK_IDS * ID_BYTES, "a chunk has room for the id");
        // SAFETY: in bounds by the assertion, aligned as in `ids`, and
        // `&mut self` makes the write unique.
        unsafe { self.bytes.ptr.as_ptr().cast::<[u32; 4]>().add(self.len).write(words) };
        self.len += 1;
    }
}

/// Ids remembered in one stretch of the ring, in order.
struct Chunk {
    ids: ChunkIds,
    /// `(offset, time)` at each change of time, ascending in both.
    times: Vec<(u32, EventTime)>,
    /// A bit per id remembered again later (its newest sighting is further
    /// on): a rebuild skips it. Empty until the first.
    stale: Vec<u64>,
}

impl Chunk {
    /// An empty chunk, in `spare`'s memory if given (its old contents are
    /// never read: only the first `len` ids are).
    fn new(spare: Option<Mapped>) -> Chunk {
        let bytes = spare.unwrap_or_else(|| Mapped::zeroed(CHUNK_IDS * ID_BYTES, false));
        Chunk { ids: ChunkIds { bytes, len: 0 }, times: Vec::new(), stale: Vec::new() }
    }

    fn mark_stale(&mut self, offset: usize) {
        if self.stale.is_empty() {
            self.stale = vec![0; CHUNK_IDS / 64];
        }
        self.stale[offset / 64] |= 1 << (offset % 64);
    }

    fn is_stale(&self, offset: usize) -> bool {
        self.stale.get(offset / 64).is_some_and(|word| word >> (offset % 64) & 1 == 1)
    }

    /// The time the id at `offset` was remembered at.
    fn time_of(&self, offset: u32) -> EventTime {
        let after = self.times.partition_point(|&(o, _)| o <= offset);
        self.times[after - 1].1
    }

    fn last_time(&self) -> EventTime {
        self.times.last().map_or(0, |&(_, t)| t)
    }
}

/// The dedup memory of one partition.
pub struct Dedup {
    horizon_ms: u64,
    key: u64,
    ring: VecDeque<Chunk>,
    /// Position of the ring's first id; `next` is the next id's.
    first: u64,
    next: u64,
    /// [`SLOT_BYTES`] a slot: the tag (0: empty), then the position's low
    /// 32 bits, little-endian.
    index: Mapped,
    /// Slots not empty, live or dead.
    used: usize,
    /// Floor of the last quarter-horizon check.
    checked_at: EventTime,
    /// The ids' memory of the last chunk dropped, for the next one: a
    /// ring past its horizon drops a chunk for each it starts, and reusing
    /// the memory spares the kernel mapping and zeroing it again.
    spare: Option<Mapped>,
}

impl Dedup {
    pub fn new(horizon_ms: u64) -> Self {
        Dedup {
            horizon_ms,
            key: RandomState::new().hash_one(0u64),
            ring: VecDeque::new(),
            first: 0,
            next: 0,
            index: Mapped::zeroed(MIN_SLOTS * SLOT_BYTES, true),
            used: 0,
            checked_at: 0,
            spare: None,
        }
    }

    /// Decides whether `id` is a duplicate, given the partition's `max_ts`
    /// including this click; remembers it at `max_ts` either way.
    #[inline]
    pub fn is_duplicate(&mut self, id: RequestId, max_ts: EventTime) -> bool {
        let floor = max_ts.saturating_sub(self.horizon_ms);
        let words = words(id);
        let hash = self.hash(id);
        let tag = tag_of(hash);
        let slots = self.slots();
        let mut i = home(hash, slots);
        let mut dead = None;
        loop {
            let (slot_tag, low) = slot(&self.index, i);
            if slot_tag == 0 {
                break;
            }
            let position = self.position(low);
            if position < self.first {
                dead.get_or_insert(i);
            } else if slot_tag == tag {
                let (stored, remembered) = self.entry(position);
                if stored == words {
                    // Seen again, duplicate or not: remembered again, now
                    // (the horizon slides with every sighting). The old
                    // entry stays in the ring, unreachable, until its chunk
                    // expires.
                    if remembered != max_ts {
                        let at = (position - self.first) as usize;
                        self.ring[at / CHUNK_IDS].mark_stale(at % CHUNK_IDS);
                        let position = self.append(words, max_ts);
                        set_slot(&mut self.index, i, tag, position);
                    }
                    return remembered >= floor;
                }
            }
            i = if i + 1 == slots { 0 } else { i + 1 };
        }
        let position = self.append(words, max_ts);
        let at = dead.unwrap_or_else(|| {
            self.used += 1;
            i
        });
        set_slot(&mut self.index, at, tag, position);
        self.expire(floor);
        if self.used * 100 > slots * MAX_FILL_PERCENT {
            self.rebuild(self.wanted_slots(max_ts, slots));
        } else if floor >= self.checked_at + self.horizon_ms / 4 {
            self.checked_at = floor;
            if self.spans_horizon(max_ts) && self.len() * 100 / SHRINK_BELOW_PERCENT < slots {
                self.rebuild(self.len() * 100 / TARGET_FILL_PERCENT);
            }
        }
        false
    }

    /// The index size for the ring at the target fill. While the ring spans
    /// less than the horizon (a job starting, or the rate rising), it is
    /// sized for what the horizon will hold at the rate so far, at most
    /// four times as large: a few rebuilds, each to about the size it keeps.
    /// Dead slots past the fill only make it rebuilt at its size or smaller.
    fn wanted_slots(&self, max_ts: EventTime, slots: usize) -> usize {
        let wanted = self.len() * 100 / TARGET_FILL_PERCENT;
        if wanted <= slots {
            return wanted;
        }
        let span = self.span(max_ts);
        if span == 0 || span >= self.horizon_ms {
            return wanted;
        }
        let expected = (self.len() as u128 * u128::from(self.horizon_ms) / u128::from(span)) as usize;
        (expected.saturating_mul(100) / TARGET_FILL_PERCENT).clamp(wanted, (4 * slots).max(wanted))
    }

    /// Whether the ring holds a whole horizon: until then it is still
    /// filling, and an index sized for the horizon is not too large.
    fn spans_horizon(&self, max_ts: EventTime) -> bool {
        self.span(max_ts) >= self.horizon_ms
    }

    /// Event time from the ring's oldest id to `max_ts`.
    fn span(&self, max_ts: EventTime) -> u64 {
        let oldest = self.ring.front().and_then(|chunk| chunk.times.first()).map_or(max_ts, |&(_, t)| t);
        max_ts.saturating_sub(oldest)
    }

    /// Starts loading the index slot where `id`'s search begins, so that the
    /// call of [`Dedup::is_duplicate`] for it a few clicks later finds it in
    /// cache.
    #[inline]
    pub fn prefetch(&self, id: RequestId) {
        prefetch_slot(&self.index, home(self.hash(id), self.slots()));
    }

    /// The keyed hash of `id`.
    #[inline]
    fn hash(&self, id: RequestId) -> u64 {
        mix64(mix64(id as u64 ^ self.key) ^ (id >> 64) as u64)
    }

    fn slots(&self) -> usize {
        self.index.len() / SLOT_BYTES
    }

    /// The ring position a slot names: the newest position with these low
    /// 32 bits.
    #[inline]
    fn position(&self, low: u32) -> u64 {
        let behind = (self.next as u32).wrapping_sub(low);
        self.next - u64::from(behind)
    }

    /// The id at ring `position` and the time it was remembered at.
    fn entry(&self, position: u64) -> ([u32; 4], EventTime) {
        let at = (position - self.first) as usize;
        let chunk = &self.ring[at / CHUNK_IDS];
        let offset = (at % CHUNK_IDS) as u32;
        (chunk.ids.get(offset as usize), chunk.time_of(offset))
    }

    /// Appends an id remembered at `t`; returns its position.
    fn append(&mut self, words: [u32; 4], t: EventTime) -> u64 {
        if self.ring.back().is_none_or(|chunk| chunk.ids.len() == CHUNK_IDS) {
            self.ring.push_back(Chunk::new(self.spare.take()));
        }
        let chunk = self.ring.back_mut().expect("a chunk with room");
        if chunk.last_time() != t || chunk.times.is_empty() {
            chunk.times.push((chunk.ids.len() as u32, t));
        }
        chunk.ids.push(words);
        self.next += 1;
        self.next - 1
    }

    /// Drops the ring's front chunks whose every id is older than `floor`;
    /// their index slots are dead from now on.
    fn expire(&mut self, floor: EventTime) {
        while self.ring.len() > 1 && self.ring[0].last_time() < floor {
            self.spare = self.ring.pop_front().map(|chunk| chunk.ids.bytes);
            self.first += CHUNK_IDS as u64;
        }
    }

    /// Builds a new index of `slots` slots (within
    /// [`MIN_SLOTS`]..=[`MAX_SLOTS`]) for the ring's ids, each at its newest
    /// sighting (older ones are marked stale). Dead slots are left behind
    /// with the old index, which is freed first.
    fn rebuild(&mut self, slots: usize) {
        let slots = slots.clamp(MIN_SLOTS, MAX_SLOTS);
        self.index = Mapped::zeroed(0, false);
        let mut index = Mapped::zeroed(slots * SLOT_BYTES, true);
        // Ids are inserted in ring order, each `REBUILD_AHEAD` ids after its
        // home slot was prefetched: the slots of a large index are cache
        // (and TLB) misses, and one at a time they were most of a rebuild's
        // time.
        let mut ahead = [(0u64, 0u64); REBUILD_AHEAD];
        let mut queued = 0usize;
        let insert = |index: &mut Mapped, (hash, position): (u64, u64)| {
            let mut i = home(hash, slots);
            while slot(index, i).0 != 0 {
                i = if i + 1 == slots { 0 } else { i + 1 };
            }
            set_slot(index, i, tag_of(hash), position);
        };
        let mut position = self.first;
        for chunk in &self.ring {
            for (offset, stored) in chunk.ids.ids().iter().enumerate() {
                if !chunk.is_stale(offset) {
                    let hash = self.hash(id_of(*stored));
                    prefetch_slot(&index, home(hash, slots));
                    let at = queued % REBUILD_AHEAD;
                    if queued >= REBUILD_AHEAD {
                        insert(&mut index, ahead[at]);
                    }
                    ahead[at] = (hash, position);
                    queued += 1;
                }
                position += 1;
            }
        }
        for n in queued.saturating_sub(REBUILD_AHEAD)..queued {
            insert(&mut index, ahead[n % REBUILD_AHEAD]);
        }
        debug_assert_eq!(position, self.next);
        self.index = index;
        self.used = queued;
    }

    /// Number of ids in the ring (the remembered ones, plus any expired
    /// ones not yet dropped with their chunk).
    pub fn len(&self) -> usize {
        (self.next - self.first) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held: the ring's chunks and times, and the index.
    pub fn bytes(&self) -> usize {
        let ring: usize = self.ring.iter().map(|c| c.ids.bytes.len() + c.times.capacity() * 16 + c.stale.capacity() * 8).sum();
        ring + self.spare.as_ref().map_or(0, |bytes| bytes.len()) + self.index.len()
    }
}

/// Zeroed bytes in an anonymous private mapping of their own, unmapped on
/// drop (see the module's memory notes). Fresh pages read as zero and take
/// memory only once written.
struct Mapped {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone, like a `Vec<u8>`'s
// buffer; nothing else holds its address.
unsafe impl Send for Mapped {}
// SAFETY: as above; shared access only reads.
unsafe impl Sync for Mapped {}

impl Mapped {
    /// `len` zero bytes; no mapping for 0. Aborts like `Vec` when the
    /// kernel refuses the memory. With `random_access` (the index, which a
    /// rebuild touches all of, at random, reading before writing), it asks
    /// for transparent huge pages (sparing a TLB miss per probe, where the
    /// process has them: `run` turns them off, see `run.rs`), and is
    /// written in at once: touched first by a read, a page would be mapped
    /// to the shared zero page and copied at the first write, a second
    /// fault that flushes every core's TLB. Not for memory that may stay
    /// mostly untouched (a chunk of a quiet partition), which both would
    /// fill.
    fn zeroed(len: usize, random_access: bool) -> Mapped {
        if len == 0 {
            return Mapped { ptr: std::ptr::NonNull::dangling(), len };
        }
        // SAFETY: an anonymous private mapping of `len` bytes at an address
        // the kernel picks; no file, no existing memory is touched.
        let addr = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        match std::ptr::NonNull::new(addr.cast::<u8>()).filter(|_| addr != libc::MAP_FAILED) {
            Some(ptr) => {
                if random_access {
                    // SAFETY: advice on the mapping just made; neither
                    // changes its contents (populating writes zero pages
                    // that read as zero already). Refused advice (no
                    // transparent huge pages, an older kernel) leaves pages
                    // faulted in as touched, so the results are ignored.
                    unsafe {
                        libc::madvise(addr, len, libc::MADV_HUGEPAGE);
                        libc::madvise(addr, len, libc::MADV_POPULATE_WRITE);
                    }
                }
                Mapped { ptr, len }
            }
            None => std::alloc::handle_alloc_error(std::alloc::Layout::from_size_align(len, 1).unwrap_or(std::alloc::Layout::new::<u8>())),
        }
    }
}

impl std::ops::Deref for Mapped {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` is `len` mapped, initialised (zero-filled) bytes, or
        // dangling with `len` 0, which a slice allows.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for Mapped {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: `ptr`/`len` is exactly the mapping `zeroed` made, and
            // no slice of it outlives `self`. munmap of a valid mapping
            // cannot fail.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }
}

/// Starts loading index slot `i` into cache.
#[inline]
fn prefetch_slot(index: &[u8], i: usize) {
    let slot: *const u8 = &index[i * SLOT_BYTES];
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults and reads nothing
    // into the program, and `slot` points into the index anyway.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(slot.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = slot;
}

/// The index slot a hash starts its search at (from its high 32 bits).
#[inline]
fn home(hash: u64, slots: usize) -> usize {
    (((hash >> 32) * slots as u64) >> 32) as usize
}

/// A slot's tag: 7 low bits of the hash, and the lowest bit set.
#[inline]
fn tag_of(hash: u64) -> u8 {
    hash as u8 | 1
}

/// Slot `i`: its tag and position's low 32 bits.
#[inline]
fn slot(index: &[u8], i: usize) -> (u8, u32) {
    let bytes = &index[i * SLOT_BYTES..i * SLOT_BYTES + SLOT_BYTES];
    (bytes[0], u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]))
}

#[inline]
fn set_slot(index: &mut [u8], i: usize, tag: u8, position: u64) {
    let bytes = &mut index[i * SLOT_BYTES..i * SLOT_BYTES + SLOT_BYTES];
    bytes[0] = tag;
    bytes[1..].copy_from_slice(&(position as u32).to_le_bytes());
}

#[inline]
fn id_of(words: [u32; 4]) -> RequestId {
    words.iter().rev().fold(0u128, |id, &w| id << 32 | u128::from(w))
}

#[inline]
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
    fn every_sighting_slides_the_horizon() {
        // X@0, Y@2000, X@50000 (duplicate, remembered again at 50000),
        // X@61000 (duplicate: 50000 is within 60 s, remembered at 61000),
        // X@121001 (counted: last seen more than 60 s back).
        let mut d = Dedup::new(60_000);
        assert!(!d.is_duplicate(1, 0));
        assert!(!d.is_duplicate(2, 2_000));
        assert!(d.is_duplicate(1, 50_000));
        assert!(d.is_duplicate(1, 61_000));
        assert!(!d.is_duplicate(1, 121_001));
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
            self.0.insert(id, max_ts);
            dup
        }
    }

    #[test]
    fn expiry_growth_and_shrinking_never_change_a_decision() {
        // Bursts of ids at a varying rate: chunks expire, the index grows,
        // fills with dead slots and is rebuilt, and shrinks when the rate drops.
        let horizon = 1_000;
        let mut table = Dedup::new(horizon);
        let mut naive = Naive::default();
        let mut rng = 0x1234_5678_u64;
        let mut max_ts = 1_767_225_600_000;
        let mut largest = 0;
        for step in 0..600_000u64 {
            rng = mix64(rng);
            let busy = (step / 150_000) % 2 == 0;
            max_ts += u64::from(rng.is_multiple_of(if busy { 32 } else { 1 }));
            // Ids from a small space, so that both fresh ids and retries
            // (within and beyond the horizon) are common; high bits vary too.
            let id = u128::from(rng >> 46) * 0x0001_0000_0000_0001_0000_0000_0000_0001;
            assert_eq!(table.is_duplicate(id, max_ts), naive.is_duplicate(id, max_ts, horizon), "step {step}, id {id:x}");
            largest = largest.max(table.slots());
        }
        assert!(largest > 16 * MIN_SLOTS, "the index grew ({largest} slots)");
        assert!(table.slots() < largest, "and shrank again ({} slots)", table.slots());
        let live = naive.0.values().filter(|&&t| t >= max_ts - horizon).count();
        assert!(table.len() >= live, "{} ids in the ring, {live} live", table.len());
        assert!(table.len() <= live + 2 * CHUNK_IDS + 20_000, "expired chunks are dropped: {} in the ring, {live} live", table.len());
    }

    #[test]
    fn positions_stay_exact_past_32_bits() {
        let mut d = Dedup::new(1_000);
        d.next = (1 << 32) - 10;
        d.first = d.next;
        for i in 0..100u128 {
            assert!(!d.is_duplicate(i, 5_000));
        }
        for i in 0..100u128 {
            assert!(d.is_duplicate(i, 5_500), "id {i} across the 2^32 boundary");
        }
        assert!(!d.is_duplicate(7, 6_501), "expired");
    }

    #[test]
    fn a_remembered_id_costs_at_most_24_bytes() {
        // One partition at 125k ids/s of event time for 90 s: past the 60 s
        // horizon, so chunks expire and the index settles. The most bytes
        // held at any time (what peak RSS sees), over the ids the horizon
        // holds, and the same once it is full.
        let mut d = Dedup::new(60_000);
        let (mut peak, mut worst_full): (usize, f64) = (0, 0.0);
        for i in 0..11_250_000u64 {
            let id = u128::from(mix64(i)) << 64 | u128::from(i);
            d.is_duplicate(id, 1_767_225_600_000 + i / 125);
            if i % 100_000 == 0 {
                peak = peak.max(d.bytes());
                if i > 7_600_000 {
                    worst_full = worst_full.max(d.bytes() as f64 / d.len() as f64);
                }
                let fill = d.used * 100 / d.slots();
                assert!(fill <= MAX_FILL_PERCENT, "{fill} % full at {i}");
            }
        }
        assert!(d.len() >= 7_500_000 && d.len() <= 7_500_000 + 2 * CHUNK_IDS, "{} ids in the ring", d.len());
        let at_peak = peak as f64 / d.len() as f64;
        assert!(at_peak <= 24.0, "{at_peak:.1} bytes per id at the peak");
        assert!(worst_full <= 24.0, "{worst_full:.1} bytes per id at worst once the horizon is full");
    }
}
