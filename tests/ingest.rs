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

#[path = "common/net.rs"]
mod net;
use net::{free_addr, listening};
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
    // A chunked body without a length is cut off at the limit too (before
    // its signature is checked: that needs the whole body).
    let chunk = "x".repeat(40 * 1024);
    let ts = now_ms().to_string();
    let signature = tally::ingest::auth::sign(&Secret::new(SECRET), "POST", "/v1/clicks/batch", &ts, chunk.repeat(2).as_bytes());
    let request = format!("POST /v1/clicks/batch HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nX-Tally-Client: web\r\nX-Tally-Timestamp: {ts}\r\nX-Tally-Signature: {signature}\r\n\r\n{:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n", chunk.len(), chunk.len());
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
        let signature = tally::ingest::auth::sign(&Secret::new(SECRET), "POST", "/v1/clicks/batch", &ts, body);
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
    let over_plain = tally::ingest::auth::sign(&Secret::new(SECRET), "POST", "/v1/clicks/batch", &ts, ndjson.as_bytes());
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
    // An unknown client gets the answer of a wrong signature: a refusal
    // does not tell which client ids exist.
    let unknown = client.post("/v1/clicks", JSON, body.as_bytes()).unwrap();
    refused(&unknown, 401, "x-tally-signature", "does not verify");
    let wrong_key = Signer { client_id: "web".to_owned(), secret: Secret::new("not-the-secret-of-web") };
    let mut client = HttpClient::new(server.addr, Some(wrong_key));
    let wrong = client.post("/v1/clicks", JSON, body.as_bytes()).unwrap();
    assert_eq!(unknown.body, wrong.body);
    // A signature of another body (a tampered request) and a stale timestamp.
    let stale = (now - 301_000).to_string();
    let signature = tally::ingest::auth::sign(&Secret::new(SECRET), "POST", "/v1/clicks", &stale, body.as_bytes());
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
    let signature = tally::ingest::auth::sign(&Secret::new(SECRET), "POST", "/v1/clicks", &fresh, body.as_bytes());
    let tampered = body.replace("ad-1", "ad-2");
    refused(&raw.raw(request(&fresh, &signature, &tampered).as_bytes()).unwrap(), 401, "x-tally-signature", "does not verify");
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
        assert_eq!(codes, ["202", "400", "401", "409", "413", "415", "429", "503"], "{path}");
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
fn unsigned_requests_go_straight_to_the_log_when_redis_is_down() {
    let mut redis = Redis::start();
    let server = Server::start(IngestConfig { auth: Auth::Off, ..redis_config(&redis) });
    let mut client = server.client(false);
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

#[test]
fn signed_requests_are_refused_while_redis_cannot_guard_them() {
    let mut redis = Redis::start();
    let server = Server::start(redis_config(&redis));
    let mut client = server.client(true);
    assert_eq!(client.post("/v1/clicks", JSON, click_json("ad-1", now_ms(), "u", 1).as_bytes()).unwrap().status, 202);
    let _ = redis.child.kill();
    let _ = redis.child.wait();
    // A replay guard that let requests through when it cannot check would
    // be no guard: refused, nothing written, retry later.
    let reply = client.post("/v1/clicks", JSON, click_json("ad-1", now_ms(), "u", 2).as_bytes()).unwrap();
    refused(&reply, 503, "redis", "the replay guard cannot check this request");
    assert_eq!(reply.retry_after, Some(1));
    assert_eq!(server.logged().len(), 1);
}

// ---------------------------------------------------------------- replays

/// A request signed as `web` at `ts` over `signed_path`, sent to `path`.
fn signed_request(path: &str, signed_path: &str, ts: u64, body: &[u8]) -> Vec<u8> {
    let ts = ts.to_string();
    let signature = tally::ingest::auth::sign(&Secret::new(SECRET), "POST", signed_path, &ts, body);
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {JSON}\r\nContent-Length: {}\r\nX-Tally-Client: web\r\nX-Tally-Timestamp: {ts}\r\nX-Tally-Signature: {signature}\r\n\r\n",
        body.len()
    );
    [head.into_bytes(), body.to_vec()].concat()
}

