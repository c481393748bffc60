//! `tally log import`: a file of NDJSON click lines into the log, with the
//! same per-line checks as the file source, showing its progress (the
//! share of a file's bytes read; for stdin, the clicks appended).

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::event::json::{decode_click, Rejected, MAX_REJECTED_KEPT};
use crate::event::salt::UserSalt;
use crate::event::Click;
use crate::log::{Log, LogError};
use crate::telemetry::progress::{self, Amount, ProgressOptions, Work};

/// Bytes read from the input at a time.
const READ_BUFFER_BYTES: usize = 1 << 20;

/// Clicks appended to the log per batch (one group commit).
pub const IMPORT_BATCH_CLICKS: usize = 16_384;

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportReport {
    pub lines: u64,
    pub appended: u64,
    pub rejected: Vec<Rejected>,
    pub rejected_total: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{}: {source}", path.display())]
    Open { path: PathBuf, source: std::io::Error },
    #[error("reading input: {0}")]
    Read(#[from] std::io::Error),
    #[error("appending to the log: {0}")]
    Log(#[from] LogError),
}

/// Appends every valid line of `input` to `log`; invalid lines are reported
/// with their numbers and skipped. Returns once everything appended is durable.
pub fn import(input: impl BufRead, log: &Log, salt: &UserSalt) -> Result<ImportReport, ImportError> {
    let mut report = ImportReport::default();
    let mut batch: Vec<Click> = Vec::with_capacity(IMPORT_BATCH_CLICKS);
    for line in input.split(b'\n') {
        let line = line?;
        report.lines += 1;
        match decode_click(&line, salt) {
            Ok(click) => batch.push(click),
            Err(error) => {
                report.rejected_total += 1;
                if report.rejected.len() < MAX_REJECTED_KEPT {
                    report.rejected.push(Rejected { line: report.lines, error });
                }
            }
        }
        if batch.len() == IMPORT_BATCH_CLICKS {
            report.appended += log.append(&batch)?.positions.len() as u64;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        report.appended += log.append(&batch)?.positions.len() as u64;
    }
    Ok(report)
}

/// [`import`] of the file at `path` (`-`: stdin), showing its progress.
pub fn import_path(path: &Path, log: &Log, salt: &UserSalt, progress: &ProgressOptions) -> Result<ImportReport, ImportError> {
    let read = AtomicU64::new(0);
    let (input, size) = crate::stdio::input(path).map_err(|e| ImportError::Open { path: path.to_owned(), source: e })?;
    let input = std::io::BufReader::with_capacity(READ_BUFFER_BYTES, Counted { inner: input, read: &read });
    let amount = || {
        let appended = log.stats().records;
        Amount { items: appended, done: if size.is_some() { read.load(Ordering::Relaxed) } else { appended } }
    };
    progress::show(progress, Work { unit: "clicks", total: size }, amount, || import(input, log, salt))
}

/// A reader that counts the bytes read through it.
struct Counted<'a, R> {
    inner: R,
    read: &'a AtomicU64,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}
