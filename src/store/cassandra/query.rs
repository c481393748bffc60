//! The read side: snapshots as of an applied epoch.
//!
//! A snapshot reads the `jobs` row once (QUORUM) and from then on shows
//! the applied epoch `A` it found: of every window the newest row written
//! at an epoch at or below `A` (the newest settled one if there is one: a
//! partial row never hides a settled row), versions and ledger entries of
//! epochs at or below `A`, and the checkpoints recorded with `A`. Rows a
//! later epoch writes meanwhile (even half of an epoch) are skipped.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use scylla::response::PagingState;
use scylla::serialize::row::SerializeRow;

use super::catalog::{self, AdVersion, PublishedCatalog};
use super::config::CassandraConfig;
use super::db::{Access, Db};
use super::layout::{bucket, late_day, saturating_signed, shard, unsigned, SERIES_BUCKET_WINDOWS, STATE_SHARDS};
use super::protocol::{AppliedRecord, JobColumns, JobRow};
use crate::event::{EventTime, Key, KeyType};
use crate::row::{Row, Status};
use crate::store::codes::{key_type_code, key_type_of, status_of};
use crate::store::read::{LatePosition, LateRecord, ReadBack, RowIter, StoreReader, StoreSnapshot, Visit};
use crate::store::{Recovered, RowFilter, StoreError, WindowKey};

/// Most series partitions one [`StoreSnapshot::rows`] call reads (a year of
/// 1m windows); the query API asks for at most two.
pub const MAX_BUCKETS_PER_READ: u64 = 366;

/// Reads one job's committed epochs in Cassandra.
#[derive(Clone)]
pub struct CassandraReader {
    db: Arc<Db>,
}

impl CassandraReader {
    /// Connects for reading only: a keyspace without tally's tables is
    /// refused, nothing is created.
    pub fn open(config: &CassandraConfig, job: &str) -> Result<CassandraReader, StoreError> {
        Ok(CassandraReader { db: Arc::new(Db::connect(config, job, Access::Read)?) })
    }

    pub(super) fn of(db: Arc<Db>) -> CassandraReader {
        CassandraReader { db }
    }

    /// The published catalog of a fingerprint (`catalog.rs`), if whole.
    pub fn catalog(&self, fingerprint: &str) -> Result<Option<PublishedCatalog>, StoreError> {
        catalog::published(&self.db, fingerprint)
    }

    /// The version of `ad` in catalog `fingerprint` for the 1m window
    /// starting at `window_start`.
    pub fn ad_version(&self, fingerprint: &str, ad: &str, window_start: EventTime) -> Result<Option<AdVersion>, StoreError> {
        catalog::ad_version(&self.db, fingerprint, ad, window_start)
    }

    /// A snapshot as of the epoch applied now.
    pub fn snapshot_now(&self) -> Result<CassandraSnapshot, StoreError> {
        let rows: Vec<JobColumns> = self.db.read_all(&self.db.st.read_job, (self.db.job.as_str(),))?;
        let row = rows.into_iter().next().map(JobRow::from_columns).transpose().map_err(|e| self.db.corrupt(e))?;
        let generation = row.as_ref().map(|r| r.generation);
        Ok(CassandraSnapshot { db: Arc::clone(&self.db), generation, applied: row.and_then(|r| r.applied) })
    }
}

impl StoreReader for CassandraReader {
    fn snapshot(&self) -> Result<Box<dyn StoreSnapshot>, StoreError> {
        Ok(Box::new(self.snapshot_now()?))
    }

