//! What every HTTP listener of tally answers alike, on the release binary:
//! `tally up` (ingest, queries and dashboard on one router) and `tally
//! ingest`. A path no route has gets `404 {"field":"path","reason"}`, a
//! method its route does not take `405 {"field":"method","reason"}` with
//! `Allow`; `tally ingest` answers `/healthz` and `/readyz` as `tally up`
//! does.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use tally::ingest::client::{HttpClient, Reply};

#[path = "common/net.rs"]
mod net;
#[path = "common/service.rs"]
mod service;

use service::start;

fn request(http: &mut HttpClient, method: &str, path: &str) -> Reply {
    http.raw(format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n").as_bytes()).unwrap()
}

fn assert_refused(reply: &Reply, status: u16, field: &str, reason: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(reply.json(), serde_json::json!({ "field": field, "reason": reason }), "{}", reply.text());
}

/// The `Allow` header of the answer to `method path`, read off the wire
/// (the client keeps only the status, the body and `Retry-After`).
fn allow_header(addr: SocketAddr, method: &str, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let head = answer.split("\r\n\r\n").next().unwrap_or("");
    head.lines()
        .find_map(|line| line.split_once(':').filter(|(name, _)| name.eq_ignore_ascii_case("allow")).map(|(_, v)| v.trim().to_owned()))
}

fn assert_404_and_405_are_json(addr: SocketAddr, get_route: &str) {
    let mut http = HttpClient::new(addr, None);
    assert_refused(&request(&mut http, "GET", "/nope"), 404, "path", "no route GET /nope");
    assert_refused(&request(&mut http, "POST", "/v1/clickz"), 404, "path", "no route POST /v1/clickz");
    let reply = request(&mut http, "GET", "/v1/clicks");
    assert_refused(&reply, 405, "method", "GET is not allowed on /v1/clicks; allowed: POST");
    assert_eq!(allow_header(addr, "GET", "/v1/clicks").as_deref(), Some("POST"));
    let reply = request(&mut http, "DELETE", get_route);
    assert_refused(&reply, 405, "method", &format!("DELETE is not allowed on {get_route}; allowed: GET, HEAD"));
    assert_eq!(allow_header(addr, "DELETE", get_route).as_deref(), Some("GET,HEAD"));
}

#[test]
fn up_answers_unknown_paths_and_methods_with_field_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (_up, addr) = start(&dir.path().join("data"), "up", &[], None);
    assert_404_and_405_are_json(addr, "/v1/top");
}

#[test]
fn ingest_answers_unknown_paths_and_methods_with_field_and_reason_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let (_ingest, addr) = start(&dir.path().join("data"), "ingest", &[], None);
    assert_404_and_405_are_json(addr, "/healthz");
    let mut http = HttpClient::new(addr, None);
    let healthz = http.get("/healthz").unwrap();
    assert_eq!((healthz.status, healthz.json()), (200, serde_json::json!({ "status": "ok" })), "{}", healthz.text());
    let readyz = http.get("/readyz").unwrap();
    assert_eq!((readyz.status, readyz.json()), (200, serde_json::json!({ "status": "ready" })), "{}", readyz.text());
    let documented = http.get("/openapi.json").unwrap().json();
    for path in ["/healthz", "/readyz"] {
        assert!(documented["paths"][path]["get"].is_object(), "{path} is not in the served document");
    }
}
