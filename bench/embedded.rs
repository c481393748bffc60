//! Embedded-mode benchmark: the log's group commit, the cost of epoch
//! commits, and recovery after a kill.
//!
//! A program, not a timed test (see `bench/README.md`): it prints a table and
//! never asserts on a timing. Three measurements:
//!
//! 1. **Log append with group commit.** N writer threads (1, 4, 16) append
//!    batches of B clicks (1 and 1000) to a fresh `tally::log::Log` in a
//!    temporary directory. Each (N, B) runs in a child process (this program
//!    re-invoked with the hidden `--child-log N B CLICKS`) so that its CPU
//!    time and peak RSS (`VmHWM`) are its own. Figures come from
//!    `Log::stats()`: clicks, appends and fsyncs per second.
//! 2. **Job throughput, epoch commits on vs off.** The real `tally` binary
//!    imports M generated clicks into a data directory once; each run then
//!    gets a fresh copy of its log and salt (not the store) and runs
//!    `jobs/embedded.toml --bounded -w 2` with the store sink (every epoch
//!    committed: rows, state, offsets) or with `--output FILE` (the file
//!    sink: nothing committed). Clicks/s is M ÷ the process's wall time.
//! 3. **Recovery after a kill.** The bounded store run is SIGKILLed after
//!    ~60 % of the commits-on median time; the restart is timed until it
//!    prints `resuming from epoch` (stderr) and until it exits.
//!
//! Usage: `cargo bench --bench embedded -- [--clicks M] [--runs R] [--smoke]`

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{at_most, cpu_time, human, median, min_max, number, peak_rss_kb, tally_binary};
use tally::log::{Log, LogOptions};
use tally::sources::generator::{Generator, GeneratorConfig};

const DEFAULT_CLICKS: u64 = 2_000_000;
const SMOKE_CLICKS: u64 = 100_000;
const DEFAULT_RUNS: usize = 3;
/// Largest accepted `--clicks` (the job input is written to disk three times).
const MAX_CLICKS: u64 = 50_000_000;
const MAX_RUNS: usize = 100;
/// Workers of the job runs, as in the README's example.
const JOB_WORKERS: usize = 2;
/// Partitions of the log (the default job's).
const LOG_PARTITIONS: u32 = 8;
/// Writer threads and batch sizes of the log measurement.
const LOG_WRITERS: [usize; 3] = [1, 4, 16];
const LOG_BATCHES: [usize; 2] = [1, 1000];
/// Clicks appended per log configuration: one fsync-bound append per click
/// at B = 1 needs far fewer to take a few seconds.
const LOG_CLICKS_BATCHED: u64 = 1_000_000;
const LOG_CLICKS_SINGLE: u64 = 20_000;
const SMOKE_LOG_CLICKS_BATCHED: u64 = 100_000;
const SMOKE_LOG_CLICKS_SINGLE: u64 = 2_000;
/// Salt of the user hash for generated log clicks; any value does.
const LOG_SALT: u64 = 0x5eed_5a17;
/// The recovery run is killed after this share of the commits-on median.
const KILL_AT_SHARE: f64 = 0.6;
/// How many times a recovery run that beat its kill is retried, killed
/// twice as early each time.
const MAX_EARLIER_KILLS: usize = 4;
/// How often a running child's `/proc` figures are sampled.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// The line a restarted store run prints on stderr once it has recovered.
const RESUMING_LINE: &str = "resuming from epoch";

/// Command-line settings.
#[derive(Debug)]
struct Args {
    clicks: u64,
    runs: usize,
    smoke: bool,
    /// Hidden: `--child-log WRITERS BATCH CLICKS` runs one log configuration.
    child_log: Option<(usize, usize, u64)>,
}

fn parse_args() -> Result<Args, String> {
    let (mut clicks, mut runs, mut smoke, mut child_log) = (None, None, false, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--clicks" => clicks = Some(number(&flag, it.next())?),
            "--runs" => runs = Some(number(&flag, it.next())? as usize),
            "--smoke" => smoke = true,
            "--child-log" => {
                let writers = number(&flag, it.next())? as usize;
                let batch = number(&flag, it.next())? as usize;
                child_log = Some((writers.max(1), batch.max(1), number(&flag, it.next())?));
            }
            // `cargo bench` passes `--bench` to harness-less benches.
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?}; usage: embedded [--clicks M] [--runs R] [--smoke]")),
        }
    }
    let args = Args {
        clicks: clicks.unwrap_or(if smoke { SMOKE_CLICKS } else { DEFAULT_CLICKS }),
        runs: runs.unwrap_or(if smoke { 1 } else { DEFAULT_RUNS }),
        smoke,
        child_log,
    };
    at_most("--clicks", args.clicks, MAX_CLICKS)?;
    at_most("--runs", args.runs, MAX_RUNS)?;
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("embedded: {message}");
            std::process::exit(2);
        }
    };
    let result = match args.child_log {
        Some((writers, batch, clicks)) => child_log(writers, batch, clicks),
        None => parent(&args),
    };
    if let Err(message) = result {
        eprintln!("embedded: {message}");
        std::process::exit(1);
    }
}

