//! Store sink: each epoch batch becomes one [`EpochCommit`] of an
//! [`EpochStore`] (the embedded store or Cassandra) — rows, ledger, window
//! state and partition checkpoints, all or nothing — and the state and
//! checkpoints of the last commit are what a restarted job resumes from
//! ([`resume`]).
//!
//! State keys: `W` + bincode([`WinId`]) for windows, `P` + bincode
//! ([`PendingKey`]) for too-late partials waiting for their batch; values are
//! bincode of [`WindowValue`] and [`KeyedPartial`].
//!
//! A fault switch for tests only (`TALLY_FAULT`, see [`Fault`]) breaks the
//! protocol on purpose, so the crash test can show that `tally verify`
//! catches a broken commit. The Cassandra store reads its own faults from
//! the same variable (`store::cassandra::Faults`).

use std::collections::BTreeMap;

use super::{Epoch, EpochBatch, Sink, SinkError};
use crate::dataflow::partial::Agg;
use crate::dataflow::window::PendingKey;
use crate::dataflow::window::{CommittedWindows, KeyedPartial, WinId, WindowValue};
use crate::dataflow::{Checkpoint, RestoredWindows};
use crate::event::{EventTime, KeyType};
use crate::store::settings::{Origin, RunSettings, ORIGIN_KEY, SETTINGS_KEY};
use crate::store::WindowKey;
use crate::store::{EpochCommit, EpochStore, PartitionCheckpoint, Recovered, StoreError, StoreReader, StoredRow};

/// Deliberate protocol breakages, for the crash test's own test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Commit each epoch's offsets one epoch before its rows and state: a
    /// crash in between loses the rows of clicks the offsets claim.
    OffsetsBeforeRows,
    /// Commit rows and offsets but no window state: a restart forgets open
    /// windows.
    DropState,
}

impl Fault {
    /// Reads `TALLY_FAULT`, a comma-separated list of faults, for
    /// `offsets-before-rows` or `drop-state` (the stores read their own).
    pub fn from_env() -> Fault {
        let faults = std::env::var("TALLY_FAULT").unwrap_or_default();
        let named = |name: &str| faults.split(',').any(|fault| fault.trim() == name);
        if named("offsets-before-rows") {
            Fault::OffsetsBeforeRows
        } else if named("drop-state") {
            Fault::DropState
        } else {
            Fault::None
        }
    }
}

/// A store as the job's sink.
pub struct StoreSink {
    store: Box<dyn EpochStore + Send>,
    /// The job's settings (JSON), committed with the generation's first
    /// epoch; state keeps them from then on.
    settings: Option<Vec<u8>>,
    /// The origin (JSON), committed with the store's first epoch only.
    origin: Option<Vec<u8>>,
    generation: u64,
    staged: Option<EpochCommit>,
    fault: Fault,
    /// With `OffsetsBeforeRows`: the previous epoch's rows and state.
    deferred: Option<EpochCommit>,
}

impl StoreSink {
    /// Commits to `store` as `generation`, which the caller began
    /// ([`EpochStore::begin_generation`]). `origin` is given when the store
    /// has no committed epoch yet: its first commit records it.
    pub fn new(
        store: Box<dyn EpochStore + Send>,
        generation: u64,
        settings: RunSettings,
        origin: Option<Origin>,
        fault: Fault,
    ) -> StoreSink {
        let (settings, origin) = (Some(settings.to_json()), origin.map(|o| o.to_json()));
        StoreSink { store, settings, origin, generation, staged: None, fault, deferred: None }
    }
}

/// The distinct-user sketch behind a final or restated row, from the window
/// state committed with it (bincode of the HyperLogLog registers); empty
/// when the window was not kept (late policy `hold`) and for partial rows.
/// A partial row is replaced by its window's next row, and while the window
/// is open its state, committed in the same epoch, holds the sketch: a copy
/// with every early row would write each hot window's 4 KiB again every few
/// seconds for nobody to read.
fn sketch_of(row: &crate::row::Row, batch: &EpochBatch) -> Vec<u8> {
    if row.status == crate::row::Status::Partial {
        return Vec::new();
    }
    let id = WinId { end: row.window_end(), granularity: row.granularity_ms, key_type: row.key_type, key: row.key.clone() };
    match batch.windows.get(&id) {
        Some(Some(value)) if value.agg.clicks == row.clicks => bincode::serialize(&value.agg.users).expect("sketches serialize"),
        _ => Vec::new(),
    }
}

