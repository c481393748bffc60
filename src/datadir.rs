//! The data directory: where a single-machine tally keeps its log, its store
//! and its secret user-hash salt.
//!
//! ```text
//! DIR/salt                      16 random bytes, the key of the user-id hash (created once)
//! DIR/log/                      the embedded log (src/log)
//! DIR/store/                    the embedded store (src/store), locked by a running job: version `live`
//! DIR/versions/NAME/store/      version NAME of the output, made by `tally backfill` (src/store/versions.rs)
//! DIR/versions/NAME/version.json  the range of the log it counts
//! DIR/versions/LOCK             held while a version is put in place, switched to or deleted
//! DIR/versions/.building-NAME-PID/  a backfill in progress (renamed to NAME when done)
//! DIR/serving                   the name of the version the query API and export serve (absent: live)
//! ```

use std::fs::{DirBuilder, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::event::salt::UserSalt;

/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "tally-data";

/// Mode of a data directory tally creates: it holds the salt and every
/// click, so only its owner may list or enter it.
pub const DATA_DIR_MODE: u32 = 0o700;

/// Mode of the salt file: whoever reads it can reverse user hashes by
/// trying likely ids.
pub const SALT_FILE_MODE: u32 = 0o600;

/// Paths inside a data directory.
#[derive(Clone, Debug)]
pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    /// Creates the directory with [`DATA_DIR_MODE`] (its parents as usual)
    /// unless it exists; an existing one is left as it is.
    pub fn create(&self) -> std::io::Result<()> {
        if let Some(parent) = self.root.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        match DirBuilder::new().mode(DATA_DIR_MODE).create(&self.root) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && self.root.is_dir() => Ok(()),
            created => created,
        }
    }

    pub fn log(&self) -> PathBuf {
        self.root.join("log")
    }

    pub fn store(&self) -> PathBuf {
        self.root.join("store")
    }

    /// Where backfilled versions of the output live (`store::versions`).
    pub fn versions(&self) -> PathBuf {
        self.root.join("versions")
    }

    /// The name of the version the query API and `tally export` serve.
    pub fn serving_file(&self) -> PathBuf {
        self.root.join("serving")
    }

    /// The salt of the user-id hash, created from the OS's randomness the
    /// first time. Raw user ids never reach the log; without the salt, their
    /// hashes cannot be reversed by trying likely ids.
    pub fn salt(&self) -> std::io::Result<UserSalt> {
        self.create()?;
        let path = self.root.join("salt");
        let mut bytes = [0u8; 16];
        match std::fs::File::open(&path) {
            Ok(mut file) => file.read_exact(&mut bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
                if !publish_new(&self.root, &path, &bytes)? {
                    // Another process created it first: use theirs.
                    std::fs::File::open(&path)?.read_exact(&mut bytes)?;
                }
            }
            Err(e) => return Err(e),
        }
        Ok(UserSalt::from_bytes(bytes))
    }
}

/// Makes `path` in `dir` a durable file holding `bytes`, unless it exists
/// already (then returns `false` and leaves it as it is). The bytes go to a
/// temporary file, fsynced, which is then linked to `path` and the
/// directory fsynced: `path` never exists incomplete, even after a crash,
/// and a hard link, unlike a rename, never replaces a salt another process
/// created meanwhile (every user hash depends on it).
fn publish_new(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    let temporary = dir.join(format!("salt.tmp.{}.{:?}", std::process::id(), std::thread::current().id()));
    let mut file = OpenOptions::new().write(true).create_new(true).mode(SALT_FILE_MODE).open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    let linked = match std::fs::hard_link(&temporary, path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => {
            let _ = std::fs::remove_file(&temporary);
            return Err(e);
        }
    };
    std::fs::remove_file(&temporary)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(linked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_salt_is_made_once_and_never_seen_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = DataDir::new(dir.path().join("data"));
        let salts: Vec<UserSalt> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..8).map(|_| scope.spawn(|| data_dir.salt().expect("salt"))).collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert!(salts.windows(2).all(|w| w[0] == w[1]), "every first use got the same salt");
        assert_eq!(data_dir.salt().unwrap(), salts[0]);
        let files: Vec<_> = std::fs::read_dir(&data_dir.root).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(files, ["salt"], "no temporary file is left");
        assert_eq!(std::fs::read(data_dir.root.join("salt")).unwrap().len(), 16);
        let mode = |path: &Path| std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions()) & 0o777;
        assert_eq!((mode(&data_dir.root), mode(&data_dir.root.join("salt"))), (DATA_DIR_MODE, SALT_FILE_MODE));
    }
}
