//! Fuzzes the request signature check (`ingest::auth`).
//!
//! The three signature headers and the body come straight from the network,
//! before anything else has looked at them, so `Verifier::claim` and
//! `Verifier::verify` must return on any bytes. Beyond not panicking, each
//! input checks the two halves of what a signature is for:
//!
//! - arbitrary headers pass exactly when they name a configured client, carry
//!   a timestamp inside the replay window and the MAC of that client's secret
//!   over method, path, timestamp and body (hex digits of either case), and
//!   are refused otherwise;
//! - a body signed with `sign` at a timestamp inside the window verifies, and
//!   the same signature over the body with any one byte changed, or with its
//!   last byte cut off, or sent to another path, does not.
//!
//! The input picks the client, the clock, the headers (arbitrary bytes, or
//! near-valid ones, so the fuzzer reaches the MAC comparison) and the body.

#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use tally::ingest::auth::{sign, AuthError, Secret, SignedHeaders, Verifier, CLIENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};

const NOW_MS: u64 = 1_764_374_400_000;
const PATH: &str = "/v1/clicks/batch";
const WINDOW_MS: u64 = 5 * 60_000;

/// A short secret, one longer than SHA-256's 64-byte block (HMAC hashes such
/// a key first) and an empty one: the three ways HMAC treats its key.
const CLIENTS: [(&str, &[u8]); 3] = [
    ("web-sdk", b"0123456789abcdef0123"),
    ("ios", b"a secret longer than one SHA-256 block, which HMAC hashes down to 32 bytes first......"),
    ("e", b""),
];

fuzz_target!(|data: &[u8]| {
    // Running out of input yields zeros and empty slices, not errors, so
    // every input is checked.
    let _ = check(Unstructured::new(data));
});

