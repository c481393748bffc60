//! tally: exactly-once ad click aggregation on Timely Dataflow.
//!
//! The module tree follows the pipeline: [`sources`] and [`ingest`] make
//! clicks by the rules of [`event`] → [`dataflow`] → [`sink`], configured by
//! a [`job`] (read through [`config`]) and driven by [`run`].

pub mod backfill;
pub mod catalog;
pub mod config;
pub mod datadir;
pub mod dataflow;
pub mod event;
pub mod exit;
pub mod hex;
pub mod http;
pub mod ingest;
pub mod job;
pub mod keys;
pub mod lockfile;
pub mod log;
pub mod query;
pub mod row;
pub mod run;
pub mod sink;
pub mod sources;
pub mod status;
pub mod stdio;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod up;
pub mod verify;

/// mimalloc instead of the system allocator, for every binary that links
/// tally: the job frees and allocates sketches and record batches of many
/// sizes on two threads, where glibc's malloc spent ~20 % of the time and
/// kept returning memory to the kernel only to map it again.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