    /// The state entry and the window's rows in parallel (a final window's
    /// sketch is in its row), then, if either was found, the `jobs` row:
    /// two round trips, one for a window never committed. The settled row
    /// is the newest whatever epoch wrote it: a job reads back
    /// what it committed itself, and the generation read after the rows
    /// says whether a newer one wrote them.
    fn read_back(&self, state_key: &[u8], window: &WindowKey) -> Result<ReadBack, StoreError> {
        let db = &self.db;
        let state = db.session.execute_unpaged(&db.st.state_get, (db.job.as_str(), shard(state_key), state_key));
        let rows = db.session.execute_unpaged(&db.st.rows_of_window, window_values(&db.job, window));
        let (state, rows) = db.block_on(futures::future::join(state, rows));
        let state: Vec<(Option<Vec<u8>>,)> = db.decode(state)?;
        let mut read = ReadBack { state: state.into_iter().next().map(|(value,)| value.unwrap_or_default()), ..ReadBack::default() };
        let rows: Vec<WindowColumns> = db.decode(rows)?;
        for (_, clicks, users, status, version, sketch) in rows {
            let row = row(db, window, (clicks, users, status, version))?;
            if row.status != Status::Partial {
                read.settled = Some((row, sketch.unwrap_or_default()));
                break;
            }
        }
        if read.state.is_some() || read.settled.is_some() {
            read.newest_generation = self.snapshot_now()?.generation;
        }
        Ok(read)
    }
}

/// What a reader sees: everything up to one applied epoch.
pub struct CassandraSnapshot {
    db: Arc<Db>,
    /// The newest generation begun when the snapshot was taken.
    generation: Option<u64>,
    applied: Option<AppliedRecord>,
}

/// A row read back with the epoch that wrote it.
type Written = (u64, Row);
/// `window_start, key_type, key, batch_epoch, request_id, held, epoch` of `late`.
type LateColumns = (i64, i8, String, i64, Vec<u8>, bool, i64);
/// `epoch, clicks, distinct_users, status, version, sketch` of one window.
type WindowColumns = (i64, i64, i64, i8, i32, Option<Vec<u8>>);
/// `key_type, key, granularity, window_start, epoch, clicks, distinct_users,
/// status, version` of the scan of every row.
type ScanColumns = (i8, String, i64, i64, i64, i64, i64, i8, i32);

impl CassandraSnapshot {
    fn job(&self) -> &str {
        self.db.job.as_str()
    }

    /// The applied epoch, as the bound on `epoch` columns.
    fn bound(&self) -> Option<u64> {
        self.applied.as_ref().map(|a| a.epoch)
    }

    fn epoch_of(&self, value: i64) -> Result<u64, StoreError> {
        unsigned(value).ok_or_else(|| self.db.corrupt(format!("epoch {value}")))
    }

    fn row(&self, window: &WindowKey, values: (i64, i64, i8, i32)) -> Result<Row, StoreError> {
        row(&self.db, window, values)
    }

    fn key_type(&self, code: i8) -> Result<KeyType, StoreError> {
        u8::try_from(code).ok().and_then(key_type_of).ok_or_else(|| self.db.corrupt(format!("key type {code}")))
    }

    fn start(&self, value: i64) -> Result<EventTime, StoreError> {
        unsigned(value).ok_or_else(|| self.db.corrupt(format!("window start {value}")))
    }
}

/// A row from the columns every row read selects.
fn row(db: &Db, window: &WindowKey, values: (i64, i64, i8, i32)) -> Result<Row, StoreError> {
    let (clicks, distinct_users, status, version) = values;
    let bad = || db.corrupt(format!("row of {} {} at {}", window.key_type.as_str(), window.key, window.window_start));
    Ok(Row {
        key_type: window.key_type,
        key: window.key.clone(),
        granularity_ms: window.granularity_ms,
        window_start: window.window_start,
        clicks: unsigned(clicks).ok_or_else(bad)?,
        distinct_users: unsigned(distinct_users).ok_or_else(bad)?,
        status: u8::try_from(status).ok().and_then(status_of).ok_or_else(bad)?,
        version: u32::try_from(version).map_err(|_| bad())?,
    })
}

/// The values that name one window's rows in `window_rows`.
fn window_values<'a>(job: &'a str, window: &'a WindowKey) -> (&'a str, i8, &'a str, i64, i64, i64) {
    (
        job,
        key_type_code(window.key_type) as i8,
        window.key.as_str(),
        saturating_signed(window.granularity_ms),
        saturating_signed(bucket(window.granularity_ms, window.window_start)),
        saturating_signed(window.window_start),
    )
}

/// The row a reader at `bound` sees of one window, from the window's rows
/// newest epoch first: the newest settled row at or below `bound`, else
/// the newest partial row at or below it.
pub fn visible(rows: impl IntoIterator<Item = Written>, bound: u64) -> Option<Row> {
    let mut partial = None;
    for (epoch, row) in rows {
        if epoch > bound {
            continue;
        }
        if row.status != Status::Partial {
            return Some(row);
        }
        partial.get_or_insert(row);
    }
    partial
}

