//! Versions of the output: the live store and shadow stores made by
//! `tally backfill`, and which one the query API and `tally export` serve.
//!
//! ```text
//! DATA/store/                     version `live`: the job's store
//! DATA/versions/NAME/store/       version NAME: a bounded run over a range of the log
//! DATA/versions/NAME/version.json what range it counts (Manifest)
//! DATA/versions/LOCK              held while versions are created, switched or deleted
//! DATA/serving                    the name of the version served (absent: live)
//! ```
//!
//! A version appears whole or not at all: a backfill builds it in a hidden
//! directory (`DATA/versions/.building-NAME-PID`) and renames it into place
//! once its bounded run has committed everything. A switch replaces
//! `DATA/serving` by rename (the new name written to a temporary file,
//! fsynced, renamed, the directory fsynced), so a reader sees the old name
//! or the new one, never a torn file. The serving version cannot be
//! deleted or replaced; `live` is never deleted.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::datadir::DataDir;

use super::settings::{Origin, ORIGIN_KEY};
use super::{EmbeddedReader, EmbeddedStore, StoreError};

/// The version the job writes: `DATA/store`.
pub const LIVE: &str = "live";
/// Longest version name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// The manifest file of a version.
pub const MANIFEST_FILE: &str = "version.json";
/// Longest serving file read, in bytes (it holds one name).
const MAX_SERVING_BYTES: u64 = 256;

/// Why a version operation failed; `is_usage` tells bad input from I/O.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// A name that is not a valid version name.
    #[error("version name {name:?}: {reason}")]
    Name { name: String, reason: String },
    #[error("version {0:?} does not exist (`tally versions` lists them)")]
    Unknown(String),
    #[error("version {0:?} exists; pass --replace to build it again")]
    Exists(String),
    #[error("version {name:?} is serving; {action}")]
    Serving { name: String, action: &'static str },
    #[error("version {LIVE:?} is the job's own store: it is never deleted or replaced")]
    Live,
    /// A backfill whose claim on the name went to another backfill.
    #[error("version {0:?}: another backfill of this name took over, and this one's rows are deleted")]
    TakenOver(String),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl VersionError {
    /// The status of [`crate::exit`]: usage when the user asked for
    /// something that cannot be, the store's own otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            VersionError::Store(e) => e.exit_code(),
            _ if self.is_usage() => crate::exit::USAGE,
            _ => crate::exit::FAILED,
        }
    }

    /// Whether the user asked for something that cannot be, rather than the
    /// disk failing.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            VersionError::Name { .. }
                | VersionError::Unknown(_)
                | VersionError::Exists(_)
                | VersionError::Serving { .. }
                | VersionError::Live
        )
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VersionError + '_ {
    move |source| VersionError::Io { path: path.to_path_buf(), source }
}

/// Checks a version name: 1 to [`MAX_NAME_BYTES`] bytes of ASCII letters,
/// digits, `.`, `_` and `-`, starting with a letter or digit. `live` is
/// valid and names the job's store.
pub fn check_name(name: &str) -> Result<(), VersionError> {
    let reason = if name.is_empty() {
        "is empty".to_owned()
    } else if name.len() > MAX_NAME_BYTES {
        format!("is {} bytes, at most {MAX_NAME_BYTES}", name.len())
    } else if !name.as_bytes()[0].is_ascii_alphanumeric() {
        "must start with a letter or a digit".to_owned()
    } else if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        format!("{bad:?} is not allowed (letters, digits, '.', '_' and '-' only)")
    } else {
        return Ok(());
    };
    Err(VersionError::Name { name: name.to_owned(), reason })
}

/// A name for a new version: valid and not `live`.
pub fn check_new_name(name: &str) -> Result<(), VersionError> {
    check_name(name)?;
    if name == LIVE {
        return Err(VersionError::Name { name: name.to_owned(), reason: format!("{LIVE:?} is reserved for the job's own store") });
    }
    Ok(())
}

/// The directory of version `name`'s store.
pub fn store_dir(data_dir: &DataDir, name: &str) -> PathBuf {
    match name {
        LIVE => data_dir.store(),
        _ => data_dir.versions().join(name).join("store"),
    }
}

