//! `/v1/top` without reading every key of a window at every call.
//!
//! Ranking a window needs all its rows (a window may hold hundreds of
//! thousands of ads), but those rows change only when an epoch commits.
//! So a window's rows are read once per served version and committed
//! epoch ([`WindowId`]), ranked, and kept ([`TopCache`]); every call of
//! that epoch, from any viewer, answers from them. An advertiser's ranking
//! (its own ads and campaigns, and its total) is computed once per window
//! too and kept beside it. Callers that miss the same window at once wait
//! for the one that reads it rather than read it again, and the newest
//! window start of an epoch (the default `at`) is kept the same way. So
//! however often the dashboards poll, each window is read once per commit
//! (about once a second), and a call costs a lookup and `k` rows.
//!
//! The cache holds at most [`MAX_WINDOWS`] windows (their rows, without
//! sketches) and [`MAX_RANKINGS`] advertisers' rankings per window; a new
//! epoch's window replaces the oldest.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::event::{EventTime, KeyType};
use crate::row::Row;
use crate::store::{StoreError, StoreSnapshot};

/// Windows whose rows are kept at once (two epochs of the three
/// granularities the dashboard asks for, with room to spare).
pub const MAX_WINDOWS: usize = 8;
/// Advertisers' rankings kept per window; beyond them, a ranking is
/// computed for each call from the window's rows held in memory.
pub const MAX_RANKINGS: usize = 1_024;
/// Rows ranked and kept per key type: the largest `k` a call may ask.
pub const KEPT: usize = super::params::MAX_TOP_K;

/// One window of one version as of one committed epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WindowId {
    /// The served version's generation ([`super::ServedStore::versioned_snapshot`]).
    pub version: u64,
    pub epoch: u64,
    pub granularity_ms: u64,
    pub window_start: EventTime,
}

/// A ranking: the first [`KEPT`] ads and campaigns by clicks (then key),
/// and the clicks of every ad ranked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ranking {
    pub total_clicks: u64,
    pub ads: Vec<Row>,
    pub campaigns: Vec<Row>,
}

impl Ranking {
    /// The ranking of the rows `keep` takes of `ads` and `campaigns`, both
    /// in rank order.
    fn of(ads: &[Row], campaigns: &[Row], keep: &dyn Fn(&Row) -> bool) -> Ranking {
        let kept = |rows: &[Row]| rows.iter().filter(|row| keep(row)).take(KEPT).cloned().collect();
        Ranking { total_clicks: ads.iter().filter(|row| keep(row)).map(|row| row.clicks).sum(), ads: kept(ads), campaigns: kept(campaigns) }
    }
}

/// What is kept of one window: its rows in rank order, and the rankings
/// made of them.
#[derive(Default)]
struct Window {
    ads: Vec<Row>,
    campaigns: Vec<Row>,
    /// By advertiser; `None`: every row (an operator).
    rankings: Mutex<HashMap<Option<String>, Arc<Ranking>>>,
}

/// A window being read, or read: callers of one window wait on its lock.
type Slot = Arc<Mutex<Option<Arc<Window>>>>;

/// The windows kept (see the module docs).
#[derive(Default)]
pub struct TopCache {
    windows: Mutex<VecDeque<(WindowId, Slot)>>,
    /// The newest window start at most at the epoch, by (version, epoch,
    /// granularity): the default window of a call without `at`.
    latest: Mutex<HashMap<(u64, u64, u64), Option<EventTime>>>,
    /// Windows read from the store (for tests and figures).
    reads: std::sync::atomic::AtomicU64,
}

impl TopCache {
    /// The newest window start of ads at `granularity_ms` at most at
    /// `epoch`, read once per version and epoch.
    pub fn latest_window(
        &self,
        snapshot: &dyn StoreSnapshot,
        (version, epoch): (u64, u64),
        granularity_ms: u64,
    ) -> Result<Option<EventTime>, StoreError> {
        let key = (version, epoch, granularity_ms);
        if let Some(found) = lock(&self.latest).get(&key) {
            return Ok(*found);
        }
        let found = snapshot.latest_window(KeyType::Ad, granularity_ms, epoch)?;
        let mut latest = lock(&self.latest);
        if latest.len() >= 4 * MAX_WINDOWS {
            latest.retain(|(v, e, _), _| (*v, *e) == (version, epoch));
        }
        latest.insert(key, found);
        Ok(found)
    }

    /// The ranking of window `id` for `advertiser` (`None`: everything),
    /// whose rows `keep` says the advertiser sees.
    pub fn ranking(
        &self,
        snapshot: &dyn StoreSnapshot,
        id: WindowId,
        advertiser: Option<&str>,
        keep: &dyn Fn(&Row) -> bool,
    ) -> Result<Arc<Ranking>, StoreError> {
        let window = self.window(snapshot, id)?;
        let key = advertiser.map(str::to_owned);
        if let Some(ranking) = lock(&window.rankings).get(&key) {
            return Ok(Arc::clone(ranking));
        }
        let ranking = Arc::new(Ranking::of(&window.ads, &window.campaigns, keep));
        let mut rankings = lock(&window.rankings);
        if rankings.len() < MAX_RANKINGS {
            rankings.insert(key, Arc::clone(&ranking));
        }
        Ok(ranking)
    }

