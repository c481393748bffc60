//! The record framing: how one [`Click`] is laid out in a segment file.
//!
//! ```text
//! u32 LE  payload length (33 + ad length)
//! u32 LE  CRC32C of the payload
//! payload: u8 ad length, ad bytes (UTF-8), ts u64 LE, user u64 LE, request_id u128 LE
//! ```
//!
//! The user is the keyed hash made at the source, so no raw user id is ever
//! written. `ts` is at most [`MAX_EVENT_TIME_MS`]: encoding refuses a larger
//! one and decoding reports it as a fault of a whole record. The format is part of the log's on-disk contract (`dir/meta`
//! carries its version); changing it needs a new format version.
//!
//! Durability is not decided here: a record is durable once the segment file
//! holding it has been fsynced (see the parent module). This module only
//! tells a complete, intact record from anything else, without panicking on
//! any input: decoding untrusted bytes is how recovery finds torn tails and
//! corruption.

use std::fmt;

use compact_str::CompactString;

use crate::event::{Click, MAX_EVENT_TIME_MS, MAX_EVENT_TIME_REASON};

use super::LogError;

/// Length and CRC, in bytes.
pub const HEADER_BYTES: usize = 8;
/// Longest ad id a record holds: its length is one byte.
pub const MAX_AD_BYTES: usize = u8::MAX as usize;
/// Payload of an empty ad id: length byte, ts, user, request id.
pub const MIN_PAYLOAD_BYTES: usize = 1 + 8 + 8 + 16;
/// Payload of the longest ad id.
pub const MAX_PAYLOAD_BYTES: usize = MIN_PAYLOAD_BYTES + MAX_AD_BYTES;
/// Longest record, header included.
pub const MAX_RECORD_BYTES: usize = HEADER_BYTES + MAX_PAYLOAD_BYTES;

/// Appends the record of `click` to `out`; returns its length in bytes.
pub fn encode(click: &Click, out: &mut Vec<u8>) -> Result<usize, LogError> {
    let ad = click.ad.as_bytes();
    if ad.len() > MAX_AD_BYTES {
        return Err(LogError::AdTooLong { len: ad.len() });
    }
    if click.ts > MAX_EVENT_TIME_MS {
        return Err(LogError::TimestampTooLarge { ts: click.ts });
    }
    let payload_len = MIN_PAYLOAD_BYTES + ad.len();
    let start = out.len();
    out.reserve(HEADER_BYTES + payload_len);
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // CRC, filled in below
    out.push(ad.len() as u8);
    out.extend_from_slice(ad);
    out.extend_from_slice(&click.ts.to_le_bytes());
    out.extend_from_slice(&click.user.to_le_bytes());
    out.extend_from_slice(&click.request_id.to_le_bytes());
    let crc = crc32c::crc32c(&out[start + HEADER_BYTES..]);
    out[start + 4..start + HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    Ok(HEADER_BYTES + payload_len)
}

/// A decoded record, borrowing the ad id from the bytes it was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View<'a> {
    pub ad: &'a str,
    pub ts: u64,
    pub user: u64,
    pub request_id: u128,
    /// Length of the whole record, header included.
    pub len: usize,
}

impl View<'_> {
    pub fn to_click(&self) -> Click {
        Click { ad: CompactString::from(self.ad), ts: self.ts, user: self.user, request_id: self.request_id }
    }
}

/// Why bytes are not an intact record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The bytes end inside the record: `have` of its `need` bytes.
    Truncated { have: usize, need: usize },
    /// The length field is outside what any record can have.
    Length(u32),
    /// The payload does not match its CRC.
    Crc { stored: u32, computed: u32 },
    /// The CRC matches but the ad length byte disagrees with the payload
    /// length (a writer bug, not a disk fault).
    AdLength { ad_len: u8, payload_len: u32 },
    /// The CRC matches but the ad id is not UTF-8 (a writer bug).
    Utf8,
    /// The CRC matches but the event time is above
    /// [`MAX_EVENT_TIME_MS`] (written before that bound was checked on
    /// every path, or a writer bug): refused here, since window arithmetic
    /// on it would overflow.
    Timestamp(u64),
}