/// What range of the log a backfilled version counts, written when it is
/// built.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    /// The job file it ran.
    pub job: String,
    /// `--from` and `--to` as given.
    pub from: String,
    pub to: String,
    /// The resolved offsets, `[start[p], end[p])` per partition.
    pub start: Vec<u64>,
    pub end: Vec<u64>,
    /// Unix ms when the backfill started.
    pub created_ms: u64,
}

impl Manifest {
    /// Clicks in the range.
    pub fn clicks(&self) -> u64 {
        self.start.iter().zip(&self.end).map(|(s, e)| e.saturating_sub(*s)).sum()
    }

    /// Writes the manifest into `dir` durably.
    pub fn write(&self, dir: &Path) -> Result<(), VersionError> {
        let json = serde_json::to_vec_pretty(self).expect("manifest serializes");
        publish(dir, MANIFEST_FILE, &json)
    }

    /// The manifest of a version directory, if it has one.
    pub fn read(dir: &Path) -> Result<Option<Manifest>, VersionError> {
        let path = dir.join(MANIFEST_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| VersionError::Corrupt { path, reason: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }
}

/// The name of the version served now: the content of `DATA/serving`, or
/// `live` without one.
pub fn serving(data_dir: &DataDir) -> Result<String, VersionError> {
    let path = data_dir.serving_file();
    let text = match File::open(&path) {
        Ok(file) => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_SERVING_BYTES), &mut text).map_err(io(&path))?;
            text
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LIVE.to_owned()),
        Err(e) => return Err(io(&path)(e)),
    };
    let name = text.trim();
    check_name(name).map_err(|e| VersionError::Corrupt { path: path.clone(), reason: e.to_string() })?;
    Ok(name.to_owned())
}

/// The exclusive lock on `DATA/versions/LOCK`, held while a version is put
/// in place, switched to or deleted (it waits for another holder).
pub struct VersionsLock {
    _file: File,
}

/// Takes the versions lock, creating `DATA/versions` if needed.
pub fn lock(data_dir: &DataDir) -> Result<VersionsLock, VersionError> {
    let dir = data_dir.versions();
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    let path = dir.join(crate::lockfile::LOCK_FILE);
    let file = File::options().read(true).write(true).create(true).truncate(false).open(&path).map_err(io(&path))?;
    file.lock().map_err(io(&path))?;
    Ok(VersionsLock { _file: file })
}

/// Makes `name` the version served, atomically and durably. It must exist
/// and have a committed epoch (`live` always may be served).
pub fn switch(data_dir: &DataDir, name: &str) -> Result<String, VersionError> {
    check_name(name)?;
    let servable = || -> Result<(), VersionError> {
        if name != LIVE && open(data_dir, name)?.last_committed()?.is_none() {
            return Err(VersionError::Unknown(name.to_owned()));
        }
        Ok(())
    };
    // Checked before the lock (a refusal writes nothing) and again under it.
    servable()?;
    let _lock = lock(data_dir)?;
    servable()?;
    let previous = serving(data_dir)?;
    publish(&data_dir.root, "serving", format!("{name}\n").as_bytes())?;
    Ok(previous)
}

/// Deletes version `name` (never `live`, never the serving one).
pub fn delete(data_dir: &DataDir, name: &str) -> Result<(), VersionError> {
    check_name(name)?;
    if name == LIVE {
        return Err(VersionError::Live);
    }
    let dir = data_dir.versions().join(name);
    if !dir.is_dir() {
        return Err(VersionError::Unknown(name.to_owned()));
    }
    let _lock = lock(data_dir)?;
    if !dir.is_dir() {
        return Err(VersionError::Unknown(name.to_owned()));
    }
    if serving(data_dir)? == name {
        return Err(VersionError::Serving { name: name.to_owned(), action: "switch to another version first" });
    }
    remove_version_dir(data_dir, &dir, name)
}

/// Puts a version built in `building` in place as `name`, replacing an
/// existing one only with `replace` (and never the serving one).
pub fn install(data_dir: &DataDir, building: &Path, name: &str, replace: bool) -> Result<(), VersionError> {
    let _lock = lock(data_dir)?;
    let dir = data_dir.versions().join(name);
    let versions = data_dir.versions();
    if dir.exists() {
        check_replaceable(data_dir, name, replace)?;
        let old = versions.join(format!(".deleting-{name}-{}", std::process::id()));
        fs::rename(&dir, &old).map_err(io(&dir))?;
        fs::rename(building, &dir).map_err(io(&dir))?;
        sync_dir(&versions)?;
        return fs::remove_dir_all(&old).map_err(io(&old));
    }
    fs::rename(building, &dir).map_err(io(&dir))?;
    sync_dir(&versions)
}

