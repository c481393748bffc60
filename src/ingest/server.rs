//! The HTTP API: `POST /v1/clicks`, `POST /v1/clicks/batch`,
//! `GET /openapi.json`, and for `tally ingest` alone `GET /healthz` and
//! `GET /readyz` ([`health_router`]).
//!
//! A request goes through the checks in this order, and the first that
//! fails decides the answer (each error body is `{"field","reason"}`, plus
//! the rejected items or the position where they apply). Everything above
//! the line is judged on the request line and headers alone, before one
//! byte of the body is read:
//!
//! | check                                              | failure |
//! |----------------------------------------------------|---------|
//! | the address's failed signatures not used up        | 429     |
//! | the address's rate of requests                     | 429     |
//! | content type fits the endpoint                     | 415     |
//! | content encoding none or `gzip`                    | 415     |
//! | `Content-Length` (if sent) within `max_body_bytes` | 413     |
//! | signature headers present, timestamp fresh         | 401     |
//! | not signed before an unclean restart               | 401     |
//! | the client's rate of requests                      | 429     |
//! | room among `max_body_bytes_in_flight`              | 503     |
//! | *body read:* within `max_body_bytes`               | 413     |
//! | signature verifies (unless switched off)           | 401     |
//! | signature not accepted before (replay guard)       | 409     |
//! | gzip body decompresses                             | 400     |
//! | decompressed body within `max_body_bytes`          | 413     |
//! | body readable as a whole                           | 400     |
//! | at most `max_batch_clicks`                         | 413     |
//! | at least one valid click                           | 400     |
//! | client's rate of clicks                            | 429     |
//! | a slot among `max_inflight_requests`               | 503     |
//! | log append durable                                 | 503     |
//!
//! and only then `202 {"accepted":n,"rejected":[…]}`. Why this order:
//!
//! - Nothing unauthenticated takes memory beyond the headers until its
//!   bytes are counted in `max_body_bytes_in_flight`, so connections that
//!   announce large bodies cannot hold more than that between them.
//! - Every request costs a token of its address's and its client's request
//!   buckets whatever its answer, and a `401` one of the address's failure
//!   bucket: an address that keeps failing is refused before its body is
//!   read or a MAC computed. The address is the connection's peer
//!   ([`PeerAddr`]); without one (a router driven in-process) the address
//!   buckets are skipped. With signatures off the client is the
//!   `X-Tally-Client` the caller names, or [`ANONYMOUS_CLIENT`].
//! - An unknown client is not refused from its headers: it is answered
//!   after its body, as a wrong signature is (see [`super::auth`]).
//! - The signature covers the method, the path and the body as sent
//!   (compressed, if it is): it is checked before anything is
//!   decompressed, so an unsigned body costs no inflating. The replay
//!   guard ([`super::replay`]) then claims it, and gives it back if the
//!   request is refused later, so a failed request can be retried as is.
//! - The decompressed size is bounded by the same `max_body_bytes` as the
//!   bytes on the wire, so a small body that inflates without end is
//!   refused before it takes memory.
//!
//! A `400` or `202` lists at most [`MAX_REJECTED_LISTED`] rejected items,
//! with `rejected_total` and `rejected_truncated`. The raw user id lives
//! only in the request buffer: decoding replaces it by its keyed hash, and
//! nothing here logs a request or a client address.

