//! What must hold of every body the ingest decoder is given.
//!
//! `decode_body` is the first code that reads untrusted request bytes, so the
//! decode targets look for two kinds of failure: a panic (a crash of the
//! server's request task for one bad body), and an answer that breaks the
//! contract the rest of the pipeline relies on: every item accounted for
//! exactly once, rejections in order, and no accepted click with an ad id
//! outside the id rule or a timestamp outside the window (nor above
//! `MAX_EVENT_TIME_MS`, whatever the window). The checks are
//! cheap, so they cost the fuzzer little throughput.
//!
//! A third kind of failure is a difference between the two ways of
//! decoding: the fast path for plain clicks must never change an answer, so
//! `decode_fast_vs_serde` compares `decode_body` with `decode_body_serde`.

use serde::de::IgnoredAny;
use tally::ingest::decode::{decode_body, decode_body_serde, BodyError, BodyKind, DecodeLimits, Decoded};
use tally::event::salt::UserSalt;

/// The server's clock in every run (2025-11-29T00:00:00Z), so a timestamp
/// that is inside the window once is inside it on every replay of the input.
pub const NOW_MS: u64 = 1_764_374_400_000;

/// The default window of the ingest config (7 days back, 5 minutes ahead),
/// with a batch cap small enough for libFuzzer's inputs to reach it.
pub const LIMITS: DecodeLimits = DecodeLimits { max_batch_clicks: 1000, past_ms: 7 * 86_400_000, future_ms: 5 * 60_000 };

pub const SALT: UserSalt = UserSalt::from_bytes(*b"fuzz.salt.16byte");

/// [`LIMITS`] with a batch cap of two, which a short input can exceed.
pub const SMALL_CAP: DecodeLimits = DecodeLimits { max_batch_clicks: 2, ..LIMITS };

/// Decodes `body` as each kind, under [`LIMITS`] and [`SMALL_CAP`], with and
/// without the fast path, and panics unless both give the same clicks,
/// rejections (index, field, reason) or body error (with its position).
pub fn compare_fast_and_serde(body: &[u8]) {
    for kind in [BodyKind::Single, BodyKind::Array, BodyKind::Ndjson] {
        for limits in [LIMITS, SMALL_CAP] {
            let fast = decode_body(kind, body, &limits, NOW_MS, &SALT);
            let serde = decode_body_serde(kind, body, &limits, NOW_MS, &SALT);
            assert_eq!(fast, serde, "{kind:?} with a cap of {}: the fast path differs from serde", limits.max_batch_clicks);
        }
    }
}

/// Decodes `body` as `kind` and panics if the outcome breaks an invariant.
pub fn decode_and_check(kind: BodyKind, body: &[u8]) {
    match decode_body(kind, body, &LIMITS, NOW_MS, &SALT) {
        Ok(decoded) => check_decoded(kind, body, &decoded),
        Err(error) => check_error(kind, body, &error),
    }
}

fn check_decoded(kind: BodyKind, body: &[u8], decoded: &Decoded) {
    let items = decoded.clicks.len() + decoded.rejected.len();
    assert!(items <= LIMITS.max_batch_clicks, "{items} items accepted, over the cap of {}", LIMITS.max_batch_clicks);
    match kind {
        BodyKind::Single => assert_eq!(items, 1, "a single-click body yields exactly one click or one rejection"),
        BodyKind::Array => {
            // Skipping every element is at most as strict as decoding it, so
            // a body the decoder read whole is an array of this many values.
            let elements = serde_json::from_slice::<Vec<IgnoredAny>>(body).map(|v| v.len());
            assert_eq!(elements.ok(), Some(items), "clicks + rejections must count the array's elements");
        }
        BodyKind::Ndjson => assert_eq!(items, ndjson_lines(body), "clicks + rejections must count the body's lines"),
    }

    let mut previous = None;
    for rejected in &decoded.rejected {
        assert!(rejected.index < items, "rejected index {} out of {items} items", rejected.index);
        assert!(previous < Some(rejected.index), "rejected indexes not strictly increasing: {previous:?} then {}", rejected.index);
        // The field may be empty: an unknown field is named as sent, `""` too.
        assert!(!rejected.reason.is_empty(), "rejection without a reason: {rejected:?}");
        previous = Some(rejected.index);
    }
    // The server sends the rejections back as JSON.
    assert!(serde_json::to_vec(&decoded.rejected).is_ok(), "rejections must serialize");

    let oldest = NOW_MS - LIMITS.past_ms;
    let newest = NOW_MS + LIMITS.future_ms;
    for click in &decoded.clicks {
        let ad = click.ad.as_bytes();
        assert!((1..=64).contains(&ad.len()), "accepted ad id of {} bytes: {:?}", ad.len(), click.ad);
        assert!(ad.iter().all(|&b| is_id_byte(b)), "accepted ad id outside [A-Za-z0-9._:-]: {:?}", click.ad);
        assert!((oldest..=newest).contains(&click.ts), "accepted timestamp {} outside {oldest}..={newest}", click.ts);
        assert!(click.ts <= tally::event::MAX_EVENT_TIME_MS, "accepted timestamp {} after the year 9999", click.ts);
    }
}

fn check_error(kind: BodyKind, body: &[u8], error: &BodyError) {
    assert!(!error.to_string().is_empty());
    match error {
        BodyError::TooManyClicks { max } => {
            assert_eq!(*max, LIMITS.max_batch_clicks);
            match kind {
                BodyKind::Single => panic!("a single-click body cannot hold too many clicks"),
                BodyKind::Array => {
                    // The cap can trip before a syntax error later in the body.
                    if let Ok(elements) = serde_json::from_slice::<Vec<IgnoredAny>>(body) {
                        assert!(elements.len() > *max, "refused as too many, but holds {} elements", elements.len());
                    }
                }
                BodyKind::Ndjson => assert!(ndjson_lines(body) > *max, "refused as too many, but has {} lines", ndjson_lines(body)),
            }
        }
        BodyError::Syntax { line, reason, .. } => {
            assert_ne!(kind, BodyKind::Ndjson, "an NDJSON body fails line by line, never as a whole: {error}");
            assert!(*line >= 1 && !reason.is_empty(), "{error:?}");
        }
    }
}

/// Lines of an NDJSON body: one per newline, plus the text after the last
/// one, where a final newline ends a line rather than starting an empty one.
fn ndjson_lines(body: &[u8]) -> usize {
    let newlines = body.iter().filter(|&&b| b == b'\n').count();
    newlines + 1 - usize::from(body.last() == Some(&b'\n'))
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
}
