//! Exactly-once across crashes: the job is killed with SIGKILL at random
//! moments and restarted with a random worker count until a bounded run
//! completes; then `tally verify` — a recount of the log independent of the
//! dataflow — must find every committed final and restated row right.
//!
//! The fault-switch tests run the same loop with a deliberately broken
//! commit (`TALLY_FAULT`) and require `tally verify` to catch it, which
//! proves the check can fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/child.rs"]
mod child;
use child::{checked, finish};

const TALLY: &str = env!("CARGO_BIN_EXE_tally");
const JOB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/embedded.toml");

/// A tiny seeded generator for kill times and worker counts.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    data: PathBuf,
    catalog: PathBuf,
}

fn tally(data: &Path) -> Command {
    let mut command = Command::new(TALLY);
    command.arg("--data-dir").arg(data).stdin(Stdio::null());
    command
}

/// A log of `clicks` generated clicks (duplicates, jitter, too-late clicks,
/// a viral ad, an idle partition) and its catalog.
fn setup(clicks: u64, seed: u64) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("clicks.ndjson");
    let catalog = dir.path().join("ads.csv");
    let data = dir.path().join("data");
    checked(
        Command::new(TALLY)
            .args(["gen", "--clicks", &clicks.to_string(), "--seed", &seed.to_string(), "--too-late-share", "0.005"])
            .arg("--output")
            .arg(&input)
            .arg("--catalog")
            .arg(&catalog),
    );
    checked(tally(&data).args(["log", "import"]).arg(&input));
    Setup { _dir: dir, data, catalog }
}

fn run_job(setup: &Setup, workers: u64, fault: Option<&str>) -> Command {
    let mut command = tally(&setup.data);
    command.args(["run", JOB, "--bounded", "-w", &workers.to_string()]).arg("--catalog").arg(&setup.catalog);
    if let Some(fault) = fault {
        command.env("TALLY_FAULT", fault);
    }
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    command
}

/// What [`crash_and_finish`] saw.
struct Crashes {
    /// Runs killed.
    killed: usize,
    /// The stderr of the run that failed by itself, if one did.
    failed: Option<String>,
}

/// Kills the job at random moments, up to `kills` times, then lets it
/// finish. A run that ends before its kill ends the killing: it either read
/// the whole log (every later run would end at once, with nothing to kill)
/// or failed by itself (with a fault, the fault was caught; later runs
/// would fail the same way), and its stderr is returned.
fn crash_and_finish(setup: &Setup, rng: &mut Rng, kills: usize, max_delay_ms: u64, fault: Option<&str>) -> Crashes {
    let mut killed = 0;
    while killed < kills {
        let mut child = run_job(setup, 1 << rng.below(3), fault).spawn().expect("spawn tally run");
        std::thread::sleep(Duration::from_millis(150 + rng.below(max_delay_ms)));
        if child.try_wait().expect("child status").is_none() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
            killed += 1;
            continue;
        }
        let output = child.wait_with_output().expect("output");
        if !output.status.success() {
            return Crashes { killed, failed: Some(String::from_utf8_lossy(&output.stderr).into_owned()) };
        }
        break;
    }
    eprintln!("crash: {killed} of up to {kills} kills before the job read the whole log");
    let output = finish(run_job(setup, 1 << rng.below(3), fault).spawn().expect("spawn tally run"));
    Crashes { killed, failed: (!output.status.success()).then(|| String::from_utf8_lossy(&output.stderr).into_owned()) }
}

