//! End-to-end tests of the `tally` binary: job-file errors, bad input lines,
//! the row file format, `tally gen`, catalog versions, and the same final
//! rows for any number of workers and processes.
//!
//! Every test runs the real binary as a child process, with a timeout, and
//! checks what it wrote (stderr, rows, ledger), not only its exit status.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "common/net.rs"]
mod net;
use net::listening;

/// The default job; tests point it at their own files with overrides.
const JOB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/clicks.toml");
/// Longest a child may run before the test kills it and fails.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);
/// 2026-01-01T00:00:00Z, an hour boundary (and so a 1m and 5m boundary).
const START_MS: u64 = 1_767_225_600_000;
const MINUTE_MS: u64 = 60_000;
/// Keys of a row line, in the order the file sink writes them.
const ROW_KEYS: [&str; 9] =
    ["key_type", "key", "granularity", "window_start", "window_end", "clicks", "distinct_users", "status", "version"];

// ---------------------------------------------------------------- helpers

/// What a finished child left behind.
struct Finished {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

impl Finished {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

fn tally() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
    command.stdin(Stdio::null());
    command
}

/// Starts `command` with piped output, drained by threads so the child never
/// blocks on a full pipe.
struct Running {
    child: Child,
    stdout: std::thread::JoinHandle<Vec<u8>>,
    stderr: std::thread::JoinHandle<Vec<u8>>,
    what: String,
}

fn spawn(mut command: Command) -> Running {
    let what = format!("{command:?}");
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            pipe.read_to_end(&mut bytes).expect("read child output");
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    Running { child, stdout, stderr, what }
}

/// Waits for every child; kills all of them if any runs past the timeout.
fn wait_all(mut running: Vec<Running>) -> Vec<Finished> {
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let mut statuses: Vec<Option<ExitStatus>> = vec![None; running.len()];
    while statuses.iter().any(Option::is_none) {
        for (r, status) in running.iter_mut().zip(statuses.iter_mut()) {
            if status.is_none() {
                *status = r.child.try_wait().expect("try_wait");
            }
        }
        if Instant::now() > deadline {
            let mut hung = Vec::new();
            for (r, status) in running.iter_mut().zip(&statuses) {
                if status.is_none() {
                    let _ = r.child.kill();
                    let _ = r.child.wait();
                    hung.push(r.what.clone());
                }
            }
            panic!("killed after {CHILD_TIMEOUT:?}: {hung:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    running
        .into_iter()
        .zip(statuses)
        .map(|(r, status)| Finished {
            status: status.expect("all finished"),
            stdout: r.stdout.join().expect("stdout thread"),
            stderr: String::from_utf8_lossy(&r.stderr.join().expect("stderr thread")).into_owned(),
        })
        .collect()
}

fn run_to_end(command: Command) -> Finished {
    wait_all(vec![spawn(command)]).pop().expect("one child")
}

/// Runs `command` and requires exit status 0 and no panic.
fn run_ok(command: Command) -> Finished {
    let what = format!("{command:?}");
    let done = run_to_end(command);
    assert_eq!(done.code(), Some(0), "{what} failed:\n{}", done.stderr);
    assert_no_panic(&done.stderr);
    done
}

fn assert_no_panic(stderr: &str) {
    assert!(!stderr.contains("panicked"), "panic text on stderr:\n{stderr}");
    assert!(!stderr.contains("RUST_BACKTRACE"), "panic text on stderr:\n{stderr}");
}

/// `tally run jobs/clicks.toml --input … --output …` plus extra args.
fn run_job(input: &Path, output: &Path, extra: &[&str]) -> Command {
    let mut command = tally();
    command.arg("run").arg(JOB).arg("--input").arg(input).arg("--output").arg(output).args(extra);
    command
}

/// `tally gen` of `clicks` clicks with the default seed into `dir`:
/// returns (clicks path, catalog path).
fn generate(dir: &Path, clicks: u64) -> (PathBuf, PathBuf) {
    let clicks_path = dir.join("clicks.ndjson");
    let catalog = dir.join("ads.csv");
    let mut command = tally();
    command.args(["gen", "--seed", "42", "--clicks", &clicks.to_string(), "--output"]).arg(&clicks_path).arg("--catalog").arg(&catalog);
    run_ok(command);
    (clicks_path, catalog)
}

/// A canonical UUID whose value is `n`.
fn uuid(n: u128) -> String {
    let hex = format!("{n:032x}");
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// A valid click line (no newline).
fn click(ad: &str, ts: u64, user: &str, request: u128) -> String {
    format!(r#"{{"ad_id":"{ad}","timestamp":{ts},"user_id":"{user}","request_id":"{}"}}"#, uuid(request))
}

/// Every line of a rows file, parsed (panics on a line that is not JSON).
fn read_rows(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .enumerate()
        .map(|(i, line)| serde_json::from_str(line).unwrap_or_else(|e| panic!("{} line {}: not JSON ({e}): {line}", path.display(), i + 1)))
        .collect()
}

/// The final and restated rows of a rows file, as sorted lines.
fn settled_rows(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut rows: Vec<String> = text
        .lines()
        .filter(|line| {
            let row: Value = serde_json::from_str(line).expect("row line is JSON");
            row["status"] != "partial"
        })
        .map(str::to_owned)
        .collect();
    rows.sort();
    rows
}

/// A window of one key: (key_type, key, granularity, window_start).
type WindowId = (String, String, String, u64);

/// Final rows: window → clicks.
fn final_clicks(rows: &[Value]) -> BTreeMap<WindowId, u64> {
    let mut out = BTreeMap::new();
    for row in rows.iter().filter(|r| r["status"] == "final") {
        let id = (
            row["key_type"].as_str().unwrap().to_owned(),
            row["key"].as_str().unwrap().to_owned(),
            row["granularity"].as_str().unwrap().to_owned(),
            row["window_start"].as_u64().unwrap(),
        );
        let clicks = row["clicks"].as_u64().unwrap();
        assert!(out.insert(id.clone(), clicks).is_none(), "two final rows for {id:?}");
    }
    out
}

/// Final rows of one key type and granularity: (key, window_start) → clicks.
fn finals_of(rows: &[Value], key_type: &str, granularity: &str) -> BTreeMap<(String, u64), u64> {
    final_clicks(rows)
        .into_iter()
        .filter(|((t, _, g, _), _)| t == key_type && g == granularity)
        .map(|((_, key, _, start), clicks)| ((key, start), clicks))
        .collect()
}

/// Two free TCP ports on 127.0.0.1 (bound, then released).
/// `dir/hosts.txt` naming two free loopback ports, for a two-process cluster.
fn two_process_hostfile(dir: &Path) -> PathBuf {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (a, b) = (a.local_addr().unwrap().port(), b.local_addr().unwrap().port());
    let hostfile = dir.join("hosts.txt");
    std::fs::write(&hostfile, format!("127.0.0.1:{a}\n127.0.0.1:{b}\n")).unwrap();
    hostfile
}

// ------------------------------------------------------ 1. job file errors

/// Runs a job file with `text` and requires the one-line usage error.
/// Returns the line.
fn job_error(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("bad-job.toml");
    std::fs::write(&job, text).unwrap();
    let output = dir.path().join("rows.ndjson");
    let input = dir.path().join("clicks.ndjson");
    std::fs::write(&input, "").unwrap();
    let mut command = tally();
    command.arg("run").arg(&job).arg("--input").arg(&input).arg("--output").arg(&output);
    let done = run_to_end(command);
    let line = one_error_line(&done);
    assert!(line.contains(&job.display().to_string()), "does not name the job file: {line}");
    assert!(!output.exists(), "a refused job created its output file");
    line
}

/// Requires exit 2 and exactly one stderr line `error: …`, no panic.
fn one_error_line(done: &Finished) -> String {
    assert_eq!(done.code(), Some(2), "stderr:\n{}", done.stderr);
    assert_no_panic(&done.stderr);
    let lines: Vec<&str> = done.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "want one stderr line, got:\n{}", done.stderr);
    assert!(lines[0].starts_with("error: "), "{}", lines[0]);
    lines[0].to_owned()
}

fn assert_names(line: &str, key: &str, reason: &str) {
    assert!(line.contains(&format!("'{key}'")), "does not name key '{key}': {line}");
    assert!(line.contains(reason), "does not say {reason:?}: {line}");
}

#[test]
fn job_unknown_key_is_named() {
    let line = job_error("[time]\nepoch = \"1s\"\nwatermark_slak = \"5s\"\n");
    assert_names(&line, "time.watermark_slak", "unknown key");
}

#[test]
fn job_unknown_top_level_key_is_named() {
    let line = job_error("name = \"x\"\ncolour = \"red\"\n");
    assert_names(&line, "colour", "unknown key");
}

#[test]
fn job_window_not_whole_minutes_is_refused() {
    let line = job_error("[windows]\nsizes = [\"90s\"]\n");
    assert_names(&line, "windows.sizes", "90s");
    assert!(line.contains("not a multiple of 1m"), "{line}");
}

#[test]
fn job_negative_slack_is_refused() {
    let line = job_error("[time]\nwatermark_slack = \"-5s\"\n");
    assert_names(&line, "time.watermark_slack", "-5s");
    assert!(line.contains("negative"), "{line}");
}

#[test]
fn job_missing_catalog_file_is_refused() {
    let line = job_error("[catalog]\npath = \"no-such-ads.csv\"\n");
    assert_names(&line, "catalog.path", "not found");
    assert!(line.contains("no-such-ads.csv"), "does not name the catalog: {line}");
}

#[test]
fn job_toml_syntax_error_gives_line_and_column() {
    let line = job_error("name = \"x\"\n\n[time\nepoch = \"1s\"\n");
    assert!(line.contains("line 3, column 6"), "{line}");
}

#[test]
fn job_epoch_not_dividing_a_minute_is_refused() {
    let line = job_error("[time]\nepoch = \"7s\"\nallowed_lateness = \"14s\"\n");
    assert_names(&line, "time.epoch", "7s");
    assert!(line.contains("does not divide 1m"), "{line}");
}

#[test]
fn job_file_that_does_not_exist_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("no-such-job.toml");
    let mut command = tally();
    command.arg("run").arg(&job).arg("--input").arg(dir.path().join("x")).arg("--output").arg(dir.path().join("y"));
    let line = one_error_line(&run_to_end(command));
    assert!(line.contains(&job.display().to_string()), "{line}");
    assert!(line.contains("cannot read job file"), "{line}");
}

#[test]
fn catalog_override_that_does_not_exist_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("clicks.ndjson");
    std::fs::write(&input, format!("{}\n", click("a1", START_MS, "u1", 1))).unwrap();
    let catalog = dir.path().join("no-such-ads.csv");
    let mut command = run_job(&input, &dir.path().join("rows.ndjson"), &[]);
    command.arg("--catalog").arg(&catalog);
    let line = one_error_line(&run_to_end(command));
    assert!(line.contains(&catalog.display().to_string()), "{line}");
}

// ---------------------------------------------------- 2. bad input lines

#[test]
fn malformed_lines_are_reported_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let t = START_MS + 7 * MINUTE_MS;
    let good_uuid = uuid(0xbad);
    // Each bad line names its own ad, so a line wrongly accepted shows up as a row.
    let long_user = "u".repeat(100 * 1024);
    let lines: Vec<Vec<u8>> = vec![
        click("a1", t + 1_000, "u1", 1).into_bytes(), // 1
        b"this is not json".to_vec(),                 // 2
        format!(r#"{{"ad_id":"x3","timestamp":"{t}","user_id":"u","request_id":"{good_uuid}"}}"#).into_bytes(),
        click("a1", t + 2_000, "u2", 2).into_bytes(), // 4
        format!(r#"{{"ad_id":"x5","timestamp":-5,"user_id":"u","request_id":"{good_uuid}"}}"#).into_bytes(),
        format!(r#"{{"ad_id":"x6","timestamp":{t},"user_id":"u","request_id":"not-a-uuid"}}"#).into_bytes(),
        format!(r#"{{"ad_id":"","timestamp":{t},"user_id":"u","request_id":"{good_uuid}"}}"#).into_bytes(),
        format!(r#"{{"ad_id":"x8","timestamp":{t},"user_id":"","request_id":"{good_uuid}"}}"#).into_bytes(),
        format!(r#"{{"ad_id":"x9","timestamp":{t},"user_id":"u","request_id":"{good_uuid}","country":"NL"}}"#).into_bytes(),
        [&br#"{"ad_id":"x10"#[..], b"\xff\xfe", format!(r#"","timestamp":{t},"user_id":"u","request_id":"{good_uuid}"}}"#).as_bytes()]
            .concat(),
        format!(r#"{{"ad_id":"x11","timestamp":{t},"user_id":"{long_user}","request_id":"{good_uuid}"}}"#).into_bytes(),
        Vec::new(),                                    // 12: blank
        click("a1", t + 59_999, "u3", 3).into_bytes(), // 13, no final newline
    ];
    let input = dir.path().join("clicks.ndjson");
    std::fs::write(&input, lines.join(&b'\n')).unwrap();
    let output = dir.path().join("rows.ndjson");
    let done = run_ok(run_job(&input, &output, &[]));

    let stderr = &done.stderr;
    assert!(stderr.contains("input: 13 lines, 3 clicks, 10 rejected"), "{stderr}");
    for (line, field, reason) in [
        (2, "line", "invalid JSON"),
        (3, "timestamp", "expected an integer"),
        (5, "timestamp", "negative"),
        (6, "request_id", "not a UUID"),
        (7, "ad_id", "empty"),
        (8, "user_id", "empty"),
        (9, "country", "unknown field"),
        (10, "line", "invalid"),
        (11, "line", "longer than"),
        (12, "line", "empty line"),
    ] {
        let listed = stderr
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("line {line}:")))
            .unwrap_or_else(|| panic!("line {line} not listed:\n{stderr}"));
        assert!(listed.contains(&format!("field '{field}'")), "line {line}: want field {field}: {listed}");
        assert!(listed.contains(reason), "line {line}: want {reason:?}: {listed}");
    }
    for good in [1, 4, 13] {
        assert!(
            !stderr.lines().any(|l| l.trim_start().starts_with(&format!("line {good}:"))),
            "valid line {good} listed as rejected:\n{stderr}"
        );
    }
    assert!(stderr.contains("read 3 clicks"), "{stderr}");

    let rows = read_rows(&output);
    let minute = t - t % MINUTE_MS;
    let ads = finals_of(&rows, "ad", "1m");
    assert_eq!(ads, BTreeMap::from([(("a1".to_owned(), minute), 3)]), "only a1's three clicks count");
    assert_eq!(finals_of(&rows, "ad", "5m").values().collect::<Vec<_>>(), [&3]);
    assert_eq!(finals_of(&rows, "ad", "1h").values().collect::<Vec<_>>(), [&3]);
}

#[test]
fn file_of_only_garbage_is_refused_and_writes_no_rows() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("clicks.ndjson");
    let mut bytes = Vec::new();
    for i in 0..300u32 {
        let any = match (i % 256) as u8 {
            b'\n' => b'?',
            other => other,
        };
        bytes.extend_from_slice(&[b'{', any, 0xff, b'"', b'\n']);
    }
    std::fs::write(&input, bytes).unwrap();
    let output = dir.path().join("rows.ndjson");
    let done = run_to_end(run_job(&input, &output, &[]));
    assert_eq!(done.code(), Some(2), "{}", done.stderr);
    assert_no_panic(&done.stderr);
    assert!(done.stderr.contains("input: 300 lines, 0 clicks, 300 rejected"), "{}", done.stderr);
    assert!(done.stderr.contains("... and 290 more rejected lines"), "{}", done.stderr);
    assert!(done.stderr.contains("every line of the input was rejected"), "{}", done.stderr);
    assert!(!output.exists(), "a refused run wrote its output");
}

// -------------------------------------------------------- 3. row format

#[test]
fn output_rows_have_the_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    let clicks = dir.path().join("clicks.ndjson");
    let catalog = dir.path().join("ads.csv");
    let mut command = tally();
    command
        .args(["gen", "--seed", "5", "--clicks", "40000", "--too-late-share", "0.01", "--output"])
        .arg(&clicks)
        .arg("--catalog")
        .arg(&catalog);
    run_ok(command);
    let output = dir.path().join("out.rows.ndjson");
    let done = run_ok(run_job(&clicks, &output, &["--catalog", catalog.to_str().unwrap(), "-w", "2"]));

    let rows = read_rows(&output);
    assert!(rows.len() > 100, "only {} rows", rows.len());
    let expected_keys: BTreeSet<&str> = ROW_KEYS.into_iter().collect();
    let mut versions: BTreeMap<WindowId, Vec<(String, u64)>> = BTreeMap::new();
    for row in &rows {
        let object = row.as_object().unwrap_or_else(|| panic!("not an object: {row}"));
        let keys: BTreeSet<&str> = object.keys().map(String::as_str).collect();
        assert_eq!(keys, expected_keys, "{row}");
        let key_type = row["key_type"].as_str().expect("key_type is a string");
        assert!(["ad", "campaign", "advertiser"].contains(&key_type), "{row}");
        assert!(!row["key"].as_str().expect("key is a string").is_empty(), "{row}");
        let granularity = row["granularity"].as_str().expect("granularity is a string");
        let length = match granularity {
            "1m" => MINUTE_MS,
            "5m" => 5 * MINUTE_MS,
            "1h" => 60 * MINUTE_MS,
            other => panic!("granularity {other:?}: {row}"),
        };
        let start = row["window_start"].as_u64().expect("window_start is a u64");
        let end = row["window_end"].as_u64().expect("window_end is a u64");
        assert_eq!(end - start, length, "{row}");
        assert_eq!(start % length, 0, "window not aligned to the epoch: {row}");
        let clicks = row["clicks"].as_u64().expect("clicks is a u64");
        let users = row["distinct_users"].as_u64().expect("distinct_users is a u64");
        assert!(clicks >= 1, "{row}");
        assert!(users >= 1, "{row}");
        let status = row["status"].as_str().expect("status is a string");
        let version = row["version"].as_u64().expect("version is a u64");
        match status {
            "partial" => assert_eq!(version, 0, "{row}"),
            "final" => assert_eq!(version, 1, "{row}"),
            "restated" => assert!(version >= 1, "{row}"),
            other => panic!("status {other:?}: {row}"),
        }
        if status != "partial" {
            let id = (key_type.to_owned(), row["key"].as_str().unwrap().to_owned(), granularity.to_owned(), start);
            versions.entry(id).or_default().push((status.to_owned(), version));
        }
    }
    // Per window: at most one final row, then restated versions counting up by one.
    for (id, mut seen) in versions {
        seen.sort_by_key(|(_, v)| *v);
        let numbers: Vec<u64> = seen.iter().map(|(_, v)| *v).collect();
        let first = numbers[0];
        let expected: Vec<u64> = (first..first + numbers.len() as u64).collect();
        assert_eq!(numbers, expected, "versions of {id:?}: {seen:?}");
        assert!(seen.iter().skip(1).all(|(s, _)| s == "restated"), "{id:?}: {seen:?}");
    }
    assert!(rows.iter().any(|r| r["status"] == "final"), "no final rows");

    let ledger = dir.path().join("out.rows.late.ndjson");
    assert!(ledger.is_file(), "late ledger {} missing", ledger.display());
    let late = read_rows(&ledger);
    assert!(!late.is_empty(), "1% too-late clicks but an empty ledger; stderr:\n{}", done.stderr);
    for entry in &late {
        let ids = entry["request_ids"].as_array().unwrap_or_else(|| panic!("{entry}"));
        assert!(!ids.is_empty(), "{entry}");
        assert!(entry["held"].is_boolean(), "{entry}");
        assert_eq!(entry["window_start"].as_u64().unwrap() % MINUTE_MS, 0, "{entry}");
    }
}

// --------------------------------------------------------- 4. tally gen

fn gen_to(dir: &Path, name: &str, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let clicks = dir.join(format!("{name}.ndjson"));
    let catalog = dir.join(format!("{name}.csv"));
    let mut command = tally();
    command
        .args(["gen", "--seed", &seed.to_string(), "--clicks", "20000", "--ads", "300", "--output"])
        .arg(&clicks)
        .arg("--catalog")
        .arg(&catalog);
    let done = run_ok(command);
    assert!(done.stderr.contains("wrote 20000 clicks"), "{}", done.stderr);
    (std::fs::read(clicks).unwrap(), std::fs::read(catalog).unwrap())
}

#[test]
fn gen_is_deterministic_per_seed() {
    let dir = tempfile::tempdir().unwrap();
    let (clicks_a, catalog_a) = gen_to(dir.path(), "a", 9);
    let (clicks_b, catalog_b) = gen_to(dir.path(), "b", 9);
    let (clicks_c, _) = gen_to(dir.path(), "c", 10);
    assert_eq!(clicks_a.iter().filter(|&&b| b == b'\n').count(), 20_000);
    assert!(clicks_a == clicks_b, "same seed, different clicks");
    assert!(catalog_a == catalog_b, "same seed, different catalog");
    assert!(clicks_a != clicks_c, "different seeds, same clicks");

    let catalog = String::from_utf8(catalog_a).expect("catalog is UTF-8");
    let mut lines = catalog.lines();
    assert_eq!(lines.next(), Some("ad_id,campaign_id,advertiser_id"));
    let rows: Vec<&str> = lines.collect();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r.split(',').count() == 3), "{rows:?}");

    // Every generated line is a valid click (the engine rejects none).
    let input = dir.path().join("a.ndjson");
    let done = run_ok(run_job(&input, &dir.path().join("rows.ndjson"), &[]));
    assert!(done.stderr.contains("input: 20000 lines, 20000 clicks, 0 rejected"), "{}", done.stderr);

    // Stdout gets the same bytes as --output.
    let mut command = tally();
    command.args(["gen", "--seed", "9", "--clicks", "20000", "--ads", "300"]);
    assert!(run_ok(command).stdout == clicks_a, "stdout differs from --output");
}

#[test]
fn gen_refuses_a_share_above_one() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("clicks.ndjson");
    let mut command = tally();
    command.args(["gen", "--viral-share", "2", "--output"]).arg(&output);
    let line = one_error_line(&run_to_end(command));
    assert!(line.contains("viral_share"), "{line}");
    assert!(line.contains('2'), "{line}");
    assert!(!output.exists(), "refused gen still wrote {}", output.display());
}

// ------------------------------------------------- 5. catalog versions

#[test]
fn catalog_change_applies_from_its_valid_from() {
    let dir = tempfile::tempdir().unwrap();
    let t = START_MS + 3 * MINUTE_MS; // a minute boundary, inside the 5m window [START, START+5m)
    let catalog = dir.path().join("ads.csv");
    std::fs::write(&catalog, format!("ad_id,campaign_id,advertiser_id,valid_from\na1,c1,v1,0\na1,c2,v2,{t}\na2,c3,v3,{t}\n")).unwrap();
    let clicks = [
        ("a1", t - 2 * MINUTE_MS + 1_000),
        ("a1", t - MINUTE_MS + 5_000),
        ("a1", t - MINUTE_MS + 6_000),
        ("a2", t - MINUTE_MS + 7_000), // a2 has no version yet: unknown
        ("a1", t + 1_000),
        ("zz", t + 1_500), // not in the catalog at all
        ("a1", t + 2_000),
        ("a2", t + 2_500),
        ("zz", t + 2_700),
        ("a1", t + 3_000),
        ("a1", t + MINUTE_MS + 1_000),
    ];
    let text: String = clicks.iter().enumerate().map(|(i, (ad, ts))| click(ad, *ts, &format!("u{i}"), 100 + i as u128) + "\n").collect();
    let input = dir.path().join("clicks.ndjson");
    std::fs::write(&input, text).unwrap();
    let output = dir.path().join("rows.ndjson");
    let done = run_ok(run_job(&input, &output, &["--catalog", catalog.to_str().unwrap()]));

    let rows = read_rows(&output);
    let key = |k: &str, start: u64| (k.to_owned(), start);
    assert_eq!(
        finals_of(&rows, "campaign", "1m"),
        BTreeMap::from([
            (key("c1", t - 2 * MINUTE_MS), 1),
            (key("c1", t - MINUTE_MS), 2),
            (key("c2", t), 3),
            (key("c2", t + MINUTE_MS), 1),
            (key("c3", t), 1),
            (key("unknown", t - MINUTE_MS), 1),
            (key("unknown", t), 2),
        ])
    );
    assert_eq!(
        finals_of(&rows, "advertiser", "1m"),
        BTreeMap::from([
            (key("v1", t - 2 * MINUTE_MS), 1),
            (key("v1", t - MINUTE_MS), 2),
            (key("v2", t), 3),
            (key("v2", t + MINUTE_MS), 1),
            (key("v3", t), 1),
            (key("unknown", t - MINUTE_MS), 1),
            (key("unknown", t), 2),
        ])
    );
    // One 5m window holds both versions: each campaign gets only its own minutes.
    assert_eq!(
        finals_of(&rows, "campaign", "5m"),
        BTreeMap::from([(key("c1", START_MS), 3), (key("c2", START_MS), 4), (key("c3", START_MS), 1), (key("unknown", START_MS), 3),])
    );
    assert_eq!(finals_of(&rows, "ad", "5m").get(&key("a1", START_MS)), Some(&7));

    let unknown =
        done.stderr.lines().find(|l| l.starts_with("unknown ads:")).unwrap_or_else(|| panic!("no unknown-ads line:\n{}", done.stderr));
    // `zz` is not in the catalog; `a2` has no version before T.
    assert!(unknown.contains("2 ads without a catalog version"), "{unknown}");
    assert!(unknown.contains("zz") && unknown.contains("a2"), "{unknown}");
    assert!(!unknown.contains("a1"), "{unknown}");
}

// ------------------------------------------------ 6. workers, 7. cluster

#[test]
fn worker_count_does_not_change_settled_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (clicks, catalog) = generate(dir.path(), 300_000);
    let catalog = catalog.to_str().unwrap();
    let mut settled = Vec::new();
    for workers in ["1", "2", "4"] {
        let output = dir.path().join(format!("rows-w{workers}.ndjson"));
        run_ok(run_job(&clicks, &output, &["--catalog", catalog, "-w", workers]));
        settled.push((workers, settled_rows(&output)));
    }
    let (_, reference) = &settled[0];
    assert!(reference.len() > 1_000, "only {} settled rows", reference.len());
    assert!(reference.iter().any(|r| r.contains("\"restated\"")), "input makes no restated rows");
    for (workers, rows) in &settled[1..] {
        assert_rows_equal(reference, rows, &format!("-w {workers} vs -w 1"));
    }
}

/// Compares sorted row lines, showing a few differences on failure.
fn assert_rows_equal(expected: &[String], actual: &[String], what: &str) {
    if expected == actual {
        return;
    }
    let expected_set: BTreeSet<&String> = expected.iter().collect();
    let actual_set: BTreeSet<&String> = actual.iter().collect();
    let missing: Vec<_> = expected_set.difference(&actual_set).take(5).collect();
    let extra: Vec<_> = actual_set.difference(&expected_set).take(5).collect();
    panic!("{what}: {} rows vs {} expected\nmissing (first 5): {missing:#?}\nextra (first 5): {extra:#?}", actual.len(), expected.len());
}

#[test]
fn two_process_cluster_matches_one_worker() {
    let dir = tempfile::tempdir().unwrap();
    let (clicks, catalog) = generate(dir.path(), 300_000);
    let catalog = catalog.to_str().unwrap();
    let single = dir.path().join("rows-single.ndjson");
    let one = run_ok(run_job(&clicks, &single, &["--catalog", catalog, "-w", "1"]));

    let hostfile = two_process_hostfile(dir.path());
    let outputs: Vec<PathBuf> = (0..2).map(|p| dir.path().join(format!("rows-p{p}.ndjson"))).collect();
    let children: Vec<Running> = (0..2)
        .map(|p| {
            let process = p.to_string();
            let mut command = run_job(&clicks, &outputs[p], &["--catalog", catalog, "-w", "2", "--processes", "2"]);
            command.args(["--process", &process]).arg("--hostfile").arg(&hostfile);
            spawn(command)
        })
        .collect();
    let done = wait_all(children);
    for (p, done) in done.iter().enumerate() {
        assert_eq!(done.code(), Some(0), "process {p} failed:\n{}", done.stderr);
        assert_no_panic(&done.stderr);
    }
    assert_cluster_totals(&one, &done);

    let mut union: Vec<String> = outputs.iter().flat_map(|o| settled_rows(o)).collect();
    union.sort();
    let reference = settled_rows(&single);
    assert!(reference.len() > 1_000, "only {} settled rows", reference.len());
    // One epoch commit for the whole cluster: process 0 (worker 0) writes it all.
    assert!(settled_rows(&outputs[1]).is_empty(), "only process 0 commits");
    assert_rows_equal(&reference, &union, "2 processes x 2 workers vs -w 1");
}

/// The "read N clicks: A on time, B duplicates, C too late" summary of a
/// run's stderr, if it printed one.
fn read_summary(stderr: &str) -> Option<&str> {
    let line = stderr.lines().find(|l| l.starts_with("read ") && l.contains(" clicks: "))?;
    Some(line.find(" too late").map_or(line, |end| &line[..end + " too late".len()]))
}

/// Process 0 of a cluster prints the whole cluster's totals, equal to a
/// one-process run's of the same input; the other processes print none.
fn assert_cluster_totals(one_process: &Finished, cluster: &[Finished]) {
    let expected = read_summary(&one_process.stderr).unwrap_or_else(|| panic!("no summary:\n{}", one_process.stderr));
    assert_eq!(read_summary(&cluster[0].stderr), Some(expected), "process 0's summary:\n{}", cluster[0].stderr);
    for (p, done) in cluster.iter().enumerate().skip(1) {
        assert_eq!(read_summary(&done.stderr), None, "process {p} prints no totals:\n{}", done.stderr);
        assert!(done.stderr.contains("process 0 prints the totals"), "process {p}:\n{}", done.stderr);
    }
}

/// The processes of a file-source cluster may each have a data directory
/// with its own salt: users are still hashed alike on all of them, so
/// distinct users equal a single run's.
#[test]
fn file_cluster_hashes_users_alike_whatever_each_process_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (clicks, catalog) = generate(dir.path(), 50_000);
    let catalog = catalog.to_str().unwrap();
    let single = dir.path().join("rows-single.ndjson");
    let mut command = run_job(&clicks, &single, &["--catalog", catalog]);
    command.arg("--data-dir").arg(dir.path().join("no-salt"));
    run_ok(command);

    let hostfile = two_process_hostfile(dir.path());
    let outputs: Vec<PathBuf> = (0..2).map(|p| dir.path().join(format!("rows-p{p}.ndjson"))).collect();
    let children: Vec<Running> = (0..2)
        .map(|p| {
            // Each process's data directory gets a salt of its own.
            let data = dir.path().join(format!("data-{p}"));
            let mut import = tally();
            import.arg("--data-dir").arg(&data).args(["log", "import"]).arg(&clicks);
            run_ok(import);
            let mut command = run_job(&clicks, &outputs[p], &["--catalog", catalog, "--processes", "2", "--process", &p.to_string()]);
            command.arg("--hostfile").arg(&hostfile).arg("--data-dir").arg(&data);
            spawn(command)
        })
        .collect();
    for (p, done) in wait_all(children).iter().enumerate() {
        assert_eq!(done.code(), Some(0), "process {p} failed:\n{}", done.stderr);
    }
    assert_rows_equal(&settled_rows(&single), &settled_rows(&outputs[0]), "2 processes with their own salts vs one run");
}

/// The embedded log belongs to one process, and a live log run needs a
/// store: both are refused before anything starts, naming the reason.
#[test]
fn the_embedded_log_in_a_cluster_and_a_live_log_run_without_a_store_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let hostfile = two_process_hostfile(dir.path());
    let mut command = tally();
    command.arg("--data-dir").arg(dir.path().join("d")).arg("run").arg(EMBEDDED_JOB);
    command.args(["--bounded", "--processes", "2", "--process", "1"]).arg("--hostfile").arg(&hostfile);
    let done = run_to_end(command);
    assert_eq!(done.code(), Some(2), "{}", done.stderr);
    assert!(done.stderr.contains("--processes 2") && done.stderr.contains("the embedded log belongs to one process"), "{}", done.stderr);
    assert_no_panic(&done.stderr);

