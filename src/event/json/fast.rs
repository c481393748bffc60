//! The fast path of click decoding: a plain click object read straight from
//! its bytes.
//!
//! Nearly every click a client or a file sends has one shape: the known
//! fields in any order, strings without escapes, an unsigned integer
//! timestamp, maybe some whitespace. This reads that shape in one pass,
//! applies the same checks as the serde path of [`super`], and answers
//! `Some(click)` only where the serde path is sure to accept the very same
//! click. Everything else is `None`, and the caller runs the serde path,
//! which gives the answer it always gave (every error, with its field,
//! reason and position, comes from there). So the fast path can make
//! decoding faster, never different; the tests below and `tests/fuzz`
//! (`decode_fast_vs_serde`) compare both paths.
//!
//! `None` on: input that is not UTF-8; any escape, control or non-ASCII
//! byte in a string; a number that is not `0` or `[1-9][0-9]*` within `u64`
//! (a sign, fraction, exponent, leading zero or overflow) or above
//! [`MAX_EVENT_TIME_MS`]; an unknown,
//! duplicate or missing field; a value of another type; a value that fails
//! its check (ad and campaign charset and length, user id length, UUID);
//! any other syntax.

use super::Field;
use crate::event::salt::{user_key, UserSalt};
use crate::event::validate::{is_key_byte, parse_uuid, MAX_KEY_BYTES, MAX_USER_ID_BYTES};
use crate::event::{Click, EventTime, Key, RequestId, MAX_EVENT_TIME_MS};

/// Length of the shortest click object this path accepts
/// (`{"ad_id":"a","timestamp":0,"user_id":"u","request_id":"<36>"}`), to
/// size the vector of an array's clicks.
const SHORTEST_CLICK_BYTES: usize = 93;

/// Digits of `u64::MAX`: a number with fewer never overflows.
const U64_DIGITS: usize = 20;

/// A click object with optional whitespace around it and nothing else: a
/// line of a click file, or the body of a single click.
pub(crate) fn click_line(bytes: &[u8], salt: &UserSalt) -> Option<Click> {
    let mut cursor = Cursor::new(bytes)?;
    let click = cursor.click(salt)?;
    cursor.skip_whitespace();
    cursor.at_end().then_some(click)
}

/// A JSON array of at most `max` click objects, with optional whitespace
/// around and between its tokens: its clicks in order, or `None` if any
/// element, or anything about the array, is not for the fast path.
pub(crate) fn click_array(bytes: &[u8], max: usize, salt: &UserSalt) -> Option<Vec<Click>> {
    let mut cursor = Cursor::new(bytes)?;
    cursor.expect(b'[')?;
    cursor.skip_whitespace();
    let mut clicks = Vec::with_capacity(max.min(bytes.len() / SHORTEST_CLICK_BYTES));
    if cursor.peek() == Some(b']') {
        cursor.at += 1;
    } else {
        loop {
            if clicks.len() == max {
                return None;
            }
            clicks.push(cursor.click(salt)?);
            match cursor.token()? {
                b',' => {}
                b']' => break,
                _ => return None,
            }
        }
    }
    cursor.skip_whitespace();
    cursor.at_end().then_some(clicks)
}

/// The values of a click object as found, each at most once.
#[derive(Default)]
struct Fields<'a> {
    ad: Option<&'a str>,
    ts: Option<EventTime>,
    user: Option<&'a str>,
    request_id: Option<RequestId>,
    campaign: Option<()>,
}

impl Fields<'_> {
    /// The click, if no field is missing; only then is the user id hashed.
    fn into_click(self, salt: &UserSalt) -> Option<Click> {
        let (ad, ts, user_id, request_id) = (self.ad?, self.ts?, self.user?, self.request_id?);
        Some(Click { ad: Key::from(ad), ts, user: user_key(salt, user_id), request_id })
    }
}

