//! The rules a click's fields must meet, and the error that names the one
//! that failed.
//!
//! Shared by every decoder of clicks (JSON lines and bodies, on the serde
//! and the fast path; Kafka messages) and by everything else that takes an
//! id from a user (the catalog, the query API, ingest client names): one
//! charset and one length for ids, one length for user ids, one UUID form
//! for request ids. A failed check is a [`ClickError`]: the field at fault
//! and the reason, never a panic.

use std::borrow::Cow;

use thiserror::Error;

use super::RequestId;

/// Longest ad or campaign id, in bytes.
pub const MAX_KEY_BYTES: usize = 64;

/// Longest `user_id`, in bytes.
pub const MAX_USER_ID_BYTES: usize = 128;

/// Longest unknown field name echoed back in an error, in chars: the name is
/// untrusted input.
pub(crate) const MAX_SHOWN_NAME_CHARS: usize = 64;

/// The error "field" of problems that belong to the whole line (not JSON, not
/// an object, empty, too long).
pub const LINE: &str = "line";

/// Why a click line was rejected: the field at fault and the reason.
///
/// `field` is a JSON field name, or [`LINE`] when the line as a whole is bad.
/// It is a `Cow` because an unknown field is named as found in the input.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("field '{field}': {reason}")]
pub struct ClickError {
    pub field: Cow<'static, str>,
    pub reason: String,
}

impl ClickError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> ClickError {
        ClickError { field: Cow::Borrowed(field), reason: reason.into() }
    }

    pub(crate) fn line(reason: impl Into<String>) -> ClickError {
        ClickError::new(LINE, reason)
    }

    pub(crate) fn unknown_field(name: &str) -> ClickError {
        let mut shown: String = name.chars().take(MAX_SHOWN_NAME_CHARS).flat_map(char::escape_debug).collect();
        if name.chars().nth(MAX_SHOWN_NAME_CHARS).is_some() {
            shown.push('…');
        }
        ClickError {
            field: Cow::Owned(shown),
            reason: "unknown field (allowed: ad_id, timestamp, user_id, request_id, campaign_id)".to_owned(),
        }
    }
}

/// Why a string is not a valid ad, campaign or advertiser id.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum KeyError {
    #[error("empty")]
    Empty,
    #[error("too long: {0} bytes (max {MAX_KEY_BYTES})")]
    TooLong(usize),
    #[error("invalid character {ch:?} at byte {at} (allowed: A-Z a-z 0-9 . _ : -)")]
    BadChar { ch: char, at: usize },
}

/// Checks the id rule shared by clicks and the catalog: 1–64 bytes of
/// `[A-Za-z0-9._:-]`. The charset keeps ids safe to print, to put in CSV
/// without quoting and to use as store keys.
pub fn check_key(s: &str) -> Result<(), KeyError> {
    if s.is_empty() {
        return Err(KeyError::Empty);
    }
    if s.len() > MAX_KEY_BYTES {
        return Err(KeyError::TooLong(s.len()));
    }
    match s.bytes().position(|b| !is_key_byte(b)) {
        // Every byte before `at` is ASCII, so `at` starts a char.
        Some(at) => Err(KeyError::BadChar { ch: s[at..].chars().next().unwrap_or('?'), at }),
        None => Ok(()),
    }
}

pub(crate) fn is_key_byte(b: u8) -> bool {
    KEY_BYTES[usize::from(b)]
}

/// The id charset as a table: it is looked up for every byte of every id.
static KEY_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < table.len() {
        let byte = b as u8;
        table[b] = byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'-');
        b += 1;
    }
    table
};

/// Parses a canonical `8-4-4-4-12` hex UUID, any case, as its big-endian
/// 128-bit value.
///
/// Every click carries one, so the digits are read eight at a time as one
/// `u64` ([`hex8`]) instead of one by one.
pub(crate) fn parse_uuid(s: &[u8]) -> Option<RequestId> {
    let s: &[u8; 36] = s.try_into().ok()?;
    if s[8] != b'-' || s[13] != b'-' || s[18] != b'-' || s[23] != b'-' {
        return None;
    }
    let word = |at: usize| s.get(at..at + 8).and_then(|w| w.try_into().ok()).map(u64::from_be_bytes);
    let half = |at: usize| s.get(at..at + 4).and_then(|w| w.try_into().ok()).map(u32::from_be_bytes).map(u64::from);
    let digits = [word(0)?, (half(9)? << 32) | half(14)?, (half(19)? << 32) | half(24)?, word(28)?];
    digits.iter().try_fold(0, |value: RequestId, &eight| Some((value << 32) | RequestId::from(hex8(eight)?)))
}

