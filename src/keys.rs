//! API keys of the query API: who may read which numbers.
//!
//! A key reads `tally_<id>_<secret>`: the `id` (8 hex digits) names it in
//! `tally keys list` and `tally keys revoke`; the secret is 32 bytes from
//! the OS's randomness (64 hex digits). The whole key is shown once, when
//! it is created. The data directory keeps, in `DATA/keys.json` (mode
//! 0600), only each key's id, name, [`Scope`], times and the SHA-256 of its
//! secret: a plain hash is enough because the secret is 256 random bits,
//! which leaves no dictionary to try, so no slow hash is needed.
//!
//! Checking a key ([`KeyRing::check`]) hashes the presented secret and
//! compares the digests in constant time; a key whose id is unknown is
//! hashed and compared too, against a fixed digest, so the answer's time
//! does not tell whether an id exists, and its reason is the same as for a
//! wrong secret. Only the holder of the right secret learns that the key
//! was revoked or has expired.
//!
//! A running `tally up` looks at the file at most every [`RELOAD_MS`] and
//! re-reads it when it changed, so a revocation takes effect within that
//! time. A file that cannot be read refuses every key until it can: a
//! revocation is never missed by answering from an older copy. Keys in
//! Cassandra are read again every [`RELOAD_MS`] by a thread of their own
//! ([`KeyRing::following`]); a read that fails, or no read for
//! [`STALE_MS`], refuses every key until the next one succeeds.
//!
//! Ingest does not take these keys: clients that send clicks sign them
//! with their own secrets (`[[auth.clients]]` of the ingest config), so a
//! read key never writes and a signing secret never reads.

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::catalog::UNKNOWN;
use crate::event::validate::check_key;
use crate::hex;

/// The key file in a data directory.
pub const KEYS_FILE: &str = "keys.json";

/// Held while a command changes the key file, so two changes never lose one.
const KEYS_LOCK_FILE: &str = "keys.lock";

/// Longest time a running query API answers from a key file that changed,
/// and how often keys kept elsewhere are read again.
pub const RELOAD_MS: u64 = 1_000;

/// Keys kept elsewhere that were last read longer ago than this refuse
/// every key: a revocation is never missed for longer.
pub const STALE_MS: u64 = 3 * RELOAD_MS;

/// What every key starts with, so a key found in a file or a paste is
/// recognisable (and can be searched for by secret scanners).
pub const KEY_PREFIX: &str = "tally_";

const ID_BYTES: usize = 4;
const SECRET_BYTES: usize = 32;

/// Longest key name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// What a key may read.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Everything: every advertiser's numbers, `/v1/stats`, the whole
    /// late ledger.
    Operator,
    /// One advertiser's ads, campaigns and totals, attributed by the
    /// catalog as it stands for each window.
    Advertiser(String),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Operator => f.write_str("operator"),
            Scope::Advertiser(id) => write!(f, "advertiser:{id}"),
        }
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Scope, String> {
        if text == "operator" {
            return Ok(Scope::Operator);
        }
        let Some(id) = text.strip_prefix("advertiser:") else {
            return Err(format!("{text:?} is not a scope: expected operator or advertiser:ID"));
        };
        Scope::advertiser(id)
    }
}

impl Scope {
    /// The scope of advertiser `id`, a valid key that is not the
    /// catalog's `unknown` (which no advertiser owns).
    pub fn advertiser(id: &str) -> Result<Scope, String> {
        check_key(id).map_err(|e| format!("advertiser {id:?}: {e}"))?;
        if id == UNKNOWN {
            return Err(format!(
                "advertiser {UNKNOWN:?} is where clicks of ads missing from the catalog count; it belongs to no advertiser"
            ));
        }
        Ok(Scope::Advertiser(id.to_owned()))
    }
}

/// One key as the file keeps it: never the secret, only its digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    /// [`Scope`] as text.
    pub scope: String,
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
    pub revoked_ms: Option<u64>,
    /// SHA-256 of the secret, 64 hex digits.
    pub secret_sha256: String,
}

