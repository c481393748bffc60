//! Request signatures: HMAC-SHA256 with a per-client secret.
//!
//! A client sends three headers:
//!
//! ```text
//! X-Tally-Client:    web-sdk                      (its id in the config)
//! X-Tally-Timestamp: 1764384000000                (its clock, unix ms)
//! X-Tally-Signature: 5d41…(64 hex digits)         HMAC-SHA256(secret, METHOD + "\n" + PATH + "\n" + timestamp + "\n" + body)
//! ```
//!
//! `PATH` is the request's path without its query string (`/v1/clicks`),
//! so a request signed for one endpoint does not verify on another. The
//! server recomputes the MAC over the exact bytes it received (a gzip body
//! as sent, compressed: the MAC is checked before anything is
//! decompressed) and compares in constant time ([`Mac::verify_slice`]).
//!
//! Checking is split in two so that a request is judged on its headers
//! before its body is read ([`Verifier::claim`]: headers present, timestamp
//! within the replay window of the server's clock, signature 64 hex
//! digits), and only then on the MAC over the body ([`Verifier::verify`]).
//! An unknown client and a wrong signature get the same answer after the
//! same work (an unknown client's MAC is computed with a stand-in secret),
//! so a refusal does not tell which client ids exist.
//!
//! A fresh timestamp alone does not stop a replay within the window: the
//! replay guard ([`super::replay`]) accepts each signature once.

use std::collections::HashMap;
use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::config::format_duration;

pub const CLIENT_HEADER: &str = "x-tally-client";
pub const TIMESTAMP_HEADER: &str = "x-tally-timestamp";
pub const SIGNATURE_HEADER: &str = "x-tally-signature";

/// Shortest secret accepted in the config, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

type HmacSha256 = Hmac<Sha256>;

/// A client's signing key. `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The signature of a request (`method`, `path` without the query
/// string, `timestamp` as the header's text, `body` as sent), as the
/// lowercase hex the signature header carries.
pub fn sign(secret: &Secret, method: &str, path: &str, timestamp: &str, body: &[u8]) -> String {
    let mac = mac(secret, method.as_bytes(), path.as_bytes(), timestamp.as_bytes(), body).finalize().into_bytes();
    crate::hex::encode(&mac)
}

fn mac(secret: &Secret, method: &[u8], path: &[u8], timestamp: &[u8], body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&secret.0).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    for part in [method, path, timestamp] {
        mac.update(part);
        mac.update(b"\n");
    }
    mac.update(body);
    mac
}

/// The reason of every signature that does not verify, whether the client
/// is unknown or the MAC wrong: the answer does not tell which.
pub const NOT_VERIFIED: &str = "signature does not verify for this client, method, path, timestamp and body";

/// Why a request's signature was refused; `header` is the header at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct AuthError {
    pub header: &'static str,
    pub reason: String,
}

impl AuthError {
    fn new(header: &'static str, reason: impl Into<String>) -> AuthError {
        AuthError { header, reason: reason.into() }
    }
}

/// The three signature headers of a request, as received.
#[derive(Clone, Copy, Debug, Default)]
pub struct SignedHeaders<'a> {
    pub client: Option<&'a [u8]>,
    pub timestamp: Option<&'a [u8]>,
    pub signature: Option<&'a [u8]>,
}

/// What a request's headers claim: who signed it, when, and its MAC.
/// Judged on the headers alone; [`Verifier::verify`] checks it against
/// the body.
#[derive(Debug)]
pub struct Claim<'v> {
    /// The configured client named, `None` for an unknown one.
    client: Option<&'v str>,
    secret: &'v Secret,
    timestamp: Vec<u8>,
    /// The signed time, unix ms.
    pub timestamp_ms: u64,
    /// The MAC the request carries.
    pub signature: [u8; 32],
}

impl Claim<'_> {
    /// The client named, if configured (for its request bucket).
    pub fn client(&self) -> Option<&str> {
        self.client
    }
}

