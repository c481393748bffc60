//! The embedded store: committed epochs in one local redb file, the
//! single-machine stand-in for Cassandra.
//!
//! `dir/store.redb` holds six tables (keys are redb tuples, values the fixed
//! layouts of `embedded/codec.rs`):
//!
//! | table          | key                                                   | value                                        |
//! |----------------|-------------------------------------------------------|----------------------------------------------|
//! | `rows`         | key type, key, granularity, window start              | latest row, the epoch that wrote it, sketch  |
//! | `row_versions` | the same + version                                    | the final / restated row of that version, no sketch |
//! | `late`         | key type, key, window start, batch, request id        | held flag                                    |
//! | `epochs`       | `"last"`                                              | epoch, generation, partition checkpoints     |
//! | `state`        | opaque key chosen by the dataflow                     | opaque open-window state                     |
//! | `meta`         | `"format_version"`, `"generation"`                    | u64                                          |
//!
//! **Why redb.** It is pure Rust (no C toolchain, unlike RocksDB or SQLite
//! bindings), maintained, and ACID: a write transaction is applied whole or
//! not at all, and readers work on MVCC snapshots that only ever contain
//! committed transactions. A reader therefore sees an epoch before or after
//! its commit, never half of it, without any locking on our side.
//!
//! **Durability.** Every epoch is one write transaction with
//! [`Durability::Immediate`]: when [`EpochStore::commit`] returns `Ok`, the
//! epoch is on disk. The file is opened in redb's
//! [`ConcurrencyMode::SingleWriter`], so that `tally` commands in other
//! processes can read it while the job writes; in that mode redb always
//! commits in two phases (data and commit slot fsynced, then the primary flag
//! flipped and fsynced), and a reader in another process never sees a commit
//! before its flush completed. The cost is two fsyncs per epoch instead of
//! redb's single-process one.
//!
//! **What the store guarantees** (beyond the trait's, see [`super`]):
//!
//! - One writer per directory: [`EmbeddedStore::open`] holds an exclusive
//!   lock on `dir/LOCK` (recording its pid) for the store's lifetime and that
//!   of every [`EmbeddedReader`] made from it; a second open, in this or
//!   another process, fails with [`StoreError::Locked`].
//! - Readers without the lock: [`EmbeddedStore::open_read_only`] (export,
//!   verify, query) sees committed transactions only, and each
//!   [`Snapshot`] is one consistent point in the commit history.
//! - A clean stop leaves a clean file: [`close_all`] (called by a stop on
//!   SIGINT/SIGTERM, just before the process exits) waits for a commit in
//!   flight and closes every store of the process, so redb records its
//!   allocator state and marks the file clean.
//! - A crash leaves a file that redb must repair before anyone reads it.
//!   A writer's open repairs it; when no writer holds the lock,
//!   [`EmbeddedStore::open_read_only`] takes the lock and does the same
//!   before it reads, so export and verify work after a `kill -9` too.
//! - Reads of the ledger by window and sweeps scan their whole table: they
//!   serve export, verify and retention, not the hot path.

mod codec;
#[cfg(test)]
mod tests;

use std::fs::{self, File};
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, Weak};

use redb::{
    Builder, ConcurrencyMode, Database, DatabaseError, Durability, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable,
    TableDefinition, WriteTransaction,
};

use self::codec::{decode_last, decode_row, encode_last, encode_row, LastCommit};
use super::codes::{key_type_code, key_type_of};
use super::read::{LatePosition, LateRecord, RowIter, StoreReader, StoreSnapshot, Visit};
use super::{advance_checkpoints, assert_version_matches_status};
use super::{EpochCommit, EpochStore, Recovered, RowFilter, StoreError, StoredRow, WindowKey};
use crate::event::{EventTime, KeyType};
use crate::lockfile::LockError;
use crate::row::{LateEntry, Row, Status};

/// The redb file inside a store directory.
pub const STORE_FILE: &str = "store.redb";
/// The lock file inside a store directory; holds the writer's pid.
pub use crate::lockfile::LOCK_FILE;
/// Version of the table layout and value encodings (`embedded/codec.rs`).
pub const FORMAT_VERSION: u64 = 2;
/// Upper bound of redb's page cache per open handle. An epoch commit
/// rewrites the state of every window that changed, pages that the next
/// commit rarely reads again: 256 MiB held ~200 MiB more RSS than 64 MiB
/// and made commits no faster (the OS page cache serves the misses).
pub const CACHE_BYTES: usize = 64 * 1024 * 1024;