impl Fault {
    /// Whether the record was written whole (its CRC matches): then it is
    /// no torn tail of an unacknowledged append, whatever is wrong with it.
    pub fn whole_record(&self) -> bool {
        matches!(self, Fault::AdLength { .. } | Fault::Utf8 | Fault::Timestamp(_))
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Fault::Truncated { have, need } => write!(f, "record cut short ({have} of {need} bytes)"),
            Fault::Length(len) => {
                write!(f, "payload length {len} out of range ({MIN_PAYLOAD_BYTES}..={MAX_PAYLOAD_BYTES})")
            }
            Fault::Crc { stored, computed } => write!(f, "CRC32C mismatch (stored {stored:#010x}, computed {computed:#010x})"),
            Fault::AdLength { ad_len, payload_len } => {
                write!(f, "ad length {ad_len} does not match payload length {payload_len}")
            }
            Fault::Utf8 => f.write_str("ad id is not UTF-8"),
            Fault::Timestamp(ts) => write!(f, "timestamp {ts} is too large: {MAX_EVENT_TIME_REASON}"),
        }
    }
}

/// Decodes the record at the start of `buf`. Bytes after it are ignored.
pub fn decode(buf: &[u8]) -> Result<View<'_>, Fault> {
    let Some((header, rest)) = buf.split_first_chunk::<HEADER_BYTES>() else {
        return Err(Fault::Truncated { have: buf.len(), need: HEADER_BYTES });
    };
    let payload_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let stored = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let len = payload_len as usize;
    if !(MIN_PAYLOAD_BYTES..=MAX_PAYLOAD_BYTES).contains(&len) {
        return Err(Fault::Length(payload_len));
    }
    let Some(payload) = rest.get(..len) else {
        return Err(Fault::Truncated { have: buf.len(), need: HEADER_BYTES + len });
    };
    let computed = crc32c::crc32c(payload);
    if computed != stored {
        return Err(Fault::Crc { stored, computed });
    }
    let ad_len = payload[0];
    if MIN_PAYLOAD_BYTES + usize::from(ad_len) != len {
        return Err(Fault::AdLength { ad_len, payload_len });
    }
    let (ad, fixed) = payload[1..].split_at(usize::from(ad_len));
    let ad = std::str::from_utf8(ad).map_err(|_| Fault::Utf8)?;
    let ts = u64::from_le_bytes(fixed[0..8].try_into().expect("8 bytes"));
    if ts > MAX_EVENT_TIME_MS {
        return Err(Fault::Timestamp(ts));
    }
    Ok(View {
        ad,
        ts,
        user: u64::from_le_bytes(fixed[8..16].try_into().expect("8 bytes")),
        request_id: u128::from_le_bytes(fixed[16..32].try_into().expect("16 bytes")),
        len: HEADER_BYTES + len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn click(ad: &str) -> Click {
        Click { ad: ad.into(), ts: 1_700_000_000_123, user: 0xdead_beef_f00d, request_id: u128::MAX - 7 }
    }

    #[test]
    fn round_trip() {
        for ad in ["", "a", "ad-42", &"x".repeat(MAX_AD_BYTES), "é:ü"] {
            let mut buf = vec![9, 9]; // encode appends
            let len = encode(&click(ad), &mut buf).unwrap();
            assert_eq!(len, buf.len() - 2);
            assert_eq!(len, HEADER_BYTES + MIN_PAYLOAD_BYTES + ad.len());
            buf.extend_from_slice(b"trailing");
            let view = decode(&buf[2..]).unwrap();
            assert_eq!(view.len, len);
            assert_eq!(view.to_click(), click(ad));
        }
    }

    /// Guards the on-disk format: the bytes of a record must never change
    /// without a new format version in `dir/meta`.
    #[test]
    fn layout_is_pinned() {
        let c = Click { ad: "ab".into(), ts: 0x0102, user: 0x0304, request_id: 0x0506 };
        let mut buf = Vec::new();
        encode(&c, &mut buf).unwrap();
        let mut payload = vec![2, b'a', b'b'];
        payload.extend_from_slice(&0x0102u64.to_le_bytes());
        payload.extend_from_slice(&0x0304u64.to_le_bytes());
        payload.extend_from_slice(&0x0506u128.to_le_bytes());
        assert_eq!(&buf[0..4], &35u32.to_le_bytes());
        assert_eq!(&buf[4..8], &crc32c::crc32c(&payload).to_le_bytes());
        assert_eq!(&buf[8..], &payload[..]);
    }

    #[test]
    fn long_ad_is_an_error() {
        let e = encode(&click(&"x".repeat(MAX_AD_BYTES + 1)), &mut Vec::new()).unwrap_err();
        assert_eq!(e.to_string(), "log: ad id of 256 bytes does not fit a record (max 255)");
    }

    #[test]
    fn every_prefix_is_truncated() {
        let mut buf = Vec::new();
        let len = encode(&click("ad"), &mut buf).unwrap();
        for cut in 0..len {
            assert!(matches!(decode(&buf[..cut]), Err(Fault::Truncated { have, .. }) if have == cut), "cut {cut}");
        }
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let mut buf = Vec::new();
        let len = encode(&click("ad"), &mut buf).unwrap();
        for bit in 0..len * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&bad).is_err(), "bit {bit} went unnoticed");
        }
    }

    #[test]
    fn crc_valid_but_inconsistent_payloads_are_faults() {
        let mut buf = Vec::new();
        encode(&click("ad"), &mut buf).unwrap();
        let reseal = |buf: &mut Vec<u8>| {
            let crc = crc32c::crc32c(&buf[HEADER_BYTES..]);
            buf[4..8].copy_from_slice(&crc.to_le_bytes());
        };
        let mut bad_len = buf.clone();
        bad_len[HEADER_BYTES] = 3;
        reseal(&mut bad_len);
        assert_eq!(decode(&bad_len), Err(Fault::AdLength { ad_len: 3, payload_len: 35 }));
        let mut bad_utf8 = buf.clone();
        bad_utf8[HEADER_BYTES + 1] = 0xff;
        reseal(&mut bad_utf8);
        assert_eq!(decode(&bad_utf8), Err(Fault::Utf8));
        for ts in [MAX_EVENT_TIME_MS + 1, 18_446_744_073_709_000_000] {
            let mut too_late = buf.clone();
            too_late[HEADER_BYTES + 3..HEADER_BYTES + 11].copy_from_slice(&ts.to_le_bytes());
            reseal(&mut too_late);
            assert_eq!(decode(&too_late), Err(Fault::Timestamp(ts)));
            let reason = Fault::Timestamp(ts).to_string();
            assert_eq!(reason, format!("timestamp {ts} is too large: must be at most 253402300799999 (9999-12-31T23:59:59.999Z)"));
        }
        assert!([Fault::Utf8, Fault::Timestamp(0), Fault::AdLength { ad_len: 3, payload_len: 35 }].iter().all(Fault::whole_record));
        assert!(!Fault::Crc { stored: 0, computed: 1 }.whole_record() && !Fault::Truncated { have: 0, need: 8 }.whole_record());
    }

    #[test]
    fn an_event_time_after_the_year_9999_is_not_encoded() {
        let mut buf = Vec::new();
        assert!(encode(&Click { ts: MAX_EVENT_TIME_MS, ..click("ad") }, &mut buf).is_ok());
        let e = encode(&Click { ts: MAX_EVENT_TIME_MS + 1, ..click("ad") }, &mut buf).unwrap_err();
        assert_eq!(
            e.to_string(),
            "log: timestamp 253402300800000 is too large: must be at most 253402300799999 (9999-12-31T23:59:59.999Z)"
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..10_000 {
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if len >= 4 && next() % 2 == 0 {
                // A plausible length, so the CRC check is reached.
                bytes[0..4].copy_from_slice(&((MIN_PAYLOAD_BYTES as u32) + (next() % 8) as u32).to_le_bytes());
            }
            assert!(decode(&bytes).is_err());
        }
    }
}