use std::io::Read;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, request, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use flate2::read::MultiGzDecoder;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::auth::{Claim, SignedHeaders, CLIENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use super::config::{Auth, IngestConfig};
use super::decode::{decode_body, BodyError, BodyKind, DecodeLimits, Decoded, ItemError};
use super::limit::{AddressLimited, AddressLimiter, RateLimiter};
use super::prefilter::PreFilter;
use super::replay::{Refusal, ReplayGuard};
use crate::event::salt::UserSalt;
use crate::event::validate::check_key;
use crate::event::{Click, RequestId};
use crate::http::PeerAddr;
use crate::log::Log;
use crate::telemetry::IngestStats;

/// The OpenAPI document of this API, served at `GET /openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// The client id of unsigned requests that name none (or an invalid one).
pub const ANONYMOUS_CLIENT: &str = "anonymous";

/// Most bytes of an oversized body read and dropped before answering 413.
pub const DRAIN_BYTES_MAX: usize = 1 << 20;

/// Longest a request refused from its headers waits for its body's bytes
/// to arrive and be dropped before the answer: closing a connection with
/// unread bytes resets it, and the client may lose the answer.
pub const DRAIN_WAIT: Duration = Duration::from_millis(200);

/// Most rejected items listed in a `400` or `202` answer.
pub const MAX_REJECTED_LISTED: usize = 100;

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
    max_body_bytes_in_flight: usize,
    auth: Auth,
    limiter: RateLimiter,
    addresses: AddressLimiter,
    prefilter: Option<Arc<PreFilter>>,
    replay: ReplayGuard,
    inflight: Semaphore,
    body_bytes: Semaphore,
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
        let prefilter = prefilter.map(Arc::new);
        let window_ms = match &config.auth {
            Auth::Signed(verifier) => verifier.replay_window_ms(),
            Auth::Off => 0,
        };
        Ingest {
            log,
            salt,
            limits: config.limits,
            max_body_bytes: config.max_body_bytes,
            max_inflight_requests: config.max_inflight_requests,
            max_body_bytes_in_flight: config.guards.max_body_bytes_in_flight,
            auth: config.auth.clone(),
            limiter: config.limiter(),
            addresses: AddressLimiter::new(config.guards.per_address),
            replay: ReplayGuard::new(window_ms, config.guards.replay_guard_entries, prefilter.clone()),
            prefilter,
            inflight: Semaphore::new(config.max_inflight_requests),
            body_bytes: Semaphore::new(config.guards.max_body_bytes_in_flight),
            clock,
            stats: Arc::new(IngestStats::default()),
        }
    }

    pub fn prefilter(&self) -> Option<&PreFilter> {
        self.prefilter.as_deref()
    }

    /// The replay guard, to restore at start and persist at a clean stop.
    pub fn replay_guard(&self) -> &ReplayGuard {
        &self.replay
    }

    /// The wall clock this service reads, unix ms.
    pub fn now_ms(&self) -> u64 {
        (self.clock)()
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

async fn post_single(State(ingest): State<Arc<Ingest>>, request: Request) -> Response {
    handle(&ingest, Endpoint::Single, request).await.unwrap_or_else(refusal)
}

async fn post_batch(State(ingest): State<Arc<Ingest>>, request: Request) -> Response {
    handle(&ingest, Endpoint::Batch, request).await.unwrap_or_else(refusal)
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
    /// The body was not read: the connection closes after the answer.
    close: bool,
}

impl Refused {
    fn new(status: StatusCode, field: impl Into<String>, reason: impl Into<String>) -> Refused {
        Refused { status, field: field.into(), reason: reason.into(), extra: Vec::new(), retry_after: None, close: false }
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
        if self.close {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

async fn handle(ingest: &Ingest, endpoint: Endpoint, request: Request) -> Result<Response, Refused> {
    ingest.stats.request();
    let (parts, body) = request.into_parts();
    let peer = parts.extensions.get::<PeerAddr>().map(|peer| peer.0.ip());
    let result = match check_headers(ingest, endpoint, &parts, peer) {
        Ok(checked) => take_body(ingest, &parts, checked, body).await,
        Err(refused) => {
            drain(body).await;
            Err(Refused { close: true, ..refused })
        }
    };
    if let (Err(refused), Some(peer)) = (&result, peer) {
        if refused.status == StatusCode::UNAUTHORIZED {
            ingest.addresses.failed(peer, Instant::now());
        }
    }
    result
}

/// What the headers said of a request that may send its body.
struct Checked<'i> {
    endpoint: Endpoint,
    kind: BodyKind,
    encoding: Encoding,
    now_ms: u64,
    /// The signature's claim; `None` with signatures off.
    claim: Option<Claim<'i>>,
    /// With signatures off, the client the request counts against.
    unsigned_client: String,
}

/// Every check made on the request line and headers alone (see the table
/// in the module docs), in order.
fn check_headers<'i>(ingest: &'i Ingest, endpoint: Endpoint, parts: &request::Parts, peer: Option<IpAddr>) -> Result<Checked<'i>, Refused> {
    if let Some(peer) = peer {
        ingest.addresses.admit(peer, Instant::now()).map_err(|limited| address_limited(ingest, peer, limited))?;
    }
    let headers = &parts.headers;
    let kind = body_kind(endpoint, headers)?;
    let encoding = content_encoding(headers)?;
    if let Some(length) = content_length(headers).filter(|&length| length > ingest.max_body_bytes as u64) {
        return Err(too_large(format!("{length} bytes"), ingest.max_body_bytes));
    }
    let now_ms = (ingest.clock)();
    let value = |name: &str| headers.get(name).map(HeaderValue::as_bytes);
    let (claim, unsigned_client) = match &ingest.auth {
        Auth::Signed(verifier) => {
            let signed =
                SignedHeaders { client: value(CLIENT_HEADER), timestamp: value(TIMESTAMP_HEADER), signature: value(SIGNATURE_HEADER) };
            let claim = verifier.claim(signed, now_ms).map_err(|e| Refused::new(StatusCode::UNAUTHORIZED, e.header, e.reason))?;
            if let Some(start) = ingest.replay.signed_before_unclean_start(claim.timestamp_ms) {
                let reason = format!(
                    "signed at {}, before this server started ({start}) after an unclean stop: it cannot tell whether it \
                     accepted this request; sign it again",
                    claim.timestamp_ms
                );
                return Err(Refused::new(StatusCode::UNAUTHORIZED, TIMESTAMP_HEADER, reason));
            }
            (Some(claim), String::new())
        }
        Auth::Off => {
            let named = value(CLIENT_HEADER).and_then(|v| std::str::from_utf8(v).ok()).filter(|id| check_key(id).is_ok());
            (None, named.unwrap_or(ANONYMOUS_CLIENT).to_owned())
        }
    };
    // An unknown client has no bucket of its own: its address's bound it.
    let client = claim.as_ref().map_or(Some(unsigned_client.as_str()), Claim::client);
    if let Some(client) = client {
        ingest.limiter.take_request(client, Instant::now()).map_err(|retry_after| {
            let rate = ingest.limiter.request_rate();
            let reason = format!(
                "client {client:?} is over its rate limit of {} requests/s (burst {}); retry after {:.1} s",
                rate.requests_per_s,
                rate.burst_requests,
                retry_after.as_secs_f64()
            );
            Refused::new(StatusCode::TOO_MANY_REQUESTS, CLIENT_HEADER, reason).retry_after(retry_after)
        })?;
    }
    Ok(Checked { endpoint, kind, encoding, now_ms, claim, unsigned_client })
}

fn address_limited(ingest: &Ingest, peer: IpAddr, limited: AddressLimited) -> Refused {
    let rates = ingest.addresses.rates();
    let (reason, after) = match limited {
        AddressLimited::Failures(after) => (
            format!(
                "{peer} sent more requests with a signature that does not verify than allowed ({} per s, burst {}); retry after {:.1} s",
                rates.failures.requests_per_s,
                rates.failures.burst_requests,
                after.as_secs_f64()
            ),
            after,
        ),
        AddressLimited::Requests(after) => (
            format!(
                "{peer} is over its rate limit of {} requests/s (burst {}); retry after {:.1} s",
                rates.requests.requests_per_s,
                rates.requests.burst_requests,
                after.as_secs_f64()
            ),
            after,
        ),
    };
    Refused::new(StatusCode::TOO_MANY_REQUESTS, "address", reason).retry_after(after)
}

/// Reads the body within `max_body_bytes_in_flight`, verifies its
/// signature, claims it from the replay guard, and handles the rest; the
/// claim is given back if the request is refused after it.
async fn take_body(ingest: &Ingest, parts: &request::Parts, checked: Checked<'_>, body: Body) -> Result<Response, Refused> {
    let reserved = content_length(&parts.headers).map_or(ingest.max_body_bytes, |length| length as usize);
    let Ok(permit) = ingest.body_bytes.try_acquire_many(reserved as u32) else {
        drain(body).await;
        let reason =
            format!("{} bytes of request bodies are being read (max_body_bytes_in_flight); retry", ingest.max_body_bytes_in_flight);
        return Err(Refused {
            close: true,
            ..Refused::new(StatusCode::SERVICE_UNAVAILABLE, "body", reason).retry_after(Duration::from_secs(1))
        });
    };
    let body = read_body(body, &parts.headers, ingest.max_body_bytes).await?;
    let client = match (&ingest.auth, &checked.claim) {
        (Auth::Signed(verifier), Some(claim)) => verifier
            .verify(claim, parts.method.as_str(), parts.uri.path(), &body)
            .map_err(|e| Refused::new(StatusCode::UNAUTHORIZED, e.header, e.reason))?
            .to_owned(),
        _ => checked.unsigned_client.clone(),
    };
    let Some(claim) = &checked.claim else { return accept(ingest, &checked, &client, body, permit).await };
    ingest.replay.claim(claim.signature, claim.timestamp_ms, checked.now_ms).await.map_err(replay_refused)?;
    let answer = accept(ingest, &checked, &client, body, permit).await;
    if answer.is_err() {
        ingest.replay.release(claim.signature).await;
    }
    answer
}

fn replay_refused(refusal: Refusal) -> Refused {
    let retry = Duration::from_secs(1);
    match refusal {
        Refusal::Replayed { signed_ms } => Refused::new(
            StatusCode::CONFLICT,
            SIGNATURE_HEADER,
            format!(
                "this signed request (signed at {signed_ms}) was already accepted; sign a new request to send it again \
                 (its request ids keep its clicks from being counted twice)"
            ),
        ),
        Refusal::Full { entries } => Refused::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "replay_guard_entries",
            format!("{entries} signed requests of the replay window are remembered, the most allowed; retry"),
        )
        .retry_after(retry),
        Refusal::Unavailable(reason) => {
            Refused::new(StatusCode::SERVICE_UNAVAILABLE, "redis", format!("the replay guard cannot check this request: {reason}; retry"))
                .retry_after(retry)
        }
    }
}

