//! HTTP ingest benchmark: a load generator over loopback against the real
//! `tally` binary, next to the log it writes to.
//!
//! A program, not a timed test (see `bench/README.md`): it prints a table and
//! never asserts on a timing. Rows:
//!
//! 1. **Batches of 1,000 clicks, JSON array**, from C keep-alive connections
//!    (default 16) to `tally up` (ingest + the built-in `jobs/embedded.toml`
//!    job in one process).
//! 2. The same with **NDJSON** bodies.
//! 3. **Single clicks** (`POST /v1/clicks`) from more connections (default 64).
//! 4. Batches of 1,000, JSON array, to **`tally ingest`** (no job): what the
//!    job costs the ingest path.
//! 5. **Peer: `Log::append`** of batches of 1,000 from C threads, no HTTP,
//!    in a child process (this program re-invoked with the hidden
//!    `--child-log …`).
//!
//! Every run of an HTTP row starts the server on a fresh data directory (with
//! `--addr 127.0.0.1:0`, the port read from its `ingest: http://…` line),
//! sends for a warm-up and then the measured interval, waits until the
//! server is idle again (the job has caught up with the log), stops it with
//! SIGTERM and checks that the acknowledged clicks are exactly the clicks
//! sent and exactly the records in the log. Request bodies are rendered once,
//! before any clock starts, from the seeded generator (event time at 1M
//! clicks/s); each run restamps them from the current time, and a connection
//! that runs through its bodies sends them again restamped and with fresh
//! request ids, patched in place.
//!
//! Usage: `cargo bench --bench ingest -- [--seconds S] [--connections C]
//! [--single-connections C] [--runs R] [--workers W] [--smoke]`

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{cpu_time, human, machine_busy, median, min_max, number, peak_rss_kb, percentile};
use tally::event::Click;
use tally::ingest::client::HttpClient;
use tally::log::{Log, LogOptions};
use tally::sources::generator::{Generator, GeneratorConfig};

const DEFAULT_SECONDS: u64 = 5;
const SMOKE_SECONDS: u64 = 1;
const WARMUP: Duration = Duration::from_secs(1);
const SMOKE_WARMUP: Duration = Duration::from_millis(500);
const DEFAULT_RUNS: usize = 3;
const DEFAULT_CONNECTIONS: usize = 16;
const DEFAULT_SINGLE_CONNECTIONS: usize = 64;
/// Job workers of `tally up` (its own default).
const DEFAULT_WORKERS: usize = 1;
const MAX_SECONDS: u64 = 600;
const MAX_RUNS: usize = 100;
/// The server's default `max_connections`.
const MAX_CONNECTIONS: usize = 1_024;
/// Clicks per batch request and per direct append.
const BATCH_CLICKS: usize = 1_000;
/// Distinct clicks rendered into request bodies (~130 B each, per format).
const POOL_CLICKS: u64 = 500_000;
const SMOKE_POOL_CLICKS: u64 = 50_000;
/// Event-time rate of the rendered clicks: the product's peak load.
const EVENT_RATE_PER_S: u64 = 1_000_000;
/// Partitions of the log (the built-in job's and `tally ingest`'s default).
const LOG_PARTITIONS: u32 = 8;
/// Salt of the user hash for the direct-append clicks; any value does.
const LOG_SALT: u64 = 0x5eed_5a17;
/// The per-client rate limit the bench sets: every connection counts as the
/// one anonymous client, whose default (1M clicks/s) would cap the total.
const LIFTED_RATE: u64 = 1_000_000_000;
/// The server's default `max_inflight_requests`.
const DEFAULT_MAX_INFLIGHT: usize = 256;
/// The end-to-end goal for the whole box.
const GOAL_CLICKS_PER_S: f64 = 1e6;
/// How long the server may take to print its `ingest:` line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIGTERMed server may take to exit (its shutdown grace is 10 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause after a refused request or a connection error.
const ERROR_PAUSE: Duration = Duration::from_millis(10);
/// Server stderr lines kept for error messages.
const STDERR_TAIL_LINES: usize = 20;
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// After the load stops, the server counts as idle once it uses under
/// `IDLE_SHARE` of a core over one `DRAIN_PROBE`.
const DRAIN_PROBE: Duration = Duration::from_millis(250);
const IDLE_SHARE: f64 = 0.1;
/// Longest wait for the server to go idle after the load.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);
const SMOKE_DRAIN_LIMIT: Duration = Duration::from_secs(10);
const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";

/// Set by SIGINT, SIGTERM or SIGHUP: every wait stops, children are killed.
static INTERRUPTED: LazyLock<Arc<AtomicBool>> = LazyLock::new(|| Arc::new(AtomicBool::new(false)));

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Command-line settings.
#[derive(Debug)]
struct Args {
    seconds: u64,
    warmup: Duration,
    drain_limit: Duration,
    connections: usize,
    single_connections: usize,
    runs: usize,
    workers: usize,
    pool: u64,
    smoke: bool,
    /// Hidden: `--child-log WRITERS BATCH WARMUP_MS MEASURE_MS POOL`.
    child_log: Option<LogChild>,
}

#[derive(Clone, Copy, Debug)]
struct LogChild {
    writers: usize,
    batch: usize,
    warmup: Duration,
    measure: Duration,
    pool: u64,
}

const USAGE: &str = "usage: ingest [--seconds S] [--connections C] [--single-connections C] [--runs R] [--workers W] [--smoke]";

