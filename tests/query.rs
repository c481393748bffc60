//! The query API end to end over HTTP: `tally up` on a fresh data
//! directory, known clicks posted to the ingest API, and the committed rows
//! per ad, campaign and advertiser at 1m, 5m and 1h compared with a recount
//! done here from the clicks sent (distinct request ids per window); then
//! `kill -9`, a restart, more clicks (and retries of old ones), and the
//! same comparison. Also the parameter errors, health, and the OpenAPI
//! document of everything `tally up` serves.
//!
//! The clicks are stamped in the last complete hour, so every 1m, 5m and 1h
//! window they fall in has ended: the job emits them at once (the frontier
//! of an idle live job follows the clock; clicks on time for their
//! partition that come later restate them), and the test does not wait an
//! hour.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

#[path = "common/net.rs"]
mod net;
use net::{free_addr, listening};
use tally::ingest::client::HttpClient;

const TALLY: &str = env!("CARGO_BIN_EXE_tally");
const HOUR_MS: u64 = 3_600_000;
const GRANULARITIES: [(&str, u64); 3] = [("1m", 60_000), ("5m", 300_000), ("1h", HOUR_MS)];
/// ad → (campaign, advertiser).
const CATALOG: [(&str, &str, &str); 5] = [
    ("q-ad-0", "q-cmp-0", "q-adv-0"),
    ("q-ad-1", "q-cmp-0", "q-adv-0"),
    ("q-ad-2", "q-cmp-1", "q-adv-0"),
    ("q-ad-3", "q-cmp-1", "q-adv-0"),
    ("q-ad-4", "q-cmp-2", "q-adv-1"),
];

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

struct Click {
    ad: usize,
    ts: u64,
    user: u64,
    id: u64,
}

impl Click {
    fn json(&self) -> String {
        format!(
            r#"{{"ad_id":"{}","timestamp":{},"user_id":"u{}","request_id":"00000000-0000-0000-0000-{:012x}"}}"#,
            CATALOG[self.ad].0, self.ts, self.user, self.id
        )
    }
}

/// Seeded clicks of a stream: 10 per second of event time from 10 minutes
/// into `hour` (so over five 1m windows, one 5m and one 1h window), up to
/// 2 s out of order.
fn clicks(hour: u64, ids: std::ops::Range<u64>) -> Vec<Click> {
    ids.map(|id| {
        let mix = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let ts = hour + 600_000 + id * 100 + (mix >> 20) % 2_000;
        Click { ad: (mix >> 7) as usize % 5, ts, user: (mix >> 40) % 300, id }
    })
    .collect()
}

/// The recount: distinct request ids per (key type, key, window, start).
fn recount(sent: &[&Click]) -> BTreeMap<(String, String, String, u64), u64> {
    let mut ids: BTreeMap<(String, String, String, u64), BTreeSet<u64>> = BTreeMap::new();
    for click in sent {
        let (ad, campaign, advertiser) = CATALOG[click.ad];
        for (key_type, key) in [("ad", ad), ("campaign", campaign), ("advertiser", advertiser)] {
            for (label, ms) in GRANULARITIES {
                let start = click.ts / ms * ms;
                ids.entry((key_type.to_owned(), key.to_owned(), label.to_owned(), start)).or_default().insert(click.id);
            }
        }
    }
    ids.into_iter().map(|(window, ids)| (window, ids.len() as u64)).collect()
}

