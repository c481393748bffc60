//! The HTTP API: `POST /v1/clicks`, `POST /v1/clicks/batch`,
//! `GET /openapi.json`, and for `tally ingest` alone `GET /healthz` and
//! `GET /readyz` ([`health_router`]).
//!
//! A request goes through the checks in this order, and the first that
//! fails decides the answer (each error body is `{"field","reason"}`, plus
//! the rejected items or the position where they apply):
//!
//! | check                                   | failure |
//! |-----------------------------------------|---------|
//! | content type fits the endpoint          | 415     |
//! | content encoding none or `gzip`         | 415     |
//! | body within `max_body_bytes`            | 413     |
//! | signature (unless switched off)         | 401     |
//! | gzip body decompresses                  | 400     |
//! | decompressed body within `max_body_bytes` | 413   |
//! | body readable as a whole                | 400     |
//! | at most `max_batch_clicks`              | 413     |
//! | at least one valid click                | 400     |
//! | client's rate limit                     | 429     |
//! | a slot among `max_inflight_requests`    | 503     |
//! | log append durable                      | 503     |
//!
//! and only then `202 {"accepted":n,"rejected":[…]}`. The signature covers
//! the body as sent (compressed, if it is): it is checked before anything
//! is decompressed, so an unsigned body costs no inflating. The decompressed
//! size is bounded by the same `max_body_bytes` as the bytes on the wire, so
//! a small body that inflates without end is refused before it takes
//! memory. The raw user id lives only in the request buffer: decoding
//! replaces it by its keyed hash, and nothing here logs a request or a
//! client address.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use flate2::read::MultiGzDecoder;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::auth::{SignedHeaders, CLIENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use super::config::{Auth, IngestConfig};
use super::decode::{decode_body, BodyError, BodyKind, DecodeLimits, Decoded, ItemError};
use super::limit::RateLimiter;
use super::prefilter::PreFilter;
use crate::event::salt::UserSalt;
use crate::event::validate::check_key;
use crate::event::{Click, RequestId};
use crate::log::Log;
use crate::telemetry::IngestStats;

/// The OpenAPI document of this API, served at `GET /openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// The client id of unsigned requests that name none (or an invalid one).
pub const ANONYMOUS_CLIENT: &str = "anonymous";

/// Most bytes of an oversized body read and dropped before answering 413.
pub const DRAIN_BYTES_MAX: usize = 1 << 20;

pub const JSON: &str = "application/json";
pub const NDJSON: &str = "application/x-ndjson";

/// Where accepted clicks go. `append_durable` returns `Ok` only once every
/// click is durable (embedded log: fsynced by group commit); after an error
/// any part of the batch may or may not be there, and the client's retry is
/// absorbed by the job's dedup.
pub trait ClickLog: Send + Sync + 'static {
    /// The (partition, offset) each click was written at, in order.
    fn append_durable(&self, clicks: &[Click]) -> Result<Vec<(u32, u64)>, String>;
}

impl ClickLog for Log {
    fn append_durable(&self, clicks: &[Click]) -> Result<Vec<(u32, u64)>, String> {
        self.append(clicks).map(|receipt| receipt.positions).map_err(|e| e.to_string())
    }
}

/// The ingest service: everything a request needs, shared by connections.
pub struct Ingest {
    log: Arc<dyn ClickLog>,
    salt: UserSalt,
    limits: DecodeLimits,
    max_body_bytes: usize,
    max_inflight_requests: usize,
    auth: Auth,
    limiter: RateLimiter,
    prefilter: Option<Arc<PreFilter>>,
    inflight: Semaphore,
    clock: Box<dyn Fn() -> u64 + Send + Sync>,
    pub stats: Arc<IngestStats>,
}

impl Ingest {
    /// The service of `config`, writing to `log`, hashing users with `salt`,
    /// reading the time from `clock` (unix ms).
    pub fn new(
        config: &IngestConfig,
        log: Arc<dyn ClickLog>,
        salt: UserSalt,
        prefilter: Option<PreFilter>,
        clock: Box<dyn Fn() -> u64 + Send + Sync>,
    ) -> Ingest {
        Ingest {
            log,
            salt,
            limits: config.limits,
            max_body_bytes: config.max_body_bytes,
            max_inflight_requests: config.max_inflight_requests,
            auth: config.auth.clone(),
            limiter: config.limiter(),
            prefilter: prefilter.map(Arc::new),
            inflight: Semaphore::new(config.max_inflight_requests),
            clock,
            stats: Arc::new(IngestStats::default()),
        }
    }

