//! The command line as a new user types it: `-` for standard input and
//! output, the one exit-status table (README "Exit status"), counts that
//! must be at least one, `--max-rejected`, byte-for-byte reproducible file
//! runs with `early_results = "off"`, and help texts that show defaults.
//!
//! Each test runs the release binary and checks what it wrote, not only
//! its status; every status is compared with the table's constants, which
//! a test binary cannot import, so they are repeated here once.

#[path = "common/child.rs"]
mod child;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// README "Exit status".
const OK: i32 = 0;
const USAGE: i32 = 2;
const BUSY: i32 = 3;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn job(name: &str) -> PathBuf {
    Path::new(ROOT).join("jobs").join(name)
}

fn tally(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
    command.arg("--data-dir").arg(data_dir).stdin(Stdio::null());
    command
}

/// Runs `command` with `stdin` as its standard input.
fn run_with_input(command: &mut Command, stdin: &[u8]) -> Output {
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn tally");
    let mut pipe = child.stdin.take().expect("piped stdin");
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || pipe.write_all(&input));
    let out = child::finish(child);
    writer.join().expect("stdin writer").expect("write stdin");
    out
}

fn run(command: &mut Command) -> Output {
    child::finish(command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn tally"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the status, and that a failure explains itself without a panic.
fn assert_status(out: &Output, code: i32, what: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{what}: stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{what} panicked:\n{stderr}");
    if code != OK {
        assert!(stderr.contains("error"), "{what}: no error message:\n{stderr}");
    }
}

/// Generated clicks and their catalog in `dir`.
fn generate(dir: &Path, clicks: u64) -> (PathBuf, PathBuf) {
    let (input, catalog) = (dir.join("clicks.ndjson"), dir.join("ads.csv"));
    let mut gen = tally(dir);
    gen.args(["gen", "--seed", "7", "--clicks", &clicks.to_string(), "--output"]).arg(&input).arg("--catalog").arg(&catalog);
    child::checked(&mut gen);
    (input, catalog)
}

/// A copy of jobs/clicks.toml with `early_results = "off"`.
fn job_without_early_results(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(job("clicks.toml")).unwrap();
    let changed = text.replace("early_results = \"2s\"", "early_results = \"off\"");
    assert_ne!(text, changed, "jobs/clicks.toml sets early_results");
    let path = dir.join("batch.toml");
    std::fs::write(&path, changed).unwrap();
    path
}

#[test]
fn a_dash_reads_standard_input_and_writes_standard_output() {
    let dir = tempfile::tempdir().unwrap();
    let (input, catalog) = generate(dir.path(), 3_000);
    let clicks = std::fs::read(&input).unwrap();
    let batch = job_without_early_results(dir.path());

    // The same run from files and through the pipes.
    let (rows, late) = (dir.path().join("rows.ndjson"), dir.path().join("rows.late.ndjson"));
    let mut from_files = tally(dir.path());
    from_files.arg("run").arg(&batch).arg("--input").arg(&input).arg("--catalog").arg(&catalog).arg("--output").arg(&rows);
    child::checked(&mut from_files);
    let mut piped = tally(dir.path());
    piped.arg("run").arg(&batch).args(["--input", "-", "--output", "-", "--catalog"]).arg(&catalog);
    let out = run_with_input(&mut piped, &clicks);
    assert_status(&out, OK, "run --input - --output -");
    let from_file = std::fs::read(&rows).unwrap();
    assert!(!from_file.is_empty());
    assert_eq!(text(&out.stdout), text(&from_file), "rows on stdout differ from the rows file");
    assert!(!dir.path().join("-").exists() && !Path::new("-").exists(), "a file named '-' was written");
    assert!(std::fs::metadata(&late).is_ok());

    // Import from stdin, export to stdout: the rows of the embedded job.
    let mut import = tally(dir.path());
    import.args(["log", "import", "-"]);
    let out = run_with_input(&mut import, &clicks);
    assert_status(&out, OK, "log import -");
    assert!(text(&out.stdout).starts_with("appended "), "{}", text(&out.stdout));
    let mut bounded = tally(dir.path());
    bounded.arg("run").arg(job("embedded.toml")).arg("--bounded").arg("--catalog").arg(&catalog);
    child::checked(&mut bounded);
    let exported = dir.path().join("export.ndjson");
    let mut to_file = tally(dir.path());
    to_file.arg("export").arg(job("embedded.toml")).arg("--output").arg(&exported);
    child::checked(&mut to_file);
    let mut to_stdout = tally(dir.path());
    to_stdout.arg("export").arg(job("embedded.toml")).args(["--output", "-"]);
    let out = run(&mut to_stdout);
    assert_status(&out, OK, "export --output -");
    assert_eq!(text(&out.stdout), text(&std::fs::read(&exported).unwrap()));
    assert!(text(&out.stderr).contains("to standard output"), "{}", text(&out.stderr));
}

#[test]
fn a_file_run_with_early_results_off_is_reproducible_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (input, catalog) = generate(dir.path(), 20_000);
    let batch = job_without_early_results(dir.path());
    let outputs: Vec<Vec<u8>> = [1, 2]
        .iter()
        .map(|workers| {
            let rows = dir.path().join(format!("rows-{workers}.ndjson"));
            let mut command = tally(dir.path());
            command.arg("run").arg(&batch).arg("--input").arg(&input).arg("--catalog").arg(&catalog).arg("--output").arg(&rows);
            command.args(["-w", &workers.to_string()]);
            child::checked(&mut command);
            std::fs::read(&rows).unwrap()
        })
        .collect();
    assert!(!outputs[0].is_empty());
    // Without early results every row a file run writes is final or a
    // restatement: no partial row, whose timing is the wall clock's.
    assert!(!text(&outputs[0]).contains("\"status\":\"partial\""));
    let sorted = |bytes: &[u8]| {
        let mut lines: Vec<String> = text(bytes).lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    // Two runs of one worker count are identical byte for byte; other worker
    // counts write the same lines (in another order: epochs commit the rows
    // of several workers).
    let mut again = tally(dir.path());
    let rows = dir.path().join("rows-again.ndjson");
    again.arg("run").arg(&batch).arg("--input").arg(&input).arg("--catalog").arg(&catalog).arg("--output").arg(&rows);
    child::checked(&mut again);
    assert!(std::fs::read(&rows).unwrap() == outputs[0], "two runs of the same file differ");
    assert_eq!(sorted(&outputs[0]), sorted(&outputs[1]), "1 and 2 workers wrote different rows");
}

#[test]
fn early_results_off_is_the_only_word_a_duration_takes() {
    let dir = tempfile::tempdir().unwrap();
    let text_of = |value: &str| {
        let path = dir.path().join("job.toml");
        std::fs::write(&path, format!("[source]\nkind = \"generator\"\n[windows]\nearly_results = {value}\n")).unwrap();
        let mut command = tally(dir.path());
        command.arg("run").arg(&path).arg("--output").arg(dir.path().join("rows.ndjson"));
        run(&mut command)
    };
    let out = text_of("\"never\"");
    assert_status(&out, USAGE, "early_results = never");
    assert!(text(&out.stderr).contains("windows.early_results"), "{}", text(&out.stderr));
}

#[test]
fn a_file_whose_every_line_is_rejected_fails_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.ndjson");
    std::fs::write(&input, "not json\n{\"ad_id\":1}\n").unwrap();
    let rows = dir.path().join("rows.ndjson");
    let mut command = tally(dir.path());
    command.arg("run").arg(job("clicks.toml")).arg("--input").arg(&input).arg("--output").arg(&rows);
    let out = run(&mut command);
    assert_status(&out, USAGE, "run on a file of bad lines");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("every line of the input was rejected (2 lines)"), "{stderr}");
    assert!(stderr.contains("line 1:") && stderr.contains("line 2:"), "each rejected line is listed:\n{stderr}");
    assert!(!rows.exists(), "a refused run created its output");

    let mut import = tally(dir.path());
    import.args(["log", "import"]).arg(&input);
    let out = run(&mut import);
    assert_status(&out, USAGE, "log import of a file of bad lines");
    assert!(text(&out.stdout).contains("appended 0 clicks, rejected 2 lines (of 2)"), "{}", text(&out.stdout));
}

