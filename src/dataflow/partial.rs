//! Partial aggregates and the per-epoch pre-aggregation that makes them.
//!
//! Sources never send clicks downstream: each worker folds its clicks into
//! one [`AdPartial`] per (ad, 1m window, lateness) for the epoch and sends
//! those at the epoch boundary. A viral ad therefore costs one record per
//! worker per epoch on the exchange, however many clicks it gets.

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use crate::event::{minute_start, Click, EventTime, Key, RequestId};

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Lateness {
    /// Counted before the window is final.
    OnTime,
    /// Too late: restates the final window; travels at its batch time.
    Restate,
    /// Too late and too old to restate: late ledger only.
    Held,
}

/// Clicks of one ad in one 1m window, pre-aggregated by one worker.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AdPartial {
    /// Start of the 1m window.
    pub window: EventTime,
    pub lateness: Lateness,
    pub agg: Agg,
    /// Request ids of too-late clicks, for the late ledger (empty if on time).
    pub late_ids: Vec<RequestId>,
}

/// The partials of one ad in one epoch, by window.
type Slots = Vec<(EventTime, Agg, Vec<RequestId>)>;

/// Folds decided clicks into partials until the epoch is flushed.
#[derive(Default)]
pub struct PreAggregator {
    distinct_users: bool,
    on_time: HashMap<Key, Slots>,
    /// Too-late clicks by batch time and lateness.
    late: HashMap<(EventTime, Lateness), HashMap<Key, Slots>>,
    pending: usize,
}

impl PreAggregator {
    pub fn new(distinct_users: bool) -> Self {
        PreAggregator { distinct_users, ..Default::default() }
    }

    /// Adds a click the partition has decided on.
    #[inline]
    pub fn add(&mut self, click: &Click, verdict: Verdict) {
        let (map, late) = match verdict {
            Verdict::Duplicate => return,
            Verdict::OnTime => (&mut self.on_time, false),
            Verdict::Restate { tau } => (self.late.entry((tau, Lateness::Restate)).or_default(), true),
            Verdict::Held { tau } => (self.late.entry((tau, Lateness::Held)).or_default(), true),
        };
        let slots = match map.get_mut(click.ad.as_str()) {
            Some(slots) => slots,
            None => map.entry(click.ad.clone()).or_default(),
        };
        let window = minute_start(click.ts);
        let slot = match slots.iter().position(|s| s.0 == window) {
            Some(i) => &mut slots[i],
            None => {
                self.pending += 1;
                slots.push((window, Agg::default(), Vec::new()));
                slots.last_mut().expect("just pushed")
            }
        };
        slot.1.clicks += 1;
        if self.distinct_users {
            slot.1.users.insert(click.user);
        }
        if late {
            slot.2.push(click.request_id);
        }
    }

    /// Number of partials waiting for the flush.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Takes the on-time partials of the epoch.
    pub fn drain_on_time(&mut self) -> Vec<(Key, AdPartial)> {
        let mut out = Vec::new();
        drain_into(&mut self.on_time, Lateness::OnTime, &mut out);
        self.pending = self.late.values().map(|m| m.values().map(Vec::len).sum::<usize>()).sum();
        out
    }

    /// Takes the too-late partials, each with the batch time it travels at.
    pub fn drain_late(&mut self) -> Vec<(EventTime, Vec<(Key, AdPartial)>)> {
        let mut batches = Vec::new();
        for ((tau, lateness), mut map) in self.late.drain() {
            let mut out = Vec::new();
            drain_into(&mut map, lateness, &mut out);
            batches.push((tau, out));
        }
        batches.sort_by_key(|b| b.0);
        self.pending = self.on_time.values().map(Vec::len).sum();
        batches
    }
}

fn drain_into(map: &mut HashMap<Key, Slots>, lateness: Lateness, out: &mut Vec<(Key, AdPartial)>) {
    for (ad, slots) in map.drain() {
        for (window, agg, late_ids) in slots {
            out.push((ad.clone(), AdPartial { window, lateness, agg, late_ids }));
        }
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
        let mut pre = PreAggregator::new(true);
        for i in 0..10_000 {
            pre.add(&click("viral", 1_000 + i, u128::from(i)), Verdict::OnTime);
        }
        pre.add(&click("viral", 61_000, 1), Verdict::OnTime);
        let out = pre.drain_on_time();
        assert_eq!(out.len(), 2);
        let total: u64 = out.iter().map(|(_, p)| p.agg.clicks).sum();
        assert_eq!(total, 10_001);
        assert_eq!(pre.pending(), 0);
    }

    #[test]
    fn late_clicks_keep_their_ids_and_batch() {
        let mut pre = PreAggregator::new(false);
        pre.add(&click("a", 1_000, 5), Verdict::Restate { tau: 200_000 });
        pre.add(&click("a", 1_000, 6), Verdict::Held { tau: 200_000 });
        pre.add(&click("a", 1_000, 7), Verdict::Duplicate);
        let batches = pre.drain_late();
        assert_eq!(batches.len(), 2);
        assert!(batches.iter().all(|(tau, _)| *tau == 200_000));
        let ids: Vec<_> = batches.iter().flat_map(|(_, b)| b[0].1.late_ids.clone()).collect();
        assert_eq!(ids.len(), 2);
    }
}
