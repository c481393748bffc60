//! How far a long command is, on stderr: `tally run` of a file or a
//! bounded range of a log, `tally backfill`, `tally log import`, `tally
//! verify` and `tally export` can take minutes, and an operator wants to
//! know whether to wait.
//!
//! - On a terminal ([`Style::Bar`]): an `indicatif` bar redrawn in place,
//!   with the share done, the count, its rate and the ETA; a spinner with
//!   the count and rate when the whole is not known (an import from stdin).
//!   It is cleared when the work ends, before the command prints its
//!   summary, and lifted while a log event is written.
//! - Elsewhere ([`Style::Lines`]: a pipe, a file, a service manager): a
//!   plain line every [`LINE_EVERY`] and one last line when the work is
//!   done, e.g. `import: 1,200,000 clicks, 410,000 clicks/s, 45% (ETA 6 s)`.
//!   The lines are info events of the log ([`super::log`]), so they follow
//!   `--log-format` and `--log-level`.
//!
//! The work only bumps counters it keeps anyway (atomics); a thread of its
//! own reads them every [`POLL_EVERY`], so showing progress never slows the
//! hot path.

use std::io::IsTerminal;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often a progress line is written when stderr is not a terminal.
pub const LINE_EVERY: Duration = Duration::from_secs(5);
/// How often the counters are read and a bar redrawn.
pub const POLL_EVERY: Duration = Duration::from_millis(200);
/// The bar's layout: label, bar, share, count and rate (the message), ETA.
const BAR_TEMPLATE: &str = "{prefix} [{bar:30}] {percent:>3}%  {msg}  ETA {eta}";
/// The spinner's layout, when the whole is not known.
const SPINNER_TEMPLATE: &str = "{spinner} {prefix}  {msg}";

/// How progress is shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Style {
    /// A bar (or spinner) redrawn in place: stderr is a terminal.
    Bar,
    /// A plain line every [`LINE_EVERY`] and one at the end.
    Lines,
    /// Nothing.
    #[default]
    Off,
}

impl Style {
    /// A bar on a terminal, lines otherwise.
    pub fn for_stderr() -> Style {
        if std::io::stderr().is_terminal() {
            Style::Bar
        } else {
            Style::Lines
        }
    }
}

/// Whether a command shows progress, and the name its lines start with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgressOptions {
    pub style: Style,
    /// `run`, `import`, `backfill v2`, …
    pub label: String,
}

impl ProgressOptions {
    /// Progress as suits stderr ([`Style::for_stderr`]), under `label`.
    pub fn for_stderr(label: impl Into<String>) -> ProgressOptions {
        ProgressOptions { style: Style::for_stderr(), label: label.into() }
    }
}

/// What is counted, and how much there is when that is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Work {
    /// The counted items, plural: `clicks`, `rows`.
    pub unit: &'static str,
    /// The whole, in the units of [`Amount::done`].
    pub total: Option<u64>,
}

/// How far the work is: `items` counted so far, and `done` of the whole
/// (the same items, or e.g. the bytes read of an input file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Amount {
    pub items: u64,
    pub done: u64,
}

impl Amount {
    /// Items that are also the measure of the whole.
    pub fn items(items: u64) -> Amount {
        Amount { items, done: items }
    }
}

/// Runs `run`, showing its progress as `options` say, read by `read` on a
/// thread of its own. When `run` succeeds the last line is written (or the
/// bar cleared) before this returns; when it fails the bar is cleared and
/// no last line written, so the error stands alone.
pub fn show<T, E>(
    options: &ProgressOptions,
    work: Work,
    read: impl Fn() -> Amount + Sync,
    run: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    if options.style == Style::Off {
        return run();
    }
    let meter = Meter { label: &options.label, work, started: Instant::now() };
    std::thread::scope(|scope| {
        let (end, ended) = mpsc::channel();
        let read = &read;
        let meter = &meter;
        scope.spawn(move || match options.style {
            Style::Bar => meter.bar(read, &ended),
            _ => meter.lines(read, &ended),
        });
        let result = run();
        // The thread may be gone already only if it panicked, which the
        // scope passes on.
        let _ = end.send(result.is_ok());
        result
    })
}

/// The bar drawn now, lifted by [`suspended`].
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Runs `write` with the progress bar (if one is drawn) lifted off the
/// terminal, and draws it again after: for log events.
pub fn suspended<R>(write: impl FnOnce() -> R) -> R {
    let bar = BAR.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match bar {
        Some(bar) => bar.suspend(write),
        None => write(),
    }
}

/// One work's progress as it is shown.
struct Meter<'a> {
    label: &'a str,
    work: Work,
    started: Instant,
}