    let mut command = tally();
    command.arg("--data-dir").arg(dir.path().join("d")).arg("run").arg(EMBEDDED_JOB).arg("--output").arg(dir.path().join("rows.ndjson"));
    let done = run_to_end(command);
    assert_eq!(done.code(), Some(2), "{}", done.stderr);
    assert!(done.stderr.contains("live run of a log needs"), "{}", done.stderr);
}

/// A store committed from a longer log than the one found at start: an
/// error naming the partition, never a silent skip.
#[test]
fn a_committed_offset_beyond_the_log_end_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (clicks, _) = generate(dir.path(), 2_000);
    let data = dir.path().join("d");
    let mut import = tally();
    import.arg("--data-dir").arg(&data).args(["log", "import"]).arg(&clicks);
    run_ok(import);
    let mut bounded = tally();
    bounded.arg("--data-dir").arg(&data).arg("run").arg(EMBEDDED_JOB).arg("--bounded");
    run_ok(bounded);
    // Another (shorter) log under the same store.
    std::fs::remove_dir_all(data.join("log")).unwrap();
    let short = dir.path().join("short.ndjson");
    let text = std::fs::read_to_string(&clicks).unwrap();
    std::fs::write(&short, text.lines().take(100).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let mut import = tally();
    import.arg("--data-dir").arg(&data).args(["log", "import"]).arg(&short);
    run_ok(import);
    let mut bounded = tally();
    bounded.arg("--data-dir").arg(&data).arg("run").arg(EMBEDDED_JOB).arg("--bounded");
    let done = run_to_end(bounded);
    assert_eq!(done.code(), Some(2), "{}", done.stderr);
    assert!(done.stderr.contains("beyond the log's end offset"), "{}", done.stderr);
    assert_no_panic(&done.stderr);
}