fn parse_args() -> Result<Args, String> {
    let (mut seconds, mut runs, mut smoke, mut child_log) = (None, None, false, None);
    let (mut connections, mut single_connections, mut workers) = (DEFAULT_CONNECTIONS, DEFAULT_SINGLE_CONNECTIONS, DEFAULT_WORKERS);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--seconds" => seconds = Some(number(&flag, it.next())?),
            "--runs" => runs = Some(number(&flag, it.next())? as usize),
            "--connections" => connections = number(&flag, it.next())? as usize,
            "--single-connections" => single_connections = number(&flag, it.next())? as usize,
            "--workers" => workers = number(&flag, it.next())? as usize,
            "--smoke" => smoke = true,
            "--child-log" => {
                let writers = number(&flag, it.next())? as usize;
                let batch = number(&flag, it.next())? as usize;
                let warmup = Duration::from_millis(number(&flag, it.next())?);
                let measure = Duration::from_millis(number(&flag, it.next())?);
                let pool = number(&flag, it.next())?;
                child_log = Some(LogChild { writers: writers.max(1), batch: batch.max(1), warmup, measure, pool: pool.max(1) });
            }
            // `cargo bench` passes `--bench` to harness-less benches.
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    let args = Args {
        seconds: seconds.unwrap_or(if smoke { SMOKE_SECONDS } else { DEFAULT_SECONDS }),
        warmup: if smoke { SMOKE_WARMUP } else { WARMUP },
        drain_limit: if smoke { SMOKE_DRAIN_LIMIT } else { DRAIN_LIMIT },
        connections,
        single_connections,
        runs: runs.unwrap_or(if smoke { 1 } else { DEFAULT_RUNS }),
        workers,
        pool: if smoke { SMOKE_POOL_CLICKS } else { POOL_CLICKS },
        smoke,
        child_log,
    };
    if !(1..=MAX_SECONDS).contains(&args.seconds) {
        return Err(format!("--seconds: must be in 1..={MAX_SECONDS}, got {}", args.seconds));
    }
    if !(1..=MAX_RUNS).contains(&args.runs) {
        return Err(format!("--runs: must be in 1..={MAX_RUNS}, got {}", args.runs));
    }
    for (flag, value) in [("--connections", args.connections), ("--single-connections", args.single_connections)] {
        if !(1..=MAX_CONNECTIONS).contains(&value) {
            return Err(format!("{flag}: must be in 1..={MAX_CONNECTIONS}, got {value}"));
        }
    }
    if !(1..=tally::run::MAX_WORKERS).contains(&args.workers) {
        return Err(format!("--workers: must be in 1..={}, got {}", tally::run::MAX_WORKERS, args.workers));
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("ingest: {message}");
            std::process::exit(2);
        }
    };
    let result = match args.child_log {
        Some(child) => child_log(child),
        None => register_signals().and_then(|()| parent(&args)),
    };
    match result {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(message) => {
            eprintln!("ingest: {message}");
            std::process::exit(1);
        }
    }
}

fn register_signals() -> Result<(), String> {
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register(signal, Arc::clone(&INTERRUPTED)).map_err(|e| format!("signal handler: {e}"))?;
    }
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// Sleeps until `deadline`; an error once interrupted.
fn sleep_until(deadline: Instant) -> Result<(), String> {
    loop {
        if interrupted() {
            return Err("interrupted".to_owned());
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(());
        }
        std::thread::sleep((deadline - now).min(POLL_INTERVAL));
    }
}

// ---- child processes: killed on every path ------------------------------------

/// Sends `signal` to process `pid`.
fn send_signal(pid: u32, signal: i32) {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    // SAFETY: kill(2) only takes integers; a failure (process gone) is harmless.
    unsafe {
        kill(pid as i32, signal);
    }
}

const SIGTERM: i32 = 15;