    /// How many windows were read from the store so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The rows of window `id`, read from `snapshot` by the first caller.
    fn window(&self, snapshot: &dyn StoreSnapshot, id: WindowId) -> Result<Arc<Window>, StoreError> {
        let slot = {
            let mut windows = lock(&self.windows);
            match windows.iter().find(|(held, _)| *held == id) {
                Some((_, slot)) => Arc::clone(slot),
                None => {
                    if windows.len() >= MAX_WINDOWS {
                        windows.pop_front();
                    }
                    let slot = Slot::default();
                    windows.push_back((id, Arc::clone(&slot)));
                    slot
                }
            }
        };
        // Held while the window is read: the others asking for it wait.
        let mut slot = lock(&slot);
        if let Some(window) = slot.as_ref() {
            return Ok(Arc::clone(window));
        }
        let ranked = |key_type| -> Result<Vec<Row>, StoreError> {
            let mut rows = snapshot.window_rows(key_type, id.granularity_ms, id.window_start)?;
            rows.sort_by(|a, b| b.clicks.cmp(&a.clicks).then_with(|| a.key.cmp(&b.key)));
            Ok(rows)
        };
        let window = Arc::new(Window { ads: ranked(KeyType::Ad)?, campaigns: ranked(KeyType::Campaign)?, ..Window::default() });
        self.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *slot = Some(Arc::clone(&window));
        Ok(window)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::Status;
    use crate::store::{EmbeddedStore, EpochCommit, EpochStore, StoredRow};

    const MINUTE: u64 = 60_000;

    fn row(key_type: KeyType, key: &str, clicks: u64) -> StoredRow {
        let row = Row {
            key_type,
            key: key.into(),
            granularity_ms: MINUTE,
            window_start: 0,
            clicks,
            distinct_users: 1,
            status: Status::Partial,
            version: 0,
        };
        StoredRow { row, sketch: vec![] }
    }

    #[test]
    fn a_window_is_read_once_per_epoch_and_ranked_per_viewer() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = EmbeddedStore::open(dir.path()).unwrap();
        let ads: Vec<StoredRow> = (0..300).map(|i| row(KeyType::Ad, &format!("ad-{i:03}"), 1 + i % 7)).collect();
        let campaigns = vec![row(KeyType::Campaign, "c-1", 5), row(KeyType::Campaign, "c-2", 9)];
        store.commit(EpochCommit { epoch: 1, rows: [ads.clone(), campaigns].concat(), ..EpochCommit::default() }).unwrap();
        let cache = TopCache::default();
        let reader = store.reader();
        let id = WindowId { version: 1, epoch: 1, granularity_ms: MINUTE, window_start: 0 };
        let everyone = |_: &Row| true;
        let odd = |row: &Row| row.key.ends_with(['1', '3', '5', '7', '9']);
        for _ in 0..3 {
            let snapshot = reader.snapshot().unwrap();
            let all = cache.ranking(&snapshot, id, None, &everyone).unwrap();
            // Checked against a ranking made here, from the rows committed.
            let mut expected: Vec<&Row> = ads.iter().map(|r| &r.row).collect();
            expected.sort_by(|a, b| b.clicks.cmp(&a.clicks).then_with(|| a.key.cmp(&b.key)));
            assert_eq!(all.ads.iter().collect::<Vec<_>>(), expected[..KEPT].to_vec());
            assert_eq!(all.total_clicks, ads.iter().map(|r| r.row.clicks).sum::<u64>());
            assert_eq!(all.campaigns.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), ["c-2", "c-1"]);
            let some = cache.ranking(&snapshot, id, Some("adv-odd"), &odd).unwrap();
            assert!(some.ads.iter().all(odd) && some.ads.len() == KEPT);
            assert_eq!(some.campaigns.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), ["c-1"]);
            assert_eq!(some.total_clicks, ads.iter().map(|r| &r.row).filter(|r| odd(r)).map(|r| r.clicks).sum::<u64>());
        }
        assert_eq!(cache.reads(), 1, "one read of the window for every call of its epoch");

        // The next epoch (or another version) is read again.
        store.commit(EpochCommit { epoch: 2, rows: vec![row(KeyType::Ad, "ad-new", 1_000)], ..EpochCommit::default() }).unwrap();
        let snapshot = reader.snapshot().unwrap();
        let next = cache.ranking(&snapshot, WindowId { epoch: 2, ..id }, None, &everyone).unwrap();
        assert_eq!(next.ads[0].key, "ad-new");
        cache.ranking(&snapshot, WindowId { version: 2, epoch: 2, ..id }, None, &everyone).unwrap();
        assert_eq!(cache.reads(), 3);
    }

    #[test]
    fn callers_of_one_window_at_once_read_it_once_and_the_cache_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = EmbeddedStore::open(dir.path()).unwrap();
        store.commit(EpochCommit { epoch: 1, rows: vec![row(KeyType::Ad, "a", 1)], ..EpochCommit::default() }).unwrap();
        let (cache, reader) = (Arc::new(TopCache::default()), Arc::new(store.reader()));
        let id = WindowId { version: 1, epoch: 1, granularity_ms: MINUTE, window_start: 0 };
        let callers: Vec<_> = (0..8)
            .map(|_| {
                let (cache, reader) = (Arc::clone(&cache), Arc::clone(&reader));
                std::thread::spawn(move || cache.ranking(&reader.snapshot().unwrap(), id, None, &|_| true).unwrap().total_clicks)
            })
            .collect();
        assert!(callers.into_iter().all(|c| c.join().unwrap() == 1));
        assert_eq!(cache.reads(), 1);
        let snapshot = reader.snapshot().unwrap();
        for epoch in 0..3 * MAX_WINDOWS as u64 {
            cache.ranking(&snapshot, WindowId { epoch: 100 + epoch, ..id }, None, &|_| true).unwrap();
        }
        assert_eq!(lock(&cache.windows).len(), MAX_WINDOWS);
    }
}
