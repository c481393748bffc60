//! `dir/meta`: the format version and partition count of a log directory.
//!
//! ```text
//! tally-log
//! format 1
//! partitions 8
//! ```
//!
//! The file is written once, when the log is created, before any partition
//! directory: it goes to `meta.tmp`, is fsynced, renamed to `meta`, and the
//! log directory is fsynced, so after a crash `meta` is either absent (and
//! no partition exists yet) or complete. It is never rewritten: the
//! partition count of a log is fixed, because `partition_of` depends on it.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{sync_dir, LogError};

/// Name of the meta file in the log directory.
pub const META_FILE: &str = "meta";
/// First line of the meta file.
const MAGIC: &str = "tally-log";
/// The on-disk format this build reads and writes (record framing, layout).
pub const FORMAT_VERSION: u32 = 1;
/// Longest meta file read, in bytes: it is three short lines.
const MAX_META_BYTES: u64 = 4096;

/// Checks `dir/meta` against `partitions`, or creates it. Returns whether it
/// was created.
pub fn load_or_create(dir: &Path, partitions: u32) -> Result<bool, LogError> {
    let path = dir.join(META_FILE);
    match fs::metadata(&path) {
        Ok(_) => {
            let stored = load(&path)?;
            if stored != partitions {
                return Err(LogError::PartitionCount { dir: dir.to_owned(), stored, requested: partitions });
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create(dir, &path, partitions)?;
            Ok(true)
        }
        Err(e) => Err(LogError::io(&path, "stat")(e)),
    }
}

/// The partition count of an existing log in `dir`, without creating one.
pub fn read_existing(dir: &Path) -> Result<u32, LogError> {
    let path = dir.join(META_FILE);
    if !path.exists() {
        return Err(LogError::Missing { path: dir.to_path_buf() });
    }
    load(&path)
}

fn render(partitions: u32) -> String {
    format!("{MAGIC}\nformat {FORMAT_VERSION}\npartitions {partitions}\n")
}

fn create(dir: &Path, path: &Path, partitions: u32) -> Result<(), LogError> {
    let tmp: PathBuf = dir.join(format!("{META_FILE}.tmp"));
    let mut file = File::create(&tmp).map_err(LogError::io(&tmp, "create"))?;
    file.write_all(render(partitions).as_bytes()).map_err(LogError::io(&tmp, "write"))?;
    file.sync_all().map_err(LogError::io(&tmp, "fsync"))?;
    fs::rename(&tmp, path).map_err(LogError::io(path, "rename"))?;
    sync_dir(dir)
}

/// The partition count stored in a meta file.
fn load(path: &Path) -> Result<u32, LogError> {
    let len = fs::metadata(path).map_err(LogError::io(path, "stat"))?.len();
    let bad = |reason: String| LogError::Meta { path: path.to_owned(), reason };
    if len > MAX_META_BYTES {
        return Err(bad(format!("{len} bytes, not a meta file (max {MAX_META_BYTES})")));
    }
    let text = fs::read_to_string(path).map_err(LogError::io(path, "read"))?;
    let mut lines = text.lines();
    if lines.next() != Some(MAGIC) {
        return Err(bad(format!("first line is not '{MAGIC}'")));
    }
    let format = field(&mut lines, "format").map_err(bad)?;
    if format != FORMAT_VERSION {
        return Err(bad(format!("format version {format}, this build reads version {FORMAT_VERSION}")));
    }
    let partitions = field(&mut lines, "partitions").map_err(bad)?;
    if let Some(extra) = lines.find(|l| !l.trim().is_empty()) {
        return Err(bad(format!("unexpected line {extra:?}")));
    }
    Ok(partitions)
}

/// Parses the next line as `name <u32>`.
fn field<'a>(lines: &mut impl Iterator<Item = &'a str>, name: &str) -> Result<u32, String> {
    let line = lines.next().ok_or_else(|| format!("missing '{name}' line"))?;
    let value = line.strip_prefix(name).and_then(|v| v.strip_prefix(' ')).ok_or_else(|| format!("expected '{name} N', got {line:?}"))?;
    value.parse().map_err(|_| format!("'{name}' is not a number: {value:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_checked() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_or_create(dir.path(), 8).unwrap());
        assert_eq!(fs::read_to_string(dir.path().join(META_FILE)).unwrap(), "tally-log\nformat 1\npartitions 8\n");
        assert!(!dir.path().join("meta.tmp").exists());
        assert!(!load_or_create(dir.path(), 8).unwrap());
        let e = load_or_create(dir.path(), 4).unwrap_err().to_string();
        assert_eq!(e, format!("log {}: created with 8 partitions, opened with 4", dir.path().display()));
    }

    #[test]
    fn malformed_meta_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(META_FILE);
        for (text, reason) in [
            ("", "first line is not 'tally-log'"),
            ("tally-log\n", "missing 'format' line"),
            ("tally-log\nformat 2\npartitions 8\n", "format version 2, this build reads version 1"),
            ("tally-log\nformat 1\nparts 8\n", "expected 'partitions N', got \"parts 8\""),
            ("tally-log\nformat 1\npartitions x\n", "'partitions' is not a number: \"x\""),
            ("tally-log\nformat 1\npartitions 8\nmore\n", "unexpected line \"more\""),
        ] {
            fs::write(&path, text).unwrap();
            let e = load_or_create(dir.path(), 8).unwrap_err().to_string();
            assert_eq!(e, format!("log meta {}: {reason}", path.display()), "{text:?}");
        }
    }
}
