//! Exactly-once over the life of one data directory, as a user lives it:
//! import → bounded run → more data (some of it in windows the first run
//! finalized) → bounded run → `tally up` with a backlog of hours-old clicks
//! over HTTP, retries and one click stamped minutes ahead → SIGTERM →
//! export and verify on the stopped store → more data, a bounded run killed
//! with SIGKILL mid-way and restarted with another worker count → a settings
//! change, refused. After every step the latest settled 1m rows per ad equal
//! a recount done here from the clicks sent (distinct request ids per ad and
//! minute: every retry is sent within the dedup horizon, and no click is
//! older than `restate_within` behind its partition, so each counts once).
//!
//! Then the same log is replayed by bounded runs into new stores with 1 and
//! 4 workers: the latest final and restated rows of the live history equal
//! those of the replays — the latest version of every row is a function of
//! the log alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tally::ingest::client::HttpClient;

#[path = "common/child.rs"]
mod child;
#[path = "common/net.rs"]
mod net;
use child::{checked, finish};
use net::{free_addr, listening};

const TALLY: &str = env!("CARGO_BIN_EXE_tally");
const JOB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/embedded.toml");
const MINUTE_MS: u64 = 60_000;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// One click as the test sent it.
#[derive(Clone)]
struct Click {
    ad: u32,
    ts: u64,
    id: u128,
}

impl Click {
    fn json(&self) -> String {
        let id = format!("{:032x}", self.id);
        format!(
            r#"{{"ad_id":"lc-ad-{}","timestamp":{},"user_id":"u{}","request_id":"{}-{}-{}-{}-{}"}}"#,
            self.ad,
            self.ts,
            self.id % 97,
            &id[0..8],
            &id[8..12],
            &id[12..16],
            &id[16..20],
            &id[20..32]
        )
    }
}

/// Seeded clicks: `n` clicks over `minutes` minutes from `from`, in time
/// order with a little jitter, over 7 ads, ids from `first_id`.
fn clicks(n: u64, from: u64, minutes: u64, first_id: u128) -> Vec<Click> {
    let mut state = first_id as u64 ^ 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let ts = from + i * minutes * MINUTE_MS / n + state % 3_000;
            Click { ad: (state >> 20) as u32 % 7, ts, id: first_id + u128::from(i) }
        })
        .collect()
}

/// Distinct request ids per (ad, minute).
fn recount(sent: &[Click]) -> BTreeMap<(String, u64), u64> {
    let mut ids: BTreeMap<(String, u64), std::collections::BTreeSet<u128>> = BTreeMap::new();
    for c in sent {
        ids.entry((format!("lc-ad-{}", c.ad), c.ts - c.ts % MINUTE_MS)).or_default().insert(c.id);
    }
    ids.into_iter().map(|(k, v)| (k, v.len() as u64)).collect()
}

fn tally(data: &Path) -> Command {
    let mut command = Command::new(TALLY);
    command.arg("--data-dir").arg(data).stdin(Stdio::null());
    command
}

