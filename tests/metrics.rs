//! `GET /metrics` against what a test sent: `tally up` fed known clicks over
//! HTTP (valid ones, retries of some, too-late ones, invalid ones), and a
//! live `tally run --metrics-addr` over an imported log. Every figure the
//! test checks is counted from what it sent or imported, never from the
//! engine's own output; the exposition is parsed here, line by line, as
//! Prometheus's text format says.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tally::ingest::client::HttpClient;

#[path = "common/child.rs"]
mod child;
use child::checked;

const TALLY: &str = env!("CARGO_BIN_EXE_tally");

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A child killed when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(command: &mut Command, addr: SocketAddr) -> Guard {
    let child = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn tally");
    let guard = Guard(child);
    let started = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "nothing listened on {addr}");
        std::thread::sleep(Duration::from_millis(10));
    }
    guard
}

/// One sample of the exposition: name with its labels as written
/// (`name{a="x",b="y"}`), and value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample line: {line}"));
            (name.to_owned(), value.parse().unwrap_or_else(|_| panic!("not a number: {line}")))
        })
        .collect()
}

/// Every `# TYPE` line: metric name → type.
fn types(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|rest| {
            let (name, kind) = rest.split_once(' ').unwrap();
            (name.to_owned(), kind.to_owned())
        })
        .collect()
}

fn scrape(http: &mut HttpClient) -> String {
    let reply = http.get("/metrics").unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.text()
}

fn value(samples: &BTreeMap<String, f64>, name: &str) -> f64 {
    *samples.get(name).unwrap_or_else(|| panic!("no sample {name}"))
}

/// The sum of every sample of metric `name`, whatever its labels.
fn sum(samples: &BTreeMap<String, f64>, name: &str) -> f64 {
    samples.iter().filter(|(k, _)| k.as_str() == name || k.starts_with(&format!("{name}{{"))).map(|(_, v)| v).sum()
}

