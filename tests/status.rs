//! `tally status`, `tally log describe` and `tally log tail` against what
//! the test itself wrote: offsets and lag are checked against the lines it
//! imported, split by the log's partition function; the tail against the
//! last request ids of each partition in the input file.

#[path = "common/child.rs"]
mod child;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The built-in job's partition count (jobs/embedded.toml).
const PARTITIONS: u32 = 8;

fn tally(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
    command.arg("--data-dir").arg(data_dir).stdin(Stdio::null());
    command
}

fn embedded_job() -> PathBuf {
    Path::new(ROOT).join("jobs/embedded.toml")
}

fn json_of(command: &mut Command) -> Value {
    serde_json::from_slice(&child::checked(command).stdout).expect("one JSON object")
}

/// Generated clicks (seed `seed`) and their catalog.
fn generate(dir: &Path, name: &str, clicks: u64, seed: u64) -> (PathBuf, PathBuf) {
    let (input, catalog) = (dir.join(format!("{name}.ndjson")), dir.join("ads.csv"));
    let mut gen = tally(dir);
    gen.args(["gen", "--seed", &seed.to_string(), "--clicks", &clicks.to_string(), "--output"]).arg(&input).arg("--catalog").arg(&catalog);
    child::checked(&mut gen);
    (input, catalog)
}

/// The request ids of `input`'s lines, per log partition, in file order.
fn request_ids_by_partition(input: &Path) -> BTreeMap<u32, Vec<String>> {
    let mut by_partition: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for line in std::fs::read_to_string(input).unwrap().lines() {
        let click: Value = serde_json::from_str(line).unwrap();
        let id = click["request_id"].as_str().unwrap().to_owned();
        let value = u128::from_str_radix(&id.replace('-', ""), 16).unwrap();
        by_partition.entry(tally::event::partition_of(value, PARTITIONS)).or_default().push(id.to_lowercase());
    }
    by_partition
}

fn offsets(status: &Value, field: &str) -> Vec<u64> {
    status["partitions"].as_array().unwrap().iter().map(|p| p[field].as_u64().unwrap_or(u64::MAX)).collect()
}

