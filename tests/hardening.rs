//! What a hostile or careless client cannot do to tally's HTTP listeners,
//! on the release binary over loopback: hold every connection from one
//! address, keep a connection with a head, a body or silence that never
//! ends, read the API through a foreign host name, or make tally print a
//! Redis password; and what tally leaves for others to read on disk.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

#[path = "common/child.rs"]
mod child;
#[path = "common/service.rs"]
mod service;

use service::start;

const TALLY: &str = env!("CARGO_BIN_EXE_tally");

/// The attacker's source address; probes come from 127.0.0.1.
const ATTACKER: &str = "127.0.0.7:0";
const ATTACKER_SOCKETS: usize = 1_100;
/// `max_connections_per_address` and `header_timeout` by default.
const PER_ADDRESS_CAP: usize = 64;
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const PROBES: usize = 30;
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Lateness allowed to a timeout on a machine shared with builds.
const SLACK: Duration = Duration::from_secs(3);

/// Writes `text` as the config file `dir/ingest.toml`; returns its path.
fn config(dir: &Path, text: &str) -> String {
    let path = dir.join("ingest.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Whether the server has closed `stream` (read: end of stream or reset),
/// without waiting.
fn closed_by_server(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let closed = match { stream }.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// Waits up to `limit` for the server to close `stream`; how long it took.
fn time_to_close(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return None,
            Err(_) => return Some(started.elapsed()),
        }
    }
}

/// The whole answer to `request` on a new connection that the server is
/// asked to close after it.
fn exchange(addr: SocketAddr, request: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.write_all(request.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

fn get(addr: SocketAddr, path: &str, host: &str) -> String {
    exchange(addr, &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")).unwrap()
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().find_map(|line| line.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
}

fn status(answer: &str) -> &str {
    answer.get(9..12).unwrap_or("")
}

/// 1,100 connections from one address that send nothing or half a request
/// line, held: the server keeps at most the per-address cap of them (the
/// rest are closed on accept), answers a probe from another address every
/// second throughout, and closes the ones it kept at the header timeout.
/// Before the cap, the first 1,024 took every permit and the probes waited
/// in the accept queue, unanswered.
#[test]
fn one_address_cannot_take_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (_ingest, addr) = start(&dir.path().join("data"), "ingest", &[], None);
    let source: SocketAddr = ATTACKER.parse().unwrap();
    let attack: Vec<TcpStream> = (0..ATTACKER_SOCKETS)
        .map(|i| {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            socket.bind(&source.into()).unwrap();
            socket.connect_timeout(&addr.into(), PROBE_TIMEOUT).unwrap();
            let mut stream = TcpStream::from(socket);
            if i % 2 == 1 {
                let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\n");
            }
            stream
        })
        .collect();
    let attack_started = Instant::now();

    let mut answered = 0;
    let mut held_early = None;
    for probe in 0..PROBES {
        let answer = exchange(addr, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        match answer {
            Ok(answer) if status(&answer) == "200" => answered += 1,
            other => panic!("probe {probe} at {:?} was not answered: {other:?}", attack_started.elapsed()),
        }
        if probe == 2 {
            let open = attack.iter().filter(|stream| !closed_by_server(stream)).count();
            assert!(attack_started.elapsed() < DEFAULT_HEADER_TIMEOUT, "counted before the header timeout");
            held_early = Some(open);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let held_early = held_early.unwrap();
    let held_late = attack.iter().filter(|stream| !closed_by_server(stream)).count();
    eprintln!(
        "{answered} of {PROBES} probes answered; of {ATTACKER_SOCKETS} attacker sockets the server held {held_early} early on and {held_late} after {:?}",
        attack_started.elapsed()
    );
    assert_eq!(answered, PROBES);
    assert!(held_early <= PER_ADDRESS_CAP, "one address holds {held_early} connections, above its cap of {PER_ADDRESS_CAP}");
    assert!(held_early > 0, "the server keeps connections up to the cap");
    assert_eq!(held_late, 0, "connections that never sent a whole head are closed at the header timeout");
}

/// A head sent a byte a second is cut at the header timeout (2 s here),
/// counted from the connect: without one, each byte would keep it alive.
#[test]
fn a_head_sent_a_byte_a_second_is_cut_by_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "header_timeout = \"2s\"\n");
    let (_ingest, addr) = start(&dir.path().join("data"), "ingest", &["--config", &config], None);
    let mut stream = TcpStream::connect(addr).unwrap();
    let started = Instant::now();
    let head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let cut = head.iter().find_map(|byte| {
        if stream.write_all(&[*byte]).is_err() || closed_by_server(&stream) {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_secs(1));
        None
    });
    let cut = cut.expect("the slow head was never cut");
    eprintln!("a head sent a byte a second was cut after {cut:?}");
    assert!(cut >= Duration::from_millis(1_900) && cut <= Duration::from_secs(2) + SLACK, "cut after {cut:?}");
}

/// A kept-alive connection that says nothing after its answer is closed at
/// the idle timeout (2 s here, below the 10 s header timeout): without one
/// it would stay open for as long as the client likes.
#[test]
fn a_quiet_kept_alive_connection_is_closed_at_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "idle_timeout = \"2s\"\n");
    let (_ingest, addr) = start(&dir.path().join("data"), "ingest", &["--config", &config], None);
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).unwrap();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert_eq!(status(&answer), "200", "{answer}");
    assert!(header(&answer, "connection").is_none_or(|v| !v.eq_ignore_ascii_case("close")), "kept alive: {answer}");
    let closed = time_to_close(&mut stream, DEFAULT_HEADER_TIMEOUT + SLACK).expect("an idle connection was never closed");
    eprintln!("an idle kept-alive connection was closed after {closed:?}");
    assert!(closed >= Duration::from_millis(1_900) && closed <= Duration::from_secs(2) + SLACK, "closed after {closed:?}");
}

/// A body that stops halfway is cut at the body timeout (2 s here): the
/// request is refused or the connection closed, and the part that came,
/// here a whole valid click short of its declared length, is not taken
/// for the body: nothing reaches the log.
#[test]
fn a_stalled_body_is_cut_by_the_body_timeout_and_nothing_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = config(dir.path(), "body_timeout = \"2s\"\n");
    let (ingest, addr) = start(&data, "ingest", &["--config", &config], None);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let click = format!(r#"{{"ad_id":"ad-1","timestamp":{now},"user_id":"u-1","request_id":"00000000-0000-0000-0000-000000000001"}}"#);
    let declared = click.len() + 100;
    let mut stream = TcpStream::connect(addr).unwrap();
    let head =
        format!("POST /v1/clicks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(click.as_bytes()).unwrap();
    let started = Instant::now();
    stream.set_read_timeout(Some(Duration::from_secs(2) + SLACK * 2)).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    eprintln!("a stalled body got {:?} after {took:?}", answer.lines().next());
    assert!(took <= Duration::from_secs(2) + SLACK, "no answer or close within the body timeout: {took:?}");
    assert!(answer.is_empty() || (status(&answer) == "400" && answer.contains("\"field\":\"body\"")), "{answer}");
    drop(ingest);
    let described = child::checked(Command::new(TALLY).arg("--data-dir").arg(&data).args(["log", "describe", "--json"])).stdout;
    let layout: serde_json::Value = serde_json::from_slice(&described).unwrap();
    let logged: u64 = layout["partitions"].as_array().unwrap().iter().map(|p| p["end_offset"].as_u64().unwrap()).sum();
    assert_eq!(logged, 0, "a cut body reached the log");
}

/// Every answer (a page, the API, health, a refusal) carries the security
/// headers, the dashboard its content security policy; a `Host` that is
/// not an IP literal, localhost or listed gets 421, so a page on a
/// rebinding domain cannot read the API.
#[test]
fn answers_carry_security_headers_and_foreign_hosts_are_misdirected() {
    let dir = tempfile::tempdir().unwrap();
    let (_up, addr) = start(&dir.path().join("data"), "up", &[], None);
    let port = addr.port();
    for path in ["/", "/v1/stats", "/healthz", "/nope"] {
        let answer = get(addr, path, &format!("localhost:{port}"));
        let expected = if path == "/nope" { "404" } else { "200" };
        assert_eq!(status(&answer), expected, "{path}: {answer}");
        assert_eq!(header(&answer, "x-content-type-options"), Some("nosniff"), "{path}");
        assert_eq!(header(&answer, "x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(header(&answer, "referrer-policy"), Some("no-referrer"), "{path}");
    }
    let page = get(addr, "/", &format!("127.0.0.1:{port}"));
    assert_eq!(status(&page), "200");
    let csp = header(&page, "content-security-policy").expect("the dashboard has a CSP");
    assert!(csp.starts_with("default-src 'self'; script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");

    let refused = get(addr, "/v1/stats", "evil.example");
    assert_eq!(status(&refused), "421", "{refused}");
    assert_eq!(header(&refused, "x-frame-options"), Some("DENY"));
    let body: serde_json::Value = serde_json::from_str(refused.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["field"], "Host");
    assert!(body["reason"].as_str().unwrap().contains("allowed_hosts"), "{body}");
    let http10 = exchange(addr, "GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(status(&http10), "200", "a request without Host is served: {http10}");
}

/// The data directory tally creates is its owner's only and so is the
/// salt; a TLS private key others may read is refused at start (exit 2)
/// with the key's path, its mode and the fix.
#[test]
fn the_data_dir_and_salt_are_private_and_a_readable_tls_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    drop(start(&data, "ingest", &[], None));
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("salt")), 0o600);

    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = config(dir.path(), "[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n");
    let out = child::finish(
        Command::new(TALLY)
            .arg("--data-dir")
            .arg(&data)
            .args(["ingest", "--no-auth", "--addr", "127.0.0.1:0", "--config", &config])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("tls.key {}: mode 0644", key.display())), "{stderr}");
    assert!(stderr.contains(&format!("chmod 600 {}", key.display())), "{stderr}");
}

/// The Redis URL's password appears nowhere in what `tally ingest` prints,
/// at start or when the pre-filter fails to reach Redis (nothing listens on
/// port 1; the pre-filter connects on first use and steps aside).
#[test]
fn the_redis_password_is_never_printed() {
    const PASSWORD: &str = "hunter2-not-for-logs";
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &format!("[redis]\nurl = \"redis://tally:{PASSWORD}@127.0.0.1:1/0\"\n"));
    let (ingest, addr) = start(&dir.path().join("data"), "ingest", &["--config", &config], Some(dir.path()));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let click = format!(r#"{{"ad_id":"ad-1","timestamp":{now},"user_id":"u-1","request_id":"00000000-0000-0000-0000-000000000002"}}"#);
    let post = format!(
        "POST /v1/clicks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{click}",
        click.len()
    );
    let answer = exchange(addr, &post).unwrap();
    assert_eq!(status(&answer), "202", "{answer}");
    drop(ingest);
    let printed =
        std::fs::read_to_string(dir.path().join("stdout")).unwrap() + &std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert!(printed.contains("redis://***@127.0.0.1:1/0"), "the summary names the pre-filter: {printed}");
    assert!(!printed.contains(PASSWORD), "{printed}");
}

/// `/v1/late` and `/v1/top` on a store holding a window of a million held
/// late clicks and a window of 200,000 ads: the work of one call is
/// bounded by what it answers, not by what the store holds. Work is
/// counted by a store wrapper (records of the ledger handed out, windows
/// read), never timed; what the pages hold is checked against the
/// ledger and rows the test itself committed.
mod expensive_reads {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use serde_json::Value;
    use tally::event::{EventTime, KeyType};
    use tally::ingest::client::HttpClient;
    use tally::query::{router, QueryState, ServedStore};
    use tally::row::{LateEntry, Row, Status};
    use tally::store::read::RowIter;
    use tally::store::{
        EmbeddedStore, EpochCommit, EpochStore, LatePosition, LateRecord, Recovered, RowFilter, StoreError, StoreReader, StoreSnapshot,
        StoredRow, Visit, WindowKey,
    };
    use tally::telemetry::Telemetry;

    const MINUTE: u64 = 60_000;
    const HELD: u128 = 1_000_000;
    const ADS: usize = 200_000;
    /// The most request ids and ledger records one page may take (README).
    const PAGE_IDS: usize = 10_000;
    const PAGE_RECORDS: u64 = 50_000;

    #[derive(Default)]
    struct Work {
        late_records: AtomicU64,
        windows_read: AtomicU64,
    }

    /// The embedded store's reader, counting the work done through it.
    struct Counted {
        store: Arc<dyn StoreReader>,
        work: Arc<Work>,
    }

    struct CountedSnapshot {
        inner: Box<dyn StoreSnapshot>,
        work: Arc<Work>,
    }

    impl StoreReader for Counted {
        fn snapshot(&self) -> Result<Box<dyn StoreSnapshot>, StoreError> {
            Ok(Box::new(CountedSnapshot { inner: self.store.snapshot()?, work: Arc::clone(&self.work) }))
        }
    }

    impl StoreSnapshot for CountedSnapshot {
        fn rows(&self, filter: &RowFilter) -> Result<Vec<Row>, StoreError> {
            self.inner.rows(filter)
        }
        fn window_rows(&self, key_type: KeyType, granularity_ms: u64, window_start: EventTime) -> Result<Vec<Row>, StoreError> {
            self.work.windows_read.fetch_add(1, Ordering::SeqCst);
            self.inner.window_rows(key_type, granularity_ms, window_start)
        }
        fn latest_window(&self, key_type: KeyType, granularity_ms: u64, at_most: EventTime) -> Result<Option<EventTime>, StoreError> {
            self.inner.latest_window(key_type, granularity_ms, at_most)
        }
        fn committed_epoch(&self) -> Result<Option<u64>, StoreError> {
            self.inner.committed_epoch()
        }
        fn iter_rows(&self) -> Result<RowIter<'_>, StoreError> {
            self.inner.iter_rows()
        }
        fn row_history(&self, window: &WindowKey) -> Result<Vec<Row>, StoreError> {
            self.inner.row_history(window)
        }
        fn late_records(
            &self,
            from: EventTime,
            to: EventTime,
            after: Option<&LatePosition>,
            visit: &mut dyn FnMut(LateRecord) -> Visit,
        ) -> Result<(), StoreError> {
            self.inner.late_records(from, to, after, &mut |record| {
                self.work.late_records.fetch_add(1, Ordering::SeqCst);
                visit(record)
            })
        }
        fn settled_row(&self, window: &WindowKey) -> Result<Option<(Row, Vec<u8>)>, StoreError> {
            self.inner.settled_row(window)
        }
        fn state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.state(key)
        }
        fn last_committed(&self) -> Result<Option<Recovered>, StoreError> {
            self.inner.last_committed()
        }
        fn newest_generation(&self) -> Result<Option<u64>, StoreError> {
            self.inner.newest_generation()
        }
    }

    fn ad_row(i: usize) -> StoredRow {
        let row = Row {
            key_type: KeyType::Ad,
            key: format!("ad-{i:06}").into(),
            granularity_ms: MINUTE,
            window_start: 5 * MINUTE,
            // A spread of counts with ties, so the ranking's order by key matters.
            clicks: (i as u64 * 7_919) % 1_000,
            distinct_users: 1,
            status: Status::Partial,
            version: 0,
        };
        StoredRow { row, sketch: Vec::new() }
    }

    /// The query API over a store of the ledger and rows above, in this
    /// process; its address and the work counters.
    fn serve(dir: &std::path::Path) -> (std::net::SocketAddr, Arc<Work>) {
        let mut store = EmbeddedStore::open(dir).unwrap();
        let held = LateEntry {
            key_type: KeyType::Ad,
            key: "ad-hot".into(),
            window_start: MINUTE,
            batch: 10 * MINUTE,
            held: true,
            request_ids: (1..=HELD).collect(),
        };
        let small = LateEntry { key: "ad-cold".into(), window_start: 2 * MINUTE, held: false, request_ids: vec![7, 9], ..held.clone() };
        let rows: Vec<StoredRow> = (0..ADS).map(ad_row).collect();
        store.commit(EpochCommit { epoch: 6 * MINUTE, rows, late: vec![held, small], ..EpochCommit::default() }).unwrap();
        let work = Arc::new(Work::default());
        let reader = Counted { store: Arc::new(store.reader()), work: Arc::clone(&work) };
        let state = Arc::new(QueryState::new(ServedStore::fixed(Arc::new(reader)), Arc::new(Telemetry::new()), || 7 * MINUTE));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async move {
                listener.set_nonblocking(true).unwrap();
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, router(state)).await.unwrap();
            });
            drop(store);
        });
        (addr, work)
    }

    fn get(http: &mut HttpClient, path: &str) -> (Value, usize) {
        let reply = http.get(path).unwrap();
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        (reply.json(), reply.body.len())
    }

    #[test]
    fn a_page_of_the_ledger_and_a_ranking_cost_what_they_answer_not_what_the_store_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, work) = serve(dir.path());
        let mut http = HttpClient::new(addr, None);
        let range = format!("from=0&to={}", 3 * MINUTE);

        // limit=1 over a million held clicks: one page of at most PAGE_IDS
        // request ids, reading about as many records.
        let (page, bytes) = get(&mut http, &format!("/v1/late?{range}&limit=1"));
        let listed = page["entries"][0]["request_ids"].as_array().unwrap().len();
        let read = work.late_records.swap(0, Ordering::SeqCst);
        assert!(listed == PAGE_IDS && page["next"].is_string(), "{listed} ids listed");
        assert!(read <= PAGE_IDS as u64 + 1, "one page of {PAGE_IDS} ids read {read} ledger records");
        assert!(bytes < 50 * PAGE_IDS, "a page of {bytes} bytes");

        // Every page, each from the previous cursor: the million ids once
        // each, in order, and the small entry after them; no page read more
        // than its bound.
        let (mut ids, mut after, mut pages, mut cold) = (Vec::new(), String::new(), 0, Vec::new());
        loop {
            let (page, _) = get(&mut http, &format!("/v1/late?{range}&limit=1000{after}"));
            let read = work.late_records.swap(0, Ordering::SeqCst);
            assert!(read <= PAGE_RECORDS + 1, "a page read {read} ledger records");
            pages += 1;
            for entry in page["entries"].as_array().unwrap() {
                let listed = entry["request_ids"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().replace('-', ""));
                let listed = listed.map(|hex| u128::from_str_radix(&hex, 16).unwrap());
                match entry["key"].as_str().unwrap() {
                    "ad-hot" => ids.extend(listed),
                    _ => cold.extend(listed),
                }
            }
            match page["next"].as_str() {
                Some(next) => after = format!("&after={next}"),
                None => break,
            }
        }
        assert!(ids.iter().copied().eq(1..=HELD), "{} ids paged, the first {:?}", ids.len(), &ids[..3.min(ids.len())]);
        assert_eq!(cold, [7, 9]);
        // Pages of PAGE_IDS held ids each, then one of the small entry.
        assert_eq!(pages, HELD as usize / PAGE_IDS + 1);

        // /v1/top polled 20 times over one epoch: the window of 200,000 ads
        // (and its campaigns) is read once, and the top 10 is the test's own
        // ranking of the rows it committed.
        let mut expected: Vec<(u64, String)> = (0..ADS).map(ad_row).map(|r| (r.row.clicks, r.row.key.to_string())).collect();
        expected.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let total: u64 = expected.iter().map(|(clicks, _)| clicks).sum();
        for _ in 0..20 {
            let (top, _) = get(&mut http, "/v1/top?window=1m&k=10");
            let ranked: Vec<(u64, String)> = top["ads"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| (a["clicks"].as_u64().unwrap(), a["key"].as_str().unwrap().to_owned()))
                .collect();
            assert_eq!(ranked, expected[..10].to_vec());
            assert_eq!(top["total_clicks"].as_u64(), Some(total));
            assert_eq!(top["window_start"].as_u64(), Some(5 * MINUTE));
        }
        assert_eq!(work.windows_read.load(Ordering::SeqCst), 2, "ads and campaigns of the window, read once for 20 calls");
    }
}
