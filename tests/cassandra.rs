//! tally against a real Apache Cassandra node: the epoch commit protocol of
//! `store::cassandra` under crashes, zombies and lost answers.
//!
//! The first test to need it starts one node with `scripts/cassandra.sh`
//! (its jars come from Maven Central into a git-ignored cache on first use)
//! in `target/test-cassandra/`, shared by every test of this binary, each
//! under a job name of its own; a watchdog stops the node (and deletes its
//! folder) when the test process ends, however it ends. `TALLY_TEST_CASSANDRA=host:port` uses a
//! node that is already running instead.
//!
//! - SIGKILLs at random moments and aborts at the protocol's own seams
//!   (after staging, after the commit record, halfway through an apply),
//!   then `tally verify` finds 0 mismatches; a recovery that skips the
//!   re-apply of a committed epoch is caught.
//! - Half of an epoch applied is not seen by readers.
//! - A job paused with SIGSTOP while a new generation takes over and
//!   finishes, then resumed, changes no committed row and is fenced.
//! - A commit whose answer is lost, or which times out, is decided by
//!   reading the commit record back: the job finishes and verifies clean.
//! - Two writers of one job: the older generation's commit is refused.
//! - After the same commits, every read of the store trait answers as the
//!   embedded store's does.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod common;

use tally::store::cassandra::{CassandraConfig, CassandraReader, CassandraStore, Faults};
use tally::store::{EpochCommit, EpochStore, PartitionCheckpoint, StoreError, StoreSnapshot};

#[path = "common/child.rs"]
mod child;
#[path = "common/net.rs"]
mod net;
use child::{checked, finish};
use net::{free_addr, listening};

const TALLY: &str = env!("CARGO_BIN_EXE_tally");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The keyspace of every test.
const KEYSPACE: &str = "tally_test";

/// The contact point of the node every test shares.
fn cassandra() -> &'static str {
    static NODE: OnceLock<String> = OnceLock::new();
    NODE.get_or_init(|| {
        let hosts = std::env::var("TALLY_TEST_CASSANDRA").unwrap_or_else(|_| start_node());
        // The tables, made once before the tests' jobs start side by side
        // (two clients creating one table at once may disagree).
        let config = CassandraConfig { hosts: vec![hosts.clone()], keyspace: KEYSPACE.into(), ..CassandraConfig::default() };
        CassandraStore::open(&config, "schema", 3_600_000, Faults::default()).expect("the test keyspace and its tables");
        hosts
    })
}

/// Starts a node for this test process; a watchdog stops it once the
/// process is gone.
fn start_node() -> String {
    let dir = Path::new(ROOT).join("target/test-cassandra").join(format!("node-{}", std::process::id()));
    common::start_cassandra(1, &dir)
}

/// A tiny seeded generator for kill times.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A data directory with a log of generated clicks, a catalog, and a job
/// file committing to the shared node under `name`.
struct Setup {
    /// The job's name: its row in Cassandra.
    name: String,
    dir: PathBuf,
    data: PathBuf,
    catalog: PathBuf,
    job: PathBuf,
}

fn setup(name: &str, clicks: u64, seed: u64) -> Setup {
    let setup = generate(name, clicks, seed);
    checked(tally(&setup.data).args(["log", "import"]).arg(setup.dir.join("clicks.ndjson")));
    setup
}

/// [`setup`] with nothing imported yet: the clicks are in `clicks.ndjson`.
fn generate(name: &str, clicks: u64, seed: u64) -> Setup {
    let dir = Path::new(ROOT).join("target/test-cassandra").join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (input, catalog, data) = (dir.join("clicks.ndjson"), dir.join("ads.csv"), dir.join("data"));
    checked(
        Command::new(TALLY)
            .args(["gen", "--clicks", &clicks.to_string(), "--seed", &seed.to_string(), "--rate-per-s", "2000", "--ads", "500"])
            .args(["--campaigns", "50", "--advertisers", "10", "--too-late-share", "0.005"])
            .arg("--output")
            .arg(&input)
            .arg("--catalog")
            .arg(&catalog),
    );
    let job = dir.join("job.toml");
    let name = format!("{name}_{}", std::process::id());
    let text = format!(
        "name = \"{name}\"\n[source]\nkind = \"log\"\npartitions = 8\n\
         [sink]\nkind = \"cassandra\"\nhosts = \"{}\"\nkeyspace = \"{KEYSPACE}\"\nreplication_factor = 1\n",
        cassandra()
    );
    std::fs::write(&job, text).unwrap();
    Setup { name, dir, data, catalog, job }
}

fn config() -> CassandraConfig {
    CassandraConfig { hosts: vec![cassandra().to_owned()], keyspace: KEYSPACE.into(), ..CassandraConfig::default() }
}

/// The newest generation of a job and its applied epoch, as a reader sees them.
fn progress(name: &str) -> (Option<u64>, Option<u64>) {
    let snapshot = CassandraReader::open(&config(), name).unwrap().snapshot_now().unwrap();
    (snapshot.newest_generation().unwrap(), snapshot.committed_epoch().unwrap())
}