/// Rows without `distinct_users`: a generator source keys users by index,
/// a file run by the hash of their `user_id`, so only the estimates differ.
fn settled_clicks(path: &Path) -> Vec<String> {
    let mut rows: Vec<String> = settled_rows(path)
        .iter()
        .map(|line| {
            let mut row: Value = serde_json::from_str(line).expect("row line is JSON");
            row.as_object_mut().expect("a row is an object").remove("distinct_users");
            row.to_string()
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn generator_source_in_a_cluster_counts_what_its_file_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (clicks, catalog) = generate(dir.path(), 300_000);
    let from_file = dir.path().join("rows-file.ndjson");
    let one = run_ok(run_job(&clicks, &from_file, &["--catalog", catalog.to_str().unwrap(), "-w", "1"]));

    // The same stream as `tally gen --seed 42 --clicks 300000`, made while
    // the job runs, by each of two processes for its own partitions.
    let job = dir.path().join("generated.toml");
    std::fs::write(&job, "[source]\nkind = \"generator\"\npartitions = 8\n\n[source.generator]\nseed = 42\nclicks = 300_000\n").unwrap();
    let hostfile = two_process_hostfile(dir.path());
    let outputs: Vec<PathBuf> = (0..2).map(|p| dir.path().join(format!("rows-p{p}.ndjson"))).collect();
    let children: Vec<Running> = (0..2)
        .map(|p| {
            let mut command = tally();
            command.arg("run").arg(&job).arg("--output").arg(&outputs[p]).args(["-w", "2", "--processes", "2", "--process"]);
            command.arg(p.to_string()).arg("--hostfile").arg(&hostfile);
            spawn(command)
        })
        .collect();
    let done = wait_all(children);
    for (p, done) in done.iter().enumerate() {
        assert_eq!(done.code(), Some(0), "process {p} failed:\n{}", done.stderr);
        assert_no_panic(&done.stderr);
    }
    assert_cluster_totals(&one, &done);
    let reference = settled_clicks(&from_file);
    assert!(reference.len() > 1_000, "only {} settled rows", reference.len());
    assert_rows_equal(&reference, &settled_clicks(&outputs[0]), "generator source, 2 processes x 2 workers vs its file, -w 1");
}

// ---------------------------------------------------------------- ingest and up

const INGEST_EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/ingest.example.toml");

fn free_addr() -> String {
    net::free_addr().to_string()
}

/// Waits until something listens on `addr`, then stops the service with
/// SIGTERM; returns how it ended.
fn start_then_terminate(command: Command, addr: &str) -> Finished {
    terminate_after(command, addr, Duration::ZERO)
}

/// Like [`start_then_terminate`], letting the service run for `settle`
/// once it listens.
fn terminate_after(command: Command, addr: &str, settle: Duration) -> Finished {
    let mut running = spawn(command);
    let started = Instant::now();
    while !listening(addr.parse().unwrap()) {
        if let Some(status) = running.child.try_wait().expect("try_wait") {
            panic!("{} exited with {status} before listening:\n{}", running.what, String::from_utf8_lossy(&running.stderr.join().unwrap()));
        }
        assert!(started.elapsed() < CHILD_TIMEOUT, "{} never listened on {addr}", running.what);
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(settle);
    signal(&running, "-TERM");
    wait_all(vec![running]).pop().expect("one child")
}

fn signal(running: &Running, signal: &str) {
    let pid = running.child.id().to_string();
    assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success());
}

#[test]
fn ingest_refuses_to_start_unsigned_unless_told_no_auth() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = tally();
    command.arg("--data-dir").arg(dir.path()).args(["ingest", "--addr", &free_addr()]);
    let done = run_to_end(command);
    assert_eq!(done.code(), Some(2), "{}", done.stderr);
    assert!(done.stderr.contains("no client is configured") && done.stderr.contains("--no-auth"), "{}", done.stderr);
    assert_no_panic(&done.stderr);
}

#[test]
fn up_without_auth_says_so_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut command = tally();
    command.arg("--data-dir").arg(dir.path()).args(["up", "--no-auth", "--addr", &addr]);
    let done = start_then_terminate(command, &addr);
    assert_eq!(done.code(), Some(0), "{}", done.stderr);
    assert!(done.stderr.contains(&format!("ingest: http://{addr}/v1/clicks")), "{}", done.stderr);
    assert!(done.stderr.contains("request signatures OFF"), "{}", done.stderr);
    assert!(done.stderr.contains("job: embedded"), "{}", done.stderr);
    assert_no_panic(&done.stderr);
}

