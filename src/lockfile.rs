//! Exclusive directory locks: one process at a time owns a log or a store.
//!
//! The lock is an advisory `flock` on `dir/LOCK`, held for as long as the
//! returned file is open and released by the kernel when the process dies
//! (so a crash never leaves a stale lock). The holder writes its pid into
//! the file so that the refusal can say who holds it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::Path;

/// Name of the lock file inside a locked directory.
pub const LOCK_FILE: &str = "LOCK";

/// Why a lock was not taken.
#[derive(Debug)]
pub enum LockError {
    /// Another open holds it; `pid` as the holder recorded it.
    Held {
        pid: Option<u32>,
    },
    Io(io::Error),
}

/// Takes the exclusive lock on `dir/LOCK` and records this process in it.
pub fn lock_dir(dir: &Path) -> Result<File, LockError> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(LockError::Io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let pid = file.read_to_string(&mut holder).ok().and_then(|_| holder.trim().parse().ok());
            return Err(LockError::Held { pid });
        }
        Err(TryLockError::Error(source)) => return Err(LockError::Io(source)),
    }
    file.set_len(0).map_err(LockError::Io)?;
    writeln!(file, "{}", std::process::id()).map_err(LockError::Io)?;
    Ok(file)
}
