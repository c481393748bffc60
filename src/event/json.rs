//! A click as JSON: one NDJSON line, or one element of a JSON array, into a
//! validated [`Click`] or a [`ClickError`].
//!
//! Every click file line, `tally log import` line, HTTP body and foreign
//! Kafka message is untrusted, so decoding never panics: a bad click
//! becomes a [`ClickError`] naming the field and the reason (SEMANTICS.md,
//! "Inputs"). The `user_id` is replaced by its keyed hash
//! ([`user_key`]) as the click is decoded and never travels further.
//!
//! Decoding is on the hot path (millions of lines per run, every click of
//! HTTP ingest) and has two paths with one answer. The fast path ([`fast`])
//! reads the common shape (the known fields, strings without escapes, an
//! unsigned integer timestamp) straight from the bytes and answers only with
//! a valid click. Any other line, every bad one included, goes through a
//! hand-written serde visitor into borrowed strings; it accepts any JSON type
//! for a known field and checks it afterwards, so a type error still names
//! its field. On both paths a valid line allocates only what the [`Click`]
//! keeps (an ad id longer than the inline size of [`Key`]), plus, on the
//! serde path, any JSON-escaped string.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::salt::{user_key, UserSalt};
use super::validate::{check_key, parse_uuid, ClickError, MAX_USER_ID_BYTES};
use super::{Click, EventTime, Key, RequestId, UserKey, MAX_EVENT_TIME_MS, MAX_EVENT_TIME_REASON};

pub(crate) mod fast;

/// Rejected lines kept with their error by a reader of click lines (the
/// file source, `tally log import`); the rest are only counted.
pub const MAX_REJECTED_KEPT: usize = 100;

/// A line that was skipped, with its 1-based line number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub line: u64,
    pub error: ClickError,
}

/// Decodes one NDJSON click line (without its newline).
pub fn decode_click(line: &[u8], salt: &UserSalt) -> Result<Click, ClickError> {
    match fast::click_line(line, salt) {
        Some(click) => Ok(click),
        None => decode_click_serde(line, salt),
    }
}

/// [`decode_click`] through serde only, the path that gives every answer the
/// fast path is not sure of.
pub(crate) fn decode_click_serde(line: &[u8], salt: &UserSalt) -> Result<Click, ClickError> {
    if line.trim_ascii().is_empty() {
        return Err(ClickError::line("empty line"));
    }
    match serde_json::from_slice::<Parsed<'_>>(line) {
        Ok(Parsed(fields)) => fields?.into_click(salt),
        Err(e) => Err(json_error(&e)),
    }
}

/// Turns a serde_json error into a line error, keeping the column (serde's
/// "line 1" is meaningless here: the caller knows the file line).
pub(crate) fn json_error(e: &serde_json::Error) -> ClickError {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full);
    let prefix = match e.classify() {
        serde_json::error::Category::Data => "",
        _ => "invalid JSON: ",
    };
    ClickError::line(format!("{prefix}{message} at column {}", e.column()))
}

/// The fields of a click line.
#[derive(Clone, Copy)]
enum Field {
    AdId,
    Timestamp,
    UserId,
    RequestId,
    CampaignId,
}

impl Field {
    fn from_name(name: &str) -> Option<Field> {
        match name {
            "ad_id" => Some(Field::AdId),
            "timestamp" => Some(Field::Timestamp),
            "user_id" => Some(Field::UserId),
            "request_id" => Some(Field::RequestId),
            "campaign_id" => Some(Field::CampaignId),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Field::AdId => "ad_id",
            Field::Timestamp => "timestamp",
            Field::UserId => "user_id",
            Field::RequestId => "request_id",
            Field::CampaignId => "campaign_id",
        }
    }
}

/// A JSON value as far as the checks need it; containers are skipped.
enum Scalar<'a> {
    Str(Cow<'a, str>),
    Uint(u64),
    Negative(i64),
    /// A fraction, an exponent, or an integer beyond `u64`.
    Float(f64),
    Other(&'static str),
}

impl Scalar<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Scalar::Str(_) => "a string",
            Scalar::Uint(_) => "an integer",
            Scalar::Negative(_) => "a negative integer",
            Scalar::Float(_) => "a non-integer number",
            Scalar::Other(kind) => kind,
        }
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(u64::try_from(v).map_or(Scalar::Negative(v), Scalar::Uint))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::Uint(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Float(v))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }

    /// Only reached for strings with escapes, which must be unescaped.
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Other("null"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        drain(&mut map)?;
        Ok(Scalar::Other("an object"))
    }
}

