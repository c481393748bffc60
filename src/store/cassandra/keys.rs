//! The API keys of a job on Cassandra, in its keyspace (`api_keys`), so
//! that every `tally up` of the job, on any machine, checks the same keys
//! and a revocation reaches them all.
//!
//! A key is one row of the job's partition: reading every key is one read
//! of one partition, at the configured consistency. A key is created with
//! `INSERT … IF NOT EXISTS` (a lightweight transaction: two keys never
//! share an id) and revoked with `UPDATE … IF revoked_ms = null`, the
//! condition naming the key's digest too, so that a revoke of a key that
//! does not exist never creates a row. A transaction whose outcome is
//! unknown is decided by reading the row back at SERIAL.

use std::time::Duration;

use scylla::statement::prepared::PreparedStatement;

use super::config::CassandraConfig;
use super::db::{applied, prepare, Access, Db, Kind};
use super::layout::{signed, unsigned};
use crate::keys::{KeyError, KeyRecord, KeyStore};
use crate::store::StoreError;

/// Reads and transactions of one change before it gives up.
const ATTEMPTS: u32 = 5;
/// First pause after a transaction whose outcome is unknown; doubles.
const RETRY_FIRST: Duration = Duration::from_millis(200);

const COLUMNS: &str = "id, name, scope, created_ms, expires_ms, revoked_ms, secret_sha256";

type KeyRow = (String, Option<String>, Option<String>, Option<i64>, Option<i64>, Option<i64>, Option<String>);

/// The keys of one job in its keyspace.
pub struct CassandraKeys {
    db: Db,
    st: Statements,
}

struct Statements {
    list: PreparedStatement,
    read_serial: PreparedStatement,
    insert: PreparedStatement,
    revoke: PreparedStatement,
}

impl CassandraKeys {
    /// Connects to read the keys of `job`: the keyspace must hold tally's
    /// tables already.
    pub fn open(config: &CassandraConfig, job: &str) -> Result<CassandraKeys, StoreError> {
        CassandraKeys::connect(config, job, Access::Read)
    }

    /// Connects to change the keys of `job`, creating the keyspace and the
    /// tables if they are missing (keys may be made before the job first
    /// runs).
    pub fn open_to_write(config: &CassandraConfig, job: &str) -> Result<CassandraKeys, StoreError> {
        CassandraKeys::connect(config, job, Access::Write)
    }

    fn connect(config: &CassandraConfig, job: &str, access: Access) -> Result<CassandraKeys, StoreError> {
        let db = Db::connect(config, job, access)?;
        let st = db.block_on(Statements::prepare(&db, config)).map_err(|e| db.error(format!("prepare: {e}")))?;
        Ok(CassandraKeys { db, st })
    }

    fn failed(&self, error: impl std::fmt::Display) -> KeyError {
        let error = self.db.error(error);
        KeyError::Store { code: error.exit_code(), message: error.to_string() }
    }

    /// The row of key `id`, read at SERIAL (it completes a transaction in
    /// flight).
    fn read_serial(&self, id: &str) -> Result<Option<KeyRecord>, KeyError> {
        let rows: Vec<KeyRow> = self.db.read_all(&self.st.read_serial, (self.db.job.as_str(), id)).map_err(|e| self.failed(e))?;
        rows.into_iter().next().map(|row| self.record(row)).transpose()
    }

    fn record(&self, (id, name, scope, created, expires, revoked, digest): KeyRow) -> Result<KeyRecord, KeyError> {
        let time = |t: Option<i64>| t.and_then(unsigned);
        let record = KeyRecord {
            name: name.unwrap_or_default(),
            scope: scope.unwrap_or_default(),
            created_ms: time(created).unwrap_or(0),
            expires_ms: time(expires),
            revoked_ms: time(revoked),
            secret_sha256: digest.unwrap_or_default(),
            id,
        };
        // A row that is not whole (written by hand, or half deleted) is
        // refused rather than read as a key.
        if record.scope.parse::<crate::keys::Scope>().is_err() || crate::hex::decode_32(record.secret_sha256.as_bytes()).is_none() {
            return Err(self.failed(format!("key {}: not a whole key row", record.id)));
        }
        Ok(record)
    }