    pub fn prefilter(&self) -> Option<&PreFilter> {
        self.prefilter.as_deref()
    }
}

/// Every route of `tally ingest` (method, path), as `openapi.json` lists them.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/clicks"),
    ("POST", "/v1/clicks/batch"),
    ("GET", "/openapi.json"),
    ("GET", "/metrics"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
];

/// The POST routes of the ingest API; `GET /openapi.json` is added by
/// whoever serves them ([`openapi_route`]), since `tally up` serves one
/// document for ingest and queries.
pub fn router(ingest: Arc<Ingest>) -> Router {
    Router::new().route("/v1/clicks", post(post_single)).route("/v1/clicks/batch", post(post_batch)).with_state(ingest)
}

/// `GET /healthz` (the process answers) and `GET /readyz` of `tally ingest`:
/// ready while a request can get a slot among `max_inflight_requests` to
/// wait for the log, so a load balancer turns clients away from an instance
/// whose log is saturated. `tally up` answers both from the query API
/// instead (ready once its store reads).
pub fn health_router(ingest: Arc<Ingest>) -> Router {
    Router::new().route("/healthz", get(|| async { axum::Json(json!({ "status": "ok" })) })).route("/readyz", get(ready)).with_state(ingest)
}

async fn ready(State(ingest): State<Arc<Ingest>>) -> Response {
    if ingest.inflight.available_permits() > 0 {
        return axum::Json(json!({ "status": "ready" })).into_response();
    }
    let reason = format!("{} requests are already waiting for the log", ingest.max_inflight_requests);
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({ "status": "unavailable", "field": "log", "reason": reason }))).into_response()
}

/// `GET /openapi.json` serving `document`.
pub fn openapi_route(document: String) -> Router {
    let document: Arc<str> = document.into();
    Router::new().route("/openapi.json", get(move || async move { ([(header::CONTENT_TYPE, JSON)], document.to_string()).into_response() }))
}

async fn post_single(State(ingest): State<Arc<Ingest>>, headers: HeaderMap, body: Body) -> Response {
    handle(&ingest, Endpoint::Single, &headers, body).await.unwrap_or_else(refusal)
}

async fn post_batch(State(ingest): State<Arc<Ingest>>, headers: HeaderMap, body: Body) -> Response {
    handle(&ingest, Endpoint::Batch, &headers, body).await.unwrap_or_else(refusal)
}

/// The answer to a refused request, logged by its status and field only:
/// a reason may quote what the request carried (a parser's message), and
/// nothing a client sent is ever logged.
fn refusal(refused: Refused) -> Response {
    tracing::debug!(status = refused.status.as_u16(), field = %refused.field, "request refused");
    refused.into_response()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Single,
    Batch,
}

/// A refused request: status, the field at fault, the reason, and extras.
struct Refused {
    status: StatusCode,
    field: String,
    reason: String,
    extra: Vec<(&'static str, Value)>,
    retry_after: Option<Duration>,
}

impl Refused {
    fn new(status: StatusCode, field: impl Into<String>, reason: impl Into<String>) -> Refused {
        Refused { status, field: field.into(), reason: reason.into(), extra: Vec::new(), retry_after: None }
    }

    fn with(mut self, key: &'static str, value: Value) -> Refused {
        self.extra.push((key, value));
        self
    }

