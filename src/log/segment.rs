//! Segment files: naming, the in-memory description of a segment, reading a
//! window of bytes, and the scan that validates a segment at open.
//!
//! A partition is a sequence of segment files `p-NNNN/<base offset>.seg`
//! (the base offset in 20 digits, so names sort by offset). Records are
//! appended to the last segment only (the *active* one); the others are
//! *closed* and never change until retention deletes them whole.
//!
//! Durability: a segment's bytes count only once fsynced by the writer
//! (`writer.rs`). A segment file is created only after the previous one has
//! been fsynced complete, and its creation is made durable by fsyncing the
//! partition directory, so after a crash a partial record can only be at the
//! end of the last segment. [`scan`] finds where the intact records end;
//! recovery decides whether what follows is a torn tail or corruption.
//!
//! Each segment keeps a sparse index in memory — the byte position of every
//! [`INDEX_INTERVAL_RECORDS`]-th record — built by the scan at open and
//! extended by the writer, so a reader seeks by binary search plus a scan of
//! at most that many records. Nothing of the index is stored on disk. The
//! segment's newest event time (`max_ts`, for retention) is likewise
//! computed from its records, never from file times.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::record::{self, Fault, MAX_RECORD_BYTES};
use super::LogError;

/// Suffix of segment files.
pub const SEGMENT_SUFFIX: &str = ".seg";
/// Digits of the base offset in a segment file name.
const NAME_DIGITS: usize = 20;
/// One index entry per this many records of a segment.
pub const INDEX_INTERVAL_RECORDS: u64 = 1024;
/// Bytes read from a segment file at a time.
pub const READ_CHUNK_BYTES: usize = 256 * 1024;

/// `00000000000000000042.seg` for base offset 42.
pub fn file_name(base: u64) -> String {
    format!("{base:0NAME_DIGITS$}{SEGMENT_SUFFIX}")
}

/// The base offset of a segment file name, if it is one.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Where a record starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub offset: u64,
    pub position: u64,
}

/// What the log knows about one segment. For the published copy (what
/// readers see) every field describes fsynced bytes only.
#[derive(Clone, Debug)]
pub struct SegmentMeta {
    pub base: u64,
    /// One past the last record's offset (`base` when empty).
    pub end: u64,
    /// Length of the intact records, in bytes.
    pub bytes: u64,
    /// Newest event time in the segment; `None` when empty.
    pub max_ts: Option<u64>,
    pub path: Arc<Path>,
    /// Sparse index, ascending; starts with `base` when non-empty.
    pub index: Vec<IndexEntry>,
}

impl SegmentMeta {
    pub fn empty(base: u64, path: &Path) -> SegmentMeta {
        SegmentMeta { base, end: base, bytes: 0, max_ts: None, path: path.into(), index: Vec::new() }
    }

    /// Accounts for the record of `offset` (= `end`) at byte `position`.
    pub fn push(&mut self, position: u64, len: usize, ts: u64) {
        debug_assert_eq!(position, self.bytes);
        if (self.end - self.base).is_multiple_of(INDEX_INTERVAL_RECORDS) {
            self.index.push(IndexEntry { offset: self.end, position });
        }
        self.end += 1;
        self.bytes += len as u64;
        self.max_ts = Some(self.max_ts.map_or(ts, |m| m.max(ts)));
    }

    /// The last index entry at or before `offset`, which must be in this
    /// segment.
    pub fn seek(&self, offset: u64) -> IndexEntry {
        debug_assert!(self.base <= offset && offset < self.end);
        let after = self.index.partition_point(|e| e.offset <= offset);
        self.index[after.saturating_sub(1)]
    }
}

/// A buffered window over a segment file: hands out the bytes of one record
/// at a time, reading [`READ_CHUNK_BYTES`] at once.
pub struct Window {
    file: File,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    buf_pos: u64,
}

impl Window {
    pub fn new(file: File) -> Window {
        Window { file, buf: Vec::new(), buf_pos: 0 }
    }