/// A position in the input. Every read is bounds-checked: running off the
/// end is `None` like any other surprise.
struct Cursor<'a> {
    /// The whole input, checked to be UTF-8 once, so that the strings cut
    /// out of it need no check of their own.
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Option<Cursor<'a>> {
        Some(Cursor { text: std::str::from_utf8(bytes).ok()?, at: 0 })
    }

    fn rest(&self) -> &'a [u8] {
        self.text.as_bytes().get(self.at..).unwrap_or_default()
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn at_end(&self) -> bool {
        self.at == self.text.len()
    }

    /// Skips JSON's insignificant whitespace, as serde_json does.
    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(is_whitespace) {
            self.at += 1;
        }
    }

    /// The next byte that is not whitespace, consumed.
    fn token(&mut self) -> Option<u8> {
        loop {
            let b = self.next()?;
            if !is_whitespace(b) {
                return Some(b);
            }
        }
    }

    fn expect(&mut self, want: u8) -> Option<()> {
        (self.token()? == want).then_some(())
    }

    fn click(&mut self, salt: &UserSalt) -> Option<Click> {
        self.expect(b'{')?;
        let mut fields = Fields::default();
        loop {
            self.expect(b'"')?;
            let field = self.field_name()?;
            self.expect(b':')?;
            self.value(field, &mut fields)?;
            match self.token()? {
                b',' => {}
                b'}' => return fields.into_click(salt),
                _ => return None,
            }
        }
    }

    /// A field name and its closing quote, written without escapes.
    fn field_name(&mut self) -> Option<Field> {
        let rest = self.rest();
        let quoted = |name: &'static [u8]| rest.starts_with(name).then_some(name.len());
        let (field, len) = match rest.first()? {
            b'a' => (Field::AdId, quoted(b"ad_id\"")?),
            b't' => (Field::Timestamp, quoted(b"timestamp\"")?),
            b'u' => (Field::UserId, quoted(b"user_id\"")?),
            b'r' => (Field::RequestId, quoted(b"request_id\"")?),
            b'c' => (Field::CampaignId, quoted(b"campaign_id\"")?),
            _ => return None,
        };
        self.at += len;
        Some(field)
    }

    /// Reads the value of `field` into `fields`; `None` if it is there already.
    fn value(&mut self, field: Field, fields: &mut Fields<'a>) -> Option<()> {
        match field {
            Field::AdId => fill(&mut fields.ad, self.key()?),
            Field::Timestamp => fill(&mut fields.ts, self.unsigned().filter(|&ts| ts <= MAX_EVENT_TIME_MS)?),
            Field::UserId => fill(&mut fields.user, self.user_id()?),
            Field::RequestId => fill(&mut fields.request_id, self.request_id()?),
            Field::CampaignId => {
                // Checked, then dropped, as on the serde path.
                self.key()?;
                fill(&mut fields.campaign, ())
            }
        }
    }

    /// A string whose every byte passes `plain`, which must refuse `"`,
    /// `\`, control and non-ASCII bytes.
    fn plain_string(&mut self, plain: impl Fn(u8) -> bool) -> Option<&'a str> {
        self.expect(b'"')?;
        let len = self.rest().iter().position(|&b| !plain(b))?;
        let start = self.at;
        self.at += len;
        self.expect_quote()?;
        self.text.get(start..start + len)
    }

    /// A closing quote, right here.
    fn expect_quote(&mut self) -> Option<()> {
        (self.next()? == b'"').then_some(())
    }

    /// An ad or campaign id that passes `check_key`.
    fn key(&mut self) -> Option<&'a str> {
        let key = self.plain_string(is_key_byte)?;
        (1..=MAX_KEY_BYTES).contains(&key.len()).then_some(key)
    }

    fn user_id(&mut self) -> Option<&'a str> {
        let user = self.plain_string(|b| (b' '..=0x7f).contains(&b) && b != b'"' && b != b'\\')?;
        (1..=MAX_USER_ID_BYTES).contains(&user.len()).then_some(user)
    }

    fn request_id(&mut self) -> Option<RequestId> {
        self.expect(b'"')?;
        let uuid = self.rest().get(..36)?;
        self.at += 36;
        self.expect_quote()?;
        parse_uuid(uuid)
    }

    /// An integer in serde_json's grammar (`0` or `[1-9][0-9]*`, no sign)
    /// that fits `u64`: what serde_json reads as a `u64`. Whatever follows
    /// is left for the caller, which finds no `,` or `}` after a fraction or
    /// an exponent.
    fn unsigned(&mut self) -> Option<u64> {
        self.skip_whitespace();
        let rest = self.rest();
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let number = rest.get(..digits)?;
        // serde_json refuses a leading zero.
        if digits == 0 || digits > U64_DIGITS || (digits > 1 && number.first() == Some(&b'0')) {
            return None;
        }
        self.at += digits;
        let (safe, last) = number.split_at(digits.min(U64_DIGITS - 1));
        let value = safe.iter().fold(0, |value, &d| value * 10 + u64::from(d - b'0'));
        last.iter().try_fold(value, |value, &d| value.checked_mul(10)?.checked_add(u64::from(d - b'0')))
    }
}

