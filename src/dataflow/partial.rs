//! Partial aggregates and the per-epoch pre-aggregation that makes them.
//!
//! Sources never send clicks downstream: each worker folds its clicks into
//! one [`AdPartial`] per (ad, 1m window, lateness) for the epoch and sends
//! those at the epoch boundary. A viral ad therefore costs one record per
//! worker per epoch on the exchange, however many clicks it gets.

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use crate::event::{minute_start, Click, EventTime, Key, RequestId, MINUTE_MS};

use super::hll::Sketch;
use super::partition::Verdict;

/// The measures of a window: exact clicks and a distinct-user sketch.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Agg {
    pub clicks: u64,
    pub users: Sketch,
}

impl Agg {
    pub fn merge(&mut self, other: &Agg) {
        self.clicks += other.clicks;
        self.users.merge(&other.users);
    }
}

/// How the clicks of a partial relate to their window's close.
///
/// Every partial travels at its worker's capability when it is flushed, so a
/// click's partial is always at a time before the epoch that follows its
/// read. Too-late partials carry their batch time `tau` (the partition's
/// watermark rounded down to the epoch when they were read): the window
/// operator applies them at `tau`, so which clicks share a restatement is a
/// function of the log alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Lateness {
    /// Counted before the window is final.
    OnTime,
    /// Too late: restates the final window, in batch `tau`.
    Restate(EventTime),
    /// Too late and too old to restate: late ledger only, in batch `tau`.
    Held(EventTime),
}

impl Lateness {
    /// The time the window operator applies a partial at: its batch for too
    /// late ones, the time it travels at for on-time ones. A batch the
    /// frontier already passed (it followed the clock, or a bounded run's end
    /// passed every window) applies at once: only when its windows show the
    /// restatement depends on that, never what they count.
    pub fn applies_at(self, travelled_at: EventTime) -> EventTime {
        match self {
            Lateness::OnTime => travelled_at,
            Lateness::Restate(tau) | Lateness::Held(tau) => tau.max(travelled_at),
        }
    }
}

/// Clicks of one ad in one 1m window, pre-aggregated by one worker.
///
/// Equality, order and hash look at identity only (window, lateness, seq):
/// `seq` is unique per partial, so the aggregate is a function of it, and
/// the sorts and consolidations inside the catalog join never compare or
/// hash sketches.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdPartial {
    /// Start of the 1m window.
    pub window: EventTime,
    pub lateness: Lateness,
    /// Unique per partial (worker index in the high bits): its identity.
    pub seq: u64,
    pub agg: Agg,
    /// Request ids of too-late clicks, for the late ledger (empty if on time).
    pub late_ids: Vec<RequestId>,
}

impl AdPartial {
    fn identity(&self) -> (EventTime, Lateness, u64) {
        (self.window, self.lateness, self.seq)
    }
}

impl PartialEq for AdPartial {
    fn eq(&self, other: &Self) -> bool {
        self.identity() == other.identity()
    }
}

impl Eq for AdPartial {}

impl PartialOrd for AdPartial {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for AdPartial {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.identity().cmp(&other.identity())
    }
}

impl std::hash::Hash for AdPartial {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.identity().hash(state);
    }
}

/// What one worker has folded for one ad in one window.
struct Slot {
    window: EventTime,
    /// Clicks since the last flush.
    clicks: u64,
    /// On time: every user of the window this worker has seen, kept across
    /// epochs so that a hot ad's sketch turns dense once. Too late: the
    /// batch's users.
    users: Sketch,
    /// Users since the last flush while `users` is still sparse: what a tail
    /// ad ships, instead of its whole sketch again every epoch. A dense
    /// `users` is shipped whole (4 KiB; merges are idempotent).
    fresh: Sketch,
    late_ids: Vec<RequestId>,
}

impl Slot {
    fn new(window: EventTime) -> Slot {
        Slot { window, clicks: 0, users: Sketch::default(), fresh: Sketch::default(), late_ids: Vec::new() }
    }

    #[inline]
    fn add_user(&mut self, user: u64) {
        self.users.insert(user);
        if self.users.is_sparse() {
            self.fresh.insert(user);
        }
    }

    /// The sketch to ship for the clicks since the last flush.
    fn take_users(&mut self) -> Sketch {
        let mut fresh = std::mem::take(&mut self.fresh);
        if self.users.is_sparse() {
            fresh.compact();
            fresh
        } else {
            self.users.clone()
        }
    }
}

type Slots = Vec<Slot>;

/// Folds decided clicks into partials until the epoch is flushed.
#[derive(Default)]
pub struct PreAggregator {
    distinct_users: bool,
    allowed_lateness_ms: u64,
    on_time: HashMap<Key, Slots>,
    /// Too-late clicks by lateness (with its batch time).
    late: HashMap<Lateness, HashMap<Key, Slots>>,
    /// Slots changed since the last flush.
    pending: usize,
    /// Makes every partial of this worker distinct (see [`AdPartial::seq`]).
    next_seq: u64,
}

impl PreAggregator {
    pub fn new(distinct_users: bool, allowed_lateness_ms: u64, worker: usize) -> Self {
        PreAggregator { distinct_users, allowed_lateness_ms, next_seq: (worker as u64) << 40, ..Default::default() }
    }

