//! The connection: a driver session on a runtime of its own, the prepared
//! statements, and blocking calls for the synchronous rest of tally.
//!
//! The job's commit operator and window operators, export and verify are
//! plain threads; every call here blocks on the store's own Tokio runtime.
//! Calling them from inside another runtime (an async HTTP handler) would
//! panic: such a caller must move the call to a blocking thread first.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::errors::ExecutionError;
use scylla::response::query_result::QueryResult;
use scylla::response::{PagingState, PagingStateResponse};
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row as CqlRow};

use super::config::CassandraConfig;
use super::schema;
use crate::store::StoreError;

/// Writes of one epoch in flight at once.
pub const MAX_INFLIGHT_WRITES: usize = 256;
/// Attempts of an idempotent write before the commit fails (the job then
/// stops, and its restart applies the epoch again from staging).
const WRITE_ATTEMPTS: u32 = 4;
/// First pause between two attempts of a write; doubles each time.
const WRITE_RETRY_FIRST: Duration = Duration::from_millis(100);
/// Rows per page of a read.
const PAGE_ROWS: i32 = 5_000;
/// How long a new session waits for a contact point.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take, client side, before the driver gives up
/// on it (a lightweight transaction's outcome is then unknown and read
/// back).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(12);

/// A session to one keyspace, for one job. [`Db::for_job`] gives another
/// job (a version's build) the same session.
pub struct Db {
    // Dropped after the session, whose tasks run on it.
    pub session: Arc<Session>,
    pub st: Arc<Statements>,
    pub job: String,
    /// How messages name this store.
    pub target: Arc<str>,
    /// The cluster and keyspace, as messages name them.
    place: Arc<str>,
    runtime: Arc<tokio::runtime::Runtime>,
}

/// Whether a connection may create the keyspace and tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The job: creates what is missing.
    Write,
    /// Export and verify: refuse a keyspace without tally's tables.
    Read,
}

impl Db {
    pub fn connect(config: &CassandraConfig, job: &str, access: Access) -> Result<Db, StoreError> {
        let place: Arc<str> = format!("cassandra {} keyspace {}", config.hosts_text(), config.keyspace).into();
        let target: Arc<str> = format!("{place} job {job}").into();
        let fail = |what: &str, e: &dyn std::fmt::Display| StoreError::Backend {
            target: target.to_string(),
            source: format!("{what}: {e}").into(),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tally-cassandra")
            .enable_all()
            .build()
            .map_err(|e| fail("runtime", &e))?;
        let session = runtime.block_on(async {
            let session = SessionBuilder::new()
                .known_nodes(&config.hosts)
                .connection_timeout(CONNECT_TIMEOUT)
                .build()
                .await
                .map_err(|e| fail("connect", &e))?;
            schema::prepare_keyspace(&session, config, access).await.map_err(|e| fail("schema", &e))?;
            Ok::<_, StoreError>(session)
        })?;
        let st = runtime.block_on(Statements::prepare(&session, config)).map_err(|e| fail("prepare", &e))?;
        Ok(Db { session: Arc::new(session), st: Arc::new(st), job: job.to_owned(), target, place, runtime: Arc::new(runtime) })
    }

    /// The same session, runtime and statements, for the rows of `job`.
    pub fn for_job(&self, job: &str) -> Db {
        Db {
            session: Arc::clone(&self.session),
            st: Arc::clone(&self.st),
            job: job.to_owned(),
            target: format!("{} job {job}", self.place).into(),
            place: Arc::clone(&self.place),
            runtime: Arc::clone(&self.runtime),
        }
    }

    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    pub fn error(&self, what: impl std::fmt::Display) -> StoreError {
        StoreError::Backend { target: self.target.to_string(), source: what.to_string().into() }
    }

    pub fn corrupt(&self, what: impl Into<String>) -> StoreError {
        StoreError::Corrupt { target: self.target.to_string(), what: what.into() }
    }

    /// Every row of a read, all pages.
    pub fn read_all<R>(&self, statement: &PreparedStatement, values: impl SerializeRow) -> Result<Vec<R>, StoreError>
    where
        R: for<'f> DeserializeRow<'f, 'f>,
    {
        let mut out = Vec::new();
        let mut state = PagingState::start();
        loop {
            let (mut rows, next) = self.read_page(statement, &values, state)?;
            out.append(&mut rows);
            match next {
                Some(next) => state = next,
                None => return Ok(out),
            }
        }
    }

    /// The rows of one answer.
    pub fn decode<R>(&self, answer: Result<QueryResult, ExecutionError>) -> Result<Vec<R>, StoreError>
    where
        R: for<'f> DeserializeRow<'f, 'f>,
    {
        let rows = answer.map_err(|e| self.error(e))?.into_rows_result().map_err(|e| self.error(e))?;
        let rows = rows.rows::<R>().map_err(|e| self.error(e))?;
        rows.collect::<Result<Vec<R>, _>>().map_err(|e| self.error(e))
    }

    /// One page of a read, and where the next one starts.
    pub fn read_page<R>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
        state: PagingState,
    ) -> Result<(Vec<R>, Option<PagingState>), StoreError>
    where
        R: for<'f> DeserializeRow<'f, 'f>,
    {
        let (result, paging) = self.block_on(self.session.execute_single_page(statement, values, state)).map_err(|e| self.error(e))?;
        let rows = result.into_rows_result().map_err(|e| self.error(e))?;
        let rows = rows.rows::<R>().map_err(|e| self.error(e))?.collect::<Result<Vec<R>, _>>().map_err(|e| self.error(e))?;
        let next = match paging {
            PagingStateResponse::HasMorePages { state } => Some(state),
            PagingStateResponse::NoMorePages => None,
        };
        Ok((rows, next))
    }

