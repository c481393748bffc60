//! Request bodies in, validated clicks out.
//!
//! A body is one click (a JSON object), or a batch: a JSON array of click
//! objects, or NDJSON (one object per line). Each click is checked exactly
//! as a line of a click file is (`event::json`: fields, charsets, lengths,
//! UUID; the user id is replaced by its keyed hash here), plus one check only
//! live traffic needs: its timestamp must lie within a window around the
//! server's clock.
//!
//! An invalid click is rejected on its own, with its index, the field and the
//! reason; the valid clicks of the same batch go on. Only a body that cannot
//! be read as a whole (broken JSON syntax in a single click or an array, or
//! more clicks than allowed) is an error of the body, with its position.
//! Nothing here panics on any input (`tests/fuzz` checks that).
//!
//! A body has one answer however it is read. A single click, and an array
//! whose elements are all plain valid clicks, are read by the fast path of
//! the click's decoder (`event::json::fast`); NDJSON lines pick their path one
//! by one in [`decode_click`]. Any other body, every one with an error in
//! it, is read whole by serde, so error positions and the batch cap stay
//! serde's. [`decode_body_serde`] skips the fast path, for the tests that
//! compare both.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Serialize;

use crate::config::format_duration;
use crate::event::json::{decode_click, decode_click_serde, fast, ArrayItem};
use crate::event::salt::UserSalt;
use crate::event::validate::{ClickError, LINE};
use crate::event::{Click, EventTime};

/// What a body holds, from the endpoint and its content type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// `POST /v1/clicks`: one JSON object.
    Single,
    /// `POST /v1/clicks/batch` with `application/json`: an array of objects.
    Array,
    /// `POST /v1/clicks/batch` with `application/x-ndjson`: one object per line.
    Ndjson,
}

/// The bounds a body is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most clicks (valid or not) in one batch.
    pub max_batch_clicks: usize,
    /// Oldest accepted timestamp, as a distance before the server's clock.
    pub past_ms: u64,
    /// Newest accepted timestamp, as a distance after the server's clock.
    pub future_ms: u64,
}

/// A rejected click: its 0-based index in the batch (array position or
/// NDJSON line), the field at fault and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ItemError {
    pub index: usize,
    pub field: Cow<'static, str>,
    pub reason: String,
}

/// The clicks of a body that passed, and the ones that did not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    pub clicks: Vec<Click>,
    pub rejected: Vec<ItemError>,
}

/// Why a body as a whole was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not readable: JSON syntax, or not the shape the endpoint takes.
    #[error("{reason} at line {line} column {column}")]
    Syntax { line: usize, column: usize, reason: String },
    /// More clicks than `max_batch_clicks`.
    #[error("more than {max} clicks in one batch")]
    TooManyClicks { max: usize },
}

/// Decodes and checks a body against `limits` and the clock `now_ms`.
pub fn decode_body(kind: BodyKind, body: &[u8], limits: &DecodeLimits, now_ms: u64, salt: &UserSalt) -> Result<Decoded, BodyError> {
    let window = TimeWindow::new(limits, now_ms);
    let max = limits.max_batch_clicks;
    let fast = match kind {
        BodyKind::Single => fast::click_line(body, salt).map(|click| vec![click]),
        BodyKind::Array => fast::click_array(body, max, salt),
        BodyKind::Ndjson => return decode_ndjson(body, max, &window, salt, decode_click),
    };
    match fast {
        Some(clicks) => Ok(in_window(clicks, &window)),
        None => decode_serde(kind, body, max, &window, salt),
    }
}

/// [`decode_body`] without its fast path: serde reads every body and every
/// NDJSON line. Not for serving: it exists so that tests and `tests/fuzz`
/// can check that both paths give the same answer.
#[doc(hidden)]
pub fn decode_body_serde(kind: BodyKind, body: &[u8], limits: &DecodeLimits, now_ms: u64, salt: &UserSalt) -> Result<Decoded, BodyError> {
    decode_serde(kind, body, limits.max_batch_clicks, &TimeWindow::new(limits, now_ms), salt)
}