    /// Up to [`MAX_RECORD_BYTES`] bytes from `pos`, never past `limit`:
    /// enough for any record that starts at `pos`.
    pub fn at(&mut self, pos: u64, limit: u64) -> io::Result<&[u8]> {
        let want = limit.saturating_sub(pos).min(MAX_RECORD_BYTES as u64) as usize;
        let buf_end = self.buf_pos + self.buf.len() as u64;
        if pos < self.buf_pos || pos + want as u64 > buf_end {
            self.fill(pos, limit)?;
        }
        let start = (pos - self.buf_pos) as usize;
        Ok(&self.buf[start..start + want])
    }

    fn fill(&mut self, pos: u64, limit: u64) -> io::Result<()> {
        let len = limit.saturating_sub(pos).min(READ_CHUNK_BYTES as u64);
        self.buf.clear();
        self.buf_pos = pos;
        self.file.seek(SeekFrom::Start(pos))?;
        (&mut self.file).take(len).read_to_end(&mut self.buf)?;
        if (self.buf.len() as u64) < len {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("file ends before byte {}", pos + len)));
        }
        Ok(())
    }
}

/// The first record of a segment that is not intact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bad {
    pub offset: u64,
    pub position: u64,
    pub fault: Fault,
    /// Where an intact record starts after it, if one does (only searched
    /// when asked).
    pub valid_after: Option<u64>,
}

/// The result of scanning one segment file.
#[derive(Debug)]
pub struct Scan {
    /// The intact records from the start.
    pub meta: SegmentMeta,
    pub file_len: u64,
    /// What ends the intact records before the end of the file.
    pub bad: Option<Bad>,
}

/// Reads a whole segment, validating every record. With `search_after_bad`
/// it also looks at every byte position after the first bad record for an
/// intact record (which tells corruption from a torn tail).
pub fn scan(path: &Path, base: u64, search_after_bad: bool) -> Result<Scan, LogError> {
    let file = File::open(path).map_err(LogError::io(path, "open"))?;
    let file_len = file.metadata().map_err(LogError::io(path, "stat"))?.len();
    scan_file(file, path, base, file_len, search_after_bad)
}

/// Reads the first `len` bytes of a segment that a writer in another
/// process may be appending to: they are made durable first (fsync of the
/// file, opened read-only), so nothing returned can be lost to a crash. A
/// record that is not intact ends the scan, as the end of a write in
/// progress would, and is reported in [`Scan::bad`] without a search after it.
pub fn scan_durable_prefix(path: &Path, base: u64) -> Result<Scan, LogError> {
    let file = File::open(path).map_err(LogError::io(path, "open"))?;
    let len = file.metadata().map_err(LogError::io(path, "stat"))?.len();
    file.sync_all().map_err(LogError::io(path, "fsync"))?;
    scan_file(file, path, base, len, false)
}

fn scan_file(file: File, path: &Path, base: u64, file_len: u64, search_after_bad: bool) -> Result<Scan, LogError> {
    let mut window = Window::new(file);
    let mut meta = SegmentMeta::empty(base, path);
    while meta.bytes < file_len {
        let position = meta.bytes;
        let bytes = window.at(position, file_len).map_err(LogError::io(path, "read"))?;
        match record::decode(bytes) {
            Ok(view) => meta.push(position, view.len, view.ts),
            Err(fault) => {
                let valid_after = match search_after_bad {
                    true => find_intact(&mut window, position + 1, file_len).map_err(LogError::io(path, "read"))?,
                    false => None,
                };
                let bad = Bad { offset: meta.end, position, fault, valid_after };
                return Ok(Scan { meta, file_len, bad: Some(bad) });
            }
        }
    }
    Ok(Scan { meta, file_len, bad: None })
}

/// The first position in `from..limit` where an intact record starts.
fn find_intact(window: &mut Window, from: u64, limit: u64) -> io::Result<Option<u64>> {
    for pos in from..limit {
        if record::decode(window.at(pos, limit)?).is_ok() {
            return Ok(Some(pos));
        }
    }
    Ok(None)
}

