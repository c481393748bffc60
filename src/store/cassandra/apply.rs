//! Applying a committed epoch to the serving tables and the state.
//!
//! Every cell is written with the epoch's write timestamp
//! ([`write_timestamp`]), so applying an epoch again (a recovery, or a
//! zombie that committed it before it was fenced) writes the same cells at
//! the same timestamp, and an older epoch applied late always stays under
//! the newer ones. Rows carry their epoch in the clustering key: a reader
//! takes, per window, the newest row at or below the applied epoch it read
//! first, so a half-applied epoch is never seen.

use std::collections::{BTreeMap, BTreeSet};

use futures::future::BoxFuture;
use scylla::errors::ExecutionError;

use super::db::Db;
use super::layout::{bucket, late_day, shard, signed, write_timestamp};
use crate::row::Status;
use crate::store::codes::{key_type_code, status_code};
use crate::store::{assert_version_matches_status, EpochCommit, StoredRow, WindowKey};

/// One write of an epoch's apply, not yet run.
pub type Write<'a> = BoxFuture<'a, Result<(), ExecutionError>>;

/// Every write of `commit` to the serving tables (with `ttl_s`) and the
/// state. Their order does not matter: none depends on another.
pub fn writes<'a>(db: &'a Db, commit: &'a EpochCommit, ttl_s: i32) -> Vec<Write<'a>> {
    let ts = write_timestamp(commit.epoch);
    let epoch = signed(commit.epoch);
    let job = db.job.as_str();
    let st = &db.st;
    let mut out = Vec::new();
    let mut windows = BTreeSet::new();
    for StoredRow { row, sketch } in latest_rows(&commit.rows) {
        let (kt, g, start) = (key_type_code(row.key_type) as i8, signed(row.granularity_ms), signed(row.window_start));
        let b = signed(bucket(row.granularity_ms, row.window_start));
        let (clicks, users, status, version) =
            (signed(row.clicks), signed(row.distinct_users), status_code(row.status) as i8, row.version as i32);
        let key = row.key.as_str();
        out.push(db.write(&st.put_row, (job, kt, key, g, b, start, epoch, clicks, users, status, version, sketch.as_slice(), ttl_s, ts)));
        out.push(db.write(&st.put_row_by_window, (job, kt, g, start, key, epoch, clicks, users, status, version, ttl_s, ts)));
        windows.insert((kt, g, b, start));
    }
    for StoredRow { row, .. } in commit.rows.iter().filter(|r| r.row.status != Status::Partial) {
        let (kt, g, start) = (key_type_code(row.key_type) as i8, signed(row.granularity_ms), signed(row.window_start));
        let b = signed(bucket(row.granularity_ms, row.window_start));
        let values = (signed(row.clicks), signed(row.distinct_users), status_code(row.status) as i8);
        let (clicks, users, status) = values;
        let version = row.version as i32;
        out.push(db.write(&st.put_version, (job, kt, row.key.as_str(), g, b, start, version, epoch, clicks, users, status, ttl_s, ts)));
    }
    let buckets: BTreeSet<_> = windows.iter().map(|&(kt, g, b, _)| (kt, g, b)).collect();
    for (kt, g, b, start) in windows {
        out.push(db.write(&st.put_window, (job, kt, g, b, start, ttl_s, ts)));
    }
    for (kt, g, b) in buckets {
        out.push(db.write(&st.put_window_bucket, (job, kt, g, b, ttl_s, ts)));
    }
    let mut days = BTreeSet::new();
    for entry in &commit.late {
        let (kt, day, start, batch) =
            (key_type_code(entry.key_type) as i8, signed(late_day(entry.window_start)), signed(entry.window_start), signed(entry.batch));
        days.insert(day);
        for &id in &entry.request_ids {
            let id = id.to_be_bytes().to_vec();
            out.push(db.write(&st.put_late, (job, day, start, kt, entry.key.as_str(), batch, id, entry.held, epoch, ttl_s, ts)));
        }
    }
    for day in days {
        out.push(db.write(&st.put_late_day, (job, day, ttl_s, ts)));
    }
    let deleted: BTreeSet<&[u8]> = commit.state_deletes.iter().map(Vec::as_slice).collect();
    for (key, value) in commit.state_upserts.iter().filter(|(key, _)| !deleted.contains(key.as_slice())) {
        out.push(db.write(&st.put_state, (job, shard(key), key.as_slice(), value.as_slice(), ts)));
    }
    for key in deleted {
        out.push(db.write(&st.delete_state, (ts, job, shard(key), key)));
    }
    out
}

/// The row each window ends the epoch with, in emission order: a later row
/// replaces an earlier one, except that a partial row never replaces a
/// settled one (as in the embedded store). Cassandra keeps one row per
/// window and epoch, and two writes of one cell at one timestamp would not
/// keep the later.
pub fn latest_rows(rows: &[StoredRow]) -> Vec<&StoredRow> {
    let mut latest: BTreeMap<WindowKey, &StoredRow> = BTreeMap::new();
    for stored in rows {
        assert_version_matches_status(&stored.row);
        let window = WindowKey::of(&stored.row);
        let settled = latest.get(&window).is_some_and(|kept| kept.row.status != Status::Partial);
        if settled && stored.row.status == Status::Partial {
            continue;
        }
        latest.insert(window, stored);
    }
    latest.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::KeyType;
    use crate::row::Row;

    fn stored(key: &str, status: Status, version: u32, clicks: u64) -> StoredRow {
        let row = Row {
            key_type: KeyType::Ad,
            key: key.into(),
            granularity_ms: 60_000,
            window_start: 0,
            clicks,
            distinct_users: 1,
            status,
            version,
        };
        StoredRow { row, sketch: Vec::new() }
    }

    #[test]
    fn each_window_keeps_its_last_row_and_a_settled_row_outlives_partials() {
        let rows = vec![
            stored("a", Status::Partial, 0, 1),
            stored("a", Status::Final, 1, 2),
            stored("a", Status::Partial, 0, 2),
            stored("b", Status::Partial, 0, 1),
            stored("b", Status::Partial, 0, 3),
            stored("c", Status::Final, 1, 4),
            stored("c", Status::Restated, 2, 5),
        ];
        let kept: Vec<(&str, Status, u64)> = latest_rows(&rows).iter().map(|s| (s.row.key.as_str(), s.row.status, s.row.clicks)).collect();
        assert_eq!(kept, [("a", Status::Final, 2), ("b", Status::Partial, 3), ("c", Status::Restated, 5)]);
    }
}