    /// Runs idempotent writes, [`MAX_INFLIGHT_WRITES`] at a time; the first
    /// that fails every attempt fails them all.
    pub fn write_all(&self, writes: Vec<BoxFuture<'_, Result<(), ExecutionError>>>) -> Result<(), StoreError> {
        self.block_on(async {
            let mut running = futures::stream::iter(writes).buffer_unordered(MAX_INFLIGHT_WRITES);
            while let Some(result) = running.next().await {
                result?;
            }
            Ok(())
        })
        .map_err(|e: ExecutionError| self.error(e))
    }

    /// One idempotent write, retried with a doubling pause.
    pub fn write<'a, V>(&'a self, statement: &'a PreparedStatement, values: V) -> BoxFuture<'a, Result<(), ExecutionError>>
    where
        V: SerializeRow + Send + Sync + 'a,
    {
        Box::pin(async move {
            let mut pause = WRITE_RETRY_FIRST;
            let mut attempt = 1;
            loop {
                match self.session.execute_unpaged(statement, &values).await {
                    Ok(_) => return Ok(()),
                    Err(_) if attempt < WRITE_ATTEMPTS => {
                        tokio::time::sleep(pause).await;
                        pause *= 2;
                        attempt += 1;
                    }
                    Err(error) => return Err(error),
                }
            }
        })
    }
}

/// Whether a lightweight transaction applied (its first column), or the
/// error after which nobody knows.
pub fn applied(answer: Result<QueryResult, ExecutionError>) -> Result<bool, Box<ExecutionError>> {
    let rows = answer.map_err(Box::new)?.into_rows_result().ok();
    let first = rows.as_ref().and_then(|rows| rows.maybe_first_row::<CqlRow>().ok().flatten());
    Ok(matches!(first.and_then(|row| row.columns.into_iter().next().flatten()), Some(CqlValue::Boolean(true))))
}

/// Every statement tally runs, prepared once per session.
pub struct Statements {
    pub read_job: PreparedStatement,
    pub read_job_serial: PreparedStatement,
    pub create_job: PreparedStatement,
    pub begin: PreparedStatement,
    pub commit: PreparedStatement,
    pub mark_applied: PreparedStatement,
    pub stage_chunk: PreparedStatement,
    pub read_staging: PreparedStatement,
    pub drop_staging: PreparedStatement,
    pub put_row: PreparedStatement,
    pub put_row_by_window: PreparedStatement,
    pub put_window: PreparedStatement,
    pub put_window_bucket: PreparedStatement,
    pub put_version: PreparedStatement,
    pub put_late: PreparedStatement,
    pub put_late_day: PreparedStatement,
    pub put_state: PreparedStatement,
    pub delete_state: PreparedStatement,
    pub rows_in_range: PreparedStatement,
    pub rows_of_window: PreparedStatement,
    pub rows_by_window: PreparedStatement,
    pub window_buckets: PreparedStatement,
    pub windows_in_bucket: PreparedStatement,
    pub all_rows: PreparedStatement,
    pub versions: PreparedStatement,
    pub late_days: PreparedStatement,
    pub late_in_day: PreparedStatement,
    pub late_after: PreparedStatement,
    pub state_get: PreparedStatement,
    pub state_shard: PreparedStatement,
    pub put_ad_version: PreparedStatement,
    pub put_catalog: PreparedStatement,
    pub catalog: PreparedStatement,
    pub ad_version: PreparedStatement,
}

