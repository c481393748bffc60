//! What tally writes to stderr as it runs: its log (`--log-format`,
//! `--log-level`) and the progress of its long commands.
//!
//! The log must never hold a user id, a request body or a client's
//! address, at any level: `tally up` is run at trace level, clicks with a
//! distinctive user id are posted to it from a known client port, and its
//! whole stderr is searched for them.

#[path = "common/child.rs"]
mod child;
#[path = "common/net.rs"]
mod net;
use net::{free_addr, listening};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const TALLY: &str = env!("CARGO_BIN_EXE_tally");
const EMBEDDED_JOB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/embedded.toml");
/// A user id no log line may ever hold.
const USER_ID: &str = "privacy-probe-user-4f1d";
/// The request id of the probe's click: a body fragment no log line may hold.
const REQUEST_ID: &str = "5b9c0d2e-8a41-4e6b-9f3c-7d2a1e0b4c68";
/// How long a service may take to listen, commit an epoch, stop.
const WAIT: Duration = Duration::from_secs(60);

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// `tally up --no-auth` on `addr` in `data`, with `flags`, its stderr
/// written to `data/up.log`.
fn start_up(data: &Path, addr: SocketAddr, flags: &[&str]) -> Child {
    let log = std::fs::File::create(data.join("up.log")).unwrap();
    let mut command = Command::new(TALLY);
    command.arg("--data-dir").arg(data).args(["up", "--no-auth", "--addr", &addr.to_string()]).args(flags);
    let child = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn().expect("spawn tally up");
    let started = Instant::now();
    while !listening(addr) {
        assert!(started.elapsed() < WAIT, "tally up never listened:\n{}", stderr_of(data));
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn stderr_of(data: &Path) -> String {
    std::fs::read_to_string(data.join("up.log")).unwrap_or_default()
}

/// Waits until stderr holds `wanted` (or `WAIT` passes).
fn wait_for(data: &Path, wanted: &str) {
    let started = Instant::now();
    while !stderr_of(data).contains(wanted) && started.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops `child` with SIGTERM; returns its stderr.
fn stop(child: Child, data: &Path) -> String {
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let done = child::finish(child);
    assert!(done.status.success(), "tally up did not stop cleanly ({}):\n{}", done.status, stderr_of(data));
    stderr_of(data)
}

/// POSTs `body` as JSON from a client socket of its own; returns the
/// client's address and the status line.
fn post(addr: SocketAddr, path: &str, body: &str) -> (SocketAddr, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let client = stream.local_addr().unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    (client, answer.lines().next().unwrap_or_default().to_owned())
}

fn click(user: &str, request_id: &str) -> String {
    format!(r#"{{"ad_id":"ad-1","timestamp":{},"user_id":"{user}","request_id":"{request_id}"}}"#, now_ms())
}

#[test]
fn the_log_never_holds_a_user_id_a_body_or_a_client_address_and_json_lines_are_objects() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let up = start_up(dir.path(), addr, &["--log-level", "trace", "--log-format", "json"]);
    let (accepted_from, accepted) = post(addr, "/v1/clicks", &click(USER_ID, REQUEST_ID));
    assert!(accepted.contains(" 202 "), "{accepted}");
    // Refused (a timestamp that is not a number): the refusal's reason
    // quotes the body, and is answered, never logged.
    let refused_body = click(USER_ID, REQUEST_ID).replace(r#""timestamp":"#, r#""timestamp":"soon","was":"#);
    let (refused_from, refused) = post(addr, "/v1/clicks", &refused_body);
    assert!(refused.contains(" 400 "), "{refused}");
    wait_for(dir.path(), "epoch committed");
    let stderr = stop(up, dir.path());

    for forbidden in [USER_ID.to_owned(), REQUEST_ID.to_owned(), accepted_from.to_string(), refused_from.to_string()] {
        assert!(!stderr.contains(&forbidden), "the log holds {forbidden}:\n{stderr}");
    }
    let events: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}\n{stderr}")))
        .collect();
    for event in &events {
        assert!(event["level"].is_string() && event["fields"]["message"].is_string(), "no level or message: {event}");
    }
    let logged = |level: &str, message: &str| events.iter().any(|e| e["level"] == level && e["fields"]["message"] == message);
    assert!(logged("TRACE", "clicks acknowledged"), "ingest logged no acknowledgement:\n{stderr}");
    assert!(logged("DEBUG", "request refused"), "ingest logged no refusal:\n{stderr}");
    assert!(logged("DEBUG", "epoch committed"), "no commit at debug:\n{stderr}");
    let commit = events.iter().find(|e| e["fields"]["message"] == "epoch committed").unwrap();
    for field in ["epoch", "rows_final", "rows_partial", "rows_restated", "duration_ms"] {
        assert!(commit["fields"][field].is_u64(), "the commit event lacks {field}: {commit}");
    }
}

#[test]
fn at_the_default_level_the_log_is_text_without_commits() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let up = start_up(dir.path(), addr, &[]);
    let (_, accepted) = post(addr, "/v1/clicks", &click(USER_ID, REQUEST_ID));
    assert!(accepted.contains(" 202 "), "{accepted}");
    // Two epochs of 1 s: committed, and not logged.
    std::thread::sleep(Duration::from_secs(3));
    let stderr = stop(up, dir.path());
    assert!(stderr.lines().any(|l| l.starts_with("job: embedded on ")), "{stderr}");
    assert!(stderr.contains("stopped by signal"), "{stderr}");
    assert!(!stderr.contains("epoch committed") && !stderr.contains("debug: "), "debug events at the default level:\n{stderr}");
    assert!(!stderr.lines().any(|l| l.starts_with('{')), "JSON in the text form:\n{stderr}");
}

fn tally(data: &Path, args: &[&str]) -> Output {
    child::checked(Command::new(TALLY).arg("--data-dir").arg(data).args(args).stdin(Stdio::null()))
}

/// Whether `line` reads `LABEL: N UNIT, R UNIT/s, 100% (done in S s)`
/// with `count` as N.
fn is_last_progress_line(line: &str, label: &str, count: &str, unit: &str) -> bool {
    let Some(rest) = line.strip_prefix(&format!("{label}: {count} {unit}, ")) else { return false };
    let Some((rate, rest)) = rest.split_once(&format!(" {unit}/s, 100% (done in ")) else { return false };
    rate.replace(',', "").parse::<u64>().is_ok() && rest.strip_suffix(" s)").is_some_and(|secs| secs.parse::<f64>().is_ok())
}

#[test]
fn import_and_a_bounded_run_end_their_progress_with_a_last_line_before_their_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (clicks, catalog) = (dir.path().join("clicks.ndjson"), dir.path().join("ads.csv"));
    let gen = ["gen", "--clicks", "20000", "--output", clicks.to_str().unwrap(), "--catalog", catalog.to_str().unwrap()];
    tally(dir.path(), &gen);

    let import = tally(dir.path(), &["log", "import", clicks.to_str().unwrap()]);
    let (stdout, stderr) = (String::from_utf8_lossy(&import.stdout), String::from_utf8_lossy(&import.stderr));
    assert!(stdout.starts_with("appended 20000 clicks"), "{stdout}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(is_last_progress_line(last, "import", "20,000", "clicks"), "{stderr}");

    let run = tally(dir.path(), &["run", EMBEDDED_JOB, "--bounded", "--catalog", catalog.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let progress = lines.iter().position(|l| is_last_progress_line(l, "run", "20,000", "clicks"));
    let summary = lines.iter().position(|l| l.starts_with("read 20000 clicks"));
    assert!(matches!((progress, summary), (Some(p), Some(s)) if p < s), "the last progress line before the summary:\n{stderr}");

    // Progress lines are info events: quiet at warn, JSON in the JSON form.
    let quiet = tally(dir.path(), &["run", EMBEDDED_JOB, "--bounded", "--catalog", catalog.to_str().unwrap(), "--log-level", "warn"]);
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("run: "), "{}", String::from_utf8_lossy(&quiet.stderr));
    let json = tally(dir.path(), &["log", "import", clicks.to_str().unwrap(), "--log-format", "json"]);
    let line: Value = serde_json::from_str(String::from_utf8_lossy(&json.stderr).trim()).unwrap();
    let message = line["fields"]["message"].as_str().unwrap();
    assert!(is_last_progress_line(message, "import", "20,000", "clicks"), "{line}");
}
