//! tally's own log: what a process tells its operator while it runs
//! (start-up, epoch commits, warnings, errors), as `tracing` events written
//! to stderr, so that stdout stays the command's output and one filter
//! decides what is written.
//!
//! The filter is `--log-level` (error, warn, info, debug, trace; default
//! info) for tally's own events, with the libraries' at error; without
//! it, `RUST_LOG` as an `EnvFilter` directive (e.g. `tally=debug,scylla=warn`).
//!
//! Two forms, chosen by `--log-format`:
//! - `text`, for a person: the message, then the event's fields as
//!   `key=value`; a warning reads `warning: …`, an error `error: …`, a
//!   debug or trace event `debug: …` / `trace: …`, and an info event is the
//!   bare message, as tally's start-up lines have always read. No
//!   timestamp: a terminal needs none and a service manager adds its own.
//! - `json`, for a log pipeline: one object a line with `timestamp`,
//!   `level`, `target` and `fields` (holding `message`).
//!
//! Never logged, at any level: a user id, a request body, a client's
//! address. Ingest logs counts, status codes and field names, never a
//! value a request carried nor where it came from (`tests/logs.rs`).
//!
//! A progress bar on a terminal ([`super::progress`]) is lifted while an
//! event is written, so that a log line never lands inside the bar.

use std::fmt;
use std::io::{self, Write};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{EnvFilter, ParseError};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The environment variable read when `--log-level` is not given.
pub const RUST_LOG: &str = "RUST_LOG";

/// How events are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line an event.
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

/// The least severe events written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn directive(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Why the log could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("{RUST_LOG}: {0}")]
    Filter(#[from] ParseError),
    #[error("setting up the log: {0}")]
    Install(String),
}

/// Sends this process's events to stderr in `format`, filtered by `level`
/// (else `RUST_LOG`, else info). Once per process.
pub fn init(format: LogFormat, level: Option<LogLevel>) -> Result<(), LoggingError> {
    let filter = filter(level, std::env::var(RUST_LOG).ok().as_deref())?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(|| AboveProgress);
    let installed = match format {
        LogFormat::Text => builder.event_format(Text).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|e| LoggingError::Install(e.to_string()))
}

/// The level of the libraries' own events (the Cassandra driver, Kafka,
/// HTTP) under `--log-level` or the default: their chatter (e.g. the
/// driver's note that a Cassandra node sends no shard information) is not
/// the operator's; `RUST_LOG` can ask for it.
const LIBRARIES: &str = "error";

/// `--log-level` (for tally's own events) if given, else the `RUST_LOG`
/// directives if set, else info for tally's events.
fn filter(level: Option<LogLevel>, rust_log: Option<&str>) -> Result<EnvFilter, ParseError> {
    let own = |level: LogLevel| EnvFilter::try_new(format!("{LIBRARIES},tally={}", level.directive()));
    match (level, rust_log.map(str::trim)) {
        (Some(level), _) => own(level),
        (None, Some(directives)) if !directives.is_empty() => EnvFilter::try_new(directives),
        (None, _) => own(LogLevel::default()),
    }
}

/// The `text` form: a level prefix (none for info), the message, the fields.
struct Text;

impl<S, N> FormatEvent<S, N> for Text
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        writer.write_str(prefix(*event.metadata().level()))?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

fn prefix(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error: ",
        Level::WARN => "warning: ",
        Level::INFO => "",
        Level::DEBUG => "debug: ",
        _ => "trace: ",
    }
}

/// stderr, with the progress bar (if one is drawn) lifted while writing.
struct AboveProgress;

impl Write for AboveProgress {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        super::progress::suspended(|| io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_overrides_rust_log_which_overrides_the_default() {
        let shown = |level, rust_log| filter(level, rust_log).unwrap().to_string();
        assert_eq!(shown(Some(LogLevel::Debug), Some("tally=trace")), "tally=debug,error");
        assert_eq!(shown(None, Some("tally=trace,scylla=warn")), "scylla=warn,tally=trace");
        assert_eq!(shown(None, Some("  ")), "tally=info,error");
        assert_eq!(shown(None, None), "tally=info,error");
        assert!(filter(None, Some("tally=loud")).is_err());
    }

    #[test]
    fn text_prefixes_name_the_level_except_info() {
        assert_eq!(prefix(Level::WARN), "warning: ");
        assert_eq!(prefix(Level::ERROR), "error: ");
        assert_eq!(prefix(Level::INFO), "");
    }
}
