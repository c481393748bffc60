//! Backfills into versions of the output, end to end with the real binary:
//! `tally run --from/--to`, `tally backfill`, `tally verify --version`,
//! `tally versions`, `tally switch`, and the query API of a running `tally
//! up` following a switch.
//!
//! The clicks are generated two hours before now, at 20 per second of event
//! time over ~17 minutes, so they fill many 1m windows, all ended (the live
//! job of `tally up` emits them at once), and none is old enough for log
//! retention.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tally::ingest::client::HttpClient;
use tally::row::Status;

#[path = "common/net.rs"]
mod net;
use net::{free_addr, listening};
use tally::store::{EmbeddedStore, EpochCommit, EpochStore, StoredRow};

const TALLY: &str = env!("CARGO_BIN_EXE_tally");
const CLICKS: u64 = 20_000;
const RATE_PER_S: u64 = 20;
const HOUR_MS: u64 = 3_600_000;

/// A data directory with `CLICKS` generated clicks in its log, the catalog
/// and a job file (log source, store sink) beside it.
struct Setup {
    dir: tempfile::TempDir,
    /// Event time of the first click, on an hour boundary.
    start_ms: u64,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let start_ms = now / HOUR_MS * HOUR_MS - 2 * HOUR_MS;
        let setup = Setup { dir, start_ms };
        let clicks = setup.path("clicks.ndjson");
        let (clicks_text, catalog) = (clicks.to_str().unwrap(), setup.path("ads.csv"));
        let (start, clicks, rate) = (start_ms.to_string(), CLICKS.to_string(), RATE_PER_S.to_string());
        let gen = ["gen", "--clicks", &clicks, "--rate-per-s", &rate, "--ads", "50", "--start-ms", &start, "--output", clicks_text];
        setup.ok(&[&gen[..], &["--catalog", catalog.to_str().unwrap()]].concat());
        setup.ok(&["log", "import", clicks_text]);
        let job = format!(
            "[source]\nkind = \"log\"\npartitions = 8\n\n[sink]\nkind = \"store\"\n\n[catalog]\npath = \"{}\"\n",
            catalog.display()
        );
        std::fs::write(setup.job(), job).unwrap();
        setup
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn data(&self) -> PathBuf {
        self.path("data")
    }

    fn job(&self) -> PathBuf {
        self.path("job.toml")
    }

    /// An event time `seconds` into the clicks.
    fn at(&self, seconds: u64) -> String {
        (self.start_ms + seconds * 1_000).to_string()
    }

    /// Runs `tally --data-dir DATA ARGS`: exit code, stdout, stderr.
    fn tally(&self, args: &[&str]) -> (i32, String, String) {
        let output = Command::new(TALLY).arg("--data-dir").arg(self.data()).args(args).stdin(Stdio::null()).output().unwrap();
        let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
        (output.status.code().unwrap_or(-1), text(output.stdout), text(output.stderr))
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, stdout, stderr) = self.tally(args);
        assert_eq!(code, 0, "tally {args:?}:\n{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        stdout + &stderr
    }

    /// `tally ARGS JOB REST`, the job file in second place.
    fn with_job(&self, command: &str, rest: &[&str]) -> String {
        let job = self.job();
        self.ok(&[&[command, job.to_str().unwrap()][..], rest].concat())
    }

    /// The rows `tally export` writes (of `version`, or of the serving one).
    fn export(&self, version: Option<&str>) -> Vec<Value> {
        let out = self.path("export.ndjson");
        let mut args = vec!["--output", out.to_str().unwrap()];
        if let Some(version) = version {
            args.extend(["--version", version]);
        }
        self.with_job("export", &args);
        std::fs::read_to_string(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// Every file under the data directory with its size (lock files aside).
    fn files(&self) -> BTreeSet<(PathBuf, u64)> {
        fn walk(dir: &Path, out: &mut BTreeSet<(PathBuf, u64)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    out.insert((path.clone(), 0));
                    walk(&path, out);
                } else if path.file_name().unwrap() != "LOCK" {
                    out.insert((path.clone(), path.metadata().unwrap().len()));
                }
            }
        }
        let mut out = BTreeSet::new();
        walk(&self.data(), &mut out);
        out
    }
}

