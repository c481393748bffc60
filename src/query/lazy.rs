//! Connections made on first use, and again after a failed one.
//!
//! `tally up` on Cassandra starts its query API beside the job, which
//! creates the keyspace and tables as it starts: the API's reader cannot
//! connect before that, and later the database may be away. Until a
//! connection stands every read fails with the reason, which the query API
//! answers as `503 {"field":"store","reason"}`; it never fails to start,
//! and never waits longer than [`CONNECT_WAIT`] for a connection.
//!
//! A connection is made on a thread of its own, one at a time; callers
//! wait for it up to [`CONNECT_WAIT`]. After a failed one, the next is
//! tried no sooner than [`RETRY_AFTER`] later (callers meanwhile get the
//! failure at once), so a database that is down is not asked once per
//! request.
//!
//! [`Lazy`] makes any connection so ([`LazyReader`]: a store reader, the
//! Cassandra versions of `query::versions`). Like what it makes, it
//! blocks: call it on a blocking thread, never on an async runtime worker.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::store::cassandra::{CassandraConfig, CassandraReader};
use crate::store::{StoreError, StoreReader, StoreSnapshot};

/// Longest a read waits for a connection being made: as long as one
/// request to Cassandra may take (the driver's request timeout of
/// `store::cassandra`).
pub const CONNECT_WAIT: Duration = Duration::from_secs(12);
/// Least time between two connection attempts.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

type Connect<T> = dyn Fn() -> Result<Arc<T>, StoreError> + Send + Sync;

/// A `T` made by `connect` when first needed, and kept.
pub struct Lazy<T: ?Sized + Send + Sync + 'static> {
    /// How messages name the store.
    target: String,
    connect: Arc<Connect<T>>,
    shared: Arc<Shared<T>>,
}

struct Shared<T: ?Sized> {
    state: Mutex<Attempts<T>>,
    done: Condvar,
}

struct Attempts<T: ?Sized> {
    made: Option<Arc<T>>,
    /// A connection attempt is under way.
    running: bool,
    /// Attempts that ended.
    finished: u64,
    /// When the last attempt failed, and why.
    failed: Option<(Instant, String)>,
}

