//! `-` names standard input or output wherever a command takes a file
//! (`--input`, `--output`, `--late`, `log import FILE`), as in most Unix
//! tools. One place decides it, so every command agrees.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;

/// Read buffer for files, in bytes.
const READ_BUFFER_BYTES: usize = 1 << 20;

/// Whether `path` is `-`: standard input or output.
pub fn is_std(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Opens `path` for reading, standard input for `-`.
pub fn reader(path: &Path) -> io::Result<Box<dyn BufRead + Send>> {
    if is_std(path) {
        return Ok(Box::new(BufReader::with_capacity(READ_BUFFER_BYTES, io::stdin())));
    }
    Ok(Box::new(BufReader::with_capacity(READ_BUFFER_BYTES, File::open(path)?)))
}

/// Creates (truncates) `path` for writing, standard output for `-`.
pub fn writer(path: &Path) -> io::Result<Box<dyn Write + Send>> {
    if is_std(path) {
        return Ok(Box::new(io::stdout()));
    }
    Ok(Box::new(File::create(path)?))
}

/// Writes `bytes` to `path` (standard output for `-`) and makes them
/// durable: a file is synced, standard output flushed.
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if is_std(path) {
        let mut out = io::stdout().lock();
        out.write_all(bytes)?;
        return out.flush();
    }
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    // A device or a pipe (`/dev/null`, `/dev/stdout`) cannot be synced.
    if file.metadata()?.is_file() {
        file.sync_all()?;
    }
    Ok(())
}

/// How `path` reads in a message: `standard output` / `standard input`
/// for `-` (`what` says which), else the path.
pub fn describe(path: &Path, what: &str) -> String {
    if is_std(path) {
        what.to_owned()
    } else {
        path.display().to_string()
    }
}