impl StoreSnapshot for CassandraSnapshot {
    fn rows(&self, filter: &RowFilter) -> Result<Vec<Row>, StoreError> {
        let Some(bound) = self.bound() else { return Ok(Vec::new()) };
        if filter.from >= filter.to {
            return Ok(Vec::new());
        }
        let span = filter.granularity_ms.max(1) * SERIES_BUCKET_WINDOWS;
        let (first, last) = (bucket(filter.granularity_ms, filter.from), bucket(filter.granularity_ms, filter.to - 1));
        if (last - first) / span + 1 > MAX_BUCKETS_PER_READ {
            return Err(self
                .db
                .error(format!("rows of {} partitions asked at once, at most {MAX_BUCKETS_PER_READ}", (last - first) / span + 1)));
        }
        let (kt, g) = (key_type_code(filter.key_type) as i8, saturating_signed(filter.granularity_ms));
        let mut by_start: BTreeMap<EventTime, Vec<Written>> = BTreeMap::new();
        for b in (first..=last).step_by(span as usize) {
            let values = (
                self.job(),
                kt,
                filter.key.as_str(),
                g,
                saturating_signed(b),
                saturating_signed(filter.from),
                saturating_signed(filter.to),
            );
            let found: Vec<(i64, i64, i64, i64, i8, i32)> = self.db.read_all(&self.db.st.rows_in_range, values)?;
            for (start, epoch, clicks, users, status, version) in found {
                let window = WindowKey {
                    key_type: filter.key_type,
                    key: filter.key.clone(),
                    granularity_ms: filter.granularity_ms,
                    window_start: self.start(start)?,
                };
                let row = self.row(&window, (clicks, users, status, version))?;
                by_start.entry(window.window_start).or_default().push((self.epoch_of(epoch)?, row));
            }
        }
        Ok(by_start.into_values().filter_map(|rows| visible(rows, bound)).collect())
    }

    fn window_rows(&self, key_type: KeyType, granularity_ms: u64, window_start: EventTime) -> Result<Vec<Row>, StoreError> {
        let Some(bound) = self.bound() else { return Ok(Vec::new()) };
        let values = (self.job(), key_type_code(key_type) as i8, saturating_signed(granularity_ms), saturating_signed(window_start));
        let found: Vec<(String, i64, i64, i64, i8, i32)> = self.db.read_all(&self.db.st.rows_by_window, values)?;
        let mut by_key: BTreeMap<String, Vec<Written>> = BTreeMap::new();
        for (key, epoch, clicks, users, status, version) in found {
            let window = WindowKey { key_type, key: Key::from(key.as_str()), granularity_ms, window_start };
            let row = self.row(&window, (clicks, users, status, version))?;
            by_key.entry(key).or_default().push((self.epoch_of(epoch)?, row));
        }
        Ok(by_key.into_values().filter_map(|rows| visible(rows, bound)).collect())
    }

    fn latest_window(&self, key_type: KeyType, granularity_ms: u64, at_most: EventTime) -> Result<Option<EventTime>, StoreError> {
        if self.bound().is_none() {
            return Ok(None);
        }
        let (kt, g) = (key_type_code(key_type) as i8, saturating_signed(granularity_ms));
        let buckets: Vec<(i64,)> =
            self.db.read_all(&self.db.st.window_buckets, (self.job(), kt, g, saturating_signed(bucket(granularity_ms, at_most))))?;
        for (b,) in buckets {
            let starts: Vec<(i64,)> =
                self.db.read_all(&self.db.st.windows_in_bucket, (self.job(), kt, g, b, saturating_signed(at_most)))?;
            for (start,) in starts {
                let start = self.start(start)?;
                if !self.window_rows(key_type, granularity_ms, start)?.is_empty() {
                    return Ok(Some(start));
                }
            }
        }
        Ok(None)
    }