// ---------------------------------------------------------------- stopping the embedded job

const EMBEDDED_JOB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/embedded.toml");

/// Opens the store file read-only the way redb does beside a writer, which
/// refuses ("repair aborted") a file that was not closed cleanly.
fn assert_store_closed_cleanly(data_dir: &Path) {
    let path = data_dir.join("store").join("store.redb");
    let mut builder = redb::Builder::new();
    builder.set_concurrency_mode(redb::ConcurrencyMode::SingleWriter);
    if let Err(error) = builder.open_read_only(&path) {
        panic!("{} was not closed cleanly: {error}", path.display());
    }
}

/// `tally --data-dir DIR` plus `args`.
fn in_data_dir(dir: &Path, args: &[&str]) -> Command {
    let mut command = tally();
    command.arg("--data-dir").arg(dir).args(args);
    command
}

/// `tally export` of the embedded job into `DIR/export.ndjson`: its rows.
fn export_rows(dir: &Path) -> Vec<Value> {
    let rows = dir.join("export.ndjson");
    let mut export = in_data_dir(dir, &["export", EMBEDDED_JOB, "--output"]);
    export.arg(&rows);
    run_ok(export);
    read_rows(&rows)
}

/// Imports `clicks` generated clicks into the log of `dir`; returns the
/// catalog.
fn import_generated(dir: &Path, clicks: u64) -> PathBuf {
    let (clicks, catalog) = generate(dir, clicks);
    let mut import = in_data_dir(dir, &["log", "import"]);
    import.arg(&clicks);
    run_ok(import);
    catalog
}