/// Decodes an authenticated body and writes its valid clicks.
async fn accept(
    ingest: &Ingest,
    checked: &Checked<'_>,
    client: &str,
    body: Bytes,
    permit: tokio::sync::SemaphorePermit<'_>,
) -> Result<Response, Refused> {
    let (kind, now_ms) = (checked.kind, checked.now_ms);
    let body = decompress(checked.encoding, body, ingest.max_body_bytes)?;
    let decoded = decode_body(kind, &body, &ingest.limits, now_ms, &ingest.salt).map_err(|e| body_refused(e, kind))?;
    drop(body);
    drop(permit);
    let items = decoded.clicks.len() + decoded.rejected.len();
    ingest.stats.decoded(decoded.clicks.len(), decoded.rejected.iter().map(|r| &r.field));
    if decoded.clicks.is_empty() {
        return Err(nothing_valid(checked.endpoint, items, decoded.rejected));
    }
    ingest.limiter.take(client, items, Instant::now()).map_err(|limited| {
        let reason = format!(
            "client {client:?} is over its rate limit of {} clicks/s (burst {}); retry after {:.1} s",
            limited.rate.clicks_per_s,
            limited.rate.burst_clicks,
            limited.retry_after.as_secs_f64()
        );
        Refused::new(StatusCode::TOO_MANY_REQUESTS, CLIENT_HEADER, reason).retry_after(limited.retry_after)
    })?;
    let (accepted, rejected) = write(ingest, decoded).await?;
    tracing::trace!(accepted, rejected = rejected.len(), "clicks acknowledged");
    let mut answer = json!({ "accepted": accepted });
    for (key, value) in listed(&rejected) {
        answer[key] = value;
    }
    Ok((StatusCode::ACCEPTED, axum::Json(answer)).into_response())
}

