//! Query parameters: parsed strictly, with errors that name the parameter.
//!
//! Times are unix milliseconds or RFC 3339 (`2026-11-29T03:00:00Z`,
//! `…T03:00:00.250+01:00`). Every range is bounded so one request cannot
//! ask for years of 1m windows.

use std::collections::HashMap;

use crate::event::MAX_EVENT_TIME_MS;
use crate::row::granularity_label;
use crate::time::parse_time;

/// Most windows one series request may cover.
pub const MAX_WINDOWS_PER_REQUEST: u64 = 1_440;
/// Default number of windows of a series request without `from`.
pub const DEFAULT_WINDOWS: u64 = 60;
/// Largest `k` of a top list.
pub const MAX_TOP_K: usize = 100;
pub const DEFAULT_TOP_K: usize = 10;
/// Most ledger entries per page.
pub const MAX_LATE_LIMIT: usize = 1_000;
pub const DEFAULT_LATE_LIMIT: usize = 100;
/// Longest span of one ledger request: one day.
pub const MAX_LATE_SPAN_MS: u64 = 86_400_000;

/// A bad parameter: which one and why (answered with 400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ParamError {
    pub field: String,
    pub reason: String,
}

impl ParamError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> ParamError {
        ParamError { field: field.into(), reason: reason.into() }
    }
}

/// The query string of a request, checked for unknown parameters.
pub struct Params {
    values: HashMap<String, String>,
}

impl Params {
    /// Takes the decoded pairs; a parameter given twice or not in `known`
    /// is an error.
    pub fn new(pairs: Vec<(String, String)>, known: &[&str]) -> Result<Params, ParamError> {
        let mut values = HashMap::new();
        for (name, value) in pairs {
            if !known.contains(&name.as_str()) {
                let shown: String = name.chars().take(64).collect();
                return Err(ParamError::new(shown, format!("unknown parameter (allowed: {})", known.join(", "))));
            }
            if values.insert(name.clone(), value).is_some() {
                return Err(ParamError::new(name, "given twice"));
            }
        }
        Ok(Params { values })
    }

    /// The text of parameter `name`, as given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// `window`: `1m`, `5m` or `1h`, as milliseconds.
    pub fn window(&self, default_ms: u64) -> Result<u64, ParamError> {
        match self.get("window") {
            None => Ok(default_ms),
            Some(text) => window_ms(text).ok_or_else(|| ParamError::new("window", format!("{text:?} is not one of 1m, 5m, 1h"))),
        }
    }

    /// A time parameter, if given.
    pub fn time(&self, name: &str) -> Result<Option<u64>, ParamError> {
        let checked = |text: &str| match parse_time(text)? {
            // One past the last event time: the end of a range may be it.
            ms if ms > MAX_EVENT_TIME_MS + 1 => Err(format!("{text:?} is after 9999-12-31T23:59:59.999Z, the last event time")),
            ms => Ok(ms),
        };
        self.get(name).map(|text| checked(text).map_err(|reason| ParamError::new(name, reason))).transpose()
    }

    /// A count parameter in `1..=max`.
    pub fn count(&self, name: &str, default: usize, max: usize) -> Result<usize, ParamError> {
        let Some(text) = self.get(name) else { return Ok(default) };
        match text.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ParamError::new(name, format!("{text:?} is not an integer in 1..={max}"))),
        }
    }
}

/// Checks the `[from, to)` of a series request of `window`-long windows:
/// `from` before `to`, and at most [`MAX_WINDOWS_PER_REQUEST`] windows'
/// length between them (24 h of 1m windows). The length is the range as
/// given: `from` is rounded down to its window start only afterwards, so an
/// unaligned range of exactly 24 h is taken as one of aligned ends.
pub fn check_series_range(from: u64, to: u64, window: u64) -> Result<(), ParamError> {
    if from >= to {
        return Err(ParamError::new("from", format!("{from} is not before to ({to})")));
    }
    let windows = (to - from).div_ceil(window);
    if windows > MAX_WINDOWS_PER_REQUEST {
        let reason = format!(
            "the range spans {} ms, {windows} windows of {}: at most {MAX_WINDOWS_PER_REQUEST} per request",
            to - from,
            granularity_label(window)
        );
        return Err(ParamError::new("from", reason));
    }
    Ok(())
}

/// `1m` → 60000, `5m`, `1h`; anything else `None`.
pub fn window_ms(text: &str) -> Option<u64> {
    match text {
        "1m" => Some(60_000),
        "5m" => Some(300_000),
        "1h" => Some(3_600_000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_repeated_parameters_are_named() {
        let pairs = |list: &[(&str, &str)]| list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        let error = Params::new(pairs(&[("colour", "red")]), &["window"]).err().unwrap();
        assert_eq!((error.field.as_str(), error.reason.as_str()), ("colour", "unknown parameter (allowed: window)"));
        assert_eq!(Params::new(pairs(&[("k", "1"), ("k", "2")]), &["k"]).err().unwrap().reason, "given twice");
        let params = Params::new(pairs(&[("window", "2m"), ("k", "0")]), &["window", "k"]).unwrap();
        assert_eq!(params.window(60_000).unwrap_err().field, "window");
        assert_eq!(params.count("k", 10, 100).unwrap_err().reason, "\"0\" is not an integer in 1..=100");
    }

    #[test]
    fn a_series_range_of_exactly_24h_of_1m_windows_is_taken_and_one_minute_more_is_not() {
        const DAY_MS: u64 = 86_400_000;
        let minute = 60_000;
        for from in [0, 1_767_225_600_000, 1_767_225_630_000, 1_767_225_600_001] {
            assert_eq!(check_series_range(from, from + DAY_MS, minute), Ok(()), "from {from}");
            let refused = check_series_range(from, from + DAY_MS + minute, minute).unwrap_err();
            assert_eq!(refused.field, "from");
            assert!(refused.reason.ends_with("1441 windows of 1m: at most 1440 per request"), "{}", refused.reason);
            assert!(check_series_range(from, from + DAY_MS + 1, minute).is_err(), "from {from}");
        }
        assert_eq!(check_series_range(0, 60 * DAY_MS, 3_600_000), Ok(()));
        assert!(check_series_range(0, 60 * DAY_MS + 1, 3_600_000).is_err());
        assert_eq!(check_series_range(5, 5, minute).unwrap_err().reason, "5 is not before to (5)");
    }

    #[test]
    fn a_time_after_the_last_event_time_is_refused_so_no_window_end_wraps() {
        let pairs = |at: u64| vec![("at".to_owned(), at.to_string())];
        let params = Params::new(pairs(u64::MAX), &["at"]).unwrap();
        let refused = params.time("at").unwrap_err();
        assert_eq!(refused.field, "at");
        assert!(refused.reason.contains("after 9999-12-31T23:59:59.999Z"), "{}", refused.reason);
        let last = Params::new(pairs(MAX_EVENT_TIME_MS + 1), &["at"]).unwrap();
        assert_eq!(last.time("at"), Ok(Some(MAX_EVENT_TIME_MS + 1)));
        assert!(Params::new(pairs(MAX_EVENT_TIME_MS + 2), &["at"]).unwrap().time("at").is_err());
    }
}
