//! Reading committed epochs, whatever the store.
//!
//! Export, verify, the window operator's read-back of final windows
//! (`sink::store::StoreWindows`) and the version listing read a store
//! through these two traits, so they work on the embedded store and on
//! Cassandra alike.
//!
//! A [`StoreSnapshot`] is one committed point: every read through it sees
//! the rows, versions, ledger entries and checkpoints of the same epochs
//! and nothing of a later one. The embedded store gives this with a redb
//! read transaction; Cassandra by reading as of the applied epoch it read
//! first (`store::cassandra`). Open-window state ([`StoreSnapshot::state`])
//! is the latest committed value of its key, which only the job itself
//! needs to be exact, since it reads its own commits.

use std::collections::BTreeMap;

use super::{Recovered, RowFilter, StoreError, WindowKey};
use crate::event::{EventTime, Key, KeyType};
use crate::row::{LateEntry, Row};

/// Where one request id is in the late ledger, whose order is by window
/// start, key type, key, batch and request id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LatePosition {
    pub window_start: EventTime,
    pub key_type: KeyType,
    pub key: Key,
    pub batch: EventTime,
    pub request_id: u128,
}

/// One request id of the late ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LateRecord {
    pub at: LatePosition,
    pub held: bool,
}

/// Ledger records gathered into entries: one per window, key, batch and
/// held flag, with its request ids in the order they were added.
#[derive(Debug, Default)]
pub struct LateGroups(BTreeMap<(EventTime, KeyType, Key, EventTime, bool), Vec<u128>>);

impl LateGroups {
    fn group(record: &LateRecord) -> (EventTime, KeyType, Key, EventTime, bool) {
        let at = &record.at;
        (at.window_start, at.key_type, at.key.clone(), at.batch, record.held)
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `record` belongs to an entry already here.
    pub fn holds(&self, record: &LateRecord) -> bool {
        self.0.contains_key(&LateGroups::group(record))
    }

    pub fn add(&mut self, record: &LateRecord) {
        self.0.entry(LateGroups::group(record)).or_default().push(record.at.request_id);
    }

    /// The entries in ledger order: window start, key type, key, batch, held.
    pub fn into_entries(self) -> Vec<LateEntry> {
        let entries = self.0.into_iter().map(|((window_start, key_type, key, batch, held), request_ids)| LateEntry {
            key_type,
            key,
            window_start,
            batch,
            held,
            request_ids,
        });
        entries.collect()
    }
}

/// What a visitor of the ledger ([`StoreSnapshot::late_records`]) says
/// after each record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visit {
    /// The record is taken; pass the next one.
    Next,
    /// The record is not taken; read no further.
    Stop,
}

/// The rows of a snapshot, one by one (the latest row of every window).
pub type RowIter<'a> = Box<dyn Iterator<Item = Result<Row, StoreError>> + 'a>;

/// One consistent view of what a store has committed.
pub trait StoreSnapshot {
    /// The latest row of each window matching `filter`, by window start.
    fn rows(&self, filter: &RowFilter) -> Result<Vec<Row>, StoreError>;
    /// The latest rows of every key of `key_type` in one window, by key.
    fn window_rows(&self, key_type: KeyType, granularity_ms: u64, window_start: EventTime) -> Result<Vec<Row>, StoreError>;
    /// The newest window start of `key_type` rows at `granularity_ms` that is
    /// at most `at_most`, if any.
    fn latest_window(&self, key_type: KeyType, granularity_ms: u64, at_most: EventTime) -> Result<Option<EventTime>, StoreError>;
    /// The epoch this snapshot shows, if any.
    fn committed_epoch(&self) -> Result<Option<u64>, StoreError>;
    /// The latest row of every window, streamed, in an order of the store's
    /// choosing.
    fn iter_rows(&self) -> Result<RowIter<'_>, StoreError>;
    /// Every final and restated version of one window, oldest first.
    fn row_history(&self, window: &WindowKey) -> Result<Vec<Row>, StoreError>;
    /// The ledger's request ids of 1m windows starting in `[from, to)`,
    /// after `after` when given, in ledger order ([`LatePosition`]), each
    /// passed to `visit` until it says [`Visit::Stop`]: the store reads no
    /// more than the visitor takes (give or take a page of a read).
    fn late_records(
        &self,
        from: EventTime,
        to: EventTime,
        after: Option<&LatePosition>,
        visit: &mut dyn FnMut(LateRecord) -> Visit,
    ) -> Result<(), StoreError>;
    /// The latest row of one window with its stored sketch, if that row is
    /// settled (final or restated).
    fn settled_row(&self, window: &WindowKey) -> Result<Option<(Row, Vec<u8>)>, StoreError>;
    /// One state entry, by its key (its latest committed value).
    fn state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// The snapshot's epoch with every checkpoint and all state.
    fn last_committed(&self) -> Result<Option<Recovered>, StoreError>;
    /// The newest generation begun, if any: a job of an older one is
    /// fenced.
    fn newest_generation(&self) -> Result<Option<u64>, StoreError>;