fn decode_serde(kind: BodyKind, body: &[u8], max: usize, window: &TimeWindow, salt: &UserSalt) -> Result<Decoded, BodyError> {
    match kind {
        BodyKind::Single => decode_single(body, window, salt),
        BodyKind::Array => decode_array(body, max, window, salt),
        BodyKind::Ndjson => decode_ndjson(body, max, window, salt, decode_click_serde),
    }
}

/// The accepted range of timestamps around the server's clock.
struct TimeWindow {
    oldest: u64,
    newest: u64,
    past_ms: u64,
    future_ms: u64,
}

impl TimeWindow {
    fn new(limits: &DecodeLimits, now_ms: u64) -> TimeWindow {
        TimeWindow {
            oldest: now_ms.saturating_sub(limits.past_ms),
            newest: now_ms.saturating_add(limits.future_ms),
            past_ms: limits.past_ms,
            future_ms: limits.future_ms,
        }
    }

    fn check(&self, ts: EventTime) -> Result<(), ClickError> {
        let reason = if ts < self.oldest {
            format!("{ts} is more than {} before the server's clock", format_duration(self.past_ms))
        } else if ts > self.newest {
            format!("{ts} is more than {} after the server's clock", format_duration(self.future_ms))
        } else {
            return Ok(());
        };
        Err(ClickError { field: Cow::Borrowed("timestamp"), reason })
    }
}

/// Files the outcome of item `index` into `out`. `whole` names what a
/// problem of the item as a whole is called in this body ("click", "line").
fn push(out: &mut Decoded, index: usize, decoded: Result<Click, ClickError>, window: &TimeWindow, whole: &'static str) {
    match decoded.and_then(|click| window.check(click.ts).map(|()| click)) {
        Ok(click) => out.clicks.push(click),
        Err(ClickError { field, reason }) => {
            let field = if field == LINE { Cow::Borrowed(whole) } else { field };
            out.rejected.push(ItemError { index, field, reason });
        }
    }
}

/// The clicks of the fast path, items `0..`, through the time window, as
/// [`push`] files them.
fn in_window(mut clicks: Vec<Click>, window: &TimeWindow) -> Decoded {
    let mut rejected = Vec::new();
    let mut index = 0;
    clicks.retain(|click| {
        let kept = match window.check(click.ts) {
            Ok(()) => true,
            Err(ClickError { field, reason }) => {
                rejected.push(ItemError { index, field, reason });
                false
            }
        };
        index += 1;
        kept
    });
    Decoded { clicks, rejected }
}

fn decode_single(body: &[u8], window: &TimeWindow, salt: &UserSalt) -> Result<Decoded, BodyError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let item = serde::Deserialize::deserialize(&mut de).and_then(|item: ArrayItem<'_>| de.end().map(|()| item));
    let mut out = Decoded::default();
    match item {
        Ok(item) => push(&mut out, 0, item.into_click(salt), window, "click"),
        Err(e) => return Err(syntax(&e)),
    }
    Ok(out)
}

fn decode_array(body: &[u8], max: usize, window: &TimeWindow, salt: &UserSalt) -> Result<Decoded, BodyError> {
    let too_many = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(body);
    let visitor = ArrayVisitor { max, too_many: &too_many, window, salt };
    let result = de.deserialize_any(visitor).and_then(|out| de.end().map(|()| out));
    match result {
        Ok(out) => Ok(out),
        Err(_) if too_many.get() => Err(BodyError::TooManyClicks { max }),
        Err(e) => Err(syntax(&e)),
    }
}

struct ArrayVisitor<'c> {
    max: usize,
    too_many: &'c Cell<bool>,
    window: &'c TimeWindow,
    salt: &'c UserSalt,
}