/// The latest settled value of every window: (key type, key, granularity,
/// window start) → (clicks, distinct users). Partial rows are left out.
fn settled(rows: &[Value]) -> BTreeMap<(String, String, String, u64), (u64, u64)> {
    rows.iter()
        .filter(|r| r["status"] != "partial")
        .map(|r| {
            let id = (r["key_type"].as_str().unwrap().to_owned(), r["key"].as_str().unwrap().to_owned());
            let window = (r["granularity"].as_str().unwrap().to_owned(), r["window_start"].as_u64().unwrap());
            ((id.0, id.1, window.0, window.1), (r["clicks"].as_u64().unwrap(), r["distinct_users"].as_u64().unwrap()))
        })
        .collect()
}

fn total_clicks(rows: &[Value], granularity: &str) -> u64 {
    rows.iter().filter(|r| r["key_type"] == "ad" && r["granularity"] == granularity).map(|r| r["clicks"].as_u64().unwrap()).sum()
}

/// The committed offsets of a store, as `P:OFFSET,...`.
fn committed_offsets(store: &Path) -> String {
    let committed = EmbeddedStore::open_read_only(store).unwrap().last_committed().unwrap().expect("a commit");
    committed.partitions.iter().map(|c| format!("{}:{}", c.partition, c.offset)).collect::<Vec<_>>().join(",")
}

// ---------------------------------------------------------------------------

/// The origin a store recorded with its first commit.
fn origin(store: &Path) -> Vec<u64> {
    let snapshot = EmbeddedStore::open_read_only(store).unwrap().snapshot().unwrap();
    let json = snapshot.state(tally::store::settings::ORIGIN_KEY).unwrap().expect("an origin record");
    tally::store::settings::Origin::from_json(&json).unwrap().offsets
}

#[test]
fn a_run_from_mid_log_counts_from_there_and_ignores_from_once_committed() {
    let setup = Setup::new();
    let time = setup.start_ms + 500_000;
    let out = setup.with_job("run", &["--from", &time.to_string(), "--to", &setup.at(700)]);
    assert!(out.contains("starting at offsets 0:"), "{out}");
    // The origin is, per partition, the first click at or after the time.
    let log = tally::log::LogView::open(&setup.data().join("log")).unwrap();
    let expected = log.offsets_at_time(time).unwrap();
    let store = setup.data().join("store");
    assert_eq!(origin(&store), expected);
    for (p, &offset) in expected.iter().enumerate() {
        let mut clicks = Vec::new();
        log.reader(p as u32, 0).unwrap().read(&mut clicks, offset as usize + 1).unwrap();
        assert!(clicks[..offset as usize].iter().all(|c| c.ts < time), "partition {p}: every click before the origin is older");
        assert!(clicks.get(offset as usize).is_none_or(|c| c.ts >= time), "partition {p}: the click at the origin is not");
    }
    let counted = |rows: &[Value]| total_clicks(rows, "1m");
    let read_from_origin: u64 = log.offsets_at_time(setup.start_ms + 700_000).unwrap().iter().zip(&expected).map(|(e, s)| e - s).sum();
    assert!(counted(&setup.export(None)) <= read_from_origin, "nothing before the origin is counted");
    assert!(setup.with_job("verify", &[]).contains(" 0 mismatches"));

    let out = setup.with_job("run", &["--from", "earliest", "--bounded"]);
    assert!(out.contains("note: --from earliest is ignored: the store has a committed epoch"), "{out}");
    assert_eq!(origin(&store), expected, "a resumed run keeps its origin");
    let read_from_origin: u64 = log.end_offsets().iter().zip(&expected).map(|(e, s)| e - s).sum();
    assert!(counted(&setup.export(None)) <= read_from_origin);
    assert!(counted(&setup.export(None)) > read_from_origin * 9 / 10, "the rest of the log is counted");
    assert!(setup.with_job("verify", &[]).contains(" 0 mismatches"));
}