fn store_error(error: StoreError) -> SinkError {
    SinkError::Store(error.to_string())
}

fn encode<T: serde::Serialize>(tag: u8, value: &T) -> Vec<u8> {
    let mut out = vec![tag];
    bincode::serialize_into(&mut out, value).expect("state serializes to memory");
    out
}

fn to_store(c: &Checkpoint) -> PartitionCheckpoint {
    PartitionCheckpoint {
        partition: c.partition,
        offset: c.offset,
        max_ts: c.max_ts,
        floor: c.floor,
        dedup_replay_offset: c.replay_offset,
        dedup_replay_max_ts: c.replay_max_ts,
    }
}

impl Sink for StoreSink {
    fn stage(&mut self, epoch: Epoch, batch: &EpochBatch) -> Result<(), SinkError> {
        let mut commit = EpochCommit {
            epoch: epoch.0,
            generation: self.generation,
            rows: batch.rows.iter().map(|row| StoredRow { row: row.clone(), sketch: sketch_of(row, batch) }).collect(),
            late: batch.late.clone(),
            partitions: batch.checkpoints.values().map(to_store).collect(),
            state_upserts: [(SETTINGS_KEY, self.settings.take()), (ORIGIN_KEY, self.origin.take())]
                .into_iter()
                .filter_map(|(key, json)| Some((key.to_vec(), json?)))
                .collect(),
            ..Default::default()
        };
        for (id, value) in &batch.windows {
            let key = encode(b'W', id);
            match value {
                // A final window's sketch is stored once, with its row
                // (`sketch_of`), and read back from there.
                Some(value) if value.version > 0 => {
                    let bare = WindowValue { agg: Agg { clicks: value.agg.clicks, users: Default::default() }, version: value.version };
                    commit.state_upserts.push((key, bincode::serialize(&bare).expect("state serializes")));
                }
                Some(value) => commit.state_upserts.push((key, bincode::serialize(value).expect("state serializes"))),
                None => commit.state_deletes.push(key),
            }
        }
        for (id, partial) in &batch.pending {
            let key = encode(b'P', id);
            match partial {
                Some(partial) => commit.state_upserts.push((key, bincode::serialize(partial).expect("state serializes"))),
                None => commit.state_deletes.push(key),
            }
        }
        self.staged = Some(commit);
        Ok(())
    }

    fn commit(&mut self, epoch: Epoch) -> Result<(), SinkError> {
        let mut commit = self.staged.take().expect("an epoch is staged before it commits");
        assert_eq!(commit.epoch, epoch.0, "the staged epoch is the one committed");
        match self.fault {
            Fault::None => {}
            Fault::DropState => {
                commit.state_upserts.clear();
                commit.state_deletes.clear();
            }
            Fault::OffsetsBeforeRows => {
                let partitions = std::mem::take(&mut commit.partitions);
                let previous = self.deferred.replace(commit);
                let base = previous.unwrap_or(EpochCommit { generation: self.generation, ..Default::default() });
                commit = EpochCommit { epoch: epoch.0, partitions, ..base };
            }
        }
        self.store.commit(commit).map_err(store_error)
    }
}

/// The committed window state, read back by the window operator when a
/// too-late click restates a final window whose sketch left memory (see
/// [`CommittedWindows`]).
pub struct StoreWindows {
    reader: Box<dyn StoreReader>,
    /// The generation of the job reading: once a newer one has begun, the
    /// committed state is no longer this job's to read (a zombie stops).
    generation: u64,
    /// The latest window end of any row committed before this job began.
    rows_through: EventTime,
}