#[test]
fn max_rejected_takes_a_count_or_a_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let (input, catalog) = generate(dir.path(), 1_000);
    // 1,000 good lines and 20 bad ones: 1.96 % of 1,020.
    let mut bytes = std::fs::read(&input).unwrap();
    bytes.extend(b"garbage\n".repeat(20));
    std::fs::write(&input, bytes).unwrap();
    let rows = dir.path().join("rows.ndjson");
    let attempt = |limit: Option<&str>| {
        let _ = std::fs::remove_file(&rows);
        let mut command = tally(dir.path());
        command.arg("run").arg(job("clicks.toml")).arg("--input").arg(&input).arg("--catalog").arg(&catalog).arg("--output").arg(&rows);
        if let Some(limit) = limit {
            command.arg(format!("--max-rejected={limit}"));
        }
        run(&mut command)
    };
    for (limit, code) in [(None, OK), (Some("20"), OK), (Some("19"), USAGE), (Some("0.02"), OK), (Some("0.019"), USAGE)] {
        let out = attempt(limit);
        assert_status(&out, code, &format!("--max-rejected {limit:?}"));
        assert_eq!(rows.exists(), code == OK, "--max-rejected {limit:?}: rows written only by a run that ran");
        if code == USAGE {
            assert!(text(&out.stderr).contains("20 of 1020 lines rejected, more than --max-rejected"), "{}", text(&out.stderr));
        }
    }
    for bad in ["1.5", "-0.5", "lots"] {
        let out = attempt(Some(bad));
        assert_status(&out, USAGE, &format!("--max-rejected {bad}"));
        assert!(text(&out.stderr).contains("--max-rejected"), "{}", text(&out.stderr));
    }
}