fn batch_of(from: u64, n: u64) -> String {
    array(&(from..from + n).map(|i| click_json("ad-1", now_ms(), "u", i)).collect::<Vec<_>>())
}

/// Without the replay guard the second copy below passes every other
/// check (a fresh timestamp, a MAC that verifies, valid clicks) and is
/// written again: `logged()` would hold 10 clicks, and the job, which
/// forgets a request id one dedup horizon (1m of event time) after it,
/// counts a copy replayed later than that but within the replay window
/// (5m) twice. The assertion that the log still holds 5 is what fails.
#[test]
fn a_captured_signed_batch_replayed_byte_for_byte_gets_409_and_nothing_more_is_written() {
    let server = Server::start(signed_config());
    let mut raw = server.client(false);
    let captured = signed_request("/v1/clicks/batch", "/v1/clicks/batch", now_ms(), batch_of(1, 5).as_bytes());
    assert_eq!(raw.raw(&captured).unwrap().status, 202);
    let replay = raw.raw(&captured).unwrap();
    refused(&replay, 409, "x-tally-signature", "was already accepted; sign a new request");
    assert_eq!(server.logged().len(), 5);
    // Signed again, the same clicks are a new request (the job's dedup
    // decides on their ids, as for any retry).
    assert_eq!(server.client(true).post("/v1/clicks/batch", JSON, batch_of(1, 5).as_bytes()).unwrap().status, 202);
}

#[test]
fn a_request_refused_after_its_signature_verified_can_be_sent_again_as_is() {
    let server = Server::start(signed_config());
    let mut raw = server.client(false);
    let request = signed_request("/v1/clicks/batch", "/v1/clicks/batch", now_ms(), batch_of(1, 2).as_bytes());
    server.switch.fail.store(true, Ordering::SeqCst);
    assert_eq!(raw.raw(&request).unwrap().status, 503);
    server.switch.fail.store(false, Ordering::SeqCst);
    assert_eq!(raw.raw(&request).unwrap().status, 202);
    assert_eq!(raw.raw(&request).unwrap().status, 409);
    assert_eq!(server.logged().len(), 2);
}

#[test]
fn a_request_signed_for_one_path_does_not_verify_on_another() {
    let server = Server::start(signed_config());
    let mut raw = server.client(false);
    let body = batch_of(1, 1);
    let moved = signed_request("/v1/clicks/batch", "/v1/clicks", now_ms(), body.as_bytes());
    refused(&raw.raw(&moved).unwrap(), 401, "x-tally-signature", "does not verify for this client, method, path");
    // A query string is not signed.
    let queried = signed_request("/v1/clicks/batch?source=sdk", "/v1/clicks/batch", now_ms(), body.as_bytes());
    assert_eq!(raw.raw(&queried).unwrap().status, 202);
    assert_eq!(server.logged().len(), 1);
}

#[test]
fn ingest_services_sharing_redis_refuse_a_replay_sent_to_another() {
    let redis = Redis::start();
    let (first, second) = (Server::start(redis_config(&redis)), Server::start(redis_config(&redis)));
    let captured = signed_request("/v1/clicks/batch", "/v1/clicks/batch", now_ms(), batch_of(1, 5).as_bytes());
    assert_eq!(first.client(false).raw(&captured).unwrap().status, 202);
    refused(&second.client(false).raw(&captured).unwrap(), 409, "x-tally-signature", "already accepted");
    refused(&first.client(false).raw(&captured).unwrap(), 409, "x-tally-signature", "already accepted");
    assert_eq!((first.logged().len(), second.logged().len()), (5, 0));
}