    /// Ledger entries of 1m windows starting in `[from, to)`: one entry per
    /// key, window, batch and held flag, request ids ascending, ordered by
    /// key type, key, window, batch. Reads the whole range (export and
    /// verify; the query API reads it in pages).
    fn late_entries(&self, from: EventTime, to: EventTime) -> Result<Vec<LateEntry>, StoreError> {
        let mut groups = LateGroups::default();
        self.late_records(from, to, None, &mut |record| {
            groups.add(&record);
            Visit::Next
        })?;
        let mut entries = groups.into_entries();
        entries.sort_by(|a, b| {
            (a.key_type, &a.key, a.window_start, a.batch, a.held).cmp(&(b.key_type, &b.key, b.window_start, b.batch, b.held))
        });
        Ok(entries)
    }

    /// How many windows have a row.
    fn row_count(&self) -> Result<u64, StoreError> {
        let mut count = 0;
        for row in self.iter_rows()? {
            row?;
            count += 1;
        }
        Ok(count)
    }

    /// The latest row of every window, in key order.
    fn all_rows(&self) -> Result<Vec<Row>, StoreError> {
        let mut rows = self.iter_rows()?.collect::<Result<Vec<_>, _>>()?;
        rows.sort_by(|a, b| {
            let key = |r: &Row| (r.key_type, r.key.clone(), r.granularity_ms, r.window_start);
            key(a).cmp(&key(b))
        });
        Ok(rows)
    }
}

/// What the job reads back of a window it committed (`StoreWindows`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadBack {
    /// The window's state entry.
    pub state: Option<Vec<u8>>,
    /// Its latest settled row and that row's sketch.
    pub settled: Option<(Row, Vec<u8>)>,
    /// The newest generation begun, read after the two above when they
    /// found anything (`None` when they found nothing, or nothing began).
    pub newest_generation: Option<u64>,
}

/// A store to take snapshots of; shared by threads (the window operators
/// of every worker, the query API).
pub trait StoreReader: Send + Sync {
    fn snapshot(&self) -> Result<Box<dyn StoreSnapshot>, StoreError>;

    /// The state entry `state_key` of `window` and its latest settled row
    /// (which holds a final window's sketch); then, if either was found,
    /// the newest generation. A job reads
    /// back only what it committed itself, and a newer generation begins
    /// before it writes: so if what was read came from a newer generation,
    /// the generation read after it shows that one.
    fn read_back(&self, state_key: &[u8], window: &WindowKey) -> Result<ReadBack, StoreError> {
        let snapshot = self.snapshot()?;
        let mut read = ReadBack { state: snapshot.state(state_key)?, ..ReadBack::default() };
        read.settled = snapshot.settled_row(window)?;
        if read.state.is_some() || read.settled.is_some() {
            read.newest_generation = self.snapshot()?.newest_generation()?;
        }
        Ok(read)
    }
}