impl StoreWindows {
    /// Reads the latest committed window end of each key type and window
    /// length in `windows_ms` once, so that the job never asks the store
    /// about a window no earlier run can have left there.
    pub fn new(reader: Box<dyn StoreReader>, generation: u64, windows_ms: &[u64]) -> Result<StoreWindows, StoreError> {
        let snapshot = reader.snapshot()?;
        let mut rows_through = 0;
        for key_type in [KeyType::Ad, KeyType::Campaign, KeyType::Advertiser] {
            for &granularity in windows_ms {
                if let Some(start) = snapshot.latest_window(key_type, granularity, EventTime::MAX)? {
                    rows_through = rows_through.max(start.saturating_add(granularity));
                }
            }
        }
        drop(snapshot);
        Ok(StoreWindows { reader, generation, rows_through })
    }
}

impl CommittedWindows for StoreWindows {
    /// A window's state left the state table only for a settled row, and
    /// an earlier run's settled row is at or below `rows_through`.
    fn before_this_job(&self, id: &WinId) -> bool {
        id.end <= self.rows_through
    }

    /// The window's committed state or, once that was evicted, its latest
    /// settled row with the sketch stored beside it; refused once a newer
    /// generation has begun, as it may be that generation's.
    fn window(&self, id: &WinId) -> Result<Option<WindowValue>, String> {
        let key =
            WindowKey { key_type: id.key_type, key: id.key.clone(), granularity_ms: id.granularity, window_start: id.end - id.granularity };
        let read = self.reader.read_back(&encode(b'W', id), &key).map_err(|e| e.to_string())?;
        if let Some(newest) = read.newest_generation.filter(|&newest| newest > self.generation) {
            return Err(format!("generation {} is fenced: generation {newest} has started since", self.generation));
        }
        let settled = match read.settled {
            Some((row, sketch)) if sketch.is_empty() => Some((row, Default::default())),
            Some((row, sketch)) => Some((row, bincode::deserialize(&sketch).map_err(|e| format!("stored sketch of {id:?}: {e}"))?)),
            None => None,
        };
        let Some(bytes) = read.state else {
            return Ok(settled.map(|(row, users)| WindowValue { agg: Agg { clicks: row.clicks, users }, version: row.version }));
        };
        let mut value: WindowValue = bincode::deserialize(&bytes).map_err(|e| format!("window state of {id:?}: {e}"))?;
        if value.version > 0 && value.agg.users == Default::default() {
            // A final window's state leaves its sketch to its row.
            let Some((row, users)) = settled else { return Err(format!("final window {id:?} has state but no settled row")) };
            if (row.clicks, row.version) != (value.agg.clicks, value.version) {
                return Err(format!(
                    "final window {id:?}: state at version {} ({} clicks), row at version {} ({} clicks)",
                    value.version, value.agg.clicks, row.version, row.clicks
                ));
            }
            value.agg.users = users;
        }
        Ok(Some(value))
    }
}