// ---- 1. log append with group commit (child process) ------------------------

/// Appends `clicks` generated clicks from `writers` threads in batches of
/// `batch` to a fresh log and prints one `log …` line.
fn child_log(writers: usize, batch: usize, clicks: u64) -> Result<(), String> {
    let cfg = GeneratorConfig { clicks, partitions: LOG_PARTITIONS, ..Default::default() };
    let all: Vec<_> = Generator::new(&cfg).map(|c| c.to_click(LOG_SALT)).collect();
    let per_writer = all.len().div_ceil(writers);
    let shares: Vec<Vec<_>> = all.chunks(per_writer).map(|c| c.to_vec()).collect();
    drop(all);
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let log = Arc::new(Log::open(dir.path(), LOG_PARTITIONS, LogOptions::default()).map_err(|e| format!("log open: {e}"))?);
    let before = log.stats();
    let cpu_before = cpu_time("/proc/self/stat");
    let started = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .iter()
            .map(|share| {
                let log = Arc::clone(&log);
                scope.spawn(move || share.chunks(batch).try_for_each(|b| log.append(b).map(drop).map_err(|e| e.to_string())))
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().map_err(|_| "writer panicked".to_owned())?)
    })?;
    let wall = started.elapsed();
    let cpu = cpu_time("/proc/self/stat").saturating_sub(cpu_before);
    let stats = log.stats();
    println!(
        "log records={} appends={} fsyncs={} batches={} wall_ns={} cpu_ns={} peak_rss_kb={}",
        stats.records - before.records,
        stats.appends - before.appends,
        stats.fsyncs - before.fsyncs,
        stats.batches - before.batches,
        wall.as_nanos(),
        cpu.as_nanos(),
        peak_rss_kb("/proc/self/status").unwrap_or(0)
    );
    Ok(())
}

/// What one log configuration measured.
struct LogSample {
    writers: usize,
    batch: usize,
    records: u64,
    appends: u64,
    fsyncs: u64,
    wall: Duration,
    cpu: Duration,
    peak_rss_kb: u64,
}