/// Refuses to build `name` again unless `replace`, and never the serving
/// version.
pub fn check_replaceable(data_dir: &DataDir, name: &str, replace: bool) -> Result<(), VersionError> {
    if !data_dir.versions().join(name).exists() {
        return Ok(());
    }
    if !replace {
        return Err(VersionError::Exists(name.to_owned()));
    }
    if serving(data_dir)? == name {
        return Err(VersionError::Serving { name: name.to_owned(), action: "switch to another version before replacing it" });
    }
    Ok(())
}

fn remove_version_dir(data_dir: &DataDir, dir: &Path, name: &str) -> Result<(), VersionError> {
    let versions = data_dir.versions();
    let gone = versions.join(format!(".deleting-{name}-{}", std::process::id()));
    fs::rename(dir, &gone).map_err(io(dir))?;
    sync_dir(&versions)?;
    fs::remove_dir_all(&gone).map_err(io(&gone))
}

/// Opens version `name`'s store for reading.
pub fn open(data_dir: &DataDir, name: &str) -> Result<EmbeddedReader, VersionError> {
    check_name(name)?;
    let dir = store_dir(data_dir, name);
    if name != LIVE && !data_dir.versions().join(name).is_dir() {
        return Err(VersionError::Unknown(name.to_owned()));
    }
    Ok(EmbeddedStore::open_read_only(&dir)?)
}

/// The origin of a store's count: its recorded [`Origin`], or offset 0
/// everywhere for a store that records none.
pub fn origin(snapshot: &dyn super::StoreSnapshot, partitions: u32) -> Result<Origin, String> {
    match snapshot.state(ORIGIN_KEY).map_err(|e| e.to_string())? {
        Some(bytes) => Origin::from_json(&bytes),
        None => Ok(Origin::zero(partitions)),
    }
}

/// One line of `tally versions`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    pub name: String,
    pub serving: bool,
    /// The range as given to the backfill (`None` for live).
    pub manifest: Option<Manifest>,
    /// Origin and committed offsets, when the store has a commit.
    pub origin: Option<Vec<u64>>,
    pub committed_offsets: Option<Vec<u64>>,
    pub committed_epoch: Option<u64>,
    pub rows: u64,
    /// Why the store could not be read, if it could not.
    pub problem: Option<String>,
}

impl VersionInfo {
    /// Clicks between origin and committed offsets.
    pub fn clicks(&self) -> Option<u64> {
        let (origin, committed) = (self.origin.as_ref()?, self.committed_offsets.as_ref()?);
        Some(committed.iter().enumerate().map(|(p, c)| c.saturating_sub(origin.get(p).copied().unwrap_or(0))).sum())
    }
}

/// Every version: `live` first, then the others by name.
pub fn list(data_dir: &DataDir) -> Result<Vec<VersionInfo>, VersionError> {
    let serving = serving(data_dir)?;
    let mut names = vec![LIVE.to_owned()];
    let versions = data_dir.versions();
    if versions.is_dir() {
        let mut others: Vec<String> = Vec::new();
        for entry in fs::read_dir(&versions).map_err(io(&versions))? {
            let entry = entry.map_err(io(&versions))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() && check_new_name(&name).is_ok() {
                others.push(name);
            }
        }
        others.sort();
        names.extend(others);
    }
    names.into_iter().map(|name| info(data_dir, &name, name == serving)).collect()
}

fn info(data_dir: &DataDir, name: &str, serving: bool) -> Result<VersionInfo, VersionError> {
    let manifest = match name {
        LIVE => None,
        _ => Manifest::read(&data_dir.versions().join(name))?,
    };
    let mut info = VersionInfo {
        name: name.to_owned(),
        serving,
        manifest,
        origin: None,
        committed_offsets: None,
        committed_epoch: None,
        rows: 0,
        problem: None,
    };
    let mut read = || -> Result<(), String> {
        let reader = EmbeddedStore::open_read_only(&store_dir(data_dir, name)).map_err(|e| e.to_string())?;
        let snapshot = reader.snapshot().map_err(|e| e.to_string())?;
        info.rows = snapshot.row_count().map_err(|e| e.to_string())?;
        fill_committed(&snapshot, &mut info)
    };
    if let Err(problem) = read() {
        info.problem = Some(problem);
    }
    Ok(info)
}