#[test]
fn counts_below_one_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = generate(dir.path(), 10);
    let rows = dir.path().join("rows.ndjson");
    for args in [&["-w", "0"][..], &["--processes", "0"], &["--process", "1"]] {
        let mut command = tally(dir.path());
        command.arg("run").arg(job("clicks.toml")).arg("--input").arg(&input).arg("--output").arg(&rows).args(args);
        let out = run(&mut command);
        assert_status(&out, USAGE, &format!("run {args:?}"));
        assert!(!rows.exists(), "{args:?}: the run started");
    }
    for command in [&["up", "-w", "0"][..], &["backfill", "x.toml", "--version", "v", "-w", "0"]] {
        let out = run(tally(dir.path()).args(command));
        assert_status(&out, USAGE, &format!("{command:?}"));
        assert!(text(&out.stderr).contains("must be at least 1"), "{}", text(&out.stderr));
    }
}

#[test]
fn a_missing_store_is_a_usage_error_for_every_reader() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["export", "--output", "-"][..], &["verify"]] {
        let mut command = tally(&dir.path().join("nothing-here"));
        command.arg(args[0]).arg(job("embedded.toml")).args(&args[1..]);
        let out = run(&mut command);
        assert_status(&out, USAGE, &format!("{args:?} without a store"));
        assert!(text(&out.stderr).contains("no store here"), "{}", text(&out.stderr));
    }
}

#[test]
fn a_data_dir_held_by_a_running_job_is_busy_for_every_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (input, catalog) = generate(dir.path(), 2_000);
    child::checked(tally(dir.path()).args(["log", "import"]).arg(&input));
    let mut live = tally(dir.path());
    live.arg("run").arg(job("embedded.toml")).arg("--catalog").arg(&catalog).stdout(Stdio::null()).stderr(Stdio::null());
    let mut live = live.spawn().expect("start the live job");
    let store = dir.path().join("store").join("store.redb");
    let started = Instant::now();
    while !store.exists() {
        assert!(started.elapsed() < Duration::from_secs(60), "the live job never created its store");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let bounded = run(tally(dir.path()).arg("run").arg(job("embedded.toml")).arg("--bounded").arg("--catalog").arg(&catalog));
    let import = run(tally(dir.path()).args(["log", "import"]).arg(&input));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let up = run(tally(dir.path()).args(["up", "--no-auth", "--addr", &addr]));
    let _ = live.kill();
    let _ = live.wait();
    for (what, out) in [("run --bounded", bounded), ("log import", import), ("up", up)] {
        assert_status(&out, BUSY, what);
        assert!(text(&out.stderr).contains("in use") || text(&out.stderr).contains("is held"), "{what}: {}", text(&out.stderr));
    }
}

#[test]
fn gen_help_shows_every_default_and_no_help_says_1_workers() {
    let dir = tempfile::tempdir().unwrap();
    let help = text(&run(tally(dir.path()).args(["gen", "--help"])).stdout);
    // Each option's block runs from its `--name` line to the next one.
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("--") || trimmed.starts_with("-h,") {
            blocks.push((trimmed.split_whitespace().next().unwrap_or_default().to_owned(), String::new()));
        } else if let Some((_, text)) = blocks.last_mut() {
            text.push_str(line);
        }
    }
    assert!(blocks.len() > 14, "{help}");
    for (option, text) in blocks.iter().filter(|(o, _)| !["--catalog", "-h,"].contains(&o.as_str())) {
        assert!(text.contains("[default:") || text.contains("default: "), "gen {option}: no default shown:\n{help}");
    }
    let (input, _) = generate(dir.path(), 10);
    let out = run(tally(dir.path()).arg("run").arg(job("clicks.toml")).arg("--input").arg(&input).args(["--output", "-"]));
    assert_status(&out, OK, "run");
    assert!(text(&out.stderr).contains("with 1 worker:"), "{}", text(&out.stderr));
}
