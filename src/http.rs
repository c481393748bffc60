//! Serving an axum router over HTTP/1.1, plain or TLS (rustls), with a
//! bound on open connections and a graceful stop.
//!
//! Every listener of tally goes through [`serve`]: connections beyond
//! `max_connections` wait in the kernel's accept queue instead of taking
//! memory; on shutdown the listener closes, open connections finish the
//! request in flight (an acknowledgement that was being made durable is
//! still sent) and then close.
//!
//! Routing's own refusals (a path no route has: 404; a method its route
//! does not take: 405, with `Allow`) are answered in the same
//! `{"field","reason"}` form as every other refusal of tally, so a client
//! reads one error shape whatever refused it ([`with_json_refusals`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// How long a stopping server waits for open connections to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Most characters of a request's path quoted back in a refusal: the path
/// is the caller's choice.
pub const SHOWN_PATH_CHARS_MAX: usize = 200;

/// A TLS acceptor from PEM files: the certificate chain and its private key.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("tls.cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("tls.cert {}: no certificate in the file", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("tls.key {}: {e}", key.display()))?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls: certificate and key do not form a valid pair: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets open
/// connections finish (up to [`SHUTDOWN_GRACE`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let router = with_json_refusals(router);
    let permits = Arc::new(Semaphore::new(max_connections));
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
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => connection(TokioIo::new(stream), router, peer, stop).await,
                Some(acceptor) => {
                    if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                        connection(TokioIo::new(stream), router, peer, stop).await;
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, permits.acquire_many(max_connections as u32)).await;
    Ok(())
}

/// The address a request came from, in every request's extensions: what
/// limits per address key on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

async fn connection<I>(io: I, router: Router, peer: SocketAddr, mut stop: watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let router = router.map_request(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(PeerAddr(peer));
        request
    });
    let service = TowerToHyperService::new(router);
    let conn = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stop.wait_for(|stopped| *stopped) => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
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