/// What a job resumes from: partition checkpoints and window state of the
/// last committed epoch. Final windows come without their sketch: the window
/// operator reads it back from the store when it needs it ([`StoreWindows`]).
pub fn resume(recovered: &Recovered) -> Result<(BTreeMap<u32, Checkpoint>, RestoredWindows), StoreError> {
    let checkpoints = recovered
        .partitions
        .iter()
        .map(|p| {
            let c = Checkpoint {
                partition: p.partition,
                offset: p.offset,
                max_ts: p.max_ts,
                floor: p.floor,
                replay_offset: p.dedup_replay_offset,
                replay_max_ts: p.dedup_replay_max_ts,
            };
            (p.partition, c)
        })
        .collect();
    let mut restored = RestoredWindows::default();
    for (key, value) in &recovered.state {
        let corrupt = |what: &str| StoreError::Corrupt { target: "state".into(), what: format!("entry {what}") };
        match key.split_first() {
            Some((b'W', id)) => {
                let id: WinId = bincode::deserialize(id).map_err(|_| corrupt("window key"))?;
                let mut value: WindowValue = bincode::deserialize(value).map_err(|_| corrupt("window value"))?;
                if value.version > 0 {
                    value.agg.users = Default::default();
                }
                restored.windows.push((id, value));
            }
            Some((b'S' | b'O', _)) => {} // the settings and origin records: see `crate::store::settings`
            Some((b'P', id)) => {
                let id: PendingKey = bincode::deserialize(id).map_err(|_| corrupt("pending key"))?;
                let partial: KeyedPartial = bincode::deserialize(value).map_err(|_| corrupt("pending partial"))?;
                restored.pending.push((id, partial));
            }
            _ => return Err(corrupt("with an unknown tag")),
        }
    }
    Ok((checkpoints, restored))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::hll::Sketch;
    use crate::dataflow::partial::Agg;
    use crate::event::KeyType;
    use crate::row::{Row, Status};

    const MINUTE: u64 = 60_000;

    fn row(status: Status, version: u32, clicks: u64) -> Row {
        Row {
            key_type: KeyType::Ad,
            key: "ad-1".into(),
            granularity_ms: MINUTE,
            window_start: 0,
            clicks,
            distinct_users: 3,
            status,
            version,
        }
    }

    #[test]
    fn settled_rows_keep_their_window_sketch_and_partial_rows_none() {
        let mut users = Sketch::default();
        (0..3).for_each(|user| users.insert(user * 7919));
        let id = WinId { end: MINUTE, granularity: MINUTE, key_type: KeyType::Ad, key: "ad-1".into() };
        let mut batch = EpochBatch::default();
        batch.windows.insert(id, Some(WindowValue { agg: Agg { clicks: 5, users: users.clone() }, version: 1 }));

        let settled = sketch_of(&row(Status::Final, 1, 5), &batch);
        let stored: Sketch = bincode::deserialize(&settled).expect("a stored sketch decodes");
        assert_eq!(stored, users);
        assert_eq!(sketch_of(&row(Status::Restated, 2, 5), &batch), settled);
        assert!(sketch_of(&row(Status::Partial, 0, 5), &batch).is_empty(), "partial rows are stored without a sketch");
        assert!(sketch_of(&row(Status::Final, 1, 4), &batch).is_empty(), "a sketch of other clicks is not this row's");
    }

    #[test]
    fn a_final_window_is_read_back_with_its_rows_sketch_and_only_committed_ends_count_as_earlier() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = crate::store::embedded::EmbeddedStore::open(dir.path()).unwrap();
        let generation = store.begin_generation().unwrap();
        let reader = store.reader();
        let settings = crate::job::Job::defaults(std::path::Path::new("t.toml")).settings(None);
        let mut sink = StoreSink::new(Box::new(store), generation, settings, None, Fault::None);
        let sketch = |from: u64, n: u64| {
            let mut users = Sketch::default();
            (from..from + n).for_each(|user| users.insert(crate::event::mix64(user)));
            users.compact();
            users
        };
        let id = |end: u64| WinId { end, granularity: MINUTE, key_type: KeyType::Ad, key: "ad-1".into() };
        let (final_value, open_value) = (
            WindowValue { agg: Agg { clicks: 5, users: sketch(0, 3) }, version: 1 },
            WindowValue { agg: Agg { clicks: 2, users: sketch(10, 2) }, version: 0 },
        );
        let mut batch = EpochBatch::default();
        batch.rows.push(row(Status::Final, 1, 5));
        batch.windows.insert(id(MINUTE), Some(final_value.clone()));
        batch.windows.insert(id(2 * MINUTE), Some(open_value.clone()));
        sink.stage(Epoch(2 * MINUTE), &batch).unwrap();
        sink.commit(Epoch(2 * MINUTE)).unwrap();

        // The final window's state entry has no sketch: its row holds it.
        let snapshot = StoreReader::snapshot(&reader).unwrap();
        let state: WindowValue = bincode::deserialize(&snapshot.state(&encode(b'W', &id(MINUTE))).unwrap().unwrap()).unwrap();
        assert_eq!((state.agg.clicks, state.version, state.agg.users), (5, 1, Sketch::default()));
        drop(snapshot);

        let windows = StoreWindows::new(Box::new(reader), generation, &[MINUTE]).unwrap();
        assert_eq!(windows.window(&id(MINUTE)).unwrap(), Some(final_value), "read back with its row's sketch");
        assert_eq!(windows.window(&id(2 * MINUTE)).unwrap(), Some(open_value), "an open window's state keeps its sketch");
        assert!(windows.before_this_job(&id(MINUTE)), "a window with a committed row may be an earlier run's");
        assert!(!windows.before_this_job(&id(2 * MINUTE)), "no row ends there");
        assert!(!windows.before_this_job(&id(60 * MINUTE)));
    }
}