impl KeyRecord {
    /// `active`, `revoked` or `expired` at `now_ms`.
    pub fn state(&self, now_ms: u64) -> &'static str {
        match (self.revoked_ms, self.expires_ms) {
            (Some(_), _) => "revoked",
            (None, Some(expires)) if expires <= now_ms => "expired",
            _ => "active",
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Document {
    keys: Vec<KeyRecord>,
}

/// Why a key command failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: not a key file: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("no key with id {0:?} (tally keys list shows them)")]
    NoSuchKey(String),
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The store the keys live in failed (Cassandra); `code` is its exit
    /// status.
    #[error("{message}")]
    Store { message: String, code: i32 },
}

impl KeyError {
    pub fn exit_code(&self) -> i32 {
        match self {
            KeyError::Io { .. } => crate::exit::FAILED,
            KeyError::Corrupt { .. } | KeyError::NoSuchKey(_) | KeyError::Invalid { .. } => crate::exit::USAGE,
            KeyError::Store { code, .. } => *code,
        }
    }
}

/// Where keys are kept: the data directory's [`KeyFile`], or a job's
/// keyspace in Cassandra.
pub trait KeyStore {
    /// Every key, in creation order.
    fn list(&self) -> Result<Vec<KeyRecord>, KeyError>;
    /// Keeps `record` unless a key with its id exists; whether it did.
    fn insert(&self, record: &KeyRecord) -> Result<bool, KeyError>;
    /// Revokes key `id` at `now_ms`; revoking it again changes nothing.
    fn revoke(&self, id: &str, now_ms: u64) -> Result<KeyRecord, KeyError>;
    /// Where the keys are, as messages name it.
    fn place(&self) -> String;
}

/// Creates a key of `scope` in `store` and returns its record and the key
/// itself, which is nowhere else: the caller shows it once.
pub fn add_key(
    store: &dyn KeyStore,
    scope: &Scope,
    name: &str,
    expires_ms: Option<u64>,
    now_ms: u64,
) -> Result<(KeyRecord, String), KeyError> {
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        let reason = format!("at most {MAX_NAME_CHARS} characters, no control characters");
        return Err(KeyError::Invalid { field: "--name", reason });
    }
    if let Some(expires) = expires_ms.filter(|&t| t <= now_ms) {
        let reason = format!("{} is not in the future", crate::time::format_rfc3339(expires));
        return Err(KeyError::Invalid { field: "--expires", reason });
    }
    let random = |e: std::io::Error| KeyError::Store { message: format!("/dev/urandom: {e}"), code: crate::exit::FAILED };
    let secret = hex::encode(&random_bytes::<SECRET_BYTES>().map_err(random)?);
    loop {
        let record = KeyRecord {
            id: hex::encode(&random_bytes::<ID_BYTES>().map_err(random)?),
            name: name.to_owned(),
            scope: scope.to_string(),
            created_ms: now_ms,
            expires_ms,
            revoked_ms: None,
            secret_sha256: hex::encode(&Sha256::digest(secret.as_bytes())),
        };
        // Another key has this id (one in four billion): draw another.
        if store.insert(&record)? {
            let key = format!("{KEY_PREFIX}{}_{secret}", record.id);
            return Ok((record, key));
        }
    }
}

/// The key file of a data directory.
#[derive(Clone, Debug)]
pub struct KeyFile {
    dir: PathBuf,
}

impl KeyFile {
    /// The key file in data directory `dir`.
    pub fn in_dir(dir: &Path) -> KeyFile {
        KeyFile { dir: dir.to_owned() }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(KEYS_FILE)
    }

    fn io_error(&self, source: std::io::Error) -> KeyError {
        KeyError::Io { path: self.path(), source }
    }