/// Starts the embedded job live on `dir` and waits until it has committed.
fn start_live_job(dir: &Path, catalog: &Path) -> Running {
    let mut command = in_data_dir(dir, &["run", EMBEDDED_JOB, "--catalog"]);
    command.arg(catalog);
    let running = spawn(command);
    let store = dir.join("store").join("store.redb");
    let started = Instant::now();
    while !store.exists() {
        assert!(started.elapsed() < CHILD_TIMEOUT, "the job never created its store");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(3));
    running
}

#[test]
fn up_stopped_by_sigterm_leaves_a_store_that_export_and_verify_read() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let command = in_data_dir(dir.path(), &["up", "--no-auth", "--demo", "--addr", &addr]);
    let done = terminate_after(command, &addr, Duration::from_secs(6));
    assert_eq!(done.code(), Some(0), "{}", done.stderr);
    assert!(done.stderr.contains("every committed epoch is durable"), "{}", done.stderr);
    assert_no_panic(&done.stderr);
    assert_store_closed_cleanly(dir.path());
    assert!(!export_rows(dir.path()).is_empty(), "the demo's clicks were committed");
    // `verify` expects every window settled: a bounded run resumes from the
    // stop and finalizes them.
    let catalog = dir.path().join("demo-catalog.csv");
    for args in [&["run", EMBEDDED_JOB, "--bounded", "--catalog"][..], &["verify", EMBEDDED_JOB, "--catalog"]] {
        let mut command = in_data_dir(dir.path(), args);
        command.arg(&catalog);
        run_ok(command);
    }
}

