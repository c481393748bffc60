//! Driving `tally up` (or `tally ingest`) over HTTP: the server on a fresh
//! data directory, request bodies rendered from the seeded generator, keep-
//! alive load connections, and what a run measured. Shared by the ingest
//! benchmark and the side-by-side comparison.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tally::ingest::client::HttpClient;
use tally::log::{Log, LogOptions};
use tally::sources::generator::{Generator, GeneratorConfig};

use super::{cpu_time, machine_busy, peak_rss_kb};

/// Clicks per batch request and per direct append.
pub const BATCH_CLICKS: usize = 1_000;
/// Event-time rate of the rendered clicks: the product's peak load.
pub const EVENT_RATE_PER_S: u64 = 1_000_000;
/// Partitions of the log (the built-in job's and `tally ingest`'s default).
pub const LOG_PARTITIONS: u32 = 8;
/// The per-client rate limit the bench sets: every connection counts as the
/// one anonymous client, whose default (1M clicks/s) would cap the total.
pub const LIFTED_RATE: u64 = 1_000_000_000;
/// The server's default `max_inflight_requests`.
pub const DEFAULT_MAX_INFLIGHT: usize = 256;
/// How long the server may take to print its `ingest:` line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIGTERMed server may take to exit (its shutdown grace is 10 s).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause after a refused request or a connection error.
pub const ERROR_PAUSE: Duration = Duration::from_millis(10);
/// Server stderr lines kept for error messages.
pub const STDERR_TAIL_LINES: usize = 20;
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// After the load stops, the server counts as idle once it uses under
/// `IDLE_SHARE` of a core over one `DRAIN_PROBE`.
pub const DRAIN_PROBE: Duration = Duration::from_millis(250);
pub const IDLE_SHARE: f64 = 0.1;
pub const JSON: &str = "application/json";
pub const NDJSON: &str = "application/x-ndjson";

/// Set by SIGINT, SIGTERM or SIGHUP: every wait stops, children are killed.
pub static INTERRUPTED: LazyLock<Arc<AtomicBool>> = LazyLock::new(|| Arc::new(AtomicBool::new(false)));

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

