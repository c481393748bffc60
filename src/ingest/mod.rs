//! Ingestion: every click enters the log through here.
//!
//! Two front doors share one decoder and one guarantee (a click is
//! acknowledged only once durable, with its user id already replaced by a
//! keyed hash):
//!
//! - the HTTP API ([`server`]): signatures ([`auth`]), each accepted once
//!   ([`replay`]), rate limits per client and per address ([`limit`]), body
//!   decoding ([`decode`]), the optional Redis pre-filter ([`prefilter`]),
//!   configured by [`config`];
//! - `tally log import FILE` ([`import`]), for files of click lines.
//!
//! [`client`] is the matching HTTP client: it signs, batches and retries
//! with the same request ids, for load generators and tests.

pub mod auth;
pub mod client;
pub mod config;
pub mod decode;
mod import;
pub mod kafka;
pub mod limit;
pub mod prefilter;
pub mod replay;
pub mod server;
pub mod service;

pub use import::{import, import_path, ImportError, ImportReport, IMPORT_BATCH_CLICKS};
