//! File sink: one NDJSON line per emitted row, and a sibling file for the late ledger.
//!
//! Row line: `{"key_type":"ad","key":"…","granularity":"1m","window_start":…,
//! "window_end":…,"clicks":…,"distinct_users":…,"status":"final","version":1}`.
//! Ledger line: `{"key_type":…,"key":…,"window_start":…,"batch":…,"held":false,
//! "request_ids":["…"]}`. Lines of a committed epoch are flushed at `commit`.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::{Epoch, EpochBatch, Sink, SinkError};
use crate::row::{format_uuid, granularity_label, LateEntry, Row, Status};
use crate::telemetry::progress::{self, Amount, ProgressOptions, Work};

struct Files {
    rows: BufWriter<Box<dyn Write + Send>>,
    /// None when the rows go to standard output and no ledger file is named.
    late: Option<BufWriter<Box<dyn Write + Send>>>,
    rows_path: PathBuf,
}

/// A file sink, owned by the commit operator.
pub struct FileSink {
    files: Files,
    staged: Vec<u8>,
    staged_late: Vec<u8>,
}

#[derive(Serialize)]
struct RowLine<'a> {
    key_type: &'a str,
    key: &'a str,
    granularity: String,
    window_start: u64,
    window_end: u64,
    clicks: u64,
    distinct_users: u64,
    status: Status,
    version: u32,
}

#[derive(Serialize)]
struct LateLine<'a> {
    key_type: &'a str,
    key: &'a str,
    window_start: u64,
    batch: u64,
    held: bool,
    request_ids: Vec<String>,
}

/// The ledger's path next to the rows file: `rows.ndjson` → `rows.late.ndjson`;
/// none for rows on standard output (`-`).
pub fn late_path(rows: &Path) -> Option<PathBuf> {
    (!crate::stdio::is_std(rows)).then(|| sibling_late_path(rows))
}

fn sibling_late_path(rows: &Path) -> PathBuf {
    let stem = rows.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    rows.with_file_name(format!("{stem}.late.ndjson"))
}

impl FileSink {
    /// Creates (truncates) the rows file and the ledger file: `late`, else
    /// the rows file's sibling ([`late_path`]). `-` is standard output.
    pub fn create(rows_path: &Path, late: Option<&Path>) -> Result<FileSink, SinkError> {
        let open = |path: &Path| {
            crate::stdio::writer(path)
                .map(BufWriter::new)
                .map_err(|source| SinkError::Io { target: crate::stdio::describe(path, "standard output"), source })
        };
        let late = late.map(Path::to_path_buf).or_else(|| late_path(rows_path));
        let late = late.map(|path| open(&path)).transpose()?;
        let files = Files { rows: open(rows_path)?, late, rows_path: rows_path.to_path_buf() };
        Ok(FileSink { files, staged: Vec::new(), staged_late: Vec::new() })
    }
}

/// Rows serialized and written at a time by [`write_rows`].
const WRITE_CHUNK_ROWS: usize = 65_536;

/// Writes `rows` to a new file at `path` (standard output for `-`), one
/// line each, durably, showing the rows written as `progress` says.
pub fn write_rows(path: &Path, rows: &[Row], progress: &ProgressOptions) -> std::io::Result<()> {
    let written = AtomicU64::new(0);
    let work = Work { unit: "rows", total: Some(rows.len() as u64) };
    progress::show(
        progress,
        work,
        || Amount::items(written.load(Ordering::Relaxed)),
        || {
            let mut file = crate::stdio::DurableOutput::create(path)?;
            let mut out = Vec::new();
            for chunk in rows.chunks(WRITE_CHUNK_ROWS) {
                out.clear();
                chunk.iter().for_each(|row| row_line(row, &mut out));
                file.write_all(&out)?;
                written.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            file.finish()
        },
    )
}

/// Writes late-ledger entries as NDJSON (the format of `rows.late.ndjson`)
/// to `path` (standard output for `-`) and syncs the file.
pub fn write_late(path: &Path, entries: &[LateEntry]) -> std::io::Result<()> {
    let mut out = Vec::new();
    entries.iter().for_each(|entry| late_line(entry, &mut out));
    crate::stdio::write_durably(path, &out)
}

fn row_line(row: &Row, out: &mut Vec<u8>) {
    let line = RowLine {
        key_type: row.key_type.as_str(),
        key: &row.key,
        granularity: granularity_label(row.granularity_ms),
        window_start: row.window_start,
        window_end: row.window_end(),
        clicks: row.clicks,
        distinct_users: row.distinct_users,
        status: row.status,
        version: row.version,
    };
    serde_json::to_writer(&mut *out, &line).expect("rows serialize to memory");
    out.push(b'\n');
}

fn late_line(entry: &LateEntry, out: &mut Vec<u8>) {
    let line = LateLine {
        key_type: entry.key_type.as_str(),
        key: &entry.key,
        window_start: entry.window_start,
        batch: entry.batch,
        held: entry.held,
        request_ids: entry.request_ids.iter().map(|id| format_uuid(*id)).collect(),
    };
    serde_json::to_writer(&mut *out, &line).expect("ledger entries serialize to memory");
    out.push(b'\n');
}

impl Sink for FileSink {
    fn stage(&mut self, _epoch: Epoch, batch: &EpochBatch) -> Result<(), SinkError> {
        batch.rows.iter().for_each(|row| row_line(row, &mut self.staged));
        batch.late.iter().for_each(|entry| late_line(entry, &mut self.staged_late));
        Ok(())
    }

    fn commit(&mut self, _epoch: Epoch) -> Result<(), SinkError> {
        let files = &mut self.files;
        let target = files.rows_path.display().to_string();
        let io = |source| SinkError::Io { target: target.clone(), source };
        files.rows.write_all(&self.staged).map_err(io)?;
        files.rows.flush().map_err(io)?;
        if let Some(late) = &mut files.late {
            late.write_all(&self.staged_late).map_err(io)?;
            late.flush().map_err(io)?;
        }
        self.staged.clear();
        self.staged_late.clear();
        Ok(())
    }
}
