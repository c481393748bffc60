//! Where in a log to start or stop reading: `--from` and `--to` of `tally
//! run` (when nothing is committed yet) and of `tally backfill`.
//!
//! A position is `earliest`, `latest`, a time (unix milliseconds or RFC 3339:
//! the first offset of each partition whose record time is at or after it),
//! or explicit offsets `P:OFFSET,P:OFFSET,...` (partitions not listed stay
//! at `earliest` for a start and at `latest` for an end). Each log resolves
//! a position into one offset per partition.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::event::EventTime;
use crate::time::parse_time;

/// A place in every partition of a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Position {
    /// The first offset still in the log.
    Earliest,
    /// The end offset when the command starts.
    Latest,
    /// The first offset whose record time is at or after this time.
    Time(EventTime),
    /// Explicit offsets by partition; other partitions default by use.
    Offsets(BTreeMap<u32, u64>),
}

impl FromStr for Position {
    type Err = String;

    fn from_str(text: &str) -> Result<Position, String> {
        let text = text.trim();
        match text {
            "earliest" => return Ok(Position::Earliest),
            "latest" => return Ok(Position::Latest),
            _ => {}
        }
        if text.contains(':') && !text.contains('T') && !text.contains('t') {
            let mut offsets = BTreeMap::new();
            for item in text.split(',') {
                let (partition, offset) = item.split_once(':').ok_or_else(|| format!("{item:?} is not PARTITION:OFFSET"))?;
                let partition: u32 =
                    partition.trim().parse().map_err(|_| format!("{item:?}: partition {partition:?} is not an integer"))?;
                let offset: u64 = offset.trim().parse().map_err(|_| format!("{item:?}: offset {offset:?} is not an integer"))?;
                if offsets.insert(partition, offset).is_some() {
                    return Err(format!("partition {partition} is given twice"));
                }
            }
            return Ok(Position::Offsets(offsets));
        }
        parse_time(text).map(Position::Time).map_err(|reason| {
            format!("{reason}; a position is earliest, latest, a time, or offsets PARTITION:OFFSET,... (e.g. 0:1200,1:1180)")
        })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Earliest => write!(f, "earliest"),
            Position::Latest => write!(f, "latest"),
            Position::Time(ms) => write!(f, "{ms}"),
            Position::Offsets(offsets) => {
                let items: Vec<String> = offsets.iter().map(|(p, o)| format!("{p}:{o}")).collect();
                write!(f, "{}", items.join(","))
            }
        }
    }
}

impl Position {
    /// Explicit offsets resolved against a log's bounds: listed partitions
    /// must lie within `[earliest, end]`; unlisted ones take `default`.
    /// `None` for the other positions, which each log resolves itself.
    pub fn explicit(&self, earliest: &[u64], ends: &[u64], default: &[u64]) -> Option<Result<Vec<u64>, String>> {
        let Position::Offsets(offsets) = self else { return None };
        Some((|| {
            if let Some((&partition, _)) = offsets.range(ends.len() as u32..).next() {
                return Err(format!("partition {partition}: the log has {} partitions", ends.len()));
            }
            let mut resolved = default.to_vec();
            for (&partition, &offset) in offsets {
                let p = partition as usize;
                if offset < earliest[p] || offset > ends[p] {
                    return Err(format!(
                        "partition {partition}: offset {offset} is outside the log's offsets {}..={}",
                        earliest[p], ends[p]
                    ));
                }
                resolved[p] = offset;
            }
            Ok(resolved)
        })())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_and_name_their_errors() {
        assert_eq!("earliest".parse(), Ok(Position::Earliest));
        assert_eq!("latest".parse(), Ok(Position::Latest));
        assert_eq!("2026-01-01T00:00:00Z".parse(), Ok(Position::Time(1_767_225_600_000)));
        assert_eq!("1767225600000".parse(), Ok(Position::Time(1_767_225_600_000)));
        assert_eq!("0:10,2:7".parse(), Ok(Position::Offsets(BTreeMap::from([(0, 10), (2, 7)]))));
        assert!("0:10,0:11".parse::<Position>().unwrap_err().contains("given twice"));
        assert!("0:x".parse::<Position>().unwrap_err().contains("offset \"x\""));
        assert!("yesterday".parse::<Position>().unwrap_err().contains("a position is earliest"));
    }

    #[test]
    fn explicit_offsets_stay_within_the_log() {
        let position: Position = "1:5".parse().unwrap();
        assert_eq!(position.explicit(&[0, 2], &[9, 9], &[0, 2]), Some(Ok(vec![0, 5])));
        assert!(position.explicit(&[0, 6], &[9, 9], &[0, 6]).unwrap().unwrap_err().contains("outside"));
        assert!("3:1".parse::<Position>().unwrap().explicit(&[0], &[9], &[0]).unwrap().unwrap_err().contains("1 partitions"));
        assert_eq!(Position::Latest.explicit(&[0], &[9], &[0]), None);
    }
}
