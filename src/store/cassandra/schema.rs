//! The schema (`schema.cql`), applied by the job when it connects.
//!
//! The job creates the keyspace if it is missing (SimpleStrategy with the
//! job file's `replication_factor`; a keyspace made beforehand, e.g. with
//! NetworkTopologyStrategy, is kept as it is), then the tables, every
//! statement `IF NOT EXISTS`, then records [`SCHEMA_VERSION`] in
//! `schema_version`. A keyspace already at this version is left alone; one
//! at an older version gets the tables it lacks (every statement is
//! idempotent, and a version only ever adds tables) and then records this
//! one; one at a newer version is refused. Export and verify create
//! nothing: they refuse a keyspace without tally's tables of this version.
//!
//! Cassandra may disagree with itself when two clients create one table at
//! the same moment, so only the job (one process per job) creates them, and
//! the commands that prepare for it: a backfill, and `tally keys` (keys
//! may be made before the job first runs). Run those before the job's
//! first start, or after it, not at the same moment.

use scylla::client::session::Session;
use scylla::statement::unprepared::Statement;
use scylla::statement::Consistency;

use super::config::CassandraConfig;
use super::db::Access;

/// Version of `schema.cql` and of what tally stores in it: 2 added
/// `output_versions`, `ad_catalog` and `catalogs`; 3 added `api_keys`.
pub const SCHEMA_VERSION: i32 = 3;
const SCHEMA: &str = include_str!("schema.cql");
/// The `schema_version` row of tally's tables.
const COMPONENT: &str = "tally";

pub async fn prepare_keyspace(session: &Session, config: &CassandraConfig, access: Access) -> Result<(), String> {
    let keyspace = &config.keyspace;
    if access == Access::Write {
        let create = format!(
            "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': {}}}",
            config.replication_factor
        );
        session.query_unpaged(create, &[]).await.map_err(|e| format!("creating keyspace {keyspace}: {e}"))?;
    }
    session.use_keyspace(keyspace.as_str(), false).await.map_err(|e| format!("keyspace {keyspace}: {e}"))?;
    match (stored_version(session, keyspace, config.consistency.driver()).await?, access) {
        (Some(SCHEMA_VERSION), _) => Ok(()),
        (Some(newer), _) if newer > SCHEMA_VERSION => {
            Err(format!("keyspace {keyspace} holds schema version {newer}, this build reads version {SCHEMA_VERSION}"))
        }
        (Some(older), Access::Read) => Err(format!(
            "keyspace {keyspace} holds schema version {older}, this build reads version {SCHEMA_VERSION}: a `tally run` or `tally backfill` of a job there adds what is missing"
        )),
        (None, Access::Read) => {
            Err(format!("keyspace {keyspace} has no tally tables of version {SCHEMA_VERSION} (found none): nothing was committed there"))
        }
        (_, Access::Write) => create_tables(session).await,
    }
}

async fn create_tables(session: &Session) -> Result<(), String> {
    for statement in statements(SCHEMA) {
        session.query_unpaged(statement.clone(), &[]).await.map_err(|e| format!("{e}, in: {statement}"))?;
    }
    let record = "INSERT INTO schema_version (component, version) VALUES (?, ?)";
    session.query_unpaged(record, (COMPONENT, SCHEMA_VERSION)).await.map_err(|e| format!("recording the schema version: {e}"))?;
    Ok(())
}

/// The schema version recorded in `keyspace`, if it has the table and the
/// row, read at `consistency` (the job's, so that export and verify at ONE
/// work with one replica up).
async fn stored_version(session: &Session, keyspace: &str, consistency: Consistency) -> Result<Option<i32>, String> {
    let tables = read("SELECT table_name FROM system_schema.tables WHERE keyspace_name = ? AND table_name = 'schema_version'", consistency);
    let found = session.query_unpaged(tables, (keyspace,)).await.map_err(|e| format!("reading the schema of {keyspace}: {e}"))?;
    let rows = found.into_rows_result().map_err(|e| e.to_string())?;
    if rows.rows_num() == 0 {
        return Ok(None);
    }
    let version = session
        .query_unpaged(read("SELECT version FROM schema_version WHERE component = ?", consistency), (COMPONENT,))
        .await
        .map_err(|e| format!("reading the schema version of {keyspace}: {e}"))?;
    let rows = version.into_rows_result().map_err(|e| e.to_string())?;
    let row = rows.maybe_first_row::<(Option<i32>,)>().map_err(|e| e.to_string())?;
    Ok(row.and_then(|(version,)| version))
}

/// A read at `consistency`, which the driver may send to another node when
/// a node is down.
fn read(cql: &str, consistency: Consistency) -> Statement {
    let mut statement = Statement::new(cql);
    statement.set_consistency(consistency);
    statement.set_is_idempotent(true);
    statement
}

/// The statements of a CQL file: `--` comments dropped, split at `;`.
fn statements(cql: &str) -> Vec<String> {
    let code: String = cql.lines().map(|line| line.split_once("--").map_or(line, |(code, _)| code)).collect::<Vec<_>>().join("\n");
    code.split(';').map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ")).filter(|s| !s.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_is_idempotent_table_creations_without_comments() {
        let statements = statements(SCHEMA);
        assert_eq!(statements.len(), 15);
        for statement in &statements {
            assert!(statement.starts_with("CREATE TABLE IF NOT EXISTS "), "{statement}");
            assert!(!statement.contains("--"), "{statement}");
        }
        assert!(statements.iter().any(|s| s.starts_with("CREATE TABLE IF NOT EXISTS schema_version ")));
    }
}