fn click(ad: u64, ts: u64, id: u64) -> String {
    format!(r#"{{"ad_id":"m-ad-{ad}","timestamp":{ts},"user_id":"u{}","request_id":"00000000-0000-0000-0000-{id:012x}"}}"#, id % 37)
}

/// Polls `/metrics` until `done` holds (or fails after a minute with the
/// last scrape).
fn scrape_until(http: &mut HttpClient, what: &str, done: impl Fn(&BTreeMap<String, f64>) -> bool) -> String {
    let started = Instant::now();
    loop {
        let text = scrape(http);
        if done(&samples(&text)) {
            return text;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{what} never came:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn tally_up_reports_what_it_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let data = dir.path().join("data");
    let _up = spawn(Command::new(TALLY).arg("--data-dir").arg(&data).args(["up", "--no-auth", "--addr", &addr.to_string()]), addr);
    let mut http = HttpClient::new(addr, None);
    let now = now_ms();

    // 600 clicks of the last few seconds in 6 batches, each with 2
    // invalid ones (a bad timestamp, no ad id); then 50 of them again
    // (retries: duplicates); then 40 from 20 minutes ago (too late).
    let fresh: Vec<String> = (0..600).map(|i| click(i % 7, now - 5_000 + i * 5, i)).collect();
    let invalid = [
        r#"{"ad_id":"m-ad-1","timestamp":"yesterday","user_id":"u1","request_id":"00000000-0000-0000-0001-000000000001"}"#,
        r#"{"timestamp":1,"user_id":"u1","request_id":"00000000-0000-0000-0001-000000000002"}"#,
    ];
    let mut batches = 0;
    let mut post = |lines: Vec<String>| {
        let reply = http.post_until_accepted("/v1/clicks/batch", "application/x-ndjson", lines.join("\n").as_bytes(), 500).unwrap();
        assert_eq!(reply.status, 202, "{}", reply.text());
        batches += 1;
    };
    for chunk in fresh.chunks(100) {
        post(chunk.iter().cloned().chain(invalid.iter().map(|s| s.to_string())).collect());
    }
    post(fresh[100..150].to_vec());
    // The partitions must have seen the fresh clicks before these are too
    // late: wait for every fresh click to be read.
    let mut http = HttpClient::new(addr, None);
    scrape_until(&mut http, "the fresh clicks read", |s| sum(s, "tally_job_clicks_total") >= 650.0);
    post((0..40).map(|i| click(i % 7, now - 1_200_000 + i * 10, 10_000 + i)).collect());
    let text = scrape_until(&mut http, "every click read", |s| sum(s, "tally_job_clicks_total") >= 690.0);
    let s = samples(&text);

    assert_eq!(value(&s, "tally_clicks_received_total"), 690.0 + 12.0);
    assert_eq!(value(&s, "tally_clicks_accepted_total"), 690.0);
    assert_eq!(value(&s, "tally_clicks_written_total"), 690.0);
    assert_eq!(value(&s, r#"tally_clicks_rejected_total{field="timestamp"}"#), 6.0);
    assert_eq!(value(&s, r#"tally_clicks_rejected_total{field="ad_id"}"#), 6.0);
    assert_eq!(value(&s, "tally_ingest_requests_total"), f64::from(batches));
    assert_eq!(value(&s, r#"tally_http_requests_total{method="POST",route="/v1/clicks/batch",status="202"}"#), f64::from(batches));
    assert_eq!(value(&s, r#"tally_job_clicks_total{verdict="on_time"}"#), 600.0);
    assert_eq!(value(&s, r#"tally_job_clicks_total{verdict="duplicate"}"#), 50.0);
    let late = value(&s, r#"tally_job_clicks_total{verdict="restating"}"#) + value(&s, r#"tally_job_clicks_total{verdict="held"}"#);
    assert_eq!(late, 40.0);
    assert_eq!(value(&s, "tally_log_errors_total"), 0.0);
    assert!(value(&s, "process_resident_memory_bytes") > 0.0);

    // Once every click is committed: the partitions' committed offsets
    // add up to the clicks written, and no partition lags.
    let text = scrape_until(&mut http, "every click committed", |s| sum(s, "tally_partition_committed_offset") >= 690.0);
    let s = samples(&text);
    assert_eq!(sum(&s, "tally_partition_committed_offset"), 690.0);
    assert_eq!(sum(&s, "tally_partition_end_offset"), 690.0);
    assert_eq!(sum(&s, "tally_partition_lag"), 0.0);
    assert!(value(&s, "tally_epoch_commit_duration_seconds_count") > 0.0);
    assert_eq!(value(&s, "tally_epoch_commit_failures_total"), 0.0);
    assert!(sum(&s, "tally_rows_written_total") > 0.0);

    // A path no route has is counted as `unmatched`, never by its path.
    assert_eq!(http.get("/no/such/path").unwrap().status, 404);
    let s = samples(&scrape(&mut http));
    assert_eq!(value(&s, r#"tally_http_requests_total{method="GET",route="unmatched",status="404"}"#), 1.0);
    assert!(!s.keys().any(|k| k.contains("/no/such/path")));

    // Conventions: every counter is named `…_total`, every metric of
    // tally is `tally_…`, durations are in seconds.
    for (name, kind) in types(&text) {
        if kind == "counter" {
            assert!(name.ends_with("_total"), "counter {name}");
        }
        assert!(name.starts_with("tally_") || name.starts_with("process_"), "{name}");
        assert!(!name.contains("_ms") && !name.contains("millis"), "{name}: durations are in seconds");
    }
}

#[test]
fn a_live_run_serves_metrics_at_its_metrics_addr() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("clicks.ndjson");
    let now = now_ms();
    let lines: Vec<String> = (0..300).map(|i| click(i % 5, now - 60_000 + i * 100, i)).collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    checked(Command::new(TALLY).arg("--data-dir").arg(&data).args(["log", "import"]).arg(&file));
    let addr = free_addr();
    let job = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/embedded.toml");
    let _run =
        spawn(Command::new(TALLY).arg("--data-dir").arg(&data).arg("run").arg(&job).args(["--metrics-addr", &addr.to_string()]), addr);
    let mut http = HttpClient::new(addr, None);
    let text = scrape_until(&mut http, "every imported click committed", |s| sum(s, "tally_partition_committed_offset") >= 300.0);
    let s = samples(&text);
    assert_eq!(sum(&s, "tally_job_clicks_total"), 300.0);
    assert_eq!(sum(&s, "tally_partition_end_offset"), 300.0);
    assert_eq!(sum(&s, "tally_partition_lag"), 0.0);
    assert!(!s.keys().any(|k| k.starts_with("tally_clicks_received")), "no ingest runs in `tally run`");
}