/// Makes the kernel send SIGTERM to the command's process when this one
/// exits, however it exits (even by SIGKILL), so no server outlives the bench.
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    extern "C" {
        fn prctl(option: i32, ...) -> i32;
    }
    const PR_SET_PDEATHSIG: i32 = 1;
    // SAFETY: runs in the forked child before exec; prctl(2) is
    // async-signal-safe and changes only that process.
    unsafe {
        command.pre_exec(|| {
            if prctl(PR_SET_PDEATHSIG, SIGTERM as std::ffi::c_ulong) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A child process that is SIGKILLed and reaped when dropped unreaped.
struct Guard {
    child: Child,
    reaped: bool,
}

impl Guard {
    fn spawn(command: &mut Command, what: &str) -> Result<Guard, String> {
        die_with_parent(command);
        let child = command.spawn().map_err(|e| format!("{what}: cannot start: {e}"))?;
        Ok(Guard { child, reaped: false })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>, String> {
        let status = self.child.try_wait().map_err(|e| format!("wait: {e}"))?;
        self.reaped |= status.is_some();
        Ok(status)
    }

    /// Waits up to `limit` for the child to exit; an error once interrupted.
    fn wait_for(&mut self, limit: Duration) -> Result<Option<std::process::ExitStatus>, String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if interrupted() {
                return Err("interrupted".to_owned());
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---- the tally server -----------------------------------------------------------

/// What runs behind the HTTP API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `tally up`: ingest plus the built-in job in one process.
    Up,
    /// `tally ingest`: the API and the log only.
    IngestOnly,
}

/// A running server on a fresh data directory; killed and removed on drop.
struct Server {
    guard: Guard,
    addr: SocketAddr,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    work: tempfile::TempDir,
}

impl Server {
    fn start(bin: &Path, mode: Mode, workers: usize, max_inflight: usize) -> Result<Server, String> {
        let work = tempfile::Builder::new().prefix("tally-bench-ingest").tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let config = work.path().join("ingest.toml");
        let text = format!(
            "# Written by bench/ingest.rs: the per-client rate limit lifted (all bench\n\
             # connections are one anonymous client), room for every connection.\n\
             max_inflight_requests = {max_inflight}\n\n[rate_limit]\nclicks_per_s = {LIFTED_RATE}\nburst_clicks = {LIFTED_RATE}\n"
        );
        std::fs::write(&config, text).map_err(|e| format!("write {}: {e}", config.display()))?;
        let mut command = Command::new(bin);
        command.arg("--data-dir").arg(work.path().join("data"));
        match mode {
            Mode::Up => command.args(["up", "-w", &workers.to_string()]),
            Mode::IngestOnly => command.arg("ingest"),
        };
        command.args(["--no-auth", "--addr", "127.0.0.1:0"]).arg("--config").arg(&config);
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut guard = Guard::spawn(&mut command, "tally")?;
        let stderr = guard.child.stderr.take().expect("stderr is piped");
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let tail = Arc::clone(&stderr_tail);
        // Drains stderr until the server exits, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = listening_addr(&line) {
                    let _ = addr_tx.send(addr);
                }
                let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                if tail.len() == STDERR_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        let started = Instant::now();
        let mut server = Server { guard, addr: SocketAddr::from(([127, 0, 0, 1], 0)), stderr_tail, work };
        loop {
            match addr_rx.recv_timeout(POLL_INTERVAL) {
                Ok(addr) => {
                    server.addr = addr;
                    return Ok(server);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!("tally exited before listening:\n{}", server.tail()));
                }
            }
            if let Some(status) = server.guard.try_wait()? {
                return Err(format!("tally exited before listening ({status}):\n{}", server.tail()));
            }
            if interrupted() {
                return Err("interrupted".to_owned());
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                return Err(format!("tally printed no `ingest: http://…` line within {} s:\n{}", STARTUP_TIMEOUT.as_secs(), server.tail()));
            }
        }
    }

    fn pid(&self) -> u32 {
        self.guard.pid()
    }

    fn tail(&self) -> String {
        let tail = self.stderr_tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.iter().map(|line| format!("  {line}\n")).collect()
    }

    /// Errors if the server has exited.
    fn check_alive(&mut self) -> Result<(), String> {
        match self.guard.try_wait()? {
            None => Ok(()),
            Some(status) => Err(format!("tally exited during the run ({status}):\n{}", self.tail())),
        }
    }

    /// SIGTERM, then waits for the exit; SIGKILL after [`STOP_TIMEOUT`].
    fn stop(&mut self) -> Result<(), String> {
        self.check_alive()?;
        send_signal(self.pid(), SIGTERM);
        match self.guard.wait_for(STOP_TIMEOUT)? {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(format!("tally failed on SIGTERM ({status}):\n{}", self.tail())),
            None => Err(format!("tally did not exit within {} s of SIGTERM (killed):\n{}", STOP_TIMEOUT.as_secs(), self.tail())),
        }
    }

    /// Records in the stopped server's log.
    fn log_records(&self) -> Result<u64, String> {
        let dir = self.work.path().join("data").join("log");
        let log = Log::open(&dir, LOG_PARTITIONS, LogOptions::default()).map_err(|e| format!("log {}: {e}", dir.display()))?;
        let (end, start) = (log.end_offsets(), log.start_offsets());
        Ok(end.iter().sum::<u64>() - start.iter().sum::<u64>())
    }
}

/// `ADDR` of the server's `ingest: http://ADDR/v1/clicks …` line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.strip_prefix("ingest: http://")?;
    rest.split('/').next()?.parse().ok()
}

/// The `tally` binary next to this bench's build, built first if missing.
fn tally_binary() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let bin = target.join("release").join("tally");
    if !bin.is_file() {
        eprintln!("ingest: building {} ...", bin.display());
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--release", "--bin", "tally"])
            .current_dir(root)
            .status()
            .map_err(|e| format!("cargo build: {e}"))?;
        if !status.success() || !bin.is_file() {
            return Err(format!("cargo build --release --bin tally failed ({status})"));
        }
    }
    if let (Ok(built), Some(newest)) = (std::fs::metadata(&bin).and_then(|m| m.modified()), newest_source(&root.join("src"))) {
        if newest > built {
            eprintln!("ingest: warning: {} is older than src/; `cargo build --release --bins` measures the current code", bin.display());
        }
    }
    Ok(bin)
}

fn newest_source(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let modified = if entry.path().is_dir() { newest_source(&entry.path()) } else { entry.metadata().and_then(|m| m.modified()).ok() };
        newest = newest.max(modified);
    }
    newest
}

// ---- request bodies -----------------------------------------------------------------

/// The generated clicks as NDJSON lines, with where each line's timestamp
/// and request id are.
struct Pool {
    text: Vec<u8>,
    lines: Vec<Line>,
    /// Event time of the first click (the wall clock when rendered).
    start_ms: u64,
}

#[derive(Clone, Copy)]
struct Line {
    start: usize,
    /// Without the newline.
    len: usize,
    ts_at: usize,
    id_at: usize,
    ts: u64,
}

/// Digits of a millisecond timestamp until the year 2286.
const TS_DIGITS: usize = 13;
/// Hex digits of a request id that a later pass replaces (the first group).
const ID_PATCH_DIGITS: usize = 8;

impl Pool {
    fn render(clicks: u64) -> Result<Pool, String> {
        let cfg =
            GeneratorConfig { clicks, partitions: LOG_PARTITIONS, rate_per_s: EVENT_RATE_PER_S, start_ms: now_ms(), ..Default::default() };
        let mut text = Vec::with_capacity(clicks as usize * 140);
        let mut lines = Vec::with_capacity(clicks as usize);
        for click in Generator::new(&cfg) {
            let start = text.len();
            click.write_ndjson(&mut text).map_err(|e| format!("render: {e}"))?;
            let line = &text[start..text.len() - 1];
            let find = |needle: &[u8]| line.windows(needle.len()).position(|w| w == needle).map(|at| start + at + needle.len());
            let (Some(ts_at), Some(id_at)) = (find(b"\"timestamp\":"), find(b"\"request_id\":\"")) else {
                return Err(format!("render: unexpected line {:?}", String::from_utf8_lossy(line)));
            };
            if click.ts.to_string().len() != TS_DIGITS {
                return Err(format!("render: timestamp {} does not have {TS_DIGITS} digits", click.ts));
            }
            lines.push(Line { start, len: line.len(), ts_at, id_at, ts: click.ts });
        }
        Ok(Pool { text, lines, start_ms: cfg.start_ms })
    }

