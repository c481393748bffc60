//! `GET /metrics` against what a test sent: `tally up` fed known clicks over
//! HTTP (valid ones, retries of some, too-late ones, invalid ones), and a
//! live `tally run --metrics-addr` over an imported log. Every figure the
//! test checks is counted from what it sent or imported, never from the
//! engine's own output; the exposition is parsed here, line by line, as
//! Prometheus's text format says.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tally::ingest::client::HttpClient;

#[path = "common/child.rs"]
mod child;
#[path = "common/net.rs"]
mod net;
use child::checked;
use net::{free_addr, listening};

const TALLY: &str = env!("CARGO_BIN_EXE_tally");

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
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
    while !listening(addr) {
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

/// What [`send_known`] sent: every click is counted from here.
const FRESH: u64 = 600;
const RETRIES: u64 = 50;
const LATE: u64 = 40;
/// Invalid clicks per batch of fresh ones (a bad timestamp, no ad id).
const INVALID_PER_BATCH: u64 = 2;
const FRESH_BATCHES: u64 = 6;

/// Sends `tally up` at `addr` known clicks: 600 of the last few seconds in
/// 6 batches, each with 2 invalid ones (a bad timestamp, no ad id); then 50
/// of them again (retries: duplicates); then, once the job has read those,
/// 40 from 20 minutes ago (too late). Returns the batches posted, the
/// last scrape once the job has read every click, and the log partitions
/// each batch wrote to (by the log's partition function), added up.
fn send_known(addr: SocketAddr) -> (u64, String, u64) {
    let mut http = HttpClient::new(addr, None);
    let now = now_ms();
    let fresh: Vec<String> = (0..FRESH).map(|i| click(i % 7, now - 5_000 + i * 5, i)).collect();
    let invalid = [
        r#"{"ad_id":"m-ad-1","timestamp":"yesterday","user_id":"u1","request_id":"00000000-0000-0000-0001-000000000001"}"#,
        r#"{"timestamp":1,"user_id":"u1","request_id":"00000000-0000-0000-0001-000000000002"}"#,
    ];
    let (mut batches, mut batch_partitions) = (0, 0);
    let mut post = |lines: Vec<String>| {
        let reply = http.post_until_accepted("/v1/clicks/batch", "application/x-ndjson", lines.join("\n").as_bytes(), 500).unwrap();
        assert_eq!(reply.status, 202, "{}", reply.text());
        batches += 1;
        batch_partitions += partitions_of(&lines);
    };
    for chunk in fresh.chunks((FRESH / FRESH_BATCHES) as usize) {
        post(chunk.iter().cloned().chain(invalid.iter().map(|s| s.to_string())).collect());
    }
    post(fresh[100..100 + RETRIES as usize].to_vec());
    // The partitions must have seen the fresh clicks before these are too
    // late: wait for every fresh click to be read.
    let mut scraper = HttpClient::new(addr, None);
    scrape_until(&mut scraper, "the fresh clicks read", |s| sum(s, "tally_job_clicks_total") >= (FRESH + RETRIES) as f64);
    post((0..LATE).map(|i| click(i % 7, now - 1_200_000 + i * 10, 10_000 + i)).collect());
    let text = scrape_until(&mut scraper, "every click read", |s| sum(s, "tally_job_clicks_total") >= (FRESH + RETRIES + LATE) as f64);
    (batches, text, batch_partitions)
}

/// The distinct log partitions (of the default job's 8) the valid clicks
/// among `lines` are written to.
fn partitions_of(lines: &[String]) -> u64 {
    let partitions: std::collections::BTreeSet<u32> = lines
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|click| click["ad_id"].is_string() && click["timestamp"].is_u64())
        .map(|click| {
            let id = u128::from_str_radix(&click["request_id"].as_str().unwrap().replace('-', ""), 16).unwrap();
            tally::event::partition_of(id, 8)
        })
        .collect();
    partitions.len() as u64
}

