//! The HTTP ingest API over real sockets: every status code with the request
//! that causes it and the reason it gives, what reaches the log (checked by
//! reading the log back, not by the server's counters), TLS, and the Redis
//! pre-filter against a real `redis-server`.
//!
//! The server runs in-process on the real embedded log, wrapped in a
//! [`Switch`] that can make appends fail or slow, which is how a log that
//! cannot accept is produced.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tally::event::salt::{user_key, UserSalt};
use tally::event::Click;
use tally::ingest::auth::{Secret, Verifier};
use tally::ingest::client::{HttpClient, Reply, Signer, Stream};
use tally::ingest::config::{Auth, IngestConfig, RedisConfig, TlsFiles};
use tally::ingest::limit::Rate;
use tally::ingest::server::{ClickLog, Ingest, NDJSON, OPENAPI_JSON};
use tally::ingest::service::Service;
use tally::log::Log;

const JSON: &str = "application/json";
const SALT: UserSalt = UserSalt::from_bytes(*b"ingest-test-salt");
const SECRET: &str = "a-secret-of-the-web-client";

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The real log behind a switch that can make appends fail or wait.
struct Switch {
    log: Arc<Log>,
    fail: AtomicBool,
    delay_ms: AtomicU64,
}

impl ClickLog for Switch {
    fn append_durable(&self, clicks: &[Click]) -> Result<Vec<(u32, u64)>, String> {
        std::thread::sleep(Duration::from_millis(self.delay_ms.load(Ordering::SeqCst)));
        if self.fail.load(Ordering::SeqCst) {
            return Err("no space left on device (test switch)".to_owned());
        }
        self.log.append_durable(clicks)
    }
}

