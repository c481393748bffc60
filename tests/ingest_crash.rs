//! Durability of acknowledgements: clients send signed batches and retry
//! them (same request ids) while `tally ingest` is killed with SIGKILL at
//! random moments and restarted. Afterwards:
//!
//! - every request id that ever got a `202` is in the log (read back from
//!   the log files by a fresh open, not from the server's counters);
//! - a bounded job run counts each click exactly once: its committed 1m ad
//!   rows equal a recount of the distinct request ids in the log, and
//!   `tally verify` finds no mismatch;
//! - no raw user id appears in any file of the data directory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tally::ingest::auth::Secret;

#[path = "common/net.rs"]
mod net;
use net::{free_addr, listening};
use tally::ingest::client::{HttpClient, Signer};

const TALLY: &str = env!("CARGO_BIN_EXE_tally");
const JOB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/embedded.toml");
const SECRET: &str = "kill-test-secret-0123456789";
/// Raw user ids all start with this, so one search finds any of them.
const USER_PREFIX: &str = "raw-user-id-";
const AD_PREFIX: &str = "kill-ad-";

const CLIENTS: u64 = 4;
const CLICKS_PER_BATCH: u64 = 250;
/// Most batches a client sends, whatever happens.
const MAX_BATCHES_PER_CLIENT: u64 = 4_000;
const KILLS: usize = 12;

/// A tiny seeded generator for kill times and client choices.
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

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn uuid(client: u64, n: u64) -> String {
    format!("{client:08x}-0000-0000-0000-{n:012x}")
}

fn request_id(client: u64, n: u64) -> u128 {
    (u128::from(client) << 96) | u128::from(n)
}

/// A child process that is killed when dropped, so a failing test leaves
/// nothing running.
struct Guard(Child);

