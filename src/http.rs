//! Serving an axum router over HTTP/1.1, plain or TLS (rustls), with
//! bounds on connections and on the time each step may take, and a
//! graceful stop.
//!
//! Every listener of tally goes through [`serve`], with its [`Limits`]:
//! connections beyond `max_connections` wait in the kernel's accept queue
//! instead of taking memory; one client address holds at most
//! `max_connections_per_address` (more are closed as they are accepted,
//! [`addresses`]); a connection that sends no complete request head within
//! `header_timeout`, keeps quiet between requests for `idle_timeout`, or
//! does not send a request body in full within `body_timeout` is cut
//! ([`clock`]). On shutdown the listener closes, open connections finish
//! the request in flight (an acknowledgement that was being made durable
//! is still sent) and then close.
//!
//! Every answer carries the security headers, and a request naming a host
//! this server does not answer to is refused with 421 ([`hosts`]).
//! Routing's own refusals (a path no route has: 404; a method its route
//! does not take: 405, with `Allow`) are answered in the same
//! `{"field","reason"}` form as every other refusal of tally, so a client
//! reads one error shape whatever refused it ([`with_json_refusals`]).

pub mod addresses;
pub mod clock;
pub mod hosts;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use self::addresses::Addresses;
use self::clock::{Answered, Clock, Deadline, Watched};
pub use self::hosts::Hosts;

/// How long a stopping server waits for open connections to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Longest a TLS handshake may take; a client slower than this is cut.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub const DEFAULT_MAX_CONNECTIONS: usize = 1_024;
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 64;
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Most characters of a request's path quoted back in a refusal: the path
/// is the caller's choice.
pub const SHOWN_PATH_CHARS_MAX: usize = 200;

/// What one listener allows its clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; more wait in the accept queue.
    pub max_connections: usize,
    /// Connections one client address (an IPv6 /64) holds at once; more
    /// are closed as they are accepted.
    pub max_connections_per_address: usize,
    /// From the connect (TLS handshake included), or from the first byte
    /// of a later request, until its head is in.
    pub header_timeout: Duration,
    /// Between an answer and the first byte of the next request.
    pub idle_timeout: Duration,
    /// From a request's head until its body is in.
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
        }
    }
}

/// A TLS acceptor from PEM files: the certificate chain and its private key.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("tls.cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("tls.cert {}: no certificate in the file", cert.display()));
    }
    check_key_mode(key)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("tls.key {}: {e}", key.display()))?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls: certificate and key do not form a valid pair: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Refuses a private key that users other than its owner may read.
fn check_key_mode(key: &Path) -> Result<(), String> {
    let mode = std::fs::metadata(key).map_err(|e| format!("tls.key {}: {e}", key.display()))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "tls.key {path}: mode {mode:04o} lets other users read the private key; run chmod 600 {path}",
            path = key.display()
        ));
    }
    Ok(())
}

/// Serves `router` on `listener` within `limits`, to requests naming one
/// of `hosts`, until `shutdown` resolves; then lets open connections
/// finish (up to [`SHUTDOWN_GRACE`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    hosts: Hosts,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let service = TowerToHyperService::new(with_json_refusals(router));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let addresses = Addresses::new(limits.max_connections_per_address);
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => permit.map_err(io::Error::other)?,
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: back off, go on.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        // Over its address's cap: dropped, so closed at once, and the
        // permit is free again.
        let Some(slot) = addresses.admit(peer.ip()) else { continue };
        let _ = stream.set_nodelay(true);
        let clock = Clock::new(limits.header_timeout, limits.idle_timeout);
        let io = Watched::new(stream, Arc::clone(&clock));
        let answer =
            Answer { service: service.clone(), clock: Arc::clone(&clock), hosts: hosts.clone(), body_timeout: limits.body_timeout, peer };
        let tls = tls.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            let _held = (permit, slot);
            match tls {
                None => connection(TokioIo::new(io), answer, clock, stop).await,
                Some(acceptor) => {
                    if let Ok(Ok(stream)) = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                        connection(TokioIo::new(stream), answer, clock, stop).await;
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, permits.acquire_many(limits.max_connections as u32)).await;
    Ok(())
}

/// Serves one connection until it closes, the server stops, or its
/// [`Clock`] runs out (then it is closed at once: no request is being
/// answered).
async fn connection<I>(io: I, answer: Answer, clock: Arc<Clock>, mut stop: watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| answer.clone().call(request));
    let conn = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(io, service);
    tokio::pin!(conn);
    loop {
        let deadline = clock.deadline();
        let expired = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = stop.wait_for(|stopped| *stopped) => break,
            () = clock.changed() => {}
            () = expired => {
                if clock.deadline() == deadline {
                    return;
                }
            }
        }
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// What answers each request of a connection.
#[derive(Clone)]
struct Answer {
    service: TowerToHyperService<Router>,
    clock: Arc<Clock>,
    hosts: Hosts,
    body_timeout: Duration,
    /// Where the connection comes from, given to every request as [`PeerAddr`].
    peer: SocketAddr,
}

