//! `-` names standard input or output wherever a command takes a file
//! (`--input`, `--output`, `--late`, `log import FILE`), as in most Unix
//! tools. One place decides it, so every command agrees.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

/// Read buffer for files, in bytes.
const READ_BUFFER_BYTES: usize = 1 << 20;

/// Whether `path` is `-`: standard input or output.
pub fn is_std(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Opens `path` for reading, standard input for `-`.
pub fn reader(path: &Path) -> io::Result<Box<dyn BufRead + Send>> {
    let (input, _) = input(path)?;
    Ok(Box::new(BufReader::with_capacity(READ_BUFFER_BYTES, input)))
}

/// Opens `path` for reading, unbuffered, with its size in bytes when it is
/// a file (`None` for standard input, `-`), for progress by bytes read.
pub fn input(path: &Path) -> io::Result<(Box<dyn Read + Send>, Option<u64>)> {
    if is_std(path) {
        return Ok((Box::new(io::stdin()), None));
    }
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    Ok((Box::new(file), Some(size)))
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
    let mut out = DurableOutput::create(path)?;
    out.write_all(bytes)?;
    out.finish()
}

/// A new file, or standard output for `-`, that [`DurableOutput::finish`]
/// makes durable.
pub enum DurableOutput {
    Stdout(io::Stdout),
    File(File),
}

impl DurableOutput {
    /// Creates (truncates) `path`, or takes standard output for `-`.
    pub fn create(path: &Path) -> io::Result<DurableOutput> {
        if is_std(path) {
            return Ok(DurableOutput::Stdout(io::stdout()));
        }
        File::create(path).map(DurableOutput::File)
    }

    /// Flushes standard output, or syncs a regular file (a device or a
    /// pipe, such as `/dev/null`, cannot be synced).
    pub fn finish(mut self) -> io::Result<()> {
        self.flush()?;
        match self {
            DurableOutput::File(file) if file.metadata()?.is_file() => file.sync_all(),
            _ => Ok(()),
        }
    }
}

impl Write for DurableOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            DurableOutput::Stdout(out) => out.write(buf),
            DurableOutput::File(file) => file.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            DurableOutput::Stdout(out) => out.flush(),
            DurableOutput::File(file) => file.flush(),
        }
    }
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
