//! `/v1/late` and `/v1/top` on a store holding a window of a million held
//! late clicks and a window of 200,000 ads: the work of one call is
//! bounded by what it answers, not by what the store holds. Work is
//! counted by a store wrapper (records of the ledger handed out, windows
//! read), never timed; what the pages hold is checked against the
//! ledger and rows the test itself committed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::Value;
use tally::event::{EventTime, KeyType};
use tally::ingest::client::HttpClient;
use tally::query::{router, QueryState, ServedStore};
use tally::row::{LateEntry, Row, Status};
use tally::store::read::RowIter;
use tally::store::{
    EmbeddedStore, EpochCommit, EpochStore, LatePosition, LateRecord, Recovered, RowFilter, StoreError, StoreReader, StoreSnapshot,
    StoredRow, Visit, WindowKey,
};
use tally::telemetry::Telemetry;

const MINUTE: u64 = 60_000;
const HELD: u128 = 1_000_000;
const ADS: usize = 200_000;
/// The most request ids and ledger records one page may take (README).
const PAGE_IDS: usize = 10_000;
const PAGE_RECORDS: u64 = 50_000;

#[derive(Default)]
struct Work {
    late_records: AtomicU64,
    windows_read: AtomicU64,
}

/// The embedded store's reader, counting the work done through it.
struct Counted {
    store: Arc<dyn StoreReader>,
    work: Arc<Work>,
}

struct CountedSnapshot {
    inner: Box<dyn StoreSnapshot>,
    work: Arc<Work>,
}

impl StoreReader for Counted {
    fn snapshot(&self) -> Result<Box<dyn StoreSnapshot>, StoreError> {
        Ok(Box::new(CountedSnapshot { inner: self.store.snapshot()?, work: Arc::clone(&self.work) }))
    }
}

impl StoreSnapshot for CountedSnapshot {
    fn rows(&self, filter: &RowFilter) -> Result<Vec<Row>, StoreError> {
        self.inner.rows(filter)
    }
    fn window_rows(&self, key_type: KeyType, granularity_ms: u64, window_start: EventTime) -> Result<Vec<Row>, StoreError> {
        self.work.windows_read.fetch_add(1, Ordering::SeqCst);
        self.inner.window_rows(key_type, granularity_ms, window_start)
    }
    fn latest_window(&self, key_type: KeyType, granularity_ms: u64, at_most: EventTime) -> Result<Option<EventTime>, StoreError> {
        self.inner.latest_window(key_type, granularity_ms, at_most)
    }
    fn committed_epoch(&self) -> Result<Option<u64>, StoreError> {
        self.inner.committed_epoch()
    }
    fn iter_rows(&self) -> Result<RowIter<'_>, StoreError> {
        self.inner.iter_rows()
    }
    fn row_history(&self, window: &WindowKey) -> Result<Vec<Row>, StoreError> {
        self.inner.row_history(window)
    }
    fn late_records(
        &self,
        from: EventTime,
        to: EventTime,
        after: Option<&LatePosition>,
        visit: &mut dyn FnMut(LateRecord) -> Visit,
    ) -> Result<(), StoreError> {
        self.inner.late_records(from, to, after, &mut |record| {
            self.work.late_records.fetch_add(1, Ordering::SeqCst);
            visit(record)
        })
    }
    fn settled_row(&self, window: &WindowKey) -> Result<Option<(Row, Vec<u8>)>, StoreError> {
        self.inner.settled_row(window)
    }
    fn state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.state(key)
    }
    fn last_committed(&self) -> Result<Option<Recovered>, StoreError> {
        self.inner.last_committed()
    }
    fn newest_generation(&self) -> Result<Option<u64>, StoreError> {
        self.inner.newest_generation()
    }
}

fn ad_row(i: usize) -> StoredRow {
    let row = Row {
        key_type: KeyType::Ad,
        key: format!("ad-{i:06}").into(),
        granularity_ms: MINUTE,
        window_start: 5 * MINUTE,
        // A spread of counts with ties, so the ranking's order by key matters.
        clicks: (i as u64 * 7_919) % 1_000,
        distinct_users: 1,
        status: Status::Partial,
        version: 0,
    };
    StoredRow { row, sketch: Vec::new() }
}

