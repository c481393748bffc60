//! The data directory: where a single-machine tally keeps its log, its store
//! and its secret user-hash salt.
//!
//! ```text
//! DIR/salt     16 random bytes, the key of the user-id hash (created once)
//! DIR/log/     the embedded log (src/log)
//! DIR/store/   the embedded store (src/store), locked by a running job
//! ```

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::sources::file::UserSalt;

/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "tally-data";

/// Paths inside a data directory.
#[derive(Clone, Debug)]
pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    pub fn log(&self) -> PathBuf {
        self.root.join("log")
    }

    pub fn store(&self) -> PathBuf {
        self.root.join("store")
    }

    /// The salt of the user-id hash, created from the OS's randomness the
    /// first time. Raw user ids never reach the log; without the salt, their
    /// hashes cannot be reversed by trying likely ids.
    pub fn salt(&self) -> std::io::Result<UserSalt> {
        std::fs::create_dir_all(&self.root)?;
        let path = self.root.join("salt");
        let mut bytes = [0u8; 16];
        match std::fs::File::open(&path) {
            Ok(mut file) => file.read_exact(&mut bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
                write_new(&path, &bytes)?;
            }
            Err(e) => return Err(e),
        }
        Ok(UserSalt::from_bytes(bytes))
    }
}

/// Writes a file that must not exist yet, durably.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