/// Prepares `cql` to run as `kind` says, at the levels of `config`.
pub async fn prepare(session: &Session, config: &CassandraConfig, cql: String, kind: Kind) -> Result<PreparedStatement, ExecutionError> {
    let mut statement = session.prepare(cql).await?;
    statement.set_request_timeout(Some(REQUEST_TIMEOUT));
    match kind {
        Kind::Read => {
            statement.set_consistency(config.consistency.driver());
            statement.set_page_size(PAGE_ROWS);
            statement.set_is_idempotent(true);
        }
        Kind::SerialRead => statement.set_consistency(config.serial_consistency.read()),
        Kind::Write => {
            statement.set_consistency(config.consistency.driver());
            statement.set_is_idempotent(true);
        }
        Kind::Lwt => {
            statement.set_consistency(config.consistency.driver());
            statement.set_serial_consistency(Some(config.serial_consistency.driver()));
            statement.set_is_idempotent(false);
        }
    }
    Ok(statement)
}

const JOB_COLUMNS: &str = "generation, owner, committed_epoch, committed_generation, chunks, payload_bytes, payload_crc, checkpoints, applied_epoch, applied_generation, applied_checkpoints";
const SERVING: &str = "USING TTL ? AND TIMESTAMP ?";

/// How a statement is run.
#[derive(Clone, Copy)]
pub enum Kind {
    /// A read at the configured consistency: idempotent, so the driver
    /// tries another node when the connection to one breaks (a node that
    /// dies while a read is in flight).
    Read,
    /// A read at the serial level: it completes any Paxos round in flight.
    /// The driver never retries a serial read; `commit.rs` does.
    SerialRead,
    /// An idempotent write at the configured consistency.
    Write,
    /// A lightweight transaction: never retried by the driver.
    Lwt,
}