    fn committed_epoch(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.bound())
    }

    fn iter_rows(&self) -> Result<RowIter<'_>, StoreError> {
        Ok(Box::new(AllRows {
            snapshot: self,
            page: VecDeque::new(),
            next: Some(PagingState::start()),
            group: Vec::new(),
            window: None,
            failed: false,
        }))
    }

    fn row_history(&self, window: &WindowKey) -> Result<Vec<Row>, StoreError> {
        let Some(bound) = self.bound() else { return Ok(Vec::new()) };
        let found: Vec<(i32, i64, i64, i64, i8)> = self.db.read_all(&self.db.st.versions, window_values(self.job(), window))?;
        let mut history = Vec::new();
        for (version, epoch, clicks, users, status) in found {
            if self.epoch_of(epoch)? <= bound {
                history.push(self.row(window, (clicks, users, status, version))?);
            }
        }
        Ok(history)
    }

    fn late_records(
        &self,
        from: EventTime,
        to: EventTime,
        after: Option<&LatePosition>,
        visit: &mut dyn FnMut(LateRecord) -> Visit,
    ) -> Result<(), StoreError> {
        let Some(bound) = self.bound() else { return Ok(()) };
        let after = after.filter(|a| a.window_start >= from);
        let first = after.map_or(from, |a| a.window_start);
        if first >= to {
            return Ok(());
        }
        let days: Vec<(i64,)> = self.db.read_all(&self.db.st.late_days, (self.job(),))?;
        let mut days = days.into_iter().map(|(day,)| self.start(day)).collect::<Result<Vec<_>, _>>()?;
        days.sort_unstable();
        for day in days.into_iter().filter(|&day| day >= late_day(first) && day < to) {
            let (job, day_value, to_value) = (self.job(), saturating_signed(day), saturating_signed(to));
            // The day of `after` is read from just past it; later days whole.
            let (statement, values): (_, Box<dyn SerializeRow + Send + Sync>) = match after.filter(|a| late_day(a.window_start) == day) {
                Some(a) => (
                    &self.db.st.late_after,
                    Box::new((
                        job.to_owned(),
                        day_value,
                        saturating_signed(a.window_start),
                        key_type_code(a.key_type) as i8,
                        a.key.to_string(),
                        saturating_signed(a.batch),
                        a.request_id.to_be_bytes().to_vec(),
                        to_value,
                    )),
                ),
                None => (&self.db.st.late_in_day, Box::new((job.to_owned(), day_value, saturating_signed(from), to_value))),
            };
            let mut state = PagingState::start();
            loop {
                let (found, next): (Vec<LateColumns>, _) = self.db.read_page(statement, &values, state)?;
                for (start, kt, key, batch, id, held, epoch) in found {
                    if self.epoch_of(epoch)? > bound {
                        continue;
                    }
                    let id: [u8; 16] = id.try_into().map_err(|_| self.db.corrupt("a ledger request id is not 16 bytes"))?;
                    let at = LatePosition {
                        window_start: self.start(start)?,
                        key_type: self.key_type(kt)?,
                        key: Key::from(key.as_str()),
                        batch: self.start(batch)?,
                        request_id: u128::from_be_bytes(id),
                    };
                    if visit(LateRecord { at, held }) == Visit::Stop {
                        return Ok(());
                    }
                }
                match next {
                    Some(next) => state = next,
                    None => break,
                }
            }
        }
        Ok(())
    }

    fn settled_row(&self, window: &WindowKey) -> Result<Option<(Row, Vec<u8>)>, StoreError> {
        let Some(bound) = self.bound() else { return Ok(None) };
        let found: Vec<WindowColumns> = self.db.read_all(&self.db.st.rows_of_window, window_values(self.job(), window))?;
        for (epoch, clicks, users, status, version, sketch) in found {
            let row = self.row(window, (clicks, users, status, version))?;
            if self.epoch_of(epoch)? <= bound && row.status != Status::Partial {
                return Ok(Some((row, sketch.unwrap_or_default())));
            }
        }
        Ok(None)
    }

    fn state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let found: Vec<(Option<Vec<u8>>,)> = self.db.read_all(&self.db.st.state_get, (self.job(), shard(key), key))?;
        Ok(found.into_iter().next().map(|(value,)| value.unwrap_or_default()))
    }

    fn last_committed(&self) -> Result<Option<Recovered>, StoreError> {
        let Some(applied) = &self.applied else { return Ok(None) };
        let mut state = Vec::new();
        for shard in 0..STATE_SHARDS {
            let found: Vec<(Vec<u8>, Option<Vec<u8>>)> = self.db.read_all(&self.db.st.state_shard, (self.job(), shard))?;
            state.extend(found.into_iter().map(|(key, value)| (key, value.unwrap_or_default())));
        }
        state.sort();
        Ok(Some(Recovered { epoch: applied.epoch, generation: applied.generation, partitions: applied.checkpoints.clone(), state }))
    }

    fn newest_generation(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.generation)
    }
}

