//! Who is asking: every `/v1/*` read carries `Authorization: Bearer <key>`
//! (see `tally::keys`), and the key's scope decides what the answer holds.
//!
//! | asked with                                   | answer |
//! |----------------------------------------------|--------|
//! | no key, a key that does not verify           | 401    |
//! | a revoked or expired key                     | 401    |
//! | too many failed keys from this address       | 429    |
//! | the key file unreadable                      | 503    |
//! | an advertiser key, another's ad, campaign or advertiser | 404 |
//! | an advertiser key, `/v1/stats`               | 403    |
//!
//! A 401 for a bearer key that does not verify costs its address a token
//! of a failure bucket ([`FAILURES_PER_S`], burst [`FAILURES_BURST`]); once
//! it is empty, that address is answered 429 before any key is looked at,
//! so guessing keys is slow, and a client from another address is not
//! held up. A request without a key costs nothing: it guesses nothing. Another
//! advertiser's ad answers 404 like an ad that does not exist, so a key
//! never learns which ids others have.
//!
//! With `--no-auth` every request reads as an operator.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::QueryState;
use crate::http::PeerAddr;
use crate::keys::{Denied, KeyRing, Scope};

/// Failed keys an address may send per second, on average.
pub const FAILURES_PER_S: f64 = 1.0;
/// Failed keys an address may send at once.
pub const FAILURES_BURST: f64 = 20.0;
/// Most addresses whose failures are remembered at once.
pub const MAX_FAILURE_BUCKETS: usize = 10_000;

/// How the query API authenticates.
pub enum Access {
    /// Every request reads as an operator (`--no-auth`).
    Open,
    /// A key of this ring is required.
    Keys(KeyRing),
}

/// Who a request reads as, put in its extensions by [`authenticate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Viewer(pub Scope);

impl Viewer {
    /// The advertiser this viewer is limited to; `None` for an operator.
    pub fn advertiser(&self) -> Option<&str> {
        match &self.0 {
            Scope::Operator => None,
            Scope::Advertiser(id) => Some(id),
        }
    }
}

/// The failure buckets of [`Access::Keys`], by address.
#[derive(Debug, Default)]
pub struct Failures {
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl Failures {
    /// How long `address` must wait before its next key is looked at;
    /// `None` when it may ask now.
    fn wait(&self, address: IpAddr, now: Instant) -> Option<Duration> {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let tokens = buckets.get(&address).map(|bucket| refilled(*bucket, now))?;
        (tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - tokens) / FAILURES_PER_S))
    }

    /// `address` sent a key that failed.
    fn failed(&self, address: IpAddr, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(&address) && buckets.len() >= MAX_FAILURE_BUCKETS {
            // Full buckets are what a new address starts with: forget them.
            buckets.retain(|_, bucket| refilled(*bucket, now) < FAILURES_BURST);
        }
        if buckets.len() >= MAX_FAILURE_BUCKETS && !buckets.contains_key(&address) {
            return;
        }
        let tokens = buckets.get(&address).map_or(FAILURES_BURST, |bucket| refilled(*bucket, now));
        buckets.insert(address, ((tokens - 1.0).max(0.0), now));
    }
}

fn refilled((tokens, at): (f64, Instant), now: Instant) -> f64 {
    (tokens + now.saturating_duration_since(at).as_secs_f64() * FAILURES_PER_S).min(FAILURES_BURST)
}

/// Middleware of the `/v1/*` reads: a [`Viewer`] for the request, or the
/// refusal of the module docs.
pub async fn authenticate(State(state): State<Arc<QueryState>>, mut request: Request, next: Next) -> Response {
    let keys = match &state.access {
        Access::Open => {
            request.extensions_mut().insert(Viewer(Scope::Operator));
            return next.run(request).await;
        }
        Access::Keys(keys) => keys,
    };
    let address = request.extensions().get::<PeerAddr>().map(|peer| peer.0.ip());
    let now = Instant::now();
    if let Some(wait) = address.and_then(|address| state.failures.wait(address, now)) {
        let reason = "too many requests with a key that does not verify from this address".to_owned();
        let mut response = refusal(StatusCode::TOO_MANY_REQUESTS, reason);
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return response;
    }
    let presented = request.headers().get(header::AUTHORIZATION).map(|value| bearer(value.as_bytes()));
    let checked = match presented {
        None => Err(Denied::Invalid("missing: send Authorization: Bearer <key> (tally keys add creates one)")),
        Some(None) => Err(Denied::Invalid("not of the form Bearer <key>")),
        Some(Some(key)) => keys.check(key, (state.clock)()),
    };
    match checked {
        Ok(scope) => {
            request.extensions_mut().insert(Viewer(scope));
            next.run(request).await
        }
        Err(Denied::Unavailable(reason)) => refusal(StatusCode::SERVICE_UNAVAILABLE, reason),
        Err(denied) => {
            // Only a key that was tried costs: a request without one (or
            // with another scheme) guesses nothing.
            if let (Some(address), Some(Some(_))) = (address, presented) {
                state.failures.failed(address, now);
            }
            let mut response = refusal(StatusCode::UNAUTHORIZED, denied.to_string());
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"tally\""));
            response
        }
    }
}

/// `GET /v1/key`: what the request's key reads, for the dashboard to
/// choose its view.
pub async fn key(State(state): State<Arc<QueryState>>, viewer: axum::Extension<Viewer>) -> Response {
    let keys_required = matches!(state.access, Access::Keys(_));
    Json(json!({ "scope": viewer.0 .0.to_string(), "advertiser": viewer.0.advertiser(), "keys_required": keys_required })).into_response()
}

/// The key of `Bearer <key>` (the scheme in any case); `None` for any
/// other form.
fn bearer(value: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, key) = text.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim()).filter(|key| !key.is_empty())
}

fn refusal(status: StatusCode, reason: String) -> Response {
    (status, Json(json!({ "field": "Authorization", "reason": reason }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_limited_per_address_and_refill() {
        let failures = Failures::default();
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..FAILURES_BURST as usize {
            assert_eq!(failures.wait(a, t0), None);
            failures.failed(a, t0);
        }
        assert_eq!(failures.wait(a, t0), Some(Duration::from_secs(1)));
        assert_eq!(failures.wait(b, t0), None, "another address is not held up");
        assert_eq!(failures.wait(a, t0 + Duration::from_secs(1)), None);
    }

    #[test]
    fn only_a_bearer_key_is_taken() {
        assert_eq!(bearer(b"Bearer tally_1_2"), Some("tally_1_2"));
        assert_eq!(bearer(b"bearer  tally_1_2 "), Some("tally_1_2"));
        assert_eq!(bearer(b"Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"tally_1_2"), None);
        assert_eq!(bearer(&[0xff, 0x20, 0x41]), None);
    }
}
