//! The optional Redis pre-filter: answers an obvious retry without writing
//! it to the log again.
//!
//! Redis is never the authority on duplicates (the job's dedup is), so the
//! filter is built to be safe when it is wrong, slow or gone:
//!
//! - A request id is remembered (`SET tally:rid:<id> 1 NX PX ttl`) only
//!   *after* its click is durable in the log. A key therefore always means
//!   "an earlier request with this id was acknowledged", and answering its
//!   retry with `202` without writing is truthful. A write that failed
//!   leaves no key behind, so its retry is never blocked.
//! - Before writing, one pipeline of `PEXPIRE key ttl` asks which ids of the
//!   batch are known (`1`) and restarts their TTL; it never creates a key.
//!   Check and write are not atomic: two copies of a click racing each
//!   other may both be written, and the job's dedup drops the second.
//! - Every call has a timeout (`timeout_ms`). After an error or timeout the
//!   filter steps aside for a back-off (doubling from 100 ms to 5 s) and
//!   requests go straight to the log; the connection is re-established in
//!   the background.
//!
//! # What it may answer, and why the TTL is the dedup horizon
//!
//! The job decides what counts: a click is a duplicate when its id was
//! seen within `dedup.horizon` of *partition progress* (event time) before,
//! and every sighting, a dropped one included, refreshes that memory
//! (SEMANTICS.md). The filter may only answer "duplicate" for a click the
//! job would drop had it been written, and its silence must not change
//! what the job decides for the clicks that are written. Hence:
//!
//! - its TTL is at most the job's dedup horizon: `tally up` uses the
//!   job's `dedup.horizon` and refuses a longer `[redis] horizon`; `tally
//!   ingest`, which does not know the job, uses `[redis] horizon`, by
//!   default the default horizon (1m), and it must be at most the horizon
//!   of the job that reads the log.
//! - every sighting restarts the TTL (the `PEXPIRE` above), as every
//!   sighting refreshes the job's memory. With a TTL counted from the
//!   original alone, a client retrying every 30 s for two minutes would
//!   have its retries swallowed for one horizon, then one written and
//!   counted again (the job compares it with the last sighting *in the
//!   log*, the original), although each retry came within the horizon of
//!   the one before.
//!
//! The filter so answers "duplicate" when the last sighting of the id was
//! less than the horizon ago in wall-clock time, the job when it was
//! within the horizon in partition progress. Where the two clocks keep
//! pace they agree; where they do not, the filter is only approximate:
//!
//! - progress ahead of the wall clock (clicks stamped up to
//!   `timestamp_future` ahead, a lagging partition catching up): the filter
//!   may swallow a retry the job would have counted a second time;
//! - progress behind the wall clock (a quiet partition): a retry may be
//!   written after a run of swallowed ones and counted again, where the
//!   whole run in the log would have kept it a duplicate.
//!
//! What holds exactly in every case: a `202` from the filter is truthful
//! (the original is durable); no acknowledged click goes uncounted because
//! of it, since a retry is the same click (same body, so same timestamp)
//! as its original, which is in the log and judged there: if the original
//! was not counted (too late and held, or itself a dropped duplicate), the
//! retry, read later and so at least as late, would not have been either;
//! and the count stays a function of the log (`tally verify` holds). An
//! exact filter would compare partition progress instead of wall time,
//! which ingest would have to track per partition: not built.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::event::RequestId;

/// First back-off after a Redis failure.
pub const MIN_BACKOFF_MS: u64 = 100;
/// Longest back-off after repeated Redis failures.
pub const MAX_BACKOFF_MS: u64 = 5_000;

/// Counters since start.
#[derive(Debug, Default)]
pub struct PreFilterStats {
    /// Clicks answered from Redis without a log write.
    pub duplicates: AtomicU64,
    /// Failed or timed-out Redis calls.
    pub errors: AtomicU64,
    /// Requests that skipped Redis during a back-off.
    pub skipped: AtomicU64,
}

/// Whether and how long to step aside after failures.
#[derive(Debug)]
struct Backoff {
    until: Option<Instant>,
    next_ms: u64,
}

/// A pre-filter on one Redis server.
pub struct PreFilter {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// Made on first use, inside the runtime that serves requests.
    conn: tokio::sync::OnceCell<ConnectionManager>,
    ttl_ms: u64,
    timeout: Duration,
    backoff: Mutex<Backoff>,
    pub stats: PreFilterStats,
}

impl std::fmt::Debug for PreFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreFilter").field("ttl_ms", &self.ttl_ms).field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

/// The Redis key of a request id.
pub fn key(request_id: RequestId) -> String {
    format!("tally:rid:{request_id:032x}")
}