fn verify(setup: &Setup) -> (bool, String) {
    let output = finish(
        tally(&setup.data)
            .args(["verify", JOB])
            .arg("--catalog")
            .arg(&setup.catalog)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn verify"),
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(stdout.starts_with("verify: "), "verify printed:\n{stdout}{}", String::from_utf8_lossy(&output.stderr));
    (output.status.success(), stdout)
}

fn windows_checked(summary: &str) -> u64 {
    summary.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("verify: N windows checked")
}

#[test]
fn kills_then_every_committed_row_matches_the_recount() {
    // Up to twenty kills over 0.15–1.15 s each: a 2M-click run takes 3–4 s
    // on a quiet machine, so at least ten land before the job has read the
    // whole log (a run after that would end before its kill).
    let setup = setup(2_000_000, 7);
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let crashes = crash_and_finish(&setup, &mut rng, 20, 1_000, None);
    if let Some(stderr) = crashes.failed {
        panic!("a run failed:\n{stderr}");
    }
    assert!(crashes.killed >= 10, "only {} kills before the job read the whole log", crashes.killed);
    let (clean, summary) = verify(&setup);
    assert!(clean, "{summary}");
    assert!(summary.contains(", 0 mismatches"), "{summary}");
    assert!(windows_checked(&summary) > 10_000, "{summary}");
}

#[test]
fn offsets_committed_before_rows_are_caught() {
    let setup = setup(1_000_000, 8);
    let mut rng = Rng(0x5eed_1234_abcd_0002);
    assert_caught(crash_and_finish(&setup, &mut rng, 4, 900, Some("offsets-before-rows")).failed, &setup);
}

#[test]
fn forgotten_window_state_is_caught() {
    let setup = setup(1_000_000, 9);
    let mut rng = Rng(0x5eed_1234_abcd_0003);
    // Kills over 0.15–1.35 s, up to six: a 1M-click run takes 1.6–2.3 s on
    // a quiet machine, longer on a loaded one, so the first run is killed,
    // and some kill lands after epochs were committed (whose state was
    // dropped), whether start-up is quick or slow.
    let crashes = crash_and_finish(&setup, &mut rng, 6, 1_200, Some("drop-state"));
    assert!(crashes.killed >= 1, "no run was killed");
    assert_caught(crashes.failed, &setup);
}

/// A broken commit is caught: by `tally verify`, or earlier, by an
/// invariant asserted on the commit or recovery path (a settled version
/// going down, an epoch going back, restored state older than the resumed
/// epoch), which stops the job.
fn assert_caught(failed_run: Option<String>, setup: &Setup) {
    match failed_run {
        Some(stderr) => {
            let invariant = ["src/store/", "src/dataflow/"].iter().any(|at| stderr.contains(&format!("panicked at {at}")));
            assert!(invariant, "the run failed for another reason:\n{stderr}");
        }
        None => {
            let (clean, summary) = verify(setup);
            assert!(!clean, "a broken commit must not verify:\n{summary}");
            assert!(!summary.contains(", 0 mismatches"), "{summary}");
        }
    }
}

/// The embedded path — `log import`, `run --bounded` into the store,
/// `export` — gives the same rows as the file-source run of the same input.
#[test]
fn import_run_export_equals_the_file_run() {
    let setup = setup(200_000, 10);
    let input = setup.data.parent().unwrap().join("clicks.ndjson");
    let file_rows = setup.data.parent().unwrap().join("file-rows.ndjson");
    let exported = setup.data.parent().unwrap().join("exported.ndjson");
    checked(&mut run_job(&setup, 2, None));
    checked(tally(&setup.data).args(["export", JOB]).arg("--output").arg(&exported));
    let clicks_job = concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/clicks.toml");
    checked(
        tally(&setup.data)
            .args(["run", clicks_job, "-w", "1"])
            .arg("--input")
            .arg(&input)
            .arg("--catalog")
            .arg(&setup.catalog)
            .arg("--output")
            .arg(&file_rows),
    );
    // The file run emits every version; the store keeps the latest of each window.
    let mut latest = std::collections::BTreeMap::new();
    for line in std::fs::read_to_string(&file_rows).unwrap().lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        if row["status"] == "partial" {
            continue;
        }
        let key = (row["key_type"].to_string(), row["key"].to_string(), row["granularity"].to_string(), row["window_start"].as_u64());
        let newer = latest.get(&key).is_none_or(|old: &serde_json::Value| old["version"].as_u64() < row["version"].as_u64());
        if newer {
            latest.insert(key, row);
        }
    }
    let mut from_store = std::collections::BTreeMap::new();
    for line in std::fs::read_to_string(&exported).unwrap().lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = (row["key_type"].to_string(), row["key"].to_string(), row["granularity"].to_string(), row["window_start"].as_u64());
        from_store.insert(key, row);
    }
    assert!(latest.len() > 1_000);
    assert_eq!(from_store, latest);
}

/// A live job holds the data directory: a second `tally run` is refused with
/// a clear error, and SIGTERM stops the first cleanly (exit 0) with its
/// committed epochs intact.
#[test]
fn a_second_run_is_refused_and_sigterm_stops_cleanly() {
    let setup = setup(50_000, 11);
    let mut live = tally(&setup.data);
    live.args(["run", JOB, "-w", "2"]).arg("--catalog").arg(&setup.catalog).stdout(Stdio::null()).stderr(Stdio::piped());
    let live = live.spawn().expect("spawn live run");
    // The live job has read everything once the store holds a commit.
    let started = Instant::now();
    let mut second = None;
    while started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(300));
        let output = finish(run_job(&setup, 1, None).stdout(Stdio::piped()).spawn().expect("spawn second run"));
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if stderr.contains("lock") {
            second = Some((output.status, stderr));
            break;
        }
    }
    let (status, stderr) = second.expect("the second run reported the lock");
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("held by process"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let pid = live.id().to_string();
    checked(Command::new("kill").args(["-TERM", &pid]));
    let output = finish(live);
    assert!(output.status.success(), "SIGTERM exit: {:?}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("stopped by signal"));
}