impl std::ops::Deref for Guard {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Guard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_ingest(data: &Path, config: &Path, addr: SocketAddr) -> Guard {
    let mut child = Command::new(TALLY)
        .arg("--data-dir")
        .arg(data)
        .args(["ingest", "--config"])
        .arg(config)
        .args(["--addr", &addr.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tally ingest");
    let started = Instant::now();
    while !listening(addr) {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("tally ingest did not start listening");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Guard(child)
}

/// One client: sends batches in order, each until acknowledged, until told
/// to stop, and now and then re-sends an acknowledged batch (a client-side
/// duplicate). Returns the acknowledged request ids.
fn client(addr: SocketAddr, id: u64, base_ts: u64, stop: &AtomicBool) -> Vec<u128> {
    let signer = Signer { client_id: "sdk".to_owned(), secret: Secret::new(SECRET) };
    let mut http = HttpClient::new(addr, Some(signer));
    let mut rng = Rng(0x9e37_79b9 ^ (id + 1));
    let mut acked = Vec::new();
    let mut sent: Vec<String> = Vec::new();
    for batch in 0..MAX_BATCHES_PER_CLIENT {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let clicks: Vec<String> = (0..CLICKS_PER_BATCH)
            .map(|i| {
                let n = batch * CLICKS_PER_BATCH + i;
                let ts = base_ts + n * 7 % 20_000;
                format!(
                    r#"{{"ad_id":"{AD_PREFIX}{}","timestamp":{ts},"user_id":"{USER_PREFIX}{id}-{}","request_id":"{}"}}"#,
                    rng.below(20),
                    rng.below(500),
                    uuid(id, n)
                )
            })
            .collect();
        let body = format!("[{}]", clicks.join(","));
        let body = if rng.below(10) == 0 && !sent.is_empty() {
            // Re-send an earlier batch instead of a new one, then the new one.
            let old = sent[rng.below(sent.len() as u64) as usize].clone();
            post(&mut http, &old);
            body
        } else {
            body
        };
        post(&mut http, &body);
        acked.extend((0..CLICKS_PER_BATCH).map(|i| request_id(id, batch * CLICKS_PER_BATCH + i)));
        sent.push(body);
    }
    acked
}

fn post(http: &mut HttpClient, body: &str) {
    let reply =
        http.post_until_accepted("/v1/clicks/batch", "application/json", body.as_bytes(), 10_000).expect("batch never acknowledged");
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(reply.json()["accepted"], CLICKS_PER_BATCH, "{}", reply.text());
}

/// Every click in the log, as (request id, ad, minute start).
fn read_log(dir: &Path) -> Vec<(u128, String, u64)> {
    let log = tally::log::Log::open(dir, 8, Default::default()).expect("open log");
    let mut all = Vec::new();
    for (p, &end) in log.end_offsets().iter().enumerate() {
        let mut reader = log.reader(p as u32, 0).unwrap();
        let mut clicks = Vec::new();
        while reader.offset() < end {
            reader.read(&mut clicks, 10_000).unwrap();
        }
        all.extend(clicks.into_iter().map(|c| (c.request_id, c.ad.to_string(), c.ts - c.ts % 60_000)));
    }
    all
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn run(command: &mut Command) -> String {
    let output = command.stdin(Stdio::null()).output().expect("spawn tally");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{command:?} failed:\n{stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

#[test]
fn acknowledged_clicks_survive_sigkill_of_ingest_and_count_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("ingest.toml");
    std::fs::write(&config, format!("[[auth.clients]]\nid = \"sdk\"\nsecret = \"{SECRET}\"\n")).unwrap();
    let addr = free_addr();
    let server = Arc::new(Mutex::new(start_ingest(&data, &config, addr)));

    let base_ts = now_ms() - 30_000;
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || client(addr, id, base_ts, &stop))
        })
        .collect();

    let mut rng = Rng(20261129);
    for _ in 0..KILLS {
        std::thread::sleep(Duration::from_millis(50 + rng.below(300)));
        let mut child = server.lock().unwrap();
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        *child = start_ingest(&data, &config, addr);
    }
    stop.store(true, Ordering::SeqCst);
    let acked: Vec<u128> = clients.into_iter().flat_map(|c| c.join().expect("client")).collect();
    // A clean stop: SIGTERM, exit 0.
    let mut child = server.lock().unwrap();
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(child.wait().unwrap().success(), "tally ingest did not stop cleanly on SIGTERM");
    let kills = KILLS;

    // 1. Nothing acknowledged was lost.
    let logged = read_log(&data.join("log"));
    let in_log: HashSet<u128> = logged.iter().map(|c| c.0).collect();
    let lost: Vec<&u128> = acked.iter().filter(|id| !in_log.contains(id)).collect();
    assert_eq!(lost.len(), 0, "acknowledged but not in the log: {:?}", &lost[..lost.len().min(5)]);
    // Every batch sent was acknowledged in the end, so the log holds
    // exactly the acknowledged ids, each at least once.
    assert_eq!(in_log, acked.iter().copied().collect::<HashSet<u128>>());
    let copies = logged.len() - in_log.len();
    eprintln!("{kills} kills; {} clicks acknowledged, {} records in the log ({copies} retried copies)", acked.len(), logged.len());

    // 2. Counted exactly once: committed 1m ad rows = distinct ids per (ad, minute).
    let mut recount: BTreeMap<(String, u64), u64> = BTreeMap::new();
    let mut first: HashMap<u128, (String, u64)> = HashMap::new();
    for (id, ad, minute) in &logged {
        let window = first.entry(*id).or_insert_with(|| (ad.clone(), *minute));
        assert_eq!(window, &(ad.clone(), *minute), "copies of request {id} differ");
    }
    for window in first.into_values() {
        *recount.entry(window).or_default() += 1;
    }
    run(Command::new(TALLY).arg("--data-dir").arg(&data).args(["run", JOB, "--bounded", "-w", "2"]));
    let rows_path = dir.path().join("rows.ndjson");
    run(Command::new(TALLY).arg("--data-dir").arg(&data).args(["export", JOB, "--output"]).arg(&rows_path));
    let mut counted: BTreeMap<(String, u64), u64> = BTreeMap::new();
    for line in std::fs::read_to_string(&rows_path).unwrap().lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        if row["key_type"] == "ad" && row["granularity"] == "1m" && row["status"] != "partial" {
            let key = (row["key"].as_str().unwrap().to_owned(), row["window_start"].as_u64().unwrap());
            let clicks = row["clicks"].as_u64().unwrap();
            let previous = counted.insert(key.clone(), clicks);
            assert!(previous.is_none(), "two committed rows for {key:?}");
        }
    }
    assert_eq!(counted, recount, "committed rows differ from the recount of the log");
    let verify = run(Command::new(TALLY).arg("--data-dir").arg(&data).args(["verify", JOB]));
    assert!(verify.contains(" 0 mismatches"), "{verify}");

    // 3. No raw user id on disk; the search does find the ad ids, which
    //    are stored as sent, so it reads the right bytes.
    let files = files_under(&data);
    let mut ad_seen = false;
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        assert!(!contains(&bytes, USER_PREFIX.as_bytes()), "a raw user id is in {}", file.display());
        ad_seen |= contains(&bytes, AD_PREFIX.as_bytes());
    }
    assert!(ad_seen, "the search found no ad id in {} files: it is not reading the log", files.len());
}