impl Meter<'_> {
    /// Redraws a bar until the work ends (`ended` says whether it succeeded).
    fn bar(&self, read: &dyn Fn() -> Amount, ended: &mpsc::Receiver<bool>) {
        let (bar, template) = match self.work.total {
            Some(total) => (ProgressBar::new(total), BAR_TEMPLATE),
            None => (ProgressBar::new_spinner(), SPINNER_TEMPLATE),
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("#>."));
        }
        bar.set_prefix(self.label.to_owned());
        *BAR.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
        while let Err(RecvTimeoutError::Timeout) = ended.recv_timeout(POLL_EVERY) {
            let amount = read();
            bar.set_position(amount.done);
            bar.set_message(self.count(amount));
            bar.tick();
        }
        *BAR.lock().unwrap_or_else(|e| e.into_inner()) = None;
        bar.finish_and_clear();
    }

    /// Writes a line every [`LINE_EVERY`] until the work ends, and a last
    /// one if it succeeded.
    fn lines(&self, read: &dyn Fn() -> Amount, ended: &mpsc::Receiver<bool>) {
        let mut last_line = Instant::now();
        let succeeded = loop {
            match ended.recv_timeout(POLL_EVERY) {
                Err(RecvTimeoutError::Timeout) if last_line.elapsed() >= LINE_EVERY => {
                    tracing::info!("{}", self.line(read(), self.started.elapsed(), false));
                    last_line = Instant::now();
                }
                Err(RecvTimeoutError::Timeout) => {}
                Ok(succeeded) => break succeeded,
                Err(RecvTimeoutError::Disconnected) => break false,
            }
        };
        if succeeded {
            tracing::info!("{}", self.line(read(), self.started.elapsed(), true));
        }
    }

    /// `1,200,000 clicks, 410,000 clicks/s`.
    fn count(&self, amount: Amount) -> String {
        let unit = self.work.unit;
        let rate = amount.items as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        format!("{} {unit}, {} {unit}/s", grouped(amount.items), grouped(rate.round() as u64))
    }

    /// `LABEL: 1,200,000 clicks, 410,000 clicks/s, 45% (ETA 6 s)`; once
    /// `finished`, `… 100% (done in 2.9 s)`.
    fn line(&self, amount: Amount, elapsed: Duration, finished: bool) -> String {
        let unit = self.work.unit;
        let rate = amount.items as f64 / elapsed.as_secs_f64().max(1e-3);
        let mut line = format!("{}: {} {unit}, {} {unit}/s", self.label, grouped(amount.items), grouped(rate.round() as u64));
        if let Some(total) = self.work.total.filter(|&total| total > 0) {
            let share = amount.done.min(total) as f64 / total as f64;
            line += &format!(", {:.0}%", (share * 100.0).floor());
            if let (false, Some(eta)) = (finished, eta(amount.done, total, elapsed)) {
                line += &format!(" (ETA {})", duration_text(eta));
            }
        }
        if finished {
            line += &format!(" (done in {:.1} s)", elapsed.as_secs_f64());
        }
        line
    }
}

/// The time left at the rate so far; `None` before anything is done.
fn eta(done: u64, total: u64, elapsed: Duration) -> Option<Duration> {
    (done > 0).then(|| elapsed.mul_f64(total.saturating_sub(done) as f64 / done as f64))
}

/// `6 s`, `3 min 20 s`, `2 h 5 min`.
fn duration_text(duration: Duration) -> String {
    let secs = duration.as_secs_f64().ceil() as u64;
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3_600 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{} h {} min", s / 3_600, s % 3_600 / 60),
    }
}

/// `1200000` as `1,200,000`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter(total: Option<u64>) -> Meter<'static> {
        Meter { label: "import", work: Work { unit: "clicks", total }, started: Instant::now() }
    }

    #[test]
    fn a_line_shows_the_count_its_rate_the_share_and_the_eta() {
        let amount = Amount { items: 1_200_000, done: 450 };
        let line = meter(Some(1_000)).line(amount, Duration::from_millis(2_926), false);
        assert_eq!(line, "import: 1,200,000 clicks, 410,116 clicks/s, 45% (ETA 4 s)");
        let last = meter(Some(1_000)).line(Amount { items: 1_200_000, done: 1_000 }, Duration::from_millis(2_926), true);
        assert_eq!(last, "import: 1,200,000 clicks, 410,116 clicks/s, 100% (done in 2.9 s)");
        let unknown = meter(None).line(Amount::items(7), Duration::from_secs(1), false);
        assert_eq!(unknown, "import: 7 clicks, 7 clicks/s");
    }

    #[test]
    fn nothing_done_has_no_eta_and_long_etas_read_in_minutes_and_hours() {
        assert_eq!(eta(0, 10, Duration::from_secs(3)), None);
        assert_eq!(duration_text(Duration::from_secs(200)), "3 min 20 s");
        assert_eq!(duration_text(Duration::from_secs(7_500)), "2 h 5 min");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(0), "0");
    }

    #[test]
    fn off_runs_the_work_and_shows_nothing() {
        let shown: Result<u8, ()> = show(&ProgressOptions::default(), Work { unit: "rows", total: Some(1) }, || Amount::items(1), || Ok(7));
        assert_eq!(shown, Ok(7));
    }
}