#[test]
fn a_backfill_of_the_live_stores_range_has_its_settled_rows() {
    let setup = Setup::new();
    // The live store: two bounded runs, the second restating windows the
    // first finalized.
    setup.with_job("run", &["--to", &setup.at(400)]);
    setup.with_job("run", &["--bounded"]);
    let live = setup.export(None);
    assert!(live.iter().any(|r| r["status"] == "restated"), "the second run restated windows of the first");
    let to = committed_offsets(&setup.data().join("store"));

    let out = setup.with_job("backfill", &["--from", "earliest", "--to", &to, "--version", "replay", "-w", "2"]);
    assert!(out.contains(&format!("backfill replay: {CLICKS} clicks")), "{out}");
    let replay = setup.export(Some("replay"));
    assert_eq!(settled(&replay), settled(&live), "the latest settled rows of a backfill of the live range are the live ones");
    assert_eq!(total_clicks(&replay, "1h"), total_clicks(&live, "1h"));
    assert!(setup.with_job("verify", &["--version", "replay"]).contains(" 0 mismatches"));
}

#[test]
fn two_backfills_of_one_range_export_identical_rows() {
    let setup = Setup::new();
    let (from, to) = (setup.at(200), setup.at(800));
    setup.with_job("backfill", &["--from", &from, "--to", &to, "--version", "a"]);
    setup.with_job("backfill", &["--from", &from, "--to", &to, "--version", "b", "-w", "3"]);
    let sorted = |rows: Vec<Value>| -> Vec<String> {
        let mut lines: Vec<String> = rows.iter().map(Value::to_string).collect();
        lines.sort();
        lines
    };
    let (a, b) = (sorted(setup.export(Some("a"))), sorted(setup.export(Some("b"))));
    assert!(a.len() > 100, "{} rows", a.len());
    assert_eq!(a, b, "a replay of the same range gives the same rows, versions and statuses included");
    // Neither touched the live output: there is none.
    let (code, _, stderr) = setup.tally(&["export", setup.job().to_str().unwrap(), "--output", "/dev/null"]);
    assert_eq!(code, 2, "a missing store is a usage error: {stderr}");
    assert!(stderr.contains("no store here"), "{stderr}");
}

