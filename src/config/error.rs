//! Why a config file (a job file, the ingest config) was refused, in one
//! line that names the file and the key.
//!
//! Every message has the shape `<file>: key '<dotted.key>': <reason>` (or
//! `<file>: line L, column C: …` for TOML syntax), so a user can jump straight
//! to the offending line and a script can grep for it.

use std::path::PathBuf;

/// Exit status of the CLI when a config file is refused (usage error).
pub const CONFIG_ERROR_EXIT_CODE: i32 = crate::exit::USAGE;

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{}: cannot read job file: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{}: line {line}, column {column}: {message}", file.display())]
    Syntax { file: PathBuf, line: usize, column: usize, message: String },
    /// A key is unknown, has the wrong type, or fails validation.
    #[error("{}: key '{key}': {reason}", file.display())]
    Key { file: PathBuf, key: String, reason: String },
}

impl ConfigError {
    /// The process exit status for this error: 2, as for any usage error.
    pub fn exit_code(&self) -> i32 {
        CONFIG_ERROR_EXIT_CODE
    }

    /// Builds a [`ConfigError::Syntax`] from the TOML parser's error, turning
    /// its byte span into a 1-based line and column and its message into one
    /// line.
    pub(crate) fn syntax(file: PathBuf, text: &str, err: &toml::de::Error) -> ConfigError {
        let mut offset = err.span().map_or(0, |span| span.start).min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        ConfigError::Syntax { file, line, column, message: one_line(err.message()) }
    }
}

/// Joins a possibly multi-line message into one line.
pub(crate) fn one_line(message: &str) -> String {
    let parts: Vec<&str> = message.lines().map(str::trim).filter(|part| !part.is_empty()).collect();
    parts.join("; ")
}

/// A key-level error before the file name is attached.
#[derive(Debug, PartialEq)]
pub(crate) struct KeyError {
    pub key: String,
    pub reason: String,
}

impl KeyError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> KeyError {
        KeyError { key: key.into(), reason: reason.into() }
    }

    pub fn in_file(self, file: PathBuf) -> ConfigError {
        ConfigError::Key { file, key: self.key, reason: self.reason }
    }
}
