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

/// Which end of a range a position gives: explicit offsets leave the
/// partitions they do not list at `earliest` for a start and at `latest`
/// for an end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    Start,
    End,
}

/// What a log says about itself when a command starts: per partition, the
/// first offset it still holds and its end offset. Positions resolve
/// against these, so a range is fixed once resolved, whatever is appended
/// meanwhile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogBounds {
    pub earliest: Vec<u64>,
    pub ends: Vec<u64>,
}

/// A resolved range of offsets, `[start[p], end[p])` per partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    pub start: Vec<u64>,
    pub end: Vec<u64>,
}

impl Range {
    /// The records in the range (clicks, in a log of clicks).
    pub fn records(&self) -> u64 {
        self.start.iter().zip(&self.end).map(|(s, e)| e.saturating_sub(*s)).sum()
    }
}

/// A position that does not resolve, naming the flag it came from.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field} {position}: {reason}")]
pub struct PositionError {
    /// `--from` or `--to`.
    pub field: &'static str,
    pub position: String,
    pub reason: String,
}

impl Position {
    /// One offset per partition of a log with `bounds`. Each log implements
    /// only the time lookup: `offsets_at_time(t)` gives, per partition, the
    /// first offset whose record time is at or after `t` (the end offset
    /// where there is none), as Kafka's `offsetsForTimes` does; it is
    /// called only for a time position. Its answers are kept within the
    /// bounds.
    pub fn resolve(
        &self,
        bound: Bound,
        bounds: &LogBounds,
        offsets_at_time: impl FnOnce(EventTime) -> Result<Vec<u64>, String>,
    ) -> Result<Vec<u64>, String> {
        let LogBounds { earliest, ends } = bounds;
        if earliest.len() != ends.len() {
            return Err(format!("the log reports {} start offsets for {} partitions", earliest.len(), ends.len()));
        }
        match self {
            Position::Earliest => Ok(earliest.clone()),
            Position::Latest => Ok(ends.clone()),
            Position::Offsets(_) => {
                let default = if bound == Bound::Start { earliest } else { ends };
                self.explicit(earliest, ends, default).expect("explicit offsets")
            }
            Position::Time(time) => {
                let found = offsets_at_time(*time)?;
                if found.len() != ends.len() {
                    return Err(format!("the time lookup gave {} offsets for {} partitions", found.len(), ends.len()));
                }
                Ok(found.iter().zip(earliest.iter().zip(ends)).map(|(&f, (&e, &end))| f.clamp(e, end.max(e))).collect())
            }
        }
    }
}

/// Resolves `--from` and `--to` against one view of a log: every
/// partition's end must not come before its start.
pub fn resolve_range(
    from: &Position,
    to: &Position,
    bounds: &LogBounds,
    offsets_at_time: impl Fn(EventTime) -> Result<Vec<u64>, String>,
) -> Result<Range, PositionError> {
    let error = |field, position: &Position, reason| PositionError { field, position: position.to_string(), reason };
    let start = from.resolve(Bound::Start, bounds, &offsets_at_time).map_err(|reason| error("--from", from, reason))?;
    let end = to.resolve(Bound::End, bounds, &offsets_at_time).map_err(|reason| error("--to", to, reason))?;
    if let Some(p) = (0..start.len()).find(|&p| end[p] < start[p]) {
        let reason = format!("partition {p}: offset {} is before the --from offset {} (--to before --from)", end[p], start[p]);
        return Err(error("--to", to, reason));
    }
    Ok(Range { start, end })
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

    fn bounds() -> LogBounds {
        LogBounds { earliest: vec![0, 4, 0], ends: vec![10, 9, 0] }
    }

    fn never(_: EventTime) -> Result<Vec<u64>, String> {
        panic!("no time lookup for this position")
    }

    #[test]
    fn positions_resolve_within_the_log_and_by_role() {
        let b = bounds();
        assert_eq!(Position::Earliest.resolve(Bound::End, &b, never), Ok(vec![0, 4, 0]));
        assert_eq!(Position::Latest.resolve(Bound::Start, &b, never), Ok(vec![10, 9, 0]));
        let listed: Position = "0:3".parse().unwrap();
        assert_eq!(listed.resolve(Bound::Start, &b, never), Ok(vec![3, 4, 0]));
        assert_eq!(listed.resolve(Bound::End, &b, never), Ok(vec![3, 9, 0]));
        let lookup = |t: EventTime| Ok(vec![t, 0, 7]);
        assert_eq!(Position::Time(5).resolve(Bound::Start, &b, lookup), Ok(vec![5, 4, 0]), "kept within the bounds");
        assert!(Position::Time(5).resolve(Bound::Start, &b, |_| Ok(vec![1])).unwrap_err().contains("1 offsets for 3"));
    }

    #[test]
    fn a_range_names_the_flag_that_is_wrong() {
        let b = bounds();
        let range = resolve_range(&"0:2".parse().unwrap(), &"0:5,1:6".parse().unwrap(), &b, never).unwrap();
        assert_eq!(range, Range { start: vec![2, 4, 0], end: vec![5, 6, 0] });
        assert_eq!(range.records(), 5);
        let backwards = resolve_range(&"0:5".parse().unwrap(), &"0:2".parse().unwrap(), &b, never).unwrap_err();
        assert_eq!(backwards.field, "--to");
        assert_eq!(backwards.to_string(), "--to 0:2: partition 0: offset 2 is before the --from offset 5 (--to before --from)");
        let beyond = resolve_range(&"1:99".parse().unwrap(), &Position::Latest, &b, never).unwrap_err();
        assert_eq!(beyond.to_string(), "--from 1:99: partition 1: offset 99 is outside the log's offsets 4..=9");
    }
}
