//! Verify step 3: counted clicks into the expected totals of every window
//! and the expected late ledger (SEMANTICS.md, "Windows and rows").
//!
//! The latest final or restated version of a window counts every counted
//! click of it: on time, or too late and restating. Which of its versions
//! first held which click depends on when the frontier moved, so the recount
//! predicts only the totals. The ledger holds every too-late click,
//! restating or held, under its 1m window.
//!
//! One `(key type, granularity)` pass at a time, so that only that pass's
//! exact user sets are in memory.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use crate::catalog::{Catalog, UNKNOWN};
use crate::event::{minute_start, mix64, Click, EventTime, Key, KeyType, RequestId, UserKey, MINUTE_MS};
use crate::job::Job;
use crate::store::WindowKey;

/// What the latest final or restated version of a window must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Totals {
    pub clicks: u64,
    /// The exact number of distinct user keys.
    pub distinct_users: u64,
}

/// The counted and the too-late clicks of every partition, ads interned.
#[derive(Clone, Debug, Default)]
pub(super) struct Counted {
    ads: Interner,
    /// On time or restating.
    clicks: Vec<CountedClick>,
    /// Restating or held.
    late: Vec<LateClick>,
}

#[derive(Clone, Copy, Debug)]
struct CountedClick {
    /// Index into `Counted::ads`.
    ad: usize,
    ts: EventTime,
    user: UserKey,
}

#[derive(Clone, Copy, Debug)]
struct LateClick {
    /// Index into `Counted::ads`.
    ad: usize,
    ts: EventTime,
    request_id: RequestId,
}

impl Counted {
    /// Keeps a click that counts in its windows: on time or restating.
    pub(super) fn count(&mut self, click: &Click) {
        let ad = self.ads.id(&click.ad);
        self.clicks.push(CountedClick { ad, ts: click.ts, user: click.user });
    }

    /// Keeps a too-late click (restating or held) for the ledger.
    pub(super) fn late(&mut self, click: &Click) {
        let ad = self.ads.id(&click.ad);
        self.late.push(LateClick { ad, ts: click.ts, request_id: click.request_id });
    }
}

/// Dense ids for keys, so that windows are keyed by small integers.
#[derive(Clone, Debug, Default)]
struct Interner {
    keys: Vec<Key>,
    ids: HashMap<Key, usize>,
}

impl Interner {
    fn id(&mut self, key: &str) -> usize {
        if let Some(&id) = self.ids.get(key) {
            return id;
        }
        let id = self.keys.len();
        self.keys.push(key.into());
        self.ids.insert(key.into(), id);
        id
    }
}

/// The totals of every window of every `group_by` key type and granularity
/// of `job` that at least one click counts in.
pub(super) fn windows(counted: &Counted, job: &Job, catalog: Option<&Catalog>) -> BTreeMap<WindowKey, Totals> {
    let mut out = BTreeMap::new();
    for &key_type in &job.group_by {
        let keys = attribute(&counted.ads, counted.clicks.iter().map(|c| (c.ad, c.ts)), key_type, catalog);
        for &granularity_ms in &job.windows_ms {
            for ((key, window_start), users) in accumulate(&counted.clicks, &keys.ids, granularity_ms) {
                let window_key = WindowKey { key_type, key: keys.keys[key].clone(), granularity_ms, window_start };
                out.insert(window_key, users.totals());
            }
        }
    }
    out
}

/// The request ids of the too-late clicks of every `group_by` key and 1m
/// window (the window's `granularity_ms` is 1m).
pub(super) fn ledger(counted: &Counted, job: &Job, catalog: Option<&Catalog>) -> BTreeMap<WindowKey, BTreeSet<RequestId>> {
    let mut out: BTreeMap<WindowKey, BTreeSet<RequestId>> = BTreeMap::new();
    for &key_type in &job.group_by {
        let keys = attribute(&counted.ads, counted.late.iter().map(|c| (c.ad, c.ts)), key_type, catalog);
        for (click, &key) in counted.late.iter().zip(&keys.ids) {
            let window =
                WindowKey { key_type, key: keys.keys[key].clone(), granularity_ms: MINUTE_MS, window_start: minute_start(click.ts) };
            out.entry(window).or_default().insert(click.request_id);
        }
    }
    out
}

/// The key of every click for one key type.
struct Attributed {
    keys: Vec<Key>,
    /// Per click, index into `keys`.
    ids: Vec<usize>,
}

/// Campaign and advertiser come from the catalog version valid at the
/// click's 1m window start; without one (or without a catalog), `unknown`.
/// `clicks` are (interned ad, event time).
fn attribute(ads: &Interner, clicks: impl Iterator<Item = (usize, EventTime)>, key_type: KeyType, catalog: Option<&Catalog>) -> Attributed {
    if key_type == KeyType::Ad {
        return Attributed { keys: ads.keys.clone(), ids: clicks.map(|(ad, _)| ad).collect() };
    }
    let mut keys = Interner::default();
    let ids = clicks.map(|(ad, ts)| {
        let found = catalog.and_then(|catalog| catalog.lookup(&ads.keys[ad], minute_start(ts)));
        let key = match (key_type, found) {
            (KeyType::Campaign, Some((campaign, _))) => campaign.as_str(),
            (KeyType::Advertiser, Some((_, advertiser))) => advertiser.as_str(),
            _ => UNKNOWN,
        };
        keys.id(key)
    });
    let ids = ids.collect();
    Attributed { keys: keys.keys, ids }
}