    fn line(&self, line: &Line) -> &[u8] {
        &self.text[line.start..line.start + line.len]
    }
}

/// How clicks are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// `POST /v1/clicks/batch`, a JSON array.
    BatchJson,
    /// `POST /v1/clicks/batch`, NDJSON.
    BatchNdjson,
    /// `POST /v1/clicks`, one object.
    Single,
}

impl Shape {
    fn path(self) -> &'static str {
        match self {
            Shape::Single => "/v1/clicks",
            _ => "/v1/clicks/batch",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Shape::BatchNdjson => NDJSON,
            _ => JSON,
        }
    }

    fn clicks_per_request(self) -> usize {
        match self {
            Shape::Single => 1,
            _ => BATCH_CLICKS,
        }
    }
}

/// One request body and where to patch it for a later pass.
struct Body {
    bytes: Vec<u8>,
    clicks: u64,
    /// `(timestamp position, request id position, original timestamp)`.
    patches: Vec<(u32, u32, u64)>,
    /// The pass the body is patched for.
    pass: u64,
}

impl Body {
    /// Moves the timestamps `shift_ms` later than rendered and, after the
    /// first pass, replaces the first group of each request id by a per-pass
    /// value: each pass sends new clicks stamped near now.
    fn patch(&mut self, pass: u64, shift_ms: u64) {
        let prefix = format!("{:08x}", tally::event::mix64(pass) as u32);
        for &(ts_at, id_at, ts) in &self.patches {
            let ts = (ts + shift_ms).to_string();
            if ts.len() == TS_DIGITS {
                self.bytes[ts_at as usize..ts_at as usize + TS_DIGITS].copy_from_slice(ts.as_bytes());
            }
            if pass > 0 {
                self.bytes[id_at as usize..id_at as usize + ID_PATCH_DIGITS].copy_from_slice(prefix.as_bytes());
            }
        }
        self.pass = pass;
    }
}

/// The bodies of each connection: request k goes to connection k mod
/// `connections`, so the connections move through event time together.
fn bodies(pool: &Pool, shape: Shape, connections: usize) -> Vec<Vec<Body>> {
    let mut out: Vec<Vec<Body>> = (0..connections).map(|_| Vec::new()).collect();
    for (k, chunk) in pool.lines.chunks(shape.clicks_per_request()).enumerate() {
        let mut bytes = Vec::with_capacity(chunk.iter().map(|l| l.len + 1).sum::<usize>() + 2);
        let mut patches = Vec::with_capacity(chunk.len());
        if shape == Shape::BatchJson {
            bytes.push(b'[');
        }
        for (i, line) in chunk.iter().enumerate() {
            if shape == Shape::BatchJson && i > 0 {
                bytes.push(b',');
            }
            let base = bytes.len();
            patches.push(((base + line.ts_at - line.start) as u32, (base + line.id_at - line.start) as u32, line.ts));
            bytes.extend_from_slice(pool.line(line));
            if shape == Shape::BatchNdjson {
                bytes.push(b'\n');
            }
        }
        if shape == Shape::BatchJson {
            bytes.push(b']');
        }
        out[k % connections].push(Body { bytes, clicks: chunk.len() as u64, patches, pass: 0 });
    }
    // Stamped from now: clicks minutes behind the server's clock cost the
    // job several times more per click than current ones.
    let shift_ms = now_ms().saturating_sub(pool.start_ms);
    out.iter_mut().flatten().for_each(|body| body.patch(0, shift_ms));
    out
}

// ---- the load generator -----------------------------------------------------------

/// What one connection saw.
#[derive(Default)]
struct Load {
    /// Requests acknowledged (202) inside the measured interval, and their clicks.
    window_requests: u64,
    window_clicks: u64,
    /// Ack latency of those requests, µs.
    latencies_us: Vec<u32>,
    /// Over the whole run: clicks in requests answered 202, and the sum of
    /// their `accepted` and `rejected` counts.
    acked_sent: u64,
    accepted: u64,
    rejected: u64,
    /// Answers other than 202, by status.
    refused: BTreeMap<u16, u64>,
    io_errors: u64,
    first_problem: Option<String>,
}

impl Load {
    fn merge(&mut self, other: Load) {
        self.window_requests += other.window_requests;
        self.window_clicks += other.window_clicks;
        self.latencies_us.extend(other.latencies_us);
        self.acked_sent += other.acked_sent;
        self.accepted += other.accepted;
        self.rejected += other.rejected;
        for (status, n) in other.refused {
            *self.refused.entry(status).or_default() += n;
        }
        self.io_errors += other.io_errors;
        self.first_problem = self.first_problem.take().or(other.first_problem);
    }
}

#[derive(serde::Deserialize)]
struct Ack {
    accepted: u64,
    rejected: Vec<serde::de::IgnoredAny>,
}

