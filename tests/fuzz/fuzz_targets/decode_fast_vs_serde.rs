//! Fuzzes the fast path of the body decoders against serde.
//!
//! `decode_body` reads plain clicks with a hand-written fast path and leaves
//! everything it is not sure of to serde; `decode_body_serde` reads with
//! serde alone. For any bytes, read as each kind of body, the two must give
//! the same answer (see `tally_fuzz::compare_fast_and_serde`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| tally_fuzz::compare_fast_and_serde(body));
