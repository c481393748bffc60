//! API keys against a running `tally up`: for two advertisers and an
//! operator, every query route with no key, a wrong, revoked or expired
//! key, the other advertiser's key and the right one; an ad that moves
//! between the advertisers; revocation while running; the limit on failed
//! keys per address; and no key in clear on disk or in the logs.
//!
//! What a key may see is checked against the test's own recount of the
//! clicks it imported and its own reading of the catalog, not against
//! tally's.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

#[path = "common/net.rs"]
mod net;
use net::{free_addr, listening};

const TALLY: &str = env!("CARGO_BIN_EXE_tally");
const MINUTE: u64 = 60_000;
const HOUR: u64 = 3_600_000;

/// (ad, campaign, advertiser) before the move; `mover` goes from adv-a
/// (campaign cm-a) to adv-b (campaign cm-b) half way through the hour.
const ADS: [(&str, &str, &str); 4] = [("a-1", "ca", "adv-a"), ("a-2", "ca", "adv-a"), ("b-1", "cb", "adv-b"), ("mover", "cm-a", "adv-a")];
const MOVE_AFTER: u64 = 30 * MINUTE;

struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn tally(data: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(TALLY).arg("--data-dir").arg(data).args(args).output().unwrap();
    assert!(out.status.success(), "tally {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Creates a key and returns (id, key).
fn add_key(data: &Path, args: &[&str]) -> (String, String) {
    let out = tally(data, &[&["keys", "add"][..], args].concat());
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let id = key.split('_').nth(1).unwrap().to_owned();
    (id, key)
}

/// `GET path` from `source`, with `key` as a bearer token: status and body.
fn get(source: IpAddr, addr: SocketAddr, path: &str, key: Option<&str>) -> (u16, Value) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source, 0)).unwrap();
        socket.connect(addr).await.unwrap().into_std().unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut stream: TcpStream = stream;
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let status = reply[9..12].parse().unwrap();
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn local() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

/// The test's own attribution: the advertiser of `ad` for the 1m window
/// starting at `start`.
fn owner(ad: &str, start: u64, t0: u64) -> (&'static str, &'static str) {
    let (_, campaign, advertiser) = ADS.iter().find(|(a, _, _)| *a == ad).copied().unwrap();
    if ad == "mover" && start >= t0 + MOVE_AFTER {
        return ("cm-b", "adv-b");
    }
    (campaign, advertiser)
}

/// Clicks: each ad one every 10 s of the hour from `t0`.
fn clicks(t0: u64) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    for (i, (ad, _, _)) in ADS.iter().enumerate() {
        for k in 0..360u64 {
            out.push((ad.to_string(), t0 + k * 10_000 + i as u64 * 1_000, (i as u64) << 32 | k));
        }
    }
    out
}

/// Per 1m window of each ad, its clicks by the test's own count.
fn recount(clicks: &[(String, u64, u64)]) -> BTreeMap<(String, u64), u64> {
    let mut counts = BTreeMap::new();
    for (ad, ts, _) in clicks {
        *counts.entry((ad.clone(), ts / MINUTE * MINUTE)).or_default() += 1;
    }
    counts
}

/// `(window_start, clicks)` of a series answer.
fn series(body: &Value) -> Vec<(u64, u64)> {
    body["rows"].as_array().unwrap().iter().map(|r| (r["window_start"].as_u64().unwrap(), r["clicks"].as_u64().unwrap())).collect()
}