/// The segment files of a partition directory, sorted by base offset. Other
/// files are ignored; a `.seg` file with a malformed name is an error.
pub fn list(partition: u32, dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(LogError::io(dir, "list"))? {
        let entry = entry.map_err(LogError::io(dir, "list"))?;
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| n.ends_with(SEGMENT_SUFFIX)) else { continue };
        let Some(base) = parse_file_name(name) else {
            let reason = format!("not a segment name (want {NAME_DIGITS} digits of base offset + {SEGMENT_SUFFIX})");
            return Err(LogError::Layout { partition, path: entry.path(), reason });
        };
        found.push((base, entry.path()));
    }
    found.sort_unstable();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::event::Click;

    #[test]
    fn names_round_trip_and_sort() {
        assert_eq!(file_name(42), "00000000000000000042.seg");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        for bad in ["42.seg", "0000000000000000004x.seg", "00000000000000000042.sef", "99999999999999999999.seg"] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
        assert!(file_name(9) < file_name(10));
    }

    fn write_segment(dir: &Path, clicks: usize, ad_len: usize) -> (PathBuf, Vec<u64>) {
        let path = dir.join(file_name(100));
        let mut buf = Vec::new();
        let mut starts = Vec::new();
        for i in 0..clicks {
            starts.push(buf.len() as u64);
            let click = Click { ad: "a".repeat(ad_len).into(), ts: 1000 + (i as u64 * 7) % 50, user: i as u64, request_id: i as u128 };
            record::encode(&click, &mut buf).unwrap();
        }
        File::create(&path).unwrap().write_all(&buf).unwrap();
        (path, starts)
    }

    #[test]
    fn scan_indexes_every_interval_and_tracks_max_ts() {
        let dir = tempfile::tempdir().unwrap();
        let n = 2 * INDEX_INTERVAL_RECORDS as usize + 5;
        let (path, starts) = write_segment(dir.path(), n, 3);
        let scan = scan(&path, 100, true).unwrap();
        assert!(scan.bad.is_none());
        assert_eq!((scan.meta.base, scan.meta.end, scan.meta.bytes), (100, 100 + n as u64, scan.file_len));
        assert_eq!(scan.meta.max_ts, Some(1049));
        let offsets: Vec<u64> = scan.meta.index.iter().map(|e| e.offset).collect();
        assert_eq!(offsets, [100, 100 + INDEX_INTERVAL_RECORDS, 100 + 2 * INDEX_INTERVAL_RECORDS]);
        assert!(scan.meta.index.iter().all(|e| e.position == starts[(e.offset - 100) as usize]));
        assert_eq!(scan.meta.seek(100 + INDEX_INTERVAL_RECORDS - 1).offset, 100);
        assert_eq!(scan.meta.seek(100 + INDEX_INTERVAL_RECORDS).offset, 100 + INDEX_INTERVAL_RECORDS);
    }

    #[test]
    fn scan_reports_the_first_bad_record_and_what_follows() {
        let dir = tempfile::tempdir().unwrap();
        let (path, starts) = write_segment(dir.path(), 10, 1);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[starts[4] as usize + 12] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let bad = scan(&path, 100, true).unwrap().bad.unwrap();
        assert_eq!((bad.offset, bad.position, bad.valid_after), (104, starts[4], Some(starts[5])));
        assert!(matches!(bad.fault, Fault::Crc { .. }));
        assert_eq!(scan(&path, 100, false).unwrap().bad.unwrap().valid_after, None, "not searched");
    }

    #[test]
    fn window_spans_chunks() {
        let dir = tempfile::tempdir().unwrap();
        // Records of 291 bytes straddle the 256 KiB chunk boundaries.
        let n = 2 * READ_CHUNK_BYTES / 291 + 3;
        let (path, _) = write_segment(dir.path(), n, 250);
        let scan = scan(&path, 100, true).unwrap();
        assert!(scan.bad.is_none());
        assert_eq!(scan.meta.end, 100 + n as u64);
    }

    #[test]
    fn list_sorts_and_rejects_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        for base in [20, 3, 100] {
            File::create(dir.path().join(file_name(base))).unwrap();
        }
        File::create(dir.path().join("notes.txt")).unwrap();
        let bases: Vec<u64> = list(7, dir.path()).unwrap().into_iter().map(|(b, _)| b).collect();
        assert_eq!(bases, [3, 20, 100]);
        File::create(dir.path().join("12.seg")).unwrap();
        let e = list(7, dir.path()).unwrap_err().to_string();
        assert!(e.starts_with("log partition 7: ") && e.contains("12.seg: not a segment name"), "{e}");
    }
}