#[test]
fn a_batch_of_blank_lines_gets_a_short_answer() {
    let mut config = signed_config();
    config.limits.max_batch_clicks = 10_000;
    let server = Server::start(config);
    let body = "\n".repeat(10_000);
    let reply = server.client(true).post("/v1/clicks/batch", NDJSON, body.as_bytes()).unwrap();
    assert_eq!(reply.status, 400, "{}", reply.text());
    let answer = reply.json();
    assert_eq!(answer["rejected"].as_array().map(Vec::len), Some(tally::ingest::server::MAX_REJECTED_LISTED));
    assert_eq!((answer["rejected_total"].as_u64(), answer["rejected_truncated"].as_bool()), (Some(10_000), Some(true)));
    assert!(reply.body.len() < 16 * 1024, "{} bytes", reply.body.len());
    // A batch with few rejections lists them all.
    let mixed = format!("{}\n\n", click_json("ad-1", now_ms(), "u", 1));
    let reply = server.client(true).post("/v1/clicks/batch", NDJSON, mixed.as_bytes()).unwrap();
    let answer = reply.json();
    assert_eq!((answer["rejected_total"].as_u64(), answer["rejected_truncated"].as_bool()), (Some(1), Some(false)), "{}", reply.text());
}

// ---------------------------------------------------------------- before the body

/// Sends `head` alone and reads the answer's status line, without ever
/// sending a body byte.
fn status_before_body(addr: SocketAddr, head: &str) -> String {
    use std::io::{BufRead, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line).expect("an answer while the body is still unsent");
    line.trim_end().to_owned()
}

/// What can be judged on the headers is judged before the body is read:
/// the server answers while the client has sent only the headers. (A
/// well-formed signature of a known client cannot be: its MAC covers the
/// body. Its body is read within `max_body_bytes_in_flight`, see the next
/// test.)
#[test]
fn a_request_refused_from_its_headers_gets_its_answer_before_the_body_is_sent() {
    let server = Server::start(IngestConfig { max_body_bytes: 8 << 20, ..signed_config() });
    let head = |length: u64, ts: u64, signature: &str| {
        format!(
            "POST /v1/clicks/batch HTTP/1.1\r\nHost: localhost\r\nContent-Type: {JSON}\r\nContent-Length: {length}\r\nX-Tally-Client: web\r\nX-Tally-Timestamp: {ts}\r\nX-Tally-Signature: {signature}\r\n\r\n"
        )
    };
    let started = Instant::now();
    assert!(status_before_body(server.addr, &head(8_000_000, now_ms(), "not-hex")).starts_with("HTTP/1.1 401"));
    assert!(status_before_body(server.addr, &head(8_000_000, now_ms() - 600_000, &"0".repeat(64))).starts_with("HTTP/1.1 401"));
    assert!(status_before_body(server.addr, &head(9 << 20, now_ms(), &"0".repeat(64))).starts_with("HTTP/1.1 413"));
    // Each waited at most DRAIN_WAIT for body bytes that never came.
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(server.logged(), vec![]);
}

// ---------------------------------------------------------------- tally ingest, the process

const TALLY: &str = env!("CARGO_BIN_EXE_tally");

/// `tally ingest` in a child process, killed on drop.
struct IngestProcess {
    child: Child,
    addr: SocketAddr,
}

impl IngestProcess {
    fn start(data: &std::path::Path, config: &std::path::Path, addr: SocketAddr) -> IngestProcess {
        let child = Command::new(TALLY)
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
        let process = IngestProcess { child, addr };
        wait_until("tally ingest to listen", || listening(addr));
        process
    }

    /// SIGTERM, then waits for the exit.
    fn stop(mut self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "tally ingest ended with {exit}");
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for IngestProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ingest_config_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("ingest.toml");
    std::fs::write(&path, format!("[[auth.clients]]\nid = \"web\"\nsecret = \"{SECRET}\"\n")).unwrap();
    path
}