/// Fills in `info`'s origin, committed offsets and committed epoch from
/// `snapshot`, if it has a commit (either store).
pub fn fill_committed(snapshot: &dyn super::StoreSnapshot, info: &mut VersionInfo) -> Result<(), String> {
    if let Some(last) = snapshot.last_committed().map_err(|e| e.to_string())? {
        let partitions = last.partitions.iter().map(|c| c.partition + 1).max().unwrap_or(0);
        let origin = origin(snapshot, partitions)?;
        let partitions = partitions.max(origin.offsets.len() as u32);
        let mut committed = origin.offsets.clone();
        committed.resize(partitions as usize, 0);
        for checkpoint in &last.partitions {
            committed[checkpoint.partition as usize] = checkpoint.offset;
        }
        info.origin = Some(origin.offsets);
        info.committed_offsets = Some(committed);
        info.committed_epoch = Some(last.epoch);
    }
    Ok(())
}

/// Writes `bytes` to `dir/name` by rename of a fsynced temporary file,
/// then fsyncs `dir`: readers see the old file or the new one, whole.
fn publish(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), VersionError> {
    let temporary = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let mut file = File::create(&temporary).map_err(io(&temporary))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io(&temporary))?;
    let path = dir.join(name);
    fs::rename(&temporary, &path).map_err(io(&path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), VersionError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Removes what interrupted backfills and deletions left: hidden
/// `.building-NAME-PID` and `.deleting-NAME-PID` directories whose process
/// is gone.
pub fn sweep_leftovers(data_dir: &DataDir) -> Result<usize, VersionError> {
    let versions = data_dir.versions();
    if !versions.is_dir() {
        return Ok(0);
    }
    let _lock = lock(data_dir)?;
    let mut removed = 0;
    for entry in fs::read_dir(&versions).map_err(io(&versions))? {
        let path = entry.map_err(io(&versions))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !(name.starts_with(".building-") || name.starts_with(".deleting-")) || !path.is_dir() {
            continue;
        }
        let pid = name.rsplit('-').next().and_then(|pid| pid.parse::<u32>().ok());
        let alive = pid.is_some_and(|pid| Path::new("/proc").join(pid.to_string()).exists());
        if !alive {
            fs::remove_dir_all(&path).map_err(io(&path))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// A new directory to build version `name` in.
pub fn building_dir(data_dir: &DataDir, name: &str) -> Result<PathBuf, VersionError> {
    let dir = data_dir.versions().join(format!(".building-{name}-{}", std::process::id()));
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_live_is_reserved_for_new_versions() {
        for good in ["v2", "2026-01-01.fix", "a_b", "x"] {
            assert!(check_new_name(good).is_ok(), "{good}");
        }
        let reason = |name: &str| match check_new_name(name) {
            Err(VersionError::Name { reason, .. }) => reason,
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(reason(""), "is empty");
        assert_eq!(reason(".hidden"), "must start with a letter or a digit");
        assert_eq!(reason("a/b"), "'/' is not allowed (letters, digits, '.', '_' and '-' only)");
        assert_eq!(reason(&"a".repeat(65)), "is 65 bytes, at most 64");
        assert_eq!(reason("live"), "\"live\" is reserved for the job's own store");
        assert!(check_name("live").is_ok());
    }

    #[test]
    fn the_serving_version_is_live_until_switched_and_cannot_be_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = DataDir::new(dir.path());
        assert_eq!(serving(&data_dir).unwrap(), LIVE);
        assert!(matches!(switch(&data_dir, "nope"), Err(VersionError::Unknown(_))));
        assert!(matches!(delete(&data_dir, LIVE), Err(VersionError::Live)));
        assert_eq!(switch(&data_dir, LIVE).unwrap(), LIVE);
        assert_eq!(fs::read_to_string(data_dir.serving_file()).unwrap(), "live\n");
        fs::write(data_dir.serving_file(), "../etc\n").unwrap();
        assert!(matches!(serving(&data_dir), Err(VersionError::Corrupt { .. })));
    }
}