/// The value of eight ASCII hex digits, any case, packed in `x` with the
/// first digit in the top byte; `None` if any byte is not a hex digit.
///
/// Each byte is classified in parallel (SWAR): for a byte `b < 0x80`, the top
/// bit of `b + (0x80 - c)` says `b >= c`, and the sum never carries into the
/// next byte. Bytes `>= 0x80` would carry, so they are refused first.
fn hex8(x: u64) -> Option<u32> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOPS: u64 = ONES * 0x80;
    let at_least = |v: u64, c: u8| v.wrapping_add(ONES * u64::from(0x80 - c)) & TOPS;
    if x & TOPS != 0 {
        return None;
    }
    let digit = at_least(x, b'0') & !at_least(x, b'9' + 1);
    let folded = x | (ONES * 0x20); // 'A'..='F' to 'a'..='f'
    let letter = at_least(folded, b'a') & !at_least(folded, b'f' + 1);
    if digit | letter != TOPS {
        return None;
    }
    // '0'..='9' end in 0..9, 'a'..='f' and 'A'..='F' in 1..6 (+ 9).
    let nibbles = (x & (ONES * 0x0f)) + (letter >> 7) * 9;
    let pairs = (nibbles | (nibbles >> 4)) & 0x00ff_00ff_00ff_00ff;
    let quads = (pairs | (pairs >> 8)) & 0x0000_ffff_0000_ffff;
    Some(((quads | (quads >> 16)) & 0xffff_ffff) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::XorShift;

    const UUID: &str = "0123abcd-4567-89ef-0123-456789abcdef";
    const UUID_VALUE: u128 = 0x0123abcd_4567_89ef_0123_456789abcdef;

    #[test]
    fn uuid_is_big_endian_and_any_case() {
        assert_eq!(parse_uuid(b"00000000-0000-0000-0000-000000000001"), Some(1));
        assert_eq!(parse_uuid(UUID.to_uppercase().as_bytes()), Some(UUID_VALUE));
        assert_eq!(parse_uuid(b"ffffffff-ffff-ffff-ffff-ffffffffffff"), Some(u128::MAX));
        assert_eq!(parse_uuid(b"fEdCbA98-7654-3210-aBcD-eF0123456789"), Some(0xfedcba98_7654_3210_abcd_ef0123456789));
    }

    /// The UUID rule one byte at a time, as plainly as it can be said.
    fn parse_uuid_bytewise(s: &[u8]) -> Option<RequestId> {
        if s.len() != 36 {
            return None;
        }
        let mut value: RequestId = 0;
        for (i, &b) in s.iter().enumerate() {
            if [8, 13, 18, 23].contains(&i) {
                if b != b'-' {
                    return None;
                }
                continue;
            }
            let digit = (b as char).to_digit(16)?;
            value = (value << 4) | RequestId::from(digit);
        }
        Some(value)
    }

    /// Guards the eight-digits-at-a-time parser: every byte value at every
    /// position of several UUIDs, and every length around 36, give what the
    /// bytewise rule gives.
    #[test]
    fn uuid_parser_matches_the_bytewise_rule_for_every_single_byte_change() {
        let uuids = [
            UUID.to_owned(),
            UUID.to_uppercase(),
            "00000000-0000-0000-0000-000000000000".to_owned(),
            "ffffffff-FFFF-9999-aaaa-AAAAAAAAAAAA".to_owned(),
        ];
        for uuid in &uuids {
            let bytes = uuid.as_bytes();
            assert!(parse_uuid(bytes).is_some());
            for at in 0..bytes.len() {
                for b in 0..=u8::MAX {
                    let mut changed = bytes.to_vec();
                    changed[at] = b;
                    assert_eq!(parse_uuid(&changed), parse_uuid_bytewise(&changed), "{:?}", String::from_utf8_lossy(&changed));
                }
                let mut shorter = bytes.to_vec();
                shorter.remove(at);
                assert_eq!(parse_uuid(&shorter), None);
                let mut longer = bytes.to_vec();
                longer.insert(at, b'0');
                assert_eq!(parse_uuid(&longer), None);
            }
        }
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let alphabet = b"0123456789abcdefABCDEFgG-/:@`{\x7f\x80\xff";
        for _ in 0..20_000 {
            let mut s = uuids[rng.below(uuids.len())].as_bytes().to_vec();
            for _ in 0..=rng.below(3) {
                let at = rng.below(s.len());
                s[at] = alphabet[rng.below(alphabet.len())];
            }
            assert_eq!(parse_uuid(&s), parse_uuid_bytewise(&s), "{:?}", String::from_utf8_lossy(&s));
        }
    }
}
