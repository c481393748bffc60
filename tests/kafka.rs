//! tally against a real Apache Kafka broker, started by each test with
//! `scripts/kafka.sh` (its jars come from Maven Central into a git-ignored
//! cache on first use) and stopped when the test ends.
//!
//! - Exactly-once through a supervised 2-process × 2-worker cluster whose
//!   processes are SIGKILLed over and over, and one broker restart, with
//!   clicks sent through `tally ingest --kafka` by a retrying client: the
//!   latest settled rows equal a recount of the request ids the client got
//!   202 for, and `tally verify` recounts the topic to 0 mismatches.
//! - One topic filled by Kafka's own console producer (raw user ids) gives
//!   identical rows with 1×2, 2×2 and 3×1 processes × workers, equal to a
//!   file run over the same clicks.
//! - An idle partition does not stall windows, and its late wake-up restates
//!   the window by its own partition's watermark.
//! - Ingest with the broker stopped answers 503 and acknowledges nothing;
//!   once the broker is back, the retries land exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tally::ingest::client::HttpClient;
use tally::sources::kafka::KafkaTopic;

#[path = "common/child.rs"]
mod child;
#[path = "common/net.rs"]
mod net;
use child::{checked, finish};
use net::{free_addr, listening};

const TALLY: &str = env!("CARGO_BIN_EXE_tally");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const MINUTE_MS: u64 = 60_000;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn script(name: &str) -> PathBuf {
    Path::new(ROOT).join("scripts").join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(ROOT).join("target/test-kafka").join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A port `p` with `p + 1` free as well (a broker and its controller).
fn free_port_pair() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if port < 65_000 && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One broker of the test's own, stopped on drop.
struct Kafka {
    dir: PathBuf,
    bootstrap: String,
}

impl Kafka {
    fn start(dir: &Path) -> Kafka {
        let dir = dir.join("kafka");
        let port = free_port_pair();
        let out = Command::new("bash")
            .arg(script("kafka.sh"))
            .args(["start", "--dir"])
            .arg(&dir)
            .args(["--port", &port.to_string()])
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/kafka.sh");
        assert!(
            out.status.success(),
            "kafka.sh start failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let bootstrap =
            String::from_utf8_lossy(&out.stdout).lines().last().expect("kafka.sh prints the bootstrap servers").trim().to_owned();
        Kafka { dir, bootstrap }
    }

    fn command(&self, what: &str) {
        let out = Command::new("bash").arg(script("kafka.sh")).arg(what).arg("--dir").arg(&self.dir).stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "kafka.sh {what} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }

    fn topic(&self, name: &str, partitions: u32) -> KafkaTopic {
        KafkaTopic { brokers: self.bootstrap.clone(), topic: name.to_owned(), partitions }
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script("kafka.sh")).arg("stop").arg("--dir").arg(&self.dir).stdin(Stdio::null()).output();
    }
}

/// A job on `topic` of `kafka`, with short times so windows settle fast.
fn job_file(dir: &Path, kafka: &Kafka, topic: &str, partitions: u32, catalog: Option<&Path>) -> PathBuf {
    let catalog = catalog.map_or(String::new(), |c| format!("[catalog]\npath = {:?}\n", c.display().to_string()));
    let text = format!(
        "name = \"kt\"\n[source]\nkind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{topic}\"\npartitions = {partitions}\n\
         [time]\nepoch = \"1s\"\nwatermark_slack = \"2s\"\nallowed_lateness = \"2s\"\n[sink]\nkind = \"store\"\n{catalog}",
        kafka.bootstrap
    );
    let file = dir.join(format!("{topic}.toml"));
    std::fs::write(&file, text).unwrap();
    file
}

fn tally(data: &Path) -> Command {
    let mut command = Command::new(TALLY);
    command.arg("--data-dir").arg(data).stdin(Stdio::null());
    command
}

fn verify_clean(data: &Path, job: &Path) {
    let out = checked(tally(data).arg("verify").arg(job));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(" 0 mismatches"), "{text}");
}

type Rows = BTreeMap<(String, String, String, u64), Value>;

/// Latest rows by (key type, key, granularity, window start).
fn exported(data: &Path, job: &Path, file: &Path) -> Rows {
    checked(tally(data).arg("export").arg(job).arg("--output").arg(file));
    rows_of(file)
}

fn rows_of(file: &Path) -> Rows {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|line| {
            let row: Value = serde_json::from_str(line).unwrap();
            let key = (
                row["key_type"].as_str().unwrap().to_string(),
                row["key"].as_str().unwrap().to_string(),
                row["granularity"].as_str().unwrap().to_string(),
                row["window_start"].as_u64().unwrap(),
            );
            (key, row)
        })
        .collect()
}