#[test]
fn verify_version_catches_a_tampered_version_and_leaves_live_alone() {
    let setup = Setup::new();
    setup.with_job("run", &["--bounded"]);
    setup.with_job("backfill", &["--to", &setup.at(600), "--version", "v1"]);
    assert!(setup.with_job("verify", &["--version", "v1"]).contains(" 0 mismatches"));

    // One window of the version one click off, as a later restatement.
    let store_dir = setup.data().join("versions/v1/store");
    {
        let mut store = EmbeddedStore::open(&store_dir).unwrap();
        let last = store.last_committed().unwrap().unwrap();
        let row = store.all_rows().unwrap().into_iter().find(|r| r.status != Status::Partial).unwrap();
        let tampered = tally::row::Row { clicks: row.clicks + 1, status: Status::Restated, version: row.version + 1, ..row };
        let generation = store.begin_generation().unwrap();
        let rows = vec![StoredRow { row: tampered, sketch: Vec::new() }];
        store.commit(EpochCommit { epoch: last.epoch + 1, generation, rows, ..Default::default() }).unwrap();
    }
    let job = setup.job();
    let (code, stdout, stderr) = setup.tally(&["verify", job.to_str().unwrap(), "--version", "v1"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains(" 1 mismatches"), "{stdout}");
    assert!(stdout.contains("clicks: expected"), "{stdout}");
    assert!(setup.with_job("verify", &[]).contains(" 0 mismatches"), "the live store is untouched");
}

#[test]
fn versions_are_listed_switched_and_deleted_but_never_the_serving_one() {
    let setup = Setup::new();
    setup.with_job("run", &["--bounded"]);
    setup.with_job("backfill", &["--to", &setup.at(500), "--version", "first-half"]);
    let listed = setup.ok(&["versions"]);
    let lines: Vec<&str> = listed.lines().collect();
    assert!(lines[1].starts_with("* live "), "{listed}");
    assert!(lines[2].starts_with("  first-half ") && lines[2].contains("earliest .. "), "{listed}");

    let half = setup.export(Some("first-half"));
    assert!(total_clicks(&half, "1h") < total_clicks(&setup.export(None), "1h"));
    setup.ok(&["switch", "first-half"]);
    assert_eq!(setup.export(None), half, "export serves the serving version");
    assert!(setup.ok(&["versions"]).lines().any(|l| l.starts_with("* first-half ")));
    let (code, _, stderr) = setup.tally(&["versions", "delete", "first-half"]);
    assert_eq!((code, stderr.lines().count()), (2, 1), "{stderr}");
    assert!(stderr.contains("is serving"), "{stderr}");
    let (code, _, stderr) = setup.tally(&["backfill", setup.job().to_str().unwrap(), "--version", "first-half", "--replace"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is serving"), "{stderr}");

    setup.ok(&["switch", "live"]);
    setup.with_job("backfill", &["--to", &setup.at(300), "--version", "first-half", "--replace"]);
    assert!(total_clicks(&setup.export(Some("first-half")), "1h") < total_clicks(&half, "1h"), "replaced");
    setup.ok(&["versions", "delete", "first-half"]);
    assert!(!setup.ok(&["versions"]).contains("first-half"));
    assert!(!setup.data().join("versions/first-half").exists());
}

#[test]
fn bad_input_is_one_line_naming_the_field_exit_2_and_nothing_persisted() {
    let setup = Setup::new();
    setup.with_job("run", &["--bounded"]);
    setup.with_job("backfill", &["--to", &setup.at(100), "--version", "old"]);
    let before = setup.files();
    let job = setup.job();
    let job = job.to_str().unwrap();
    let cases: [(&[&str], &str); 13] = [
        (&["backfill", job, "--version", "bad/name"], "--version bad/name: '/' is not allowed"),
        (&["backfill", job, "--version", "live"], "--version live: \"live\" is reserved"),
        (&["backfill", job, "--version", &"x".repeat(65)], "at most 64"),
        (
            &["backfill", job, "--version", "v", "--from", "0:50", "--to", "0:10"],
            "--to 0:10: partition 0: offset 10 is before the --from offset 50",
        ),
        (
            &["backfill", job, "--version", "v", "--from", "0:99999999"],
            "--from 0:99999999: partition 0: offset 99999999 is outside the log's offsets",
        ),
        (&["backfill", job, "--version", "v", "--to", "9:1"], "--to 9:1: partition 9: the log has 8 partitions"),
        (&["backfill", job, "--version", "v", "--from", "yesterday"], "--from yesterday: "),
        (&["backfill", job, "--version", "v", "--from", "latest"], "holds no clicks"),
        (&["backfill", job, "--version", "old"], "version \"old\" exists; pass --replace"),
        (&["switch", "nope"], "version \"nope\" does not exist"),
        (&["verify", job, "--version", "nope"], "version \"nope\" does not exist"),
        (&["versions", "delete", "live"], "never deleted"),
        (&["run", job, "--to", "0:1,0:2"], "--to 0:1,0:2: partition 0 is given twice"),
    ];
    for (args, reason) in cases {
        let (code, stdout, stderr) = setup.tally(args);
        assert_eq!(code, 2, "{args:?}: {stdout}{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
        assert!(stderr.starts_with("error: ") && stderr.contains(reason), "{args:?}: wanted {reason:?} in {stderr}");
        assert_eq!(setup.files(), before, "{args:?} wrote nothing");
    }
    let (code, _, stderr) = setup.tally(&["export", job, "--output", "/dev/null", "--version", "nope"]);
    assert_eq!((code, stderr.lines().count()), (2, 1), "{stderr}");
}

// ---------------------------------------------------------------------------
// The query API of a running `tally up` across a switch

/// A child killed when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_up(setup: &Setup, addr: SocketAddr) -> Guard {
    let child = Command::new(TALLY)
        .arg("--data-dir")
        .arg(setup.data())
        .args(["up", "--no-auth", "--addr", &addr.to_string(), "--job"])
        .arg(setup.job())
        .arg("--catalog")
        .arg(setup.path("ads.csv"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = Guard(child);
    let started = Instant::now();
    while !listening(addr) {
        assert!(started.elapsed() < Duration::from_secs(60), "tally up did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    guard
}

/// The rows of one series answer (what differs between versions; the
/// committed epoch of the live store moves with the clock).
fn series(http: &mut HttpClient, path: &str) -> Value {
    let reply = http.get(path).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["rows"].clone()
}

#[test]
fn a_switch_is_atomic_for_a_reader_polling_the_query_api() {
    let setup = Setup::new();
    setup.with_job("run", &["--bounded"]);
    let addr = free_addr();
    let _up = start_up(&setup, addr);
    // The version is made while `tally up` owns the log and the live store.
    setup.with_job("backfill", &["--to", &setup.at(500), "--version", "half"]);

    let path = format!("/v1/ads/ad-viral/clicks?window=1m&from={}&to={}", setup.start_ms, setup.start_ms + HOUR_MS);
    let mut http = HttpClient::new(addr, None);
    let old = series(&mut http, &path);
    let sum = |rows: &Value| rows.as_array().unwrap().iter().map(|r| r["clicks"].as_u64().unwrap()).sum::<u64>();
    let new: Value = {
        let rows = setup.export(Some("half"));
        let queried = |r: &&Value| r["window_start"].as_u64().is_some_and(|s| s >= setup.start_ms && s < setup.start_ms + HOUR_MS);
        let mut viral: Vec<&Value> = rows.iter().filter(|r| r["key"] == "ad-viral" && r["granularity"] == "1m").filter(queried).collect();
        viral.sort_by_key(|r| r["window_start"].as_u64());
        let json = |r: &&Value| {
            serde_json::json!({ "window_start": r["window_start"], "window_end": r["window_end"], "clicks": r["clicks"],
                "distinct_users": r["distinct_users"], "status": r["status"], "version": r["version"] })
        };
        Value::Array(viral.iter().map(json).collect())
    };
    assert!(sum(&new) > 0 && sum(&new) < sum(&old), "the versions differ visibly: {} vs {}", sum(&new), sum(&old));

    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (stop, path, old, new) = (Arc::clone(&stop), path.clone(), old.clone(), new.clone());
        std::thread::spawn(move || {
            let mut http = HttpClient::new(addr, None);
            let (mut olds, mut news) = (0u64, 0u64);
            while !stop.load(Ordering::SeqCst) {
                let rows = series(&mut http, &path);
                if rows == old {
                    assert_eq!(news, 0, "an old answer after a new one");
                    olds += 1;
                } else {
                    assert_eq!(rows, new, "an answer that is neither version");
                    news += 1;
                }
            }
            (olds, news)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    setup.ok(&["switch", "half"]);
    // After the switch returns, the query API follows it.
    let switched = Instant::now();
    while series(&mut http, &path) != new {
        assert!(switched.elapsed() < Duration::from_secs(30), "the query API never served the new version");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let (olds, news) = poller.join().expect("every polled answer was one version");
    assert!(olds > 0 && news > 0, "the poller saw both versions: {olds} old, {news} new answers");

    setup.ok(&["switch", "live"]);
    let switched = Instant::now();
    while series(&mut http, &path) != old {
        assert!(switched.elapsed() < Duration::from_secs(30), "the query API never went back to live");
        std::thread::sleep(Duration::from_millis(20));
    }
}
