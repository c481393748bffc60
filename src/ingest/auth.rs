//! Request signatures: HMAC-SHA256 with a per-client secret.
//!
//! A client sends three headers:
//!
//! ```text
//! X-Tally-Client:    web-sdk                      (its id in the config)
//! X-Tally-Timestamp: 1764384000000                (its clock, unix ms)
//! X-Tally-Signature: 5d41…(64 hex digits)         HMAC-SHA256(secret, timestamp + "." + body)
//! ```
//!
//! The server recomputes the MAC over the exact bytes it received (a gzip
//! body as sent, compressed: the MAC is checked before anything is
//! decompressed) and compares in constant time ([`Mac::verify_slice`]). The signed timestamp
//! must be within the replay window of the server's clock, so a captured
//! request cannot be replayed later; within the window a replay carries the
//! same request ids and the job's dedup drops it.

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

/// The signature of `body` sent at `timestamp` (the header's text), as the
/// lowercase hex the signature header carries.
pub fn sign(secret: &Secret, timestamp: &str, body: &[u8]) -> String {
    let mac = mac(secret, timestamp.as_bytes(), body).finalize().into_bytes();
    mac.iter().map(|b| format!("{b:02x}")).collect()
}

fn mac(secret: &Secret, timestamp: &[u8], body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&secret.0).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(timestamp);
    mac.update(b".");
    mac.update(body);
    mac
}

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

/// Checks signatures against the configured clients.
#[derive(Clone, Debug)]
pub struct Verifier {
    secrets: HashMap<String, Secret>,
    replay_window_ms: u64,
}

impl Verifier {
    pub fn new(secrets: HashMap<String, Secret>, replay_window_ms: u64) -> Verifier {
        Verifier { secrets, replay_window_ms }
    }

    /// Whether no client can sign.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The id of the client that signed `body`, or why the request is refused.
    pub fn verify<'v>(&'v self, headers: SignedHeaders<'_>, body: &[u8], now_ms: u64) -> Result<&'v str, AuthError> {
        let client = required(headers.client, CLIENT_HEADER)?;
        let timestamp = required(headers.timestamp, TIMESTAMP_HEADER)?;
        let signature = required(headers.signature, SIGNATURE_HEADER)?;
        let (id, secret) = std::str::from_utf8(client)
            .ok()
            .and_then(|id| self.secrets.get_key_value(id))
            .ok_or_else(|| AuthError::new(CLIENT_HEADER, "unknown client"))?;
        self.check_fresh(timestamp, now_ms)?;
        let signature = decode_hex(signature).ok_or_else(|| AuthError::new(SIGNATURE_HEADER, "not 64 hex digits (HMAC-SHA256)"))?;
        mac(secret, timestamp, body)
            .verify_slice(&signature)
            .map_err(|_| AuthError::new(SIGNATURE_HEADER, "does not match the body and timestamp"))?;
        Ok(id)
    }

    fn check_fresh(&self, timestamp: &[u8], now_ms: u64) -> Result<(), AuthError> {
        let sent: u64 = std::str::from_utf8(timestamp)
            .ok()
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| AuthError::new(TIMESTAMP_HEADER, "not unix milliseconds"))?;
        if sent.abs_diff(now_ms) > self.replay_window_ms {
            let reason = format!("{sent} is more than {} from the server's clock ({now_ms})", format_duration(self.replay_window_ms));
            return Err(AuthError::new(TIMESTAMP_HEADER, reason));
        }
        Ok(())
    }
}

fn required<'a>(value: Option<&'a [u8]>, header: &'static str) -> Result<&'a [u8], AuthError> {
    value.ok_or_else(|| AuthError::new(header, "missing"))
}

/// 32 bytes from exactly 64 hex digits (any case).
fn decode_hex(hex: &[u8]) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let digit = |b: u8| (b as char).to_digit(16);
        *byte = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn verifier() -> Verifier {
        Verifier::new(HashMap::from([("web".to_owned(), Secret::new("0123456789abcdef0123"))]), 300_000)
    }

    fn headers<'a>(client: &'a str, ts: &'a str, sig: &'a str) -> SignedHeaders<'a> {
        SignedHeaders { client: Some(client.as_bytes()), timestamp: Some(ts.as_bytes()), signature: Some(sig.as_bytes()) }
    }

    #[test]
    fn sign_matches_an_independent_hmac_sha256() {
        // python3: hmac.new(b"0123456789abcdef0123", b'1700000000000.{"a":1}', hashlib.sha256).hexdigest()
        let expected = "3dfe8b819e85471258aab3a2ae658a5dca3af9ad95ce056fd1ebbd8716930d33";
        assert_eq!(sign(&Secret::new("0123456789abcdef0123"), "1700000000000", br#"{"a":1}"#), expected);
    }

    #[test]
    fn a_correct_signature_names_the_client() {
        let ts = NOW.to_string();
        let sig = sign(&Secret::new("0123456789abcdef0123"), &ts, b"{}");
        assert_eq!(verifier().verify(headers("web", &ts, &sig), b"{}", NOW + 1000), Ok("web"));
        assert_eq!(verifier().verify(headers("web", &ts, &sig.to_uppercase()), b"{}", NOW), Ok("web"));
    }

    #[test]
    fn each_failure_names_its_header() {
        let ts = NOW.to_string();
        let secret = Secret::new("0123456789abcdef0123");
        let sig = sign(&secret, &ts, b"{}");
        let v = verifier();
        let fail = |h: SignedHeaders<'_>, body: &[u8], now: u64| v.verify(h, body, now).unwrap_err();
        assert_eq!(fail(SignedHeaders::default(), b"{}", NOW).header, CLIENT_HEADER);
        assert_eq!(fail(SignedHeaders { signature: None, ..headers("web", &ts, &sig) }, b"{}", NOW).header, SIGNATURE_HEADER);
        assert_eq!(fail(headers("other", &ts, &sig), b"{}", NOW).reason, "unknown client");
        assert_eq!(fail(headers("web", "12x", &sig), b"{}", NOW).header, TIMESTAMP_HEADER);
        let stale = fail(headers("web", &ts, &sig), b"{}", NOW + 300_001);
        assert!(stale.header == TIMESTAMP_HEADER && stale.reason.contains("more than 5m"), "{stale:?}");
        assert_eq!(fail(headers("web", &ts, &sig), b"{ }", NOW).reason, "does not match the body and timestamp");
        assert_eq!(fail(headers("web", &ts, &sig[..63]), b"{}", NOW).header, SIGNATURE_HEADER);
        let resigned = sign(&secret, &(NOW + 1).to_string(), b"{}");
        assert_eq!(fail(headers("web", &ts, &resigned), b"{}", NOW).header, SIGNATURE_HEADER);
    }
}