/// Checks signatures against the configured clients.
#[derive(Clone, Debug)]
pub struct Verifier {
    secrets: HashMap<String, Secret>,
    replay_window_ms: u64,
    /// The secret an unknown client's MAC is computed with, so that it
    /// costs what a known client's does.
    stand_in: Secret,
}

impl Verifier {
    pub fn new(secrets: HashMap<String, Secret>, replay_window_ms: u64) -> Verifier {
        Verifier { secrets, replay_window_ms, stand_in: Secret::new([0u8; 32]) }
    }

    /// Whether no client can sign.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// How far a signed timestamp may be from the server's clock.
    pub fn replay_window_ms(&self) -> u64 {
        self.replay_window_ms
    }

    /// The request's claim from its headers alone, or why it is refused.
    pub fn claim<'v>(&'v self, headers: SignedHeaders<'_>, now_ms: u64) -> Result<Claim<'v>, AuthError> {
        let client = required(headers.client, CLIENT_HEADER)?;
        let timestamp = required(headers.timestamp, TIMESTAMP_HEADER)?;
        let signature = required(headers.signature, SIGNATURE_HEADER)?;
        let timestamp_ms = self.check_fresh(timestamp, now_ms)?;
        let signature =
            crate::hex::decode_32(signature).ok_or_else(|| AuthError::new(SIGNATURE_HEADER, "not 64 hex digits (HMAC-SHA256)"))?;
        let known = std::str::from_utf8(client).ok().and_then(|id| self.secrets.get_key_value(id));
        let (client, secret) = match known {
            Some((id, secret)) => (Some(id.as_str()), secret),
            None => (None, &self.stand_in),
        };
        Ok(Claim { client, secret, timestamp: timestamp.to_vec(), timestamp_ms, signature })
    }

    /// The id of the client whose signature over `method`, `path` and
    /// `body` the claim carries, or [`NOT_VERIFIED`].
    pub fn verify<'v>(&self, claim: &Claim<'v>, method: &str, path: &str, body: &[u8]) -> Result<&'v str, AuthError> {
        let verified = mac(claim.secret, method.as_bytes(), path.as_bytes(), &claim.timestamp, body).verify_slice(&claim.signature);
        match (verified, claim.client) {
            (Ok(()), Some(client)) => Ok(client),
            _ => Err(AuthError::new(SIGNATURE_HEADER, NOT_VERIFIED)),
        }
    }

    fn check_fresh(&self, timestamp: &[u8], now_ms: u64) -> Result<u64, AuthError> {
        let sent: u64 = std::str::from_utf8(timestamp)
            .ok()
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| AuthError::new(TIMESTAMP_HEADER, "not unix milliseconds"))?;
        if sent.abs_diff(now_ms) > self.replay_window_ms {
            let reason = format!("{sent} is more than {} from the server's clock ({now_ms})", format_duration(self.replay_window_ms));
            return Err(AuthError::new(TIMESTAMP_HEADER, reason));
        }
        Ok(sent)
    }
}

