//! tally against a real three-node Apache Cassandra cluster: replication
//! factor 3, reads and writes at QUORUM, lightweight transactions at
//! SERIAL, and one node SIGKILLed while a job commits.
//!
//! Marked `#[ignore]`: three nodes take ~1.7 GB and the test minutes.
//! `scripts/test.sh --long` runs it, or:
//!
//! ```sh
//! cargo test --release --test cassandra_cluster -- --ignored
//! ```
//!
//! The cluster (`scripts/cassandra.sh start --nodes 3`, nodes on 127.0.0.2,
//! .3 and .4) lives in `target/test-cassandra-cluster/`; a watchdog stops
//! it and deletes the folder once the test process is gone.
//!
//! The test, step by step:
//!
//! 1. A bounded job over a million clicks on the embedded log commits to
//!    the cluster. Once it has applied an epoch, node 1 is SIGKILLed.
//! 2. While node 1 is down, the job keeps committing: between the applied
//!    epoch read (from the `jobs` row, at QUORUM) just after the kill and
//!    the one read before the restart lie at least
//!    [`MIN_COMMITS_IN_OUTAGE`] commits (counted in the job's
//!    `TALLY_COMMIT_TIMES` record, which names each commit's epoch).
//! 3. Node 1 is started again; the job finishes by itself, and `tally
//!    verify` recounts the log: 0 mismatches, nothing lost or counted twice.
//! 4. After `nodetool repair` on node 1, the other two nodes are stopped:
//!    read from node 1 alone at consistency ONE, every table of the
//!    keyspace holds the same rows as QUORUM read with all three nodes up,
//!    `tally export` gives the same rows and ledger, and `tally verify`
//!    finds 0 mismatches.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::{NodeIdentifier, SingleTargetLoadBalancingPolicy};
use scylla::statement::unprepared::Statement;
use scylla::statement::Consistency;
use scylla::value::Row;
use tally::store::cassandra::{CassandraConfig, CassandraReader, CassandraStore, Faults};
use tally::store::StoreSnapshot;

#[path = "common/child.rs"]
mod child;
use child::{checked, finish};

const TALLY: &str = env!("CARGO_BIN_EXE_tally");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const KEYSPACE: &str = "tally_cluster";
/// Clicks of the job: enough for dozens of commits (each reads at most
/// 4,096 clicks per partition ahead of the last commit).
const CLICKS: u64 = 1_000_000;
/// The node killed and restarted (of 0, 1, 2).
const KILLED_NODE: usize = 1;
/// Commits the job must make while the killed node is down.
const MIN_COMMITS_IN_OUTAGE: usize = 5;
/// Longest any step may wait: a guard against a hang, not a measure.
const STEP_TIMEOUT: Duration = Duration::from_secs(900);
/// How often the job's progress is read.
const POLL: Duration = Duration::from_millis(200);