#[test]
fn a_replay_is_refused_after_a_clean_restart_and_older_signatures_after_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let (data, config, addr) = (dir.path().join("data"), ingest_config_file(dir.path()), free_addr());
    let process = IngestProcess::start(&data, &config, addr);
    let captured = signed_request("/v1/clicks/batch", "/v1/clicks/batch", now_ms(), batch_of(1, 5).as_bytes());
    assert_eq!(HttpClient::new(addr, None).raw(&captured).unwrap().status, 202);
    process.stop();
    assert!(data.join("ingest-replay").exists() && !data.join("ingest-replay.running").exists());

    let process = IngestProcess::start(&data, &config, addr);
    refused(&HttpClient::new(addr, None).raw(&captured).unwrap(), 409, "x-tally-signature", "already accepted");
    // Signed now, sent only after the process was killed and restarted: it
    // cannot know whether it accepted it before the kill.
    let signed_before = signed_request("/v1/clicks/batch", "/v1/clicks/batch", now_ms(), batch_of(6, 1).as_bytes());
    assert_eq!(HttpClient::new(addr, None).raw(&signed_before).unwrap().status, 202);
    drop(process);
    std::thread::sleep(Duration::from_millis(5));
    let process = IngestProcess::start(&data, &config, addr);
    refused(&HttpClient::new(addr, None).raw(&signed_before).unwrap(), 401, "x-tally-timestamp", "after an unclean stop");
    refused(&HttpClient::new(addr, None).raw(&captured).unwrap(), 401, "x-tally-timestamp", "sign it again");
    let signer = Signer { client_id: "web".to_owned(), secret: Secret::new(SECRET) };
    assert_eq!(HttpClient::new(process.addr, Some(signer)).post("/v1/clicks/batch", JSON, batch_of(7, 1).as_bytes()).unwrap().status, 202);
}

/// 64 connections each announce an 8 MiB body under a well-formed
/// signature of a known client (so its body must be read before the MAC
/// can fail), send all of it but the last byte, and hold. Before
/// `max_body_bytes_in_flight` the server buffered every one (RSS from
/// 21 MB to 630 MB); now at most 64 MiB of them are read at once and the
/// others are answered 503 at once. The bound: a 21 MB baseline, 64 MiB of
/// bodies, and hyper's read buffers (up to ~400 KiB a connection, 25 MiB
/// for 64), well below 200 MB.
#[test]
fn bodies_in_flight_are_bounded_whatever_connections_announce() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let (data, config, addr) = (dir.path().join("data"), ingest_config_file(dir.path()), free_addr());
    let process = IngestProcess::start(&data, &config, addr);
    let before = process.rss_kib();
    let length = 8 << 20;
    let head = format!(
        "POST /v1/clicks/batch HTTP/1.1\r\nHost: localhost\r\nContent-Type: {JSON}\r\nContent-Length: {length}\r\nX-Tally-Client: web\r\nX-Tally-Timestamp: {}\r\nX-Tally-Signature: {}\r\n\r\n",
        now_ms(),
        "0".repeat(64)
    );
    let chunk = vec![b' '; 1 << 20];
    let senders: Vec<_> = (0..64)
        .map(|_| {
            let head = head.clone();
            let chunk = chunk.clone();
            std::thread::spawn(move || {
                let mut stream = std::net::TcpStream::connect(addr).unwrap();
                stream.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut sent = stream.write_all(head.as_bytes()).is_ok();
                for i in 0..8 {
                    let part = if i == 7 { &chunk[1..] } else { &chunk[..] };
                    sent = sent && stream.write_all(part).is_ok();
                }
                (stream, sent)
            })
        })
        .collect();
    let streams: Vec<_> = senders.into_iter().map(|s| s.join().unwrap()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let held = process.rss_kib();
    let fully_sent = streams.iter().filter(|(_, sent)| *sent).count();
    eprintln!("RSS {before} KiB before, {held} KiB with 64 connections announcing 8 MiB ({fully_sent} sent all but one byte)");
    assert!(held < 200 * 1024, "RSS {held} KiB");
    drop(streams);
    // Still serving.
    let signer = Signer { client_id: "web".to_owned(), secret: Secret::new(SECRET) };
    // (Bodies of closed connections may still hold their bytes a moment:
    // a 503 with Retry-After is retried.)
    let mut client = HttpClient::new(addr, Some(signer));
    let reply = client.post_until_accepted("/v1/clicks", JSON, click_json("ad-1", now_ms(), "u", 1).as_bytes(), 10).unwrap();
    assert_eq!(reply.status, 202, "{}", reply.text());
    process.stop();
}