#[test]
fn a_live_job_stopped_by_sigterm_closes_its_store_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = import_generated(dir.path(), 5_000);
    let running = start_live_job(dir.path(), &catalog);
    signal(&running, "-TERM");
    let done = wait_all(vec![running]).pop().expect("one child");
    assert_eq!(done.code(), Some(0), "{}", done.stderr);
    assert!(done.stderr.contains("stopped by signal: every committed epoch is durable"), "{}", done.stderr);
    assert_no_panic(&done.stderr);
    assert_store_closed_cleanly(dir.path());
    assert!(!export_rows(dir.path()).is_empty());
}

#[test]
fn a_job_killed_with_sigkill_leaves_a_store_that_export_and_verify_read() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = import_generated(dir.path(), 5_000);
    let running = start_live_job(dir.path(), &catalog);
    signal(&running, "-KILL");
    wait_all(vec![running]);
    assert!(!export_rows(dir.path()).is_empty(), "export repairs the store it found unclean");
    // `verify` expects every window settled: the killed job had not
    // finalized them, so its mismatches are expected, but it reads the store.
    let mut verify = in_data_dir(dir.path(), &["verify", EMBEDDED_JOB, "--catalog"]);
    verify.arg(&catalog);
    let done = run_to_end(verify);
    assert!(String::from_utf8_lossy(&done.stdout).contains("windows checked"), "{}", done.stderr);
    assert_no_panic(&done.stderr);
}