impl PreFilter {
    /// A filter on `url` (`redis://host:port/db`) that answers a request id
    /// as seen until `ttl_ms` after its last sighting (at most the job's
    /// dedup horizon, see the module docs); connects lazily, so a Redis
    /// that is down at start only means no filtering until it is up.
    pub fn new(url: &str, ttl_ms: u64, timeout: Duration) -> Result<PreFilter, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis url {:?}: {e}", super::config::redacted_url(url)))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(MAX_BACKOFF_MS));
        let backoff = Mutex::new(Backoff { until: None, next_ms: MIN_BACKOFF_MS });
        Ok(PreFilter {
            client,
            config,
            conn: tokio::sync::OnceCell::new(),
            ttl_ms: ttl_ms.max(1),
            timeout,
            backoff,
            stats: PreFilterStats::default(),
        })
    }

    /// For each id, whether an earlier request with it was acknowledged and
    /// last seen less than the TTL ago; a seen id's TTL starts again (this
    /// is a sighting too). All `false` when Redis cannot answer in time.
    pub async fn seen(&self, ids: &[RequestId]) -> Vec<bool> {
        let unknown = vec![false; ids.len()];
        if ids.is_empty() || !self.available() {
            return unknown;
        }
        let mut pipe = redis::pipe();
        for &id in ids {
            pipe.cmd("PEXPIRE").arg(key(id)).arg(self.ttl_ms);
        }
        let Some(mut conn) = self.connection().await else { return unknown };
        let reply = tokio::time::timeout(self.timeout, pipe.query_async::<Vec<i64>>(&mut conn)).await;
        match reply {
            Ok(Ok(values)) if values.len() == ids.len() => {
                self.succeeded();
                let seen: Vec<bool> = values.iter().map(|&set| set == 1).collect();
                let hits = seen.iter().filter(|&&s| s).count() as u64;
                self.stats.duplicates.fetch_add(hits, Ordering::Relaxed);
                seen
            }
            _ => {
                self.failed();
                unknown
            }
        }
    }

    /// Remembers ids whose clicks are now durable. Best effort.
    pub async fn remember(&self, ids: &[RequestId]) {
        if ids.is_empty() || !self.available() {
            return;
        }
        let mut pipe = redis::pipe();
        for &id in ids {
            pipe.cmd("SET").arg(key(id)).arg(1).arg("NX").arg("PX").arg(self.ttl_ms).ignore();
        }
        let Some(mut conn) = self.connection().await else { return };
        match tokio::time::timeout(self.timeout, pipe.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => self.succeeded(),
            _ => self.failed(),
        }
    }

    /// Sets `key` unless it exists (`SET key 1 NX PX ttl_ms`): `Ok(true)`
    /// if this call set it. Unlike the filter's own calls this one is an
    /// authority (the replay guard, [`super::replay`]): an error or timeout
    /// is returned, never guessed, and during a back-off it fails at once.
    pub async fn claim_once(&self, key: &str, ttl_ms: u64) -> Result<bool, String> {
        if !self.available() {
            return Err("Redis failed moments ago; waiting before asking again".to_owned());
        }
        let Some(mut conn) = self.connection().await else { return Err("no connection to Redis".to_owned()) };
        let mut set = redis::cmd("SET");
        set.arg(key).arg(1).arg("NX").arg("PX").arg(ttl_ms.max(1));
        match tokio::time::timeout(self.timeout, set.query_async::<Option<String>>(&mut conn)).await {
            Ok(Ok(reply)) => {
                self.succeeded();
                Ok(reply.is_some())
            }
            Ok(Err(e)) => {
                self.failed();
                Err(format!("Redis: {e}"))
            }
            Err(_) => {
                self.failed();
                Err(format!("Redis did not answer within {} ms", self.timeout.as_millis()))
            }
        }
    }

    /// Deletes `key` (best effort: a key left behind expires by its TTL).
    pub async fn release(&self, key: &str) {
        let Some(mut conn) = self.connection().await else { return };
        let mut del = redis::cmd("DEL");
        del.arg(key);
        match tokio::time::timeout(self.timeout, del.query_async::<i64>(&mut conn)).await {
            Ok(Ok(_)) => self.succeeded(),
            _ => self.failed(),
        }
    }

    /// The connection manager (it reconnects by itself after errors).
    async fn connection(&self) -> Option<ConnectionManager> {
        let made = self.conn.get_or_try_init(|| async { self.client.get_connection_manager_lazy(self.config.clone()) }).await;
        match made {
            Ok(conn) => Some(conn.clone()),
            Err(_) => {
                self.failed();
                None
            }
        }
    }

    fn available(&self) -> bool {
        let backoff = self.backoff.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match backoff.until {
            Some(until) if Instant::now() < until => {
                self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                false
            }
            _ => true,
        }
    }

    fn succeeded(&self) {
        let mut backoff = self.backoff.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *backoff = Backoff { until: None, next_ms: MIN_BACKOFF_MS };
    }

    fn failed(&self) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        let mut backoff = self.backoff.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        backoff.until = Some(Instant::now() + Duration::from_millis(backoff.next_ms));
        backoff.next_ms = (backoff.next_ms * 2).min(MAX_BACKOFF_MS);
    }
}