impl<'de> Visitor<'de> for ArrayVisitor<'_> {
    type Value = Decoded;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of click objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Decoded, A::Error> {
        let mut out = Decoded::default();
        let mut index = 0;
        while let Some(item) = seq.next_element::<ArrayItem<'de>>()? {
            if index == self.max {
                self.too_many.set(true);
                return Err(de::Error::custom("too many clicks"));
            }
            push(&mut out, index, item.into_click(self.salt), self.window, "click");
            index += 1;
        }
        Ok(out)
    }
}

/// The lines of an NDJSON body, each decoded by `line_decoder`.
fn decode_ndjson(body: &[u8], max: usize, window: &TimeWindow, salt: &UserSalt, line_decoder: LineDecoder) -> Result<Decoded, BodyError> {
    let mut out = Decoded::default();
    let body = body.strip_suffix(b"\n").unwrap_or(body);
    for (index, line) in lines(body).enumerate() {
        if index == max {
            return Err(BodyError::TooManyClicks { max });
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        push(&mut out, index, line_decoder(line, salt), window, "line");
    }
    Ok(out)
}

/// The pieces of `body` between newlines, as `body.split(|&b| b == b'\n')`
/// gives them. The newlines are found with `memchr`: a byte-at-a-time split
/// costs about as much as decoding the lines on the fast path.
fn lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(body);
    std::iter::from_fn(move || {
        let text = rest?;
        match memchr::memchr(b'\n', text) {
            Some(at) => {
                rest = text.get(at + 1..);
                text.get(..at)
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
}

/// Decodes one click line: [`decode_click`], or its serde path alone.
type LineDecoder = fn(&[u8], &UserSalt) -> Result<Click, ClickError>;

/// A body-level JSON error with its position.
fn syntax(e: &serde_json::Error) -> BodyError {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let reason = full.strip_suffix(&suffix).unwrap_or(&full);
    let reason = match e.classify() {
        serde_json::error::Category::Data => reason.to_owned(),
        _ => format!("invalid JSON: {reason}"),
    };
    BodyError::Syntax { line: e.line(), column: e.column(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{prop, prop_oneof, Strategy};

    const NOW: u64 = 1_700_000_000_000;
    const LIMITS: DecodeLimits = DecodeLimits { max_batch_clicks: 3, past_ms: 60_000, future_ms: 1_000 };
    const SALT: UserSalt = UserSalt::from_bytes([7; 16]);

    fn click(ad: &str, ts: u64, rid: u32) -> String {
        format!(r#"{{"ad_id":"{ad}","timestamp":{ts},"user_id":"u{rid}","request_id":"00000000-0000-0000-0000-{rid:012}"}}"#)
    }

    fn decode(kind: BodyKind, body: &str) -> Result<Decoded, BodyError> {
        decode_body(kind, body.as_bytes(), &LIMITS, NOW, &SALT)
    }

    #[test]
    fn a_valid_single_click_decodes_with_a_hashed_user() {
        let out = decode(BodyKind::Single, &click("ad-1", NOW, 1)).unwrap();
        assert_eq!(out.rejected, vec![]);
        assert_eq!(out.clicks.len(), 1);
        assert_eq!(out.clicks[0].ad, "ad-1");
        assert_eq!(out.clicks[0].user, crate::event::salt::user_key(&SALT, "u1"));
        assert_eq!(out.clicks[0].request_id, 1);
    }

    #[test]
    fn array_items_are_rejected_one_by_one_with_index_and_field() {
        let body = format!("[{}, 5, {}]", click("ad-1", NOW, 1), click("bad ad", NOW, 2));
        let out = decode(BodyKind::Array, &body).unwrap();
        assert_eq!(out.clicks.len(), 1);
        assert_eq!(out.rejected.len(), 2);
        assert_eq!((out.rejected[0].index, out.rejected[0].field.as_ref()), (1, "click"));
        assert!(out.rejected[0].reason.contains("expected a JSON object, got an integer"), "{:?}", out.rejected[0]);
        assert_eq!((out.rejected[1].index, out.rejected[1].field.as_ref()), (2, "ad_id"));
        assert!(out.rejected[1].reason.contains("invalid character ' '"), "{:?}", out.rejected[1]);
    }

    #[test]
    fn timestamps_outside_the_window_around_now_are_rejected() {
        let body = [click("a", NOW - 60_001, 1), click("a", NOW - 60_000, 2), click("a", NOW + 1_001, 3)].join("\n");
        let out = decode(BodyKind::Ndjson, &body).unwrap();
        assert_eq!(out.clicks.len(), 1);
        assert_eq!(out.rejected.iter().map(|r| (r.index, r.field.as_ref())).collect::<Vec<_>>(), vec![(0, "timestamp"), (2, "timestamp")]);
        assert!(out.rejected[0].reason.contains("more than 1m before"), "{}", out.rejected[0].reason);
        assert!(out.rejected[1].reason.contains("more than 1s after"), "{}", out.rejected[1].reason);
    }

    #[test]
    fn timestamps_after_the_year_9999_are_rejected_whatever_the_window() {
        let wide = DecodeLimits { max_batch_clicks: 3, past_ms: u64::MAX, future_ms: u64::MAX };
        let last = crate::event::MAX_EVENT_TIME_MS;
        let clicks = [click("a", last, 1), click("a", last + 1, 2), click("a", 18_446_744_073_709_000_000, 3)];
        for (kind, body) in [(BodyKind::Ndjson, clicks.join("\n")), (BodyKind::Array, format!("[{}]", clicks.join(",")))] {
            for out in [decode_body(kind, body.as_bytes(), &wide, NOW, &SALT), decode_body_serde(kind, body.as_bytes(), &wide, NOW, &SALT)]
            {
                let out = out.unwrap();
                assert_eq!(out.clicks.iter().map(|c| c.ts).collect::<Vec<_>>(), vec![last]);
                let rejected: Vec<_> = out.rejected.iter().map(|r| (r.index, r.field.as_ref())).collect();
                assert_eq!(rejected, vec![(1, "timestamp"), (2, "timestamp")]);
                assert!(out.rejected[1].reason.ends_with(crate::event::MAX_EVENT_TIME_REASON), "{}", out.rejected[1].reason);
            }
        }
    }

    #[test]
    fn ndjson_lines_fail_alone_and_a_trailing_newline_is_no_line() {
        let body = format!("{}\r\n{{broken\n\n", click("a", NOW, 1));
        let out = decode(BodyKind::Ndjson, &body).unwrap();
        assert_eq!(out.clicks.len(), 1);
        assert_eq!(out.rejected.iter().map(|r| (r.index, r.field.as_ref())).collect::<Vec<_>>(), vec![(1, "line"), (2, "line")]);
        assert!(out.rejected[0].reason.contains("invalid JSON"), "{}", out.rejected[0].reason);
        assert!(out.rejected[1].reason.contains("empty line"), "{}", out.rejected[1].reason);
    }

    #[test]
    fn broken_syntax_is_a_body_error_with_its_position() {
        let body = format!("[{},\n {{\"ad_id\": }}]", click("a", NOW, 1));
        match decode(BodyKind::Array, &body) {
            Err(BodyError::Syntax { line: 2, column, reason }) => {
                assert!(column > 1 && reason.starts_with("invalid JSON"), "{column} {reason}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(decode(BodyKind::Single, "{} x"), Err(BodyError::Syntax { line: 1, .. })));
        assert!(matches!(decode(BodyKind::Array, "{}"), Err(BodyError::Syntax { .. })));
        assert!(matches!(decode(BodyKind::Array, ""), Err(BodyError::Syntax { .. })));
    }

    #[test]
    fn lines_are_what_a_split_at_newlines_gives() {
        for body in ["", "\n", "\n\n", "a", "a\nb", "a\n", "\na", "ab\n\ncd\r\n", "\r\n\r"] {
            let body = body.as_bytes();
            assert_eq!(lines(body).collect::<Vec<_>>(), body.split(|&b| b == b'\n').collect::<Vec<_>>(), "{body:?}");
        }
    }

    #[test]
    fn batches_over_the_click_limit_are_refused_whole() {
        let four = (0..4).map(|i| click("a", NOW, i)).collect::<Vec<_>>();
        let three = (0..3).map(|i| click("a", NOW, i)).collect::<Vec<_>>();
        assert_eq!(decode(BodyKind::Array, &format!("[{}]", four.join(","))), Err(BodyError::TooManyClicks { max: 3 }));
        assert_eq!(decode(BodyKind::Ndjson, &four.join("\n")), Err(BodyError::TooManyClicks { max: 3 }));
        assert_eq!(decode(BodyKind::Array, &format!("[{}]", three.join(","))).unwrap().clicks.len(), 3);
        assert_eq!(decode(BodyKind::Ndjson, &three.join("\n")).unwrap().clicks.len(), 3);
    }

    /// The serde path's answer for `body`, once it is checked that
    /// `decode_body`, fast path and all, gives the same.
    fn both_paths(kind: BodyKind, body: &[u8], limits: &DecodeLimits) -> Result<Decoded, BodyError> {
        let serde = decode_body_serde(kind, body, limits, NOW, &SALT);
        assert_eq!(decode_body(kind, body, limits, NOW, &SALT), serde, "{kind:?} {:?}", String::from_utf8_lossy(body));
        serde
    }

    /// `base` truncated at every length, and with each byte replaced by, and
    /// each position given an extra, each byte of `alphabet`, and each byte
    /// removed.
    fn one_byte_away(base: &[u8], alphabet: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for at in 0..=base.len() {
            out.push(base[..at].to_vec());
            for &b in alphabet {
                let mut inserted = base.to_vec();
                inserted.insert(at, b);
                out.push(inserted);
                if at < base.len() {
                    let mut replaced = base.to_vec();
                    replaced[at] = b;
                    out.push(replaced);
                }
            }
            if at < base.len() {
                let mut removed = base.to_vec();
                removed.remove(at);
                out.push(removed);
            }
        }
        out
    }

    /// Guards the fast path's contract on whole bodies: every body one byte
    /// away from a valid one gets the serde path's answer: the same clicks,
    /// rejections, body errors and positions, and the same batch cap.
    #[test]
    fn every_single_byte_change_of_a_body_decodes_as_on_the_serde_path() {
        let every_byte: Vec<u8> = (0..=u8::MAX).collect();
        let too_old = click("a", NOW - 60_001, 2);
        let bodies = [
            (BodyKind::Single, click("ad-1", NOW, 1)),
            (BodyKind::Array, format!("[{}, {too_old}]", click("ad-1", NOW, 1))),
            (BodyKind::Array, format!("[{},{},{}]", click("a", NOW, 1), click("b", NOW, 2), click("c", NOW, 3))),
            (BodyKind::Ndjson, format!("{}\r\n{too_old}\n", click("ad-1", NOW, 1))),
        ];
        for (kind, body) in &bodies {
            assert!(both_paths(*kind, body.as_bytes(), &LIMITS).is_ok(), "{body}");
            for changed in one_byte_away(body.as_bytes(), &every_byte) {
                let _ = both_paths(*kind, &changed, &LIMITS);
            }
        }
        let four = format!("[{}]", (0..4).map(|i| click("a", NOW, i)).collect::<Vec<_>>().join(","));
        assert_eq!(both_paths(BodyKind::Array, four.as_bytes(), &LIMITS), Err(BodyError::TooManyClicks { max: 3 }));
        for changed in one_byte_away(four.as_bytes(), b"{}[],:\" 0a-\\") {
            let _ = both_paths(BodyKind::Array, &changed, &LIMITS);
        }
    }

    /// Raw JSON values of a field: plain valid ones (which the fast path
    /// takes), then escaped, unusual or invalid ones (which it leaves to
    /// serde).
    fn values(field: &str) -> (Vec<String>, Vec<String>) {
        let now = NOW.to_string();
        let (plain, other): (&[&str], &[&str]) = match field {
            "ad_id" => (&[r#""ad-1""#, r#""a""#, r#""A.b_c:9-""#], &[r#""ad\u002d1""#, r#""ad 1""#, r#""""#, "7", "null"]),
            "timestamp" => {
                (&[&now, "1700000000001", "0"], &["01", "-1", "1.0", "1e3", "18446744073709551615", "18446744073709551616", r#""1""#])
            }
            "user_id" => (&[r#""u1""#, r#""u-17""#, r#""~x""#], &[r#""u\u0031""#, "\"\u{e9}\"", r#""""#, "5", "\"\t\""]),
            "request_id" => (
                &[r#""00000000-0000-0000-0000-000000000001""#, r#""6F1C0F5E-9a4b-4C1D-8e2f-0a1b2c3d4e5f""#],
                &[r#""00000000-0000-0000-0000-00000000000g""#, r#""00000000-0000-0000-0000-0000000000011""#, "12"],
            ),
            _ => (&[r#""camp:7""#], &[r#""c 1""#, "1", "[]", "{}"]),
        };
        let owned = |values: &[&str]| values.iter().map(|v| v.to_string()).collect::<Vec<_>>();
        let mut other = owned(other);
        other.push(format!("\"{}\"", "a".repeat(65)));
        (owned(plain), other)
    }

    /// A member `"name":value`, its value plain three times in four, with
    /// whitespace (or a byte that is not JSON whitespace) around its tokens.
    fn member(name: &'static str) -> impl Strategy<Value = String> {
        let (plain, other) = values(name);
        let value = prop_oneof![3 => prop::sample::select(plain), 1 => prop::sample::select(other)];
        let gap = prop::sample::select(vec!["", "", "", "", " ", "\n", "\t ", "\r\n", "\u{c}"]);
        (value, gap).prop_map(move |(value, gap)| format!("{gap}\"{name}\"{gap}:{gap}{value}{gap}"))
    }

    /// A click-shaped object: the four fields in any order, sometimes one
    /// more (optional, duplicate or unknown), sometimes one missing (`drop`).
    fn object() -> impl Strategy<Value = String> {
        let required = ["ad_id", "timestamp", "user_id", "request_id"].map(member);
        let extra = prop::sample::select(vec!["campaign_id", "campaign_id", "ad_id", "user_id", "country"]).prop_flat_map(member);
        (required, prop::option::of(extra), 0..12usize)
            .prop_map(|(required, extra, drop)| {
                let mut members: Vec<String> = required.into_iter().enumerate().filter(|&(i, _)| i != drop).map(|(_, m)| m).collect();
                members.extend(extra);
                members
            })
            .prop_shuffle()
            .prop_map(|members| format!("{{{}}}", members.join(",")))
    }

    fn body() -> impl Strategy<Value = (BodyKind, String)> {
        let objects = || prop::collection::vec(object(), 0..5);
        let separators = prop::sample::select(vec![",", " , ", ",\n", ",,", ""]);
        prop_oneof![
            object().prop_map(|o| (BodyKind::Single, o)),
            (objects(), separators).prop_map(|(objects, sep)| (BodyKind::Array, format!("[{}]", objects.join(sep)))),
            (objects(), prop::sample::select(vec!["\n", "\r\n"])).prop_map(|(objects, sep)| (BodyKind::Ndjson, objects.join(sep))),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2_000, ..Default::default() })]

        /// Bodies built from fields in any order, with whitespace, escapes
        /// and near-miss values, get the serde path's answer.
        #[test]
        fn click_shaped_bodies_decode_as_on_the_serde_path((kind, body) in body()) {
            let _ = both_paths(kind, body.as_bytes(), &LIMITS);
        }
    }

    #[test]
    fn a_single_click_that_is_not_an_object_is_rejected_as_the_click() {
        let out = decode(BodyKind::Single, "[1]").unwrap();
        assert_eq!(out.clicks, vec![]);
        assert_eq!(out.rejected[0].field, "click");
    }
}