#[test]
fn log_import_refuses_a_timestamp_after_the_year_9999_and_the_job_runs_on() {
    let dir = tempfile::tempdir().unwrap();
    let clicks = dir.path().join("clicks.ndjson");
    let lines =
        [click("ad-1", START_MS, "u1", 1), click("ad-1", 18_446_744_073_709_000_000, "u2", 2), click("ad-1", 253_402_300_799_999, "u3", 3)];
    std::fs::write(&clicks, lines.join("\n") + "\n").unwrap();
    let mut import = in_data_dir(dir.path(), &["log", "import"]);
    import.arg(&clicks);
    let done = run_ok(import);
    assert_eq!(String::from_utf8_lossy(&done.stdout).trim(), "appended 2 clicks, rejected 1 lines (of 3)");
    let reason = "line 2: field 'timestamp': 18446744073709000000 is too large: must be at most 253402300799999 (9999-12-31T23:59:59.999Z)";
    assert!(done.stderr.contains(reason), "{}", done.stderr);
    let done = run_ok(in_data_dir(dir.path(), &["run", EMBEDDED_JOB, "--bounded"]));
    assert!(done.stderr.contains("2 clicks"), "{}", done.stderr);
    assert!(export_rows(dir.path()).iter().any(|row| row["window_start"] == 253_402_300_740_000u64), "the last minute of 9999 is counted");
}

// ---------------------------------------------------------------- log retention