    fn retry_after(mut self, after: Duration) -> Refused {
        self.retry_after = Some(after);
        self
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut body = json!({ "field": self.field, "reason": self.reason });
        for (key, value) in self.extra {
            body[key] = value;
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(after) = self.retry_after {
            let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

async fn handle(ingest: &Ingest, endpoint: Endpoint, headers: &HeaderMap, body: Body) -> Result<Response, Refused> {
    ingest.stats.request();
    let (kind, encoding) = match body_kind(endpoint, headers).and_then(|kind| Ok((kind, content_encoding(headers)?))) {
        Ok(checked) => checked,
        Err(refused) => {
            // Read the body anyway (bounded), or the client may lose the
            // answer to a reset (see `read_body`).
            let _ = read_body(body, headers, ingest.max_body_bytes).await;
            return Err(refused);
        }
    };
    let body = read_body(body, headers, ingest.max_body_bytes).await?;
    let now_ms = (ingest.clock)();
    let client = authenticate(ingest, headers, &body, now_ms)?;
    let body = decompress(encoding, body, ingest.max_body_bytes)?;
    let decoded = decode_body(kind, &body, &ingest.limits, now_ms, &ingest.salt).map_err(|e| body_refused(e, kind))?;
    drop(body);
    let items = decoded.clicks.len() + decoded.rejected.len();
    ingest.stats.decoded(decoded.clicks.len(), decoded.rejected.iter().map(|r| &r.field));
    if decoded.clicks.is_empty() {
        return Err(nothing_valid(endpoint, items, decoded.rejected));
    }
    ingest.limiter.take(&client, items, Instant::now()).map_err(|limited| {
        let reason = format!(
            "client {client:?} is over its rate limit of {} clicks/s (burst {}); retry after {:.1} s",
            limited.rate.clicks_per_s,
            limited.rate.burst_clicks,
            limited.retry_after.as_secs_f64()
        );
        Refused::new(StatusCode::TOO_MANY_REQUESTS, CLIENT_HEADER, reason).retry_after(limited.retry_after)
    })?;
    let accepted = write(ingest, decoded).await?;
    tracing::trace!(accepted = accepted.0, rejected = accepted.1.len(), "clicks acknowledged");
    Ok((StatusCode::ACCEPTED, axum::Json(json!({ "accepted": accepted.0, "rejected": accepted.1 }))).into_response())
}

/// The body's shape from the endpoint and its `Content-Type`.
fn body_kind(endpoint: Endpoint, headers: &HeaderMap) -> Result<BodyKind, Refused> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .map(|value| value.to_str().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    let expected = match endpoint {
        Endpoint::Single => JSON.to_owned(),
        Endpoint::Batch => format!("{JSON} or {NDJSON}"),
    };
    match (endpoint, media.as_deref()) {
        (Endpoint::Single, Some(JSON)) => Ok(BodyKind::Single),
        (Endpoint::Batch, Some(JSON)) => Ok(BodyKind::Array),
        (Endpoint::Batch, Some(NDJSON)) => Ok(BodyKind::Ndjson),
        (_, None) => Err(Refused::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type", format!("missing; expected {expected}"))),
        (_, Some(other)) => {
            let shown: String = other.chars().take(100).collect();
            Err(Refused::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type",
                format!("{shown:?} is not accepted here; expected {expected}"),
            ))
        }
    }
}

/// How the body is encoded on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
}

/// The body's `Content-Encoding`: none, `identity`, or `gzip` (one coding;
/// `x-gzip` is its old name).
fn content_encoding(headers: &HeaderMap) -> Result<Encoding, Refused> {
    let codings: Vec<String> = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("?").split(','))
        .map(|coding| coding.trim().to_ascii_lowercase())
        .filter(|coding| !coding.is_empty())
        .collect();
    match codings.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] | ["identity"] => Ok(Encoding::Identity),
        ["gzip" | "x-gzip"] => Ok(Encoding::Gzip),
        _ => {
            let shown: String = codings.join(", ").chars().take(100).collect();
            Err(Refused::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Encoding",
                format!("{shown:?} is not supported; send gzip or no Content-Encoding"),
            ))
        }
    }
}

/// The body as sent, or gunzipped; at most `max` bytes either way.
fn decompress(encoding: Encoding, body: Bytes, max: usize) -> Result<Bytes, Refused> {
    match encoding {
        Encoding::Identity => Ok(body),
        Encoding::Gzip => gunzip(&body, max).map(Bytes::from),
    }
}