impl<T: ?Sized + Send + Sync + 'static> Lazy<T> {
    /// A `T` that `connect` makes; `target` names the store in messages.
    pub fn new(target: impl Into<String>, connect: impl Fn() -> Result<Arc<T>, StoreError> + Send + Sync + 'static) -> Lazy<T> {
        let attempts = Attempts { made: None, running: false, finished: 0, failed: None };
        let shared = Arc::new(Shared { state: Mutex::new(attempts), done: Condvar::new() });
        Lazy { target: target.into(), connect: Arc::new(connect), shared }
    }

    /// The `T`, once connected; else the reason there is none.
    pub fn get(&self) -> Result<Arc<T>, StoreError> {
        let deadline = Instant::now() + CONNECT_WAIT;
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let seen = state.finished;
        loop {
            if let Some(made) = &state.made {
                return Ok(Arc::clone(made));
            }
            let fresh_failure = match &state.failed {
                // An attempt ended while this caller waited, or one failed
                // a moment ago: its answer is this caller's.
                Some((at, reason)) if state.finished > seen || (!state.running && at.elapsed() < RETRY_AFTER) => Some(reason.clone()),
                _ => None,
            };
            if let Some(reason) = fresh_failure {
                return Err(self.error(reason));
            }
            if !state.running {
                state.running = true;
                if let Err(e) = self.start_attempt() {
                    state.running = false;
                    state.finished += 1;
                    state.failed = Some((Instant::now(), format!("connection thread: {e}")));
                    continue;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.error(format!("no connection within {} s (still trying)", CONNECT_WAIT.as_secs())));
            }
            state = self.shared.done.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Connects on a thread of its own, which records the outcome.
    fn start_attempt(&self) -> std::io::Result<()> {
        let (connect, shared) = (Arc::clone(&self.connect), Arc::clone(&self.shared));
        std::thread::Builder::new().name("store-connect".to_owned()).spawn(move || {
            let outcome = connect();
            let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            state.running = false;
            state.finished += 1;
            match outcome {
                Ok(made) => {
                    state.made = Some(made);
                    state.failed = None;
                }
                Err(error) => state.failed = Some((Instant::now(), reason(error))),
            }
            shared.done.notify_all();
        })?;
        Ok(())
    }

    /// An error of this store: `reason` with the store's name.
    pub fn error(&self, reason: String) -> StoreError {
        StoreError::Backend { target: self.target.clone(), source: reason.into() }
    }
}

/// What went wrong, without the store's name (the [`Lazy`]'s errors carry
/// it).
fn reason(error: StoreError) -> String {
    match error {
        StoreError::Backend { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// A [`StoreReader`] connected when first used.
pub struct LazyReader(Lazy<dyn StoreReader>);

impl LazyReader {
    /// A reader that `connect` makes; `target` names the store in messages.
    pub fn new(
        target: impl Into<String>,
        connect: impl Fn() -> Result<Arc<dyn StoreReader>, StoreError> + Send + Sync + 'static,
    ) -> LazyReader {
        LazyReader(Lazy::new(target, connect))
    }

    /// Job `job`'s committed epochs in Cassandra, read only: a keyspace
    /// without tally's tables is refused (and tried again later), nothing
    /// is created.
    pub fn cassandra(config: &CassandraConfig, job: &str) -> LazyReader {
        let (config, job) = (config.clone(), job.to_owned());
        LazyReader::new(
            cassandra_target(&config, &job),
            move || Ok(Arc::new(CassandraReader::open(&config, &job)?) as Arc<dyn StoreReader>),
        )
    }
}

/// How messages name job `job`'s store in Cassandra.
pub fn cassandra_target(config: &CassandraConfig, job: &str) -> String {
    format!("cassandra {} keyspace {} job {job}", config.hosts_text(), config.keyspace)
}

impl StoreReader for LazyReader {
    fn snapshot(&self) -> Result<Box<dyn StoreSnapshot>, StoreError> {
        self.0.get()?.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn failing(calls: Arc<AtomicU32>, pause: Duration) -> LazyReader {
        LazyReader::new("test store", move || {
            calls.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(pause);
            Err(StoreError::Backend { target: "inner".into(), source: "connection refused".into() })
        })
    }

    #[test]
    fn a_failed_connection_is_the_answer_and_is_not_tried_again_at_once() {
        let calls = Arc::new(AtomicU32::new(0));
        let reader = failing(Arc::clone(&calls), Duration::ZERO);
        let error = reader.snapshot().err().unwrap().to_string();
        assert_eq!(error, "store test store: connection refused");
        assert!(reader.snapshot().is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a second attempt within {RETRY_AFTER:?}");
        std::thread::sleep(RETRY_AFTER + Duration::from_millis(50));
        assert!(reader.snapshot().is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn callers_share_one_attempt_under_way() {
        let calls = Arc::new(AtomicU32::new(0));
        let reader = Arc::new(failing(Arc::clone(&calls), Duration::from_millis(300)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let reader = Arc::clone(&reader);
                std::thread::spawn(move || reader.snapshot().is_err())
            })
            .collect();
        assert!(threads.into_iter().all(|t| t.join().unwrap()));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_connection_is_made_once_and_kept() {
        let calls = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&calls);
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::EmbeddedStore::open(dir.path()).unwrap();
        let embedded = store.reader();
        let reader = LazyReader::new("test store", move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(Arc::new(embedded.clone()) as Arc<dyn StoreReader>)
        });
        for _ in 0..3 {
            assert_eq!(reader.snapshot().unwrap().committed_epoch().unwrap(), None);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
