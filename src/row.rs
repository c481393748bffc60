//! What the job emits: window rows and late-ledger entries.
//!
//! These are the records the sink stages and commits per epoch, and the line
//! format of the file sink.

use serde::{Deserialize, Serialize};

use crate::event::{EventTime, Key, KeyType, RequestId};

/// How final a window row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Early result while the window is open; superseded by later rows.
    Partial,
    /// The frontier passed the window's end + allowed lateness.
    Final,
    /// A too-late click changed a final window; the version went up.
    Restated,
}

impl Status {
    /// The status as rows spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Partial => "partial",
            Status::Final => "final",
            Status::Restated => "restated",
        }
    }
}

/// One emitted window row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Row {
    pub key_type: KeyType,
    pub key: Key,
    pub granularity_ms: u64,
    pub window_start: EventTime,
    pub clicks: u64,
    pub distinct_users: u64,
    pub status: Status,
    /// 0 for partial rows, 1 for the final row, +1 per restatement.
    pub version: u32,
}

impl Row {
    pub fn window_end(&self) -> EventTime {
        self.window_start + self.granularity_ms
    }
}

/// Spells a window length: whole hours as `Nh`, else whole minutes as `Nm`.
pub fn granularity_label(ms: u64) -> String {
    if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else {
        format!("{}m", ms / 60_000)
    }
}

/// Too-late clicks of one key in one 1m window, from one batch.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LateEntry {
    pub key_type: KeyType,
    pub key: Key,
    pub window_start: EventTime,
    /// Batch (epoch) in which the clicks were read.
    pub batch: EventTime,
    /// True if they were held (too old to restate), false if they restated.
    pub held: bool,
    pub request_ids: Vec<RequestId>,
}

/// Canonical lowercase 8-4-4-4-12 spelling of a request id.
pub fn format_uuid(id: RequestId) -> String {
    let hex = format!("{id:032x}");
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(granularity_label(60_000), "1m");
        assert_eq!(granularity_label(300_000), "5m");
        assert_eq!(granularity_label(3_600_000), "1h");
    }

    #[test]
    fn uuid_spelling() {
        assert_eq!(format_uuid(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef), "01234567-89ab-cdef-0123-456789abcdef");
    }
}