impl Statements {
    async fn prepare(session: &Session, config: &CassandraConfig) -> Result<Statements, ExecutionError> {
        let prepare = |cql: String, kind: Kind| prepare(session, config, cql, kind);
        let read_job = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE job = ?");
        Ok(Statements {
            read_job: prepare(read_job.clone(), Kind::Read).await?,
            read_job_serial: prepare(read_job, Kind::SerialRead).await?,
            create_job: prepare(
                "INSERT INTO jobs (job, generation, owner, committed_epoch, applied_epoch) VALUES (?, ?, ?, -1, -1) IF NOT EXISTS".into(),
                Kind::Lwt,
            )
            .await?,
            begin: prepare("UPDATE jobs SET generation = ?, owner = ? WHERE job = ? IF generation = ?".into(), Kind::Lwt).await?,
            commit: prepare(
                "UPDATE jobs SET committed_epoch = ?, committed_generation = ?, chunks = ?, payload_bytes = ?, payload_crc = ?, checkpoints = ? \
                 WHERE job = ? IF generation = ? AND committed_epoch = ? AND applied_epoch = ?"
                    .into(),
                Kind::Lwt,
            )
            .await?,
            mark_applied: prepare(
                "UPDATE jobs SET applied_epoch = ?, applied_generation = ?, applied_checkpoints = ? WHERE job = ? IF committed_epoch = ?".into(),
                Kind::Lwt,
            )
            .await?,
            stage_chunk: prepare(
                "INSERT INTO staging (job, epoch, generation, chunk, payload) VALUES (?, ?, ?, ?, ?) USING TTL ?".into(),
                Kind::Write,
            )
            .await?,
            read_staging: prepare("SELECT chunk, payload FROM staging WHERE job = ? AND epoch = ? AND generation = ?".into(), Kind::Read)
                .await?,
            drop_staging: prepare("DELETE FROM staging WHERE job = ? AND epoch = ? AND generation = ?".into(), Kind::Write).await?,
            put_row: prepare(
                format!(
                    "INSERT INTO window_rows (job, key_type, key, granularity, bucket, window_start, epoch, clicks, distinct_users, status, version, sketch) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) {SERVING}"
                ),
                Kind::Write,
            )
            .await?,
            put_row_by_window: prepare(
                format!(
                    "INSERT INTO rows_by_window (job, key_type, granularity, window_start, key, epoch, clicks, distinct_users, status, version) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) {SERVING}"
                ),
                Kind::Write,
            )
            .await?,
            put_window: prepare(
                format!("INSERT INTO windows (job, key_type, granularity, bucket, window_start) VALUES (?, ?, ?, ?, ?) {SERVING}"),
                Kind::Write,
            )
            .await?,
            put_window_bucket: prepare(
                format!("INSERT INTO window_buckets (job, key_type, granularity, bucket) VALUES (?, ?, ?, ?) {SERVING}"),
                Kind::Write,
            )
            .await?,
            put_version: prepare(
                format!(
                    "INSERT INTO row_versions (job, key_type, key, granularity, bucket, window_start, version, epoch, clicks, distinct_users, status) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) {SERVING}"
                ),
                Kind::Write,
            )
            .await?,
            put_late: prepare(
                format!(
                    "INSERT INTO late (job, day, window_start, key_type, key, batch_epoch, request_id, held, epoch) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) {SERVING}"
                ),
                Kind::Write,
            )
            .await?,
            put_late_day: prepare(format!("INSERT INTO late_days (job, day) VALUES (?, ?) {SERVING}"), Kind::Write).await?,
            put_state: prepare("INSERT INTO state (job, shard, key, value) VALUES (?, ?, ?, ?) USING TIMESTAMP ?".into(), Kind::Write)
                .await?,
            delete_state: prepare("DELETE FROM state USING TIMESTAMP ? WHERE job = ? AND shard = ? AND key = ?".into(), Kind::Write).await?,
            rows_in_range: prepare(
                "SELECT window_start, epoch, clicks, distinct_users, status, version FROM window_rows \
                 WHERE job = ? AND key_type = ? AND key = ? AND granularity = ? AND bucket = ? AND window_start >= ? AND window_start < ?"
                    .into(),
                Kind::Read,
            )
            .await?,
            rows_of_window: prepare(
                "SELECT epoch, clicks, distinct_users, status, version, sketch FROM window_rows \
                 WHERE job = ? AND key_type = ? AND key = ? AND granularity = ? AND bucket = ? AND window_start = ?"
                    .into(),
                Kind::Read,
            )
            .await?,
            rows_by_window: prepare(
                "SELECT key, epoch, clicks, distinct_users, status, version FROM rows_by_window \
                 WHERE job = ? AND key_type = ? AND granularity = ? AND window_start = ?"
                    .into(),
                Kind::Read,
            )
            .await?,
            window_buckets: prepare(
                "SELECT bucket FROM window_buckets WHERE job = ? AND key_type = ? AND granularity = ? AND bucket <= ?".into(),
                Kind::Read,
            )
            .await?,
            windows_in_bucket: prepare(
                "SELECT window_start FROM windows WHERE job = ? AND key_type = ? AND granularity = ? AND bucket = ? AND window_start <= ?"
                    .into(),
                Kind::Read,
            )
            .await?,
            all_rows: prepare(
                "SELECT key_type, key, granularity, window_start, epoch, clicks, distinct_users, status, version FROM window_rows \
                 WHERE job = ? ALLOW FILTERING"
                    .into(),
                Kind::Read,
            )
            .await?,
            versions: prepare(
                "SELECT version, epoch, clicks, distinct_users, status FROM row_versions \
                 WHERE job = ? AND key_type = ? AND key = ? AND granularity = ? AND bucket = ? AND window_start = ?"
                    .into(),
                Kind::Read,
            )
            .await?,
            late_days: prepare("SELECT day FROM late_days WHERE job = ?".into(), Kind::Read).await?,
            late_in_day: prepare(
                "SELECT window_start, key_type, key, batch_epoch, request_id, held, epoch FROM late \
                 WHERE job = ? AND day = ? AND window_start >= ? AND window_start < ?"
                    .into(),
                Kind::Read,
            )
            .await?,
            late_after: prepare(
                "SELECT window_start, key_type, key, batch_epoch, request_id, held, epoch FROM late \
                 WHERE job = ? AND day = ? AND (window_start, key_type, key, batch_epoch, request_id) > (?, ?, ?, ?, ?) \
                 AND (window_start) < (?)"
                    .into(),
                Kind::Read,
            )
            .await?,
            state_get: prepare("SELECT value FROM state WHERE job = ? AND shard = ? AND key = ?".into(), Kind::Read).await?,
            state_shard: prepare("SELECT key, value FROM state WHERE job = ? AND shard = ?".into(), Kind::Read).await?,
            put_ad_version: prepare(
                "INSERT INTO ad_catalog (job, catalog, ad, valid_from, campaign, advertiser) VALUES (?, ?, ?, ?, ?, ?)".into(),
                Kind::Write,
            )
            .await?,
            put_catalog: prepare(
                "INSERT INTO catalogs (job, catalog, path, ads, versions) VALUES (?, ?, ?, ?, ?)".into(),
                Kind::Write,
            )
            .await?,
            catalog: prepare("SELECT path, ads, versions FROM catalogs WHERE job = ? AND catalog = ?".into(), Kind::Read).await?,
            ad_version: prepare(
                "SELECT valid_from, campaign, advertiser FROM ad_catalog \
                 WHERE job = ? AND catalog = ? AND ad = ? AND valid_from <= ? LIMIT 1"
                    .into(),
                Kind::Read,
            )
            .await?,
        })
    }
}