/// Hashes integers with the SplitMix64 finalizer instead of SipHash: the
/// exact user sets take most of the recount's time. Only for keys no client
/// chooses (interned ids, window starts, keyed user hashes).
#[derive(Default)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = mix64(self.0 ^ n);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

type Mixed = BuildHasherDefault<MixHasher>;

/// The clicks and exact users one window has collected.
#[derive(Debug, Default)]
struct Window {
    clicks: u64,
    users: HashSet<UserKey, Mixed>,
}

impl Window {
    fn totals(&self) -> Totals {
        Totals { clicks: self.clicks, distinct_users: self.users.len() as u64 }
    }
}

/// Every click into its window of `granularity_ms`, by (key id, start).
fn accumulate(clicks: &[CountedClick], keys: &[usize], granularity_ms: u64) -> HashMap<(usize, EventTime), Window, Mixed> {
    let mut windows: HashMap<(usize, EventTime), Window, Mixed> = HashMap::default();
    for (click, &key) in clicks.iter().zip(keys) {
        let start = click.ts - click.ts % granularity_ms;
        let window = windows.entry((key, start)).or_default();
        window.clicks += 1;
        window.users.insert(click.user);
    }
    windows
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000;

    /// (ad, ts, user, too late); a too-late click here is restating: it
    /// counts and is in the ledger.
    fn counted(clicks: &[(&str, u64, u64, bool)]) -> Counted {
        let mut counted = Counted::default();
        for (i, &(ad, ts, user, late)) in clicks.iter().enumerate() {
            let click = Click { ad: ad.into(), ts, user, request_id: i as u128 };
            counted.count(&click);
            if late {
                counted.late(&click);
            }
        }
        counted
    }

    fn job(windows_ms: &[u64], group_by: &[KeyType]) -> Job {
        let mut job = Job::defaults(std::path::Path::new("verify.toml"));
        job.windows_ms = windows_ms.to_vec();
        job.group_by = group_by.to_vec();
        job
    }

    fn window(key_type: KeyType, key: &str, granularity_ms: u64, window_start: u64) -> WindowKey {
        WindowKey { key_type, key: key.into(), granularity_ms, window_start }
    }

    fn t(clicks: u64, distinct_users: u64) -> Totals {
        Totals { clicks, distinct_users }
    }

    #[test]
    fn a_window_totals_every_counted_click_on_time_or_restating() {
        let c = counted(&[("a", 1_000, 1, false), ("a", 2_000, 2, true), ("a", 3_000, 2, true), ("a", 61_000, 3, false)]);
        let w = windows(&c, &job(&[MINUTE, 5 * MINUTE], &[KeyType::Ad]), None);
        assert_eq!(w[&window(KeyType::Ad, "a", MINUTE, 0)], t(3, 2));
        assert_eq!(w[&window(KeyType::Ad, "a", MINUTE, MINUTE)], t(1, 1));
        assert_eq!(w[&window(KeyType::Ad, "a", 5 * MINUTE, 0)], t(4, 3));
        assert_eq!(w.len(), 3);
    }

    #[test]
    fn the_ledger_holds_too_late_ids_by_key_and_1m_window() {
        let catalog = Catalog::parse("a,c1,x,0\n").unwrap();
        let c = counted(&[("a", 1_000, 1, true), ("b", 2_000, 2, true), ("a", 3_000, 2, false), ("a", 61_000, 3, true)]);
        let l = ledger(&c, &job(&[5 * MINUTE], &[KeyType::Ad, KeyType::Campaign]), Some(&catalog));
        assert_eq!(l[&window(KeyType::Ad, "a", MINUTE, 0)], BTreeSet::from([0]));
        assert_eq!(l[&window(KeyType::Ad, "a", MINUTE, MINUTE)], BTreeSet::from([3]));
        assert_eq!(l[&window(KeyType::Ad, "b", MINUTE, 0)], BTreeSet::from([1]));
        assert_eq!(l[&window(KeyType::Campaign, "c1", MINUTE, 0)], BTreeSet::from([0]));
        assert_eq!(l[&window(KeyType::Campaign, UNKNOWN, MINUTE, 0)], BTreeSet::from([1]));
        assert_eq!(l.len(), 6);
    }

    #[test]
    fn campaign_follows_the_catalog_at_the_clicks_1m_window_start() {
        let catalog = Catalog::parse("a,c1,x,0\na,c2,y,120000\n").unwrap();
        let c = counted(&[("a", 119_999, 1, false), ("a", 120_000, 2, false), ("b", 5, 3, false)]);
        let job = job(&[MINUTE, 5 * MINUTE], &[KeyType::Campaign, KeyType::Advertiser]);
        let w = windows(&c, &job, Some(&catalog));
        assert_eq!(w[&window(KeyType::Campaign, "c1", 5 * MINUTE, 0)], t(1, 1));
        assert_eq!(w[&window(KeyType::Campaign, "c2", 5 * MINUTE, 0)], t(1, 1));
        assert_eq!(w[&window(KeyType::Advertiser, "y", MINUTE, 2 * MINUTE)], t(1, 1));
        assert_eq!(w[&window(KeyType::Campaign, UNKNOWN, MINUTE, 0)], t(1, 1));
        assert!(!w.keys().any(|k| k.key_type == KeyType::Ad), "ad is not in group_by");
        let without = windows(&c, &job, None);
        assert_eq!(without[&window(KeyType::Advertiser, UNKNOWN, 5 * MINUTE, 0)], t(3, 3));
    }
}
