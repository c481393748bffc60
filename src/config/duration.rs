//! Durations as config files spell them: `"250ms"`, `"5s"`, `"1m"`, `"1h"`,
//! `"1d"`, or a bare integer meaning milliseconds.
//!
//! One integer and one unit, nothing else: no fractions, no compound forms
//! (`"1m30s"`), no spaces. Everything the engine does with time is whole
//! milliseconds, and a grammar this small cannot be misread.

/// Milliseconds per unit, longest suffix first so `"ms"` wins over `"m"`.
const UNITS: [(&str, u64); 5] = [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)];

/// Parses a duration string into milliseconds.
///
/// The error is a reason fit for `key '<key>': <reason>`.
///
/// ```
/// # use tally::config::parse_duration;
/// assert_eq!(parse_duration("250ms"), Ok(250));
/// assert_eq!(parse_duration("1h"), Ok(3_600_000));
/// assert_eq!(parse_duration("-5s"), Err("negative duration \"-5s\"".to_string()));
/// ```
pub fn parse_duration(text: &str) -> Result<u64, String> {
    if text.starts_with('-') {
        return Err(format!("negative duration {text:?}"));
    }
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let per_unit = UNITS.iter().find(|(suffix, _)| *suffix == unit).map(|&(_, ms)| ms);
    let (false, Some(per_unit)) = (digits.is_empty(), per_unit) else {
        return Err(format!("invalid duration {text:?} (expected an integer and one of ms, s, m, h, d, e.g. \"5s\")"));
    };
    digits.parse::<u64>().ok().and_then(|n| n.checked_mul(per_unit)).ok_or_else(|| format!("duration {text:?} is too large"))
}

/// Milliseconds from a TOML integer, which is signed.
pub(crate) fn duration_from_int(ms: i64) -> Result<u64, String> {
    u64::try_from(ms).map_err(|_| format!("negative duration {ms}"))
}

/// Formats milliseconds in the largest unit that divides them exactly, so
/// that error messages echo the file's own spelling: `60_000` → `1m`.
pub fn format_duration(ms: u64) -> String {
    let (suffix, per_unit) = UNITS.iter().rev().find(|(_, per_unit)| ms != 0 && ms.is_multiple_of(*per_unit)).copied().unwrap_or(("ms", 1));
    format!("{}{suffix}", ms / per_unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_parses() {
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert_eq!(parse_duration("5s"), Ok(5_000));
        assert_eq!(parse_duration("1m"), Ok(60_000));
        assert_eq!(parse_duration("1h"), Ok(3_600_000));
        assert_eq!(parse_duration("1d"), Ok(86_400_000));
        assert_eq!(parse_duration("0s"), Ok(0));
    }

    #[test]
    fn negative_is_named_as_such() {
        assert_eq!(parse_duration("-5s"), Err("negative duration \"-5s\"".into()));
        assert_eq!(duration_from_int(-5), Err("negative duration -5".into()));
        assert_eq!(duration_from_int(7), Ok(7));
    }

    #[test]
    fn garbage_is_rejected() {
        for text in ["", "s", "5", "5 s", "1.5s", "5sec", "1m30s", "+5s", "5S", "٣s"] {
            let err = parse_duration(text).expect_err(text);
            assert!(err.starts_with("invalid duration"), "{text}: {err}");
        }
    }

    #[test]
    fn overflow_is_rejected() {
        assert!(parse_duration("99999999999999999999ms").unwrap_err().contains("too large"));
        assert!(parse_duration("999999999999999d").unwrap_err().contains("too large"));
        assert_eq!(parse_duration("18446744073709551615ms"), Ok(u64::MAX));
    }

    #[test]
    fn formatting_picks_the_largest_exact_unit() {
        assert_eq!(format_duration(0), "0ms");
        assert_eq!(format_duration(250), "250ms");
        assert_eq!(format_duration(90_000), "90s");
        assert_eq!(format_duration(60_000), "1m");
        assert_eq!(format_duration(7_200_000), "2h");
        assert_eq!(format_duration(86_400_000), "1d");
    }
}
