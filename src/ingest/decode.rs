//! Request bodies in, validated clicks out.
//!
//! A body is one click (a JSON object), or a batch: a JSON array of click
//! objects, or NDJSON (one object per line). Each click is checked exactly
//! as a line of a click file is (`sources::file`: fields, charsets, lengths,
//! UUID; the user id is replaced by its keyed hash here), plus one check only
//! live traffic needs: its timestamp must lie within a window around the
//! server's clock.
//!
//! An invalid click is rejected on its own, with its index, the field and the
//! reason; the valid clicks of the same batch go on. Only a body that cannot
//! be read as a whole (broken JSON syntax in a single click or an array, or
//! more clicks than allowed) is an error of the body, with its position.
//! Nothing here panics on any input (`tests/fuzz` checks that).

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Serialize;

use crate::event::Click;
use crate::job::format_duration;
use crate::sources::file::{decode_click, ArrayItem, ClickError, UserSalt, LINE};

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
    let check = TimeWindow::new(limits, now_ms);
    match kind {
        BodyKind::Single => decode_single(body, &check, salt),
        BodyKind::Array => decode_array(body, limits.max_batch_clicks, &check, salt),
        BodyKind::Ndjson => decode_ndjson(body, limits.max_batch_clicks, &check, salt),
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

    fn check(&self, click: Click) -> Result<Click, ClickError> {
        let reason = if click.ts < self.oldest {
            format!("{} is more than {} before the server's clock", click.ts, format_duration(self.past_ms))
        } else if click.ts > self.newest {
            format!("{} is more than {} after the server's clock", click.ts, format_duration(self.future_ms))
        } else {
            return Ok(click);
        };
        Err(ClickError { field: Cow::Borrowed("timestamp"), reason })
    }
}

/// Files the outcome of item `index` into `out`. `whole` names what a
/// problem of the item as a whole is called in this body ("click", "line").
fn push(out: &mut Decoded, index: usize, decoded: Result<Click, ClickError>, window: &TimeWindow, whole: &'static str) {
    match decoded.and_then(|click| window.check(click)) {
        Ok(click) => out.clicks.push(click),
        Err(ClickError { field, reason }) => {
            let field = if field == LINE { Cow::Borrowed(whole) } else { field };
            out.rejected.push(ItemError { index, field, reason });
        }
    }
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

fn decode_ndjson(body: &[u8], max: usize, window: &TimeWindow, salt: &UserSalt) -> Result<Decoded, BodyError> {
    let mut out = Decoded::default();
    let body = body.strip_suffix(b"\n").unwrap_or(body);
    for (index, line) in body.split(|&b| b == b'\n').enumerate() {
        if index == max {
            return Err(BodyError::TooManyClicks { max });
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        push(&mut out, index, decode_click(line, salt), window, "line");
    }
    Ok(out)
}

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
        assert_eq!(out.clicks[0].user, crate::sources::file::user_key(&SALT, "u1"));
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
    fn batches_over_the_click_limit_are_refused_whole() {
        let four = (0..4).map(|i| click("a", NOW, i)).collect::<Vec<_>>();
        let three = (0..3).map(|i| click("a", NOW, i)).collect::<Vec<_>>();
        assert_eq!(decode(BodyKind::Array, &format!("[{}]", four.join(","))), Err(BodyError::TooManyClicks { max: 3 }));
        assert_eq!(decode(BodyKind::Ndjson, &four.join("\n")), Err(BodyError::TooManyClicks { max: 3 }));
        assert_eq!(decode(BodyKind::Array, &format!("[{}]", three.join(","))).unwrap().clicks.len(), 3);
        assert_eq!(decode(BodyKind::Ndjson, &three.join("\n")).unwrap().clicks.len(), 3);
    }

    #[test]
    fn a_single_click_that_is_not_an_object_is_rejected_as_the_click() {
        let out = decode(BodyKind::Single, "[1]").unwrap();
        assert_eq!(out.clicks, vec![]);
        assert_eq!(out.rejected[0].field, "click");
    }
}