    fn read(&self) -> Result<Document, KeyError> {
        let path = self.path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Document::default()),
            Err(source) => return Err(KeyError::Io { path, source }),
        };
        let doc: Document = serde_json::from_str(&text).map_err(|e| KeyError::Corrupt { path: path.clone(), reason: e.to_string() })?;
        for key in &doc.keys {
            key.scope
                .parse::<Scope>()
                .map_err(|reason| KeyError::Corrupt { path: path.clone(), reason: format!("key {}: {reason}", key.id) })?;
        }
        Ok(doc)
    }

    /// Reads, changes and durably replaces the file, holding its lock.
    fn change<T>(&self, edit: impl FnOnce(&mut Document) -> Result<T, KeyError>) -> Result<T, KeyError> {
        create_private_dir(&self.dir).map_err(|e| self.io_error(e))?;
        let lock_path = self.dir.join(KEYS_LOCK_FILE);
        let lock = OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(&lock_path);
        let lock = lock.map_err(|source| KeyError::Io { path: lock_path.clone(), source })?;
        lock.lock().map_err(|source| KeyError::Io { path: lock_path, source })?;
        let mut doc = self.read()?;
        let out = edit(&mut doc)?;
        let mut text = serde_json::to_string_pretty(&doc).map_err(|e| self.io_error(std::io::Error::other(e)))?;
        text.push('\n');
        write_private(&self.path(), text.as_bytes()).map_err(|e| self.io_error(e))?;
        Ok(out)
    }
}

impl KeyStore for KeyFile {
    /// None when there is no file yet.
    fn list(&self) -> Result<Vec<KeyRecord>, KeyError> {
        Ok(self.read()?.keys)
    }

    fn insert(&self, record: &KeyRecord) -> Result<bool, KeyError> {
        self.change(|doc| {
            let free = !doc.keys.iter().any(|k| k.id == record.id);
            if free {
                doc.keys.push(record.clone());
            }
            Ok(free)
        })
    }

    fn revoke(&self, id: &str, now_ms: u64) -> Result<KeyRecord, KeyError> {
        self.change(|doc| {
            let record = doc.keys.iter_mut().find(|k| k.id == id).ok_or_else(|| KeyError::NoSuchKey(id.to_owned()))?;
            record.revoked_ms.get_or_insert(now_ms);
            Ok(record.clone())
        })
    }

    fn place(&self) -> String {
        self.path().display().to_string()
    }
}

/// Creates `dir` (and its parents) readable by its owner alone when it is
/// new; an existing directory is left as it is.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Replaces `path` by `bytes` atomically and durably, mode 0600.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temp = path.with_extension("json.tmp");
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// Why a presented key reads nothing. The reason never says whether an id
/// exists: only the holder of the right secret learns more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No key, or not one that verifies.
    Invalid(&'static str),
    Revoked,
    Expired(u64),
    /// The key file cannot be read: every key is refused meanwhile.
    Unavailable(String),
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denied::Invalid(reason) => f.write_str(reason),
            Denied::Revoked => f.write_str("this key was revoked"),
            Denied::Expired(at) => write!(f, "this key expired at {}", crate::time::format_rfc3339(*at)),
            Denied::Unavailable(reason) => write!(f, "keys cannot be checked now: {reason}"),
        }
    }
}

/// The reason for a key that does not verify, whatever the cause.
pub const NOT_A_VALID_KEY: &str = "not a valid key";

/// The keys of a [`KeyStore`] as a running process checks them, following
/// its changes (see the module docs).
pub struct KeyRing {
    /// The key file, looked at by the requests themselves; `None`: keys
    /// read by a thread of their own ([`KeyRing::following`]).
    file: Option<KeyFile>,
    loaded: Arc<Mutex<Loaded>>,
}

#[derive(Debug)]
struct Loaded {
    keys: Result<HashMap<String, KeyRecord>, String>,
    /// Modification time and length of the file read; `None`: no file.
    stamp: Option<(SystemTime, u64)>,
    /// When the keys were last looked at (a file) or read (elsewhere).
    checked: Option<Instant>,
}