fn drain<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// An object key: one of ours, or a name to report.
enum FieldName {
    Known(Field),
    Unknown(String),
}

impl<'de> Deserialize<'de> for FieldName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_identifier(FieldNameVisitor)
    }
}

struct FieldNameVisitor;

impl Visitor<'_> for FieldNameVisitor {
    type Value = FieldName;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Field::from_name(v).map_or_else(|| FieldName::Unknown(v.to_owned()), FieldName::Known))
    }
}

/// The raw values of a click object, indexed by [`Field`].
#[derive(Default)]
struct RawClick<'a>([Option<Scalar<'a>>; 5]);

/// A line that is a JSON object: its raw fields, or the first unknown or
/// duplicate field. Syntax errors stay serde errors.
struct Parsed<'a>(Result<RawClick<'a>, ClickError>);

/// One element of a JSON array of clicks: a click object, checked like a
/// line, or any other JSON value, which is an error of that element only.
/// Syntax errors stay serde errors (they end the whole array).
pub(crate) struct ArrayItem<'a>(Result<RawClick<'a>, ClickError>);

impl<'a> ArrayItem<'a> {
    pub(crate) fn into_click(self, salt: &UserSalt) -> Result<Click, ClickError> {
        self.0?.into_click(salt)
    }
}

impl<'de> Deserialize<'de> for ArrayItem<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ItemVisitor)
    }
}

/// Reads an array element: objects as clicks, anything else by its kind
/// (through [`ScalarVisitor`], which also skips nested arrays).
struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = ArrayItem<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        ClickVisitor.visit_map(map).map(|Parsed(fields)| ArrayItem(fields))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        ScalarVisitor.visit_seq(seq).map(not_an_object)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        ScalarVisitor.visit_bool(v).map(not_an_object)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        ScalarVisitor.visit_i64(v).map(not_an_object)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        ScalarVisitor.visit_u64(v).map(not_an_object)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        ScalarVisitor.visit_f64(v).map(not_an_object)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        ScalarVisitor.visit_str(v).map(not_an_object)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        ScalarVisitor.visit_unit().map(not_an_object)
    }
}

fn not_an_object(value: Scalar<'_>) -> ArrayItem<'_> {
    ArrayItem(Err(ClickError::line(format!("expected a JSON object, got {}", value.kind()))))
}

impl<'de> Deserialize<'de> for Parsed<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ClickVisitor)
    }
}

struct ClickVisitor;

impl<'de> Visitor<'de> for ClickVisitor {
    type Value = Parsed<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut raw = RawClick::default();
        while let Some(name) = map.next_key::<FieldName>()? {
            if let Err(e) = raw.store(name, &mut map)? {
                // Read to the end so a syntax error later in the line still
                // wins: the line is reported as what is most wrong with it.
                drain(&mut map)?;
                return Ok(Parsed(Err(e)));
            }
        }
        Ok(Parsed(Ok(raw)))
    }
}

impl<'a> RawClick<'a> {
    /// Reads the value of field `name` into its slot.
    fn store<A: MapAccess<'a>>(&mut self, name: FieldName, map: &mut A) -> Result<Result<(), ClickError>, A::Error> {
        let field = match name {
            FieldName::Known(field) => field,
            FieldName::Unknown(name) => {
                map.next_value::<IgnoredAny>()?;
                return Ok(Err(ClickError::unknown_field(&name)));
            }
        };
        let value = map.next_value::<Scalar<'a>>()?;
        let slot = &mut self.0[field as usize];
        if slot.is_some() {
            return Ok(Err(ClickError::new(field.name(), "duplicate field")));
        }
        *slot = Some(value);
        Ok(Ok(()))
    }

    fn required(&mut self, field: Field) -> Result<Scalar<'a>, ClickError> {
        self.0[field as usize].take().ok_or_else(|| ClickError::new(field.name(), "missing"))
    }

    fn into_click(mut self, salt: &UserSalt) -> Result<Click, ClickError> {
        let ad = key_value(Field::AdId, self.required(Field::AdId)?)?;
        let ts = timestamp_value(self.required(Field::Timestamp)?)?;
        let user = user_value(self.required(Field::UserId)?, salt)?;
        let request_id = request_id_value(self.required(Field::RequestId)?)?;
        if let Some(campaign) = self.0[Field::CampaignId as usize].take() {
            // Checked, then dropped: the catalog alone attributes spend.
            key_value(Field::CampaignId, campaign)?;
        }
        Ok(Click { ad, ts, user, request_id })
    }
}