const DAY_MS: u64 = 86_400_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Generates `clicks` clicks stamped 30 days ago, `rate_per_s` a second of
/// event time, and appends them to the log of `dir` in segments of 2 KB
/// (closed segments of a backfill far older than the log retention);
/// returns the clicks file and the catalog.
fn backfill(dir: &Path, clicks: u64, rate_per_s: u64) -> (PathBuf, PathBuf) {
    let (path, catalog) = (dir.join("backfill.ndjson"), dir.join("ads.csv"));
    let start = (now_ms() - 30 * DAY_MS).to_string();
    let mut command = tally();
    command.args(["gen", "--clicks", &clicks.to_string(), "--rate-per-s", &rate_per_s.to_string(), "--start-ms", &start, "--output"]);
    command.arg(&path).arg("--catalog").arg(&catalog);
    run_ok(command);
    let salt = tally::datadir::DataDir::new(dir).salt().unwrap();
    let options = tally::log::LogOptions { segment_bytes: 2_000, ..tally::log::LogOptions::default() };
    let log = tally::log::Log::open(&dir.join("log"), 8, options).unwrap();
    let input = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
    tally::ingest::import(input, &log, &salt).unwrap();
    (path, catalog)
}

/// The oldest retained offset of every partition of the log of `dir`.
fn log_start_offsets(dir: &Path) -> Vec<u64> {
    tally::log::Log::open(&dir.join("log"), 8, tally::log::LogOptions::default()).unwrap().start_offsets()
}

#[test]
fn log_import_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (backfill, _) = backfill(dir.path(), 2_000, 1_000);
    let mut import = in_data_dir(dir.path(), &["log", "import"]);
    import.arg(&backfill);
    run_ok(import);
    assert_eq!(log_start_offsets(dir.path()), [0; 8], "the first backfill is still there");
}

#[test]
fn retention_keeps_what_the_job_has_not_read_or_must_read_again() {
    let dir = tempfile::tempdir().unwrap();
    // 150 s of event time: more than the 60 s dedup horizon.
    let (_, catalog) = backfill(dir.path(), 3_000, 20);
    let bounded = || {
        let mut command = in_data_dir(dir.path(), &["run", EMBEDDED_JOB, "--bounded", "--catalog"]);
        command.arg(&catalog);
        command
    };
    // Nothing committed yet: every segment is needed, however old.
    let first = run_ok(bounded());
    assert!(first.stderr.contains("log retention: deleted 0 segments older than 7d; kept"), "{}", first.stderr);
    assert_eq!(log_start_offsets(dir.path()), [0; 8]);
    let mut verify = in_data_dir(dir.path(), &["verify", EMBEDDED_JOB, "--catalog"]);
    verify.arg(&catalog);
    run_ok(verify);
    let rows = export_rows(dir.path());

    // Committed: what lies before the dedup replay offsets goes, the rest
    // stays, with a warning (the job needs segments past the retention).
    let second = run_ok(bounded());
    let line = second.stderr.lines().find(|l| l.contains("log retention:")).unwrap_or_else(|| panic!("{}", second.stderr));
    assert!(line.starts_with("warning: log retention: ") && !line.contains("deleted 0 ") && line.contains("; kept"), "{line}");
    assert!(log_start_offsets(dir.path()).iter().any(|&start| start > 0));
    assert_eq!(export_rows(dir.path()), rows, "a resumed run on the retained log changes nothing");
}

#[test]
fn the_example_ingest_config_starts_with_signatures_on() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut command = tally();
    command.env("TALLY_WEB_SDK_SECRET", "a-secret-from-the-environment");
    command.arg("--data-dir").arg(dir.path()).args(["ingest", "--config", INGEST_EXAMPLE, "--addr", &addr]);
    let done = start_then_terminate(command, &addr);
    assert_eq!(done.code(), Some(0), "{}", done.stderr);
    assert!(done.stderr.contains("request signatures ON (2 clients)"), "{}", done.stderr);
    // Without the environment variable the config is refused, naming it.
    let mut command = tally();
    command.env_remove("TALLY_WEB_SDK_SECRET");
    command.arg("--data-dir").arg(dir.path()).args(["ingest", "--config", INGEST_EXAMPLE, "--addr", &addr]);
    let done = run_to_end(command);
    assert_eq!(done.code(), Some(2), "{}", done.stderr);
    assert!(
        done.stderr.contains("key 'auth.clients': entry 1: secret_env: environment variable \"TALLY_WEB_SDK_SECRET\" is not set"),
        "{}",
        done.stderr
    );
}

#[test]
fn up_gives_the_redis_pre_filter_the_jobs_dedup_horizon_and_refuses_a_longer_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ingest.toml");
    // Redis is reached lazily: nothing needs to listen there to start.
    let redis = "[auth]\nsignatures = false\n[redis]\nurl = \"redis://127.0.0.1:1/\"\n";
    std::fs::write(&config, format!("{redis}horizon = \"2m\"\n")).unwrap();
    let addr = free_addr();
    let mut command = in_data_dir(dir.path(), &["up", "--addr", &addr, "--config"]);
    command.arg(&config);
    let done = run_to_end(command);
    assert_eq!(done.code(), Some(2), "{}", done.stderr);
    assert!(done.stderr.contains("[redis] horizon 2m is longer than the dedup.horizon of job embedded (1m)"), "{}", done.stderr);

    std::fs::write(&config, redis).unwrap();
    let mut command = in_data_dir(dir.path(), &["up", "--addr", &addr, "--config"]);
    command.arg(&config);
    let done = start_then_terminate(command, &addr);
    assert_eq!(done.code(), Some(0), "{}", done.stderr);
    assert!(done.stderr.contains("(a retry within 1m of its id's last sighting is answered without a write)"), "{}", done.stderr);
}

#[test]
fn a_bad_ingest_config_names_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ingest.toml");
    std::fs::write(&config, "max_batch_clicks = 0\n").unwrap();
    let mut command = tally();
    command.arg("--data-dir").arg(dir.path()).arg("ingest").arg("--config").arg(&config);
    let done = run_to_end(command);
    assert_eq!(done.code(), Some(2), "{}", done.stderr);
    let expected = format!("error: {}: key 'max_batch_clicks': 0 is out of range 1..=1000000", config.display());
    assert_eq!(done.stderr.trim(), expected);
}

#[test]
fn a_second_process_on_the_same_log_is_refused_with_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut first = tally();
    first.arg("--data-dir").arg(dir.path()).args(["ingest", "--no-auth", "--addr", &addr]);
    let mut running = spawn(first);
    let started = Instant::now();
    while !listening(addr.parse().unwrap()) {
        assert!(started.elapsed() < CHILD_TIMEOUT, "first ingest never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut second = tally();
    second.arg("--data-dir").arg(dir.path()).args(["ingest", "--no-auth", "--addr", &free_addr()]);
    let refused = run_to_end(second);
    let _ = running.child.kill();
    let _ = running.child.wait();
    assert_ne!(refused.code(), Some(0));
    assert!(refused.stderr.contains(&format!("is in use by pid {}", running.child.id())), "{}", refused.stderr);
}