impl KeyRing {
    /// The keys of a key file, re-read when it changes.
    pub fn new(file: KeyFile) -> KeyRing {
        KeyRing { file: Some(file), loaded: Arc::new(Mutex::new(Loaded { keys: Ok(HashMap::new()), stamp: None, checked: None })) }
    }

    /// The keys `read` returns, called every [`RELOAD_MS`] on a thread of
    /// its own until the ring is dropped. Until its first success, and
    /// whenever the last read failed or is [`STALE_MS`] old, every key is
    /// refused.
    pub fn following<F>(mut read: F) -> KeyRing
    where
        F: FnMut() -> Result<Vec<KeyRecord>, String> + Send + 'static,
    {
        let loaded = Arc::new(Mutex::new(Loaded { keys: Err("not read yet".to_owned()), stamp: None, checked: None }));
        let follow = Arc::downgrade(&loaded);
        let mut warned: Option<String> = None;
        let spawned = std::thread::Builder::new().name("keys".to_owned()).spawn(move || loop {
            let keys = read().map(|keys| keys.into_iter().map(|k| (k.id.clone(), k)).collect());
            let Some(loaded) = follow.upgrade() else { return };
            let mut loaded = loaded.lock().unwrap_or_else(|e| e.into_inner());
            // Each failure is said once, and so is the recovery from it.
            match (&keys, &warned) {
                (Err(reason), _) if warned.as_ref() != Some(reason) => {
                    tracing::warn!("keys cannot be read, every key is refused until they can: {reason}");
                    warned = Some(reason.clone());
                }
                (Ok(_), Some(_)) => {
                    tracing::info!("keys read again");
                    warned = None;
                }
                _ => {}
            }
            loaded.checked = keys.is_ok().then(Instant::now).or(loaded.checked);
            loaded.keys = keys;
            drop(loaded);
            std::thread::sleep(Duration::from_millis(RELOAD_MS));
        });
        if let Err(e) = spawned {
            loaded.lock().unwrap_or_else(|e| e.into_inner()).keys = Err(format!("the thread reading keys: {e}"));
        }
        KeyRing { file: None, loaded }
    }

    /// The scope of `presented` (a whole key) at `now_ms`.
    pub fn check(&self, presented: &str, now_ms: u64) -> Result<Scope, Denied> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        match &self.file {
            Some(file) => refresh(file, &mut loaded),
            None => {
                let age = loaded.checked.map(|at| at.elapsed());
                if age.is_some_and(|age| age > Duration::from_millis(STALE_MS)) && loaded.keys.is_ok() {
                    let seconds = age.map_or(0, |age| age.as_secs());
                    loaded.keys = Err(format!("the keys were last read {seconds} s ago"));
                }
            }
        }
        let keys = loaded.keys.as_ref().map_err(|reason| Denied::Unavailable(reason.clone()))?;
        let (id, secret) = split_key(presented).unwrap_or(("", presented));
        let digest = Sha256::digest(secret.as_bytes());
        let record = keys.get(id);
        // An unknown id is compared against a digest no secret has, so it
        // costs what a wrong secret does.
        let stored = record.and_then(|r| hex::decode_32(r.secret_sha256.as_bytes())).unwrap_or([0xff; 32]);
        let matches: bool = digest.as_slice().ct_eq(&stored).into();
        let record = match record {
            Some(record) if matches => record,
            _ => return Err(Denied::Invalid(NOT_A_VALID_KEY)),
        };
        if record.revoked_ms.is_some() {
            return Err(Denied::Revoked);
        }
        if let Some(expires) = record.expires_ms.filter(|&t| t <= now_ms) {
            return Err(Denied::Expired(expires));
        }
        record.scope.parse().map_err(|_| Denied::Invalid(NOT_A_VALID_KEY))
    }
}