fn string_value(field: Field, value: Scalar<'_>) -> Result<Cow<'_, str>, ClickError> {
    match value {
        Scalar::Str(s) => Ok(s),
        other => Err(ClickError::new(field.name(), format!("expected a string, got {}", other.kind()))),
    }
}

fn key_value(field: Field, value: Scalar<'_>) -> Result<Key, ClickError> {
    let s = string_value(field, value)?;
    check_key(&s).map_err(|e| ClickError::new(field.name(), e.to_string()))?;
    Ok(Key::from(s.as_ref()))
}

fn timestamp_value(value: Scalar<'_>) -> Result<EventTime, ClickError> {
    let reason = match value {
        Scalar::Uint(ts) if ts <= MAX_EVENT_TIME_MS => return Ok(ts),
        Scalar::Uint(ts) => format!("{ts} is too large: {MAX_EVENT_TIME_REASON}"),
        Scalar::Negative(v) => format!("negative: {v}"),
        Scalar::Float(v) => format!("not an integer fitting u64: {v:?}"),
        other => format!("expected an integer (ms), got {}", other.kind()),
    };
    Err(ClickError::new(Field::Timestamp.name(), reason))
}

fn user_value(value: Scalar<'_>, salt: &UserSalt) -> Result<UserKey, ClickError> {
    let user_id = string_value(Field::UserId, value)?;
    let reason = match user_id.len() {
        0 => "empty".to_owned(),
        len if len > MAX_USER_ID_BYTES => {
            format!("too long: {len} bytes (max {MAX_USER_ID_BYTES})")
        }
        _ => return Ok(user_key(salt, &user_id)),
    };
    Err(ClickError::new(Field::UserId.name(), reason))
}

fn request_id_value(value: Scalar<'_>) -> Result<RequestId, ClickError> {
    let s = string_value(Field::RequestId, value)?;
    parse_uuid(s.as_bytes()).ok_or_else(|| ClickError::new(Field::RequestId.name(), "not a UUID (expected 8-4-4-4-12 hex)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::validate::{LINE, MAX_KEY_BYTES, MAX_SHOWN_NAME_CHARS};
    use crate::event::XorShift;

    const UUID: &str = "0123abcd-4567-89ef-0123-456789abcdef";
    const UUID_VALUE: u128 = 0x0123abcd_4567_89ef_0123_456789abcdef;

    fn good_line() -> String {
        format!(r#"{{"ad_id":"ad-1","timestamp":1767225600000,"user_id":"u1","request_id":"{UUID}"}}"#)
    }

    fn decode(line: &str) -> Result<Click, ClickError> {
        decode_click(line.as_bytes(), &UserSalt::FILE_DEFAULT)
    }

    /// The line with `field` set to the raw JSON `value` (or removed).
    fn with_field(field: &str, value: Option<&str>) -> String {
        let mut fields = vec![
            ("ad_id", r#""ad-1""#.to_owned()),
            ("timestamp", "1767225600000".to_owned()),
            ("user_id", r#""u1""#.to_owned()),
            ("request_id", format!(r#""{UUID}""#)),
        ];
        fields.retain(|(name, _)| *name != field);
        if let Some(value) = value {
            fields.push((field, value.to_owned()));
        }
        let body: Vec<String> = fields.iter().map(|(k, v)| format!(r#""{k}":{v}"#)).collect();
        format!("{{{}}}", body.join(","))
    }

    fn rejected(line: &str) -> ClickError {
        match decode(line) {
            Ok(click) => panic!("accepted {line:?} as {click:?}"),
            Err(e) => e,
        }
    }

    fn assert_rejects(field: &str, value: Option<&str>, reason_part: &str) {
        let line = with_field(field, value);
        let e = rejected(&line);
        assert_eq!(e.field, field, "{line}: {e}");
        assert!(e.reason.contains(reason_part), "{line}: {e}");
    }

    #[test]
    fn good_line_round_trips() {
        let click = decode(&good_line()).unwrap();
        assert_eq!(click.ad, "ad-1");
        assert_eq!(click.ts, 1_767_225_600_000);
        assert_eq!(click.user, user_key(&UserSalt::FILE_DEFAULT, "u1"));
        assert_eq!(click.request_id, UUID_VALUE);
    }

    #[test]
    fn field_order_whitespace_and_crlf_do_not_matter() {
        let line = format!(" {{ \"request_id\" : \"{UUID}\", \"user_id\":\"u1\",\"timestamp\":1767225600000,\"ad_id\":\"ad-1\" }}\r");
        assert_eq!(decode(&line).unwrap(), decode(&good_line()).unwrap());
    }

    #[test]
    fn escaped_strings_are_unescaped_before_checks() {
        let line = with_field("ad_id", Some(r#""ad\u002d1""#)).replace(r#""u1""#, r#""\u0075\u0031""#);
        assert_eq!(decode(&line).unwrap(), decode(&good_line()).unwrap());
    }

    #[test]
    fn campaign_id_is_checked_then_ignored() {
        let line = with_field("campaign_id", Some(r#""camp:7""#));
        assert_eq!(decode(&line).unwrap(), decode(&good_line()).unwrap());
        assert_rejects("campaign_id", Some(r#""camp 7""#), "invalid character ' ' at byte 4");
        assert_rejects("campaign_id", Some("7"), "expected a string, got an integer");
    }

    #[test]
    fn ad_id_rules() {
        let longest = format!("\"{}\"", "a".repeat(MAX_KEY_BYTES));
        assert!(decode(&with_field("ad_id", Some(&longest))).is_ok());
        let too_long = format!("\"{}\"", "a".repeat(MAX_KEY_BYTES + 1));
        assert_rejects("ad_id", Some(&too_long), "too long: 65 bytes (max 64)");
        assert_rejects("ad_id", Some(r#""""#), "empty");
        assert_rejects("ad_id", Some(r#""ad/1""#), "invalid character '/' at byte 2");
        assert_rejects("ad_id", Some(r#""adé""#), "invalid character 'é' at byte 2");
        assert_rejects("ad_id", Some("null"), "expected a string, got null");
        assert_rejects("ad_id", Some("[1]"), "expected a string, got an array");
        assert_rejects("ad_id", Some(r#"{"a":1}"#), "expected a string, got an object");
        assert_rejects("ad_id", None, "missing");
    }

    #[test]
    fn timestamp_rules() {
        assert!(decode(&with_field("timestamp", Some("0"))).is_ok());
        let max = with_field("timestamp", Some("253402300799999"));
        assert_eq!(decode(&max).unwrap().ts, MAX_EVENT_TIME_MS);
        let reason = "is too large: must be at most 253402300799999 (9999-12-31T23:59:59.999Z)";
        assert_rejects("timestamp", Some("253402300800000"), &format!("253402300800000 {reason}"));
        assert_rejects("timestamp", Some("18446744073709000000"), &format!("18446744073709000000 {reason}"));
        assert_rejects("timestamp", Some("18446744073709551615"), reason);
        assert_rejects("timestamp", Some("18446744073709551616"), "not an integer fitting u64");
        assert_rejects("timestamp", Some("-1"), "negative: -1");
        assert_rejects("timestamp", Some("1.0"), "not an integer fitting u64: 1.0");
        assert_rejects("timestamp", Some("1e3"), "not an integer fitting u64");
        assert_rejects("timestamp", Some(r#""1000""#), "expected an integer (ms), got a string");
        assert_rejects("timestamp", Some("true"), "got a boolean");
        assert_rejects("timestamp", None, "missing");
    }

    #[test]
    fn user_id_rules() {
        let longest = format!("\"{}\"", "é".repeat(MAX_USER_ID_BYTES / 2));
        assert!(decode(&with_field("user_id", Some(&longest))).is_ok());
        let too_long = format!("\"{}\"", "u".repeat(MAX_USER_ID_BYTES + 1));
        assert_rejects("user_id", Some(&too_long), "too long: 129 bytes (max 128)");
        assert_rejects("user_id", Some(r#""""#), "empty");
        assert_rejects("user_id", Some("42"), "expected a string, got an integer");
        assert_rejects("user_id", None, "missing");
    }

    #[test]
    fn request_id_rules() {
        let e = rejected(&with_field("request_id", Some(r#""not-a-uuid""#)));
        assert_eq!(e.to_string(), "field 'request_id': not a UUID (expected 8-4-4-4-12 hex)");
        for bad in [
            "0123abcd-4567-89ef-0123-456789abcde",   // short
            "0123abcd-4567-89ef-0123-456789abcdef0", // long
            "0123abcd-4567-89ef-0123-456789abcdeg",  // not hex
            "0123abcd4-567-89ef-0123-456789abcdef",  // hyphen moved
            "0123abcd_4567_89ef_0123_456789abcdef",  // not hyphens
            "{0123abcd-4567-89ef-0123-456789abcd}",  // braces
            "+123abcd-4567-89ef-0123-456789abcdef",  // sign
        ] {
            assert_rejects("request_id", Some(&format!("\"{bad}\"")), "not a UUID");
        }
        assert_rejects("request_id", Some("12"), "expected a string, got an integer");
        assert_rejects("request_id", None, "missing");
    }

    #[test]
    fn unknown_field_is_named() {
        let e = rejected(&with_field("country", Some(r#""NL""#)));
        assert_eq!(e.field, "country");
        assert!(e.reason.starts_with("unknown field"), "{e}");
        let long_name = "x".repeat(1000);
        let e = rejected(&with_field(&long_name, Some("1")));
        assert_eq!(e.field.chars().count(), MAX_SHOWN_NAME_CHARS + 1);
        let e = rejected(&with_field("a\\nb", Some("1")));
        assert_eq!(e.field, "a\\nb", "control characters are escaped");
    }

    #[test]
    fn duplicate_field_is_rejected() {
        let line = good_line().replace('}', r#","ad_id":"ad-2"}"#);
        let e = rejected(&line);
        assert_eq!(e.to_string(), "field 'ad_id': duplicate field");
    }

    #[test]
    fn syntax_errors_win_over_field_errors() {
        let line = with_field("country", Some("1")).replace('}', ",");
        assert_eq!(rejected(&line).field, LINE);
    }

    #[test]
    fn line_level_errors() {
        for (line, reason_part) in [
            ("", "empty line"),
            ("  \t\r", "empty line"),
            ("hello", "invalid JSON: expected value at column 1"),
            ("42", "expected a JSON object at column 2"),
            (r#"["ad_id"]"#, "expected a JSON object"),
            (r#"{"ad_id":"a""#, "invalid JSON: EOF while parsing an object"),
            (r#"{"ad_id":"a"} {}"#, "invalid JSON: trailing characters"),
        ] {
            let e = rejected(line);
            assert_eq!(e.field, LINE, "{line:?}: {e}");
            assert!(e.reason.contains(reason_part), "{line:?}: {e}");
        }
        let e = decode_click(b"{\"ad_id\":\"a\xff\"}", &UserSalt::FILE_DEFAULT).unwrap_err();
        assert_eq!(e.field, LINE);
    }

    #[test]
    fn deep_nesting_is_rejected_without_overflow() {
        let n = 30_000;
        let arrays = format!("{}{}", "[".repeat(n), "]".repeat(n));
        let objects = format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
        assert_eq!(rejected(&arrays).field, LINE);
        assert_eq!(rejected(&objects).field, "a", "unknown field, its value skipped");
        let e = rejected(&with_field("ad_id", Some(&arrays)));
        assert_eq!(e.to_string(), "field 'ad_id': expected a string, got an array");
        let e = rejected(&with_field("ad_id", Some(&objects)));
        assert_eq!(e.to_string(), "field 'ad_id': expected a string, got an object");
        let unclosed = rejected(&with_field("ad_id", Some(&"[".repeat(n))));
        assert_eq!(unclosed.field, LINE);
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let good = good_line().into_bytes();
        let alphabet = b"{}[]\":,0123456789-.eE+ \\uabcdef_tnrl\x00\xff\xc3\xa9";
        for _ in 0..300 {
            let random: Vec<u8> = (0..rng.below(80)).map(|_| rng.next() as u8).collect();
            let _ = decode(&String::from_utf8_lossy(&random));
            let _ = decode_click(&random, &UserSalt::FILE_DEFAULT);
            let json_ish: Vec<u8> = (0..rng.below(80)).map(|_| alphabet[rng.below(alphabet.len())]).collect();
            let _ = decode_click(&json_ish, &UserSalt::FILE_DEFAULT);
            let mut mutated = good.clone();
            for _ in 0..=rng.below(4) {
                let at = rng.below(mutated.len());
                mutated[at] = alphabet[rng.below(alphabet.len())];
            }
            mutated.truncate(rng.below(mutated.len() + 1));
            let _ = decode_click(&mutated, &UserSalt::FILE_DEFAULT);
        }
    }
}