/// Waits until job `name` has a generation newer than `than` that has
/// applied an epoch after `after`.
fn wait_for_commit(name: &str, than: Option<u64>, after: Option<u64>) {
    let started = Instant::now();
    loop {
        let (generation, epoch) = progress(name);
        if generation > than && epoch > after {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "job {name} did not commit (generation {generation:?}, epoch {epoch:?})");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tally(data: &Path) -> Command {
    let mut command = Command::new(TALLY);
    command.arg("--data-dir").arg(data).stdin(Stdio::null());
    command
}

/// `tally run JOB --bounded` on `data`, with `TALLY_FAULT` if given.
fn run_job(setup: &Setup, data: &Path, workers: u64, fault: Option<&str>) -> Command {
    let mut command = tally(data);
    command.args(["run", "--bounded", "-w", &workers.to_string()]).arg(&setup.job).arg("--catalog").arg(&setup.catalog);
    if let Some(fault) = fault {
        command.env("TALLY_FAULT", fault);
    }
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    command
}

/// `tally verify`: whether it found no mismatch, and its summary.
fn verify(setup: &Setup) -> (bool, String) {
    let out = finish(
        tally(&setup.data)
            .arg("verify")
            .arg(&setup.job)
            .arg("--catalog")
            .arg(&setup.catalog)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.starts_with("verify: "), "verify printed:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.success(), stdout)
}

/// `tally export` of the job's rows and late ledger.
fn export(setup: &Setup, name: &str) -> (String, String) {
    let (rows, late) = (setup.dir.join(format!("{name}.ndjson")), setup.dir.join(format!("{name}.late.ndjson")));
    checked(tally(&setup.data).arg("export").arg(&setup.job).arg("--output").arg(&rows).arg("--late").arg(&late));
    (std::fs::read_to_string(rows).unwrap(), std::fs::read_to_string(late).unwrap())
}

/// Whether a run ended by a signal (a kill, or a fault's abort).
fn killed(out: &Output) -> bool {
    out.status.signal().is_some()
}

/// What [`crash_and_finish`] saw.
struct Runs {
    /// The stderr of the first run that failed by itself.
    failed: Option<String>,
    /// Runs that found a committed epoch not applied and applied it.
    recoveries: usize,
}

/// Runs the job until `stops` runs were stopped, each by SIGKILL at a
/// random moment or by the fault `fault(round)` names, then once to the
/// end with `final_fault`.
fn crash_and_finish(
    setup: &Setup,
    rng: &mut Rng,
    stops: usize,
    fault: impl Fn(usize, &mut Rng) -> Option<String>,
    final_fault: Option<&str>,
) -> Runs {
    let (mut stopped, mut failed, mut recoveries) = (0, None, 0);
    for round in 0.. {
        if stopped == stops {
            break;
        }
        assert!(round < stops * 4, "only {stopped} of {round} runs were stopped: the job ends too soon");
        let fault = fault(round, rng);
        let mut child = run_job(setup, &setup.data, 1 + rng.below(2), fault.as_deref()).spawn().expect("spawn tally run");
        if fault.is_none() {
            std::thread::sleep(Duration::from_millis(300 + rng.below(3_000)));
            let _ = child.kill();
        }
        let out = finish(child);
        recoveries += usize::from(String::from_utf8_lossy(&out.stderr).contains("is committed but not applied"));
        if killed(&out) {
            stopped += 1;
        } else if !out.status.success() {
            failed.get_or_insert(String::from_utf8_lossy(&out.stderr).into_owned());
        }
    }
    let out = finish(run_job(setup, &setup.data, 2, final_fault).spawn().unwrap());
    recoveries += usize::from(String::from_utf8_lossy(&out.stderr).contains("is committed but not applied"));
    if !out.status.success() {
        failed.get_or_insert(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Runs { failed, recoveries }
}

#[test]
fn kills_at_random_and_at_every_seam_of_the_commit_then_verify_finds_no_mismatch() {
    let setup = setup("kills", 1_000_000, 21);
    let mut rng = Rng(0x5eed_ca55_0001);
    // Rounds 0, 1, 2 of every 5 stop at a seam of their 1st to 3rd commit,
    // rounds 3 and 4 by SIGKILL.
    let seams = ["crash:staged", "crash:committed", "crash:half-applied"];
    let fault = |round: usize, rng: &mut Rng| seams.get(round % 5).map(|seam| format!("{seam}:{}", 1 + rng.below(3)));
    let runs = crash_and_finish(&setup, &mut rng, 12, fault, None);
    if let Some(stderr) = runs.failed {
        panic!("a run failed:\n{stderr}");
    }
    // Every stop after a commit record and before its apply was marked
    // (crash:committed, crash:half-applied) leaves an epoch to recover.
    assert!(runs.recoveries >= 2, "{} recoveries of a committed epoch", runs.recoveries);
    let (clean, summary) = verify(&setup);
    assert!(clean && summary.contains(", 0 mismatches"), "{summary}");
    let checked: u64 = summary.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap();
    assert!(checked > 1_000, "{summary}");
}

#[test]
fn a_recovery_that_skips_the_committed_epoch_is_caught() {
    let setup = setup("skip", 200_000, 22);
    let mut rng = Rng(0x5eed_ca55_0002);
    // Stop after the commit record of the 3rd commit, then recover without
    // applying that epoch.
    let fault = |_: usize, _: &mut Rng| Some("crash:committed:3".to_owned());
    match crash_and_finish(&setup, &mut rng, 1, fault, Some("skip-reapply")).failed {
        Some(stderr) => {
            let invariant = ["src/store/", "src/dataflow/"].iter().any(|at| stderr.contains(&format!("panicked at {at}")));
            assert!(invariant, "the run failed for another reason:\n{stderr}");
        }
        None => {
            let (clean, summary) = verify(&setup);
            assert!(!clean && !summary.contains(", 0 mismatches"), "a skipped epoch must not verify:\n{summary}");
        }
    }
}

/// Readers read as of the applied epoch. With an epoch committed and
/// half applied, its rows are in the table but `tally export` shows of
/// every window the newest row at or below the applied epoch (read here
/// straight from the table), and `tally verify` finds every row right;
/// after the recovery too.
#[test]
fn a_half_applied_epoch_is_not_seen_by_readers() {
    let setup = setup("half", 300_000, 25);
    let out = finish(run_job(&setup, &setup.data, 2, Some("crash:half-applied:4")).spawn().unwrap());
    assert!(killed(&out), "the fault stops the run:\n{}", String::from_utf8_lossy(&out.stderr));
    let applied = progress(&setup.name).1.expect("epochs were applied");
    let table = window_rows(&setup.name);
    assert!(table.iter().any(|(_, epoch, _)| *epoch > applied), "the half-applied epoch wrote rows");
    let mut expected: BTreeMap<WindowId, (u64, String, u64)> = BTreeMap::new();
    for (window, _, value) in table.into_iter().filter(|(_, epoch, _)| *epoch <= applied) {
        // Newest epoch first: keep the first settled row, else the first.
        let settled = |v: &(u64, String, u64)| v.1 != "partial";
        let keep = match expected.get(&window) {
            None => true,
            Some(kept) => !settled(kept) && settled(&value),
        };
        if keep {
            expected.insert(window, value);
        }
    }
    let (rows, _) = export(&setup, "as-of-applied");
    let exported: BTreeMap<WindowId, (u64, String, u64)> = rows
        .lines()
        .map(|line| {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            let text = |key: &str| row[key].as_str().unwrap().to_owned();
            let number = |key: &str| row[key].as_u64().unwrap();
            let window = (text("key_type"), text("key"), text("granularity"), number("window_start"));
            (window, (number("clicks"), text("status"), number("version")))
        })
        .collect();
    assert!(exported == expected, "the export is not the table as of epoch {applied}");
    let (clean, summary) = verify(&setup);
    assert!(clean, "as of the applied epoch:\n{summary}");
    let out = finish(run_job(&setup, &setup.data, 1, None).spawn().unwrap());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("is committed but not applied"), "{stderr}");
    let (clean, summary) = verify(&setup);
    assert!(clean, "after the recovery:\n{summary}");
}

/// A window as exported: key type, key, granularity label, start.
type WindowId = (String, String, String, u64);

/// Every row of `window_rows` of job `name`, straight from the table,
/// each window's newest epoch first: the window, the epoch, and clicks,
/// status and version.
fn window_rows(name: &str) -> Vec<(WindowId, u64, (u64, String, u64))> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let session = scylla::client::session_builder::SessionBuilder::new().known_node(cassandra()).build().await.unwrap();
        let cql = format!(
            "SELECT key_type, key, granularity, window_start, epoch, clicks, status, version FROM {KEYSPACE}.window_rows WHERE job = ? ALLOW FILTERING"
        );
        let mut pager = session.query_iter(cql, (name,)).await.unwrap().rows_stream::<(i8, String, i64, i64, i64, i64, i8, i32)>().unwrap();
        let mut out = Vec::new();
        while let Some(row) = futures::TryStreamExt::try_next(&mut pager).await.unwrap() {
            let (key_type, key, granularity, start, epoch, clicks, status, version) = row;
            let key_type = ["ad", "campaign", "advertiser"][key_type as usize].to_owned();
            let status = ["partial", "final", "restated"][status as usize].to_owned();
            let label = tally::row::granularity_label(granularity as u64);
            out.push(((key_type, key, label, start as u64), epoch as u64, (clicks as u64, status, version as u64)));
        }
        out
    })
}

#[test]
fn a_paused_zombie_changes_no_committed_row_and_is_fenced() {
    let setup = generate("zombie", 300_000, 23);
    // Three parts of the clicks, one per round: the zombie always has a
    // backlog to commit when it is paused and when it resumes.
    let text = std::fs::read_to_string(setup.dir.join("clicks.ndjson")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let parts: Vec<PathBuf> = (0..3)
        .map(|i| {
            let part = setup.dir.join(format!("part-{i}.ndjson"));
            std::fs::write(&part, lines[i * lines.len() / 3..(i + 1) * lines.len() / 3].join("\n") + "\n").unwrap();
            part
        })
        .collect();
    // The new generation reads a copy of the same log (a log belongs to one
    // process, and the zombie keeps holding its own), salt included.
    let copy = setup.dir.join("data-copy");
    checked(tally(&setup.data).args(["log", "import"]).arg(&parts[0]));
    assert!(Command::new("cp").arg("-r").arg(&setup.data).arg(&copy).status().unwrap().success());
    let mut rng = Rng(0x5eed_ca55_0003);
    for (round, part) in parts.iter().enumerate() {
        if round > 0 {
            checked(tally(&setup.data).args(["log", "import"]).arg(part));
            checked(tally(&copy).args(["log", "import"]).arg(part));
        }
        // The zombie runs live (it never finishes by itself) and is paused
        // soon after its first commit, while it works through the part.
        let mut zombie = tally(&setup.data);
        zombie.arg("run").arg(&setup.job).arg("--catalog").arg(&setup.catalog).stdout(Stdio::null()).stderr(Stdio::piped());
        let before_start = progress(&setup.name);
        let mut zombie = zombie.spawn().unwrap();
        wait_for_commit(&setup.name, before_start.0, before_start.1);
        std::thread::sleep(Duration::from_millis(rng.below(800)));
        if zombie.try_wait().unwrap().is_some() {
            let out = wait_for(&mut zombie, Duration::ZERO);
            panic!("round {round}: the job ended before it was paused:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        signal(&zombie, "STOP");
        // The new generation takes over and counts the same log to its end.
        checked(&mut run_job(&setup, &copy, 2, None));
        let before = export(&setup, &format!("before-{round}"));
        signal(&zombie, "CONT");
        let out = wait_for(&mut zombie, Duration::from_secs(120));
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Fenced by its next commit, or by its next read of committed state.
        assert!(!out.status.success() && stderr.contains("has started since"), "round {round}: the zombie was not fenced:\n{stderr}");
        let after = export(&setup, &format!("after-{round}"));
        assert!(before == after, "round {round}: the zombie changed committed rows");
    }
    let (clean, summary) = verify(&setup);
    assert!(clean, "{summary}");
}

/// A commit whose answer is dropped after it applied, and one run with a
/// 1 ms client-side timeout, are both decided by the record read back.
#[test]
fn commits_of_unknown_outcome_are_read_back_not_retried() {
    let setup = setup("unknown", 100_000, 24);
    let out = finish(run_job(&setup, &setup.data, 2, Some("lost-answer:2,commit-timeout:3:1")).spawn().unwrap());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The lost answer is read back as committed; the timeout, depending on
    // whether the request reached the node in 1 ms, as committed or not
    // yet (then tried again), or it did not time out at all.
    let resolved: Vec<&str> = stderr.lines().filter(|l| l.contains("had an unknown outcome")).collect();
    assert!(resolved.iter().any(|l| l.ends_with("read back with SERIAL: Committed")), "no commit was read back:\n{stderr}");
    let (clean, summary) = verify(&setup);
    assert!(clean, "{summary}");
}

/// The store's own API: a writer of an older generation is fenced by the
/// commit transaction, and the epochs of the newer one stand.
#[test]
fn an_older_generation_cannot_commit() {
    let job = format!("fence_{}", std::process::id());
    let config = config();
    let open = || CassandraStore::open(&config, &job, 3_600_000, Faults::default()).unwrap();
    let checkpoint =
        |offset| PartitionCheckpoint { partition: 0, offset, max_ts: offset, floor: 0, dedup_replay_offset: 0, dedup_replay_max_ts: 0 };
    let epoch = |epoch: u64, generation: u64| EpochCommit {
        epoch,
        generation,
        partitions: vec![checkpoint(epoch / 1_000)],
        state_upserts: vec![(b"Pk".to_vec(), epoch.to_le_bytes().to_vec())],
        ..Default::default()
    };
    let (mut old, mut new) = (open(), open());
    let first = old.begin_generation().unwrap();
    old.commit(epoch(1_000, first)).unwrap();
    let second = new.begin_generation().unwrap();
    assert_eq!(second, first + 1);
    match old.commit(epoch(2_000, first)) {
        Err(StoreError::Fenced { generation, current, .. }) => assert_eq!((generation, current), (first, second)),
        other => panic!("the older generation committed: {other:?}"),
    }
    new.commit(epoch(2_000, second)).unwrap();
    let reader = CassandraReader::open(&config, &job).unwrap();
    let recovered = reader.snapshot_now().unwrap().last_committed().unwrap().unwrap();
    assert_eq!((recovered.epoch, recovered.generation), (2_000, second));
    assert_eq!(recovered.partitions, [checkpoint(2)]);
    assert_eq!(recovered.state, [(b"Pk".to_vec(), 2_000u64.to_le_bytes().to_vec())]);
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(child.id().to_string()).status().unwrap();
    assert!(status.success(), "kill -{name}");
}

fn wait_for(child: &mut Child, timeout: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > timeout {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stderr).unwrap();
    }
    Output { status: child.wait().unwrap(), stdout: Vec::new(), stderr: stderr.into_bytes() }
}

/// Every read of the store trait answers the same from Cassandra as from
/// the embedded store, after the same commits: rows by key and by window,
/// the latest window, versions, the ledger, settled rows with their
/// sketches, state and checkpoints.
#[test]
fn cassandra_answers_every_read_as_the_embedded_store_does() {
    use tally::event::KeyType;
    use tally::row::{LateEntry, Row, Status};
    use tally::store::{EmbeddedStore, RowFilter, StoredRow, WindowKey};

    const MINUTE: u64 = 60_000;
    let row = |key_type, key: &str, start, clicks, status, version| {
        let row =
            Row { key_type, key: key.into(), granularity_ms: MINUTE, window_start: start, clicks, distinct_users: clicks, status, version };
        let sketch = if status == Status::Partial { Vec::new() } else { vec![clicks as u8; 5] };
        StoredRow { row, sketch }
    };
    let late = |key: &str, start, batch, held, ids: &[u128]| LateEntry {
        key_type: KeyType::Ad,
        key: key.into(),
        window_start: start,
        batch,
        held,
        request_ids: ids.to_vec(),
    };
    let checkpoint = |partition, offset| PartitionCheckpoint {
        partition,
        offset,
        max_ts: offset,
        floor: 0,
        dedup_replay_offset: 0,
        dedup_replay_max_ts: 0,
    };
    let epochs = |generation| {
        vec![
            EpochCommit {
                epoch: 10_000,
                generation,
                rows: vec![
                    row(KeyType::Ad, "a", 0, 1, Status::Partial, 0),
                    row(KeyType::Ad, "b", 0, 2, Status::Partial, 0),
                    row(KeyType::Campaign, "c", 0, 3, Status::Partial, 0),
                ],
                late: vec![late("a", 0, 10_000, false, &[7, 3])],
                partitions: vec![checkpoint(0, 5), checkpoint(1, 2)],
                state_upserts: vec![(b"W1".to_vec(), b"one".to_vec()), (b"S".to_vec(), b"settings".to_vec())],
                ..Default::default()
            },
            EpochCommit {
                epoch: 70_000,
                generation,
                rows: vec![row(KeyType::Ad, "a", 0, 3, Status::Final, 1), row(KeyType::Ad, "a", MINUTE, 1, Status::Partial, 0)],
                late: vec![late("a", 0, 70_000, true, &[9])],
                partitions: vec![checkpoint(0, 9)],
                state_upserts: vec![(b"W2".to_vec(), b"two".to_vec())],
                state_deletes: vec![b"W1".to_vec()],
            },
            EpochCommit {
                epoch: 130_000,
                generation,
                rows: vec![
                    row(KeyType::Ad, "a", 0, 4, Status::Restated, 2),
                    row(KeyType::Ad, "a", 0, 4, Status::Partial, 0),
                    row(KeyType::Ad, "b", 0, 2, Status::Final, 1),
                    row(KeyType::Ad, "a", MINUTE, 5, Status::Final, 1),
                ],
                partitions: vec![checkpoint(1, 4)],
                ..Default::default()
            },
        ]
    };
    let dir = tempfile::tempdir().unwrap();
    let mut embedded = EmbeddedStore::open(dir.path()).unwrap();
    let mut cassandra = CassandraStore::open(&config(), &format!("alike_{}", std::process::id()), 3_600_000, Faults::default()).unwrap();
    for store in [&mut embedded as &mut dyn EpochStore, &mut cassandra] {
        let generation = store.begin_generation().unwrap();
        for commit in epochs(generation) {
            store.commit(commit).unwrap();
        }
    }
    let snapshots: Vec<Box<dyn StoreSnapshot>> = vec![
        tally::store::StoreReader::snapshot(&embedded.reader()).unwrap(),
        tally::store::StoreReader::snapshot(&cassandra.reader()).unwrap(),
    ];
    let window = |key: &str, start| WindowKey { key_type: KeyType::Ad, key: key.into(), granularity_ms: MINUTE, window_start: start };
    let answers = |s: &dyn StoreSnapshot| {
        let filter = RowFilter { key_type: KeyType::Ad, key: "a".into(), granularity_ms: MINUTE, from: 0, to: 3 * MINUTE };
        let mut last = s.last_committed().unwrap().unwrap();
        last.generation = 0; // each store counts its own
        format!(
            "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
            s.rows(&filter).unwrap(),
            s.window_rows(KeyType::Ad, MINUTE, 0).unwrap(),
            s.window_rows(KeyType::Campaign, MINUTE, 0).unwrap(),
            s.latest_window(KeyType::Ad, MINUTE, 30_000).unwrap(),
            s.latest_window(KeyType::Ad, MINUTE, 10_000_000_000_000).unwrap(),
            s.latest_window(KeyType::Advertiser, MINUTE, 10_000_000_000_000).unwrap(),
            s.committed_epoch().unwrap(),
            s.all_rows().unwrap(),
            s.row_count().unwrap(),
            s.row_history(&window("a", 0)).unwrap(),
            s.late_entries(0, u64::MAX).unwrap(),
            s.settled_row(&window("a", 0)).unwrap(),
            s.settled_row(&window("a", 2 * MINUTE)).unwrap(),
            (s.state(b"W1").unwrap(), s.state(b"W2").unwrap()),
            last,
        )
    };
    let (embedded_answers, cassandra_answers) = (answers(snapshots[0].as_ref()), answers(snapshots[1].as_ref()));
    assert!(embedded_answers.contains("Restated") && embedded_answers.contains("[3, 7]"), "{embedded_answers}");
    assert_eq!(cassandra_answers, embedded_answers);
}

/// The campaign and advertiser of `ad` at `at` in the catalog a job's
/// committed settings name, as Cassandra answers.
fn attributed(reader: &CassandraReader, ad: &str, at: u64) -> Option<(String, String)> {
    let settings = reader.snapshot_now().unwrap().state(tally::store::settings::SETTINGS_KEY).unwrap().expect("committed settings");
    let settings = tally::store::settings::RunSettings::from_json(&settings).unwrap();
    let fingerprint = settings.catalog.expect("the job ran with a catalog").fingerprint;
    assert!(reader.catalog(&fingerprint).unwrap().is_some(), "catalog {fingerprint} named by the settings is not published whole");
    reader.ad_version(&fingerprint, ad, at).unwrap().map(|v| (v.campaign.to_string(), v.advertiser.to_string()))
}

/// Every ad of `file` at its versions' edges, as the file says.
fn assert_catalog_is(reader: &CassandraReader, file: &Path) {
    let catalog = tally::catalog::Catalog::load(file).unwrap();
    let mut checked = 0;
    for (ad, valid_from, _, _) in catalog.versions() {
        for at in [0, valid_from.saturating_sub(1), valid_from, valid_from + 3_600_000] {
            let want = catalog.lookup(ad, at).map(|(c, a)| (c.to_string(), a.to_string()));
            assert_eq!(attributed(reader, ad, at), want, "ad {ad} at {at}");
            checked += 1;
        }
    }
    assert!(checked > 400, "{checked} lookups");
    assert_eq!(attributed(reader, "no-such-ad", u64::MAX / 2), None);
}

#[test]
fn the_catalog_a_job_counted_with_is_published_whole_and_followed_when_it_changes() {
    let setup = setup("catalog", 4_000, 31);
    checked(&mut run_job(&setup, &setup.data, 1, None));
    let reader = CassandraReader::open(&config(), &setup.name).unwrap();
    assert_catalog_is(&reader, &setup.catalog);
    // A new catalog version for an ad, from a time after the counted
    // clicks: the next run publishes it, and its settings name it.
    let text = std::fs::read_to_string(&setup.catalog).unwrap();
    let ad = text.lines().find_map(|l| l.split(',').next().filter(|a| a.starts_with("ad-"))).unwrap().to_owned();
    let changed = setup.dir.join("ads-2.csv");
    std::fs::write(&changed, format!("{text}{ad},moved-campaign,moved-advertiser,4102444800000\n")).unwrap();
    checked(tally(&setup.data).args(["run", "--bounded", "-w", "1"]).arg(&setup.job).arg("--catalog").arg(&changed));
    assert_catalog_is(&reader, &changed);
    assert_eq!(attributed(&reader, &ad, 4_102_444_800_000), Some(("moved-campaign".into(), "moved-advertiser".into())));
}

// ---------------------------------------------------------------------------
// Versions of a Cassandra job's output: `tally backfill`, `versions`,
// `switch`, `export --version`, `verify --version`, as in tests/backfill.rs
// for the embedded store.

/// Event time of the first generated click (`tally gen`'s default).
const GEN_START_MS: u64 = 1_767_225_600_000;

/// Runs `tally --data-dir DATA ARGS` for `setup`: exit code, stdout, stderr.
fn run_tally(setup: &Setup, args: &[&str]) -> (i32, String, String) {
    let out = finish(tally(&setup.data).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn tally"));
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

/// `tally COMMAND JOB REST` (the job file in second place), which must
/// succeed: its stdout and stderr.
fn with_job(setup: &Setup, command: &str, rest: &[&str]) -> String {
    let job = setup.job.to_str().unwrap();
    let args = [&[command, job][..], rest].concat();
    let (code, stdout, stderr) = run_tally(setup, &args);
    assert_eq!(code, 0, "tally {args:?}:\n{stdout}{stderr}");
    stdout + &stderr
}

/// `tally COMMAND ARGS --job JOB`, for `versions` and `switch`, which must
/// succeed.
fn on_versions(setup: &Setup, args: &[&str]) -> String {
    let args = [args, &["--job", setup.job.to_str().unwrap()]].concat();
    let (code, stdout, stderr) = run_tally(setup, &args);
    assert_eq!(code, 0, "tally {args:?}:\n{stdout}{stderr}");
    stdout + &stderr
}

/// A backfill of `setup`'s job with its catalog.
fn backfill(setup: &Setup, rest: &[&str]) -> String {
    with_job(setup, "backfill", &[&["--catalog", setup.catalog.to_str().unwrap()][..], rest].concat())
}

/// The rows `tally export` writes of `version` (or of the serving one),
/// sorted.
fn export_rows(setup: &Setup, version: Option<&str>) -> Vec<String> {
    let out = setup.dir.join("export.ndjson");
    let mut args = vec!["--output", out.to_str().unwrap()];
    args.extend(version.iter().flat_map(|v| ["--version", v]));
    with_job(setup, "export", &args);
    let mut rows: Vec<String> = std::fs::read_to_string(out).unwrap().lines().map(str::to_owned).collect();
    rows.sort();
    rows
}

/// `tally verify --version NAME`: exit code and stdout.
fn verify_version(setup: &Setup, version: &str) -> (i32, String) {
    let args = ["verify", setup.job.to_str().unwrap(), "--catalog", setup.catalog.to_str().unwrap(), "--version", version];
    let (code, stdout, stderr) = run_tally(setup, &args);
    assert!(stdout.starts_with("verify: "), "verify printed:\n{stdout}{stderr}");
    (code, stdout)
}

/// Clicks of the `ad` rows at 1h in exported rows.
fn hourly_clicks(rows: &[String]) -> u64 {
    rows.iter()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|row| row["key_type"] == "ad" && row["granularity"] == "1h")
        .map(|row| row["clicks"].as_u64().unwrap())
        .sum()
}

/// An event time `seconds` into the generated clicks.
fn at(seconds: u64) -> String {
    (GEN_START_MS + seconds * 1_000).to_string()
}

/// Runs one CQL statement on the test node; its rows.
fn cql<R>(statement: &str, values: impl scylla::serialize::row::SerializeRow) -> Vec<R>
where
    R: for<'f> scylla::deserialize::row::DeserializeRow<'f, 'f>,
{
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let session = scylla::client::session_builder::SessionBuilder::new().known_node(cassandra()).build().await.unwrap();
        let answer = session.query_unpaged(statement, values).await.unwrap();
        match answer.into_rows_result() {
            Ok(rows) => rows.rows::<R>().unwrap().map(Result::unwrap).collect(),
            Err(_) => Vec::new(),
        }
    })
}

/// Every row of the job's versions partition: name, published build,
/// pending build, retired builds, and the pointer.
type VersionRow = (Option<String>, Option<String>, Option<String>, Option<Vec<String>>, Option<String>, Option<String>);

fn version_rows(job: &str) -> Vec<VersionRow> {
    let statement =
        format!("SELECT name, build, pending, retired, serving, serving_build FROM {KEYSPACE}.output_versions WHERE job = ? AND name > ''");
    cql(&statement, (job,))
}

/// The internal job names of the builds of `job` that have a `jobs` row.
fn build_jobs(job: &str) -> Vec<String> {
    let prefix = format!("{job}/");
    let jobs: Vec<(String,)> = cql(&format!("SELECT job FROM {KEYSPACE}.jobs"), ());
    jobs.into_iter().map(|(name,)| name).filter(|name| name.starts_with(&prefix)).collect()
}

/// The published build of version `name`.
fn published_build(job: &str, name: &str) -> String {
    let row = version_rows(job).into_iter().find(|row| row.0.as_deref() == Some(name)).expect("a row for the version");
    row.1.expect("a published build")
}

/// `key_type, key, granularity, bucket, window_start, version, epoch,
/// clicks` of `row_versions`.
type VersionColumns = (i8, String, i64, i64, i64, i32, i64, i64);

/// A backfilled version counts exactly its range: `tally verify --version`
/// recounts that range from the log and finds every row right; one row of
/// the version changed in the table is then a mismatch, and the live
/// output is untouched.
#[test]
fn a_cassandra_version_counts_its_range_and_verify_catches_a_changed_row() {
    let setup = setup("vcount", 100_000, 31);
    checked(&mut run_job(&setup, &setup.data, 2, None));
    let out = backfill(&setup, &["--from", &at(5), "--to", &at(35), "--version", "v1"]);
    assert!(out.contains("backfill v1: ") && out.contains(&format!("--job {}", setup.job.display())), "{out}");
    let (code, summary) = verify_version(&setup, "v1");
    assert_eq!(code, 0, "{summary}");
    assert!(summary.contains(", 0 mismatches"), "{summary}");
    let windows: u64 = summary.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap();
    assert!(windows > 1_000, "{summary}");
    // The listing counts the range's clicks: the log's offsets between the times.
    let listed = on_versions(&setup, &["versions"]);
    let line = listed.lines().find(|l| l.starts_with("  v1 ")).unwrap_or_else(|| panic!("{listed}"));
    let log = tally::log::LogView::open(&setup.data.join("log")).unwrap();
    let range: u64 = log
        .offsets_at_time(GEN_START_MS + 35_000)
        .unwrap()
        .iter()
        .zip(log.offsets_at_time(GEN_START_MS + 5_000).unwrap())
        .map(|(end, start)| end - start)
        .sum();
    assert!(line.split_whitespace().any(|field| field == range.to_string()), "{range} clicks in: {line}");

    // The newest version of one window of the version, one click more (at a
    // timestamp just above its epoch's), as a broken apply would leave it.
    let build = tally::store::cassandra::build_job(&setup.name, "v1", &published_build(&setup.name, "v1"));
    let versions: Vec<VersionColumns> = cql(
        &format!(
            "SELECT key_type, key, granularity, bucket, window_start, version, epoch, clicks FROM {KEYSPACE}.row_versions WHERE job = ? ALLOW FILTERING"
        ),
        (build.as_str(),),
    );
    let window = |v: &VersionColumns| (v.0, v.1.clone(), v.2, v.3, v.4);
    let chosen = window(versions.iter().find(|v| v.2 == 60_000).expect("settled 1m windows"));
    let (kt, key, g, bucket, start, version, epoch, clicks) =
        versions.into_iter().filter(|v| window(v) == chosen).max_by_key(|v| v.5).unwrap();
    cql::<(bool,)>(
        &format!(
            "UPDATE {KEYSPACE}.row_versions USING TIMESTAMP ? SET clicks = ? WHERE job = ? AND key_type = ? AND key = ? AND granularity = ? AND bucket = ? AND window_start = ? AND version = ?"
        ),
        (epoch * 1_000 + 1, clicks + 1, build.as_str(), kt, key.as_str(), g, bucket, start, version),
    );
    let (code, summary) = verify_version(&setup, "v1");
    assert_eq!(code, 1, "{summary}");
    assert!(summary.contains(", 1 mismatches") && summary.contains("clicks: expected"), "{summary}");
    let (clean, summary) = verify(&setup);
    assert!(clean, "the live output is untouched:\n{summary}");
}

/// Two backfills of one range, with 1 and 2 workers, export the same rows,
/// and so does a backfill of that range into the embedded store.
#[test]
fn two_cassandra_backfills_of_one_range_export_the_rows_of_an_embedded_backfill() {
    let setup = setup("vsame", 100_000, 32);
    let (from, to) = (at(10), at(40));
    backfill(&setup, &["--from", &from, "--to", &to, "--version", "a"]);
    backfill(&setup, &["--from", &from, "--to", &to, "--version", "b", "-w", "2"]);
    let (a, b) = (export_rows(&setup, Some("a")), export_rows(&setup, Some("b")));
    assert!(a.len() > 1_000, "{} rows", a.len());
    assert!(a == b, "two backfills of one range differ");
    let embedded = setup.dir.join("embedded.toml");
    std::fs::write(&embedded, "[source]\nkind = \"log\"\npartitions = 8\n[sink]\nkind = \"store\"\n").unwrap();
    let catalog = setup.catalog.to_str().unwrap();
    let embedded = embedded.to_str().unwrap();
    let args = ["backfill", embedded, "--catalog", catalog, "--from", &from, "--to", &to, "--version", "e"];
    assert_eq!(run_tally(&setup, &args).0, 0);
    let out = setup.dir.join("embedded.ndjson");
    assert_eq!(run_tally(&setup, &["export", embedded, "--version", "e", "--output", out.to_str().unwrap()]).0, 0);
    let mut e: Vec<String> = std::fs::read_to_string(out).unwrap().lines().map(str::to_owned).collect();
    e.sort();
    assert!(a == e, "the Cassandra version differs from the embedded one");
    // Neither touched the live output: the job has none.
    assert!(progress(&setup.name).1.is_none());
}

/// A backfill killed midway leaves no version, only its claim; the next
/// backfill of the name takes the claim over, deletes the killed build's
/// rows and makes the version.
#[test]
fn a_killed_cassandra_backfill_leaves_no_version_and_the_next_one_succeeds() {
    let setup = setup("vkill", 300_000, 33);
    let mut child = tally(&setup.data)
        .args(["backfill"])
        .arg(&setup.job)
        .args(["--catalog", setup.catalog.to_str().unwrap(), "--version", "v"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let killed_build = loop {
        let pending = version_rows(&setup.name).into_iter().find_map(|row| row.2);
        if let Some(build) = pending.filter(|b| progress(&tally::store::cassandra::build_job(&setup.name, "v", b)).1.is_some()) {
            break build;
        }
        assert!(child.try_wait().unwrap().is_none(), "the backfill ended before it was killed");
        assert!(started.elapsed() < Duration::from_secs(120), "the backfill never committed");
        std::thread::sleep(Duration::from_millis(100));
    };
    child.kill().unwrap();
    let out = wait_for(&mut child, Duration::from_secs(30));
    assert!(killed(&out), "{}", String::from_utf8_lossy(&out.stderr));
    let killed_job = tally::store::cassandra::build_job(&setup.name, "v", &killed_build);
    assert!(!window_rows(&killed_job).is_empty(), "the killed build had applied rows");

    let listed = on_versions(&setup, &["versions"]);
    assert!(!listed.contains(" v "), "{listed}");
    let (code, _, stderr) = run_tally(&setup, &["export", setup.job.to_str().unwrap(), "--version", "v", "--output", "/dev/null"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("version \"v\" does not exist"), "{stderr}");

    let out = backfill(&setup, &["--version", "v"]);
    assert!(out.contains("taking the name over from the backfill of") && out.contains(&killed_build), "{out}");
    let (code, summary) = verify_version(&setup, "v");
    assert!(code == 0 && summary.contains(", 0 mismatches"), "{summary}");
    assert!(window_rows(&killed_job).is_empty(), "the killed build's rows are deleted");
    assert_eq!(build_jobs(&setup.name), [tally::store::cassandra::build_job(&setup.name, "v", &published_build(&setup.name, "v"))]);
}

/// Export follows the pointer; the serving version can be neither deleted
/// nor replaced; a replaced or deleted version's rows are deleted.
#[test]
fn cassandra_versions_are_switched_and_deleted_but_never_the_serving_one() {
    let setup = setup("vswitch", 100_000, 34);
    checked(&mut run_job(&setup, &setup.data, 1, None));
    backfill(&setup, &["--to", &at(25), "--version", "first-half"]);
    let listed = on_versions(&setup, &["versions"]);
    let lines: Vec<&str> = listed.lines().collect();
    assert!(lines[1].starts_with("* live ") && lines[2].starts_with("  first-half ") && lines[2].contains("earliest .. "), "{listed}");

    let (live, half) = (export_rows(&setup, None), export_rows(&setup, Some("first-half")));
    assert!(hourly_clicks(&half) < hourly_clicks(&live), "{} vs {}", hourly_clicks(&half), hourly_clicks(&live));
    assert!(on_versions(&setup, &["switch", "first-half"]).contains("serving first-half (was live)"));
    assert!(export_rows(&setup, None) == half, "export serves the serving version");
    assert!(export_rows(&setup, Some("live")) == live);
    assert!(on_versions(&setup, &["versions"]).lines().any(|l| l.starts_with("* first-half ")));
    let job = setup.job.to_str().unwrap();
    let (code, _, stderr) = run_tally(&setup, &["versions", "--job", job, "delete", "first-half"]);
    assert_eq!((code, stderr.lines().count()), (2, 1), "{stderr}");
    assert!(stderr.contains("is serving"), "{stderr}");
    let (code, _, stderr) = run_tally(&setup, &["backfill", job, "--version", "first-half", "--replace"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is serving"), "{stderr}");

    on_versions(&setup, &["switch", "live"]);
    assert!(export_rows(&setup, None) == live);
    let old = published_build(&setup.name, "first-half");
    backfill(&setup, &["--to", &at(15), "--version", "first-half", "--replace"]);
    let replaced = export_rows(&setup, Some("first-half"));
    assert!(hourly_clicks(&replaced) < hourly_clicks(&half), "replaced");
    assert!(window_rows(&tally::store::cassandra::build_job(&setup.name, "first-half", &old)).is_empty(), "the old build is deleted");
    on_versions(&setup, &["versions", "delete", "first-half"]);
    assert!(!on_versions(&setup, &["versions"]).contains("first-half"));
    assert!(version_rows(&setup.name).is_empty(), "{:?}", version_rows(&setup.name));
    assert!(build_jobs(&setup.name).is_empty());
    let (clean, summary) = verify(&setup);
    assert!(clean, "the live output is untouched:\n{summary}");
}

/// Bad input is one line naming the field, exit 2, and nothing is written:
/// not in Cassandra, not in the data directory.
#[test]
fn bad_input_to_cassandra_versions_is_refused_and_writes_nothing() {
    let setup = setup("vbad", 20_000, 35);
    backfill(&setup, &["--to", &at(5), "--version", "old"]);
    let written = || (version_rows(&setup.name), build_jobs(&setup.name), setup.data.join("versions").exists());
    let before = written();
    let job = setup.job.to_str().unwrap();
    let long = "x".repeat(65);
    let cases: [(&[&str], &str); 15] = [
        (&["backfill", job, "--version", "bad/name"], "--version bad/name: '/' is not allowed"),
        (&["backfill", job, "--version", "live"], "--version live: \"live\" is reserved"),
        (&["backfill", job, "--version", &long], "at most 64"),
        (
            &["backfill", job, "--version", "v", "--from", "0:50", "--to", "0:10"],
            "--to 0:10: partition 0: offset 10 is before the --from offset 50",
        ),
        (
            &["backfill", job, "--version", "v", "--from", "0:99999999"],
            "--from 0:99999999: partition 0: offset 99999999 is outside the log's offsets",
        ),
        (&["backfill", job, "--version", "v", "--from", "latest"], "holds no clicks"),
        (&["backfill", job, "--version", "old"], "version \"old\" exists; pass --replace"),
        (&["backfill", job, "--version", "v", "--cassandra", "nohost"], "sink.hosts"),
        (&["switch", "nope", "--job", job], "version \"nope\" does not exist"),
        (&["switch", "a/b", "--job", job], "version name \"a/b\""),
        (&["switch", "old", "--cassandra", "127.0.0.1:9"], "--cassandra: it needs --job"),
        (&["verify", job, "--version", "nope"], "version \"nope\" does not exist"),
        (&["export", job, "--version", "nope", "--output", "/dev/null"], "version \"nope\" does not exist"),
        (&["versions", "--job", job, "delete", "live"], "never deleted"),
        (&["versions", "--job", job, "delete", "nope"], "version \"nope\" does not exist"),
    ];
    for (args, reason) in cases {
        let (code, stdout, stderr) = run_tally(&setup, args);
        assert_eq!(code, 2, "{args:?}: {stdout}{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
        assert!(stderr.starts_with("error: ") && stderr.contains(reason), "{args:?}: wanted {reason:?} in {stderr}");
        assert_eq!(written(), before, "{args:?} wrote nothing");
    }
}

/// Switches, deletes and replacing publishes racing each other, through
/// the store's API: whatever wins, the pointer names a published version
/// and its build.
#[test]
fn racing_switches_deletes_and_publishes_never_serve_a_missing_version() {
    use tally::store::cassandra::{CassandraManifest, CassandraVersions, Served};
    use tally::store::versions::{Manifest, VersionError};
    let job = format!("race_{}", std::process::id());
    let versions = CassandraVersions::open_to_build(&config(), &job).unwrap();
    let manifest = |name: &str| CassandraManifest {
        manifest: Manifest {
            name: name.into(),
            job: "job.toml".into(),
            from: "earliest".into(),
            to: "latest".into(),
            start: vec![0],
            end: vec![0],
            created_ms: 0,
        },
        source: "test".into(),
        rows: 0,
        committed_epoch: None,
    };
    // Empty builds: the race is about the partition, not the rows.
    let publish = |name: &str, replace: bool| {
        let claim = versions.claim(name, replace).unwrap();
        versions.publish(&claim, &manifest(name), replace).map(|()| claim.build)
    };
    let check = |versions: &CassandraVersions| {
        let served = versions.serving().unwrap();
        if served.name != tally::store::versions::LIVE {
            let published = published_build(&job, &served.name);
            assert_eq!(served.build.as_deref(), Some(published.as_str()), "the pointer's build is the one published");
        }
        served
    };
    for round in 0..3 {
        let name = format!("r{round}");
        publish(&name, false).unwrap();
        let (switched, deleted) = std::thread::scope(|scope| {
            let switching = scope.spawn(|| versions.switch(&name));
            let deleting = scope.spawn(|| versions.delete(&name));
            (switching.join().unwrap(), deleting.join().unwrap())
        });
        let served = check(&versions);
        match (switched, deleted) {
            (Ok(_), Err(VersionError::Serving { .. })) => assert_eq!(served.name, name),
            (Err(VersionError::Unknown(_)), Ok(())) => assert_eq!(served.name, "live"),
            other => panic!("round {round}: both or neither won: {other:?}"),
        }
        versions.switch("live").unwrap();
    }
    // A replacing publish racing a switch to the name.
    let first = publish("p", false).unwrap();
    let claim = versions.claim("p", true).unwrap();
    let (published, switched) = std::thread::scope(|scope| {
        let publishing = scope.spawn(|| versions.publish(&claim, &manifest("p"), true));
        let switching = scope.spawn(|| versions.switch("p"));
        (publishing.join().unwrap(), switching.join().unwrap())
    });
    switched.unwrap();
    let served = check(&versions);
    match published {
        Ok(()) => assert_eq!(served, Served { name: "p".into(), build: Some(claim.build.clone()) }),
        Err(VersionError::Serving { .. }) => {
            assert_eq!(served, Served { name: "p".into(), build: Some(first) });
            versions.abandon(&claim).unwrap();
        }
        Err(other) => panic!("{other}"),
    }
    assert!(matches!(versions.delete("p"), Err(VersionError::Serving { .. })));
}

/// `tally up` on Cassandra: ingest, the live job committing to the
/// shared node, and the query API and dashboard reading it.
///
/// - `tally up --cassandra HOSTS` fed known clicks over HTTP (retries and
///   too-late clicks among them): once the query API shows a recount of
///   them, every route answers what the store holds, as `tally export
///   --cassandra` writes it after a clean stop, never past the applied
///   epoch; `tally verify --cassandra` then finds 0 mismatches.
/// - A `tally switch` of its job reaches the running `tally up`, and a
///   reader polling across it sees one version, then the other.
/// - `tally up --kafka BROKERS --cassandra HOSTS` (a broker of the test's
///   own): Kafka in, Cassandra out, recounted and verified alike.
/// - A Cassandra that cannot be reached, never or after the query API
///   connected (a proxy in front of the node cut and restored): every
///   route that reads the store answers `503 {"field":"store"}` within the
///   driver's request timeout, and answers again once it is back.
mod up {
    use std::collections::BTreeSet;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use serde_json::{json, Value};
    use tally::ingest::client::HttpClient;

    use super::*;

    const HOUR_MS: u64 = 3_600_000;
    const GRANULARITIES: [(&str, u64); 3] = [("1m", 60_000), ("5m", 300_000), ("1h", HOUR_MS)];
    /// ad → (campaign, advertiser).
    const CATALOG: [(&str, &str, &str); 5] = [
        ("cu-ad-0", "cu-cmp-0", "cu-adv-0"),
        ("cu-ad-1", "cu-cmp-0", "cu-adv-0"),
        ("cu-ad-2", "cu-cmp-1", "cu-adv-0"),
        ("cu-ad-3", "cu-cmp-1", "cu-adv-0"),
        ("cu-ad-4", "cu-cmp-2", "cu-adv-1"),
    ];
    /// Every read route of the query API, with parameters that are valid.
    const READ_ROUTES: [&str; 7] = [
        "/v1/ads/cu-ad-0/clicks",
        "/v1/campaigns/cu-cmp-0/clicks",
        "/v1/advertisers/cu-adv-0/clicks?window=1h",
        "/v1/top",
        "/v1/late",
        "/v1/stats",
        "/readyz",
    ];

    fn now_ms() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
    }

    struct Click {
        ad: usize,
        ts: u64,
        user: u64,
        id: u64,
    }

    impl Click {
        fn json(&self) -> String {
            format!(
                r#"{{"ad_id":"{}","timestamp":{},"user_id":"u{}","request_id":"00000000-0000-0000-0000-{:012x}"}}"#,
                CATALOG[self.ad].0, self.ts, self.user, self.id
            )
        }
    }

    /// Seeded clicks, 10 per second of event time from 10 minutes into
    /// `hour`, up to 2 s out of order.
    fn clicks(hour: u64, ids: std::ops::Range<u64>) -> Vec<Click> {
        ids.map(|id| {
            let mix = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let ts = hour + 600_000 + id * 100 + (mix >> 20) % 2_000;
            Click { ad: (mix >> 7) as usize % 5, ts, user: (mix >> 40) % 300, id }
        })
        .collect()
    }

    /// Key type, key, granularity label, window start.
    type Window = (String, String, String, u64);

    /// Distinct request ids per window, from the clicks sent.
    fn recount(sent: &[&Click]) -> BTreeMap<Window, u64> {
        let mut ids: BTreeMap<Window, BTreeSet<u64>> = BTreeMap::new();
        for click in sent {
            let (ad, campaign, advertiser) = CATALOG[click.ad];
            for (key_type, key) in [("ad", ad), ("campaign", campaign), ("advertiser", advertiser)] {
                for (label, ms) in GRANULARITIES {
                    let start = click.ts / ms * ms;
                    ids.entry((key_type.to_owned(), key.to_owned(), label.to_owned(), start)).or_default().insert(click.id);
                }
            }
        }
        ids.into_iter().map(|(window, ids)| (window, ids.len() as u64)).collect()
    }

    /// The fields of a row both the query API and `tally export` write.
    fn row_fields(row: &Value) -> Value {
        json!({
            "window_end": row["window_end"],
            "clicks": row["clicks"],
            "distinct_users": row["distinct_users"],
            "status": row["status"],
            "version": row["version"],
        })
    }

    /// What the series routes answer for every key and granularity of the
    /// catalog over `[from, to)`, and the largest `committed_epoch` seen.
    fn series(http: &mut HttpClient, from: u64, to: u64) -> (BTreeMap<Window, Value>, u64) {
        let keys: BTreeSet<(&str, &str)> =
            CATALOG.iter().flat_map(|(ad, cmp, adv)| [("ads", *ad), ("campaigns", *cmp), ("advertisers", *adv)]).collect();
        let (mut rows, mut epoch) = (BTreeMap::new(), 0);
        for (path, key) in keys {
            for (label, _) in GRANULARITIES {
                let reply = http.get(&format!("/v1/{path}/{key}/clicks?window={label}&from={from}&to={to}")).unwrap();
                assert_eq!(reply.status, 200, "{}", reply.text());
                let body = reply.json();
                assert_eq!(body["committed_epoch"], body["watermark"], "{body}");
                epoch = epoch.max(body["committed_epoch"].as_u64().unwrap_or(0));
                let key_type = body["key_type"].as_str().unwrap().to_owned();
                for row in body["rows"].as_array().unwrap() {
                    let window = (key_type.clone(), key.to_owned(), label.to_owned(), row["window_start"].as_u64().unwrap());
                    rows.insert(window, row_fields(row));
                }
            }
        }
        (rows, epoch)
    }

    /// Settled clicks per window, as the series routes answer them.
    fn settled(rows: &BTreeMap<Window, Value>) -> BTreeMap<Window, u64> {
        rows.iter().filter(|(_, row)| row["status"] != "partial").map(|(w, row)| (w.clone(), row["clicks"].as_u64().unwrap())).collect()
    }

    /// Polls the series routes until they show `expected` (all settled).
    fn wait_for_recount(up: &mut Up, http: &mut HttpClient, expected: &BTreeMap<Window, u64>, from: u64, to: u64) {
        let started = Instant::now();
        loop {
            if let Some(status) = up.child.try_wait().unwrap() {
                panic!("tally up ended ({status}):\n{}", up.stderr());
            }
            let (rows, _) = series(http, from, to);
            if &settled(&rows) == expected && rows.len() == expected.len() {
                return;
            }
            if started.elapsed() > Duration::from_secs(120) {
                let wrong: Vec<_> =
                    expected.iter().filter(|(k, v)| rows.get(*k).map(|r| &r["clicks"]) != Some(&json!(v))).take(5).collect();
                let answered: Vec<_> = wrong.iter().map(|(k, _)| rows.get(*k)).collect();
                panic!(
                    "the query API never matched the recount: {} windows expected, {} answered; first differences: {wrong:?}, \
                     answered {answered:?}; stats {}\n{}",
                    expected.len(),
                    rows.len(),
                    http.get("/v1/stats").map(|r| r.text()).unwrap_or_default(),
                    up.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// `tally up` as a child, killed when dropped.
    struct Up {
        child: Child,
        addr: SocketAddr,
        log: PathBuf,
    }

    impl Up {
        /// `tally up --no-auth` on `data` with `args`, once it listens.
        fn start(data: &Path, log: PathBuf, args: &[&std::ffi::OsStr]) -> Up {
            Up::spawn(data, log, &["--no-auth".as_ref()], args)
        }

        /// `tally up` on `data` with `auth` and `args`, once it listens.
        fn spawn(data: &Path, log: PathBuf, auth: &[&std::ffi::OsStr], args: &[&std::ffi::OsStr]) -> Up {
            let addr = free_addr();
            let child = tally(data)
                .args(["up", "--addr", &addr.to_string()])
                .args(auth)
                .args(args)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("spawn tally up");
            let mut up = Up { child, addr, log };
            let started = Instant::now();
            while !listening(addr) {
                if let Some(status) = up.child.try_wait().unwrap() {
                    panic!("tally up ended ({status}):\n{}", up.stderr());
                }
                assert!(started.elapsed() < Duration::from_secs(60), "tally up did not listen:\n{}", up.stderr());
                std::thread::sleep(Duration::from_millis(20));
            }
            up
        }

        fn stderr(&self) -> String {
            std::fs::read_to_string(&self.log).unwrap_or_default()
        }

        /// SIGTERM; the process must stop cleanly (exit 0).
        fn stop(mut self) -> String {
            signal(&self.child, "TERM");
            let started = Instant::now();
            let status = loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    break status;
                }
                assert!(started.elapsed() < Duration::from_secs(60), "tally up did not stop on SIGTERM:\n{}", self.stderr());
                std::thread::sleep(Duration::from_millis(20));
            };
            let stderr = self.stderr();
            assert!(status.success(), "tally up did not stop cleanly ({status}):\n{stderr}");
            stderr
        }
    }

    impl Drop for Up {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn post(http: &mut HttpClient, batch: &[Click]) {
        let body = batch.iter().map(Click::json).collect::<Vec<_>>().join("\n");
        let reply = http.post_until_accepted("/v1/clicks/batch", "application/x-ndjson", body.as_bytes(), 30).unwrap();
        assert_eq!(reply.status, 202, "{}", reply.text());
    }

    /// A scratch folder with the catalog, and a job file committing to the
    /// shared node's test keyspace as job `name` (hosts given by
    /// `--cassandra`: the file names a closed port) from `source`.
    fn scratch(name: &str, source: &str) -> (PathBuf, PathBuf, PathBuf, String) {
        let dir = Path::new(ROOT).join("target/test-cassandra").join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let catalog = dir.join("ads.csv");
        let csv: String = CATALOG.iter().map(|(ad, cmp, adv)| format!("{ad},{cmp},{adv}\n")).collect();
        std::fs::write(&catalog, format!("ad_id,campaign_id,advertiser_id\n{csv}")).unwrap();
        let job_name = format!("{name}_{}", std::process::id());
        let job = dir.join("job.toml");
        let text = format!(
            "name = \"{job_name}\"\n{source}\n[sink]\nkind = \"cassandra\"\nhosts = \"127.0.0.1:1\"\nkeyspace = \"{KEYSPACE}\"\n\
             [late]\nrestate_within = \"3h\"\n"
        );
        std::fs::write(&job, text).unwrap();
        (dir, catalog, job, job_name)
    }

    /// Rows of a `tally export` file by window.
    fn exported_rows(file: &Path) -> BTreeMap<Window, Value> {
        std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .map(|line| {
                let row: Value = serde_json::from_str(line).unwrap();
                let text = |key: &str| row[key].as_str().unwrap().to_owned();
                ((text("key_type"), text("key"), text("granularity"), row["window_start"].as_u64().unwrap()), row_fields(&row))
            })
            .collect()
    }

    /// Ranked as `/v1/top` ranks: clicks descending, then key.
    fn ranked(rows: &BTreeMap<Window, Value>, key_type: &str, label: &str, start: u64) -> Vec<Value> {
        let mut of_window: Vec<(&Window, &Value)> = rows.iter().filter(|(w, _)| w.0 == key_type && w.2 == label && w.3 == start).collect();
        of_window.sort_by(|a, b| b.1["clicks"].as_u64().cmp(&a.1["clicks"].as_u64()).then_with(|| a.0 .1.cmp(&b.0 .1)));
        of_window
            .into_iter()
            .map(|(w, row)| {
                json!({ "key": w.1, "clicks": row["clicks"], "distinct_users": row["distinct_users"], "status": row["status"], "version": row["version"] })
            })
            .collect()
    }

    /// `/v1/top` of every window the rows have, and without `at`.
    fn tops(http: &mut HttpClient, rows: &BTreeMap<Window, Value>) -> BTreeMap<(String, Option<u64>), Value> {
        let mut out = BTreeMap::new();
        let windows: BTreeSet<(String, u64)> = rows.keys().filter(|w| w.0 == "ad").map(|w| (w.2.clone(), w.3)).collect();
        for (label, start) in windows.iter().map(|(l, s)| (l.clone(), Some(*s))).chain([("1m".to_owned(), None)]) {
            let at = start.map_or(String::new(), |s| format!("&at={s}"));
            let reply = http.get(&format!("/v1/top?window={label}&k=100{at}")).unwrap();
            assert_eq!(reply.status, 200, "{}", reply.text());
            out.insert((label, start), reply.json());
        }
        out
    }

    /// The whole late ledger of `[from, to)` from `/v1/late`, checked to
    /// read the same in pages of 3 entries, each page from the previous
    /// one's cursor (no entry here is long enough to be cut by a page).
    fn ledger(http: &mut HttpClient, from: u64, to: u64) -> Vec<Value> {
        let whole = http.get(&format!("/v1/late?from={from}&to={to}&limit=1000")).unwrap();
        assert_eq!(whole.status, 200, "{}", whole.text());
        let whole = whole.json();
        assert!(whole["next"].is_null(), "{whole}");
        let whole = whole["entries"].as_array().unwrap().clone();
        let (mut paged, mut after) = (Vec::new(), String::new());
        loop {
            let body = http.get(&format!("/v1/late?from={from}&to={to}&limit=3{after}")).unwrap().json();
            paged.extend(body["entries"].as_array().unwrap().iter().cloned());
            match body["next"].as_str() {
                Some(next) => after = format!("&after={next}"),
                None => break,
            }
        }
        assert!(paged == whole, "the ledger in pages differs from the ledger read whole");
        whole
    }

    /// `tally keys --job J --cassandra HOSTS` on a scratch data directory
    /// (its own, so no key file is shared): what it prints, and its exit
    /// status.
    fn keys(dir: &Path, job: &Path, args: &[&str]) -> (i32, String, String) {
        let out =
            tally(&dir.join("keys-data")).arg("keys").args(args).arg("--job").arg(job).args(["--cassandra", cassandra()]).output().unwrap();
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
    }

    /// The status of `GET path` with `key` as Bearer (none: no header).
    fn status_with(addr: SocketAddr, path: &str, key: Option<&str>) -> (u16, String) {
        let mut stream = TcpStream::connect(addr).unwrap();
        let auth = key.map_or(String::new(), |key| format!("Authorization: Bearer {key}\r\n"));
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n");
        std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
        let status = answer.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
        (status, answer)
    }

    /// Keys made with `tally keys --cassandra` live in the job's keyspace
    /// (as digests only), a `tally up` of the job on another data
    /// directory checks them, and a revoke reaches it within seconds; a key
    /// of a data directory's file is not one of the job's.
    #[test]
    fn api_keys_kept_in_the_keyspace_are_checked_by_tally_up_and_a_revoke_reaches_it() {
        let (dir, catalog, job, name) = scratch("keys", "[source]\nkind = \"log\"\npartitions = 2");
        let (code, advertiser, said) = keys(&dir, &job, &["add", "--advertiser", "cu-adv-1", "--name", "acme"]);
        assert_eq!(code, 0, "{said}");
        let advertiser = advertiser.trim().to_owned();
        assert!(said.contains(&format!("keyspace {KEYSPACE} job {name}")), "it says where the key is: {said}");
        let (code, operator, said) = keys(&dir, &job, &["add", "--operator"]);
        assert_eq!(code, 0, "{said}");
        let operator = operator.trim().to_owned();

        // The keyspace keeps each key's digest, never its secret (checked
        // with sha256sum, not with tally's own hashing).
        let stored: Vec<(String, String, String)> =
            cql(&format!("SELECT id, scope, secret_sha256 FROM {KEYSPACE}.api_keys WHERE job = ?"), (name.as_str(),));
        assert_eq!(stored.len(), 2, "{stored:?}");
        for key in [&advertiser, &operator] {
            let (id, secret) = key.strip_prefix("tally_").unwrap().split_once('_').unwrap();
            let row = stored.iter().find(|(stored_id, _, _)| stored_id == id).expect("the key's row");
            let digest = Command::new("sh").arg("-c").arg(format!("printf %s {secret} | sha256sum")).output().unwrap();
            assert_eq!(String::from_utf8_lossy(&digest.stdout).split_whitespace().next(), Some(row.2.as_str()));
            assert!(!row.2.contains(secret));
        }
        let (code, listed, said) = keys(&dir, &job, &["list", "--json"]);
        assert_eq!(code, 0, "{said}");
        let listed: Vec<Value> = listed.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        let scopes: Vec<&str> = listed.iter().map(|key| key["scope"].as_str().unwrap()).collect();
        assert_eq!(scopes, ["advertiser:cu-adv-1", "operator"], "in creation order");
        assert!(listed.iter().all(|key| key["state"] == "active"));

        // `tally up` of the job, on a data directory of its own with a key
        // file holding another operator key: that one is not the job's.
        let data = dir.join("data");
        let local = tally(&data).args(["keys", "add", "--operator"]).output().unwrap();
        assert!(local.status.success(), "{}", String::from_utf8_lossy(&local.stderr));
        let local = String::from_utf8_lossy(&local.stdout).trim().to_owned();
        let local_config = Path::new(ROOT).join("jobs/ingest.local.toml");
        let up = Up::spawn(
            &data,
            dir.join("up.log"),
            &["--config".as_ref(), local_config.as_os_str()],
            &["--job".as_ref(), job.as_os_str(), "--cassandra".as_ref(), cassandra().as_ref(), "--catalog".as_ref(), catalog.as_os_str()],
        );
        let started = Instant::now();
        while status_with(up.addr, "/v1/stats", Some(&operator)).0 != 200 {
            assert!(started.elapsed() < Duration::from_secs(30), "the operator key never read:\n{}", up.stderr());
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(up.stderr().contains("2 active in cassandra"), "{}", up.stderr());
        assert_eq!(status_with(up.addr, "/v1/stats", Some(&advertiser)).0, 403, "an advertiser key does not read stats");
        assert_eq!(status_with(up.addr, "/v1/ads/cu-ad-4/clicks", Some(&advertiser)).0, 200, "its own ad");
        assert_eq!(status_with(up.addr, "/v1/ads/cu-ad-0/clicks", Some(&advertiser)).0, 404, "another's ad");
        for (key, what) in [(Some(local.as_str()), "a key of the data directory"), (None, "no key")] {
            assert_eq!(status_with(up.addr, "/v1/stats", key).0, 401, "{what}");
        }

        let id = advertiser.strip_prefix("tally_").unwrap().split_once('_').unwrap().0.to_owned();
        let (code, said, err) = keys(&dir, &job, &["revoke", &id]);
        assert_eq!(code, 0, "{err}");
        assert!(said.contains(&format!("revoked {id}")), "{said}");
        let revoked = Instant::now();
        loop {
            let (status, answer) = status_with(up.addr, "/v1/ads/cu-ad-4/clicks", Some(&advertiser));
            if status == 401 {
                assert!(answer.contains("revoked"), "{answer}");
                break;
            }
            assert!(revoked.elapsed() < Duration::from_secs(5), "the revoke did not reach tally up: {status}");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(status_with(up.addr, "/v1/stats", Some(&operator)).0, 200, "the other key still reads");
        let (code, _, err) = keys(&dir, &job, &["revoke", "00000000"]);
        assert_eq!(code, 2, "revoking no key is a usage error: {err}");
        assert!(err.contains("no key with id \"00000000\""), "{err}");
        let rows: Vec<(String,)> = cql(&format!("SELECT id FROM {KEYSPACE}.api_keys WHERE job = ?"), (name.as_str(),));
        assert_eq!(rows.len(), 2, "revoking a missing key made no row: {rows:?}");
        let log = up.stop();
        for secret in [&advertiser, &operator, &local] {
            assert!(!log.contains(secret.as_str()), "a key in the log:\n{log}");
        }
    }

    /// Everything `tally up` on Cassandra serves, compared with `tally
    /// export --cassandra` after a clean stop, and verified.
    #[test]
    fn tally_up_on_cassandra_answers_every_route_as_the_store_holds_and_verifies() {
        let (dir, catalog, job, name) = scratch("up", "[source]\nkind = \"log\"\npartitions = 8");
        let data = dir.join("data");
        let mut up = Up::start(
            &data,
            dir.join("up.log"),
            &["--job".as_ref(), job.as_os_str(), "--cassandra".as_ref(), cassandra().as_ref(), "--catalog".as_ref(), catalog.as_os_str()],
        );
        let mut http = HttpClient::new(up.addr, None);
        assert_eq!(http.get("/healthz").unwrap().status, 200);
        for asset in ["/", "/app.js", "/style.css"] {
            assert_eq!(http.get(asset).unwrap().status, 200, "{asset}");
        }

        // Clicks of the last complete hour, so every window they fall in
        // has ended; retries of some; and clicks 14 minutes older than
        // their partitions' progress (too late: restating, in the ledger).
        let hour = now_ms() / HOUR_MS * HOUR_MS - HOUR_MS;
        let (from, to) = (hour, hour + HOUR_MS);
        let first = clicks(hour, 0..1_500);
        for batch in first.chunks(250) {
            post(&mut http, batch);
        }
        post(&mut http, &first[1_200..1_300]);
        let late = clicks(hour - 840_000, 3_000..3_600);
        for batch in late.chunks(200) {
            post(&mut http, batch);
        }
        let sent: Vec<&Click> = first.iter().chain(&late).collect();
        wait_for_recount(&mut up, &mut http, &recount(&sent), from, to);

        // Every route, read while the job runs.
        let (rows, series_epoch) = series(&mut http, from, to);
        let tops = tops(&mut http, &rows);
        let entries = ledger(&mut http, from, to);
        let stats = http.get("/v1/stats").unwrap().json();
        let ready = http.get("/readyz").unwrap();
        assert_eq!(ready.status, 200, "{}", ready.text());
        let ready = ready.json();
        // Only applied epochs are served: none of the answers is past the
        // epoch applied in Cassandra after them.
        let applied = progress(&name).1.expect("the job applied epochs");
        for epoch in [Some(series_epoch), stats["committed_epoch"].as_u64(), ready["committed_epoch"].as_u64()]
            .into_iter()
            .chain(tops.values().map(|t| t["committed_epoch"].as_u64()))
        {
            assert!(epoch.is_some_and(|e| e > 0 && e <= applied), "an answer at epoch {epoch:?}, applied: {applied}");
        }
        assert_eq!(stats["watermark"], stats["committed_epoch"]);
        assert_eq!(stats["ingest"]["accepted"], 1_500 + 100 + 600, "{stats}");
        let job_stats = &stats["job"];
        assert_eq!(job_stats["duplicates"], 100, "{stats}");
        let counted: u64 = ["on_time", "restating", "held"].iter().map(|k| job_stats[k].as_u64().unwrap()).sum();
        assert_eq!(counted, 2_100, "{stats}");
        assert!(job_stats["restating"].as_u64().unwrap() + job_stats["held"].as_u64().unwrap() > 0, "no click was too late: {stats}");

        let stderr = up.stop();
        assert!(stderr.contains(&format!("committing to cassandra {} keyspace {KEYSPACE}", cassandra())), "{stderr}");

        // The store as `tally export --cassandra` reads it after the stop.
        let (rows_file, late_file) = (dir.join("rows.ndjson"), dir.join("rows.late.ndjson"));
        checked(
            tally(&data)
                .arg("export")
                .arg(&job)
                .args(["--cassandra", cassandra(), "--output"])
                .arg(&rows_file)
                .arg("--late")
                .arg(&late_file),
        );
        let exported = exported_rows(&rows_file);
        assert!(
            exported.len() > 30 && exported == rows,
            "the series routes ({} rows) differ from the export ({} rows)",
            rows.len(),
            exported.len()
        );
        for ((label, start), top) in &tops {
            let start = start.unwrap_or_else(|| exported.keys().filter(|w| w.0 == "ad" && w.2 == *label).map(|w| w.3).max().unwrap());
            let ads = ranked(&exported, "ad", label, start);
            let total: u64 = ads.iter().map(|a| a["clicks"].as_u64().unwrap()).sum();
            let want = json!({
                "window_start": start,
                "window_end": start + GRANULARITIES.iter().find(|g| g.0 == label).unwrap().1,
                "total_clicks": total,
                "ads": ads,
                "campaigns": ranked(&exported, "campaign", label, start),
            });
            let got = json!({
                "window_start": top["window_start"],
                "window_end": top["window_end"],
                "total_clicks": top["total_clicks"],
                "ads": top["ads"],
                "campaigns": top["campaigns"],
            });
            assert_eq!(got, want, "/v1/top?window={label} at {start}");
        }
        let mut exported_late: Vec<Value> =
            std::fs::read_to_string(&late_file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let mut answered = entries.clone();
        let order = |e: &Value| e.to_string();
        exported_late.sort_by_key(order);
        answered.sort_by_key(order);
        assert!(!answered.is_empty() && answered == exported_late, "/v1/late differs from the exported ledger");

        let out = checked(tally(&data).arg("verify").arg(&job).args(["--cassandra", cassandra(), "--catalog"]).arg(&catalog));
        let summary = String::from_utf8_lossy(&out.stdout);
        assert!(summary.contains(", 0 mismatches"), "{summary}");
    }

    /// `(window_start, clicks)` of one series answer: what differs between
    /// two versions of the output.
    fn clicks_by_window(http: &mut HttpClient, path: &str) -> Vec<(u64, u64)> {
        let reply = http.get(path).unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        let body = reply.json();
        body["rows"].as_array().unwrap().iter().map(|r| (r["window_start"].as_u64().unwrap(), r["clicks"].as_u64().unwrap())).collect()
    }

    /// A `tally switch` of a Cassandra job reaches its running `tally up`:
    /// the query API serves the version the keyspace's pointer names, then
    /// live again, and a reader polling meanwhile sees the old answer, then
    /// the new one, never a mix or a way back.
    #[test]
    fn tally_up_on_cassandra_follows_a_switch_and_no_answer_mixes_versions() {
        let (dir, catalog, job, _) = scratch("upswitch", "[source]\nkind = \"log\"\npartitions = 4");
        let data = dir.join("data");
        let hosts = cassandra();
        let args = ["--job".as_ref(), job.as_os_str(), "--cassandra".as_ref(), hosts.as_ref(), "--catalog".as_ref(), catalog.as_os_str()];
        let mut up = Up::start(&data, dir.join("up.log"), &args);
        let mut http = HttpClient::new(up.addr, None);
        let hour = now_ms() / HOUR_MS * HOUR_MS - HOUR_MS;
        let sent = clicks(hour, 0..1_200);
        for batch in sent.chunks(300) {
            post(&mut http, batch);
        }
        wait_for_recount(&mut up, &mut http, &recount(&sent.iter().collect::<Vec<_>>()), hour, hour + HOUR_MS);

        // Version `half`: the first minute of the clicks only, built while
        // `tally up` runs the live job.
        let half_end = (hour + 660_000).to_string();
        let (job_arg, catalog_arg) = (job.to_str().unwrap(), catalog.to_str().unwrap());
        let (to, from) = ("--to", "--cassandra");
        checked(tally(&data).args(["backfill", job_arg, from, hosts, "--catalog", catalog_arg, to, &half_end, "--version", "half"]));
        let path = format!("/v1/ads/{}/clicks?window=1m&from={hour}&to={}", CATALOG[0].0, hour + HOUR_MS);
        let old = clicks_by_window(&mut http, &path);
        let exported = dir.join("half.ndjson");
        checked(tally(&data).args(["export", job_arg, from, hosts, "--version", "half", "--output"]).arg(&exported));
        let mut new: Vec<(u64, u64)> = exported_rows(&exported)
            .into_iter()
            .filter(|((kt, key, g, start), _)| kt == "ad" && key == CATALOG[0].0 && g == "1m" && (hour..hour + HOUR_MS).contains(start))
            .map(|((_, _, _, start), row)| (start, row["clicks"].as_u64().unwrap()))
            .collect();
        new.sort();
        let sum = |rows: &[(u64, u64)]| rows.iter().map(|r| r.1).sum::<u64>();
        assert!(sum(&new) > 0 && sum(&new) < sum(&old), "the versions differ visibly: {} vs {}", sum(&new), sum(&old));

        let stop = Arc::new(AtomicBool::new(false));
        let poller = {
            let (stop, path, old, new, addr) = (Arc::clone(&stop), path.clone(), old.clone(), new.clone(), up.addr);
            std::thread::spawn(move || {
                let mut http = HttpClient::new(addr, None);
                let (mut olds, mut news) = (0u64, 0u64);
                while !stop.load(Ordering::SeqCst) {
                    let rows = clicks_by_window(&mut http, &path);
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
        std::thread::sleep(Duration::from_millis(500));
        let switch = |name: &str| checked(tally(&data).args(["switch", name, "--job", job_arg, from, hosts]));
        switch("half");
        let switched = Instant::now();
        while clicks_by_window(&mut http, &path) != new {
            assert!(switched.elapsed() < Duration::from_secs(30), "the query API never served version half:\n{}", up.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::SeqCst);
        let (olds, news) = poller.join().expect("every polled answer was one version");
        assert!(olds > 0 && news > 0, "the poller saw both versions: {olds} old, {news} new answers");

        switch("live");
        let switched = Instant::now();
        while clicks_by_window(&mut http, &path) != old {
            assert!(switched.elapsed() < Duration::from_secs(30), "the query API never went back to live:\n{}", up.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
        up.stop();
    }

    /// Kafka in, Cassandra out: `tally up --kafka BROKERS --cassandra HOSTS`.
    #[test]
    fn tally_up_with_kafka_in_and_cassandra_out_counts_and_verifies() {
        let (dir, catalog, job, name) = scratch("upkafka", "[source]\nkind = \"log\"\npartitions = 4");
        let kafka = Kafka::start(&dir);
        let data = dir.join("data");
        let mut up = Up::start(
            &data,
            dir.join("up.log"),
            &[
                "--job".as_ref(),
                job.as_os_str(),
                "--kafka".as_ref(),
                kafka.bootstrap.as_ref(),
                "--topic".as_ref(),
                "up_clicks".as_ref(),
                "--cassandra".as_ref(),
                cassandra().as_ref(),
                "--catalog".as_ref(),
                catalog.as_os_str(),
            ],
        );
        let mut http = HttpClient::new(up.addr, None);
        let hour = now_ms() / HOUR_MS * HOUR_MS - HOUR_MS;
        let sent = clicks(hour, 0..800);
        for batch in sent.chunks(200) {
            post(&mut http, batch);
        }
        // Retries within the dedup horizon (of partition progress) of
        // their originals: dropped as duplicates.
        post(&mut http, &sent[750..]);
        wait_for_recount(&mut up, &mut http, &recount(&sent.iter().collect::<Vec<_>>()), hour, hour + HOUR_MS);
        let started = Instant::now();
        loop {
            let stats = http.get("/v1/stats").unwrap().json();
            let job = &stats["job"];
            let counted: u64 = ["on_time", "restating", "held"].iter().map(|k| job[k].as_u64().unwrap()).sum();
            if job["duplicates"] == 50 {
                assert_eq!(counted, 800, "{stats}");
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "the retries were not read as duplicates: {stats}");
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(progress(&name).1.is_some());
        let stderr = up.stop();
        assert!(stderr.contains("kafka topic up_clicks") && stderr.contains("committing to cassandra"), "{stderr}");
        // The same job as verify reads it: on the topic, in Cassandra.
        let verify_job = dir.join("verify.toml");
        let text = std::fs::read_to_string(&job).unwrap().replace(
            "[source]\nkind = \"log\"\n",
            &format!("[source]\nkind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"up_clicks\"\n", kafka.bootstrap),
        );
        std::fs::write(&verify_job, text).unwrap();
        let out = checked(tally(&data).arg("verify").arg(&verify_job).args(["--cassandra", cassandra(), "--catalog"]).arg(&catalog));
        let summary = String::from_utf8_lossy(&out.stdout);
        assert!(summary.contains(", 0 mismatches"), "{summary}");
    }

    /// One broker of the test's own (`scripts/kafka.sh`), stopped on drop.
    struct Kafka {
        dir: PathBuf,
        bootstrap: String,
    }

    impl Kafka {
        fn start(dir: &Path) -> Kafka {
            let dir = dir.join("kafka");
            let script = Path::new(ROOT).join("scripts/kafka.sh");
            let out = Command::new("bash")
                .arg(&script)
                .args(["start", "--dir"])
                .arg(&dir)
                .args(["--port", &common::free_ports(1).to_string()])
                .stdin(Stdio::null())
                .output()
                .expect("run scripts/kafka.sh");
            assert!(
                out.status.success(),
                "kafka.sh start failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let bootstrap = String::from_utf8_lossy(&out.stdout).lines().last().expect("kafka.sh prints the brokers").trim().to_owned();
            Kafka { dir, bootstrap }
        }
    }

    impl Drop for Kafka {
        fn drop(&mut self) {
            let script = Path::new(ROOT).join("scripts/kafka.sh");
            let _ = Command::new("bash").arg(script).arg("stop").arg("--dir").arg(&self.dir).stdin(Stdio::null()).output();
        }
    }

    /// The query API in this process over `store`, on a runtime of its
    /// own; the runtime is shut down before the state is dropped.
    struct Query {
        runtime: Option<tokio::runtime::Runtime>,
        state: Arc<tally::query::QueryState>,
        addr: SocketAddr,
    }

    impl Query {
        fn serve(store: tally::query::ServedStore) -> Query {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            let telemetry = Arc::new(tally::telemetry::Telemetry::new());
            let state = Arc::new(tally::query::QueryState::new(store, telemetry, tally::ingest::service::now_ms));
            let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
            let addr = listener.local_addr().unwrap();
            let router = tally::query::router(Arc::clone(&state));
            let limits = tally::http::Limits { max_connections: 64, ..Default::default() };
            runtime.spawn(tally::http::serve(listener, router, None, limits, tally::http::Hosts::listed(&[]), std::future::pending()));
            Query { runtime: Some(runtime), state, addr }
        }
    }

    impl Drop for Query {
        fn drop(&mut self) {
            if let Some(runtime) = self.runtime.take() {
                runtime.shutdown_timeout(Duration::from_secs(30));
            }
        }
    }

    /// A TCP proxy to `upstream` on `port` that can cut every connection.
    struct Proxy {
        stop: Arc<AtomicBool>,
        streams: Arc<Mutex<Vec<TcpStream>>>,
        accept: Option<std::thread::JoinHandle<()>>,
    }

    impl Proxy {
        fn start(port: u16, upstream: &str) -> Proxy {
            let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
            listener.set_nonblocking(true).unwrap();
            let (stop, streams) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
            let (stopped, open, upstream) = (Arc::clone(&stop), Arc::clone(&streams), upstream.to_owned());
            let accept = std::thread::spawn(move || {
                while !stopped.load(Ordering::SeqCst) {
                    let client = match listener.accept() {
                        Ok((client, _)) => client,
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                    };
                    client.set_nonblocking(false).unwrap();
                    let Ok(server) = TcpStream::connect(&upstream) else { continue };
                    let mut open = open.lock().unwrap();
                    for (from, to) in [(&client, &server), (&server, &client)] {
                        let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(std::net::Shutdown::Both);
                        });
                    }
                    open.extend([client, server]);
                }
            });
            Proxy { stop, streams, accept: Some(accept) }
        }

        /// Stops listening and closes every connection.
        fn cut(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            if let Some(accept) = self.accept.take() {
                accept.join().unwrap();
            }
            for stream in self.streams.lock().unwrap().drain(..) {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    impl Drop for Proxy {
        fn drop(&mut self) {
            self.cut();
        }
    }

    /// Every read route answers 503 naming the store, each within the
    /// driver's request timeout, and `/healthz` and the dashboard 200.
    fn all_unavailable(addr: SocketAddr, target: &str) {
        let mut http = HttpClient::new(addr, None);
        for route in READ_ROUTES {
            let started = Instant::now();
            let reply = http.get(route).unwrap_or_else(|e| panic!("{route}: no answer ({e}): a store call on a runtime thread?"));
            let took = started.elapsed();
            let body = reply.json();
            assert_eq!(reply.status, 503, "{route}: {body}");
            assert_eq!(body["field"], "store", "{route}: {body}");
            let reason = body["reason"].as_str().unwrap();
            assert!(reason.contains(target), "{route}: {reason}");
            assert!(took <= tally::query::CONNECT_WAIT + Duration::from_secs(2), "{route} took {took:?}");
        }
        assert_eq!(http.get("/healthz").unwrap().status, 200);
        assert_eq!(http.get("/").unwrap().status, 200);
    }

    /// A Cassandra the query API cannot reach gives 503, whether it never
    /// connected (a closed port) or lost the node after it did (a proxy in
    /// front of the shared node, cut); once the node is back, it answers
    /// again.
    #[test]
    fn an_unreachable_cassandra_gives_503_naming_the_store() {
        use tally::event::KeyType;
        use tally::query::{LazyReader, ServedStore};
        use tally::row::{Row, Status};
        use tally::store::StoredRow;

        // Never connected: nothing listens on the port.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let nowhere =
            CassandraConfig { hosts: vec![format!("127.0.0.1:{closed}")], keyspace: KEYSPACE.into(), ..CassandraConfig::default() };
        let query = Query::serve(ServedStore::fixed(Arc::new(LazyReader::cassandra(&nowhere, "nobody"))));
        all_unavailable(query.addr, &format!("cassandra 127.0.0.1:{closed} keyspace {KEYSPACE} job nobody"));
        // Each read route but /readyz failed once, and /metrics says so.
        let failed = READ_ROUTES.iter().filter(|r| !r.starts_with("/readyz")).count();
        let exposition = query.state.telemetry.render();
        assert!(exposition.contains(&format!("tally_store_read_errors_total {failed}\n")), "{exposition}");
        drop(query);

        // A job with one committed epoch, read through a proxy. The node
        // must announce 127.0.0.1 (as scripts/cassandra.sh's single node
        // does), or the driver would go around the proxy.
        let Some(port) = cassandra().strip_prefix("127.0.0.1:") else {
            eprintln!("skipping the proxy half: the node is not on 127.0.0.1");
            return;
        };
        let name = format!("down_{}", std::process::id());
        let mut store = CassandraStore::open(&config(), &name, 3_600_000, Faults::default()).unwrap();
        let generation = store.begin_generation().unwrap();
        let row = Row {
            key_type: KeyType::Ad,
            key: "cu-ad-0".into(),
            granularity_ms: 60_000,
            window_start: 60_000,
            clicks: 7,
            distinct_users: 5,
            status: Status::Final,
            version: 1,
        };
        store
            .commit(EpochCommit {
                epoch: 180_000,
                generation,
                rows: vec![StoredRow { row, sketch: vec![1, 2, 3] }],
                partitions: vec![PartitionCheckpoint {
                    partition: 0,
                    offset: 1,
                    max_ts: 60_000,
                    floor: 0,
                    dedup_replay_offset: 0,
                    dedup_replay_max_ts: 0,
                }],
                ..Default::default()
            })
            .unwrap();
        let proxy_port = common::free_ports(1);
        let upstream = format!("127.0.0.1:{port}");
        let mut proxy = Proxy::start(proxy_port, &upstream);
        let through = CassandraConfig { hosts: vec![format!("127.0.0.1:{proxy_port}")], ..config() };
        let query = Query::serve(ServedStore::fixed(Arc::new(LazyReader::cassandra(&through, &name))));
        let mut http = HttpClient::new(query.addr, None);
        let answers = |http: &mut HttpClient| {
            let reply = http.get("/v1/ads/cu-ad-0/clicks?window=1m&from=0&to=120000").unwrap();
            (reply.status == 200).then(|| {
                let body = reply.json();
                (body["committed_epoch"].clone(), body["rows"][0]["clicks"].clone())
            })
        };
        assert_eq!(answers(&mut http), Some((json!(180_000), json!(7))));
        for route in READ_ROUTES {
            let reply = http.get(route).unwrap();
            assert_eq!(reply.status, 200, "{route}: {}", reply.text());
        }

        proxy.cut();
        all_unavailable(query.addr, &format!("cassandra 127.0.0.1:{proxy_port} keyspace {KEYSPACE} job {name}"));

        let _proxy = Proxy::start(proxy_port, &upstream);
        let started = Instant::now();
        while answers(&mut http) != Some((json!(180_000), json!(7))) {
            assert!(started.elapsed() < Duration::from_secs(90), "the query API did not answer again once the node was back");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