/// The address a request came from, in every request's extensions: what
/// limits per address key on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

impl Answer {
    /// The router's answer, or 421 for a host this server does not answer
    /// to; with the security headers, and the request counted as being
    /// answered until its answer is written. The body must arrive within
    /// the body timeout.
    async fn call(self, mut request: hyper::Request<Incoming>) -> Result<Response, Infallible> {
        request.extensions_mut().insert(PeerAddr(self.peer));
        let answering = self.clock.request();
        let mut response = match self.hosts.refusal(request.headers()) {
            Some(reason) => misdirected(reason),
            None => {
                let request = request.map(|body| Deadline::new(body, self.body_timeout));
                let Ok(response) = hyper::service::Service::call(&self.service, request).await;
                response
            }
        };
        hosts::add_security_headers(response.headers_mut());
        Ok(response.map(|body| Body::new(Answered::new(body, answering))))
    }
}

fn misdirected(reason: String) -> Response {
    let body = axum::Json(serde_json::json!({ "field": "Host", "reason": reason }));
    (StatusCode::MISDIRECTED_REQUEST, body).into_response()
}

/// `router` with routing's own 404 and 405 answered as
/// `{"field":"path"|"method","reason"}` (a 405 keeps its `Allow` header and
/// names the allowed methods). The router is the fallback of an outer one,
/// so the refusal is written after routing has decided, `Allow` included.
pub fn with_json_refusals(router: Router) -> Router {
    Router::new().fallback_service(router).layer(axum::middleware::from_fn(json_refusal))
}

async fn json_refusal(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path: String = request.uri().path().chars().take(SHOWN_PATH_CHARS_MAX).collect();
    let response = next.run(request).await;
    // A handler's own answer carries a body type; routing's refusals do not.
    if response.headers().contains_key(header::CONTENT_TYPE) {
        return response;
    }
    match response.status() {
        StatusCode::NOT_FOUND => refusal(response, "path", format!("no route {method} {path}")),
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = response.headers().get(header::ALLOW).and_then(|v| v.to_str().ok()).unwrap_or("").replace(',', ", ");
            refusal(response, "method", format!("{method} is not allowed on {path}; allowed: {allowed}"))
        }
        _ => response,
    }
}

/// `response` with its status and headers, and a `{field, reason}` body.
fn refusal(response: Response, field: &str, reason: String) -> Response {
    let (mut parts, _) = response.into_parts();
    let body = axum::Json(serde_json::json!({ "field": field, "reason": reason })).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, body.into_body())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::{get, post};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    async fn answer(router: &Router, method: &str, path: &str) -> (StatusCode, Option<String>, serde_json::Value) {
        let request = Request::builder().method(method).uri(path).body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let allow = response.headers().get(header::ALLOW).map(|v| v.to_str().unwrap().to_owned());
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, allow, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    #[tokio::test]
    async fn routing_refusals_name_the_path_or_the_method_and_handlers_answer_as_they_do() {
        let handled_404 = || async { (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({ "field": "id", "reason": "no such id" }))) };
        let router = with_json_refusals(Router::new().route("/v1/top", get(|| async { "top" })).route("/v1/gone", post(handled_404)));

        let (status, _, body) = answer(&router, "GET", "/nope").await;
        assert_eq!((status, body), (StatusCode::NOT_FOUND, serde_json::json!({ "field": "path", "reason": "no route GET /nope" })));

        let (status, allow, body) = answer(&router, "DELETE", "/v1/top").await;
        assert_eq!((status, allow.as_deref()), (StatusCode::METHOD_NOT_ALLOWED, Some("GET,HEAD")));
        assert_eq!(body, serde_json::json!({ "field": "method", "reason": "DELETE is not allowed on /v1/top; allowed: GET, HEAD" }));

        // A handler's own 404 is left as it wrote it.
        let (status, _, body) = answer(&router, "POST", "/v1/gone").await;
        assert_eq!((status, body["field"].as_str()), (StatusCode::NOT_FOUND, Some("id")));
        let long = format!("/{}", "x".repeat(500));
        let (_, _, body) = answer(&router, "GET", &long).await;
        assert_eq!(body["reason"].as_str().unwrap().len(), "no route GET ".len() + SHOWN_PATH_CHARS_MAX);
    }
}