    /// Adds a click the partition has decided on.
    #[inline]
    pub fn add(&mut self, click: &Click, verdict: Verdict) {
        let (map, late) = match verdict {
            Verdict::Duplicate => return,
            Verdict::OnTime => (&mut self.on_time, false),
            Verdict::Restate { tau } => (self.late.entry(Lateness::Restate(tau)).or_default(), true),
            Verdict::Held { tau } => (self.late.entry(Lateness::Held(tau)).or_default(), true),
        };
        let slots = match map.get_mut(click.ad.as_str()) {
            Some(slots) => slots,
            None => map.entry(click.ad.clone()).or_default(),
        };
        let window = minute_start(click.ts);
        let slot = match slots.iter().position(|s| s.window == window) {
            Some(i) => &mut slots[i],
            None => {
                slots.push(Slot::new(window));
                slots.last_mut().expect("just pushed")
            }
        };
        if slot.clicks == 0 {
            self.pending += 1;
        }
        slot.clicks += 1;
        if self.distinct_users {
            slot.add_user(click.user);
        }
        if late {
            slot.late_ids.push(click.request_id);
        }
    }

    /// Number of partials waiting for the flush.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Takes the on-time partials of the epoch, and forgets windows that can
    /// get no more on-time clicks once the watermark is at `watermark`.
    pub fn flush_on_time(&mut self, watermark: EventTime) -> Vec<(Key, AdPartial)> {
        let mut out = Vec::new();
        let lateness = self.allowed_lateness_ms;
        self.on_time.retain(|ad, slots| {
            for slot in slots.iter_mut().filter(|s| s.clicks > 0) {
                let agg = Agg { clicks: slot.clicks, users: slot.take_users() };
                out.push((
                    ad.clone(),
                    AdPartial { window: slot.window, lateness: Lateness::OnTime, seq: self.next_seq, agg, late_ids: Vec::new() },
                ));
                self.next_seq += 1;
                slot.clicks = 0;
            }
            slots.retain(|s| s.window + MINUTE_MS + lateness > watermark);
            !slots.is_empty()
        });
        self.pending = self.late.values().map(|m| m.values().map(Vec::len).sum::<usize>()).sum();
        out
    }

    /// Takes the too-late partials; each carries its batch in its lateness.
    pub fn drain_late(&mut self) -> Vec<(Key, AdPartial)> {
        let mut out = Vec::new();
        for (lateness, map) in self.late.drain() {
            for (ad, slots) in map {
                for mut slot in slots {
                    slot.users.compact();
                    let agg = Agg { clicks: slot.clicks, users: slot.users };
                    out.push((ad.clone(), AdPartial { window: slot.window, lateness, seq: self.next_seq, agg, late_ids: slot.late_ids }));
                    self.next_seq += 1;
                }
            }
        }
        self.pending = self.on_time.values().flatten().filter(|s| s.clicks > 0).count();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn click(ad: &str, ts: u64, id: u128) -> Click {
        Click { ad: ad.into(), ts, user: id as u64 * 0x9e37_79b9_7f4a_7c15, request_id: id }
    }

    #[test]
    fn one_partial_per_ad_and_window_whatever_the_clicks() {
        let mut pre = PreAggregator::new(true, 0, 0);
        for i in 0..10_000 {
            pre.add(&click("viral", 1_000 + i, u128::from(i)), Verdict::OnTime);
        }
        pre.add(&click("viral", 61_000, 1), Verdict::OnTime);
        let out = pre.flush_on_time(0);
        assert_eq!(out.len(), 2);
        let total: u64 = out.iter().map(|(_, p)| p.agg.clicks).sum();
        assert_eq!(total, 10_001);
        assert_eq!(pre.pending(), 0);
    }

    #[test]
    fn tail_ads_ship_fresh_users_hot_ads_their_dense_sketch() {
        let mut pre = PreAggregator::new(true, 0, 0);
        pre.add(&click("tail", 1_000, 1), Verdict::OnTime);
        assert_eq!(pre.flush_on_time(0).len(), 1);
        assert!(pre.flush_on_time(0).is_empty(), "nothing new, nothing sent");
        pre.add(&click("tail", 2_000, 2), Verdict::OnTime);
        let out = pre.flush_on_time(0);
        assert_eq!((out[0].1.agg.clicks, out[0].1.agg.users.estimate()), (1, 1), "only the new user");
        for i in 0..2_000 {
            pre.add(&click("hot", 3_000, 1_000 + i), Verdict::OnTime);
        }
        pre.flush_on_time(0);
        pre.add(&click("hot", 4_000, 1), Verdict::OnTime);
        let out = pre.flush_on_time(60_000);
        let hot = &out.iter().find(|(ad, _)| ad == "hot").unwrap().1;
        assert!(!hot.agg.users.is_sparse(), "a dense sketch ships whole");
        assert!(hot.agg.users.estimate() > 1_900);
        assert!(pre.on_time.is_empty(), "windows closed at the source are forgotten");
    }

    #[test]
    fn late_clicks_keep_their_ids_and_batch() {
        let mut pre = PreAggregator::new(false, 0, 0);
        pre.add(&click("a", 1_000, 5), Verdict::Restate { tau: 200_000 });
        pre.add(&click("a", 1_000, 6), Verdict::Held { tau: 200_000 });
        pre.add(&click("a", 1_000, 7), Verdict::Duplicate);
        let late = pre.drain_late();
        assert_eq!(late.len(), 2);
        assert!(late.iter().all(|(_, p)| p.lateness.applies_at(0) == 200_000));
        let ids: Vec<_> = late.iter().flat_map(|(_, p)| p.late_ids.clone()).collect();
        assert_eq!(ids.len(), 2);
    }
}
