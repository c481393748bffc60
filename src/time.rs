//! Times typed by users: unix milliseconds or RFC 3339 date-times.

/// Unix milliseconds, or an RFC 3339 date-time.
pub fn parse_time(text: &str) -> Result<u64, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|_| format!("{text:?} is too large"));
    }
    parse_rfc3339(text).ok_or_else(|| format!("{text:?} is neither unix milliseconds nor RFC 3339 (e.g. 2026-11-29T03:00:00Z)"))
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` at or after 1970, as unix ms.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = text.get(range)?;
        digits.bytes().all(|c| c.is_ascii_digit()).then(|| digits.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0i64;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded = format!("{:0<3}", &fraction[..digits.min(3)]);
        millis = padded.parse().ok()?;
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(rest.as_bytes()[0], b'+' | b'-') && rest.as_bytes()[3] == b':' => {
            let hours: i64 = rest[1..3].parse().ok()?;
            let minutes: i64 = rest[4..6].parse().ok()?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (hours * 60 + minutes)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    u64::try_from(seconds * 1_000 + millis).ok()
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of unix milliseconds.
pub fn format_rfc3339(ms: u64) -> String {
    let (days, in_day) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s, milli) = (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1_000 % 60, in_day % 1_000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// The proleptic Gregorian date of a day since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`), the inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatted_times_parse_back_to_themselves() {
        assert_eq!(format_rfc3339(1_764_385_200_250), "2025-11-29T03:00:00.250Z");
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000Z");
        for ms in [0, 1, 951_782_400_000, 1_709_164_800_000, 1_709_251_199_999, 4_102_444_800_000, 253_402_300_799_999] {
            assert_eq!(parse_time(&format_rfc3339(ms)), Ok(ms), "{ms}");
        }
    }

    #[test]
    fn times_parse_as_millis_or_rfc3339() {
        assert_eq!(parse_time("1764385200000"), Ok(1_764_385_200_000));
        // date -u -d 2025-11-29T03:00:00Z +%s → 1764385200
        assert_eq!(parse_time("2025-11-29T03:00:00Z"), Ok(1_764_385_200_000));
        assert_eq!(parse_time("2025-11-29T04:00:00.250+01:00"), Ok(1_764_385_200_250));
        assert_eq!(parse_time("2025-11-29T02:30:00.5-00:30"), Ok(1_764_385_200_500));
        assert_eq!(parse_time("2024-02-29T00:00:00Z"), Ok(1_709_164_800_000));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        for bad in ["", "yesterday", "2025-02-29T00:00:00Z", "2025-11-29T24:00:00Z", "2025-11-29T03:00:00", "1969-12-31T23:59:59Z", "-5"] {
            assert!(parse_time(bad).is_err(), "{bad:?}");
        }
    }
}