    /// Runs a transaction and, when its outcome is unknown, says so and
    /// waits before the change is read back.
    fn transaction(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
        pause: &mut Duration,
    ) -> Option<bool> {
        match applied(self.db.block_on(self.db.session.execute_unpaged(statement, values))) {
            Ok(applied) => Some(applied),
            Err(error) => {
                tracing::warn!("cassandra: a change to the keys of job {} had an unknown outcome ({error}); reading it back", self.db.job);
                std::thread::sleep(*pause);
                *pause *= 2;
                None
            }
        }
    }

    fn unsettled(&self) -> KeyError {
        self.failed(format!("the keys of job {} did not settle in {ATTEMPTS} attempts", self.db.job))
    }
}

impl KeyStore for CassandraKeys {
    fn list(&self) -> Result<Vec<KeyRecord>, KeyError> {
        let rows: Vec<KeyRow> = self.db.read_all(&self.st.list, (self.db.job.as_str(),)).map_err(|e| self.failed(e))?;
        let mut keys = rows.into_iter().map(|row| self.record(row)).collect::<Result<Vec<_>, _>>()?;
        // The partition is in id order; keys are listed in creation order.
        keys.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(keys)
    }

    fn insert(&self, record: &KeyRecord) -> Result<bool, KeyError> {
        let values = (
            self.db.job.as_str(),
            record.id.as_str(),
            record.name.as_str(),
            record.scope.as_str(),
            signed(record.created_ms),
            record.expires_ms.map(signed),
            record.secret_sha256.as_str(),
        );
        let mut pause = RETRY_FIRST;
        for _ in 0..ATTEMPTS {
            if let Some(applied) = self.transaction(&self.st.insert, values, &mut pause) {
                return Ok(applied);
            }
            // Unknown: the row with this id and digest is ours if it is there.
            match self.read_serial(&record.id)? {
                Some(found) => return Ok(found.secret_sha256 == record.secret_sha256),
                None => continue,
            }
        }
        Err(self.unsettled())
    }

    fn revoke(&self, id: &str, now_ms: u64) -> Result<KeyRecord, KeyError> {
        let mut pause = RETRY_FIRST;
        for _ in 0..ATTEMPTS {
            let found = self.read_serial(id)?.ok_or_else(|| KeyError::NoSuchKey(id.to_owned()))?;
            if found.revoked_ms.is_some() {
                return Ok(found);
            }
            let values = (signed(now_ms), self.db.job.as_str(), id, found.secret_sha256.as_str());
            if self.transaction(&self.st.revoke, values, &mut pause) == Some(true) {
                return Ok(KeyRecord { revoked_ms: Some(now_ms), ..found });
            }
        }
        Err(self.unsettled())
    }

    fn place(&self) -> String {
        self.db.target.to_string()
    }
}

impl Statements {
    async fn prepare(db: &Db, config: &CassandraConfig) -> Result<Statements, scylla::errors::ExecutionError> {
        let prepare = |cql: String, kind: Kind| prepare(&db.session, config, cql, kind);
        Ok(Statements {
            list: prepare(format!("SELECT {COLUMNS} FROM api_keys WHERE job = ?"), Kind::Read).await?,
            read_serial: prepare(format!("SELECT {COLUMNS} FROM api_keys WHERE job = ? AND id = ?"), Kind::SerialRead).await?,
            insert: prepare(
                "INSERT INTO api_keys (job, id, name, scope, created_ms, expires_ms, secret_sha256) VALUES (?, ?, ?, ?, ?, ?, ?) \
                 IF NOT EXISTS"
                    .into(),
                Kind::Lwt,
            )
            .await?,
            revoke: prepare(
                "UPDATE api_keys SET revoked_ms = ? WHERE job = ? AND id = ? IF secret_sha256 = ? AND revoked_ms = null".into(),
                Kind::Lwt,
            )
            .await?,
        })
    }
}