fn output(command: &mut Command) -> Output {
    finish(command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn tally"))
}

fn import(data: &Path, dir: &Path, name: &str, batch: &[Click]) {
    let file = dir.join(name);
    std::fs::write(&file, batch.iter().map(|c| c.json() + "\n").collect::<String>()).unwrap();
    checked(tally(data).args(["log", "import"]).arg(&file));
}

fn bounded(data: &Path, workers: u32) -> Command {
    let mut command = tally(data);
    command.args(["run", JOB, "--bounded", "-w", &workers.to_string()]);
    command
}

/// Latest rows by (key type, key, granularity, window start) from `tally export`.
fn exported(data: &Path, dir: &Path) -> BTreeMap<(String, String, String, u64), Value> {
    let file = dir.join("export.ndjson");
    checked(tally(data).args(["export", JOB, "--output"]).arg(&file));
    std::fs::read_to_string(&file)
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

/// Latest settled 1m ad counts.
fn settled_minutes(rows: &BTreeMap<(String, String, String, u64), Value>) -> BTreeMap<(String, u64), u64> {
    rows.iter()
        .filter(|((kt, _, g, _), row)| kt == "ad" && g == "1m" && row["status"] != "partial")
        .map(|((_, key, _, start), row)| ((key.clone(), *start), row["clicks"].as_u64().unwrap()))
        .collect()
}

fn assert_counts(data: &Path, dir: &Path, sent: &[Click], step: &str) {
    let got = settled_minutes(&exported(data, dir));
    let want = recount(sent);
    let wrong: Vec<_> = want.iter().filter(|(k, v)| got.get(*k) != Some(v)).take(5).map(|(k, v)| (k.clone(), *v, got.get(k))).collect();
    assert!(
        wrong.is_empty() && got.len() == want.len(),
        "{step}: {} windows expected, {} settled; first differences {wrong:?}",
        want.len(),
        got.len()
    );
}

fn verify_clean(data: &Path, step: &str) {
    let out = output(tally(data).args(["verify", JOB]));
    assert!(
        out.status.success(),
        "{step}: tally verify failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn post(http: &mut HttpClient, batch: &[Click]) {
    for chunk in batch.chunks(500) {
        let body = chunk.iter().map(Click::json).collect::<Vec<_>>().join("\n");
        let reply = http.post_until_accepted("/v1/clicks/batch", "application/x-ndjson", body.as_bytes(), 500).unwrap();
        assert_eq!(reply.status, 202, "{}", reply.text());
    }
}

fn sigterm(child: &mut Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

/// Every window that is settled in both runs has the same latest clicks and
/// distinct users.
fn same_latest(a: &BTreeMap<(String, String, String, u64), Value>, b: &BTreeMap<(String, String, String, u64), Value>) -> usize {
    let settled = |rows: &BTreeMap<(String, String, String, u64), Value>| -> BTreeMap<_, (u64, u64)> {
        rows.iter()
            .filter(|(_, r)| r["status"] != "partial")
            .map(|(k, r)| (k.clone(), (r["clicks"].as_u64().unwrap(), r["distinct_users"].as_u64().unwrap())))
            .collect()
    };
    let (a, b) = (settled(a), settled(b));
    let differ: Vec<_> = a.iter().filter(|(k, v)| b.get(*k) != Some(v)).take(5).collect();
    assert!(differ.is_empty() && a.len() == b.len(), "live {} vs replay {} settled rows; first differences {differ:?}", a.len(), b.len());
    a.len()
}

#[test]
fn a_data_directory_stays_exact_over_its_life_and_its_log_replays_to_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hour_ago = now_ms() - now_ms() % MINUTE_MS - 3 * 3_600_000;
    let mut sent: Vec<Click> = Vec::new();

    // 1. Import and a bounded run (it finalizes every window).
    let a = clicks(3_000, hour_ago, 20, 1 << 64);
    import(&data, dir.path(), "a.ndjson", &a);
    sent.extend(a);
    checked(&mut bounded(&data, 2));
    assert_counts(&data, dir.path(), &sent, "after the first bounded run");

    // 2. More data, partly in the windows the first run finalized: a second
    //    bounded run resumes and restates them.
    let b = clicks(2_000, hour_ago + 10 * MINUTE_MS, 20, 2 << 64);
    import(&data, dir.path(), "b.ndjson", &b);
    sent.extend(b);
    checked(&mut bounded(&data, 1));
    assert_counts(&data, dir.path(), &sent, "after the second bounded run");
    let rows = exported(&data, dir.path());
    assert!(rows.values().any(|r| r["status"] == "restated"), "clicks in finalized windows restate them");

    // 3. `tally up`: a backlog of 3-hour-old clicks over HTTP in order, with
    //    retries, then one click stamped four minutes ahead.
    let (mut up, mut http) = start_up(&data);
    let c = clicks(4_000, hour_ago + 30 * MINUTE_MS, 40, 3 << 64);
    post(&mut http, &c[..1_200]);
    post(&mut http, &c[1_150..1_200]); // retries of the last 30 s: within the horizon
    post(&mut http, &c[1_200..]);
    let ahead = Click { ad: 6, ts: now_ms() + 4 * MINUTE_MS, id: 4 << 64 };
    post(&mut http, std::slice::from_ref(&ahead));
    sent.extend(c);
    sent.push(ahead.clone());
    // The backlog's windows are long past: the clock-driven frontier emits
    // them. Wait until the store has every one of them.
    let backlog: Vec<Click> = sent.iter().filter(|c| c.id != ahead.id).cloned().collect();
    let want = recount(&backlog);
    let started = Instant::now();
    loop {
        let got = settled_minutes(&exported(&data, dir.path()));
        if want.iter().all(|(k, v)| got.get(k) == Some(v)) {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let wrong: Vec<_> =
                want.iter().filter(|(k, v)| got.get(*k) != Some(v)).take(5).map(|(k, v)| (k.clone(), *v, got.get(k))).collect();
            panic!(
                "the live run never counted the backlog: {} windows expected, {} settled; first differences {wrong:?}",
                want.len(),
                got.len()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    // 4. SIGTERM: a clean stop; export and verify read the stopped store.
    sigterm(&mut up);
    let out = finish(up);
    assert!(out.status.success(), "tally up after SIGTERM:\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(settled_minutes(&exported(&data, dir.path())).len(), want.len(), "export after a clean stop");
    verify_clean(&data, "after a clean stop");

    // 5. More data, a bounded run killed mid-way, a restart with 4 workers.
    let d = clicks(200_000, now_ms() - 20 * MINUTE_MS, 18, 5 << 64);
    import(&data, dir.path(), "d.ndjson", &d);
    sent.extend(d);
    let mut child = bounded(&data, 3).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let _ = child.kill();
    let _ = child.wait();
    checked(&mut bounded(&data, 4));
    assert_counts(&data, dir.path(), &sent, "after a kill and a restart with 4 workers");
    verify_clean(&data, "after a kill and a restart");

    // 6. A settings change is refused, naming the key.
    let changed = dir.path().join("changed.toml");
    std::fs::write(&changed, std::fs::read_to_string(JOB).unwrap() + "\n[dedup]\nhorizon = \"2m\"\n").unwrap();
    let out = output(tally(&data).args(["run"]).arg(&changed).arg("--bounded"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("dedup.horizon"), "the refusal names the key: {stderr}");
    assert_counts(&data, dir.path(), &sent, "after the refused run");

    // 7. Replays of the same log into new stores, with 1 and 4 workers.
    let live = exported(&data, dir.path());
    for workers in [1, 4] {
        let replay = dir.path().join(format!("replay-{workers}"));
        std::fs::create_dir_all(&replay).unwrap();
        copy_dir(&data.join("log"), &replay.join("log"));
        std::fs::copy(data.join("salt"), replay.join("salt")).unwrap();
        checked(&mut bounded(&replay, workers));
        let compared = same_latest(&live, &exported(&replay, dir.path()));
        assert!(compared > 100, "{compared} settled rows compared");
    }
}

/// `tally up --no-auth` on `data`, once it listens, and a client for it.
fn start_up(data: &Path) -> (Child, HttpClient) {
    let addr = free_addr();
    let up = tally(data)
        .args(["up", "--no-auth", "--addr", &addr.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tally up");
    let started = Instant::now();
    while !listening(addr) {
        assert!(started.elapsed() < Duration::from_secs(60), "tally up never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    (up, HttpClient::new(addr, None))
}

/// A live run whose partitions go idle, with clicks too late for their
/// partition (restating, and beyond `restate_within`: held) and a click
/// stamped minutes ahead; stopped with SIGTERM. Bounded replays of its log
/// into new stores, with 1 and 4 workers, have the same latest rows for
/// every window the live run settled, and a ledger that holds the live
/// run's (plus the batches still pending in the live commit).
#[test]
fn live_rows_equal_bounded_replays_of_their_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = now_ms() - now_ms() % MINUTE_MS - 2 * 3_600_000;
    let (mut up, mut http) = start_up(&data);
    let first = clicks(3_000, base, 10, 1 << 64);
    post(&mut http, &first);
    let late = clicks(300, base + MINUTE_MS, 2, 2 << 64); // ~8 minutes behind: restating
    post(&mut http, &late);
    let ahead = Click { ad: 3, ts: now_ms() + 4 * MINUTE_MS, id: 3 << 64 };
    post(&mut http, std::slice::from_ref(&ahead));
    let third = clicks(2_000, base + 10 * MINUTE_MS, 10, 4 << 64); // held in the partition ahead
    post(&mut http, &third);

    // Wait until every minute of the first clicks is settled and the rows
    // stop changing (the commit caught up with the log). (Some minutes of
    // the third batch may hold only held clicks, so they are not waited for.)
    let minutes: std::collections::BTreeSet<(String, u64)> =
        first.iter().map(|c| (format!("lc-ad-{}", c.ad), c.ts - c.ts % MINUTE_MS)).collect();
    let started = Instant::now();
    let mut previous = BTreeMap::new();
    loop {
        let rows = exported(&data, dir.path());
        let settled = settled_minutes(&rows);
        if minutes.iter().all(|m| settled.contains_key(m)) && rows == previous {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let missing: Vec<_> = minutes.iter().filter(|m| !settled.contains_key(*m)).take(5).collect();
            panic!(
                "the live run never settled the posted minutes: {} of {} missing, first {missing:?}; rows changed: {}",
                minutes.iter().filter(|m| !settled.contains_key(*m)).count(),
                minutes.len(),
                rows != previous
            );
        }
        previous = rows;
        std::thread::sleep(Duration::from_millis(1_500));
    }
    sigterm(&mut up);
    assert!(finish(up).status.success());
    verify_clean(&data, "the live run");
    let live = exported(&data, dir.path());
    let late_live = late_ids(&data, dir.path());
    assert!(!late_live.is_empty(), "the test makes too-late clicks");

    for workers in [1, 4] {
        let replay = dir.path().join(format!("replay-{workers}"));
        copy_dir(&data.join("log"), &replay.join("log"));
        std::fs::copy(data.join("salt"), replay.join("salt")).unwrap();
        checked(&mut bounded(&replay, workers));
        let replayed = exported(&replay, dir.path());
        let settled_live: BTreeMap<_, _> =
            live.iter().filter(|(_, r)| r["status"] != "partial").map(|(k, v)| (k.clone(), v.clone())).collect();
        let restricted: BTreeMap<_, _> = replayed.into_iter().filter(|(k, _)| settled_live.contains_key(k)).collect();
        let compared = same_latest(&settled_live, &restricted);
        assert!(compared > 100, "{compared} settled rows compared");
        // Too-late clicks whose batch the live commit had not reached are
        // pending there; the replay's end applied them. Every ledger id of
        // the live run is in the replay's, and both ledgers equal the
        // recount as of their own commit (verify).
        let late_replay = late_ids(&replay, dir.path());
        let missing = late_live.iter().filter(|(k, ids)| late_replay.get(*k).is_none_or(|r| !ids.iter().all(|id| r.contains(id)))).count();
        assert_eq!(missing, 0, "-w {workers}: {missing} live ledger windows not in the replay's ledger");
        verify_clean(&replay, "a replay");
    }
}

/// The late ledger's request ids by (key type, key, window, held).
fn late_ids(data: &Path, dir: &Path) -> BTreeMap<(String, String, u64, bool), Vec<String>> {
    let file = dir.join("late.ndjson");
    let out = checked(tally(data).args(["export", JOB, "--output"]).arg(dir.join("rows-for-late.ndjson")).arg("--late").arg(&file));
    drop(out);
    let mut ids: BTreeMap<(String, String, u64, bool), Vec<String>> = BTreeMap::new();
    for line in std::fs::read_to_string(&file).unwrap().lines() {
        let entry: Value = serde_json::from_str(line).unwrap();
        let key = (
            entry["key_type"].as_str().unwrap().to_string(),
            entry["key"].as_str().unwrap().to_string(),
            entry["window_start"].as_u64().unwrap(),
            entry["held"].as_bool().unwrap(),
        );
        let list = ids.entry(key).or_default();
        list.extend(entry["request_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()));
        list.sort();
    }
    ids
}

fn copy_dir(from: &Path, to: &PathBuf) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