/// Sends `bodies` round and round on one connection until `end`; counts
/// what completes in `[measure_from, end)`.
fn load(addr: SocketAddr, shape: Shape, mut bodies: Vec<Body>, start_ms: u64, measure_from: Instant, end: Instant) -> Load {
    let mut client = HttpClient::new(addr, None);
    let mut out = Load::default();
    let (mut next, mut pass, mut shift_ms) = (0, 0, 0);
    while !bodies.is_empty() && Instant::now() < end && !interrupted() {
        let body = &mut bodies[next];
        if body.pass != pass {
            body.patch(pass, shift_ms);
        }
        let sent = Instant::now();
        let reply = client.post(shape.path(), shape.content_type(), &body.bytes);
        let done = Instant::now();
        match reply {
            Ok(reply) if reply.status == 202 => match serde_json::from_slice::<Ack>(&reply.body) {
                Ok(ack) => {
                    out.acked_sent += body.clicks;
                    out.accepted += ack.accepted;
                    out.rejected += ack.rejected.len() as u64;
                    if !ack.rejected.is_empty() && out.first_problem.is_none() {
                        out.first_problem = Some(format!("202 with rejected clicks: {}", reply.text()));
                    }
                    if done >= measure_from && done < end {
                        out.window_requests += 1;
                        out.window_clicks += ack.accepted;
                        out.latencies_us.push(done.duration_since(sent).as_micros().min(u128::from(u32::MAX)) as u32);
                    }
                }
                Err(e) => {
                    out.io_errors += 1;
                    out.first_problem.get_or_insert_with(|| format!("202 with an unreadable body ({e}): {}", reply.text()));
                }
            },
            Ok(reply) => {
                *out.refused.entry(reply.status).or_default() += 1;
                out.first_problem.get_or_insert_with(|| format!("{}: {}", reply.status, reply.text()));
                std::thread::sleep(ERROR_PAUSE);
            }
            Err(e) => {
                out.io_errors += 1;
                out.first_problem.get_or_insert_with(|| format!("connection: {e}"));
                std::thread::sleep(ERROR_PAUSE);
            }
        }
        next += 1;
        if next == bodies.len() {
            next = 0;
            pass += 1;
            shift_ms = now_ms().saturating_sub(start_ms);
        }
    }
    out
}

/// One HTTP row.
#[derive(Clone, Copy, Debug)]
struct Row {
    label: &'static str,
    shape: Shape,
    mode: Mode,
    connections: usize,
}

/// What one run of an HTTP row measured.
struct HttpSample {
    window: Duration,
    load: Load,
    server_cpu: Duration,
    /// From the end of the interval until the server went idle (the job
    /// catching up with the log), and the server's CPU time meanwhile.
    drain: Duration,
    drain_cpu: Duration,
    /// Whether the drain hit its limit before the server went idle.
    drain_capped: bool,
    client_cpu: Duration,
    busy: Duration,
    peak_rss_kb: u64,
    log_records: u64,
}

impl HttpSample {
    fn clicks_per_s(&self) -> f64 {
        self.load.window_clicks as f64 / self.window.as_secs_f64()
    }

    fn requests_per_s(&self) -> f64 {
        self.load.window_requests as f64 / self.window.as_secs_f64()
    }

    /// CPU seconds per 1M clicks.
    fn per_million(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / self.load.window_clicks.max(1) as f64
    }

    /// Cores other processes kept busy: machine-wide busy time minus the
    /// server's and this program's, ÷ the interval.
    fn other_load(&self) -> f64 {
        self.busy.saturating_sub(self.server_cpu + self.client_cpu).as_secs_f64() / self.window.as_secs_f64()
    }

    /// What is wrong with the run's acknowledgements, if anything.
    fn problems(&self) -> Vec<String> {
        let l = &self.load;
        let mut problems = Vec::new();
        if l.accepted != l.acked_sent || l.rejected > 0 {
            problems
                .push(format!("{} clicks sent in acknowledged requests, {} accepted, {} rejected", l.acked_sent, l.accepted, l.rejected));
        }
        if self.log_records != l.accepted {
            problems.push(format!("{} clicks accepted, {} records in the log", l.accepted, self.log_records));
        }
        if l.window_requests == 0 {
            problems.push("no request acknowledged in the measured interval".to_owned());
        }
        problems
    }
}

/// Waits until the server is idle (under [`IDLE_SHARE`] of a core over one
/// [`DRAIN_PROBE`]) or `limit` after `end` has passed; returns the time from
/// `end` to the last busy probe, the server's CPU time from now until then,
/// and whether the limit cut it short.
fn drain(stat: &str, end: Instant, limit: Duration) -> Result<(Duration, Duration, bool), String> {
    let first = (Instant::now(), cpu_time(stat));
    let mut last = first;
    loop {
        sleep_until(last.0 + DRAIN_PROBE)?;
        let now = (Instant::now(), cpu_time(stat));
        let share = now.1.saturating_sub(last.1).as_secs_f64() / (now.0 - last.0).as_secs_f64();
        if share < IDLE_SHARE {
            return Ok((last.0.saturating_duration_since(end), last.1.saturating_sub(first.1), false));
        }
        if now.0 >= end + limit {
            return Ok((now.0.saturating_duration_since(end), now.1.saturating_sub(first.1), true));
        }
        last = now;
    }
}

/// The server's CPU time, this process's, the machine's busy time, and the
/// instant they were read, once `at` has come.
fn sample_usage(server_stat: &str, at: Instant) -> Result<(Duration, Duration, Duration, Instant), String> {
    sleep_until(at)?;
    Ok((cpu_time(server_stat), cpu_time("/proc/self/stat"), machine_busy(), Instant::now()))
}

fn run_http(bin: &Path, pool: &Pool, row: Row, args: &Args) -> Result<HttpSample, String> {
    let bodies = bodies(pool, row.shape, row.connections);
    let max_inflight = DEFAULT_MAX_INFLIGHT.max(2 * row.connections);
    let mut server = Server::start(bin, row.mode, args.workers, max_inflight)?;
    let stat = format!("/proc/{}/stat", server.pid());
    let started = Instant::now();
    let measure_from = started + args.warmup;
    let end = measure_from + Duration::from_secs(args.seconds);
    let (addr, shape, start_ms) = (server.addr, row.shape, pool.start_ms);
    let sampled = std::thread::scope(|scope| {
        let handles: Vec<_> = bodies.into_iter().map(|b| scope.spawn(move || load(addr, shape, b, start_ms, measure_from, end))).collect();
        let sampled = sample_usage(&stat, measure_from).and_then(|before| Ok((before, sample_usage(&stat, end)?)));
        let mut load = Load::default();
        for handle in handles {
            load.merge(handle.join().map_err(|_| "load thread panicked".to_owned())?);
        }
        sampled.map(|s| (s, load))
    });
    let ((before, after), mut load) = sampled?;
    server.check_alive()?;
    let (drain, drain_cpu, drain_capped) = drain(&stat, end, args.drain_limit)?;
    let peak_rss_kb = peak_rss_kb(&format!("/proc/{}/status", server.pid())).unwrap_or(0);
    server.stop()?;
    let log_records = server.log_records()?;
    load.latencies_us.sort_unstable();
    Ok(HttpSample {
        // The clicks are counted in [measure_from, end); CPU between the samples.
        window: end - measure_from,
        load,
        server_cpu: after.0.saturating_sub(before.0),
        drain,
        drain_cpu,
        drain_capped,
        client_cpu: after.1.saturating_sub(before.1),
        busy: after.2.saturating_sub(before.2).mul_f64((end - measure_from).as_secs_f64() / (after.3 - before.3).as_secs_f64().max(1e-9)),
        peak_rss_kb,
        log_records,
    })
}

