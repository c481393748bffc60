//! Helpers shared by the benchmark programs: flags, `/proc` figures,
//! summary statistics, and the `tally` binary they run.

#![allow(dead_code)]

pub mod http_load;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// Clock ticks per second of `/proc` CPU times (`getconf CLK_TCK`; 100 on
/// every Linux this runs on).
pub const CLOCK_TICKS_PER_S: u64 = 100;

/// A numeric flag value; `_` separators allowed.
pub fn number(flag: &str, value: Option<String>) -> Result<u64, String> {
    let value = value.ok_or_else(|| format!("{flag}: missing value"))?;
    value.replace('_', "").parse().map_err(|_| format!("{flag}: not a number: {value:?}"))
}

/// `value` of `flag` if it is in `1..=max`, else the error that says so.
pub fn at_most<T: PartialOrd + From<u8> + std::fmt::Display>(flag: &str, value: T, max: T) -> Result<T, String> {
    match value >= T::from(1) && value <= max {
        true => Ok(value),
        false => Err(format!("{flag}: must be in 1..={max}, got {value}")),
    }
}

/// User + system CPU time of a process or thread (`/proc/…/stat` fields 14
/// and 15); zero if unreadable. A process's figure includes its exited threads.
pub fn cpu_time(stat_path: &str) -> Duration {
    let ticks = std::fs::read_to_string(stat_path).ok().and_then(|stat| {
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
        Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
    });
    Duration::from_millis(ticks.unwrap_or(0) * 1_000 / CLOCK_TICKS_PER_S)
}

/// Peak resident set (`VmHWM`) from a `/proc/…/status` file, in KiB.
pub fn peak_rss_kb(status_path: &str) -> Option<u64> {
    let status = std::fs::read_to_string(status_path).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

pub fn min_max(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

/// `1.23M`, `45.6k` or `789`.
pub fn human(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

/// CPU time the machine's processes used since boot (`/proc/stat`, all
/// cores): user, nice, system, irq and softirq; not idle, iowait or steal.
pub fn machine_busy() -> Duration {
    const BUSY_FIELDS: [usize; 5] = [0, 1, 2, 5, 6];
    let ticks = std::fs::read_to_string("/proc/stat").ok().and_then(|stat| {
        let line = stat.lines().next()?.strip_prefix("cpu ")?;
        let fields: Vec<u64> = line.split_whitespace().filter_map(|f| f.parse().ok()).collect();
        BUSY_FIELDS.iter().map(|&i| fields.get(i).copied()).sum::<Option<u64>>()
    });
    Duration::from_millis(ticks.unwrap_or(0) * 1_000 / CLOCK_TICKS_PER_S)
}

/// The `q` quantile (0..=1) of sorted values, nearest rank; 0 if empty.
pub fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// The `tally` binary next to this bench's build, built first if missing.
pub fn tally_binary() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let bin = target.join("release").join("tally");
    if !bin.is_file() {
        eprintln!("bench: building {} ...", bin.display());
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--release", "--bin", "tally"])
            .current_dir(root)
            .status()
            .map_err(|e| format!("cargo build: {e}"))?;
        if !status.success() || !bin.is_file() {
            return Err(format!("cargo build --release --bin tally failed ({status})"));
        }
    }
    if let (Ok(built), Some(newest)) = (std::fs::metadata(&bin).and_then(|m| m.modified()), newest_source(&root.join("src"))) {
        if newest > built {
            eprintln!("bench: warning: {} is older than src/; `cargo build --release --bins` measures the current code", bin.display());
        }
    }
    Ok(bin)
}

/// The newest modification time of any file under `dir`.
pub fn newest_source(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let modified = if entry.path().is_dir() { newest_source(&entry.path()) } else { entry.metadata().and_then(|m| m.modified()).ok() };
        newest = newest.max(modified);
    }
    newest
}