fn start_up(dir: &Path, data: &Path, catalog: &Path, addr: SocketAddr) -> Up {
    let config = dir.join("ingest.toml");
    std::fs::write(&config, "[[auth.clients]]\nid = \"web\"\nsecret = \"0123456789abcdef0123456789\"\n").unwrap();
    let log = std::fs::File::create(dir.join("up.log")).unwrap();
    let child = Command::new(TALLY)
        .arg("--data-dir")
        .arg(data)
        .args(["--log-level", "trace", "up", "--addr", &addr.to_string(), "--config"])
        .arg(&config)
        .arg("--catalog")
        .arg(catalog)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let up = Up(child);
    let started = Instant::now();
    while !listening(addr) {
        assert!(started.elapsed() < Duration::from_secs(30), "tally up did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    up
}

#[test]
fn each_key_reads_only_its_scope_on_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let t0 = (now_ms() - 3 * HOUR) / HOUR * HOUR;
    let catalog = dir.path().join("ads.csv");
    let mut csv = String::from("ad_id,campaign_id,advertiser_id,valid_from\n");
    for (ad, campaign, advertiser) in ADS {
        csv += &format!("{ad},{campaign},{advertiser},0\n");
    }
    csv += &format!("mover,cm-b,adv-b,{}\n", t0 + MOVE_AFTER);
    std::fs::write(&catalog, csv).unwrap();
    let clicks = clicks(t0);
    let ndjson: String = clicks
        .iter()
        .map(|(ad, ts, id)| {
            format!(
                "{{\"ad_id\":\"{ad}\",\"timestamp\":{ts},\"user_id\":\"u{}\",\"request_id\":\"00000000-0000-0000-0000-{id:012x}\"}}\n",
                id % 50
            )
        })
        .collect();
    let input = dir.path().join("clicks.ndjson");
    std::fs::write(&input, ndjson).unwrap();
    tally(&data, &["log", "import", input.to_str().unwrap()]);

    let (_, operator) = add_key(&data, &["--operator", "--name", "ops"]);
    let (_, adv_a) = add_key(&data, &["--advertiser", "adv-a"]);
    let (b_id, adv_b) = add_key(&data, &["--advertiser", "adv-b"]);
    let (revoked_id, revoked) = add_key(&data, &["--advertiser", "adv-a"]);
    tally(&data, &["keys", "revoke", &revoked_id]);
    let (_, expired) = add_key(&data, &["--operator", "--expires", "1s"]);
    let expires = Instant::now() + Duration::from_millis(1_100);
    let mut wrong = operator.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });

    let addr = free_addr();
    let _up = start_up(dir.path(), &data, &catalog, addr);
    let expected = recount(&clicks);
    let from_to = format!("from={t0}&to={}", t0 + HOUR);

    // Wait for the operator to see every click.
    let started = Instant::now();
    loop {
        let (status, body) = get(local(), addr, &format!("/v1/advertisers/adv-a/clicks?window=1h&{from_to}"), Some(&operator));
        let (_, body_b) = get(local(), addr, &format!("/v1/advertisers/adv-b/clicks?window=1h&{from_to}"), Some(&operator));
        let seen: u64 = series(&body).iter().chain(series(&body_b).iter()).map(|(_, c)| c).sum();
        if status == 200 && seen == clicks.len() as u64 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the operator never saw all {} clicks: {body}", clicks.len());
        std::thread::sleep(Duration::from_millis(200));
    }

    std::thread::sleep(expires.saturating_duration_since(Instant::now()));
    let routes = [
        format!("/v1/ads/a-1/clicks?{from_to}"),
        format!("/v1/campaigns/ca/clicks?{from_to}"),
        format!("/v1/advertisers/adv-a/clicks?{from_to}"),
        format!("/v1/top?window=1h&at={t0}"),
        format!("/v1/late?{from_to}"),
        "/v1/stats".to_owned(),
    ];
    // No key, a wrong, revoked or expired key: 401 on every route, and the
    // reason never says whether the id exists.
    for (i, route) in routes.iter().enumerate() {
        // Each route's failures from an address of their own, within the
        // failure limit of one address.
        let source: IpAddr = format!("127.0.1.{}", i + 1).parse().unwrap();
        for (what, key, reason) in [
            ("no key", None, "missing"),
            ("wrong", Some(wrong.as_str()), "not a valid key"),
            ("made up", Some("tally_00000000_00"), "not a valid key"),
            ("revoked", Some(revoked.as_str()), "revoked"),
            ("expired", Some(expired.as_str()), "expired"),
        ] {
            let (status, body) = get(source, addr, route, key);
            assert_eq!(status, 401, "{what} on {route}: {body}");
            assert_eq!(body["field"], "Authorization");
            assert!(body["reason"].as_str().unwrap().contains(reason), "{what} on {route}: {body}");
        }
        let (status, _) = get(local(), addr, route, Some(&operator));
        assert_eq!(status, 200, "operator on {route}");
    }

    for (key, me, other) in [(&adv_a, "adv-a", "adv-b"), (&adv_b, "adv-b", "adv-a")] {
        // The other advertiser's ids answer 404, like ids that do not exist.
        let others: Vec<(&str, &str)> = ADS
            .iter()
            .filter(|(ad, _, adv)| *adv == other && *ad != "mover")
            .flat_map(|(ad, campaign, _)| [("ads", *ad), ("campaigns", *campaign)])
            .chain([("advertisers", other), ("ads", "no-such-ad"), ("campaigns", if me == "adv-a" { "cm-b" } else { "cm-a" })])
            .collect();
        for (kind, id) in others {
            let (status, body) = get(local(), addr, &format!("/v1/{kind}/{id}/clicks?{from_to}"), Some(key));
            assert_eq!(status, 404, "{me} asking for {kind}/{id}: {body}");
            assert_eq!(body["field"], "id");
        }
        let (status, _) = get(local(), addr, "/v1/stats", Some(key));
        assert_eq!(status, 403, "{me} on /v1/stats");

        // Its own ads: the 1m windows attributed to it, each with the
        // test's own count; none of the other's.
        for (ad, _, _) in ADS.iter().filter(|(ad, _, adv)| *adv == me || *ad == "mover") {
            let (status, body) = get(local(), addr, &format!("/v1/ads/{ad}/clicks?window=1m&{from_to}"), Some(key));
            assert_eq!(status, 200, "{me} on its ad {ad}: {body}");
            let mine: Vec<(u64, u64)> = expected
                .iter()
                .filter(|((a, start), _)| a == ad && owner(ad, *start, t0).1 == me)
                .map(|((_, start), n)| (*start, *n))
                .collect();
            assert!(!mine.is_empty());
            assert_eq!(series(&body), mine, "{me}'s 1m windows of {ad}");
        }
        // The mover's 1h row holds clicks of both: neither sees it.
        let (_, body) = get(local(), addr, &format!("/v1/ads/mover/clicks?window=1h&{from_to}"), Some(key));
        assert_eq!(series(&body), vec![], "{me} sees a 1h row holding the other's clicks");
        // Its advertiser total equals the test's count of its windows.
        let (_, body) = get(local(), addr, &format!("/v1/advertisers/{me}/clicks?window=1h&{from_to}"), Some(key));
        let total: u64 = expected.iter().filter(|((ad, start), _)| owner(ad, *start, t0).1 == me).map(|(_, n)| n).sum();
        assert_eq!(series(&body), vec![(t0, total)]);

        // Top of a 1m window on each side of the move: only its own ads
        // and campaigns, and its own total.
        for at in [t0 + 10 * MINUTE, t0 + 40 * MINUTE] {
            let (status, body) = get(local(), addr, &format!("/v1/top?window=1m&at={at}&k=50"), Some(key));
            assert_eq!(status, 200);
            let ads: BTreeSet<String> = body["ads"].as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap().to_owned()).collect();
            let own: BTreeSet<String> = ADS.iter().map(|(ad, _, _)| ad.to_string()).filter(|ad| owner(ad, at, t0).1 == me).collect();
            assert_eq!(ads, own, "{me}'s top at {at}");
            let campaigns: BTreeSet<String> =
                body["campaigns"].as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap().to_owned()).collect();
            let own_campaigns: BTreeSet<String> =
                ADS.iter().map(|(ad, _, _)| owner(ad, at, t0)).filter(|(_, adv)| *adv == me).map(|(c, _)| c.to_owned()).collect();
            assert_eq!(campaigns, own_campaigns, "{me}'s top campaigns at {at}");
            let total: u64 = expected.iter().filter(|((ad, start), _)| *start == at && owner(ad, at, t0).1 == me).map(|(_, n)| n).sum();
            assert_eq!(body["total_clicks"].as_u64(), Some(total));
        }
        // The late ledger holds only its own keys (and here none at all).
        let (status, body) = get(local(), addr, &format!("/v1/late?{from_to}"), Some(key));
        assert_eq!(status, 200);
        for entry in body["entries"].as_array().unwrap() {
            let ad = entry["key"].as_str().unwrap();
            assert!(entry["key_type"] != "ad" || owner(ad, entry["window_start"].as_u64().unwrap(), t0).1 == me, "{me}: {entry}");
        }
    }

    // A revocation reaches the running service within seconds.
    tally(&data, &["keys", "revoke", &b_id]);
    let started = Instant::now();
    while get(local(), addr, "/v1/top", Some(&adv_b)).0 != 401 {
        assert!(started.elapsed() < Duration::from_secs(5), "a revoked key still reads after 5 s");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Failed keys are limited per address: another address is not held up.
    let attacker: IpAddr = "127.0.0.9".parse().unwrap();
    let statuses: Vec<u16> = (0..30).map(|_| get(attacker, addr, "/v1/top", Some(&wrong)).0).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 20, "{statuses:?}");
    assert!(statuses[20..].iter().all(|s| *s == 429), "{statuses:?}");
    assert_eq!(get(attacker, addr, "/v1/top", Some(&operator)).0, 429, "a limited address is refused before its key is looked at");
    assert_eq!(get(local(), addr, "/v1/top", Some(&operator)).0, 200);

    // No key in clear anywhere under the data directory or in the log of
    // `tally up` (at trace), and no key digest in the log.
    drop(_up);
    let log = std::fs::read_to_string(dir.path().join("up.log")).unwrap();
    let keys_file = std::fs::read_to_string(data.join("keys.json")).unwrap();
    for key in [&operator, &adv_a, &adv_b, &revoked, &expired] {
        let secret = key.rsplit('_').next().unwrap();
        assert!(!log.contains(secret), "a key in the log");
        assert!(!grep_dir(&data, secret.as_bytes()), "a key in clear under the data directory");
    }
    for digest in keys_file.split('"').filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())) {
        assert!(!log.contains(digest), "a key digest in the log");
    }
    assert!(!log.contains("Bearer"), "a bearer header in the log");
}

/// Whether any file under `dir` contains `needle`.
fn grep_dir(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            return grep_dir(&path, needle);
        }
        std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
    })
}