/// Every window's visible row, from one scan of the job's rows: a
/// partition's rows come together, newest window and epoch first.
struct AllRows<'a> {
    snapshot: &'a CassandraSnapshot,
    page: VecDeque<ScanColumns>,
    /// Where the next page starts; `None` once the last page was read.
    next: Option<PagingState>,
    /// The rows of the window being read.
    group: Vec<Written>,
    window: Option<WindowKey>,
    failed: bool,
}

impl AllRows<'_> {
    /// The next row of the scan, with its window and epoch.
    fn pop(&mut self) -> Result<Option<(WindowKey, u64, Row)>, StoreError> {
        while self.page.is_empty() {
            let Some(state) = self.next.take() else { return Ok(None) };
            let db = &self.snapshot.db;
            let (rows, next) = db.read_page(&db.st.all_rows, (self.snapshot.job(),), state)?;
            self.page = rows.into();
            self.next = next;
        }
        let (kt, key, g, start, epoch, clicks, users, status, version) = self.page.pop_front().expect("a page with rows");
        let s = self.snapshot;
        let granularity_ms = unsigned(g).ok_or_else(|| s.db.corrupt(format!("granularity {g}")))?;
        let window = WindowKey { key_type: s.key_type(kt)?, key: Key::from(key.as_str()), granularity_ms, window_start: s.start(start)? };
        let row = s.row(&window, (clicks, users, status, version))?;
        Ok(Some((window, s.epoch_of(epoch)?, row)))
    }

    fn flush(&mut self) -> Option<Row> {
        let bound = self.snapshot.bound()?;
        visible(std::mem::take(&mut self.group), bound)
    }
}

impl Iterator for AllRows<'_> {
    type Item = Result<Row, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.snapshot.bound().is_none() {
            return None;
        }
        loop {
            match self.pop() {
                Err(error) => {
                    self.failed = true;
                    return Some(Err(error));
                }
                Ok(Some((window, epoch, row))) if self.window.as_ref() == Some(&window) => self.group.push((epoch, row)),
                Ok(Some((window, epoch, row))) => {
                    let done = self.flush();
                    self.window = Some(window);
                    self.group.push((epoch, row));
                    if let Some(row) = done {
                        return Some(Ok(row));
                    }
                }
                Ok(None) => {
                    self.window = None;
                    return self.flush().map(Ok);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(epoch: u64, status: Status, clicks: u64) -> Written {
        let version = match status {
            Status::Partial => 0,
            _ => 1,
        };
        let row = Row {
            key_type: KeyType::Ad,
            key: "a".into(),
            granularity_ms: 60_000,
            window_start: 0,
            clicks,
            distinct_users: 1,
            status,
            version,
        };
        (epoch, row)
    }

    #[test]
    fn a_reader_sees_the_newest_row_at_or_below_its_epoch_and_settled_rows_first() {
        // Newest epoch first, as Cassandra returns them.
        let rows = vec![
            written(5, Status::Partial, 9),
            written(4, Status::Final, 7),
            written(3, Status::Partial, 6),
            written(2, Status::Partial, 2),
        ];
        assert_eq!(visible(rows.clone(), 5).map(|r| r.clicks), Some(7), "a partial row never hides a settled one");
        assert_eq!(visible(rows.clone(), 3).map(|r| r.clicks), Some(6), "an epoch above the reader's is not seen");
        assert_eq!(visible(rows.clone(), 2).map(|r| r.clicks), Some(2));
        assert_eq!(visible(rows, 1), None);
    }
}
