//! Deleting one job's rows from every table: how a version's build that
//! was replaced, deleted, or left behind by an interrupted backfill goes
//! away (`versions.rs`).
//!
//! First the job's `jobs` row is deleted, by a lightweight transaction:
//! every later commit or mark of a writer still running for it (a paused
//! backfill that lost its claim) then finds no row, and stops. Then each
//! table's partitions of the job are found by a scan of partition keys
//! (`SELECT DISTINCT ... ALLOW FILTERING`: Cassandra cannot delete by a
//! part of a partition key) and deleted, a page at a time, with tombstones
//! above every timestamp an epoch writes ([`PURGE_TIMESTAMP_US`]), so an
//! apply still in flight cannot bring a cell back. Build names are never
//! used again, so nothing needs to be written under them afterwards.
//!
//! Every step is idempotent: a purge that stops halfway is run again.

use scylla::response::PagingState;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row as CqlRow};

use super::config::CassandraConfig;
use super::db::{prepare, Db, Kind};
use super::layout::write_timestamp;
use crate::event::MAX_EVENT_TIME_MS;
use crate::store::StoreError;

/// The write timestamp of a purge's tombstones: above every epoch's
/// ([`write_timestamp`] of the last event time there can be) and above
/// the wall clock of the staging writes.
pub fn purge_timestamp_us() -> i64 {
    write_timestamp(MAX_EVENT_TIME_MS) + 1
}

/// Every table that holds a job's rows, but `jobs`, and the columns of its
/// partition key after `job` (as in `schema.cql`; a test checks). Neither
/// `output_versions` nor `api_keys` is here: both belong to the job that
/// serves, never to a build.
pub const TABLES: [(&str, &[&str]); 11] = [
    ("staging", &["epoch", "generation"]),
    ("window_rows", &["key_type", "key", "granularity", "bucket"]),
    ("rows_by_window", &["key_type", "granularity", "window_start"]),
    ("windows", &["key_type", "granularity", "bucket"]),
    ("window_buckets", &["key_type", "granularity"]),
    ("row_versions", &["key_type", "key", "granularity", "bucket"]),
    ("late", &["day"]),
    ("late_days", &[]),
    ("state", &["shard"]),
    ("ad_catalog", &["catalog", "ad"]),
    ("catalogs", &[]),
];

/// Deletes every row of `db.job`; returns how many partitions it deleted.
pub fn purge(db: &Db, config: &CassandraConfig) -> Result<u64, StoreError> {
    let prepared = |cql: String, kind: Kind| db.block_on(prepare(&db.session, config, cql, kind)).map_err(|e| db.error(e));
    let fence = prepared("DELETE FROM jobs WHERE job = ? IF EXISTS".into(), Kind::Lwt)?;
    // Applied, or not (the row is gone already): either way it is gone.
    db.block_on(db.session.execute_unpaged(&fence, (db.job.as_str(),))).map_err(|e| db.error(format!("deleting the jobs row: {e}")))?;
    let mut partitions = 0;
    for (table, keys) in TABLES {
        let columns: String = keys.iter().map(|k| format!(", {k}")).collect();
        let scan = prepared(format!("SELECT DISTINCT job{columns} FROM {table} WHERE job = ? ALLOW FILTERING"), Kind::Read)?;
        let conditions: String = keys.iter().map(|k| format!(" AND {k} = ?")).collect();
        let delete = prepared(format!("DELETE FROM {table} USING TIMESTAMP ? WHERE job = ?{conditions}"), Kind::Write)?;
        partitions += purge_table(db, &scan, &delete).map_err(|e| db.error(format!("purging {table}: {e}")))?;
    }
    Ok(partitions)
}

/// Deletes the partitions `scan` finds, a page at a time.
fn purge_table(db: &Db, scan: &PreparedStatement, delete: &PreparedStatement) -> Result<u64, StoreError> {
    let mut deleted = 0;
    let mut state = Some(PagingState::start());
    while let Some(page) = state.take() {
        let (keys, next): (Vec<CqlRow>, _) = db.read_page(scan, (db.job.as_str(),), page)?;
        let mut writes = Vec::with_capacity(keys.len());
        for key in keys {
            let mut values = vec![CqlValue::BigInt(purge_timestamp_us())];
            for column in key.columns {
                values.push(column.ok_or_else(|| db.corrupt("a partition key column is null"))?);
            }
            writes.push(db.write(delete, values));
        }
        deleted += writes.len() as u64;
        db.write_all(writes)?;
        state = next;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(table, partition key)` of every `CREATE TABLE` in `schema.cql`.
    fn partition_keys() -> Vec<(String, Vec<String>)> {
        let schema = include_str!("schema.cql");
        let code: String = schema.lines().map(|l| l.split_once("--").map_or(l, |(code, _)| code)).collect::<Vec<_>>().join(" ");
        let mut out = Vec::new();
        for statement in code.split(';').filter(|s| s.contains("CREATE TABLE")) {
            let name = statement.split_whitespace().nth(5).expect("CREATE TABLE IF NOT EXISTS name").to_owned();
            let key = match statement.split_once("PRIMARY KEY ((") {
                Some((_, rest)) => rest.split_once(')').expect("a closed partition key").0.to_owned(),
                None => {
                    let before = statement.split_once(" PRIMARY KEY").expect("a primary key").0;
                    let column = before.rsplit(['(', ',']).next().unwrap_or("");
                    column.split_whitespace().next().unwrap_or("").to_owned()
                }
            };
            out.push((name, key.split(',').map(|c| c.trim().to_owned()).collect()));
        }
        out
    }

    #[test]
    fn every_table_keyed_by_job_is_purged_by_its_whole_partition_key() {
        let keyed: Vec<(String, Vec<String>)> = partition_keys().into_iter().filter(|(_, key)| key[0] == "job").collect();
        let expected: Vec<(String, Vec<String>)> = keyed
            .into_iter()
            .filter(|(table, _)| !matches!(table.as_str(), "jobs" | "output_versions" | "api_keys"))
            .map(|(table, key)| (table, key[1..].to_vec()))
            .collect();
        let purged: Vec<(String, Vec<String>)> =
            TABLES.iter().map(|(table, key)| (table.to_string(), key.iter().map(|k| k.to_string()).collect())).collect();
        let sorted = |mut v: Vec<(String, Vec<String>)>| {
            v.sort();
            v
        };
        assert_eq!(sorted(purged), sorted(expected));
    }

    #[test]
    fn tombstones_are_above_every_epoch_and_the_clock() {
        assert!(purge_timestamp_us() > write_timestamp(MAX_EVENT_TIME_MS));
        let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
        assert!(purge_timestamp_us() > now_us);
    }
}