#[test]
fn status_shows_offsets_lag_and_the_late_ledger_of_what_was_imported() {
    let dir = tempfile::tempdir().unwrap();
    let (first, catalog) = generate(dir.path(), "first", 20_000, 3);
    child::checked(tally(dir.path()).args(["log", "import"]).arg(&first));
    let expected: Vec<u64> = {
        let by = request_ids_by_partition(&first);
        (0..PARTITIONS).map(|p| by.get(&p).map_or(0, |ids| ids.len() as u64)).collect()
    };

    // Before any run: everything is lag, nothing committed.
    let out = child::finish(tally(dir.path()).args(["status", "--json"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    assert_eq!(out.status.code(), Some(2), "no store yet: {}", String::from_utf8_lossy(&out.stderr));
    child::checked(tally(dir.path()).arg("run").arg(embedded_job()).arg("--bounded").arg("--catalog").arg(&catalog));
    let status = json_of(tally(dir.path()).args(["status", "--json"]));
    assert_eq!(offsets(&status, "end_offset"), expected, "end offsets are the clicks imported per partition");
    assert_eq!(offsets(&status, "committed_offset"), expected, "a bounded run commits everything");
    assert_eq!(status["lag_total"], 0);
    assert!(status["committed"]["epoch"].as_u64().unwrap() > 1_767_225_600_000 - 10_000);
    assert_eq!(status["running_pid"], Value::Null);
    assert_eq!(status["serving"], "live");
    assert_eq!(status["settings_fingerprint"].as_str().unwrap().len(), 16);
    // The generator sends ~0.1 % of its clicks beyond allowed lateness.
    let late = status["late"]["restated_clicks"].as_u64().unwrap() + status["late"]["held_clicks"].as_u64().unwrap();
    assert!((1..200).contains(&late), "{late} late clicks");
    let exported = dir.path().join("late.ndjson");
    child::checked(tally(dir.path()).arg("export").arg(embedded_job()).args(["--output", "/dev/null", "--late"]).arg(&exported));
    let ledger_ids: std::collections::BTreeSet<String> = std::fs::read_to_string(&exported)
        .unwrap()
        .lines()
        .flat_map(|l| serde_json::from_str::<Value>(l).unwrap()["request_ids"].as_array().unwrap().clone())
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(late, ledger_ids.len() as u64, "late totals count each ledger click once");

    // More clicks, not yet run: the lag is exactly those.
    let (second, _) = generate(dir.path(), "second", 5_000, 4);
    child::checked(tally(dir.path()).args(["log", "import"]).arg(&second));
    let status = json_of(tally(dir.path()).args(["status", "--json"]));
    assert_eq!(status["lag_total"], 5_000);
    assert_eq!(offsets(&status, "committed_offset"), expected);

    // While a live job holds the data directory, status reads beside it.
    let mut live = tally(dir.path());
    live.arg("run").arg(embedded_job()).arg("--catalog").arg(&catalog).stdout(Stdio::null()).stderr(Stdio::null());
    let mut live = live.spawn().unwrap();
    let started = Instant::now();
    let caught_up = loop {
        let status = json_of(tally(dir.path()).args(["status", "--json"]));
        if status["lag_total"] == 0 || started.elapsed() > Duration::from_secs(60) {
            break status;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = live.kill();
    let _ = live.wait();
    assert_eq!(caught_up["lag_total"], 0, "the live job caught up: {caught_up}");
    assert_eq!(caught_up["running_pid"].as_u64(), Some(u64::from(live.id())));
    let text = String::from_utf8(child::checked(tally(dir.path()).arg("status")).stdout).unwrap();
    for part in ["committed: epoch", "PARTITION", "lag: 0 clicks", "settings: ", "late: ", "version live (serving)"] {
        assert!(text.contains(part), "{part:?} missing from:\n{text}");
    }
}

#[test]
fn log_describe_and_tail_show_what_was_appended_and_never_a_user_id() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = generate(dir.path(), "clicks", 3_000, 5);
    child::checked(tally(dir.path()).args(["log", "import"]).arg(&input));
    let by_partition = request_ids_by_partition(&input);

    let layout = json_of(tally(dir.path()).args(["log", "describe", "--json"]));
    let partitions = layout["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), PARTITIONS as usize);
    for p in partitions {
        let n = by_partition.get(&(p["partition"].as_u64().unwrap() as u32)).map_or(0, Vec::len) as u64;
        assert_eq!((p["start_offset"].as_u64(), p["end_offset"].as_u64()), (Some(0), Some(n)));
        let segments = p["segments"].as_array().unwrap();
        let bytes: u64 = segments.iter().map(|s| s["bytes"].as_u64().unwrap()).sum();
        assert_eq!(p["bytes"].as_u64(), Some(bytes));
        for s in segments {
            let file = s["file"].as_str().unwrap();
            assert_eq!(std::fs::metadata(file).unwrap().len(), s["bytes"].as_u64().unwrap(), "{file}");
        }
    }
    assert_eq!(layout["retention_ms"], 7 * 86_400_000u64);

    let tail = child::checked(tally(dir.path()).args(["log", "tail", "-n", "3", "--partition", "2"])).stdout;
    let lines: Vec<Value> = String::from_utf8(tail).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let ids: Vec<&str> = lines.iter().map(|l| l["request_id"].as_str().unwrap()).collect();
    let last3: Vec<&str> = by_partition[&2].iter().rev().take(3).rev().map(String::as_str).collect();
    assert_eq!(ids, last3, "the tail is the partition's last clicks, in order");

    let all = String::from_utf8(child::checked(tally(dir.path()).args(["log", "tail", "-n", "1000000"])).stdout).unwrap();
    assert_eq!(all.lines().count(), 3_000);
    for line in std::fs::read_to_string(&input).unwrap().lines().take(200) {
        let user = serde_json::from_str::<Value>(line).unwrap()["user_id"].as_str().unwrap().to_owned();
        assert!(!all.contains(&format!("\"{user}\"")), "user id {user} in the tail");
    }
}