pub fn register_signals() -> Result<(), String> {
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register(signal, Arc::clone(&INTERRUPTED)).map_err(|e| format!("signal handler: {e}"))?;
    }
    Ok(())
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// Sleeps until `deadline`; an error once interrupted.
pub fn sleep_until(deadline: Instant) -> Result<(), String> {
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
pub fn send_signal(pid: u32, signal: i32) {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    // SAFETY: kill(2) only takes integers; a failure (process gone) is harmless.
    unsafe {
        kill(pid as i32, signal);
    }
}

pub const SIGTERM: i32 = 15;

/// Makes the kernel send SIGTERM to the command's process when this one
/// exits, however it exits (even by SIGKILL), so no server outlives the bench.
pub fn die_with_parent(command: &mut Command) {
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
pub struct Guard {
    pub child: Child,
    pub reaped: bool,
}

impl Guard {
    pub fn spawn(command: &mut Command, what: &str) -> Result<Guard, String> {
        die_with_parent(command);
        let child = command.spawn().map_err(|e| format!("{what}: cannot start: {e}"))?;
        Ok(Guard { child, reaped: false })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>, String> {
        let status = self.child.try_wait().map_err(|e| format!("wait: {e}"))?;
        self.reaped |= status.is_some();
        Ok(status)
    }

    /// Waits up to `limit` for the child to exit; an error once interrupted.
    pub fn wait_for(&mut self, limit: Duration) -> Result<Option<std::process::ExitStatus>, String> {
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
pub enum Mode {
    /// `tally up`: ingest plus the built-in job in one process.
    Up,
    /// `tally ingest`: the API and the log only.
    IngestOnly,
}

/// A running server on a fresh data directory; killed and removed on drop.
pub struct Server {
    pub guard: Guard,
    pub addr: SocketAddr,
    pub stderr_tail: Arc<Mutex<VecDeque<String>>>,
    pub work: tempfile::TempDir,
}

impl Server {
    /// Starts `bin` in `mode`, with `extra` arguments after the bench's own
    /// (e.g. `--job FILE --catalog FILE` of `tally up`).
    pub fn start(bin: &Path, mode: Mode, workers: usize, max_inflight: usize, extra: &[OsString]) -> Result<Server, String> {
        let work = tempfile::Builder::new().prefix("tally-bench-ingest").tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let config = work.path().join("ingest.toml");
        let text = format!(
            "# Written by bench/ingest.rs: the rate limits of clients and addresses lifted\n\
             # (all bench connections are one anonymous client from one address), room for\n\
             # every connection.\n\
             max_inflight_requests = {max_inflight}\nmax_connections_per_address = {per_address}\n\n[rate_limit]\nclicks_per_s = {LIFTED_RATE}\nburst_clicks = {LIFTED_RATE}\n\
             requests_per_s_per_address = {LIFTED_RATE}\nburst_requests_per_address = {LIFTED_RATE}\n\
             requests_per_s_per_client = {LIFTED_RATE}\nburst_requests_per_client = {LIFTED_RATE}\n",
            per_address = tally::http::DEFAULT_MAX_CONNECTIONS
        );
        std::fs::write(&config, text).map_err(|e| format!("write {}: {e}", config.display()))?;
        let mut command = Command::new(bin);
        command.arg("--data-dir").arg(work.path().join("data"));
        match mode {
            Mode::Up => command.args(["up", "-w", &workers.to_string()]),
            Mode::IngestOnly => command.arg("ingest"),
        };
        command.args(["--no-auth", "--addr", "127.0.0.1:0"]).arg("--config").arg(&config).args(extra);
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

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    pub fn tail(&self) -> String {
        let tail = self.stderr_tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.iter().map(|line| format!("  {line}\n")).collect()
    }

    /// Errors if the server has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.guard.try_wait()? {
            None => Ok(()),
            Some(status) => Err(format!("tally exited during the run ({status}):\n{}", self.tail())),
        }
    }

    /// SIGTERM, then waits for the exit; SIGKILL after [`STOP_TIMEOUT`].
    pub fn stop(&mut self) -> Result<(), String> {
        self.check_alive()?;
        send_signal(self.pid(), SIGTERM);
        match self.guard.wait_for(STOP_TIMEOUT)? {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(format!("tally failed on SIGTERM ({status}):\n{}", self.tail())),
            None => Err(format!("tally did not exit within {} s of SIGTERM (killed):\n{}", STOP_TIMEOUT.as_secs(), self.tail())),
        }
    }

    /// Records in the stopped server's log.
    pub fn log_records(&self) -> Result<u64, String> {
        let dir = self.work.path().join("data").join("log");
        let log = Log::open(&dir, LOG_PARTITIONS, LogOptions::default()).map_err(|e| format!("log {}: {e}", dir.display()))?;
        let (end, start) = (log.end_offsets(), log.start_offsets());
        Ok(end.iter().sum::<u64>() - start.iter().sum::<u64>())
    }
}

/// `ADDR` of the server's `ingest: http://ADDR/v1/clicks …` line.
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.strip_prefix("ingest: http://")?;
    rest.split('/').next()?.parse().ok()
}

// ---- request bodies -----------------------------------------------------------------

/// The generated clicks as NDJSON lines, with where each line's timestamp
/// and request id are.
pub struct Pool {
    pub text: Vec<u8>,
    pub lines: Vec<Line>,
    /// Event time of the first click (the wall clock when rendered).
    pub start_ms: u64,
}

#[derive(Clone, Copy)]
pub struct Line {
    pub start: usize,
    /// Without the newline.
    pub len: usize,
    pub ts_at: usize,
    pub id_at: usize,
    pub ts: u64,
}

/// Digits of a millisecond timestamp until the year 2286.
pub const TS_DIGITS: usize = 13;
/// Hex digits of a request id that a later pass replaces (the first group).
pub const ID_PATCH_DIGITS: usize = 8;

impl Pool {
    /// `clicks` at [`EVENT_RATE_PER_S`] of event time.
    pub fn render(clicks: u64) -> Result<Pool, String> {
        Pool::render_at(clicks, EVENT_RATE_PER_S)
    }

    /// `clicks` at `rate_per_s` of event time: sent paced at that rate, their
    /// timestamps keep up with the wall clock.
    pub fn render_at(clicks: u64, rate_per_s: u64) -> Result<Pool, String> {
        let cfg = GeneratorConfig { clicks, partitions: LOG_PARTITIONS, rate_per_s, start_ms: now_ms(), ..Default::default() };
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

    pub fn line(&self, line: &Line) -> &[u8] {
        &self.text[line.start..line.start + line.len]
    }
}

/// How clicks are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `POST /v1/clicks/batch`, a JSON array.
    BatchJson,
    /// `POST /v1/clicks/batch`, NDJSON.
    BatchNdjson,
    /// `POST /v1/clicks`, one object.
    Single,
}

impl Shape {
    pub fn path(self) -> &'static str {
        match self {
            Shape::Single => "/v1/clicks",
            _ => "/v1/clicks/batch",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Shape::BatchNdjson => NDJSON,
            _ => JSON,
        }
    }

    pub fn clicks_per_request(self) -> usize {
        match self {
            Shape::Single => 1,
            _ => BATCH_CLICKS,
        }
    }
}

/// One request body and where to patch it for a later pass.
pub struct Body {
    pub bytes: Vec<u8>,
    pub clicks: u64,
    /// `(timestamp position, request id position, original timestamp)`.
    pub patches: Vec<(u32, u32, u64)>,
    /// The pass the body is patched for.
    pub pass: u64,
}

impl Body {
    /// Moves the timestamps `shift_ms` later than rendered and, after the
    /// first pass, replaces the first group of each request id by a per-pass
    /// value: each pass sends new clicks stamped near now.
    pub fn patch(&mut self, pass: u64, shift_ms: u64) {
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
pub fn bodies(pool: &Pool, shape: Shape, connections: usize) -> Vec<Vec<Body>> {
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
pub struct Load {
    /// Requests acknowledged (202) inside the measured interval, and their clicks.
    pub window_requests: u64,
    pub window_clicks: u64,
    /// Ack latency of those requests, µs.
    pub latencies_us: Vec<u32>,
    /// Over the whole run: clicks in requests answered 202, and the sum of
    /// their `accepted` and `rejected` counts.
    pub acked_sent: u64,
    pub accepted: u64,
    pub rejected: u64,
    /// Answers other than 202, by status.
    pub refused: BTreeMap<u16, u64>,
    pub io_errors: u64,
    pub first_problem: Option<String>,
}

impl Load {
    pub fn merge(&mut self, other: Load) {
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
pub struct Ack {
    pub accepted: u64,
    pub rejected: Vec<serde::de::IgnoredAny>,
}

/// Sends `bodies` round and round on one connection until `end`; counts
/// what completes in `[measure_from, end)`.
pub fn load(addr: SocketAddr, shape: Shape, bodies: Vec<Body>, start_ms: u64, window: (Instant, Instant), every: Option<Duration>) -> Load {
    load_until(addr, shape, bodies, start_ms, window, every, &AtomicBool::new(false))
}

/// [`load`] that also stops once `stop` is set: for a load whose end is
/// not known when it starts.
pub fn load_until(
    addr: SocketAddr,
    shape: Shape,
    mut bodies: Vec<Body>,
    start_ms: u64,
    (measure_from, end): (Instant, Instant),
    every: Option<Duration>,
    stop: &AtomicBool,
) -> Load {
    let mut client = HttpClient::new(addr, None);
    let mut out = Load::default();
    let (mut next, mut pass, mut shift_ms) = (0, 0, 0);
    let mut slot = Instant::now();
    while !bodies.is_empty() && Instant::now() < end && !interrupted() && !stop.load(Ordering::Relaxed) {
        if let Some(every) = every {
            // Paced: one request per slot, never catching up a backlog of
            // slots in a burst.
            std::thread::sleep(slot.saturating_duration_since(Instant::now()));
            slot = slot.max(Instant::now() - every) + every;
        }
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
pub struct Row {
    pub label: &'static str,
    pub shape: Shape,
    pub mode: Mode,
    pub connections: usize,
    /// Also measure freshness with probe clicks (`tally up` only).
    pub probe: bool,
    /// Clicks per second over all connections; `None`: each connection
    /// sends its next request as soon as the last is answered.
    pub rate_per_s: Option<u64>,
}

/// How long a run sends, and what it runs the server with.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub warmup: Duration,
    pub measure: Duration,
    /// Longest wait for the server to go idle after the load.
    pub drain_limit: Duration,
    /// Job workers of `tally up`.
    pub workers: usize,
}

// ---- freshness probe ---------------------------------------------------------------

/// The ad of the probe clicks; not in any catalog, it counts under
/// campaign `unknown` and never mixes with the load's ads.
pub const PROBE_AD: &str = "ad-probe";
/// One probe click this often, on a connection of its own.
const PROBE_EVERY: Duration = Duration::from_millis(50);
/// The query API is read this often.
const PROBE_POLL: Duration = Duration::from_millis(20);
/// How long after the load the poller still waits for probes and final rows.
const PROBE_GRACE: Duration = Duration::from_secs(20);

/// When the probe clicks became visible.
#[derive(Default)]
pub struct Freshness {
    /// Probe clicks acknowledged.
    pub probes: u64,
    /// Acknowledged probes never seen in a committed row.
    pub unseen: u64,
    /// Per probe click: from its `202` to the first read of the query API
    /// whose committed row of its 1m window counts it, ms, sorted.
    pub visible_ms: Vec<u32>,
    /// Per 1m window of the probe that ended during the run: from the
    /// window's end (wall clock; probes are stamped with it) to the first
    /// read that shows its row `final`, ms, sorted.
    pub final_ms: Vec<u32>,
}

/// Probe clicks acknowledged so far: (acknowledged at, 1m window start), in
/// sending order.
type Acks = Arc<Mutex<Vec<(Instant, u64)>>>;

/// Sends a probe click every [`PROBE_EVERY`] until `end`, stamped with the
/// wall clock, and records when each is acknowledged.
fn probe_clicks(addr: SocketAddr, end: Instant, acks: &Acks) {
    let mut client = HttpClient::new(addr, None);
    let mut next = Instant::now();
    for n in 0u64.. {
        if next >= end || interrupted() {
            return;
        }
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += PROBE_EVERY;
        let ts = now_ms();
        let body = format!(
            "{{\"ad_id\":\"{PROBE_AD}\",\"timestamp\":{ts},\"user_id\":\"probe\",\"request_id\":\"{:08x}-0000-4000-8000-{:012x}\"}}",
            tally::event::mix64(ts) as u32,
            n
        );
        if let Ok(reply) = client.post("/v1/clicks", JSON, body.as_bytes()) {
            if reply.status == 202 {
                acks.lock().unwrap_or_else(|e| e.into_inner()).push((Instant::now(), ts - ts % 60_000));
            }
        }
    }
}

/// Reads the probe ad's committed 1m rows every [`PROBE_POLL`] until every
/// acknowledged probe is counted (once `sending` is over) or `deadline`.
fn poll_visibility(addr: SocketAddr, from_ms: u64, sending: Instant, deadline: Instant, acks: &Acks) -> Freshness {
    let mut client = HttpClient::new(addr, None);
    let path = format!("/v1/ads/{PROBE_AD}/clicks?window=1m&from={from_ms}&to={}", from_ms + 3_600_000);
    // Per window: probes seen counted so far, and when it was seen final.
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
    let mut visible: Vec<Option<Instant>> = Vec::new();
    let mut finals: BTreeMap<u64, u64> = BTreeMap::new();
    loop {
        let now = Instant::now();
        let wall = now_ms();
        let rows = client.get(&path).ok().filter(|r| r.status == 200).map(|r| r.json());
        for row in rows.as_ref().and_then(|v| v["rows"].as_array()).into_iter().flatten() {
            let (Some(start), Some(clicks)) = (row["window_start"].as_u64(), row["clicks"].as_u64()) else { continue };
            seen.insert(start, clicks);
            if row["status"] != "partial" {
                finals.entry(start).or_insert(wall);
            }
        }
        let acks = acks.lock().unwrap_or_else(|e| e.into_inner()).clone();
        visible.resize(acks.len(), None);
        let mut rank: BTreeMap<u64, u64> = BTreeMap::new();
        for ((_, window), at) in acks.iter().zip(visible.iter_mut()) {
            let r = rank.entry(*window).or_default();
            *r += 1;
            if at.is_none() && seen.get(window).is_some_and(|&clicks| clicks >= *r) {
                *at = Some(now);
            }
        }
        let done = now >= sending && visible.iter().all(Option::is_some);
        if done || now >= deadline || interrupted() {
            let ended = |window: &u64| window + 60_000 <= acks.last().map_or(0, |(_, w)| *w);
            let mut out = Freshness { probes: acks.len() as u64, ..Freshness::default() };
            for ((acked, _), at) in acks.iter().zip(&visible) {
                match at {
                    Some(at) => out.visible_ms.push(at.saturating_duration_since(*acked).as_millis() as u32),
                    None => out.unseen += 1,
                }
            }
            for (window, wall) in finals.iter().filter(|(w, _)| ended(w)) {
                out.final_ms.push(wall.saturating_sub(window + 60_000) as u32);
            }
            out.visible_ms.sort_unstable();
            out.final_ms.sort_unstable();
            return out;
        }
        std::thread::sleep(PROBE_POLL.saturating_sub(now.elapsed()));
    }
}

/// What one run of an HTTP row measured.
pub struct HttpSample {
    pub window: Duration,
    pub load: Load,
    pub server_cpu: Duration,
    /// From the end of the interval until the server went idle (the job
    /// catching up with the log), and the server's CPU time meanwhile.
    pub drain: Duration,
    pub drain_cpu: Duration,
    /// Whether the drain hit its limit before the server went idle.
    pub drain_capped: bool,
    pub client_cpu: Duration,
    pub busy: Duration,
    pub peak_rss_kb: u64,
    pub log_records: u64,
    /// With `Row::probe`.
    pub freshness: Option<Freshness>,
}

impl HttpSample {
    pub fn clicks_per_s(&self) -> f64 {
        self.load.window_clicks as f64 / self.window.as_secs_f64()
    }

    pub fn requests_per_s(&self) -> f64 {
        self.load.window_requests as f64 / self.window.as_secs_f64()
    }

    /// CPU seconds per 1M clicks.
    pub fn per_million(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / self.load.window_clicks.max(1) as f64
    }

    /// Cores other processes kept busy: machine-wide busy time minus the
    /// server's and this program's, ÷ the interval.
    pub fn other_load(&self) -> f64 {
        self.busy.saturating_sub(self.server_cpu + self.client_cpu).as_secs_f64() / self.window.as_secs_f64()
    }

    /// What is wrong with the run's acknowledgements, if anything.
    pub fn problems(&self) -> Vec<String> {
        let l = &self.load;
        let mut problems = Vec::new();
        if l.accepted != l.acked_sent || l.rejected > 0 {
            problems
                .push(format!("{} clicks sent in acknowledged requests, {} accepted, {} rejected", l.acked_sent, l.accepted, l.rejected));
        }
        let probes = self.freshness.as_ref().map_or(0, |f| f.probes);
        if self.log_records != l.accepted + probes {
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
pub fn drain(stat: &str, end: Instant, limit: Duration) -> Result<(Duration, Duration, bool), String> {
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
pub fn sample_usage(server_stat: &str, at: Instant) -> Result<(Duration, Duration, Duration, Instant), String> {
    sleep_until(at)?;
    Ok((cpu_time(server_stat), cpu_time("/proc/self/stat"), machine_busy(), Instant::now()))
}

/// One run of `row`: a fresh server, the load (and the probe), the drain,
/// the stop, and the check of the log.
pub fn run_http(bin: &Path, pool: &Pool, row: Row, timing: Timing) -> Result<HttpSample, String> {
    let bodies = bodies(pool, row.shape, row.connections);
    let max_inflight = DEFAULT_MAX_INFLIGHT.max(2 * row.connections);
    let mut server = Server::start(bin, row.mode, timing.workers, max_inflight, &[])?;
    let stat = format!("/proc/{}/stat", server.pid());
    let started = Instant::now();
    let measure_from = started + timing.warmup;
    let end = measure_from + timing.measure;
    let (addr, shape, start_ms) = (server.addr, row.shape, pool.start_ms);
    let acks = Acks::default();
    // The poller is not scoped: it may wait for the last probes while the
    // server drains, and must not hold up the drain's first sample.
    let poller = row.probe.then(|| {
        let (acks, from_ms) = (Arc::clone(&acks), now_ms());
        std::thread::spawn(move || poll_visibility(addr, from_ms, end, end + PROBE_GRACE, &acks))
    });
    let sampled = std::thread::scope(|scope| {
        let every = row
            .rate_per_s
            .map(|rate| Duration::from_secs_f64(shape.clicks_per_request() as f64 * row.connections as f64 / rate.max(1) as f64));
        let handles: Vec<_> =
            bodies.into_iter().map(|b| scope.spawn(move || load(addr, shape, b, start_ms, (measure_from, end), every))).collect();
        if row.probe {
            scope.spawn(|| probe_clicks(addr, end, &acks));
        }
        let sampled = sample_usage(&stat, measure_from).and_then(|before| Ok((before, sample_usage(&stat, end)?)));
        let mut load = Load::default();
        for handle in handles {
            load.merge(handle.join().map_err(|_| "load thread panicked".to_owned())?);
        }
        sampled.map(|s| (s, load))
    });
    let ((before, after), mut load) = sampled?;
    server.check_alive()?;
    let (drain, drain_cpu, drain_capped) = drain(&stat, end, timing.drain_limit)?;
    let freshness = match poller {
        Some(poller) => Some(poller.join().map_err(|_| "probe poller panicked".to_owned())?),
        None => None,
    };
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
        freshness,
    })
}