// ---- peer: Log::append without HTTP (child process) -------------------------------------

/// Appends batches of generated clicks from `writers` threads to a fresh log
/// for a warm-up and the measured interval; prints one `log …` line.
fn child_log(child: LogChild) -> Result<bool, String> {
    let cfg = GeneratorConfig {
        clicks: child.pool,
        partitions: LOG_PARTITIONS,
        rate_per_s: EVENT_RATE_PER_S,
        start_ms: now_ms(),
        ..Default::default()
    };
    let clicks: Vec<Click> = Generator::new(&cfg).map(|c| c.to_click(LOG_SALT)).collect();
    let mut shares: Vec<Vec<&[Click]>> = (0..child.writers).map(|_| Vec::new()).collect();
    for (k, batch) in clicks.chunks(child.batch).enumerate() {
        shares[k % child.writers].push(batch);
    }
    let dir = tempfile::Builder::new().prefix("tally-bench-ingest-log").tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let log = Log::open(dir.path(), LOG_PARTITIONS, LogOptions::default()).map_err(|e| format!("log open: {e}"))?;
    let started = Instant::now();
    let (measure_from, end) = (started + child.warmup, started + child.warmup + child.measure);
    let log = &log;
    let (sampled, written) = std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .filter(|share| !share.is_empty())
            .map(|share| {
                scope.spawn(move || -> Result<(u64, u64, Vec<u32>), String> {
                    let (mut clicks, mut appends, mut latencies) = (0, 0, Vec::new());
                    for batch in share.iter().cycle() {
                        let sent = Instant::now();
                        if sent >= end {
                            break;
                        }
                        log.append(batch).map_err(|e| e.to_string())?;
                        let done = Instant::now();
                        if done >= measure_from && done < end {
                            clicks += batch.len() as u64;
                            appends += 1;
                            latencies.push(done.duration_since(sent).as_micros().min(u128::from(u32::MAX)) as u32);
                        }
                    }
                    Ok((clicks, appends, latencies))
                })
            })
            .collect();
        let pause = |until: Instant| std::thread::sleep(until.saturating_duration_since(Instant::now()));
        pause(measure_from);
        let before = (log.stats(), cpu_time("/proc/self/stat"), machine_busy(), Instant::now());
        pause(end);
        let after = (log.stats(), cpu_time("/proc/self/stat"), machine_busy(), Instant::now());
        let written: Result<Vec<_>, String> = handles.into_iter().map(|h| h.join().map_err(|_| "writer panicked".to_owned())?).collect();
        ((before, after), written)
    });
    let ((before, after), written) = (sampled, written?);
    let clicks: u64 = written.iter().map(|w| w.0).sum();
    let appends: u64 = written.iter().map(|w| w.1).sum();
    let mut latencies: Vec<u32> = written.into_iter().flat_map(|w| w.2).collect();
    latencies.sort_unstable();
    let scale = child.measure.as_secs_f64() / (after.3 - before.3).as_secs_f64().max(1e-9);
    println!(
        "log clicks={clicks} appends={appends} fsyncs={} window_ns={} cpu_ns={} busy_ns={} peak_rss_kb={} p50_us={} p99_us={}",
        after.0.fsyncs - before.0.fsyncs,
        child.measure.as_nanos(),
        after.1.saturating_sub(before.1).as_nanos(),
        after.2.saturating_sub(before.2).mul_f64(scale).as_nanos(),
        peak_rss_kb("/proc/self/status").unwrap_or(0),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    Ok(true)
}

/// What one run of the peer row measured.
struct LogSample {
    clicks: u64,
    appends: u64,
    fsyncs: u64,
    window: Duration,
    cpu: Duration,
    busy: Duration,
    peak_rss_kb: u64,
    p50_us: u32,
    p99_us: u32,
}

impl LogSample {
    fn from_line(line: &str) -> Option<LogSample> {
        let field = |key: &str| -> Option<u64> {
            line.strip_prefix("log ")?.split(' ').find_map(|f| f.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        };
        Some(LogSample {
            clicks: field("clicks")?,
            appends: field("appends")?,
            fsyncs: field("fsyncs")?,
            window: Duration::from_nanos(field("window_ns")?),
            cpu: Duration::from_nanos(field("cpu_ns")?),
            busy: Duration::from_nanos(field("busy_ns")?),
            peak_rss_kb: field("peak_rss_kb")?,
            p50_us: field("p50_us")? as u32,
            p99_us: field("p99_us")? as u32,
        })
    }

    fn clicks_per_s(&self) -> f64 {
        self.clicks as f64 / self.window.as_secs_f64()
    }
}

fn run_log_child(writers: usize, args: &Args) -> Result<LogSample, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let measure_ms = args.seconds * 1_000;
    let mut command = Command::new(exe);
    command.arg("--child-log");
    for value in [writers as u64, BATCH_CLICKS as u64, args.warmup.as_millis() as u64, measure_ms, args.pool] {
        command.arg(value.to_string());
    }
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut guard = Guard::spawn(&mut command, "log child")?;
    let mut stdout = guard.child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let limit = args.warmup + Duration::from_millis(measure_ms) + STARTUP_TIMEOUT;
    let status = guard.wait_for(limit)?.ok_or_else(|| format!("log child did not finish within {} s (killed)", limit.as_secs()))?;
    let stdout = reader.join().map_err(|_| "stdout reader panicked".to_owned())?;
    match (status.success(), stdout.lines().find_map(LogSample::from_line)) {
        (true, Some(sample)) => Ok(sample),
        _ => Err(format!("log child failed ({status}):\n{stdout}")),
    }
}

