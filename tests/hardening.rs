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
#[path = "common/net.rs"]
mod net;
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
    close_seen(stream).is_some()
}

/// How the server's close of `stream` showed (end of stream, or the read's
/// error), if it did; `None` while it is open.
fn close_seen(stream: &TcpStream) -> Option<String> {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let seen = match { stream }.read(&mut byte) {
        Ok(0) => Some("end of stream".to_owned()),
        Ok(_) => None,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => None,
        Err(e) => Some(format!("read error: {e}")),
    };
    stream.set_nonblocking(false).unwrap();
    seen
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
    let cut = head.iter().enumerate().find_map(|(i, byte)| {
        let seen = match stream.write_all(&[*byte]) {
            Err(e) => Some(format!("write error: {e}")),
            Ok(()) => close_seen(&stream),
        };
        if let Some(how) = seen {
            return Some((started.elapsed(), format!("{how}, after {} byte(s)", i + 1)));
        }
        std::thread::sleep(Duration::from_secs(1));
        None
    });
    let (cut, how) = cut.expect("the slow head was never cut");
    eprintln!("a head sent a byte a second was cut after {cut:?} ({how})");
    assert!(cut >= Duration::from_millis(1_900) && cut <= Duration::from_secs(2) + SLACK, "cut after {cut:?} ({how})");
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