/// What the query API says for every key and granularity of the catalog
/// over `[from, to)`; also checks no row is partial.
fn queried(http: &mut HttpClient, from: u64, to: u64) -> BTreeMap<(String, String, String, u64), u64> {
    let mut out = BTreeMap::new();
    let keys: BTreeSet<(&str, &str)> =
        CATALOG.iter().flat_map(|(ad, cmp, adv)| [("ads", *ad), ("campaigns", *cmp), ("advertisers", *adv)]).collect();
    for (path, key) in keys {
        for (label, _) in GRANULARITIES {
            let reply = http.get(&format!("/v1/{path}/{key}/clicks?window={label}&from={from}&to={to}")).unwrap();
            assert_eq!(reply.status, 200, "{}", reply.text());
            let body = reply.json();
            // Before the first commit (a slow start under load) there is
            // no epoch, no watermark and no row: the caller asks again.
            if body["committed_epoch"].is_null() {
                assert!(body["watermark"].is_null() && body["rows"].as_array().is_some_and(Vec::is_empty), "{body}");
                continue;
            }
            assert!(body["committed_epoch"].is_u64() && body["watermark"].is_u64(), "{body}");
            let key_type = body["key_type"].as_str().unwrap().to_owned();
            for row in body["rows"].as_array().unwrap() {
                assert_ne!(row["status"], "partial", "a settled window is still partial: {row}");
                let start = row["window_start"].as_u64().unwrap();
                out.insert((key_type.clone(), key.to_owned(), label.to_owned(), start), row["clicks"].as_u64().unwrap());
            }
        }
    }
    out
}

/// A child process that is killed when dropped, so a failing test leaves
/// nothing running.
struct Guard(Child);