// ---- parent: the runs, then the table ------------------------------------------------

fn parent(args: &Args) -> Result<bool, String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let bin = tally_binary()?;
    let rows = [
        Row { label: "batches of 1000, JSON array, `tally up`", shape: Shape::BatchJson, mode: Mode::Up, connections: args.connections },
        Row { label: "batches of 1000, NDJSON, `tally up`", shape: Shape::BatchNdjson, mode: Mode::Up, connections: args.connections },
        Row { label: "single clicks, `tally up`", shape: Shape::Single, mode: Mode::Up, connections: args.single_connections },
        Row {
            label: "batches of 1000, JSON array, `tally ingest` (no job)",
            shape: Shape::BatchJson,
            mode: Mode::IngestOnly,
            connections: args.connections,
        },
    ];
    eprintln!(
        "ingest: {} s measured after {:.1} s warm-up, {} run(s) per row, {} core(s){}",
        args.seconds,
        args.warmup.as_secs_f64(),
        args.runs,
        cores,
        if args.smoke { " (smoke)" } else { "" }
    );
    eprintln!("ingest: rendering {} clicks into request bodies ...", args.pool);
    // At least two bodies per connection.
    let pool = Pool::render(args.pool.max((2 * (BATCH_CLICKS * args.connections).max(args.single_connections)) as u64))?;
    let mut http: Vec<Vec<HttpSample>> = rows.iter().map(|_| Vec::new()).collect();
    let mut direct = Vec::new();
    for run in 0..args.runs {
        for (row, samples) in rows.iter().zip(&mut http) {
            eprintln!("ingest: run {}/{}: {} from {} connection(s) ...", run + 1, args.runs, row.label, row.connections);
            samples.push(run_http(&bin, &pool, *row, args)?);
        }
        eprintln!("ingest: run {}/{}: Log::append batches of {BATCH_CLICKS} from {} thread(s) ...", run + 1, args.runs, args.connections);
        direct.push(run_log_child(args.connections, args)?);
    }
    drop(pool);
    Ok(print_report(args, cores, &rows, &http, &direct))
}