const ROWS: TableDefinition<(u8, &str, u64, u64), &[u8]> = TableDefinition::new("rows");
/// The same windows by (key type, granularity, window start, key): which
/// keys have a row in one window (top lists) without a scan of every key.
const ROWS_BY_WINDOW: TableDefinition<(u8, u64, u64, &str), ()> = TableDefinition::new("rows_by_window");
const ROW_VERSIONS: TableDefinition<(u8, &str, u64, u64, u32), &[u8]> = TableDefinition::new("row_versions");
/// Ledger entries by (window start, key type, key, batch, request id), so a
/// time range is one range read.
const LATE: TableDefinition<(u64, u8, &str, u64, u128), bool> = TableDefinition::new("late");
const EPOCHS: TableDefinition<&str, &[u8]> = TableDefinition::new("epochs");
const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const LAST: &str = "last";
const META_FORMAT: &str = "format_version";
const META_GENERATION: &str = "generation";

/// The writable store of one directory; the only writer while it lives.
pub struct EmbeddedStore {
    writable: Arc<Writable>,
    reader: EmbeddedReader,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").field("target", &self.reader.target).finish_non_exhaustive()
    }
}

/// The writable database and the directory lock. Fields drop in order: the
/// database is closed before the lock is released.
struct Writable {
    /// `None` once [`close_all`] has closed it. Every transaction begins
    /// under a read guard, and a write transaction keeps its guard until it
    /// ends, so a close waits for a commit in flight.
    db: RwLock<Option<Database>>,
    target: Arc<str>,
    _lock: File,
}

impl Writable {
    /// The open database, held open while the guard lives.
    fn open_db(&self) -> Result<OpenDb<'_>, StoreError> {
        let guard = self.db.read().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            return Err(StoreError::Closed { target: self.target.to_string() });
        }
        Ok(OpenDb(guard))
    }

    /// Waits for a write transaction in flight, then closes the database
    /// cleanly. Returns whether it was still open.
    fn close(&self) -> Result<bool, StoreError> {
        let taken = self.db.write().unwrap_or_else(|e| e.into_inner()).take();
        match taken {
            Some(db) => db.close().or_store(&self.target).map(|()| true),
            None => Ok(false),
        }
    }
}

/// A database that [`close_all`] cannot close while this lives.
struct OpenDb<'a>(RwLockReadGuard<'a, Option<Database>>);

impl std::ops::Deref for OpenDb<'_> {
    type Target = Database;

    fn deref(&self) -> &Database {
        self.0.as_ref().expect("checked open in Writable::open_db")
    }
}

/// A write transaction that keeps its database open until it ends.
struct Write<'a> {
    // Drops before the guard: the transaction ends, then the close may run.
    txn: WriteTransaction,
    _open: OpenDb<'a>,
}

impl Write<'_> {
    fn commit(self) -> Result<(), redb::CommitError> {
        let Write { txn, _open } = self;
        txn.commit()
    }
}

impl std::ops::Deref for Write<'_> {
    type Target = WriteTransaction;

    fn deref(&self) -> &WriteTransaction {
        &self.txn
    }
}

/// Every store open for writing in this process, for [`close_all`]: the
/// stores live deep inside a running job (the commit operator's sink on a
/// Timely worker), where a stop by signal cannot reach them otherwise.
static OPEN_STORES: Mutex<Vec<Weak<Writable>>> = Mutex::new(Vec::new());

/// Closes every store this process has open for writing, for a clean stop
/// just before the process exits: waits for each one's write transaction
/// in flight, then closes its file cleanly (redb records its allocator
/// state and marks the file clean, so a read-only open needs no repair).
/// Any later use of those stores, or of readers sharing them, fails with
/// [`StoreError::Closed`]. Returns how many stores it closed.
pub fn close_all() -> Result<usize, StoreError> {
    let open: Vec<Arc<Writable>> = OPEN_STORES.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(Weak::upgrade).collect();
    let mut closed = 0;
    for writable in open {
        closed += usize::from(writable.close()?);
    }
    Ok(closed)
}

/// Read access to committed data; cheap to clone and send to other threads.
#[derive(Clone)]
pub struct EmbeddedReader {
    handle: Handle,
    target: Arc<str>,
}

