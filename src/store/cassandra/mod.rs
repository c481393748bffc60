//! The Cassandra (or ScyllaDB) store: committed epochs in a shared,
//! replicated database, written with the `scylla` driver.
//!
//! Cassandra has no transaction over several partitions, so an epoch is
//! made atomic by a protocol (ARCHITECTURE.md, "The epoch commit in
//! Cassandra", says what it relies on and how it fails):
//!
//! 1. **Begin.** A starting job takes the next generation of its `jobs` row
//!    with a lightweight transaction (`generation = g + 1 IF generation =
//!    g`), then applies the last committed epoch if its apply did not
//!    finish. From then on no older generation can commit.
//! 2. **Stage.** The epoch's whole [`EpochCommit`](crate::store::EpochCommit)
//!    is written to its own staging partition `(job, epoch, generation)` in
//!    chunks (`payload.rs`).
//! 3. **Commit.** One lightweight transaction on the `jobs` partition
//!    records the epoch, its generation, its payload's size and checksum and
//!    every partition's checkpoint, `IF generation = ours AND
//!    committed_epoch = previous AND applied_epoch = previous`. If it
//!    applied, the epoch is committed. Any failure, a timeout included, is
//!    decided by reading the row back with SERIAL consistency
//!    (`protocol.rs`), never by a blind retry.
//! 4. **Apply.** The epoch's rows, versions, ledger entries and state go to
//!    the serving tables, every cell with the epoch as its write timestamp
//!    and rows with the epoch in their clustering key (`apply.rs`); then a
//!    second transaction marks it applied (`applied_epoch`).
//! 5. **Read.** A reader reads `applied_epoch` first and sees of every
//!    window the newest row at or below it (`query.rs`): never half an epoch.
//!
//! `catalog.rs` keeps the ad catalog the job counted with, for readers
//! beside Cassandra; `keys.rs` the API keys of the job's query API. `commit.rs` is the writer ([`CassandraStore`], an
//! [`EpochStore`](crate::store::EpochStore)), `query.rs` the reader
//! ([`CassandraReader`], a [`StoreReader`](crate::store::StoreReader)),
//! `schema.cql` the tables, `layout.rs` partitions and timestamps, `db.rs`
//! the session and its prepared statements, `timing.rs` the optional
//! record of each commit's timings (`TALLY_COMMIT_TIMES`). `versions.rs`
//! ([`CassandraVersions`]) keeps backfilled versions of the output beside
//! the job's own rows and the pointer to the one served
//! (`version_rows.rs`: that table as read, and the decisions on it);
//! `purge.rs` deletes a version's rows.

mod apply;
pub mod catalog;
mod commit;
pub mod config;
mod db;
mod keys;
mod layout;
mod payload;
mod protocol;
mod purge;
mod query;
mod schema;
mod timing;
mod version_rows;
mod versions;

pub use commit::{CassandraStore, CrashPoint, Faults, STAGING_TTL_S};
pub use config::{CassandraConfig, Level, SerialLevel};
pub use keys::CassandraKeys;
pub use query::{CassandraReader, CassandraSnapshot};
pub use schema::SCHEMA_VERSION;
pub use version_rows::{build_job, CassandraManifest, Pending, Served, CLAIM_LEASE};
pub use versions::{CassandraVersions, Claim, PURGE_GRACE};