/// Prints the table, the ratios and the final lines; returns whether every
/// run's acknowledgements checked out.
fn print_report(args: &Args, cores: usize, rows: &[Row], http: &[Vec<HttpSample>], direct: &[LogSample]) -> bool {
    let mids = |values: Vec<f64>| -> (f64, f64, f64) {
        let (lo, hi) = min_max(&values);
        (median(&values), lo, hi)
    };
    println!();
    println!(
        "tally ingest: HTTP/1.1 over loopback, blocking keep-alive clients; {} s measured after {:.1} s warm-up, {} run(s) per row, fresh data dir per run; {cores} cores",
        args.seconds,
        args.warmup.as_secs_f64(),
        args.runs
    );
    println!(
        "server: target/release/tally --no-auth, `tally up` with the built-in jobs/embedded.toml (-w {}), 8 log partitions; config lifts the",
        args.workers
    );
    println!(
        "per-client rate limit to {LIFTED_RATE} clicks/s (default 1M/s, 2M burst; every bench connection is the one anonymous client) and sets"
    );
    println!("max_inflight_requests to max(256, 2 × connections); all other keys default (max_batch_clicks 10,000, max_body_bytes 8 MiB).");
    println!();
    println!(
        "| configuration | conns | clicks/s median (min–max) | requests/s | ack p50 ms | ack p99 ms | drain s | server CPU-s per 1M clicks | + drain | client CPU-s per 1M clicks | other load cores | peak RSS | check |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut all_ok = true;
    let mut figures = Vec::new();
    for (row, samples) in rows.iter().zip(http) {
        let (mid, lo, hi) = mids(samples.iter().map(HttpSample::clicks_per_s).collect());
        let of = |f: &dyn Fn(&HttpSample) -> f64| median(&samples.iter().map(f).collect::<Vec<_>>());
        let requests = of(&HttpSample::requests_per_s);
        let p50 = of(&|s| f64::from(percentile(&s.load.latencies_us, 0.5)) / 1e3);
        let p99 = of(&|s| f64::from(percentile(&s.load.latencies_us, 0.99)) / 1e3);
        let drain = of(&|s| s.drain.as_secs_f64());
        let capped = if samples.iter().any(|s| s.drain_capped) { "≥" } else { "" };
        let server = of(&|s| s.per_million(s.server_cpu));
        let drained = of(&|s| s.per_million(s.server_cpu + s.drain_cpu));
        let client = of(&|s| s.per_million(s.client_cpu));
        let end_to_end = of(&|s| s.load.window_clicks as f64 / (s.window + s.drain).as_secs_f64());
        let other = of(&HttpSample::other_load);
        let rss = samples.iter().map(|s| s.peak_rss_kb).max().unwrap_or(0);
        let (check, ok) = check_cell(samples);
        all_ok &= ok;
        println!(
            "| {} | {} | {} ({}–{}) | {} | {p50:.2} | {p99:.2} | {capped}{drain:.2} | {server:.2} | {drained:.2} | {client:.2} | {other:.2} | {:.0} MiB | {check} |",
            row.label,
            row.connections,
            human(mid),
            human(lo),
            human(hi),
            human(requests),
            rss as f64 / 1024.0
        );
        figures.push(RowFigures { clicks_per_s: mid, end_to_end, cpu_per_click_us: drained + client });
    }
    let (direct_mid, direct_lo, direct_hi) = mids(direct.iter().map(LogSample::clicks_per_s).collect());
    let of = |f: &dyn Fn(&LogSample) -> f64| median(&direct.iter().map(f).collect::<Vec<_>>());
    let appends = of(&|s| s.appends as f64 / s.window.as_secs_f64());
    let p50 = of(&|s| f64::from(s.p50_us) / 1e3);
    let p99 = of(&|s| f64::from(s.p99_us) / 1e3);
    let cpu = of(&|s| s.cpu.as_secs_f64() * 1e6 / s.clicks.max(1) as f64);
    let other = of(&|s| s.busy.saturating_sub(s.cpu).as_secs_f64() / s.window.as_secs_f64());
    let per_fsync = of(&|s| s.clicks as f64 / s.fsyncs.max(1) as f64);
    let rss = direct.iter().map(|s| s.peak_rss_kb).max().unwrap_or(0);
    println!(
        "| peer: `Log::append` batches of {BATCH_CLICKS}, no HTTP (child process) | {} | {} ({}–{}) | {} | {p50:.2} | {p99:.2} | – | {cpu:.2} | – | – | {other:.2} | {:.0} MiB | {:.0} clicks per fsync |",
        args.connections,
        human(direct_mid),
        human(direct_lo),
        human(direct_hi),
        human(appends),
        rss as f64 / 1024.0,
        per_fsync
    );
    println!();
    println!("clicks/s and requests/s = clicks and requests acknowledged (202) inside the measured interval ÷ its length.");
    println!(
        "ack = request written until its reply is read (the reply comes after the group-commit fsync); for the peer, one append call."
    );
    println!("drain = from the end of the interval until the server is idle (under 10 % of a core): the job catching up with the log.");
    println!("server CPU = user + system time of the tally process (/proc/PID/stat) over the interval, the job's threads included;");
    println!("+ drain adds the CPU of the drain. client CPU = this program's (the load generator). other load = cores kept busy by");
    println!("other processes during the interval (/proc/stat minus server and client CPU); rows with other load well above 0 ran on a");
    println!("shared box and are not comparable. Peak RSS = VmHWM of the tally process (peer: of its child process). check =");
    println!("acknowledged clicks = clicks sent = records in the log after the stop, every run; non-202 answers and connection errors");
    println!("are counted there.");

    let batch = &figures[0];
    let (ndjson, single, no_job) = (figures[1].clicks_per_s, figures[2].clicks_per_s, figures[3].clicks_per_s);
    let ratio = batch.clicks_per_s / direct_mid.max(1e-9);
    let ceiling = cores as f64 / batch.cpu_per_click_us.max(1e-9) * 1e6;
    println!();
    println!("ratio http-batch/direct-append: {ratio:.2}");
    println!("ratio ndjson/json-array: {:.2}", ndjson / batch.clicks_per_s.max(1e-9));
    println!("ratio single/batch (clicks/s): {:.3}", single / batch.clicks_per_s.max(1e-9));
    println!("ratio with-job/without-job (batch): {:.2}", batch.clicks_per_s / no_job.max(1e-9));
    println!(
        "batch JSON via `tally up`: {} clicks/s acknowledged, {} end to end (÷ interval + drain); {:.2} µs of CPU per click (server incl. drain",
        human(batch.clicks_per_s),
        human(batch.end_to_end),
        batch.cpu_per_click_us
    );
    println!(
        "+ load generator) → CPU-bound ceiling on {cores} cores ≈ {}; goal {} end to end: {:.0} % reached",
        human(ceiling),
        human(GOAL_CLICKS_PER_S),
        batch.end_to_end / GOAL_CLICKS_PER_S * 100.0
    );
    println!();
    println!("ingest batch clicks/s: {:.0}", batch.clicks_per_s);
    println!("ingest batch end-to-end clicks/s: {:.0}", batch.end_to_end);
    println!("ingest ndjson clicks/s: {ndjson:.0}");
    println!("ingest single clicks/s: {single:.0}");
    println!("ingest direct-append clicks/s: {direct_mid:.0}");
    println!("ingest ratio http-batch/direct-append: {ratio:.2}");
    if !all_ok {
        eprintln!("ingest: acknowledgements did not check out (see the check column)");
    }
    all_ok
}

/// The headline figures of one HTTP row (medians).
struct RowFigures {
    clicks_per_s: f64,
    /// Clicks ÷ (interval + drain).
    end_to_end: f64,
    /// Server CPU (drain included) plus load-generator CPU, µs per click.
    cpu_per_click_us: f64,
}

/// The check column of a row: `ok`, or what went wrong, plus refused answers.
fn check_cell(samples: &[HttpSample]) -> (String, bool) {
    let problems: Vec<String> = samples.iter().flat_map(HttpSample::problems).collect();
    let mut refused: BTreeMap<u16, u64> = BTreeMap::new();
    let mut io_errors = 0;
    let mut first = None;
    for s in samples {
        for (status, n) in &s.load.refused {
            *refused.entry(*status).or_default() += n;
        }
        io_errors += s.load.io_errors;
        first = first.or(s.load.first_problem.clone());
    }
    let mut cell = if problems.is_empty() { "ok".to_owned() } else { format!("MISMATCH: {}", problems.join("; ")) };
    for (status, n) in &refused {
        cell.push_str(&format!("; {n}× {status}"));
    }
    if io_errors > 0 {
        cell.push_str(&format!("; {io_errors} connection errors"));
    }
    if let Some(first) = first {
        eprintln!("ingest: first problem: {}", first.chars().take(300).collect::<String>());
    }
    (cell, problems.is_empty())
}