#[test]
#[ignore = "three Cassandra nodes (~1.7 GB, minutes): scripts/test.sh --long"]
fn a_job_at_quorum_keeps_committing_with_one_node_of_three_killed_and_counts_exactly_once() {
    let dir = Path::new(ROOT).join("target/test-cassandra-cluster").join(format!("run-{}", std::process::id()));
    let cluster_dir = dir.join("cluster");
    let hosts = common::start_cassandra(3, &cluster_dir);
    let nodes: Vec<&str> = hosts.split(',').collect();
    let setup = Setup::new(&dir, &hosts);
    let times = dir.join("commit-times.tsv");

    // 1. The job runs; node 1 dies once an epoch is applied. (The keyspace
    // is made first, with replication factor 3, for the reader.)
    CassandraStore::open(&setup.config(), "schema", 3_600_000, Faults::default()).expect("the keyspace and its tables");
    let reader = CassandraReader::open(&setup.config(), &setup.name).expect("a reader of the cluster");
    let mut job = setup.run(&times);
    wait_until("the job's first applied epoch", || applied(&reader).is_some() || exited(&mut job));
    assert!(!exited(&mut job), "the job ended before any node was killed:\n{}", stderr_of(job));
    kill_node(&cluster_dir, KILLED_NODE);
    assert!(!exited(&mut job), "the job ended as the node was killed:\n{}", stderr_of(job));

    // 2. It keeps committing with two nodes of three.
    let at_kill = read_applied(&reader);
    wait_until("commits while the node is down", || {
        commits_between(&times, at_kill, applied(&reader)) >= MIN_COMMITS_IN_OUTAGE || exited(&mut job)
    });
    let before_restart = read_applied(&reader);
    let outage_commits = commits_between(&times, at_kill, Some(before_restart));
    assert!(
        outage_commits >= MIN_COMMITS_IN_OUTAGE,
        "{outage_commits} commits while node {KILLED_NODE} was down (applied epoch {at_kill} to {before_restart}), at least {MIN_COMMITS_IN_OUTAGE} expected"
    );

    // 3. The node comes back; the job finishes; the recount finds it exact.
    script_ok("start", &cluster_dir, &["--node", &KILLED_NODE.to_string()]);
    let out = finish(job);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the job failed:\n{stderr}");
    // What the store went through (retried reads, outcomes read back).
    stderr.lines().filter(|line| line.starts_with("cassandra:")).for_each(|line| eprintln!("job: {line}"));
    let (clean, summary) = setup.verify(&setup.job);
    assert!(clean && summary.contains(", 0 mismatches"), "{summary}");
    eprintln!("{outage_commits} commits with node {KILLED_NODE} down (epochs {at_kill}..={before_restart}); {}", summary.trim());

    // 4. Repaired, the restarted node alone answers as the whole cluster
    // did: the same rows in every table, the same export, and a clean
    // recount, read at ONE with the other two nodes stopped.
    script_ok("nodetool", &cluster_dir, &["--node", &KILLED_NODE.to_string(), "--", "repair", "-full", KEYSPACE]);
    let quorum = table_rows(nodes[0], None);
    let exported = setup.export(&setup.job, "quorum");
    for other in (0..nodes.len()).filter(|&i| i != KILLED_NODE) {
        script_ok("stop", &cluster_dir, &["--node", &other.to_string()]);
    }
    let alone = table_rows(nodes[KILLED_NODE], Some(nodes[KILLED_NODE]));
    let one = setup.job_file("one", nodes[KILLED_NODE], "one");
    assert!(setup.export(&one, "one") == exported, "the export from node {KILLED_NODE} alone differs");
    let (clean, summary) = setup.verify(&one);
    assert!(clean && summary.contains(", 0 mismatches"), "node {KILLED_NODE} alone: {summary}");
    assert_eq!(quorum.keys().collect::<Vec<_>>(), alone.keys().collect::<Vec<_>>(), "the tables");
    for (table, rows) in &quorum {
        assert!(
            rows.len() == alone[table].len() && *rows == alone[table],
            "table {table}: {} rows at QUORUM, {} on node {KILLED_NODE} alone, or other rows",
            rows.len(),
            alone[table].len()
        );
    }
    assert!(quorum["window_rows"].len() > 1_000, "{} window rows", quorum["window_rows"].len());
}

/// A data directory with the clicks in its log, a catalog, and a job file
/// committing to the cluster at QUORUM with replication factor 3.
struct Setup {
    name: String,
    hosts: String,
    dir: PathBuf,
    data: PathBuf,
    catalog: PathBuf,
    job: PathBuf,
}

impl Setup {
    fn new(dir: &Path, hosts: &str) -> Setup {
        let (clicks, catalog, data, job) = (dir.join("clicks.ndjson"), dir.join("ads.csv"), dir.join("data"), dir.join("job.toml"));
        checked(
            Command::new(TALLY)
                .args(["gen", "--clicks", &CLICKS.to_string(), "--seed", "41", "--rate-per-s", "2000", "--ads", "500"])
                .args(["--campaigns", "50", "--advertisers", "10", "--too-late-share", "0.005"])
                .arg("--output")
                .arg(&clicks)
                .arg("--catalog")
                .arg(&catalog),
        );
        checked(Command::new(TALLY).arg("--data-dir").arg(&data).args(["log", "import"]).arg(&clicks));
        let name = format!("cluster_{}", std::process::id());
        let mut setup = Setup { name, hosts: hosts.to_owned(), dir: dir.to_owned(), data, catalog, job };
        setup.job = setup.job_file("job", hosts, "quorum");
        setup
    }