/// JSON's insignificant whitespace, as serde_json reads it.
fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\t' | b'\r')
}

/// Stores the first value of a field; a second one is `None`.
fn fill<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    slot.replace(value).is_none().then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::json::{decode_click, decode_click_serde};
    use crate::event::validate::ClickError;

    const SALT: UserSalt = UserSalt::from_bytes(*b"fast.path.salt16");

    /// A click as `tally gen` writes it, field by field.
    const FIELDS: [(&str, &str); 4] = [
        ("ad_id", r#""ad-000042""#),
        ("timestamp", "1767225600123"),
        ("user_id", r#""u-17""#),
        ("request_id", r#""6f1c0f5e-9a4b-4c1d-8e2f-0a1b2c3d4e5f""#),
    ];
    const CAMPAIGN: (&str, &str) = ("campaign_id", r#""camp:7""#);

    /// A click object of `fields` in this order, with `gap` around every token.
    fn object(fields: &[(&str, &str)], gap: &str) -> String {
        let members: Vec<String> = fields.iter().map(|(k, v)| format!("{gap}\"{k}\"{gap}:{gap}{v}{gap}")).collect();
        format!("{gap}{{{}}}{gap}", members.join(","))
    }

    fn canonical() -> String {
        object(&FIELDS, "")
    }

    /// `FIELDS` with the raw JSON value of `field` replaced.
    fn with(field: &str, value: &str) -> String {
        let fields: Vec<(&str, &str)> = FIELDS.iter().map(|&(k, v)| (k, if k == field { value } else { v })).collect();
        object(&fields, "")
    }

    fn fast(line: &str) -> Option<Click> {
        click_line(line.as_bytes(), &SALT)
    }

    /// The serde path's answer for `line`, once it is checked that the fast
    /// path, when it answers, gives the same click, and that `decode_click`
    /// gives the same answer.
    fn agreed(line: &[u8]) -> Result<Click, ClickError> {
        let serde = decode_click_serde(line, &SALT);
        if let Some(click) = click_line(line, &SALT) {
            assert_eq!(serde.as_ref(), Ok(&click), "the fast path accepted {:?}", String::from_utf8_lossy(line));
        }
        assert_eq!(decode_click(line, &SALT), serde, "{:?}", String::from_utf8_lossy(line));
        serde
    }

    fn permutations<T: Copy>(items: &[T]) -> Vec<Vec<T>> {
        if items.is_empty() {
            return vec![vec![]];
        }
        let mut all = Vec::new();
        for i in 0..items.len() {
            let mut rest = items.to_vec();
            let first = rest.remove(i);
            for mut tail in permutations(&rest) {
                tail.insert(0, first);
                all.push(tail);
            }
        }
        all
    }

    #[test]
    fn a_canonical_click_takes_the_fast_path() {
        let click = fast(&canonical()).expect("fast path");
        let want = Click {
            ad: Key::from("ad-000042"),
            ts: 1_767_225_600_123,
            user: user_key(&SALT, "u-17"),
            request_id: 0x6f1c0f5e_9a4b_4c1d_8e2f_0a1b2c3d4e5f,
        };
        assert_eq!(click, want);
        assert_eq!(agreed(canonical().as_bytes()), Ok(want));
    }

    #[test]
    fn every_field_order_takes_the_fast_path() {
        let mut with_campaign = FIELDS.to_vec();
        with_campaign.push(CAMPAIGN);
        let want = fast(&canonical()).expect("fast path");
        for fields in permutations(&FIELDS).into_iter().chain(permutations(&with_campaign)) {
            let line = object(&fields, "");
            assert_eq!(fast(&line).as_ref(), Some(&want), "{line}");
            agreed(line.as_bytes()).unwrap();
        }
    }

    #[test]
    fn whitespace_around_any_token_takes_the_fast_path() {
        let want = fast(&canonical()).expect("fast path");
        for gap in [" ", "\t", "\n", "\r", " \r\n\t  "] {
            let line = object(&FIELDS, gap);
            assert_eq!(fast(&line).as_ref(), Some(&want), "{line:?}");
            agreed(line.as_bytes()).unwrap();
        }
    }

    #[test]
    fn values_at_the_edges_of_the_rules_take_the_fast_path() {
        let printable: String = (b' '..=0x7f).filter(|&b| b != b'"' && b != b'\\').map(char::from).collect();
        let key_chars = "ABCXYZabcxyz0189._:-";
        let longest_key = key_chars.repeat(4)[..MAX_KEY_BYTES].to_owned();
        for (field, value) in [
            ("timestamp", "0".to_owned()),
            ("timestamp", "7".to_owned()),
            ("timestamp", MAX_EVENT_TIME_MS.to_string()),
            ("ad_id", format!("\"{longest_key}\"")),
            ("ad_id", "\"a\"".to_owned()),
            ("user_id", format!("\"{}\"", "u".repeat(MAX_USER_ID_BYTES))),
            ("user_id", format!("\"{printable}\"")),
            ("user_id", "\"x\"".to_owned()),
            ("request_id", "\"6F1C0F5E-9A4B-4C1D-8E2F-0A1B2C3D4E5F\"".to_owned()),
            ("request_id", "\"00000000-0000-0000-0000-000000000000\"".to_owned()),
        ] {
            let line = with(field, &value);
            let click = fast(&line).unwrap_or_else(|| panic!("not on the fast path: {line}"));
            assert_eq!(agreed(line.as_bytes()), Ok(click));
        }
        let line = object(&[CAMPAIGN, FIELDS[0], FIELDS[1], FIELDS[2], FIELDS[3]], "").replace("camp:7", &longest_key);
        assert!(fast(&line).is_some(), "{line}");
    }

    /// Each line, whether serde accepts it, and why it is not for the fast path.
    fn fallbacks() -> Vec<(String, bool, &'static str)> {
        let mut cases = vec![
            (with("ad_id", r#""ad\u002d000042""#), true, "escape in ad_id"),
            (with("user_id", r#""u\/17""#), true, "escape in user_id"),
            (with("user_id", r#""u-17\u00e9""#), true, "\\u escape in user_id"),
            (with("user_id", "\"u-17é\""), true, "non-ASCII user_id"),
            (with("request_id", r#""6f1c0f5e-9a4b-4c1d-8e2f-0a1b2c3d4e5\u0066""#), true, "escape in request_id"),
            (canonical().replace(r#""ad_id""#, r#""ad\u005fid""#), true, "escape in a field name"),
            (object(&[FIELDS[0], FIELDS[1], FIELDS[2], FIELDS[3], ("campaign_id", r#""c\u0031""#)], ""), true, "escape in campaign_id"),
        ];
        let rejected = [
            (with("timestamp", "01767225600123"), "leading zero"),
            (with("timestamp", "00"), "two zeros"),
            (with("timestamp", "-1"), "negative"),
            (with("timestamp", "-0"), "negative zero"),
            (with("timestamp", "+1"), "plus sign"),
            (with("timestamp", "1767225600123.0"), "fraction"),
            (with("timestamp", "0.5"), "fraction after zero"),
            (with("timestamp", "1e3"), "exponent"),
            (with("timestamp", "1E3"), "exponent"),
            (with("timestamp", "0e0"), "exponent after zero"),
            (with("timestamp", "253402300800000"), "after the year 9999"),
            (with("timestamp", "18446744073709000000"), "after the year 9999"),
            (with("timestamp", "18446744073709551615"), "after the year 9999"),
            (with("timestamp", "18446744073709551616"), "beyond u64"),
            (with("timestamp", "99999999999999999999"), "beyond u64"),
            (with("timestamp", "1767225600123x"), "junk after the number"),
            (with("timestamp", r#""1767225600123""#), "a string"),
            (with("timestamp", "null"), "null"),
            (with("timestamp", "true"), "a boolean"),
            (with("timestamp", "[1]"), "an array"),
            (with("timestamp", "{}"), "an object"),
            (with("ad_id", r#""""#), "empty ad_id"),
            (with("ad_id", &format!("\"{}\"", "a".repeat(MAX_KEY_BYTES + 1))), "ad_id too long"),
            (with("ad_id", r#""ad 1""#), "space in ad_id"),
            (with("ad_id", r#""ad/1""#), "slash in ad_id"),
            (with("ad_id", "\"adé\""), "non-ASCII ad_id"),
            (with("ad_id", "42"), "number as ad_id"),
            (with("ad_id", "null"), "null ad_id"),
            (with("ad_id", r#""ad-1"#), "unterminated string"),
            (with("user_id", r#""""#), "empty user_id"),
            (with("user_id", &format!("\"{}\"", "u".repeat(MAX_USER_ID_BYTES + 1))), "user_id too long"),
            (with("user_id", "\"u\u{1}7\""), "control byte in user_id"),
            (with("user_id", "\"u\t7\""), "raw tab in user_id"),
            (with("user_id", "17"), "number as user_id"),
            (with("request_id", r#""6f1c0f5e-9a4b-4c1d-8e2f-0a1b2c3d4e5""#), "short UUID"),
            (with("request_id", r#""6f1c0f5e-9a4b-4c1d-8e2f-0a1b2c3d4e5f0""#), "long UUID"),
            (with("request_id", r#""6f1c0f5e-9a4b-4c1d-8e2f-0a1b2c3d4e5g""#), "not hex"),
            (with("request_id", r#""6f1c0f5e_9a4b_4c1d_8e2f_0a1b2c3d4e5f""#), "not hyphens"),
            (with("request_id", "1"), "number as request_id"),
            (object(&[FIELDS[0], FIELDS[1], FIELDS[2], FIELDS[3], ("campaign_id", r#""c 1""#)], ""), "bad campaign_id"),
            (object(&[FIELDS[0], FIELDS[1], FIELDS[2], FIELDS[3], ("campaign_id", "7")], ""), "number as campaign_id"),
            (object(&[FIELDS[0], FIELDS[1], FIELDS[2], FIELDS[3], CAMPAIGN, CAMPAIGN], ""), "duplicate campaign_id"),
            (object(&[FIELDS[0], FIELDS[1], FIELDS[2], FIELDS[3], ("country", r#""NL""#)], ""), "unknown field"),
            (object(&[FIELDS[0], FIELDS[1], FIELDS[2], FIELDS[3], ("Ad_id", r#""a""#)], ""), "field name in another case"),
            (object(&[FIELDS[0], FIELDS[1], FIELDS[2], FIELDS[3], FIELDS[0]], ""), "duplicate ad_id"),
            (object(&[FIELDS[0], FIELDS[1], FIELDS[2], FIELDS[3], FIELDS[1]], ""), "duplicate timestamp"),
            (object(&[FIELDS[0], FIELDS[1], FIELDS[2], FIELDS[3], FIELDS[2]], ""), "duplicate user_id"),
            (object(&[FIELDS[0], FIELDS[1], FIELDS[2], FIELDS[3], FIELDS[3]], ""), "duplicate request_id"),
            (object(&FIELDS[1..], ""), "missing ad_id"),
            (object(&[FIELDS[0], FIELDS[2], FIELDS[3]], ""), "missing timestamp"),
            (object(&[FIELDS[0], FIELDS[1], FIELDS[3]], ""), "missing user_id"),
            (object(&FIELDS[..3], ""), "missing request_id"),
            ("{}".to_owned(), "empty object"),
            (canonical().replace('}', ",}"), "trailing comma"),
            (canonical().replacen(':', "", 1), "missing colon"),
            (canonical().replacen(',', "", 1), "missing comma"),
            (canonical().replacen('"', "'", 2), "single quotes"),
            (format!("{} x", canonical()), "trailing characters"),
            (format!("{0}{0}", canonical()), "two objects"),
            (format!("[{}]", canonical()), "an array"),
            (canonical()[..canonical().len() - 1].to_owned(), "unterminated object"),
            (format!("\u{c}{}", canonical()), "form feed is not JSON whitespace"),
            (format!("\u{feff}{}", canonical()), "byte order mark"),
            (String::new(), "empty line"),
            (" \t\r".to_owned(), "blank line"),
            ("42".to_owned(), "not an object"),
        ];
        cases.extend(rejected.into_iter().map(|(line, why)| (line, false, why)));
        cases
    }

    #[test]
    fn everything_else_falls_back_to_serde() {
        for (line, accepted, why) in fallbacks() {
            assert_eq!(fast(&line), None, "{why}: {line:?}");
            assert_eq!(agreed(line.as_bytes()).is_ok(), accepted, "{why}: {line:?}");
        }
        let mut invalid_utf8 = with("user_id", r#""u-?""#).into_bytes();
        if let Some(at) = invalid_utf8.iter().position(|&b| b == b'?') {
            invalid_utf8[at] = 0xff;
        }
        assert_eq!(click_line(&invalid_utf8, &SALT), None, "invalid UTF-8 in user_id");
        assert!(agreed(&invalid_utf8).is_err());
    }

    /// Guards the contract of the fast path: every line one byte away from a
    /// click (each byte replaced by each of the 256 values, each byte
    /// removed, each of the 256 values inserted anywhere, every truncation)
    /// decodes as on the serde path.
    #[test]
    fn every_single_byte_change_decodes_as_on_the_serde_path() {
        let mut with_campaign = FIELDS.to_vec();
        with_campaign.insert(2, CAMPAIGN);
        let bases = [canonical(), object(&with_campaign, " "), with("timestamp", &MAX_EVENT_TIME_MS.to_string()), with("timestamp", "0")];
        let (mut fast_answers, mut serde_answers) = (0, 0);
        for base in &bases {
            let base = base.as_bytes();
            let mut check = |line: &[u8]| {
                if click_line(line, &SALT).is_some() {
                    fast_answers += 1;
                } else {
                    serde_answers += 1;
                }
                let _ = agreed(line);
            };
            for at in 0..=base.len() {
                check(&base[..at]);
                for b in 0..=u8::MAX {
                    let mut inserted = base.to_vec();
                    inserted.insert(at, b);
                    check(&inserted);
                    if at < base.len() {
                        let mut replaced = base.to_vec();
                        replaced[at] = b;
                        check(&replaced);
                    }
                }
                if at < base.len() {
                    let mut removed = base.to_vec();
                    removed.remove(at);
                    check(&removed);
                }
            }
        }
        // Both paths were exercised: changed digits, hex digits, user ids,
        // whitespace stay fast; most changes break the click.
        assert!(fast_answers > 10_000 && serde_answers > 200_000, "{fast_answers} fast, {serde_answers} serde");
    }

    #[test]
    fn arrays_of_plain_clicks_take_the_fast_path() {
        let one = fast(&canonical()).expect("fast path");
        let c = canonical();
        for (body, len) in [
            ("[]".to_owned(), 0),
            (" \n[ \t]\r\n".to_owned(), 0),
            (format!("[{c}]"), 1),
            (format!("[{c},{c},{c}]"), 3),
            (format!(" [\n {c} ,\n\t{c}\r\n] \n"), 2),
        ] {
            assert_eq!(click_array(body.as_bytes(), 3, &SALT), Some(vec![one.clone(); len]), "{body:?}");
        }
    }

    #[test]
    fn arrays_with_anything_unusual_fall_back() {
        let c = canonical();
        let escaped = with("user_id", r#""u\u0031""#);
        for body in [
            format!("[{c},{c},{c},{c}]"),
            format!("[{c},{escaped}]"),
            format!("[{c},5]"),
            format!("[{c},]"),
            format!("[,{c}]"),
            format!("[{c} {c}]"),
            format!("[{c}] x"),
            format!("[{c}"),
            format!("[[{c}]]"),
            format!("[{c},{{}}]"),
            c.clone(),
            String::new(),
            "[".to_owned(),
            "[,]".to_owned(),
        ] {
            assert_eq!(click_array(body.as_bytes(), 3, &SALT), None, "{body:?}");
        }
        assert_eq!(click_array(format!("[{c}]").as_bytes(), 0, &SALT), None, "over the cap");
        assert_eq!(click_array(b"[]", 0, &SALT), Some(vec![]));
    }
}
