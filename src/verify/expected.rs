//! Recount step 2: counted clicks into the expected versions of every window
//! (SEMANTICS.md, "Windows and rows").
//!
//! A window `W` closes at `W.end + allowed_lateness`. Its final row, version
//! 1, counts the on-time clicks and the restating clicks whose batch `tau` is
//! before the close; each later batch that touches `W` adds one restated
//! version with the cumulative totals, in `tau` order. A window whose first
//! counted click comes in a batch after the close has no final row: its
//! first restated row is version 1.
//!
//! One `(key type, granularity)` pass at a time, so that only that pass's
//! exact user sets are in memory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use crate::catalog::{Catalog, UNKNOWN};
use crate::event::{minute_start, mix64, Click, EventTime, Key, KeyType, UserKey};
use crate::job::Job;
use crate::row::{Row, Status};
use crate::store::WindowKey;

/// One expected final or restated version of a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExpectedVersion {
    pub version: u32,
    /// [`Status::Final`] or [`Status::Restated`].
    pub status: Status,
    pub clicks: u64,
    /// The exact number of distinct user keys.
    pub distinct_users: u64,
}

impl ExpectedVersion {
    /// This version as the row the job should have committed, with the
    /// exact distinct count.
    pub fn row(&self, window: &WindowKey) -> Row {
        Row {
            key_type: window.key_type,
            key: window.key.clone(),
            granularity_ms: window.granularity_ms,
            window_start: window.window_start,
            clicks: self.clicks,
            distinct_users: self.distinct_users,
            status: self.status,
            version: self.version,
        }
    }
}

/// The counted clicks of every partition, ads interned.
#[derive(Clone, Debug, Default)]
pub(super) struct Counted {
    ads: Interner,
    clicks: Vec<CountedClick>,
}

#[derive(Clone, Copy, Debug)]
struct CountedClick {
    /// Index into `Counted::ads`.
    ad: usize,
    ts: EventTime,
    user: UserKey,
    /// `None` if on time, else the batch that restates it.
    tau: Option<EventTime>,
}