fn required<'a>(value: Option<&'a [u8]>, header: &'static str) -> Result<&'a [u8], AuthError> {
    value.ok_or_else(|| AuthError::new(header, "missing"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;
    const PATH: &str = "/v1/clicks";

    fn verifier() -> Verifier {
        Verifier::new(HashMap::from([("web".to_owned(), Secret::new("0123456789abcdef0123"))]), 300_000)
    }

    fn headers<'a>(client: &'a str, ts: &'a str, sig: &'a str) -> SignedHeaders<'a> {
        SignedHeaders { client: Some(client.as_bytes()), timestamp: Some(ts.as_bytes()), signature: Some(sig.as_bytes()) }
    }

    fn check(v: &Verifier, h: SignedHeaders<'_>, path: &str, body: &[u8], now: u64) -> Result<String, AuthError> {
        let claim = v.claim(h, now)?;
        v.verify(&claim, "POST", path, body).map(str::to_owned)
    }

    #[test]
    fn sign_matches_an_independent_hmac_sha256() {
        // python3: hmac.new(b"0123456789abcdef0123", b'POST\n/v1/clicks\n1700000000000\n{"a":1}', hashlib.sha256).hexdigest()
        let expected = "55ef4b35f7607f94e1cce411b19e4a930d026ba952f8357146ccb3f74d14dc9f";
        assert_eq!(sign(&Secret::new("0123456789abcdef0123"), "POST", PATH, "1700000000000", br#"{"a":1}"#), expected);
    }

    #[test]
    fn a_correct_signature_names_the_client() {
        let ts = NOW.to_string();
        let sig = sign(&Secret::new("0123456789abcdef0123"), "POST", PATH, &ts, b"{}");
        assert_eq!(check(&verifier(), headers("web", &ts, &sig), PATH, b"{}", NOW + 1000), Ok("web".to_owned()));
        assert_eq!(check(&verifier(), headers("web", &ts, &sig.to_uppercase()), PATH, b"{}", NOW), Ok("web".to_owned()));
        let v = verifier();
        let claim = v.claim(headers("web", &ts, &sig), NOW).unwrap();
        assert_eq!((claim.client(), claim.timestamp_ms), (Some("web"), NOW));
    }

    #[test]
    fn each_failure_names_its_header() {
        let ts = NOW.to_string();
        let secret = Secret::new("0123456789abcdef0123");
        let sig = sign(&secret, "POST", PATH, &ts, b"{}");
        let v = verifier();
        let fail = |h: SignedHeaders<'_>, path: &str, body: &[u8], now: u64| check(&v, h, path, body, now).unwrap_err();
        assert_eq!(fail(SignedHeaders::default(), PATH, b"{}", NOW).header, CLIENT_HEADER);
        assert_eq!(fail(SignedHeaders { signature: None, ..headers("web", &ts, &sig) }, PATH, b"{}", NOW).header, SIGNATURE_HEADER);
        assert_eq!(fail(headers("web", "12x", &sig), PATH, b"{}", NOW).header, TIMESTAMP_HEADER);
        let stale = fail(headers("web", &ts, &sig), PATH, b"{}", NOW + 300_001);
        assert!(stale.header == TIMESTAMP_HEADER && stale.reason.contains("more than 5m"), "{stale:?}");
        assert_eq!(fail(headers("web", &ts, &sig), PATH, b"{ }", NOW).reason, NOT_VERIFIED);
        assert_eq!(fail(headers("web", &ts, &sig), "/v1/clicks/batch", b"{}", NOW).reason, NOT_VERIFIED);
        assert_eq!(fail(headers("web", &ts, &sig[..63]), PATH, b"{}", NOW).header, SIGNATURE_HEADER);
        let resigned = sign(&secret, "POST", PATH, &(NOW + 1).to_string(), b"{}");
        assert_eq!(fail(headers("web", &ts, &resigned), PATH, b"{}", NOW).header, SIGNATURE_HEADER);
    }

    #[test]
    fn an_unknown_client_is_answered_as_a_wrong_signature() {
        let ts = NOW.to_string();
        let v = verifier();
        let sig = sign(&Secret::new("0123456789abcdef0123"), "POST", PATH, &ts, b"{}");
        let unknown = check(&v, headers("mallory", &ts, &sig), PATH, b"{}", NOW).unwrap_err();
        let wrong = check(&v, headers("web", &ts, &"0".repeat(64)), PATH, b"{}", NOW).unwrap_err();
        assert_eq!(unknown, wrong);
        // Not even the stand-in secret's own MAC lets an unknown client in.
        let stand_in = sign(&Secret::new([0u8; 32]), "POST", PATH, &ts, b"{}");
        assert_eq!(check(&v, headers("mallory", &ts, &stand_in), PATH, b"{}", NOW).unwrap_err(), wrong);
    }
}
