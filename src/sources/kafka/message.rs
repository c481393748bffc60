//! Kafka messages: one click per message, keyed by its request id.
//!
//! The value is the click as JSON in the HTTP API's format. tally's own
//! ingest never writes a raw `user_id`: it writes `user_key`, the user's
//! keyed hash (16 hex digits) made with the data directory's salt. Any other
//! producer may send the API's `user_id`, which the source hashes with the
//! same salt on read; such raw ids then sit in Kafka (README says so).
//!
//! ```json
//! {"ad_id":"ad-1","timestamp":1767225600000,"user_key":"9f3c0a1b2c3d4e5f","request_id":"83cb6702-89d0-4e11-8be7-092645f884ed"}
//! ```

use std::borrow::Cow;
use std::io::Write;

use serde::Deserialize;

use crate::event::json::decode_click;
use crate::event::salt::UserSalt;
use crate::event::validate::{check_key, parse_uuid, ClickError};
use crate::event::{Click, MAX_EVENT_TIME_MS, MAX_EVENT_TIME_REASON};

/// The message key of a click: its request id, as the API writes it.
pub fn key(click: &Click) -> String {
    let id = click.request_id;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        (id >> 96) as u32,
        (id >> 80) as u16,
        (id >> 64) as u16,
        (id >> 48) as u16,
        id & 0xffff_ffff_ffff
    )
}

/// The message value tally's ingest writes for a click.
pub fn encode(click: &Click, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(b"{\"ad_id\":");
    serde_json::to_writer(&mut *out, click.ad.as_str()).expect("writing to a Vec cannot fail");
    let _ = write!(out, ",\"timestamp\":{},\"user_key\":\"{:016x}\",\"request_id\":\"{}\"}}", click.ts, click.user, key(click));
}

/// A message with `user_key` instead of `user_id` (tally's own ingest).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Hashed<'a> {
    #[serde(borrow)]
    ad_id: Cow<'a, str>,
    timestamp: u64,
    #[serde(borrow)]
    user_key: Cow<'a, str>,
    #[serde(borrow)]
    request_id: Cow<'a, str>,
    #[serde(borrow, default)]
    campaign_id: Option<Cow<'a, str>>,
}

/// Decodes a message value. A value with `user_id` is read exactly as the
/// HTTP API and the file source read a click (its id hashed with `salt`);
/// one with `user_key` carries the hash already.
pub fn decode(value: &[u8], salt: &UserSalt) -> Result<Click, ClickError> {
    if memchr::memmem::find(value, b"\"user_key\"").is_none() {
        return decode_click(value, salt);
    }
    let message: Hashed<'_> = serde_json::from_slice(value).map_err(|e| ClickError { field: "message".into(), reason: e.to_string() })?;
    let field = |name: &'static str, reason: String| ClickError { field: name.into(), reason };
    check_key(&message.ad_id).map_err(|e| field("ad_id", e.to_string()))?;
    if let Some(campaign) = &message.campaign_id {
        check_key(campaign).map_err(|e| field("campaign_id", e.to_string()))?;
    }
    if message.timestamp > MAX_EVENT_TIME_MS {
        return Err(field("timestamp", format!("{} is too large: {MAX_EVENT_TIME_REASON}", message.timestamp)));
    }
    let user = match message.user_key.len() {
        16 => u64::from_str_radix(&message.user_key, 16).ok().filter(|_| message.user_key.bytes().all(|b| b.is_ascii_hexdigit())),
        _ => None,
    }
    .ok_or_else(|| field("user_key", "not 16 hex digits".into()))?;
    let request_id =
        parse_uuid(message.request_id.as_bytes()).ok_or_else(|| field("request_id", "not a UUID (expected 8-4-4-4-12 hex)".into()))?;
    Ok(Click { ad: message.ad_id.as_ref().into(), ts: message.timestamp, user, request_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: UserSalt = UserSalt::FILE_DEFAULT;

    #[test]
    fn tally_messages_round_trip_without_the_raw_user() {
        let click = Click {
            ad: "ad-\"1\"".into(),
            ts: 1_767_225_600_000,
            user: 0x9f3c_0a1b_2c3d_4e5f,
            request_id: 0x83cb_6702_89d0_4e11_8be7_0926_45f8_84ed,
        };
        let mut value = Vec::new();
        encode(&click, &mut value);
        let text = String::from_utf8(value.clone()).unwrap();
        assert!(text.contains("\"user_key\":\"9f3c0a1b2c3d4e5f\"") && !text.contains("user_id"), "{text}");
        assert_eq!(key(&click), "83cb6702-89d0-4e11-8be7-092645f884ed");
        // The escaped ad id is refused by the key rules, like the API does.
        assert_eq!(decode(&value, &SALT).unwrap_err().field, "ad_id");
        let plain = Click { ad: "ad-1".into(), ..click };
        encode(&plain, &mut value);
        assert_eq!(decode(&value, &SALT), Ok(plain));
    }

    #[test]
    fn foreign_messages_with_raw_user_ids_are_hashed_with_the_salt() {
        let value = br#"{"ad_id":"ad-1","timestamp":5,"user_id":"u-1","request_id":"83cb6702-89d0-4e11-8be7-092645f884ed"}"#;
        let click = decode(value, &SALT).unwrap();
        assert_eq!(click.user, crate::event::salt::user_key(&SALT, "u-1"));
    }

    #[test]
    fn bad_messages_name_their_field() {
        let uuid = "83cb6702-89d0-4e11-8be7-092645f884ed";
        let cases = [
            (format!(r#"{{"ad_id":"ad-1","timestamp":5,"user_key":"xyz","request_id":"{uuid}"}}"#), "user_key"),
            (format!(r#"{{"ad_id":"ad 1","timestamp":5,"user_key":"0000000000000001","request_id":"{uuid}"}}"#), "ad_id"),
            (r#"{"ad_id":"ad-1","timestamp":5,"user_key":"0000000000000001","request_id":"nope"}"#.to_owned(), "request_id"),
            (format!(r#"{{"ad_id":"ad-1","timestamp":253402300800000,"user_key":"0000000000000001","request_id":"{uuid}"}}"#), "timestamp"),
            (format!(r#"{{"ad_id":"ad-1","user_key":"0000000000000001","request_id":"{uuid}","extra":1}}"#), "message"),
            ("not json".to_owned(), "line"),
        ];
        for (value, field) in cases {
            assert_eq!(decode(value.as_bytes(), &SALT).unwrap_err().field, field, "{value}");
        }
    }
}