/// A running server on a fresh log.
struct Server {
    _dir: tempfile::TempDir,
    addr: SocketAddr,
    switch: Arc<Switch>,
    ingest: Arc<Ingest>,
    runtime: Option<tokio::runtime::Runtime>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    fn start(config: IngestConfig) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(&dir.path().join("log"), 4, Default::default()).unwrap());
        let switch = Arc::new(Switch { log, fail: AtomicBool::new(false), delay_ms: AtomicU64::new(0) });
        let config = IngestConfig { addr: "127.0.0.1:0".parse().unwrap(), ..config };
        let service = Service::bind(&config, Arc::clone(&switch) as Arc<dyn ClickLog>, SALT).unwrap();
        let addr = service.local_addr();
        let ingest = Arc::clone(&service.ingest);
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // What `tally ingest` serves.
        let health = tally::ingest::server::health_router(Arc::clone(&ingest));
        runtime.spawn(service.serve(health, OPENAPI_JSON.to_owned(), async move {
            let _ = stopped.await;
        }));
        Server { _dir: dir, addr, switch, ingest, runtime: Some(runtime), stop: Some(stop) }
    }

    fn client(&self, signed: bool) -> HttpClient {
        let signer = signed.then(|| Signer { client_id: "web".to_owned(), secret: Secret::new(SECRET) });
        HttpClient::new(self.addr, signer)
    }

    /// Every click in the log, read back from the log itself.
    fn logged(&self) -> Vec<Click> {
        let log = &self.switch.log;
        let mut all = Vec::new();
        for (p, &end) in log.end_offsets().iter().enumerate() {
            let mut reader = log.reader(p as u32, 0).unwrap();
            while (reader.offset()) < end {
                reader.read(&mut all, 10_000).unwrap();
            }
        }
        all
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// Signatures on for client "web", small limits so they are easy to hit.
fn signed_config() -> IngestConfig {
    let mut config = IngestConfig::defaults();
    config.auth = Auth::Signed(Verifier::new(HashMap::from([("web".to_owned(), Secret::new(SECRET))]), 300_000));
    config.client_rates.insert("web".to_owned(), config.default_rate);
    config.max_body_bytes = 64 * 1024;
    config.limits.max_batch_clicks = 100;
    config
}

fn open_config() -> IngestConfig {
    IngestConfig { auth: Auth::Off, ..signed_config() }
}

fn uuid(n: u64) -> String {
    format!("00000000-0000-0000-0000-{n:012x}")
}

fn click_json(ad: &str, ts: u64, user: &str, n: u64) -> String {
    format!(r#"{{"ad_id":"{ad}","timestamp":{ts},"user_id":"{user}","request_id":"{}"}}"#, uuid(n))
}

fn array(clicks: &[String]) -> String {
    format!("[{}]", clicks.join(","))
}

/// Asserts the status and the error's field, and that the reason contains `reason`.
fn refused(reply: &Reply, status: u16, field: &str, reason: &str) {
    let body = reply.json();
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(body["field"], field, "{}", reply.text());
    let text = body["reason"].as_str().unwrap_or_default();
    assert!(text.contains(reason), "reason {text:?} lacks {reason:?}");
}

#[test]
fn acknowledged_clicks_are_in_the_log_with_hashed_users() {
    let server = Server::start(signed_config());
    let mut client = server.client(true);
    let now = now_ms();
    let single = client.post("/v1/clicks", JSON, click_json("ad-1", now, "alice", 1).as_bytes()).unwrap();
    assert_eq!((single.status, single.json()["accepted"].as_u64()), (202, Some(1)), "{}", single.text());
    let batch = array(&[click_json("ad-2", now, "bob", 2), click_json("ad-2", now - 1, "carol", 3)]);
    assert_eq!(client.post("/v1/clicks/batch", "application/json; charset=utf-8", batch.as_bytes()).unwrap().status, 202);
    let ndjson = format!("{}\n{}\n", click_json("ad-3", now, "dave", 4), click_json("ad-3", now, "erin", 5));
    let reply = client.post("/v1/clicks/batch", NDJSON, ndjson.as_bytes()).unwrap();
    assert_eq!(reply.json()["accepted"], 2, "{}", reply.text());

    let mut logged = server.logged();
    logged.sort_by_key(|c| c.request_id);
    let expected: Vec<(u128, &str, u64)> = [("ad-1", "alice"), ("ad-2", "bob"), ("ad-2", "carol"), ("ad-3", "dave"), ("ad-3", "erin")]
        .iter()
        .enumerate()
        .map(|(i, (ad, user))| (i as u128 + 1, *ad, user_key(&SALT, user)))
        .collect();
    let got: Vec<(u128, &str, u64)> = logged.iter().map(|c| (c.request_id, c.ad.as_str(), c.user)).collect();
    assert_eq!(got, expected);
}

#[test]
fn a_partly_invalid_batch_writes_only_its_valid_clicks() {
    let server = Server::start(signed_config());
    let mut client = server.client(true);
    let now = now_ms();
    let batch = array(&[
        click_json("ad-1", now, "u", 1),
        click_json("bad ad", now, "u", 2),
        click_json("ad-1", now - 8 * 86_400_000, "u", 3),
        r#"{"ad_id":"ad-1","timestamp":1,"user_id":"u"}"#.to_owned(),
        click_json("ad-1", now, "u", 5).replace(&uuid(5), "not-a-uuid"),
        click_json("ad-1", now, &"u".repeat(129), 6),
        click_json("ad-9", now, "u", 7),
    ]);
    let reply = client.post("/v1/clicks/batch", JSON, batch.as_bytes()).unwrap();
    assert_eq!(reply.status, 202, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["accepted"], 2);
    let rejected: Vec<(u64, &str)> =
        body["rejected"].as_array().unwrap().iter().map(|r| (r["index"].as_u64().unwrap(), r["field"].as_str().unwrap())).collect();
    assert_eq!(rejected, vec![(1, "ad_id"), (2, "timestamp"), (3, "request_id"), (4, "request_id"), (5, "user_id")]);
    let reasons: Vec<&str> = body["rejected"].as_array().unwrap().iter().map(|r| r["reason"].as_str().unwrap()).collect();
    assert!(reasons[1].contains("more than 7d before the server's clock"), "{reasons:?}");
    assert_eq!(reasons[2], "missing");
    assert!(reasons[3].contains("not a UUID") && reasons[4].contains("too long: 129 bytes"), "{reasons:?}");
    let mut ids: Vec<u128> = server.logged().iter().map(|c| c.request_id).collect();
    ids.sort();
    assert_eq!(ids, vec![1, 7]);
}

#[test]
fn bad_requests_get_400_with_the_field_and_nothing_is_written() {
    let server = Server::start(signed_config());
    let mut client = server.client(true);
    let now = now_ms();
    let broken = format!("[{},\n {{\"ad_id\": ]", click_json("ad-1", now, "u", 1));
    let reply = client.post("/v1/clicks/batch", JSON, broken.as_bytes()).unwrap();
    refused(&reply, 400, "body", "invalid JSON");
    assert_eq!(reply.json()["position"]["line"], 2);
    refused(&client.post("/v1/clicks/batch", JSON, b"{}").unwrap(), 400, "body", "expected a JSON array");
    refused(&client.post("/v1/clicks/batch", JSON, b"[]").unwrap(), 400, "body", "holds no click");
    let none_valid = array(&[click_json("", now, "u", 1), click_json("ad-1", now + 600_000, "u", 2)]);
    let reply = client.post("/v1/clicks/batch", JSON, none_valid.as_bytes()).unwrap();
    refused(&reply, 400, "body", "no valid click in the batch (2 rejected)");
    assert_eq!(reply.json()["rejected"][1]["field"], "timestamp");
    let single = click_json("ad-1", now, "u", 1).replace("\"user_id\":\"u\"", "\"user_id\":7");
    refused(&client.post("/v1/clicks", JSON, single.as_bytes()).unwrap(), 400, "user_id", "expected a string, got an integer");
    refused(&client.post("/v1/clicks", JSON, b"{\"ad_id\":\"a\",\"colour\":1}").unwrap(), 400, "colour", "unknown field");
    assert_eq!(server.logged(), vec![]);
}

#[test]
fn wrong_content_types_get_415() {
    let server = Server::start(signed_config());
    let mut client = server.client(true);
    let body = click_json("ad-1", now_ms(), "u", 1);
    refused(&client.post("/v1/clicks", "text/plain", body.as_bytes()).unwrap(), 415, "Content-Type", "expected application/json");
    refused(&client.post("/v1/clicks", NDJSON, body.as_bytes()).unwrap(), 415, "Content-Type", "\"application/x-ndjson\" is not accepted");
    let request = format!("POST /v1/clicks/batch HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    refused(&client.raw(request.as_bytes()).unwrap(), 415, "Content-Type", "missing");
    assert_eq!(server.logged(), vec![]);
}

#[test]
fn bodies_and_batches_over_the_limits_get_413() {
    let server = Server::start(signed_config());
    let mut client = server.client(true);
    let now = now_ms();
    let big = vec![b' '; 64 * 1024 + 1];
    refused(&client.post("/v1/clicks/batch", JSON, &big).unwrap(), 413, "body", "max_body_bytes is 65536");
    let many: Vec<String> = (0..101).map(|i| click_json("ad-1", now, "u", i)).collect();
    refused(&client.post("/v1/clicks/batch", JSON, array(&many).as_bytes()).unwrap(), 413, "body", "more than 100 clicks");
    refused(&client.post("/v1/clicks/batch", NDJSON, many.join("\n").as_bytes()).unwrap(), 413, "body", "max_batch_clicks is 100");
    // A chunked body without a length is cut off at the limit too.
    let chunk = "x".repeat(40 * 1024);
    let request = format!("POST /v1/clicks/batch HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n", chunk.len(), chunk.len());
    let mut raw = server.client(false);
    refused(&raw.raw(request.as_bytes()).unwrap(), 413, "body", "more bytes");
    assert_eq!(server.logged(), vec![]);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A POST with `Content-Encoding: encoding`, signed as `web` over the bytes
/// as sent when `signed`.
fn post_encoded(server: &Server, encoding: &str, body: &[u8], signed: bool) -> Reply {
    let mut head = format!(
        "POST /v1/clicks/batch HTTP/1.1\r\nHost: localhost\r\nContent-Type: {NDJSON}\r\nContent-Encoding: {encoding}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if signed {
        let ts = now_ms().to_string();
        let signature = tally::ingest::auth::sign(&Secret::new(SECRET), &ts, body);
        head.push_str(&format!("X-Tally-Client: web\r\nX-Tally-Timestamp: {ts}\r\nX-Tally-Signature: {signature}\r\n"));
    }
    let request = [format!("{head}\r\n").into_bytes(), body.to_vec()].concat();
    server.client(false).raw(&request).unwrap()
}

#[test]
fn gzip_bodies_are_decoded_and_signed_as_sent() {
    let server = Server::start(signed_config());
    let now = now_ms();
    let ndjson = format!("{}\n{}\n", click_json("ad-1", now, "alice", 1), click_json("ad-2", now, "bob", 2));
    let compressed = gzip(ndjson.as_bytes());
    let reply = post_encoded(&server, "gzip", &compressed, true);
    assert_eq!((reply.status, reply.json()["accepted"].as_u64()), (202, Some(2)), "{}", reply.text());
    // A signature over the decompressed bytes is not the one of the body sent.
    let ts = now_ms().to_string();
    let over_plain = tally::ingest::auth::sign(&Secret::new(SECRET), &ts, ndjson.as_bytes());
    let head = format!(
        "POST /v1/clicks/batch HTTP/1.1\r\nHost: localhost\r\nContent-Type: {NDJSON}\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\nX-Tally-Client: web\r\nX-Tally-Timestamp: {ts}\r\nX-Tally-Signature: {over_plain}\r\n\r\n",
        compressed.len()
    );
    let reply = server.client(false).raw(&[head.into_bytes(), compressed].concat()).unwrap();
    refused(&reply, 401, "x-tally-signature", "");
    let mut ids: Vec<u128> = server.logged().iter().map(|c| c.request_id).collect();
    ids.sort();
    assert_eq!(ids, vec![1, 2]);
}

#[test]
fn a_gzip_bomb_gets_413_and_other_encodings_415_and_nothing_is_written() {
    let server = Server::start(open_config());
    let now = now_ms();
    // 64 KiB is the limit: a valid click padded to 1 MiB once decompressed.
    let padded = format!("{}{}\n", click_json("ad-1", now, "u", 1), " ".repeat(1 << 20));
    let bomb = gzip(padded.as_bytes());
    assert!(bomb.len() < 64 * 1024, "{} bytes on the wire", bomb.len());
    refused(&post_encoded(&server, "gzip", &bomb, false), 413, "body", "once decompressed; max_body_bytes is 65536");
    refused(&post_encoded(&server, "gzip", b"not gzip", false), 400, "body", "not valid gzip");
    let plain = click_json("ad-1", now, "u", 2);
    for encoding in ["br", "deflate", "compress", "gzip, br"] {
        refused(&post_encoded(&server, encoding, plain.as_bytes(), false), 415, "Content-Encoding", "is not supported");
    }
    assert_eq!(server.logged(), vec![]);
    assert_eq!(post_encoded(&server, "identity", plain.as_bytes(), false).status, 202);
}

#[test]
fn missing_or_wrong_signatures_get_401_naming_the_header() {
    let server = Server::start(signed_config());
    let now = now_ms();
    let body = click_json("ad-1", now, "u", 1);
    refused(&server.client(false).post("/v1/clicks", JSON, body.as_bytes()).unwrap(), 401, "x-tally-client", "missing");
    let stranger = Signer { client_id: "mallory".to_owned(), secret: Secret::new(SECRET) };
    let mut client = HttpClient::new(server.addr, Some(stranger));
    refused(&client.post("/v1/clicks", JSON, body.as_bytes()).unwrap(), 401, "x-tally-client", "unknown client");
    let wrong_key = Signer { client_id: "web".to_owned(), secret: Secret::new("not-the-secret-of-web") };
    let mut client = HttpClient::new(server.addr, Some(wrong_key));
    refused(&client.post("/v1/clicks", JSON, body.as_bytes()).unwrap(), 401, "x-tally-signature", "does not match");
    // A signature of another body (a tampered request) and a stale timestamp.
    let stale = (now - 301_000).to_string();
    let signature = tally::ingest::auth::sign(&Secret::new(SECRET), &stale, body.as_bytes());
    let request = |ts: &str, sig: &str, body: &str| {
        format!(
            "POST /v1/clicks HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Tally-Client: web\r\nX-Tally-Timestamp: {ts}\r\nX-Tally-Signature: {sig}\r\n\r\n{body}",
            body.len()
        )
    };
    let mut raw = server.client(false);
    refused(
        &raw.raw(request(&stale, &signature, &body).as_bytes()).unwrap(),
        401,
        "x-tally-timestamp",
        "more than 5m from the server's clock",
    );
    let fresh = now_ms().to_string();
    let signature = tally::ingest::auth::sign(&Secret::new(SECRET), &fresh, body.as_bytes());
    let tampered = body.replace("ad-1", "ad-2");
    refused(&raw.raw(request(&fresh, &signature, &tampered).as_bytes()).unwrap(), 401, "x-tally-signature", "does not match");
    assert_eq!(raw.raw(request(&fresh, &signature, &body).as_bytes()).unwrap().status, 202);
    assert_eq!(server.logged().len(), 1);
}

#[test]
fn a_client_over_its_rate_gets_429_with_retry_after() {
    let mut config = signed_config();
    config.client_rates.insert("web".to_owned(), Rate { clicks_per_s: 10.0, burst_clicks: 100.0 });
    let server = Server::start(config);
    let mut client = server.client(true);
    let now = now_ms();
    let batch = |from: u64| array(&(from..from + 60).map(|i| click_json("ad-1", now, "u", i)).collect::<Vec<_>>());
    assert_eq!(client.post("/v1/clicks/batch", JSON, batch(0).as_bytes()).unwrap().status, 202);
    let reply = client.post("/v1/clicks/batch", JSON, batch(100).as_bytes()).unwrap();
    refused(&reply, 429, "x-tally-client", "over its rate limit of 10 clicks/s");
    assert!(reply.retry_after.is_some_and(|s| (1..=3).contains(&s)), "{:?}", reply.retry_after);
    assert_eq!(server.logged().len(), 60);
}

#[test]
fn a_log_that_cannot_accept_gets_503_and_never_a_202() {
    let server = Server::start(signed_config());
    let mut client = server.client(true);
    let body = array(&[click_json("ad-1", now_ms(), "u", 1), click_json("ad-1", now_ms(), "v", 2)]);
    server.switch.fail.store(true, Ordering::SeqCst);
    let reply = client.post("/v1/clicks/batch", JSON, body.as_bytes()).unwrap();
    refused(&reply, 503, "log", "no space left on device");
    assert_eq!(reply.retry_after, Some(1));
    assert_eq!(server.logged(), vec![]);
    // The same request (same ids) goes through once the log is back.
    server.switch.fail.store(false, Ordering::SeqCst);
    assert_eq!(client.post("/v1/clicks/batch", JSON, body.as_bytes()).unwrap().status, 202);
    assert_eq!(server.logged().len(), 2);
}

#[test]
fn requests_beyond_max_inflight_get_503() {
    let mut config = signed_config();
    config.max_inflight_requests = 1;
    let server = Server::start(config);
    server.switch.delay_ms.store(1_000, Ordering::SeqCst);
    let addr = server.addr;
    let slow = std::thread::spawn(move || {
        let mut client = HttpClient::new(addr, Some(Signer { client_id: "web".to_owned(), secret: Secret::new(SECRET) }));
        client.post("/v1/clicks", JSON, click_json("ad-1", now_ms(), "u", 1).as_bytes()).unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));
    let reply = server.client(true).post("/v1/clicks", JSON, click_json("ad-1", now_ms(), "u", 2).as_bytes()).unwrap();
    refused(&reply, 503, "log", "1 requests are already waiting for the log");
    assert_eq!(slow.join().unwrap().status, 202);
    assert_eq!(server.logged().iter().map(|c| c.request_id).collect::<Vec<_>>(), vec![1]);
}

#[test]
fn unsigned_requests_are_accepted_only_when_signatures_are_off() {
    let server = Server::start(open_config());
    let reply = server.client(false).post("/v1/clicks", JSON, click_json("ad-1", now_ms(), "u", 1).as_bytes()).unwrap();
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert!(IngestConfig::defaults().check_startable().is_err());
}

/// The API document: served as committed, listing exactly the routes that
/// answer, with the limits the decoder enforces, and an example that the
/// decoder accepts.
#[test]
fn openapi_document_matches_the_api() {
    let server = Server::start(signed_config());
    let mut client = server.client(false);
    let served = client.get("/openapi.json").unwrap();
    assert_eq!(served.status, 200);
    assert_eq!(served.text(), OPENAPI_JSON);
    let doc: Value = serde_json::from_str(OPENAPI_JSON).unwrap();
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    let mut routes: Vec<(String, String)> = tally::ingest::server::ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    routes.sort();
    assert_eq!(documented, routes);
    for (method, path) in &routes {
        let reply = client.raw(format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n").as_bytes()).unwrap();
        assert!(![404, 405].contains(&reply.status), "{method} {path}: {}", reply.status);
    }
    assert_eq!(client.get("/v1/undocumented").unwrap().status, 404);
    // Every status the POST endpoints answer with (see the tests above) is documented.
    for path in ["/v1/clicks", "/v1/clicks/batch"] {
        let mut codes: Vec<&str> = doc["paths"][path]["post"]["responses"].as_object().unwrap().keys().map(String::as_str).collect();
        codes.sort();
        assert_eq!(codes, ["202", "400", "401", "413", "415", "429", "503"], "{path}");
    }
    let click = &doc["components"]["schemas"]["Click"];
    assert_eq!(click["properties"]["ad_id"]["maxLength"], tally::event::validate::MAX_KEY_BYTES);
    assert_eq!(click["properties"]["user_id"]["maxLength"], tally::event::validate::MAX_USER_ID_BYTES);
    assert_eq!(click["properties"]["timestamp"]["maximum"], tally::event::MAX_EVENT_TIME_MS);
    let mut required: Vec<&str> = click["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    required.sort();
    assert_eq!(required, ["ad_id", "request_id", "timestamp", "user_id"]);
    let example = &doc["paths"]["/v1/clicks"]["post"]["requestBody"]["content"][JSON]["example"];
    let example_ts = example["timestamp"].as_u64().unwrap();
    let limits = tally::ingest::decode::DecodeLimits { max_batch_clicks: 1, past_ms: 0, future_ms: 0 };
    let decoded = tally::ingest::decode::decode_body(
        tally::ingest::decode::BodyKind::Single,
        example.to_string().as_bytes(),
        &limits,
        example_ts,
        &SALT,
    );
    assert_eq!(decoded.unwrap().rejected, vec![]);
}

// ---------------------------------------------------------------- TLS

#[test]
fn tls_serves_the_api_when_a_certificate_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    // A private key others may read is refused.
    std::fs::set_permissions(&key_path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut config = signed_config();
    config.tls = Some(TlsFiles { cert: cert_path, key: key_path });
    let server = Server::start(config);

    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let tls = Arc::new(tokio_rustls::rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth());
    let addr = server.addr;
    let connector: tally::ingest::client::Connector = Box::new(move || {
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = tokio_rustls::rustls::ClientConnection::new(Arc::clone(&tls), name).map_err(io::Error::other)?;
        let tcp = std::net::TcpStream::connect(addr)?;
        Ok(Box::new(tokio_rustls::rustls::StreamOwned::new(conn, tcp)) as Box<dyn Stream>)
    });
    let signer = Signer { client_id: "web".to_owned(), secret: Secret::new(SECRET) };
    let mut client = HttpClient::with_connector(connector, "localhost".to_owned(), Some(signer));
    let reply = client.post("/v1/clicks", JSON, click_json("ad-1", now_ms(), "u", 1).as_bytes()).unwrap();
    assert_eq!(reply.status, 202, "{}", reply.text());
    // Plain HTTP to the TLS port gets no HTTP answer.
    assert!(server.client(true).post("/v1/clicks", JSON, b"{}").is_err());
    assert_eq!(server.logged().len(), 1);
}

// ---------------------------------------------------------------- Redis

/// A `redis-server` on a free loopback port, killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server not found: scripts/test.sh installs it (apt-get install redis-server)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Asks Redis directly (RESP over a socket) whether `key` exists.
    fn exists(&self, key: &str) -> bool {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(stream, "*2\r\n$6\r\nEXISTS\r\n${}\r\n{key}\r\n", key.len()).unwrap();
        let mut reply = [0u8; 4];
        let n = stream.read(&mut reply).unwrap();
        &reply[..n] == b":1\r\n"
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_config(redis: &Redis) -> IngestConfig {
    IngestConfig { redis: Some(RedisConfig { url: redis.url(), horizon_ms: Some(3_600_000), timeout_ms: 200 }), ..signed_config() }
}

fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn redis_answers_a_retry_without_writing_it_again() {
    let redis = Redis::start();
    let server = Server::start(redis_config(&redis));
    let mut client = server.client(true);
    let now = now_ms();
    let batch = array(&(1..=5).map(|i| click_json("ad-1", now, "u", i)).collect::<Vec<_>>());
    assert_eq!(client.post("/v1/clicks/batch", JSON, batch.as_bytes()).unwrap().status, 202);
    wait_until("the ids to reach redis", || (1..=5).all(|i| redis.exists(&tally::ingest::prefilter::key(i))));
    let retry = client.post("/v1/clicks/batch", JSON, batch.as_bytes()).unwrap();
    assert_eq!((retry.status, retry.json()["accepted"].as_u64()), (202, Some(5)), "{}", retry.text());
    assert_eq!(server.logged().len(), 5, "the retry was written again");
    let stats = &server.ingest.prefilter().unwrap().stats;
    assert_eq!(stats.duplicates.load(Ordering::SeqCst), 5);
    // A batch mixing old and new ids writes only the new ones.
    let mixed = array(&(4..=7).map(|i| click_json("ad-1", now, "u", i)).collect::<Vec<_>>());
    assert_eq!(client.post("/v1/clicks/batch", JSON, mixed.as_bytes()).unwrap().json()["accepted"], 4);
    let mut ids: Vec<u128> = server.logged().iter().map(|c| c.request_id).collect();
    ids.sort();
    assert_eq!(ids, (1..=7).collect::<Vec<u128>>());
}

#[test]
fn every_sighting_restarts_the_redis_ttl_as_it_refreshes_the_jobs_dedup_memory() {
    let redis = Redis::start();
    let config =
        IngestConfig { redis: Some(RedisConfig { url: redis.url(), horizon_ms: Some(1_500), timeout_ms: 200 }), ..signed_config() };
    let server = Server::start(config);
    let mut client = server.client(true);
    let body = click_json("ad-1", now_ms(), "u", 9);
    assert_eq!(client.post("/v1/clicks", JSON, body.as_bytes()).unwrap().status, 202);
    wait_until("the id to reach redis", || redis.exists(&tally::ingest::prefilter::key(9)));
    // Retries 1 s apart: each within the TTL of the one before, the last
    // long after the original's TTL ran out.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(1_000));
        assert_eq!(client.post("/v1/clicks", JSON, body.as_bytes()).unwrap().status, 202);
    }
    assert_eq!(server.logged().len(), 1, "a retry within the TTL of the last sighting was written");
    // After a silence longer than the TTL, the job decides.
    std::thread::sleep(Duration::from_millis(1_800));
    assert_eq!(client.post("/v1/clicks", JSON, body.as_bytes()).unwrap().status, 202);
    assert_eq!(server.logged().len(), 2);
}

#[test]
fn a_failed_write_leaves_no_redis_key_to_block_its_retry() {
    let redis = Redis::start();
    let server = Server::start(redis_config(&redis));
    let mut client = server.client(true);
    let body = array(&[click_json("ad-1", now_ms(), "u", 42)]);
    server.switch.fail.store(true, Ordering::SeqCst);
    assert_eq!(client.post("/v1/clicks/batch", JSON, body.as_bytes()).unwrap().status, 503);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!redis.exists(&tally::ingest::prefilter::key(42)));
    server.switch.fail.store(false, Ordering::SeqCst);
    assert_eq!(client.post("/v1/clicks/batch", JSON, body.as_bytes()).unwrap().status, 202);
    assert_eq!(server.logged().iter().map(|c| c.request_id).collect::<Vec<_>>(), vec![42]);
}

#[test]
fn requests_go_straight_to_the_log_when_redis_is_down() {
    let mut redis = Redis::start();
    let server = Server::start(redis_config(&redis));
    let mut client = server.client(true);
    let now = now_ms();
    assert_eq!(client.post("/v1/clicks", JSON, click_json("ad-1", now, "u", 1).as_bytes()).unwrap().status, 202);
    let _ = redis.child.kill();
    let _ = redis.child.wait();
    for i in 2..=4 {
        let reply = client.post("/v1/clicks", JSON, click_json("ad-1", now, "u", i).as_bytes()).unwrap();
        assert_eq!(reply.status, 202, "{}", reply.text());
    }
    // The retry of click 1 is written again (nothing can say it is a
    // duplicate but the job's dedup, which will drop it).
    assert_eq!(client.post("/v1/clicks", JSON, click_json("ad-1", now, "u", 1).as_bytes()).unwrap().status, 202);
    assert_eq!(server.logged().len(), 5);
    assert!(server.ingest.prefilter().unwrap().stats.errors.load(Ordering::SeqCst) >= 1);
}