impl std::ops::Deref for Guard {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Guard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(data: &Path, job: &Path, catalog: &Path, addr: SocketAddr) -> Guard {
    let mut child = Command::new(TALLY)
        .arg("--data-dir")
        .arg(data)
        .args(["up", "--no-auth", "--addr", &addr.to_string(), "--job"])
        .arg(job)
        .arg("--catalog")
        .arg(catalog)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tally up");
    let started = Instant::now();
    while !listening(addr) {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("tally up did not listen");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Guard(child)
}

fn post(http: &mut HttpClient, batch: &[Click]) {
    let body = batch.iter().map(Click::json).collect::<Vec<_>>().join("\n");
    let reply = http.post_until_accepted("/v1/clicks/batch", "application/x-ndjson", body.as_bytes(), 500).unwrap();
    assert_eq!(reply.status, 202, "{}", reply.text());
}

/// Polls until the API agrees with the recount (or fails after a minute,
/// showing the difference).
fn wait_for_recount(http: &mut HttpClient, expected: &BTreeMap<(String, String, String, u64), u64>, from: u64, to: u64) {
    let started = Instant::now();
    loop {
        let got = queried(http, from, to);
        if &got == expected {
            return;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let wrong: Vec<_> = expected
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(v))
                .take(5)
                .map(|(k, v)| (k.clone(), *v, got.get(k).copied()))
                .collect();
            panic!("the query API never matched the recount: {} windows expected, {} returned; first differences (window, expected, got): {wrong:?}", expected.len(), got.len());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn query_api_counts_match_a_recount_before_and_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let catalog = dir.path().join("ads.csv");
    let csv: String = CATALOG.iter().map(|(ad, cmp, adv)| format!("{ad},{cmp},{adv}\n")).collect();
    std::fs::write(&catalog, format!("ad_id,campaign_id,advertiser_id\n{csv}")).unwrap();
    // The built-in job, restating for 3 h so last hour's windows restate.
    let job = dir.path().join("job.toml");
    let embedded = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/embedded.toml")).unwrap();
    std::fs::write(&job, format!("{embedded}\n[late]\nrestate_within = \"3h\"\n")).unwrap();
    let addr = free_addr();

    let hour = now_ms() / HOUR_MS * HOUR_MS - HOUR_MS;
    let (from, to) = (hour, hour + HOUR_MS);
    let first = clicks(hour, 0..1_500);
    let second = clicks(hour, 1_500..3_000);

    let mut server = start(&data, &job, &catalog, addr);
    let mut http = HttpClient::new(addr, None);
    for batch in first.chunks(250) {
        post(&mut http, batch);
    }
    let sent: Vec<&Click> = first.iter().collect();
    wait_for_recount(&mut http, &recount(&sent), from, to);

    // Half of the second part, then kill -9 in the middle of the stream.
    for batch in second[..750].chunks(250) {
        post(&mut http, batch);
    }
    server.kill().unwrap();
    server.wait().unwrap();
    let mut server = start(&data, &job, &catalog, addr);
    let mut http = HttpClient::new(addr, None);
    // Client retries (the same request ids): the last batch before the
    // kill, whose answer the client may have missed, and part of it again.
    // Both are within the dedup horizon (60 s of event-time progress).
    post(&mut http, &second[500..750]);
    post(&mut http, &second[600..700]);
    for batch in second[750..].chunks(250) {
        post(&mut http, batch);
    }
    // Clicks 13 minutes older than their partitions' progress: too late
    // (each judged by its own partition's watermark), restating, and in the
    // late ledger.
    let late = clicks(hour - 840_000, 3_000..4_800);
    post(&mut http, &late);
    let sent: Vec<&Click> = first.iter().chain(&second).chain(&late).collect();
    let expected = recount(&sent);
    assert_eq!(expected.keys().filter(|k| k.2 == "1h").count(), 5 + 3 + 2, "every key has one 1h window");
    wait_for_recount(&mut http, &expected, from, to);

    // The ledger read in pages of 7 entries equals the ledger read whole:
    // no request id repeated or skipped at page boundaries.
    let whole = http.get(&format!("/v1/late?from={from}&to={to}&limit=1000")).unwrap().json();
    assert!(whole["next"].is_null(), "the test's ledger should fit one page of 1000");
    let whole = whole["entries"].as_array().unwrap().clone();
    let (paged, pages) = late_pages(&mut http, from, to, 7);
    assert!(whole.len() > 7 && pages > 1, "{} entries in {pages} pages: too few to test paging", whole.len());
    assert!(paged == whole, "paged ledger ({} entries) differs from the whole ({} entries)", paged.len(), whole.len());
    // With `limit=1` a page is one entry, and the next starts after it.
    let (single, pages) = late_pages(&mut http, from, to, 1);
    assert!(single == whole && pages == whole.len(), "{pages} pages of one entry for {} entries", whole.len());
    // A cursor outside the range, or not a cursor, is refused.
    let first = http.get(&format!("/v1/late?from={from}&to={to}&limit=1")).unwrap().json();
    let cursor = first["next"].as_str().unwrap().to_owned();
    for (query, reason) in [
        (format!("from={}&to={to}&after={cursor}", to - 1), "not in from..to"),
        (format!("from={from}&to={to}&after=12-x"), "not a cursor"),
    ] {
        let reply = http.get(&format!("/v1/late?{query}")).unwrap();
        assert_eq!(reply.status, 400, "{query}: {}", reply.text());
        let body = reply.json();
        assert!(body["field"] == "after" && body["reason"].as_str().unwrap().contains(reason), "{query}: {body}");
    }
    let _ = Command::new("kill").args(["-TERM", &server.id().to_string()]).status();
    assert!(server.wait().unwrap().success());
}

/// Every page of the ledger of `[from, to)` at `limit`, each page
/// following the previous one's `next`: the entries joined (an entry cut
/// by a page's end merged with its continuation) and the number of pages.
fn late_pages(http: &mut HttpClient, from: u64, to: u64, limit: usize) -> (Vec<Value>, usize) {
    let mut joined: Vec<Value> = Vec::new();
    let (mut after, mut pages) = (String::new(), 0);
    loop {
        let reply = http.get(&format!("/v1/late?from={from}&to={to}&limit={limit}{after}")).unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        let body = reply.json();
        pages += 1;
        for entry in body["entries"].as_array().unwrap() {
            let same = |a: &Value, b: &Value| ["window_start", "key_type", "key", "batch", "held"].iter().all(|f| a[f] == b[f]);
            match joined.last_mut() {
                Some(last) if same(last, entry) => {
                    let ids = entry["request_ids"].as_array().unwrap().clone();
                    last["request_ids"].as_array_mut().unwrap().extend(ids);
                }
                _ => joined.push(entry.clone()),
            }
        }
        match body["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => return (joined, pages),
        }
        assert!(pages < 10_000, "paging does not end");
    }
}

#[test]
fn bad_parameters_get_400_naming_them_and_health_answers() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("ads.csv");
    std::fs::write(&catalog, "ad_id,campaign_id,advertiser_id\nq-ad-0,q-cmp-0,q-adv-0\n").unwrap();
    let addr = free_addr();
    let job = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/embedded.toml"));
    let mut server = start(&dir.path().join("data"), job, &catalog, addr);
    let mut http = HttpClient::new(addr, None);
    let cases = [
        ("/v1/ads/q-ad-0/clicks?window=2m", "window", "\"2m\" is not one of 1m, 5m, 1h"),
        ("/v1/ads/q-ad-0/clicks?from=2000&to=1000", "from", "is not before to"),
        ("/v1/ads/q-ad-0/clicks?from=0&to=86400001", "from", "at most 1440 per request"),
        ("/v1/ads/q-ad-0/clicks?from=yesterday", "from", "neither unix milliseconds nor RFC 3339"),
        ("/v1/ads/bad%20ad/clicks", "id", "invalid character ' '"),
        ("/v1/campaigns/q-cmp-0/clicks?colour=red", "colour", "unknown parameter"),
        ("/v1/top?k=0", "k", "not an integer in 1..=100"),
        ("/v1/top?window=1m&window=5m", "window", "given twice"),
        ("/v1/late?from=0&to=172800000", "from", "at most 86400000 (one day)"),
        ("/v1/late?limit=5000", "limit", "not an integer in 1..=1000"),
    ];
    for (path, field, reason) in cases {
        let reply = http.get(path).unwrap();
        assert_eq!(reply.status, 400, "{path}: {}", reply.text());
        let body = reply.json();
        assert_eq!(body["field"], field, "{path}: {body}");
        assert!(body["reason"].as_str().unwrap().contains(reason), "{path}: {body}");
    }
    // The range edges: exactly 24 h of 1m windows is taken, aligned or not.
    for range in ["from=0&to=86400000", "from=30000&to=86430000", "from=1970-01-01T00:00:00Z&to=1970-01-02T00:00:00Z"] {
        let reply = http.get(&format!("/v1/ads/q-ad-0/clicks?{range}")).unwrap();
        assert_eq!(reply.status, 200, "{range}: {}", reply.text());
    }
    let reply = http.get("/v1/ads/q-ad-0/clicks?from=0&to=86460000").unwrap();
    assert_eq!((reply.status, reply.json()["field"].as_str()), (400, Some("from")), "{}", reply.text());
    assert!(reply.json()["reason"].as_str().unwrap().contains("1441 windows of 1m: at most 1440 per request"), "{}", reply.text());
    let rfc = http.get("/v1/ads/q-ad-0/clicks?window=1h&from=2026-01-01T00:00:00Z&to=2026-01-01T05:00:00%2B01:00").unwrap();
    assert_eq!(
        (rfc.json()["from"].as_u64(), rfc.json()["to"].as_u64()),
        (Some(1_767_225_600_000), Some(1_767_240_000_000)),
        "{}",
        rfc.text()
    );
    assert_eq!(http.get("/healthz").unwrap().status, 200);
    let started = Instant::now();
    while http.get("/readyz").unwrap().json()["committed_epoch"].is_null() {
        assert!(started.elapsed() < Duration::from_secs(30), "no epoch was ever committed");
        std::thread::sleep(Duration::from_millis(100));
    }
    // One document for everything `tally up` serves, and every route in it answers.
    let doc = http.get("/openapi.json").unwrap().json();
    let mut documented: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    documented.sort();
    let mut routes: Vec<String> =
        tally::query::ROUTES.iter().chain(tally::ingest::server::ROUTES).map(|(_, path)| path.to_string()).collect();
    routes.sort();
    // `/healthz` and `/readyz` are routes of both; the query API's answer them.
    routes.dedup();
    assert_eq!(documented, routes);
    for (method, path) in tally::query::ROUTES {
        let path = path.replace("{id}", "q-ad-0");
        let reply = http.raw(format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes()).unwrap();
        assert_eq!(reply.status, 200, "{method} {path}: {}", reply.text());
    }
    let _ = server.kill();
    let _ = server.wait();
}