    /// Writes the job file `LABEL.toml`: this job, on `hosts`, reading and
    /// writing at `consistency`.
    fn job_file(&self, label: &str, hosts: &str, consistency: &str) -> PathBuf {
        let text = format!(
            "name = \"{}\"\n[source]\nkind = \"log\"\npartitions = 8\n\
             [sink]\nkind = \"cassandra\"\nhosts = \"{hosts}\"\nkeyspace = \"{KEYSPACE}\"\nreplication_factor = 3\n\
             consistency = \"{consistency}\"\nserial_consistency = \"serial\"\n",
            self.name
        );
        let path = self.dir.join(format!("{label}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn config(&self) -> CassandraConfig {
        let hosts = self.hosts.split(',').map(String::from).collect();
        CassandraConfig { hosts, keyspace: KEYSPACE.into(), replication_factor: 3, ..CassandraConfig::default() }
    }

    fn tally(&self) -> Command {
        let mut command = Command::new(TALLY);
        command.arg("--data-dir").arg(&self.data).stdin(Stdio::null());
        command
    }

    /// `tally run --bounded -w 2`, recording its commits in `times`.
    fn run(&self, times: &Path) -> Child {
        let mut command = self.tally();
        command.args(["run", "--bounded", "-w", "2"]).arg(&self.job).arg("--catalog").arg(&self.catalog);
        command.env("TALLY_COMMIT_TIMES", times).stdout(Stdio::null()).stderr(Stdio::piped());
        command.spawn().expect("spawn tally run")
    }

    /// `tally verify` of `job`: whether it found no mismatch, and its summary.
    fn verify(&self, job: &Path) -> (bool, String) {
        let mut command = self.tally();
        command.arg("verify").arg(job).arg("--catalog").arg(&self.catalog);
        let out = finish(command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(stdout.starts_with("verify: "), "verify printed:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
        (out.status.success(), stdout)
    }

    /// `tally export` of `job`: its rows and late ledger.
    fn export(&self, job: &Path, label: &str) -> (String, String) {
        let (rows, late) = (self.dir.join(format!("{label}.ndjson")), self.dir.join(format!("{label}.late.ndjson")));
        checked(self.tally().arg("export").arg(job).arg("--output").arg(&rows).arg("--late").arg(&late));
        (std::fs::read_to_string(rows).unwrap(), std::fs::read_to_string(late).unwrap())
    }
}

/// The job's applied epoch, as a reader sees it; `None` also when the
/// read failed (while a node dies a read may time out: the next poll
/// reads again).
fn applied(reader: &CassandraReader) -> Option<u64> {
    match reader.snapshot_now().and_then(|snapshot| snapshot.committed_epoch()) {
        Ok(epoch) => epoch,
        Err(error) => {
            eprintln!("reading the applied epoch: {error}");
            None
        }
    }
}

/// The applied epoch, read until a read succeeds.
fn read_applied(reader: &CassandraReader) -> u64 {
    let mut epoch = None;
    wait_until("a read of the applied epoch", || {
        epoch = applied(reader);
        epoch.is_some()
    });
    epoch.unwrap()
}

/// Commits in the job's record with an epoch in `(after, through]`.
fn commits_between(times: &Path, after: u64, through: Option<u64>) -> usize {
    let Some(through) = through else { return 0 };
    let text = std::fs::read_to_string(times).unwrap_or_default();
    let epochs = text.lines().skip(1).filter_map(|line| line.split('\t').next()?.parse::<u64>().ok());
    epochs.filter(|epoch| (after + 1..=through).contains(epoch)).count()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < STEP_TIMEOUT, "waited {STEP_TIMEOUT:?} for {what}");
        std::thread::sleep(POLL);
    }
}

fn exited(child: &mut Child) -> bool {
    child.try_wait().expect("child status").is_some()
}

fn stderr_of(child: Child) -> String {
    String::from_utf8_lossy(&finish(child).stderr).into_owned()
}

fn script_ok(command: &str, dir: &Path, args: &[&str]) {
    let out = common::cassandra_script(command, dir, args);
    assert!(out.status.success(), "cassandra.sh {command} {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// SIGKILL to node `i` of the cluster in `dir`, by the pid its start recorded.
fn kill_node(dir: &Path, i: usize) {
    let pid = std::fs::read_to_string(dir.join(format!("node-{i}/pid"))).expect("the node's pid file");
    let status = Command::new("kill").args(["-KILL", pid.trim()]).status().unwrap();
    assert!(status.success(), "kill -KILL {pid}");
}

/// Every row of every table of the keyspace, per table, each row as a
/// hash of its values, sorted: read through `contact` at QUORUM, or, with
/// `only` set, from that node alone at ONE.
fn table_rows(contact: &str, only: Option<&str>) -> BTreeMap<String, Vec<u64>> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let profile = match only {
            None => ExecutionProfile::builder().consistency(Consistency::Quorum),
            Some(node) => {
                let target = NodeIdentifier::NodeAddress(node.parse().expect("host:port"));
                let policy = SingleTargetLoadBalancingPolicy::new(target, None);
                ExecutionProfile::builder().consistency(Consistency::One).load_balancing_policy(policy)
            }
        };
        let session: Arc<Session> = Arc::new(
            SessionBuilder::new()
                .known_node(contact)
                .default_execution_profile_handle(profile.request_timeout(Some(Duration::from_secs(60))).build().into_handle())
                .build()
                .await
                .expect("a session"),
        );
        let tables = "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?";
        let names: Vec<(String,)> = session
            .query_unpaged(tables, (KEYSPACE,))
            .await
            .unwrap()
            .into_rows_result()
            .unwrap()
            .rows::<(String,)>()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut out = BTreeMap::new();
        for (name,) in names {
            let mut statement = Statement::new(format!("SELECT * FROM {KEYSPACE}.{name}"));
            statement.set_page_size(1_000);
            let mut rows = session.query_iter(statement, &[]).await.unwrap().rows_stream::<Row>().unwrap();
            let mut hashes = Vec::new();
            while let Some(row) = futures::TryStreamExt::try_next(&mut rows).await.unwrap() {
                hashes.push(hash(&format!("{:?}", row.columns)));
            }
            hashes.sort_unstable();
            out.insert(name, hashes);
        }
        out
    })
}

fn hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}