fn check(mut u: Unstructured<'_>) -> Result<()> {
    let verifier = Verifier::new(CLIENTS.iter().map(|&(id, key)| (id.to_owned(), Secret::new(key))).collect::<HashMap<_, _>>(), WINDOW_MS);

    let client_pick: u8 = u.arbitrary()?;
    let client: Option<Vec<u8>> = match client_pick % 6 {
        n @ 0..=2 => Some(CLIENTS[n as usize].0.as_bytes().to_vec()),
        3 => None,
        _ => Some(u.arbitrary::<&[u8]>()?.to_vec()),
    };
    let now: u64 = if u.arbitrary::<bool>()? { u.arbitrary()? } else { NOW_MS };
    let timestamp: Option<Vec<u8>> = match u.arbitrary::<u8>()? % 4 {
        0 => None,
        1 => Some(u.arbitrary::<&[u8]>()?.to_vec()),
        _ => {
            // Around the window's edges, sometimes with leading zeros.
            let delta = i64::from(u.arbitrary::<i32>()?) % (2 * WINDOW_MS as i64 + 2);
            let zeros = usize::from(u.arbitrary::<u8>()? % 4);
            let sent = now.saturating_add_signed(delta);
            Some(format!("{}{sent}", "0".repeat(zeros)).into_bytes())
        }
    };
    let signature_pick: u8 = u.arbitrary()?;
    let signer = CLIENTS[usize::from(u.arbitrary::<u8>()? % 3)].1;
    let tweak: u8 = u.arbitrary()?;
    let at: usize = u.arbitrary()?;
    let flip_at: usize = u.arbitrary()?;
    let flip_mask: u8 = u.arbitrary::<u8>()?.max(1);
    let window_offset: u64 = u.arbitrary::<u64>()? % (2 * WINDOW_MS + 1);
    let signed_ts = NOW_MS - WINDOW_MS + window_offset;
    let signed_by = usize::from(client_pick % 3);
    let arbitrary_signature: &[u8] = u.arbitrary()?;
    let body = u.take_rest();

    let signature: Option<Vec<u8>> = match signature_pick % 4 {
        0 => None,
        1 => Some(arbitrary_signature.to_vec()),
        _ => {
            // A real MAC over this timestamp and body, by a client that may
            // not be the one named; sometimes with one hex digit's case
            // changed (still valid) or one digit replaced (invalid).
            let ts = timestamp.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            let mut hex = sign(&Secret::new(signer), "POST", PATH, &ts, body).into_bytes();
            let i = at % hex.len();
            match tweak % 3 {
                0 => {}
                1 => hex[i] = hex[i].to_ascii_uppercase(),
                _ => hex[i] = if hex[i] == b'0' { b'1' } else { b'0' },
            }
            Some(hex)
        }
    };

    // Arbitrary headers: verify returns, and says yes exactly when it should.
    let headers = SignedHeaders { client: client.as_deref(), timestamp: timestamp.as_deref(), signature: signature.as_deref() };
    let result = verify(&verifier, headers, PATH, body, now);
    let expected = expected_client(headers, body, now);
    match (&result, expected) {
        (Ok(id), Some(want)) => assert_eq!(*id, want),
        (Err(e), None) => {
            assert!([CLIENT_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER].contains(&e.header), "{e:?}");
            assert!(!e.reason.is_empty(), "{e:?}");
        }
        _ => panic!("verify gave {result:?}, expected the client {expected:?}"),
    }

    // A signed body: verifies as is, fails with any one byte changed.
    let (id, key) = CLIENTS[signed_by];
    let ts = signed_ts.to_string();
    let mac = sign(&Secret::new(key), "POST", PATH, &ts, body);
    let signed_to = |path: &str, body: &[u8]| {
        let headers = SignedHeaders { client: Some(id.as_bytes()), timestamp: Some(ts.as_bytes()), signature: Some(mac.as_bytes()) };
        verify(&verifier, headers, path, body, NOW_MS)
    };
    let signed = |body: &[u8]| signed_to(PATH, body);
    assert_eq!(signed(body), Ok(id), "a body signed at {ts} must verify at {NOW_MS}");
    let e = signed_to("/v1/clicks", body).expect_err("a signature must not verify on another path");
    assert_eq!(e.header, SIGNATURE_HEADER, "{e:?}");
    if !body.is_empty() {
        let mut flipped = body.to_vec();
        let i = flip_at % flipped.len();
        flipped[i] ^= flip_mask;
        let e = signed(&flipped).expect_err("a signature must not verify a body with a byte changed");
        assert_eq!(e.header, SIGNATURE_HEADER, "{e:?}");
        let e = signed(&body[..body.len() - 1]).expect_err("a signature must not verify a truncated body");
        assert_eq!(e.header, SIGNATURE_HEADER, "{e:?}");
    }
    Ok(())
}

/// Both halves of the check, as the server makes them: the headers, then
/// the MAC over the body.
fn verify<'v>(verifier: &'v Verifier, headers: SignedHeaders<'_>, path: &str, body: &[u8], now: u64) -> std::result::Result<&'v str, AuthError> {
    let claim = verifier.claim(headers, now)?;
    verifier.verify(&claim, "POST", path, body)
}

/// The client a request should verify as, worked out without `verify`: a
/// configured id, a timestamp of only digits (unix ms) inside the window,
/// and the MAC in hex of any case.
fn expected_client(headers: SignedHeaders<'_>, body: &[u8], now: u64) -> Option<&'static str> {
    let (id, key) = CLIENTS.iter().find(|(id, _)| Some(id.as_bytes()) == headers.client)?;
    let ts = std::str::from_utf8(headers.timestamp?).ok()?;
    if ts.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let sent: u64 = ts.parse().ok()?;
    if sent.abs_diff(now) > WINDOW_MS {
        return None;
    }
    let want = sign(&Secret::new(*key), "POST", PATH, ts, body);
    headers.signature?.eq_ignore_ascii_case(want.as_bytes()).then_some(*id)
}
