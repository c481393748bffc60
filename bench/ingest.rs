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

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::http_load::*;
use common::{at_most, cpu_time, human, machine_busy, median, min_max, number, peak_rss_kb, percentile, tally_binary};
use tally::event::Click;
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
/// Distinct clicks rendered into request bodies (~130 B each, per format).
const POOL_CLICKS: u64 = 500_000;
const SMOKE_POOL_CLICKS: u64 = 50_000;
/// Salt of the user hash for the direct-append clicks; any value does.
const LOG_SALT: u64 = 0x5eed_5a17;
/// The end-to-end goal for the whole box.
const GOAL_CLICKS_PER_S: f64 = 1e6;
/// Longest wait for the server to go idle after the load.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);
const SMOKE_DRAIN_LIMIT: Duration = Duration::from_secs(10);

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

impl Args {
    fn timing(&self) -> Timing {
        Timing { warmup: self.warmup, measure: Duration::from_secs(self.seconds), drain_limit: self.drain_limit, workers: self.workers }
    }
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
    at_most("--seconds", args.seconds, MAX_SECONDS)?;
    at_most("--runs", args.runs, MAX_RUNS)?;
    for (flag, value) in [("--connections", args.connections), ("--single-connections", args.single_connections)] {
        at_most(flag, value, MAX_CONNECTIONS)?;
    }
    at_most("--workers", args.workers, tally::run::MAX_WORKERS)?;
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
        Row {
            label: "batches of 1000, JSON array, `tally up`",
            shape: Shape::BatchJson,
            mode: Mode::Up,
            connections: args.connections,
            probe: false,
            rate_per_s: None,
        },
        Row {
            label: "batches of 1000, NDJSON, `tally up`",
            shape: Shape::BatchNdjson,
            mode: Mode::Up,
            connections: args.connections,
            probe: false,
            rate_per_s: None,
        },
        Row {
            label: "single clicks, `tally up`",
            shape: Shape::Single,
            mode: Mode::Up,
            connections: args.single_connections,
            probe: false,
            rate_per_s: None,
        },
        Row {
            label: "batches of 1000, JSON array, `tally ingest` (no job)",
            shape: Shape::BatchJson,
            mode: Mode::IngestOnly,
            connections: args.connections,
            probe: false,
            rate_per_s: None,
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
            samples.push(run_http(&bin, &pool, *row, args.timing())?);
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