/// Inflates at most `max + 1` bytes, so a body that inflates without end
/// is refused after that much work and memory.
fn gunzip(body: &[u8], max: usize) -> Result<Vec<u8>, Refused> {
    let mut decoded = Vec::with_capacity(body.len().saturating_mul(4).min(max));
    MultiGzDecoder::new(body)
        .take(max as u64 + 1)
        .read_to_end(&mut decoded)
        .map_err(|e| Refused::new(StatusCode::BAD_REQUEST, "body", format!("not valid gzip: {e}")))?;
    if decoded.len() > max {
        let reason = format!("more than {max} bytes once decompressed; max_body_bytes is {max}");
        return Err(Refused::new(StatusCode::PAYLOAD_TOO_LARGE, "body", reason));
    }
    Ok(decoded)
}

/// Reads the body, at most `max` bytes. An oversized body is still read
/// (and dropped) up to [`DRAIN_BYTES_MAX`] past the limit before the 413 goes
/// out: closing a socket with unread data makes the kernel reset it, and
/// the client would lose the answer. Beyond that the connection is cut.
async fn read_body(mut body: Body, headers: &HeaderMap, max: usize) -> Result<Bytes, Refused> {
    let too_large = |what: String| Refused::new(StatusCode::PAYLOAD_TOO_LARGE, "body", format!("{what}; max_body_bytes is {max}"));
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared.filter(|&length| length > (max + DRAIN_BYTES_MAX) as u64) {
        return Err(too_large(format!("{length} bytes")));
    }
    let mut bytes = Vec::with_capacity(declared.map_or(0, |length| length.min(max as u64) as usize));
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Refused::new(StatusCode::BAD_REQUEST, "body", format!("could not be read: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        seen = seen.saturating_add(data.len());
        if seen <= max {
            bytes.extend_from_slice(&data);
        } else if seen > max + DRAIN_BYTES_MAX {
            break;
        }
    }
    if seen > max {
        return Err(too_large(declared.map_or_else(|| "more bytes".to_owned(), |length| format!("{length} bytes"))));
    }
    Ok(Bytes::from(bytes))
}

/// The client the request counts against: the signer, or with signatures
/// off the id it names (if a valid id), else [`ANONYMOUS_CLIENT`].
fn authenticate(ingest: &Ingest, headers: &HeaderMap, body: &[u8], now_ms: u64) -> Result<String, Refused> {
    let value = |name: &str| headers.get(name).map(HeaderValue::as_bytes);
    match &ingest.auth {
        Auth::Signed(verifier) => {
            let signed =
                SignedHeaders { client: value(CLIENT_HEADER), timestamp: value(TIMESTAMP_HEADER), signature: value(SIGNATURE_HEADER) };
            verifier.verify(signed, body, now_ms).map(str::to_owned).map_err(|e| Refused::new(StatusCode::UNAUTHORIZED, e.header, e.reason))
        }
        Auth::Off => {
            let named = value(CLIENT_HEADER).and_then(|v| std::str::from_utf8(v).ok()).filter(|id| check_key(id).is_ok());
            Ok(named.unwrap_or(ANONYMOUS_CLIENT).to_owned())
        }
    }
}

fn body_refused(error: BodyError, kind: BodyKind) -> Refused {
    match error {
        BodyError::Syntax { line, column, reason } => {
            let position = json!({ "line": line, "column": column });
            let shape = match kind {
                BodyKind::Single => "a click object",
                _ => "a JSON array of click objects",
            };
            Refused::new(StatusCode::BAD_REQUEST, "body", format!("not {shape}: {reason} at line {line} column {column}"))
                .with("position", position)
        }
        BodyError::TooManyClicks { max } => {
            Refused::new(StatusCode::PAYLOAD_TOO_LARGE, "body", format!("more than {max} clicks in one batch; max_batch_clicks is {max}"))
        }
    }
}

fn nothing_valid(endpoint: Endpoint, items: usize, rejected: Vec<ItemError>) -> Refused {
    let (field, reason) = match (endpoint, rejected.first()) {
        (Endpoint::Single, Some(first)) => (first.field.to_string(), first.reason.clone()),
        _ if items == 0 => ("body".to_owned(), "the batch holds no click".to_owned()),
        _ => ("body".to_owned(), format!("no valid click in the batch ({items} rejected)")),
    };
    Refused::new(StatusCode::BAD_REQUEST, field, reason).with("rejected", json!(rejected))
}

/// Makes the valid clicks durable (or finds them already acknowledged) and
/// returns what to acknowledge.
async fn write(ingest: &Ingest, decoded: Decoded) -> Result<(usize, Vec<ItemError>), Refused> {
    let Decoded { clicks, rejected } = decoded;
    let accepted = clicks.len();
    let _slot = ingest.inflight.try_acquire().map_err(|_| {
        let reason = format!("{} requests are already waiting for the log; retry", ingest.max_inflight_requests);
        Refused::new(StatusCode::SERVICE_UNAVAILABLE, "log", reason).retry_after(Duration::from_secs(1))
    })?;
    let fresh = match &ingest.prefilter {
        Some(prefilter) => {
            let ids: Vec<RequestId> = clicks.iter().map(|c| c.request_id).collect();
            let seen = prefilter.seen(&ids).await;
            clicks.into_iter().zip(seen).filter_map(|(click, seen)| (!seen).then_some(click)).collect()
        }
        None => clicks,
    };
    let written = fresh.len();
    let log = Arc::clone(&ingest.log);
    let (fresh, appended) = tokio::task::spawn_blocking(move || {
        let result = log.append_durable(&fresh);
        (fresh, result)
    })
    .await
    .map_err(|e| Refused::new(StatusCode::SERVICE_UNAVAILABLE, "log", format!("the log writer failed: {e}")))?;
    let positions = appended.map_err(|e| {
        ingest.stats.log_error();
        tracing::warn!("ingest: the log cannot accept clicks: {e}");
        Refused::new(StatusCode::SERVICE_UNAVAILABLE, "log", format!("the log cannot accept clicks: {e}"))
            .retry_after(Duration::from_secs(1))
    })?;
    ingest.stats.acknowledged(accepted, written);
    ingest.stats.written_at(&positions, (ingest.clock)());
    if let Some(prefilter) = &ingest.prefilter {
        let prefilter = Arc::clone(prefilter);
        let ids: Vec<RequestId> = fresh.iter().map(|c| c.request_id).collect();
        tokio::spawn(async move { prefilter.remember(&ids).await });
    }
    Ok((accepted, rejected))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::GzEncoder;
    use flate2::Compression;

    use super::*;

    fn encoded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::CONTENT_ENCODING, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn only_gzip_or_no_content_encoding_is_taken() {
        for (values, expected) in
            [(&[][..], Encoding::Identity), (&["identity"], Encoding::Identity), (&["GZip"], Encoding::Gzip), (&["x-gzip"], Encoding::Gzip)]
        {
            assert_eq!(content_encoding(&encoded(values)).ok(), Some(expected), "{values:?}");
        }
        for values in [&["br"][..], &["deflate"], &["zstd"], &["gzip, gzip"], &["gzip", "br"]] {
            let refused = content_encoding(&encoded(values)).err().unwrap();
            assert_eq!((refused.status, refused.field.as_str()), (StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Encoding"), "{values:?}");
            assert!(refused.reason.contains("is not supported"), "{}", refused.reason);
        }
    }

    #[test]
    fn a_gzip_body_is_bounded_by_max_body_bytes_once_decompressed() {
        let body = b"[{\"ad_id\":\"ad-1\"}]".repeat(10);
        assert_eq!(gunzip(&gzip(&body), body.len()).ok(), Some(body.clone()));
        // Concatenated members are one body.
        let twice = [gzip(&body), gzip(&body)].concat();
        assert_eq!(gunzip(&twice, 2 * body.len()).ok().map(|b| b.len()), Some(2 * body.len()));
        let bomb = gzip(&vec![b' '; 10 << 20]);
        assert!(bomb.len() < 64 << 10, "{} bytes on the wire", bomb.len());
        let refused = gunzip(&bomb, 1 << 20).err().unwrap();
        assert_eq!((refused.status, refused.field.as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "body"));
        assert!(refused.reason.contains("once decompressed; max_body_bytes is 1048576"), "{}", refused.reason);
        let refused = gunzip(b"not gzip at all", 1 << 20).err().unwrap();
        assert_eq!((refused.status, refused.field.as_str()), (StatusCode::BAD_REQUEST, "body"));
        assert!(refused.reason.starts_with("not valid gzip"), "{}", refused.reason);
    }
}
