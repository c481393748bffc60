//! `tally log import`: a file of NDJSON click lines into the log, with the
//! same per-line checks as the file source.

use std::io::BufRead;

use crate::event::json::{decode_click, Rejected, MAX_REJECTED_KEPT};
use crate::event::salt::UserSalt;
use crate::event::Click;
use crate::log::{Log, LogError};

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