/// The query API over a store of the ledger and rows above, in this
/// process; its address and the work counters.
fn serve(dir: &std::path::Path) -> (std::net::SocketAddr, Arc<Work>) {
    let mut store = EmbeddedStore::open(dir).unwrap();
    let held = LateEntry {
        key_type: KeyType::Ad,
        key: "ad-hot".into(),
        window_start: MINUTE,
        batch: 10 * MINUTE,
        held: true,
        request_ids: (1..=HELD).collect(),
    };
    let small = LateEntry { key: "ad-cold".into(), window_start: 2 * MINUTE, held: false, request_ids: vec![7, 9], ..held.clone() };
    let rows: Vec<StoredRow> = (0..ADS).map(ad_row).collect();
    store.commit(EpochCommit { epoch: 6 * MINUTE, rows, late: vec![held, small], ..EpochCommit::default() }).unwrap();
    let work = Arc::new(Work::default());
    let reader = Counted { store: Arc::new(store.reader()), work: Arc::clone(&work) };
    let state = Arc::new(QueryState::new(ServedStore::fixed(Arc::new(reader)), Arc::new(Telemetry::new()), || 7 * MINUTE));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, router(state)).await.unwrap();
        });
        drop(store);
    });
    (addr, work)
}

fn get(http: &mut HttpClient, path: &str) -> (Value, usize) {
    let reply = http.get(path).unwrap();
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    (reply.json(), reply.body.len())
}

#[test]
fn a_page_of_the_ledger_and_a_ranking_cost_what_they_answer_not_what_the_store_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, work) = serve(dir.path());
    let mut http = HttpClient::new(addr, None);
    let range = format!("from=0&to={}", 3 * MINUTE);

    // limit=1 over a million held clicks: one page of at most PAGE_IDS
    // request ids, reading about as many records.
    let (page, bytes) = get(&mut http, &format!("/v1/late?{range}&limit=1"));
    let listed = page["entries"][0]["request_ids"].as_array().unwrap().len();
    let read = work.late_records.swap(0, Ordering::SeqCst);
    assert!(listed == PAGE_IDS && page["next"].is_string(), "{listed} ids listed");
    assert!(read <= PAGE_IDS as u64 + 1, "one page of {PAGE_IDS} ids read {read} ledger records");
    assert!(bytes < 50 * PAGE_IDS, "a page of {bytes} bytes");

    // Every page, each from the previous cursor: the million ids once
    // each, in order, and the small entry after them; no page read more
    // than its bound.
    let (mut ids, mut after, mut pages, mut cold) = (Vec::new(), String::new(), 0, Vec::new());
    loop {
        let (page, _) = get(&mut http, &format!("/v1/late?{range}&limit=1000{after}"));
        let read = work.late_records.swap(0, Ordering::SeqCst);
        assert!(read <= PAGE_RECORDS + 1, "a page read {read} ledger records");
        pages += 1;
        for entry in page["entries"].as_array().unwrap() {
            let listed = entry["request_ids"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().replace('-', ""));
            let listed = listed.map(|hex| u128::from_str_radix(&hex, 16).unwrap());
            match entry["key"].as_str().unwrap() {
                "ad-hot" => ids.extend(listed),
                _ => cold.extend(listed),
            }
        }
        match page["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => break,
        }
    }
    assert!(ids.iter().copied().eq(1..=HELD), "{} ids paged, the first {:?}", ids.len(), &ids[..3.min(ids.len())]);
    assert_eq!(cold, [7, 9]);
    // Pages of PAGE_IDS held ids each, then one of the small entry.
    assert_eq!(pages, HELD as usize / PAGE_IDS + 1);

    // /v1/top polled 20 times over one epoch: the window of 200,000 ads
    // (and its campaigns) is read once, and the top 10 is the test's own
    // ranking of the rows it committed.
    let mut expected: Vec<(u64, String)> = (0..ADS).map(ad_row).map(|r| (r.row.clicks, r.row.key.to_string())).collect();
    expected.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let total: u64 = expected.iter().map(|(clicks, _)| clicks).sum();
    for _ in 0..20 {
        let (top, _) = get(&mut http, "/v1/top?window=1m&k=10");
        let ranked: Vec<(u64, String)> =
            top["ads"].as_array().unwrap().iter().map(|a| (a["clicks"].as_u64().unwrap(), a["key"].as_str().unwrap().to_owned())).collect();
        assert_eq!(ranked, expected[..10].to_vec());
        assert_eq!(top["total_clicks"].as_u64(), Some(total));
        assert_eq!(top["window_start"].as_u64(), Some(5 * MINUTE));
    }
    assert_eq!(work.windows_read.load(Ordering::SeqCst), 2, "ads and campaigns of the window, read once for 20 calls");
}
