//! Fuzzes the decoder of `POST /v1/clicks/batch` bodies sent as
//! `application/x-ndjson`: one click object per line, LF or CRLF.
//!
//! A client can send any bytes, so `decode_body` must return on every input
//! (a panic is a crash found) and its answer must keep the invariants checked
//! by `tally_fuzz::decode_and_check`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tally::ingest::decode::BodyKind;

fuzz_target!(|body: &[u8]| tally_fuzz::decode_and_check(BodyKind::Ndjson, body));