#[derive(Clone)]
enum Handle {
    /// Shares the writer's database (and keeps its lock alive).
    Writable(Arc<Writable>),
    /// A read-only handle that does not take the lock.
    ReadOnly(Arc<ReadOnlyDatabase>),
}

/// One committed state of the store: every read through it sees the same
/// epochs, whatever is committed meanwhile.
pub struct Snapshot {
    txn: ReadTransaction,
    target: Arc<str>,
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir` and locks it.
    pub fn open(dir: &Path) -> Result<EmbeddedStore, StoreError> {
        fs::create_dir_all(dir).map_err(|source| StoreError::Io { path: dir.to_path_buf(), source })?;
        let lock = lock_dir(dir)?;
        let path = dir.join(STORE_FILE);
        let target: Arc<str> = path.display().to_string().into();
        let db = builder().create(&path).or_store(&target)?;
        initialize(&db, &target)?;
        let writable = Arc::new(Writable { db: RwLock::new(Some(db)), target: target.clone(), _lock: lock });
        let mut open = OPEN_STORES.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|w| w.strong_count() > 0);
        open.push(Arc::downgrade(&writable));
        let reader = EmbeddedReader { handle: Handle::Writable(writable.clone()), target };
        Ok(EmbeddedStore { writable, reader })
    }

    /// Opens the store in `dir` for reading only, without the lock, beside a
    /// running writer if there is one. A file that needs a repair (its
    /// writer died) is repaired first if no process holds the lock:
    /// [`StoreError::NeedsRepair`] if one does.
    pub fn open_read_only(dir: &Path) -> Result<EmbeddedReader, StoreError> {
        let path = dir.join(STORE_FILE);
        let target: Arc<str> = path.display().to_string().into();
        if !path.exists() {
            let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no store here");
            return Err(StoreError::Io { path, source });
        }
        let db = match builder().open_read_only(&path) {
            Err(DatabaseError::RepairAborted) => {
                repair(dir, &target)?;
                builder().open_read_only(&path).or_store(&target)?
            }
            opened => opened.or_store(&target)?,
        };
        let reader = EmbeddedReader { handle: Handle::ReadOnly(Arc::new(db)), target };
        let snapshot = reader.snapshot()?;
        check_format(&snapshot.txn.open_table(META).or_store(&reader.target)?, &reader.target)?;
        Ok(reader)
    }

    /// A reader sharing this store's database (for query threads).
    pub fn reader(&self) -> EmbeddedReader {
        self.reader.clone()
    }

    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.reader.snapshot()
    }

    pub fn rows(&self, filter: &RowFilter) -> Result<Vec<Row>, StoreError> {
        self.reader.rows(filter)
    }

    pub fn all_rows(&self) -> Result<Vec<Row>, StoreError> {
        self.reader.all_rows()
    }

    pub fn row_history(&self, window: &WindowKey) -> Result<Vec<Row>, StoreError> {
        self.reader.row_history(window)
    }

    pub fn late_entries(&self, from: EventTime, to: EventTime) -> Result<Vec<LateEntry>, StoreError> {
        self.reader.late_entries(from, to)
    }

    /// Deletes the rows, versions and ledger entries of every window that
    /// starts before the event time `older_than_ms`, in one transaction.
    /// Returns how many records went. See [`super::DEFAULT_RETENTION_MS`].
    pub fn sweep(&mut self, older_than_ms: EventTime) -> Result<usize, StoreError> {
        let target = &self.reader.target;
        let txn = self.begin_write()?;
        let mut removed = 0;
        {
            let mut rows = txn.open_table(ROWS).or_store(target)?;
            for entry in rows.extract_if(|(_, _, _, start), _| start < older_than_ms).or_store(target)? {
                entry.or_store(target)?;
                removed += 1;
            }
            let mut by_window = txn.open_table(ROWS_BY_WINDOW).or_store(target)?;
            for entry in by_window.extract_if(|(_, _, start, _), _| start < older_than_ms).or_store(target)? {
                entry.or_store(target)?;
            }
            let mut versions = txn.open_table(ROW_VERSIONS).or_store(target)?;
            for entry in versions.extract_if(|(_, _, _, start, _), _| start < older_than_ms).or_store(target)? {
                entry.or_store(target)?;
                removed += 1;
            }
            let mut late = txn.open_table(LATE).or_store(target)?;
            for entry in late.extract_if(|(start, _, _, _, _), _| start < older_than_ms).or_store(target)? {
                entry.or_store(target)?;
                removed += 1;
            }
        }
        txn.commit().or_store(target)?;
        Ok(removed)
    }

    fn begin_write(&self) -> Result<Write<'_>, StoreError> {
        let open = self.writable.open_db()?;
        let mut txn = open.begin_write().or_store(&self.reader.target)?;
        txn.set_durability(Durability::Immediate).or_store(&self.reader.target)?;
        Ok(Write { txn, _open: open })
    }

    /// Writes `commit` into `txn` without committing it: the whole epoch or,
    /// if this fails or panics and `txn` is dropped, nothing.
    fn apply(txn: &WriteTransaction, commit: &EpochCommit, target: &str) -> Result<(), StoreError> {
        let current = stored_generation(&txn.open_table(META).or_store(target)?, target)?;
        if commit.generation < current {
            return Err(StoreError::Fenced { target: target.to_string(), generation: commit.generation, current });
        }
        assert_eq!(commit.generation, current, "commit of generation {} that was never begun", commit.generation);
        let mut epochs = txn.open_table(EPOCHS).or_store(target)?;
        let last = read_last(&epochs, target)?;
        if let Some(last) = &last {
            assert!(commit.epoch > last.epoch, "epoch {} committed after epoch {}", commit.epoch, last.epoch);
        }
        let stored = last.map(|last| last.partitions).unwrap_or_default();
        let partitions = advance_checkpoints(stored, &commit.partitions);
        write_rows(txn, commit.epoch, &commit.rows, target)?;
        write_late(txn, &commit.late, target)?;
        let mut state = txn.open_table(STATE).or_store(target)?;
        for (key, value) in &commit.state_upserts {
            state.insert(key.as_slice(), value.as_slice()).or_store(target)?;
        }
        for key in &commit.state_deletes {
            state.remove(key.as_slice()).or_store(target)?;
        }
        let last = LastCommit { epoch: commit.epoch, generation: commit.generation, partitions };
        epochs.insert(LAST, encode_last(&last).as_slice()).or_store(target)?;
        Ok(())
    }
}

impl EpochStore for EmbeddedStore {
    fn begin_generation(&mut self) -> Result<u64, StoreError> {
        let target = &self.reader.target;
        let txn = self.begin_write()?;
        let generation = {
            let mut meta = txn.open_table(META).or_store(target)?;
            let generation = stored_generation(&meta, target)? + 1;
            meta.insert(META_GENERATION, generation).or_store(target)?;
            generation
        };
        txn.commit().or_store(target)?;
        Ok(generation)
    }

    fn commit(&mut self, commit: EpochCommit) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        EmbeddedStore::apply(&txn, &commit, &self.reader.target)?;
        txn.commit().or_store(&self.reader.target)
    }

    fn last_committed(&self) -> Result<Option<Recovered>, StoreError> {
        self.reader.last_committed()
    }
}

impl EmbeddedReader {
    /// A consistent view of everything committed so far.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let txn = match &self.handle {
            Handle::Writable(writable) => writable.open_db()?.begin_read(),
            Handle::ReadOnly(db) => db.begin_read(),
        };
        Ok(Snapshot { txn: txn.or_store(&self.target)?, target: self.target.clone() })
    }

    pub fn rows(&self, filter: &RowFilter) -> Result<Vec<Row>, StoreError> {
        self.snapshot()?.rows(filter)
    }

    pub fn all_rows(&self) -> Result<Vec<Row>, StoreError> {
        self.snapshot()?.all_rows()
    }

    pub fn row_history(&self, window: &WindowKey) -> Result<Vec<Row>, StoreError> {
        self.snapshot()?.row_history(window)
    }

    pub fn late_entries(&self, from: EventTime, to: EventTime) -> Result<Vec<LateEntry>, StoreError> {
        self.snapshot()?.late_entries(from, to)
    }

    pub fn last_committed(&self) -> Result<Option<Recovered>, StoreError> {
        self.snapshot()?.last_committed()
    }
}

impl Snapshot {
    /// The latest row of each matching window, by window start.
    pub fn rows(&self, filter: &RowFilter) -> Result<Vec<Row>, StoreError> {
        if filter.from >= filter.to {
            return Ok(Vec::new());
        }
        let code = key_type_code(filter.key_type);
        let (key, granularity) = (filter.key.as_str(), filter.granularity_ms);
        let table = self.txn.open_table(ROWS).or_store(&self.target)?;
        let range = table.range((code, key, granularity, filter.from)..(code, key, granularity, filter.to));
        range
            .or_store(&self.target)?
            .map(|entry| {
                let (key, value) = entry.or_store(&self.target)?;
                self.row(key.value(), value.value())
            })
            .collect()
    }

    /// The latest rows of every key of `key_type` in one window.
    pub fn window_rows(&self, key_type: KeyType, granularity_ms: u64, window_start: EventTime) -> Result<Vec<Row>, StoreError> {
        let code = key_type_code(key_type);
        let index = self.txn.open_table(ROWS_BY_WINDOW).or_store(&self.target)?;
        let rows = self.txn.open_table(ROWS).or_store(&self.target)?;
        let range =
            index.range((code, granularity_ms, window_start, "")..(code, granularity_ms, window_start + 1, "")).or_store(&self.target)?;
        let mut out = Vec::new();
        for entry in range {
            let (key, _) = entry.or_store(&self.target)?;
            let (_, _, _, name) = key.value();
            let id = (code, name, granularity_ms, window_start);
            let value = rows.get(id).or_store(&self.target)?.ok_or_else(|| self.corrupt(format!("indexed row {name} missing")))?;
            out.push(self.row(id, value.value())?);
        }
        Ok(out)
    }

    /// The newest window start of `key_type` rows at `granularity_ms` that
    /// is at most `at_most`, if any.
    pub fn latest_window(&self, key_type: KeyType, granularity_ms: u64, at_most: EventTime) -> Result<Option<EventTime>, StoreError> {
        let code = key_type_code(key_type);
        let index = self.txn.open_table(ROWS_BY_WINDOW).or_store(&self.target)?;
        let last = index
            .range((code, granularity_ms, 0, "")..(code, granularity_ms, at_most.saturating_add(1), ""))
            .or_store(&self.target)?
            .next_back();
        Ok(match last {
            Some(entry) => Some(entry.or_store(&self.target)?.0.value().2),
            None => None,
        })
    }

    /// The last committed epoch, without its checkpoints and state.
    pub fn committed_epoch(&self) -> Result<Option<u64>, StoreError> {
        let epochs = self.txn.open_table(EPOCHS).or_store(&self.target)?;
        Ok(read_last(&epochs, &self.target)?.map(|last| last.epoch))
    }

    /// The latest row of every window, in key order, streamed.
    pub fn iter_rows(&self) -> Result<impl Iterator<Item = Result<Row, StoreError>> + '_, StoreError> {
        let table = self.txn.open_table(ROWS).or_store(&self.target)?;
        let range = table.range::<(u8, &str, u64, u64)>(..).or_store(&self.target)?;
        Ok(range.map(|entry| {
            let (key, value) = entry.or_store(&self.target)?;
            self.row(key.value(), value.value())
        }))
    }

    /// How many windows have a row.
    pub fn row_count(&self) -> Result<u64, StoreError> {
        redb::ReadableTableMetadata::len(&self.txn.open_table(ROWS).or_store(&self.target)?).or_store(&self.target)
    }

    /// The latest row of every window, in key order.
    pub fn all_rows(&self) -> Result<Vec<Row>, StoreError> {
        self.iter_rows()?.collect()
    }

    /// Every final and restated version of one window, oldest first.
    pub fn row_history(&self, window: &WindowKey) -> Result<Vec<Row>, StoreError> {
        let code = key_type_code(window.key_type);
        let (key, granularity, start) = (window.key.as_str(), window.granularity_ms, window.window_start);
        let table = self.txn.open_table(ROW_VERSIONS).or_store(&self.target)?;
        let range = table.range((code, key, granularity, start, 0)..=(code, key, granularity, start, u32::MAX));
        range
            .or_store(&self.target)?
            .map(|entry| {
                let (key, value) = entry.or_store(&self.target)?;
                let (code, key, granularity, start, _) = key.value();
                self.row((code, key, granularity, start), value.value())
            })
            .collect()
    }

    /// Ledger entries of 1m windows starting in `[from, to)`: one entry per
    /// key, window, batch and held flag, request ids ascending.
    pub fn late_entries(&self, from: EventTime, to: EventTime) -> Result<Vec<LateEntry>, StoreError> {
        <Self as StoreSnapshot>::late_entries(self, from, to)
    }

    /// See [`StoreSnapshot::late_records`]: one range of the `LATE` table,
    /// read as far as `visit` takes.
    pub fn late_records(
        &self,
        from: EventTime,
        to: EventTime,
        after: Option<&LatePosition>,
        visit: &mut dyn FnMut(LateRecord) -> Visit,
    ) -> Result<(), StoreError> {
        if from >= to {
            return Ok(());
        }
        let table = self.txn.open_table(LATE).or_store(&self.target)?;
        let end = Bound::Excluded((to, 0u8, "", 0u64, 0u128));
        let start = match after.filter(|a| a.window_start >= from) {
            Some(a) => Bound::Excluded((a.window_start, key_type_code(a.key_type), a.key.as_str(), a.batch, a.request_id)),
            None => Bound::Included((from, 0u8, "", 0u64, 0u128)),
        };
        for entry in table.range::<(u64, u8, &str, u64, u128)>((start, end)).or_store(&self.target)? {
            let (key, held) = entry.or_store(&self.target)?;
            let (window_start, code, key, batch, request_id) = key.value();
            let key_type = key_type_of(code).ok_or_else(|| self.corrupt(format!("key type {code}")))?;
            let at = LatePosition { window_start, key_type, key: key.into(), batch, request_id };
            if visit(LateRecord { at, held: held.value() }) == Visit::Stop {
                break;
            }
        }
        Ok(())
    }

    /// The latest row of one window with its stored sketch, if that row is
    /// settled (final or restated).
    pub fn settled_row(&self, window: &WindowKey) -> Result<Option<(Row, Vec<u8>)>, StoreError> {
        let code = key_type_code(window.key_type);
        let id = (code, window.key.as_str(), window.granularity_ms, window.window_start);
        let table = self.txn.open_table(ROWS).or_store(&self.target)?;
        let Some(value) = table.get(id).or_store(&self.target)? else { return Ok(None) };
        let row = self.row(id, value.value())?;
        if row.status == Status::Partial {
            return Ok(None);
        }
        let sketch = decode_row(value.value()).map(|v| v.sketch.to_vec()).unwrap_or_default();
        Ok(Some((row, sketch)))
    }

    /// One state entry of the committed epoch, by its key.
    pub fn state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let table = self.txn.open_table(STATE).or_store(&self.target)?;
        let value = table.get(key).or_store(&self.target)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// The last committed epoch with every checkpoint and all state.
    pub fn last_committed(&self) -> Result<Option<Recovered>, StoreError> {
        let epochs = self.txn.open_table(EPOCHS).or_store(&self.target)?;
        let Some(last) = read_last(&epochs, &self.target)? else {
            return Ok(None);
        };
        let table = self.txn.open_table(STATE).or_store(&self.target)?;
        let state = table
            .range::<&[u8]>(..)
            .or_store(&self.target)?
            .map(|entry| {
                let (key, value) = entry.or_store(&self.target)?;
                Ok((key.value().to_vec(), value.value().to_vec()))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Some(Recovered { epoch: last.epoch, generation: last.generation, partitions: last.partitions, state }))
    }

    fn row(&self, (code, key, granularity_ms, window_start): (u8, &str, u64, u64), value: &[u8]) -> Result<Row, StoreError> {
        let key_type = key_type_of(code).ok_or_else(|| self.corrupt(format!("key type {code}")))?;
        let value = decode_row(value).ok_or_else(|| self.corrupt(format!("row {key}@{window_start}")))?;
        Ok(Row {
            key_type,
            key: key.into(),
            granularity_ms,
            window_start,
            clicks: value.clicks,
            distinct_users: value.distinct_users,
            status: value.status,
            version: value.version,
        })
    }

    fn corrupt(&self, what: String) -> StoreError {
        StoreError::Corrupt { target: self.target.to_string(), what }
    }
}

impl StoreSnapshot for Snapshot {
    fn rows(&self, filter: &RowFilter) -> Result<Vec<Row>, StoreError> {
        Snapshot::rows(self, filter)
    }

    fn window_rows(&self, key_type: KeyType, granularity_ms: u64, window_start: EventTime) -> Result<Vec<Row>, StoreError> {
        Snapshot::window_rows(self, key_type, granularity_ms, window_start)
    }

    fn latest_window(&self, key_type: KeyType, granularity_ms: u64, at_most: EventTime) -> Result<Option<EventTime>, StoreError> {
        Snapshot::latest_window(self, key_type, granularity_ms, at_most)
    }

    fn committed_epoch(&self) -> Result<Option<u64>, StoreError> {
        Snapshot::committed_epoch(self)
    }

    fn iter_rows(&self) -> Result<RowIter<'_>, StoreError> {
        Ok(Box::new(Snapshot::iter_rows(self)?))
    }

    fn row_history(&self, window: &WindowKey) -> Result<Vec<Row>, StoreError> {
        Snapshot::row_history(self, window)
    }

    fn late_records(
        &self,
        from: EventTime,
        to: EventTime,
        after: Option<&LatePosition>,
        visit: &mut dyn FnMut(LateRecord) -> Visit,
    ) -> Result<(), StoreError> {
        Snapshot::late_records(self, from, to, after, visit)
    }

    fn settled_row(&self, window: &WindowKey) -> Result<Option<(Row, Vec<u8>)>, StoreError> {
        Snapshot::settled_row(self, window)
    }

    fn state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Snapshot::state(self, key)
    }

    fn last_committed(&self) -> Result<Option<Recovered>, StoreError> {
        Snapshot::last_committed(self)
    }

    fn newest_generation(&self) -> Result<Option<u64>, StoreError> {
        let meta = self.txn.open_table(META).or_store(&self.target)?;
        stored_generation(&meta, &self.target).map(Some)
    }

    fn row_count(&self) -> Result<u64, StoreError> {
        Snapshot::row_count(self)
    }

    fn all_rows(&self) -> Result<Vec<Row>, StoreError> {
        Snapshot::all_rows(self)
    }
}

impl StoreReader for EmbeddedReader {
    fn snapshot(&self) -> Result<Box<dyn StoreSnapshot>, StoreError> {
        Ok(Box::new(EmbeddedReader::snapshot(self)?))
    }
}

fn builder() -> Builder {
    let mut builder = Builder::new();
    builder.set_cache_size(CACHE_BYTES).set_concurrency_mode(ConcurrencyMode::SingleWriter);
    builder
}

/// Takes the exclusive lock on `dir/LOCK` (see `crate::lockfile`).
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    crate::lockfile::lock_dir(dir).map_err(|e| match e {
        LockError::Held { pid } => StoreError::Locked { path, pid },
        LockError::Io(source) => StoreError::Io { path, source },
    })
}

/// Repairs a store file whose writer died, as the next writer's open
/// would: under the lock, which must be free, then closes it cleanly.
fn repair(dir: &Path, target: &str) -> Result<(), StoreError> {
    let _lock = match lock_dir(dir) {
        Ok(lock) => lock,
        Err(StoreError::Locked { pid, .. }) => return Err(StoreError::NeedsRepair { target: target.to_string(), pid }),
        Err(error) => return Err(error),
    };
    builder().open(dir.join(STORE_FILE)).or_store(target)?.close().or_store(target)
}

/// Creates every table and the meta entries of a new store; checks the
/// format of an existing one.
fn initialize(db: &Database, target: &str) -> Result<(), StoreError> {
    let mut txn = db.begin_write().or_store(target)?;
    txn.set_durability(Durability::Immediate).or_store(target)?;
    {
        let mut meta = txn.open_table(META).or_store(target)?;
        if meta.get(META_FORMAT).or_store(target)?.is_none() {
            meta.insert(META_FORMAT, FORMAT_VERSION).or_store(target)?;
            meta.insert(META_GENERATION, 0).or_store(target)?;
        }
        check_format(&meta, target)?;
        txn.open_table(ROWS).or_store(target)?;
        txn.open_table(ROW_VERSIONS).or_store(target)?;
        txn.open_table(ROWS_BY_WINDOW).or_store(target)?;
        txn.open_table(LATE).or_store(target)?;
        txn.open_table(EPOCHS).or_store(target)?;
        txn.open_table(STATE).or_store(target)?;
    }
    txn.commit().or_store(target)
}

fn check_format(meta: &impl ReadableTable<&'static str, u64>, target: &str) -> Result<(), StoreError> {
    let found = meta.get(META_FORMAT).or_store(target)?.map(|v| v.value()).unwrap_or(0);
    if found != FORMAT_VERSION {
        return Err(StoreError::Format { target: target.to_string(), found, expected: FORMAT_VERSION });
    }
    Ok(())
}

fn stored_generation(meta: &impl ReadableTable<&'static str, u64>, target: &str) -> Result<u64, StoreError> {
    let generation = meta.get(META_GENERATION).or_store(target)?;
    generation.map(|g| g.value()).ok_or_else(|| StoreError::Corrupt { target: target.to_string(), what: "meta: no generation".into() })
}

fn read_last(epochs: &impl ReadableTable<&'static str, &'static [u8]>, target: &str) -> Result<Option<LastCommit>, StoreError> {
    let Some(value) = epochs.get(LAST).or_store(target)? else {
        return Ok(None);
    };
    let last = decode_last(value.value());
    last.map(Some).ok_or_else(|| StoreError::Corrupt { target: target.to_string(), what: "last commit record".into() })
}

/// Applies rows in order. Partial rows only overwrite the latest row, and
/// never a settled one; final and restated rows also go to the history.
fn write_rows(txn: &WriteTransaction, epoch: u64, rows: &[StoredRow], target: &str) -> Result<(), StoreError> {
    let mut latest = txn.open_table(ROWS).or_store(target)?;
    let mut versions = txn.open_table(ROW_VERSIONS).or_store(target)?;
    let mut by_window = txn.open_table(ROWS_BY_WINDOW).or_store(target)?;
    // In key order, each window's versions in the order given: the B-tree
    // then rewrites each page it touches once, not once per row.
    let mut sorted: Vec<&StoredRow> = rows.iter().collect();
    sorted.sort_by(|a, b| {
        let (a, b) = (&a.row, &b.row);
        (key_type_code(a.key_type), a.key.as_str(), a.granularity_ms, a.window_start).cmp(&(
            key_type_code(b.key_type),
            b.key.as_str(),
            b.granularity_ms,
            b.window_start,
        ))
    });
    for StoredRow { row, sketch } in sorted {
        assert_version_matches_status(row);
        let id = (key_type_code(row.key_type), row.key.as_str(), row.granularity_ms, row.window_start);
        let stored = match latest.get(id).or_store(target)? {
            Some(value) => {
                let value = decode_row(value.value());
                let value = value.ok_or_else(|| StoreError::Corrupt { target: target.to_string(), what: format!("row {}", row.key) })?;
                Some((value.status, value.version, value.clicks, value.distinct_users))
            }
            None => None,
        };
        let settled = stored.filter(|&(status, ..)| status != Status::Partial);
        if let Some((_, version, clicks, distinct_users)) = settled {
            if row.status == Status::Partial {
                assert!(row.clicks <= clicks, "partial row of {} newer than its settled row: {row:?}", row.key);
                continue;
            }
            assert!(row.version >= version, "row {row:?} older than stored version {version}");
            if row.version == version {
                assert_eq!(
                    (row.clicks, row.distinct_users),
                    (clicks, distinct_users),
                    "version {version} of {} rewritten with other values",
                    row.key
                );
            }
        }
        if row.status != Status::Partial {
            // The history keeps no sketch: only the latest row's is read back.
            let versioned = (id.0, id.1, id.2, id.3, row.version);
            versions.insert(versioned, encode_row(row, epoch, &[]).as_slice()).or_store(target)?;
        }
        let value = encode_row(row, epoch, sketch);
        if latest.insert(id, value.as_slice()).or_store(target)?.is_none() {
            by_window.insert((id.0, id.2, id.3, id.1), ()).or_store(target)?;
        }
    }
    Ok(())
}

fn write_late(txn: &WriteTransaction, late: &[LateEntry], target: &str) -> Result<(), StoreError> {
    let mut table = txn.open_table(LATE).or_store(target)?;
    for entry in late {
        let code = key_type_code(entry.key_type);
        for &request_id in &entry.request_ids {
            let key = (entry.window_start, code, entry.key.as_str(), entry.batch, request_id);
            table.insert(key, entry.held).or_store(target)?;
        }
    }
    Ok(())
}

/// Turns redb's errors into [`StoreError::Backend`] naming the store file.
trait OrStore<T> {
    fn or_store(self, target: &str) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> OrStore<T> for Result<T, E> {
    fn or_store(self, target: &str) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::Backend { target: target.to_string(), source: Box::new(e.into()) })
    }
}