/// The keys of an answer that list `rejected`: at most
/// [`MAX_REJECTED_LISTED`] of them, their number, and whether some were
/// left out.
fn listed(rejected: &[ItemError]) -> [(&'static str, Value); 3] {
    [
        ("rejected", json!(&rejected[..rejected.len().min(MAX_REJECTED_LISTED)])),
        ("rejected_total", json!(rejected.len())),
        ("rejected_truncated", json!(rejected.len() > MAX_REJECTED_LISTED)),
    ]
}

/// The declared `Content-Length`, if one parses.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok())
}

/// Reads and drops what of a refused request's body arrives within
/// [`DRAIN_WAIT`], at most [`DRAIN_BYTES_MAX`] bytes, holding none of it.
async fn drain(mut body: Body) {
    let dropped = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen = seen.saturating_add(frame.data_ref().map_or(0, Bytes::len));
            if seen > DRAIN_BYTES_MAX {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_WAIT, dropped).await;
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

/// 413 for a body of `what`.
fn too_large(what: String, max: usize) -> Refused {
    Refused::new(StatusCode::PAYLOAD_TOO_LARGE, "body", format!("{what}; max_body_bytes is {max}"))
}

/// The body, at most `max` bytes. One longer (only a body without
/// `Content-Length` can be, a longer one is refused from its headers) is
/// read on up to `max + DRAIN_BYTES_MAX` bytes and dropped, so the client
/// gets the 413 rather than a reset.
async fn read_body(mut body: Body, headers: &HeaderMap, max: usize) -> Result<Bytes, Refused> {
    let declared = content_length(headers);
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
        return Err(too_large(declared.map_or_else(|| "more bytes".to_owned(), |length| format!("{length} bytes")), max));
    }
    Ok(Bytes::from(bytes))
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
    listed(&rejected)
        .into_iter()
        .fold(Refused::new(StatusCode::BAD_REQUEST, field, reason), |refused, (key, value)| refused.with(key, value))
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
    use std::net::SocketAddr;

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

    /// A log that takes everything and keeps nothing.
    struct Sink;

    impl ClickLog for Sink {
        fn append_durable(&self, clicks: &[Click]) -> Result<Vec<(u32, u64)>, String> {
            Ok(clicks.iter().map(|_| (0, 0)).collect())
        }
    }

    const NOW: u64 = 1_764_384_000_000;
    const SECRET: &str = "0123456789abcdef0123";

    fn signed_router() -> Router {
        let mut config = IngestConfig::defaults();
        let secrets = std::collections::HashMap::from([("web".to_owned(), super::super::auth::Secret::new(SECRET))]);
        config.auth = Auth::Signed(super::super::auth::Verifier::new(secrets, 300_000));
        router(Arc::new(Ingest::new(&config, Arc::new(Sink), UserSalt::from_bytes([7; 16]), None, Box::new(|| NOW))))
    }

    /// A signed click from `peer`, signed with `secret`.
    fn request_from(peer: &str, secret: &str, n: u64) -> Request {
        let body = format!(r#"{{"ad_id":"ad-1","timestamp":{NOW},"user_id":"u","request_id":"00000000-0000-0000-0000-{n:012x}"}}"#);
        let ts = NOW.to_string();
        let signature = super::super::auth::sign(&super::super::auth::Secret::new(secret), "POST", "/v1/clicks", &ts, body.as_bytes());
        let mut request = Request::builder()
            .method("POST")
            .uri("/v1/clicks")
            .header(header::CONTENT_TYPE, JSON)
            .header(CLIENT_HEADER, "web")
            .header(TIMESTAMP_HEADER, ts)
            .header(SIGNATURE_HEADER, signature)
            .body(Body::from(body))
            .unwrap();
        request.extensions_mut().insert(PeerAddr(SocketAddr::new(peer.parse().unwrap(), 40_000)));
        request
    }

    async fn status(router: &Router, request: Request) -> (StatusCode, Value) {
        use tower::ServiceExt;
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn an_address_that_keeps_failing_is_refused_before_its_body_and_others_are_served() {
        let router = signed_router();
        let mut statuses = Vec::new();
        for n in 0..50 {
            statuses.push(status(&router, request_from("10.0.0.1", "not-the-secret-of-web", n)).await);
        }
        // The failure bucket's burst (20) of 401s, then 429 naming the address.
        let unauthorized = statuses.iter().take_while(|(s, _)| *s == StatusCode::UNAUTHORIZED).count();
        assert_eq!(unauthorized, 20);
        assert!(statuses[20..].iter().all(|(s, body)| *s == StatusCode::TOO_MANY_REQUESTS && body["field"] == "address"), "{statuses:?}");
        // Even a good signature from that address waits its turn; another
        // address is served.
        assert_eq!(status(&router, request_from("10.0.0.1", SECRET, 100)).await.0, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(status(&router, request_from("10.0.0.2", SECRET, 101)).await.0, StatusCode::ACCEPTED);
        // A replay of it, from anywhere, is a conflict.
        let (replayed, body) = status(&router, request_from("10.0.0.3", SECRET, 101)).await;
        assert_eq!((replayed, body["field"].as_str()), (StatusCode::CONFLICT, Some(SIGNATURE_HEADER)));
    }
}