impl Counted {
    /// Keeps a click that counts: on time (`tau = None`) or restating.
    pub(super) fn push(&mut self, click: &Click, tau: Option<EventTime>) {
        let ad = self.ads.id(&click.ad);
        self.clicks.push(CountedClick { ad, ts: click.ts, user: click.user, tau });
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

/// The expected versions of every window of every `group_by` key type and
/// granularity of `job`.
pub(super) fn windows(counted: &Counted, job: &Job, catalog: Option<&Catalog>) -> BTreeMap<WindowKey, Vec<ExpectedVersion>> {
    let mut out = BTreeMap::new();
    for &key_type in &job.group_by {
        let keys = attribute(counted, key_type, catalog);
        for &granularity_ms in &job.windows_ms {
            let accumulated = accumulate(&counted.clicks, &keys.ids, granularity_ms, job.allowed_lateness_ms);
            for ((key, window_start), window) in accumulated {
                let window_key = WindowKey { key_type, key: keys.keys[key].clone(), granularity_ms, window_start };
                out.insert(window_key, window.versions());
            }
        }
    }
    out
}

/// The key of every counted click for one key type.
struct Attributed {
    keys: Vec<Key>,
    /// Per click, index into `keys`.
    ids: Vec<usize>,
}

/// Campaign and advertiser come from the catalog version valid at the
/// click's 1m window start; without one (or without a catalog), `unknown`.
fn attribute(counted: &Counted, key_type: KeyType, catalog: Option<&Catalog>) -> Attributed {
    if key_type == KeyType::Ad {
        return Attributed { keys: counted.ads.keys.clone(), ids: counted.clicks.iter().map(|c| c.ad).collect() };
    }
    let mut keys = Interner::default();
    let ids = counted.clicks.iter().map(|click| {
        let ad = &counted.ads.keys[click.ad];
        let found = catalog.and_then(|catalog| catalog.lookup(ad, minute_start(click.ts)));
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

/// What one window has collected, before it is turned into versions.
#[derive(Debug, Default)]
struct Window {
    /// Clicks in the final row: on time, or restating before the close.
    final_clicks: u64,
    final_users: HashSet<UserKey, Mixed>,
    /// Restating clicks of batches at or after the close: users by batch.
    restated: BTreeMap<EventTime, Vec<UserKey>>,
}

/// Every click into its window of `granularity_ms`, by (key id, start).
fn accumulate(
    clicks: &[CountedClick],
    keys: &[usize],
    granularity_ms: u64,
    allowed_lateness_ms: u64,
) -> HashMap<(usize, EventTime), Window, Mixed> {
    let mut windows: HashMap<(usize, EventTime), Window, Mixed> = HashMap::default();
    for (click, &key) in clicks.iter().zip(keys) {
        let start = click.ts - click.ts % granularity_ms;
        let close = start.saturating_add(granularity_ms).saturating_add(allowed_lateness_ms);
        let window = windows.entry((key, start)).or_default();
        match click.tau {
            Some(tau) if tau >= close => window.restated.entry(tau).or_default().push(click.user),
            _ => {
                window.final_clicks += 1;
                window.final_users.insert(click.user);
            }
        }
    }
    windows
}

impl Window {
    /// The final version (if anything counted before the close), then one
    /// restated version per later batch, cumulative.
    fn versions(self) -> Vec<ExpectedVersion> {
        let (mut clicks, mut users) = (self.final_clicks, self.final_users);
        let mut versions = Vec::with_capacity(1 + self.restated.len());
        if clicks > 0 {
            versions.push(ExpectedVersion { version: 1, status: Status::Final, clicks, distinct_users: users.len() as u64 });
        }
        for batch in self.restated.into_values() {
            clicks += batch.len() as u64;
            users.extend(batch);
            let version = u32::try_from(versions.len() + 1).unwrap_or(u32::MAX);
            versions.push(ExpectedVersion { version, status: Status::Restated, clicks, distinct_users: users.len() as u64 });
        }
        versions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000;
    const LATENESS: u64 = 10_000;

    fn counted(clicks: &[(&str, u64, u64, Option<u64>)]) -> Counted {
        let mut counted = Counted::default();
        for (i, &(ad, ts, user, tau)) in clicks.iter().enumerate() {
            counted.push(&Click { ad: ad.into(), ts, user, request_id: i as u128 }, tau);
        }
        counted
    }

    fn job(windows_ms: &[u64], group_by: &[KeyType]) -> Job {
        let mut job = Job::defaults(std::path::Path::new("verify.toml"));
        job.allowed_lateness_ms = LATENESS;
        job.windows_ms = windows_ms.to_vec();
        job.group_by = group_by.to_vec();
        job
    }

    fn window(key_type: KeyType, key: &str, granularity_ms: u64, window_start: u64) -> WindowKey {
        WindowKey { key_type, key: key.into(), granularity_ms, window_start }
    }

    fn v(version: u32, status: Status, clicks: u64, distinct_users: u64) -> ExpectedVersion {
        ExpectedVersion { version, status, clicks, distinct_users }
    }

    #[test]
    fn restating_batches_before_the_close_fold_into_the_final_row() {
        // Batch 130s restates the 1m window [0, 60s) (closed at 70s) but is
        // before the 5m window's close (310s); batch 320s restates both.
        let c = counted(&[("a", 1_000, 1, None), ("a", 2_000, 2, Some(130_000)), ("a", 3_000, 2, Some(320_000))]);
        let w = windows(&c, &job(&[MINUTE, 5 * MINUTE], &[KeyType::Ad]), None);
        let one = &w[&window(KeyType::Ad, "a", MINUTE, 0)];
        assert_eq!(one, &[v(1, Status::Final, 1, 1), v(2, Status::Restated, 2, 2), v(3, Status::Restated, 3, 2)]);
        let five = &w[&window(KeyType::Ad, "a", 5 * MINUTE, 0)];
        assert_eq!(five, &[v(1, Status::Final, 2, 2), v(2, Status::Restated, 3, 2)]);
    }

    #[test]
    fn a_window_first_counted_after_its_close_starts_restated_at_version_1() {
        let c = counted(&[("a", 61_000, 1, Some(200_000)), ("a", 62_000, 2, Some(200_000)), ("a", 63_000, 3, Some(201_000))]);
        let w = windows(&c, &job(&[MINUTE], &[KeyType::Ad]), None);
        assert_eq!(w[&window(KeyType::Ad, "a", MINUTE, MINUTE)], [v(1, Status::Restated, 2, 2), v(2, Status::Restated, 3, 3)]);
    }

    #[test]
    fn campaign_follows_the_catalog_at_the_clicks_1m_window_start() {
        let catalog = Catalog::parse("a,c1,x,0\na,c2,y,120000\n").unwrap();
        let c = counted(&[("a", 119_999, 1, None), ("a", 120_000, 2, None), ("b", 5, 3, None)]);
        let job = job(&[MINUTE, 5 * MINUTE], &[KeyType::Campaign, KeyType::Advertiser]);
        let w = windows(&c, &job, Some(&catalog));
        assert_eq!(w[&window(KeyType::Campaign, "c1", 5 * MINUTE, 0)], [v(1, Status::Final, 1, 1)]);
        assert_eq!(w[&window(KeyType::Campaign, "c2", 5 * MINUTE, 0)], [v(1, Status::Final, 1, 1)]);
        assert_eq!(w[&window(KeyType::Advertiser, "y", MINUTE, 2 * MINUTE)], [v(1, Status::Final, 1, 1)]);
        assert_eq!(w[&window(KeyType::Campaign, UNKNOWN, MINUTE, 0)], [v(1, Status::Final, 1, 1)]);
        assert!(!w.keys().any(|k| k.key_type == KeyType::Ad), "ad is not in group_by");
        let without = windows(&c, &job, None);
        assert_eq!(without[&window(KeyType::Advertiser, UNKNOWN, 5 * MINUTE, 0)], [v(1, Status::Final, 3, 3)]);
    }
}