#[test]
fn tally_up_reports_what_it_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let data = dir.path().join("data");
    let _up = spawn(Command::new(TALLY).arg("--data-dir").arg(&data).args(["up", "--no-auth", "--addr", &addr.to_string()]), addr);
    let mut http = HttpClient::new(addr, None);
    let started = Instant::now();
    let (batches, text, batch_partitions) = send_known(addr);
    let s = samples(&text);

    let (sent, invalid) = ((FRESH + RETRIES + LATE) as f64, (FRESH_BATCHES * INVALID_PER_BATCH) as f64);
    assert_eq!(value(&s, "tally_clicks_received_total"), sent + invalid);
    assert_eq!(value(&s, "tally_clicks_accepted_total"), sent);
    assert_eq!(value(&s, "tally_clicks_written_total"), sent);
    assert_eq!(value(&s, r#"tally_clicks_rejected_total{field="timestamp"}"#), invalid / 2.0);
    assert_eq!(value(&s, r#"tally_clicks_rejected_total{field="ad_id"}"#), invalid / 2.0);
    assert_eq!(value(&s, "tally_ingest_requests_total"), batches as f64);
    assert_eq!(value(&s, r#"tally_http_requests_total{method="POST",route="/v1/clicks/batch",status="202"}"#), batches as f64);
    assert_eq!(value(&s, r#"tally_job_clicks_total{verdict="on_time"}"#), FRESH as f64);
    assert_eq!(value(&s, r#"tally_job_clicks_total{verdict="duplicate"}"#), RETRIES as f64);
    let late = value(&s, r#"tally_job_clicks_total{verdict="restating"}"#) + value(&s, r#"tally_job_clicks_total{verdict="held"}"#);
    assert_eq!(late, LATE as f64);
    assert_eq!(value(&s, "tally_log_errors_total"), 0.0);
    assert!(value(&s, "process_resident_memory_bytes") > 0.0);

    // Once every click is committed: the partitions' committed offsets
    // add up to the clicks written, and no partition lags.
    let text = scrape_until(&mut http, "every click committed", |s| sum(s, "tally_partition_committed_offset") >= sent);
    let s = samples(&text);
    assert_eq!(sum(&s, "tally_partition_committed_offset"), sent);
    assert_eq!(sum(&s, "tally_partition_end_offset"), sent);
    assert_eq!(sum(&s, "tally_partition_lag"), 0.0);
    assert!(value(&s, "tally_epoch_commit_duration_seconds_count") > 0.0);
    assert_eq!(value(&s, "tally_epoch_commit_failures_total"), 0.0);
    assert!(sum(&s, "tally_rows_written_total") > 0.0);

    // Freshness: one observation per batch and partition it wrote to, once
    // all are committed; none longer than the test has run.
    let text = scrape_until(&mut http, "every batch fresh", |s| value(s, "tally_freshness_seconds_count") >= batch_partitions as f64);
    let s = samples(&text);
    assert_eq!(value(&s, "tally_freshness_seconds_count"), batch_partitions as f64);
    let mean = value(&s, "tally_freshness_seconds_sum") / batch_partitions as f64;
    assert!(mean > 0.0 && mean < started.elapsed().as_secs_f64(), "mean freshness {mean} s");

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

/// Prometheus (Debian's package) started by `scripts/prometheus.sh`,
/// stopped when dropped.
struct Prometheus {
    dir: std::path::PathBuf,
    url: SocketAddr,
}

impl Prometheus {
    fn start(dir: &Path, target: SocketAddr) -> Prometheus {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
        let out = checked(
            Command::new("bash")
                .arg(script("prometheus.sh"))
                .args(["start", "--target", &target.to_string(), "--port", &port, "--dir"])
                .arg(dir),
        );
        let url = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_owned();
        let url = url.strip_prefix("http://").unwrap_or_else(|| panic!("no URL on the last line: {url:?}")).parse().unwrap();
        Prometheus { dir: dir.to_owned(), url }
    }

    /// The value of an instant query that must answer one sample (`None`
    /// while it answers none); panics on a query Prometheus refuses.
    fn query(&self, promql: &str) -> Option<f64> {
        let answer = self.answer(promql);
        let result = answer["data"]["result"].as_array().unwrap_or_else(|| panic!("{promql}: {answer}"));
        assert!(result.len() <= 1, "{promql}: more than one sample: {answer}");
        result.first().map(|sample| sample["value"][1].as_str().unwrap().parse().unwrap())
    }

    /// The whole answer of an instant query, which must succeed.
    fn answer(&self, promql: &str) -> serde_json::Value {
        let query: String = form_urlencoded::Serializer::new(String::new()).append_pair("query", promql).finish();
        let reply = HttpClient::new(self.url, None).get(&format!("/api/v1/query?{query}")).unwrap();
        let answer = reply.json();
        assert!(reply.status == 200 && answer["status"] == "success", "{promql}: {} {answer}", reply.status);
        answer
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script("prometheus.sh")).args(["stop", "--dir"]).arg(&self.dir).output();
    }
}

fn script(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(name)
}

/// Prometheus scraping `tally up` sees what the test sent; `promtool`
/// accepts the exposition and the alert rules; every query of the Grafana
/// dashboard runs.
#[test]
fn prometheus_scrapes_what_tally_up_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let data = dir.path().join("data");
    let _up = spawn(Command::new(TALLY).arg("--data-dir").arg(&data).args(["up", "--no-auth", "--addr", &addr.to_string()]), addr);
    let prometheus = Prometheus::start(&dir.path().join("prometheus"), addr);
    let (_, exposition, _) = send_known(addr);

    // What Prometheus scraped, once a scrape saw every click read.
    let started = Instant::now();
    let read = format!("sum(tally_job_clicks_total) == {}", FRESH + RETRIES + LATE);
    while prometheus.query(&read).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "Prometheus never scraped every click: {}",
            prometheus.answer("sum(tally_job_clicks_total)")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(prometheus.query("sum(tally_clicks_accepted_total)"), Some((FRESH + RETRIES + LATE) as f64));
    assert_eq!(prometheus.query(r#"sum(tally_job_clicks_total{verdict="duplicate"})"#), Some(RETRIES as f64));
    assert_eq!(prometheus.query(r#"sum(tally_job_clicks_total{verdict=~"restating|held"})"#), Some(LATE as f64));
    assert_eq!(prometheus.query("sum(tally_clicks_rejected_total)"), Some((FRESH_BATCHES * INVALID_PER_BATCH) as f64));
    assert_eq!(prometheus.query(r#"up{job="tally"}"#), Some(1.0));

    // promtool on the exposition and on the rules.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), exposition.as_bytes()).unwrap();
    let checked_metrics = promtool.wait_with_output().unwrap();
    assert!(
        checked_metrics.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&checked_metrics.stdout),
        String::from_utf8_lossy(&checked_metrics.stderr)
    );
    checked(Command::new("bash").arg(script("prometheus.sh")).arg("check"));

    // Every query of the Grafana dashboard is valid PromQL over these
    // metrics, and each panel has data once Prometheus holds two scrapes
    // or more of them (rates need two).
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/tally.json")).unwrap())
            .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 6);
    let started = Instant::now();
    for panel in panels {
        let answered = || -> usize {
            let targets = panel["targets"].as_array().unwrap().iter();
            targets.map(|target| prometheus.answer(target["expr"].as_str().unwrap())["data"]["result"].as_array().map_or(0, Vec::len)).sum()
        };
        while answered() == 0 {
            assert!(started.elapsed() < Duration::from_secs(60), "panel {}: no query has data", panel["title"]);
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}
