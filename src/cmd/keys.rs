//! `tally keys add|list|revoke`: the API keys of the query API and the
//! dashboard, kept in the data directory, or with `--cassandra` (or a
//! `--job` on Cassandra) in the job's keyspace (see `tally::keys`).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use tally::datadir::DataDir;
use tally::exit;
use tally::job::SinkSpec;
use tally::keys::{add_key, KeyFile, KeyRecord, KeyStore, Scope};
use tally::store::cassandra::CassandraKeys;
use tally::time::{format_rfc3339, parse_rfc3339};

#[derive(Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
    /// The job whose keys these are, as `tally up --job` runs it: a job on
    /// Cassandra keeps them in its keyspace (without it: the data
    /// directory's, or with --cassandra the built-in Cassandra job's).
    #[arg(long, value_name = "JOB", global = true)]
    job: Option<PathBuf>,
    /// Cassandra contact points (host:port,...): the keys of the job as
    /// `tally up --cassandra HOSTS` runs it.
    #[arg(long, value_name = "HOSTS", global = true)]
    cassandra: Option<String>,
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it, once: only its hash is kept.
    Add(AddArgs),
    /// List the keys: id, scope, name, state, created, expires (never a secret).
    List {
        /// One JSON object per key, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Revoke key ID: a running `tally up` refuses it within a second.
    Revoke {
        /// The key's id, as `tally keys list` shows it.
        id: String,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct ScopeArgs {
    /// The key reads this advertiser's ads, campaigns and totals only.
    #[arg(long, value_name = "ADV")]
    advertiser: Option<String>,
    /// The key reads everything, `/v1/stats` and the whole late ledger too.
    #[arg(long)]
    operator: bool,
}

#[derive(Args)]
pub struct AddArgs {
    #[command(flatten)]
    scope: ScopeArgs,
    /// What the key is for, shown by `keys list`.
    #[arg(long, default_value = "")]
    name: String,
    /// When the key stops working: an RFC 3339 time, or a duration from now
    /// (`30d`, `12h`).
    #[arg(long, value_name = "T")]
    expires: Option<String>,
}

pub fn keys(args: KeysArgs, data_dir: &DataDir) -> i32 {
    let job = match tally::up::up_job(args.job.as_deref(), args.cassandra.as_deref()) {
        Ok(job) => job,
        Err(error) => {
            eprintln!("error: tally keys: {error}");
            return error.exit_code();
        }
    };
    let adding = matches!(args.command, KeysCommand::Add(_));
    let store: Box<dyn KeyStore> = match &job.sink {
        SinkSpec::Cassandra(config) => {
            // Adding may come before the job's first start: it creates the
            // tables; listing and revoking need them.
            let open = if adding { CassandraKeys::open_to_write } else { CassandraKeys::open };
            match open(config, &job.name) {
                Ok(keys) => Box::new(keys),
                Err(error) => {
                    eprintln!("error: tally keys: {error}");
                    return error.exit_code();
                }
            }
        }
        _ => Box::new(KeyFile::in_dir(&data_dir.root)),
    };
    let store = store.as_ref();
    let now = tally::run::now_ms();
    let result = match args.command {
        KeysCommand::Add(args) => add(store, args, now),
        KeysCommand::List { json } => store.list().map(|keys| list(&keys, json, now, store)),
        KeysCommand::Revoke { id } => store.revoke(&id, now).map(|key| println!("revoked {} ({})", key.id, key.scope)),
    };
    match result {
        Ok(()) => exit::OK,
        Err(error) => {
            eprintln!("error: tally keys: {error}");
            error.exit_code()
        }
    }
}

fn add(store: &dyn KeyStore, args: AddArgs, now: u64) -> Result<(), tally::keys::KeyError> {
    let invalid = |field, reason| tally::keys::KeyError::Invalid { field, reason };
    let scope = match args.scope.advertiser {
        Some(id) => Scope::advertiser(&id).map_err(|reason| invalid("--advertiser", reason))?,
        None => Scope::Operator,
    };
    let expires = args.expires.as_deref().map(|text| expires_at(text, now).map_err(|reason| invalid("--expires", reason))).transpose()?;
    let (record, key) = add_key(store, &scope, &args.name, expires, now)?;
    println!("{key}");
    eprintln!(
        "created key {} ({}){} in {}: it is shown this once; give it as `Authorization: Bearer <key>`, or paste it into the dashboard",
        record.id,
        record.scope,
        record.expires_ms.map_or(String::new(), |t| format!(", expires {}", format_rfc3339(t))),
        store.place()
    );
    Ok(())
}

/// An RFC 3339 time, or a duration from `now`.
fn expires_at(text: &str, now: u64) -> Result<u64, String> {
    if let Some(at) = parse_rfc3339(text) {
        return Ok(at);
    }
    let span = tally::config::parse_duration(text).map_err(|e| format!("{text:?} is neither an RFC 3339 time nor a duration: {e}"))?;
    Ok(now.saturating_add(span))
}

fn list(keys: &[KeyRecord], json: bool, now: u64, store: &dyn KeyStore) {
    for key in keys {
        if json {
            let line = serde_json::json!({
                "id": key.id, "scope": key.scope, "name": key.name, "state": key.state(now),
                "created_ms": key.created_ms, "expires_ms": key.expires_ms, "revoked_ms": key.revoked_ms,
            });
            println!("{line}");
        } else {
            let expires = key.expires_ms.map_or("never".to_owned(), format_rfc3339);
            println!(
                "{}  {:<8} {:<24} created {}  expires {}  {}",
                key.id,
                key.state(now),
                key.scope,
                format_rfc3339(key.created_ms),
                expires,
                key.name
            );
        }
    }
    if keys.is_empty() && !json {
        eprintln!("no keys yet in {}: tally keys add --operator, or --advertiser ADV", store.place());
    }
}