impl LogSample {
    fn from_line(writers: usize, batch: usize, line: &str) -> Option<LogSample> {
        let field = |key: &str| -> Option<u64> {
            line.strip_prefix("log ")?.split(' ').find_map(|f| f.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        };
        Some(LogSample {
            writers,
            batch,
            records: field("records")?,
            appends: field("appends")?,
            fsyncs: field("fsyncs")?,
            wall: Duration::from_nanos(field("wall_ns")?),
            cpu: Duration::from_nanos(field("cpu_ns")?),
            peak_rss_kb: field("peak_rss_kb")?,
        })
    }

    fn per_s(&self, n: u64) -> f64 {
        n as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

fn run_log_child(writers: usize, batch: usize, clicks: u64) -> Result<LogSample, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let output = Command::new(exe)
        .args(["--child-log", &writers.to_string(), &batch.to_string(), &clicks.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("log child: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    match (output.status.success(), stdout.lines().find_map(|l| LogSample::from_line(writers, batch, l))) {
        (true, Some(sample)) => Ok(sample),
        _ => Err(format!("log child {writers}×{batch} failed ({}):\n{stdout}", output.status)),
    }
}

// ---- 2. and 3. the tally binary on a data directory -------------------------

/// The prepared input: a data directory with the imported log, and the catalog.
struct Prepared {
    bin: PathBuf,
    job: PathBuf,
    work: tempfile::TempDir,
    source: PathBuf,
    catalog: PathBuf,
    clicks: u64,
}

impl Prepared {
    fn new(clicks: u64) -> Result<Prepared, String> {
        let bin = tally_binary()?;
        let job = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs").join("embedded.toml");
        let work = tempfile::Builder::new().prefix("tally-bench-embedded").tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let (input, catalog, source) = (work.path().join("clicks.ndjson"), work.path().join("ads.csv"), work.path().join("source"));
        let clicks_arg = clicks.to_string();
        run_quiet(Command::new(&bin).args(["gen", "--clicks", &clicks_arg]).arg("--output").arg(&input).arg("--catalog").arg(&catalog))?;
        run_quiet(Command::new(&bin).arg("--data-dir").arg(&source).args(["log", "import"]).arg(&input))?;
        std::fs::remove_file(&input).map_err(|e| format!("remove {}: {e}", input.display()))?;
        Ok(Prepared { bin, job, work, source, catalog, clicks })
    }

    /// A fresh data directory holding a copy of the source's log and salt.
    fn fresh_data_dir(&self, name: &str) -> Result<PathBuf, String> {
        let dir = self.work.path().join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| format!("remove {}: {e}", dir.display()))?;
        }
        copy_dir(&self.source.join("log"), &dir.join("log"))?;
        std::fs::copy(self.source.join("salt"), dir.join("salt")).map_err(|e| format!("copy salt: {e}"))?;
        Ok(dir)
    }

    /// `tally --data-dir D run jobs/embedded.toml --bounded -w 2 --catalog C
    /// [--output D/rows.ndjson]`.
    fn run_command(&self, data_dir: &Path, commits: bool) -> Command {
        let mut command = Command::new(&self.bin);
        command.arg("--data-dir").arg(data_dir).arg("run").arg(&self.job);
        command.args(["--bounded", "-w", &JOB_WORKERS.to_string()]).arg("--catalog").arg(&self.catalog);
        if !commits {
            command.arg("--output").arg(data_dir.join("rows.ndjson"));
        }
        command.stdin(Stdio::null()).stdout(Stdio::null());
        command
    }
}

fn run_quiet(command: &mut Command) -> Result<(), String> {
    let output = command.stdin(Stdio::null()).output().map_err(|e| format!("{command:?}: {e}"))?;
    if !output.status.success() {
        return Err(format!("{command:?} failed ({}):\n{}", output.status, String::from_utf8_lossy(&output.stderr)));
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("create {}: {e}", to.display()))?;
    for entry in std::fs::read_dir(from).map_err(|e| format!("read {}: {e}", from.display()))? {
        let entry = entry.map_err(|e| format!("read {}: {e}", from.display()))?;
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(|e| format!("copy {}: {e}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// What a `tally` child used, sampled from `/proc` while it ran.
#[derive(Clone, Copy, Debug, Default)]
struct Usage {
    cpu: Duration,
    peak_rss_kb: u64,
}

/// Waits for `child` to exit, sampling its `/proc` figures until it is a
/// zombie (whose `stat` still holds the CPU time of all its threads), then
/// reaps it. Returns the exit status and the usage.
fn wait_with_usage(child: &mut Child) -> Result<(std::process::ExitStatus, Usage), String> {
    let (stat, status_path) = (format!("/proc/{}/stat", child.id()), format!("/proc/{}/status", child.id()));
    let mut usage = Usage::default();
    loop {
        let zombie = std::fs::read_to_string(&stat).map_or(true, |s| s.rsplit_once(") ").is_none_or(|(_, rest)| rest.starts_with('Z')));
        usage.cpu = usage.cpu.max(cpu_time(&stat));
        usage.peak_rss_kb = usage.peak_rss_kb.max(peak_rss_kb(&status_path).unwrap_or(0));
        if zombie {
            let status = child.wait().map_err(|e| format!("wait: {e}"))?;
            return Ok((status, usage));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// One timed job run.
#[derive(Clone, Copy, Debug)]
struct JobSample {
    wall: Duration,
    usage: Usage,
}

fn time_job(prepared: &Prepared, commits: bool, run: usize) -> Result<JobSample, String> {
    let dir = prepared.fresh_data_dir(&format!("{}-{run}", if commits { "on" } else { "off" }))?;
    let mut command = prepared.run_command(&dir, commits);
    let started = Instant::now();
    let mut child = command.stderr(Stdio::null()).spawn().map_err(|e| format!("tally run: {e}"))?;
    let (status, usage) = wait_with_usage(&mut child)?;
    let wall = started.elapsed();
    if !status.success() {
        return Err(format!("tally run (commits {}) failed ({status})", if commits { "on" } else { "off" }));
    }
    std::fs::remove_dir_all(&dir).map_err(|e| format!("remove {}: {e}", dir.display()))?;
    Ok(JobSample { wall, usage })
}

/// One kill-and-restart.
#[derive(Clone, Copy, Debug)]
struct RecoverySample {
    killed_after: Duration,
    /// Restart until its `resuming from epoch` line; `None` if it never
    /// printed one (killed before the first commit).
    to_resume: Option<Duration>,
    to_exit: Duration,
}

/// `None` if the run finished before `kill_after`.
fn time_recovery(prepared: &Prepared, kill_after: Duration, run: usize) -> Result<Option<RecoverySample>, String> {
    let dir = prepared.fresh_data_dir(&format!("recovery-{run}"))?;
    let mut victim = prepared.run_command(&dir, true).stderr(Stdio::null()).spawn().map_err(|e| format!("tally run: {e}"))?;
    let started = Instant::now();
    while started.elapsed() < kill_after {
        if victim.try_wait().map_err(|e| format!("wait: {e}"))?.is_some() {
            std::fs::remove_dir_all(&dir).map_err(|e| format!("remove {}: {e}", dir.display()))?;
            return Ok(None);
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    victim.kill().map_err(|e| format!("kill: {e}"))?; // SIGKILL
    victim.wait().map_err(|e| format!("wait: {e}"))?;
    let killed_after = started.elapsed();

    let started = Instant::now();
    let mut restart = prepared.run_command(&dir, true).stderr(Stdio::piped()).spawn().map_err(|e| format!("tally run: {e}"))?;
    let stderr = restart.stderr.take().expect("stderr is piped");
    let watcher = std::thread::spawn(move || {
        let mut resumed = None;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if resumed.is_none() && line.contains(RESUMING_LINE) {
                resumed = Some(started.elapsed());
            }
        }
        resumed
    });
    let status = restart.wait().map_err(|e| format!("wait: {e}"))?;
    let to_exit = started.elapsed();
    let to_resume = watcher.join().map_err(|_| "stderr reader panicked".to_owned())?;
    if !status.success() {
        return Err(format!("restarted run failed ({status})"));
    }
    std::fs::remove_dir_all(&dir).map_err(|e| format!("remove {}: {e}", dir.display()))?;
    Ok(Some(RecoverySample { killed_after, to_resume, to_exit }))
}

// ---- /proc --------------------------------------------------------------------

// ---- parent: the measurements, then the tables --------------------------------

fn parent(args: &Args) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "embedded: {} clicks for the job, {} run(s), {} core(s){}",
        args.clicks,
        args.runs,
        cores,
        if args.smoke { " (smoke)" } else { "" }
    );

    let mut log_samples = Vec::new();
    for batch in LOG_BATCHES {
        let clicks = match (batch == 1, args.smoke) {
            (true, false) => LOG_CLICKS_SINGLE,
            (true, true) => SMOKE_LOG_CLICKS_SINGLE,
            (false, false) => LOG_CLICKS_BATCHED,
            (false, true) => SMOKE_LOG_CLICKS_BATCHED,
        };
        for writers in LOG_WRITERS {
            eprintln!("embedded: log append, {writers} writer(s), batches of {batch}, {clicks} clicks ...");
            log_samples.push(run_log_child(writers, batch, clicks)?);
        }
    }

    eprintln!("embedded: generating and importing {} clicks ...", args.clicks);
    let prepared = Prepared::new(args.clicks)?;
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for run in 0..args.runs {
        eprintln!("embedded: job run {}/{} (commits on, then off) ...", run + 1, args.runs);
        on.push(time_job(&prepared, true, run)?);
        off.push(time_job(&prepared, false, run)?);
    }
    let on_wall = median(&on.iter().map(|s| s.wall.as_secs_f64()).collect::<Vec<_>>());
    let mut kill_after = Duration::from_secs_f64(on_wall * KILL_AT_SHARE);
    let mut recovery = Vec::new();
    let mut attempts = 0;
    while recovery.len() < args.runs {
        let run = recovery.len();
        eprintln!("embedded: recovery run {}/{} (kill -9 after {:.2} s) ...", run + 1, args.runs, kill_after.as_secs_f64());
        match time_recovery(&prepared, kill_after, run)? {
            Some(sample) => recovery.push(sample),
            // A short run can beat the kill; kill earlier and try again.
            None if attempts < MAX_EARLIER_KILLS => {
                attempts += 1;
                kill_after /= 2;
                eprintln!("embedded: the run finished before the kill; killing at {:.2} s instead", kill_after.as_secs_f64());
            }
            None => return Err(format!("the run finished before the kill at {:.2} s; nothing to recover", kill_after.as_secs_f64())),
        }
    }

    let log_rate = print_log_table(&log_samples);
    let ratio = print_job_table(&prepared, &on, &off);
    let recovery_s = print_recovery_table(&recovery);
    println!();
    println!("embedded log clicks/s: {log_rate:.0}");
    println!("embedded commit on/off ratio: {ratio:.2}");
    println!("embedded recovery s: {recovery_s:.2}");
    Ok(())
}

/// Prints the log table; returns the best clicks/s (the headline figure).
fn print_log_table(samples: &[LogSample]) -> f64 {
    println!();
    println!("1. log append with group commit: fresh log, {LOG_PARTITIONS} partitions, one child process per row");
    println!();
    println!("| writers | batch (clicks) | clicks | clicks/s | appends/s | fsyncs/s | clicks per fsync | CPU s | peak RSS |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for s in samples {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.1} | {:.2} | {:.0} MiB |",
            s.writers,
            s.batch,
            s.records,
            human(s.per_s(s.records)),
            human(s.per_s(s.appends)),
            human(s.per_s(s.fsyncs)),
            s.records as f64 / s.fsyncs.max(1) as f64,
            s.cpu.as_secs_f64(),
            s.peak_rss_kb as f64 / 1024.0
        );
    }
    println!();
    println!("fsyncs = segment-file fsyncs by appends (Log::stats); directory fsyncs not counted.");
    println!("Generating the clicks is outside the timed part; peak RSS includes them.");
    let best = samples.iter().max_by(|a, b| a.per_s(a.records).total_cmp(&b.per_s(b.records))).expect("at least one row");
    println!("Headline (last lines): the fastest row, {} writer(s) × batches of {}.", best.writers, best.batch);
    best.per_s(best.records)
}

/// Prints the commits on/off table; returns the on/off ratio of median clicks/s.
fn print_job_table(prepared: &Prepared, on: &[JobSample], off: &[JobSample]) -> f64 {
    let rate = |s: &JobSample| prepared.clicks as f64 / s.wall.as_secs_f64();
    let row = |label: &str, samples: &[JobSample]| -> f64 {
        let rates: Vec<f64> = samples.iter().map(rate).collect();
        let (lo, hi) = min_max(&rates);
        let mid = median(&rates);
        let wall = median(&samples.iter().map(|s| s.wall.as_secs_f64()).collect::<Vec<_>>());
        let cpu = median(&samples.iter().map(|s| s.usage.cpu.as_secs_f64()).collect::<Vec<_>>());
        let rss = samples.iter().map(|s| s.usage.peak_rss_kb).max().unwrap_or(0);
        println!(
            "| {label} | {} ({}–{}) | {wall:.2} | {cpu:.2} | {} | {:.0} MiB |",
            human(mid),
            human(lo),
            human(hi),
            human(prepared.clicks as f64 / cpu.max(1e-3)),
            rss as f64 / 1024.0
        );
        mid
    };
    println!();
    println!(
        "2. job throughput: jobs/embedded.toml --bounded -w {JOB_WORKERS}, {} clicks imported, {} run(s) each, fresh log copy per run",
        prepared.clicks,
        on.len()
    );
    println!();
    println!("| sink | clicks/s median (min–max) | wall s | CPU s | clicks per CPU-s | peak RSS |");
    println!("|---|---|---|---|---|---|");
    let on_rate = row("store: epoch commits on", on);
    let off_rate = row("file (--output): commits off", off);
    println!();
    println!("clicks/s = clicks ÷ the tally process's wall time (start, log open, dataflow, final commit, exit).");
    println!("ratio on/off = {:.2}", on_rate / off_rate);
    on_rate / off_rate
}

/// Prints the recovery table; returns the median restart-to-resume seconds.
fn print_recovery_table(samples: &[RecoverySample]) -> f64 {
    let killed = median(&samples.iter().map(|s| s.killed_after.as_secs_f64()).collect::<Vec<_>>());
    let resumes: Vec<f64> = samples.iter().filter_map(|s| s.to_resume).map(|d| d.as_secs_f64()).collect();
    let exits: Vec<f64> = samples.iter().map(|s| s.to_exit.as_secs_f64()).collect();
    let resume = if resumes.is_empty() { f64::NAN } else { median(&resumes) };
    println!();
    println!(
        "3. recovery: store run SIGKILLed after {killed:.2} s (~{:.0} % of the commits-on median), then restarted",
        KILL_AT_SHARE * 100.0
    );
    println!();
    println!("| restart until | median s (min–max) | runs |");
    println!("|---|---|---|");
    for (label, values) in [("`resuming from epoch` printed", &resumes), ("exit (rest of the log read, committed)", &exits)] {
        if values.is_empty() {
            println!("| {label} | n/a | 0 |");
        } else {
            let (lo, hi) = min_max(values);
            println!("| {label} | {:.2} ({lo:.2}–{hi:.2}) | {} |", median(values), values.len());
        }
    }
    resume
}
