//! Sources of clicks: NDJSON files, the seeded generator and the embedded log.
//!
//! All produce validated [`crate::event::Click`]s split into log partitions
//! by request id; the dataflow reads them through
//! [`crate::dataflow::PartitionReader`].

pub mod file;
pub mod generated;
pub mod generator;
pub mod kafka;
pub mod log;
pub mod memory;
pub mod position;