/// Settled rows as (clicks, distinct users).
fn settled(rows: &Rows) -> BTreeMap<(String, String, String, u64), (u64, u64)> {
    rows.iter()
        .filter(|(_, r)| r["status"] != "partial")
        .map(|(k, r)| (k.clone(), (r["clicks"].as_u64().unwrap(), r["distinct_users"].as_u64().unwrap_or(0))))
        .collect()
}

/// One click the test sends over HTTP.
#[derive(Clone)]
struct Sent {
    ad: u32,
    ts: u64,
    id: u128,
}

impl Sent {
    fn json(&self) -> String {
        let id = format!("{:032x}", self.id);
        format!(
            r#"{{"ad_id":"k-ad-{}","timestamp":{},"user_id":"u{}","request_id":"{}-{}-{}-{}-{}"}}"#,
            self.ad,
            self.ts,
            self.id % 89,
            &id[0..8],
            &id[8..12],
            &id[12..16],
            &id[16..20],
            &id[20..32]
        )
    }
}

/// Distinct request ids per (ad, minute): what the latest settled 1m rows
/// must say when every click counts once.
fn recount(sent: &[Sent]) -> BTreeMap<(String, u64), u64> {
    let mut ids: BTreeMap<(String, u64), BTreeSet<u128>> = BTreeMap::new();
    for c in sent {
        ids.entry((format!("k-ad-{}", c.ad), c.ts - c.ts % MINUTE_MS)).or_default().insert(c.id);
    }
    ids.into_iter().map(|(k, v)| (k, v.len() as u64)).collect()
}

fn assert_minutes(rows: &Rows, sent: &[Sent], step: &str) {
    let got: BTreeMap<(String, u64), u64> = rows
        .iter()
        .filter(|((kt, _, g, _), row)| kt == "ad" && g == "1m" && row["status"] != "partial")
        .map(|((_, key, _, start), row)| ((key.clone(), *start), row["clicks"].as_u64().unwrap()))
        .collect();
    let want = recount(sent);
    let wrong: Vec<_> = want.iter().filter(|(k, v)| got.get(*k) != Some(v)).take(5).map(|(k, v)| (k.clone(), *v, got.get(k))).collect();
    assert!(
        wrong.is_empty() && got.len() == want.len(),
        "{step}: {} windows expected, {} settled; first differences {wrong:?}",
        want.len(),
        got.len()
    );
}