/// Re-reads `file` if it changed, looking at most every [`RELOAD_MS`].
fn refresh(file: &KeyFile, loaded: &mut Loaded) {
    if loaded.checked.is_some_and(|at| at.elapsed().as_millis() < u128::from(RELOAD_MS)) {
        return;
    }
    loaded.checked = Some(Instant::now());
    let stamp = match std::fs::metadata(file.path()) {
        Ok(meta) => meta.modified().ok().map(|at| (at, meta.len())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            loaded.keys = Err(e.to_string());
            return;
        }
    };
    if stamp == loaded.stamp && loaded.keys.is_ok() && stamp.is_some() {
        return;
    }
    loaded.stamp = stamp;
    loaded.keys = file.list().map(|keys| keys.into_iter().map(|k| (k.id.clone(), k)).collect()).map_err(|e| e.to_string());
}

/// How many of `keys` are active at `now_ms`.
pub fn active(keys: &[KeyRecord], now_ms: u64) -> usize {
    keys.iter().filter(|k| k.state(now_ms) == "active").count()
}

/// `(id, secret)` of `tally_<id>_<secret>`.
fn split_key(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix(KEY_PREFIX)?.split_once('_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn a_key_reads_in_its_scope_until_revoked_or_expired() {
        let dir = tempfile::tempdir().unwrap();
        let file = KeyFile::in_dir(dir.path());
        let (adv, adv_key) = add_key(&file, &Scope::advertiser("adv-1").unwrap(), "acme", None, NOW).unwrap();
        let (_, op_key) = add_key(&file, &Scope::Operator, "ops", Some(NOW + 1_000), NOW).unwrap();
        let ring = KeyRing::new(file.clone());
        assert_eq!(ring.check(&adv_key, NOW), Ok(Scope::Advertiser("adv-1".into())));
        assert_eq!(ring.check(&op_key, NOW + 999), Ok(Scope::Operator));
        assert_eq!(ring.check(&op_key, NOW + 1_000), Err(Denied::Expired(NOW + 1_000)));

        // A wrong secret and an unknown id read alike.
        let mut wrong_secret = adv_key.clone();
        let last = wrong_secret.pop().unwrap();
        wrong_secret.push(if last == '0' { '1' } else { '0' });
        for bad in [wrong_secret.as_str(), "tally_00000000_00", "", "Bearer x", &adv_key[..20]] {
            assert_eq!(ring.check(bad, NOW), Err(Denied::Invalid(NOT_A_VALID_KEY)), "{bad:?}");
        }

        file.revoke(&adv.id, NOW).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(RELOAD_MS + 50));
        assert_eq!(ring.check(&adv_key, NOW), Err(Denied::Revoked));
        assert!(matches!(file.revoke("nope", NOW), Err(KeyError::NoSuchKey(_))));
    }

    #[test]
    fn the_file_keeps_no_secret_and_only_its_owner_reads_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = KeyFile::in_dir(&dir.path().join("data"));
        let (record, key) = add_key(&file, &Scope::Operator, "ops", None, NOW).unwrap();
        let text = std::fs::read_to_string(file.path()).unwrap();
        let secret = key.rsplit('_').next().unwrap();
        assert!(!text.contains(secret) && text.contains(&record.secret_sha256));
        // The digest is SHA-256 of the secret (an independent check: sha256sum).
        let out = std::process::Command::new("sh").arg("-c").arg(format!("printf %s {secret} | sha256sum")).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).split_whitespace().next(), Some(record.secret_sha256.as_str()));
        assert_eq!(std::fs::metadata(file.path()).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(dir.path().join("data")).unwrap().permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn scopes_and_names_are_checked() {
        assert_eq!("operator".parse::<Scope>(), Ok(Scope::Operator));
        assert_eq!("advertiser:a-1".parse::<Scope>(), Ok(Scope::Advertiser("a-1".into())));
        assert!("advertiser:unknown".parse::<Scope>().unwrap_err().contains("belongs to no advertiser"));
        assert!("admin".parse::<Scope>().is_err());
        assert!("advertiser:".parse::<Scope>().is_err());
        let dir = tempfile::tempdir().unwrap();
        let file = KeyFile::in_dir(dir.path());
        assert!(matches!(add_key(&file, &Scope::Operator, "a\nb", None, NOW), Err(KeyError::Invalid { field: "--name", .. })));
        assert!(matches!(add_key(&file, &Scope::Operator, "x", Some(NOW), NOW), Err(KeyError::Invalid { field: "--expires", .. })));
        assert!(file.list().unwrap().is_empty(), "a refused key leaves nothing");
    }

    #[test]
    fn an_unreadable_key_file_refuses_every_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = KeyFile::in_dir(dir.path());
        let (_, key) = add_key(&file, &Scope::Operator, "ops", None, NOW).unwrap();
        std::fs::write(file.path(), "not json").unwrap();
        let ring = KeyRing::new(file);
        assert!(matches!(ring.check(&key, NOW), Err(Denied::Unavailable(_))));
    }

    /// The answer `ring` gives `key` once it is `expected`, or the last one
    /// after `within`.
    fn eventually(ring: &KeyRing, key: &str, expected: &Result<Scope, Denied>, within: Duration) -> Result<Scope, Denied> {
        let started = Instant::now();
        loop {
            let answer = ring.check(key, NOW);
            let same = match (&answer, expected) {
                (Err(Denied::Unavailable(_)), Err(Denied::Unavailable(_))) => true,
                (a, b) => a == b,
            };
            if same || started.elapsed() > within {
                return answer;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_followed_ring_refuses_every_key_until_read_and_while_reads_fail() {
        let dir = tempfile::tempdir().unwrap();
        let file = KeyFile::in_dir(dir.path());
        let (record, key) = add_key(&file, &Scope::Operator, "ops", None, NOW).unwrap();
        let source: Arc<Mutex<Result<Vec<KeyRecord>, String>>> = Arc::new(Mutex::new(Err("cluster down".into())));
        let read = Arc::clone(&source);
        let ring = KeyRing::following(move || read.lock().unwrap().clone());
        let within = Duration::from_millis(2 * RELOAD_MS + 500);
        let unavailable = Err(Denied::Unavailable(String::new()));
        assert!(matches!(ring.check(&key, NOW), Err(Denied::Unavailable(_))), "nothing read yet");

        *source.lock().unwrap() = Ok(file.list().unwrap());
        assert_eq!(eventually(&ring, &key, &Ok(Scope::Operator), within), Ok(Scope::Operator));
        file.revoke(&record.id, NOW).unwrap();
        *source.lock().unwrap() = Ok(file.list().unwrap());
        assert_eq!(eventually(&ring, &key, &Err(Denied::Revoked), within), Err(Denied::Revoked), "a revoke is followed");

        *source.lock().unwrap() = Err("cluster down".into());
        assert!(matches!(eventually(&ring, &key, &unavailable, within), Err(Denied::Unavailable(_))), "a failed read refuses");
    }

    #[test]
    fn a_followed_ring_that_reads_nothing_new_for_too_long_refuses_every_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = KeyFile::in_dir(dir.path());
        let (_, key) = add_key(&file, &Scope::Operator, "ops", None, NOW).unwrap();
        let keys = file.list().unwrap();
        // The first read answers; the next one hangs (a node that stopped
        // answering), so the keys read grow stale.
        let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&reads);
        let ring = KeyRing::following(move || {
            if counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
                std::thread::sleep(Duration::from_secs(3600));
            }
            Ok(keys.clone())
        });
        let within = Duration::from_millis(RELOAD_MS);
        assert_eq!(eventually(&ring, &key, &Ok(Scope::Operator), within), Ok(Scope::Operator));
        let stale = eventually(&ring, &key, &Err(Denied::Unavailable(String::new())), Duration::from_millis(STALE_MS + RELOAD_MS));
        assert!(matches!(&stale, Err(Denied::Unavailable(reason)) if reason.contains("last read")), "{stale:?}");
    }
}