/// `tally ingest --kafka` without signatures on a free port.
fn start_ingest(data: &Path, kafka: &Kafka, topic: &str, log: &Path) -> (Child, SocketAddr) {
    let addr = free_addr();
    let child = tally(data)
        .args(["ingest", "--no-auth", "--addr", &addr.to_string(), "--kafka", &kafka.bootstrap, "--topic", topic])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn tally ingest");
    let started = Instant::now();
    while !listening(addr) {
        assert!(started.elapsed() < Duration::from_secs(60), "ingest did not listen: {}", std::fs::read_to_string(log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, addr)
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status();
}

fn stop(mut child: Child) {
    signal(child.id(), "TERM");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Seeded clicks over the last `spread_ms`, on 9 ads; about one in 8 is a
/// retry of an earlier click (same request id, same body).
fn clicks(n: usize, seed: u64, spread_ms: u64) -> Vec<Sent> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let now = now_ms();
    let mut out: Vec<Sent> = Vec::with_capacity(n);
    for i in 0..n {
        let r = next();
        if i > 10 && r % 8 == 0 {
            let earlier = out[out.len() - 1 - (r as usize >> 8) % 10].clone();
            out.push(earlier);
        } else {
            out.push(Sent {
                ad: (r >> 20) as u32 % 9,
                ts: now - spread_ms + (r >> 32) % spread_ms,
                id: (u128::from(seed) << 64) | i as u128,
            });
        }
    }
    out
}

fn post_all(addr: SocketAddr, clicks: &[Sent], per_request: usize) {
    let mut http = HttpClient::new(addr, None);
    for chunk in clicks.chunks(per_request) {
        let body = chunk.iter().map(Sent::json).collect::<Vec<_>>().join("\n");
        let reply = http.post_until_accepted("/v1/clicks/batch", "application/x-ndjson", body.as_bytes(), 2_000).expect("post");
        assert_eq!(reply.status, 202, "{}", reply.text());
    }
}

/// `scripts/cluster.sh JOB 2 2` on the embedded data dir `data`, live,
/// with its events in `log`, in a process group of its own.
struct Supervisor {
    child: Child,
    state: PathBuf,
    log: PathBuf,
}

impl Supervisor {
    fn start(job: &Path, state: &Path, data: &Path, log: &Path) -> Supervisor {
        let child = Command::new("bash")
            .arg(script("cluster.sh"))
            .arg(job)
            .args(["2", "2", "--state"])
            .arg(state)
            .args(["--tally", TALLY, "--", "--data-dir"])
            .arg(data)
            .args(["--peer-timeout", "20"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .process_group(0)
            .spawn()
            .expect("start scripts/cluster.sh");
        Supervisor { child, state: state.to_owned(), log: log.to_owned() }
    }

    /// SIGTERM, which stops the supervisor and its processes; then waits
    /// until no process of its last generation is alive, so that the next
    /// command may take the store. Should the supervisor not end within
    /// 60 s, its whole process group is killed, so nothing outlives it.
    fn stop(mut self) {
        let started = Instant::now();
        signal(self.child.id(), "TERM");
        while self.child.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(60) {
                eprintln!("scripts/cluster.sh did not stop within 60 s of SIGTERM: its process group is killed");
                signal_group(self.child.id(), "KILL");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (_, pids) = read_pids(&self.state);
        while let Some(pid) = pids.iter().find(|&&pid| alive(pid)) {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "process {pid} of the cluster outlived its supervisor:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether `pid` runs (a zombie does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

fn signal_group(pgid: u32, name: &str) {
    let _ = Command::new("kill").args([&format!("-{name}"), "--", &format!("-{pgid}")]).status();
}

fn read_pids(state: &Path) -> (u64, Vec<u32>) {
    let generation = std::fs::read_to_string(state.join("generation")).ok().and_then(|g| g.trim().parse().ok()).unwrap_or(0);
    let pids = std::fs::read_to_string(state.join("pids")).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect();
    (generation, pids)
}

#[test]
fn a_killed_cluster_and_a_restarted_broker_count_every_accepted_click_once() {
    let dir = scratch("exactly-once");
    let kafka = Kafka::start(&dir);
    let data = dir.join("data");
    let job = job_file(&dir, &kafka, "clicks", 8, None);
    let (ingest, addr) = start_ingest(&data, &kafka, "clicks", &dir.join("ingest.log"));
    let state = dir.join("cluster");
    let supervisor = Supervisor::start(&job, &state, &data, &dir.join("cluster.log"));
    let sent = clicks(12_000, 7, 20_000);
    let sender = {
        let sent = sent.clone();
        std::thread::spawn(move || {
            for part in sent.chunks(400) {
                post_all(addr, part, 100);
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    let mut kills = 0;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let started = Instant::now();
    while kills < 10 {
        assert!(
            started.elapsed() < Duration::from_secs(200),
            "only {kills} kills in 200 s: {}",
            std::fs::read_to_string(dir.join("cluster.log")).unwrap()
        );
        let (generation, pids) = read_pids(&state);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(1_500 + rng % 2_000));
        if pids.is_empty() || read_pids(&state).0 != generation {
            continue;
        }
        signal(pids[rng as usize % pids.len()], "KILL");
        kills += 1;
        if kills == 5 {
            kafka.command("restart");
        }
        while read_pids(&state).0 == generation {
            assert!(started.elapsed() < Duration::from_secs(200), "the supervisor did not restart the cluster");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    sender.join().expect("every click acknowledged");
    std::thread::sleep(Duration::from_secs(3));
    supervisor.stop();
    stop(ingest);
    let log = std::fs::read_to_string(dir.join("cluster.log")).unwrap();
    assert!(log.matches("restarting all").count() >= 10, "{log}");
    // Finish what the live cluster left: a bounded run on the same store
    // finalizes every window.
    checked(tally(&data).arg("run").arg(&job).args(["--bounded", "-w", "2"]));
    verify_clean(&data, &job);
    assert_minutes(&exported(&data, &job, &dir.join("rows.ndjson")), &sent, "after 10 kills and a broker restart");
}

/// Clicks of `tally gen` into `topic` through Kafka's console producer,
/// keyed by request id, with raw user ids.
fn produce_generated(dir: &Path, kafka: &Kafka, topic: &str, partitions: u32, clicks: u64) -> (PathBuf, PathBuf) {
    let (file, catalog) = (dir.join("clicks.ndjson"), dir.join("catalog.csv"));
    let clicks = clicks.to_string();
    let args = ["--clicks", &clicks, "--too-late-share", "0", "--idle-partitions", "0", "--jitter-ms", "500", "--partitions", "4"];
    checked(Command::new(TALLY).arg("gen").args(args).arg("--output").arg(&file).arg("--catalog").arg(&catalog));
    kafka.topic(topic, partitions).ensure().unwrap();
    let keyed: String = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|line| {
            let click: Value = serde_json::from_str(line).unwrap();
            format!("{}\t{line}\n", click["request_id"].as_str().unwrap())
        })
        .collect();
    let mut producer = Command::new("bash")
        .arg(script("kafka.sh"))
        .args(["produce", "--dir"])
        .arg(&kafka.dir)
        .args(["--topic", topic, "--bootstrap", &kafka.bootstrap])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(producer.stdin.as_mut().unwrap(), keyed.as_bytes()).unwrap();
    drop(producer.stdin.take());
    let out = finish(producer);
    assert!(out.status.success(), "console producer: {}", String::from_utf8_lossy(&out.stderr));
    (file, catalog)
}

#[test]
fn one_topic_gives_the_same_rows_with_any_process_and_worker_count() {
    let dir = scratch("shapes");
    let kafka = Kafka::start(&dir);
    let (file, catalog) = produce_generated(&dir, &kafka, "shapes", 4, 30_000);
    let (_, ends) = kafka.topic("shapes", 4).bounds().unwrap();
    assert_eq!(ends.iter().sum::<u64>(), 30_000, "the console producer wrote every line");
    let job = job_file(&dir, &kafka, "shapes", 4, Some(&catalog));
    let mut results = Vec::new();
    let first = dir.join("data-1x2");
    for (processes, workers) in [(1, 2), (2, 2), (3, 1)] {
        let data = dir.join(format!("data-{processes}x{workers}"));
        if data != first {
            // One salt for every run: process 0's data directory hands it out.
            std::fs::create_dir_all(&data).unwrap();
            std::fs::copy(first.join("salt"), data.join("salt")).unwrap();
        }
        if processes == 1 {
            checked(tally(&data).arg("run").arg(&job).args(["--bounded", "-w", &workers.to_string()]));
        } else {
            let state = dir.join(format!("cluster-{processes}x{workers}"));
            checked(
                Command::new("bash")
                    .arg(script("cluster.sh"))
                    .arg(&job)
                    .args([processes.to_string(), workers.to_string()])
                    .arg("--state")
                    .arg(&state)
                    .args(["--tally", TALLY, "--", "--bounded", "--data-dir"])
                    .arg(&data)
                    .stdin(Stdio::null()),
            );
        }
        verify_clean(&data, &job);
        let rows = settled(&exported(&data, &job, &dir.join(format!("rows-{processes}x{workers}.ndjson"))));
        assert!(rows.len() > 100, "{processes}x{workers}: {} settled rows", rows.len());
        results.push(((processes, workers), rows));
    }
    for (shape, rows) in &results[1..] {
        let differ: Vec<_> = rows.iter().filter(|(k, v)| results[0].1.get(*k) != Some(v)).take(3).collect();
        assert!(differ.is_empty() && rows.len() == results[0].1.len(), "{shape:?} differs from 1x2: {differ:?}");
    }
    // A backfill of the whole topic into a version equals the original
    // output, and a replay of the same range gives identical rows.
    for version in ["replay", "again"] {
        checked(tally(&first).arg("backfill").arg(&job).args(["--from", "earliest", "--to", "latest", "--version", version]));
        checked(tally(&first).arg("verify").arg(&job).args(["--version", version]));
    }
    let version_rows = |version: &str| {
        let file = dir.join(format!("{version}.ndjson"));
        checked(tally(&first).arg("export").arg(&job).args(["--version", version]).arg("--output").arg(&file));
        rows_of(&file)
    };
    let (replay, again) = (version_rows("replay"), version_rows("again"));
    assert_eq!(settled(&replay), results[0].1, "a backfill of the topic differs from the original output");
    assert_eq!(replay, again, "two backfills of one range differ");
    // The same clicks from the file, without Kafka, with the same salt: the
    // same rows (the clicks carry no too-late ones, so partitioning alone
    // cannot change what counts).
    let output = dir.join("file-rows.ndjson");
    let file_job = dir.join("file.toml");
    std::fs::write(
        &file_job,
        format!(
            "name = \"kf\"\n[source]\nkind = \"file\"\npartitions = 4\n[time]\nepoch = \"1s\"\nwatermark_slack = \"2s\"\nallowed_lateness = \"2s\"\n[sink]\nkind = \"file\"\n[catalog]\npath = {:?}\n",
            catalog.display().to_string()
        ),
    )
    .unwrap();
    checked(tally(&first).arg("run").arg(&file_job).arg("--input").arg(&file).arg("--output").arg(&output));
    let from_file = settled(&rows_of(&output));
    let differ: Vec<_> = from_file.iter().filter(|(k, v)| results[0].1.get(*k) != Some(v)).take(3).collect();
    assert!(differ.is_empty() && from_file.len() == results[0].1.len(), "the file run differs: {differ:?}");
}

#[test]
fn an_idle_partition_does_not_stall_windows_and_its_late_wake_up_restates() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let dir = scratch("idle");
    let kafka = Kafka::start(&dir);
    let topic = kafka.topic("idle", 2);
    topic.ensure().unwrap();
    let producer: BaseProducer = tally::sources::kafka::client_config(&kafka.bootstrap).create().unwrap();
    let send = |partition: i32, ts: u64, id: u32| {
        let value = format!(r#"{{"ad_id":"idle-ad","timestamp":{ts},"user_id":"u{id}","request_id":"00000000-0000-4000-8000-{id:012x}"}}"#);
        let key = format!("00000000-0000-4000-8000-{id:012x}");
        producer.send(BaseRecord::to("idle").partition(partition).key(&key).payload(&value)).unwrap();
    };
    // Three clicks in partition 0, in a minute that ended a while ago;
    // partition 1 stays empty.
    let minute = now_ms() / MINUTE_MS * MINUTE_MS - 2 * MINUTE_MS;
    for id in 1..=3 {
        send(0, minute + 1_000 * u64::from(id), id);
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let data = dir.join("data");
    let job = job_file(&dir, &kafka, "idle", 2, None);
    let run = tally(&data)
        .arg("run")
        .arg(&job)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("run.log")).unwrap())
        .spawn()
        .unwrap();
    let window = |status: &str, clicks: u64| {
        let started = Instant::now();
        loop {
            // The store appears with the first commit.
            let file = dir.join("rows.ndjson");
            let exported = tally(&data).arg("export").arg(&job).arg("--output").arg(&file).output().unwrap().status.success();
            let rows = if exported { rows_of(&file) } else { Rows::new() };
            let row = rows.get(&("ad".into(), "idle-ad".into(), "1m".into(), minute));
            if row.is_some_and(|r| r["status"] == status && r["clicks"] == clicks) {
                return row.unwrap().clone();
            }
            assert!(started.elapsed() < Duration::from_secs(60), "no {status} row with {clicks} clicks: {row:?}");
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let first = window("final", 3);
    assert_eq!(first["version"], 1);
    // Partition 1 wakes up with a click in that minute: on time for its own
    // partition (its watermark is still 0), so it restates the window.
    send(1, minute + 30_000, 4);
    producer.flush(Duration::from_secs(10)).unwrap();
    let restated = window("restated", 4);
    assert_eq!(restated["version"], 2);
    stop(run);
    verify_clean(&data, &job);
}

#[test]
fn ingest_answers_503_while_the_broker_is_down_and_retries_land_once() {
    let dir = scratch("down");
    let kafka = Kafka::start(&dir);
    let data = dir.join("data");
    let (ingest, addr) = start_ingest(&data, &kafka, "down", &dir.join("ingest.log"));
    let before = clicks(300, 11, 10_000);
    post_all(addr, &before, 100);
    kafka.command("stop");
    let during = clicks(200, 12, 10_000);
    let body = during.iter().map(Sent::json).collect::<Vec<_>>().join("\n");
    let mut http = HttpClient::new(addr, None);
    let reply = http.post("/v1/clicks/batch", "application/x-ndjson", body.as_bytes()).unwrap();
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(reply.retry_after.is_some(), "a 503 says when to retry");
    kafka.command("start");
    let topic = kafka.topic("down", 8);
    let (_, ends) = topic.bounds().unwrap();
    // Every line of the acknowledged requests is one message (the job, not
    // ingest, drops retries); nothing of the refused request is there.
    assert_eq!(ends.iter().sum::<u64>(), before.len() as u64, "only acknowledged clicks are in Kafka");
    post_all(addr, &during, 200);
    stop(ingest);
    let job = job_file(&dir, &kafka, "down", 8, None);
    checked(tally(&data).arg("run").arg(&job).args(["--bounded", "-w", "2"]));
    verify_clean(&data, &job);
    let all: Vec<Sent> = before.into_iter().chain(during).collect();
    assert_minutes(&exported(&data, &job, &dir.join("rows.ndjson")), &all, "after the broker came back");
}

#[test]
fn up_with_kafka_serves_what_it_counted_from_the_topic() {
    let dir = scratch("up");
    let kafka = Kafka::start(&dir);
    let data = dir.join("data");
    let addr = free_addr();
    let up = tally(&data)
        .args(["up", "--no-auth", "--addr", &addr.to_string(), "--kafka", &kafka.bootstrap, "--topic", "up"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("up.log")).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !listening(addr) {
        assert!(started.elapsed() < Duration::from_secs(60), "up did not listen: {}", std::fs::read_to_string(dir.join("up.log")).unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Clicks in minutes that are over: the job finalizes them once it has
    // read the topic up to its end (the frontier then follows the clock).
    let sent: Vec<Sent> = clicks(2_000, 21, 120_000).into_iter().filter(|c| c.ts < now_ms() / MINUTE_MS * MINUTE_MS).collect();
    post_all(addr, &sent, 250);
    let want = recount(&sent);
    let mut http = HttpClient::new(addr, None);
    let (from, to) = (want.keys().map(|k| k.1).min().unwrap(), now_ms());
    let started = Instant::now();
    loop {
        let mut got = BTreeMap::new();
        for ad in 0..9 {
            let reply = http.get(&format!("/v1/ads/k-ad-{ad}/clicks?window=1m&from={from}&to={to}")).unwrap();
            assert_eq!(reply.status, 200, "{}", reply.text());
            for row in reply.json()["rows"].as_array().unwrap() {
                if row["status"] != "partial" {
                    got.insert((format!("k-ad-{ad}"), row["window_start"].as_u64().unwrap()), row["clicks"].as_u64().unwrap());
                }
            }
        }
        if got == want {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the query API never matched the recount: {got:?} vs {want:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let text = std::fs::read_to_string(dir.join("up.log")).unwrap();
    assert!(text.contains("kafka topic up"), "{text}");
    // Its metrics read the topic's end offsets: every partition has one, and
    // together they hold at least every click sent (transaction markers
    // take offsets too); the lag of each is what lies past its committed
    // offset.
    let metrics = http.get("/metrics").unwrap().text();
    let gauge = |name: &str| -> BTreeMap<String, u64> {
        let prefix = format!("{name}{{partition=\"");
        metrics
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|l| l.split_once("\"} "))
            .map(|(p, v)| (p.to_owned(), v.parse().unwrap()))
            .collect()
    };
    let (ends, committed, lags) =
        (gauge("tally_partition_end_offset"), gauge("tally_partition_committed_offset"), gauge("tally_partition_lag"));
    assert_eq!(ends.len(), 8, "{metrics}");
    assert!(ends.values().sum::<u64>() >= sent.len() as u64, "{metrics}");
    for (partition, lag) in &lags {
        assert_eq!(*lag, ends[partition] - committed[partition], "partition {partition}: {metrics}");
    }
    stop(up);
}

#[test]
fn a_peer_that_stops_answering_ends_the_cluster_after_the_peer_timeout() {
    let dir = scratch("silent");
    let kafka = Kafka::start(&dir);
    let job = job_file(&dir, &kafka, "silent", 4, None);
    kafka.topic("silent", 4).ensure().unwrap();
    let hostfile = dir.join("hosts");
    std::fs::write(&hostfile, format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port())).unwrap();
    let data = dir.join("data");
    let spawn = |process: usize| {
        tally(&data)
            .arg("run")
            .arg(&job)
            .args(["--processes", "2", "--process", &process.to_string(), "--peer-timeout", "5", "--hostfile"])
            .arg(&hostfile)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (leader, follower) = (spawn(0), spawn(1));
    // Both run, committing as the clock moves the frontier.
    let started = Instant::now();
    while tally(&data).arg("verify").arg(&job).output().unwrap().status.code() != Some(0) {
        assert!(started.elapsed() < Duration::from_secs(60), "the cluster never committed");
        std::thread::sleep(Duration::from_millis(300));
    }
    signal(follower.id(), "STOP");
    let stopped = Instant::now();
    let out = finish(leader);
    let waited = stopped.elapsed();
    signal(follower.id(), "KILL");
    signal(follower.id(), "CONT");
    let _ = finish(follower);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("no progress for 5 s"), "{text}");
    assert!(waited < Duration::from_secs(60), "process 0 waited {waited:?} for a silent peer");
}

#[test]
fn only_committed_transactions_count_and_a_bounded_run_ends_past_their_markers() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let dir = scratch("txn");
    let kafka = Kafka::start(&dir);
    kafka.topic("txn", 2).ensure().unwrap();
    let producer: BaseProducer = tally::sources::kafka::client_config(&kafka.bootstrap)
        .set("transactional.id", "tally-test-txn")
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    let now = now_ms();
    let transaction = |first: u32, count: u32, commit: bool| {
        producer.begin_transaction().unwrap();
        for id in first..first + count {
            let key = format!("00000000-0000-4000-8000-{id:012x}");
            let value =
                format!(r#"{{"ad_id":"txn-ad","timestamp":{},"user_id":"u{id}","request_id":"{key}"}}"#, now - 60_000 + u64::from(id));
            producer.send(BaseRecord::to("txn").key(&key).payload(&value)).unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        if commit {
            producer.commit_transaction(Duration::from_secs(30)).unwrap();
        } else {
            producer.abort_transaction(Duration::from_secs(30)).unwrap();
        }
    };
    transaction(1, 10, true);
    transaction(100, 5, false);
    transaction(200, 10, true);
    let data = dir.join("data");
    let job = job_file(&dir, &kafka, "txn", 2, None);
    // The topic ends with commit markers: a bounded run must see past them.
    checked(tally(&data).arg("run").arg(&job).args(["--bounded", "-w", "2"]));
    verify_clean(&data, &job);
    let rows = exported(&data, &job, &dir.join("rows.ndjson"));
    let clicks: u64 = rows
        .iter()
        .filter(|((kt, key, g, _), _)| kt == "ad" && key == "txn-ad" && g == "1m")
        .map(|(_, r)| r["clicks"].as_u64().unwrap())
        .sum();
    assert_eq!(clicks, 20, "the committed transactions' clicks, not the aborted one's");
}

/// One Cassandra node of the test's own, stopped on drop.
struct Cassandra {
    dir: PathBuf,
    hosts: String,
}

impl Cassandra {
    fn start(dir: &Path) -> Cassandra {
        let dir = dir.join("cassandra");
        let port = loop {
            let port = free_port();
            if port < 60_000 && (1..3).all(|i| TcpListener::bind(("127.0.0.1", port + i)).is_ok()) {
                break port;
            }
        };
        let out = Command::new("bash")
            .arg(script("cassandra.sh"))
            .args(["start", "--dir"])
            .arg(&dir)
            .args(["--port", &port.to_string()])
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/cassandra.sh");
        let cassandra = Cassandra { dir, hosts: String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").trim().to_owned() };
        assert!(out.status.success(), "cassandra.sh start failed:\n{}", String::from_utf8_lossy(&out.stderr));
        cassandra
    }
}

impl Drop for Cassandra {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script("cassandra.sh")).arg("stop").arg("--dir").arg(&self.dir).stdin(Stdio::null()).output();
    }
}

/// `job_file`'s job committing to `cassandra` instead of the embedded store.
fn cassandra_job_file(dir: &Path, kafka: &Kafka, cassandra: &Cassandra, topic: &str, partitions: u32) -> PathBuf {
    let file = job_file(dir, kafka, topic, partitions, None);
    let text = std::fs::read_to_string(&file).unwrap();
    let sink = format!("[sink]\nkind = \"cassandra\"\nhosts = \"{}\"\nkeyspace = \"tally_kafka\"\n", cassandra.hosts);
    std::fs::write(&file, text.replace("[sink]\nkind = \"store\"\n", &sink)).unwrap();
    file
}

/// Every line of the processes' logs of a supervised cluster.
fn cluster_logs(state: &Path) -> String {
    (0..4).filter_map(|p| std::fs::read_to_string(state.join(format!("p{p}.log"))).ok()).collect()
}

/// A live 2×2 cluster committing to Cassandra, SIGKILLed 4 times, then
/// finished by 3×1 and replayed into a backfilled version in Cassandra.
#[test]
fn a_cassandra_cluster_restores_each_process_from_cassandra_through_kills_and_a_new_shape() {
    let dir = scratch("cassandra-cluster");
    let kafka = Kafka::start(&dir);
    let cassandra = Cassandra::start(&dir);
    let data = dir.join("data");
    let job = cassandra_job_file(&dir, &kafka, &cassandra, "cc", 8);
    let (ingest, addr) = start_ingest(&data, &kafka, "cc", &dir.join("ingest.log"));
    // A live 2 × 2 cluster: its windows spread over both processes, and
    // every generation after a kill restores them from Cassandra.
    let live = dir.join("cluster-2x2");
    let supervisor = Supervisor::start(&job, &live, &data, &dir.join("cluster.log"));
    let sent = clicks(6_000, 11, 20_000);
    let sender = {
        let sent = sent.clone();
        std::thread::spawn(move || {
            for part in sent.chunks(400) {
                post_all(addr, part, 100);
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    let started = Instant::now();
    for kill in 0..4u32 {
        let log = || std::fs::read_to_string(dir.join("cluster.log")).unwrap_or_default();
        let (generation, pids) = loop {
            assert!(started.elapsed() < Duration::from_secs(200), "kill {kill}: no cluster to kill:\n{}", log());
            let (generation, pids) = read_pids(&live);
            if pids.len() == 2 {
                break (generation, pids);
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        // Long enough for a generation to start and commit epochs.
        std::thread::sleep(Duration::from_millis(3_000 + 500 * u64::from(kill)));
        signal(pids[kill as usize % 2], "KILL");
        while read_pids(&live).0 == generation {
            assert!(started.elapsed() < Duration::from_secs(200), "the supervisor did not restart the cluster:\n{}", log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    sender.join().expect("every click acknowledged");
    std::thread::sleep(Duration::from_secs(3));
    supervisor.stop();
    stop(ingest);
    let logs = cluster_logs(&live);
    assert!(logs.contains("restored from epoch"), "process 1 never restored its windows from Cassandra:\n{logs}");
    // Finished by 3 processes × 1 worker: each restores the open windows
    // its worker now owns, and the bounded end settles them all.
    let bounded = dir.join("cluster-3x1");
    checked(
        Command::new("bash")
            .arg(script("cluster.sh"))
            .arg(&job)
            .args(["3", "1", "--state"])
            .arg(&bounded)
            .args(["--tally", TALLY, "--", "--bounded", "--data-dir"])
            .arg(&data)
            .stdin(Stdio::null()),
    );
    let logs = cluster_logs(&bounded);
    let restored: Vec<u64> = logs
        .lines()
        .filter_map(|l| l.strip_prefix("restored from epoch "))
        .filter_map(|l| l.split(": ").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    assert!(restored.len() == 2 && restored.iter().all(|&windows| windows > 0), "processes 1 and 2 restore open windows: {logs}");
    verify_clean(&data, &job);
    let live_rows = exported(&data, &job, &dir.join("rows.ndjson"));
    assert_minutes(&live_rows, &sent, "after 4 kills and 2x2 to 3x1");
    // A replay of the whole topic into a version in Cassandra counts what
    // the live cluster counted.
    checked(tally(&data).arg("backfill").arg(&job).args(["--from", "earliest", "--to", "latest", "--version", "replay", "-w", "2"]));
    checked(tally(&data).arg("verify").arg(&job).args(["--version", "replay"]));
    let file = dir.join("replay.ndjson");
    checked(tally(&data).arg("export").arg(&job).args(["--version", "replay", "--output"]).arg(&file));
    assert_eq!(settled(&rows_of(&file)), settled(&live_rows), "a backfill of the topic into Cassandra differs from the live output");
}
