//! The TOML reader that job files and the ingest config share.
//!
//! A config file is read through `toml::Table`, one [`section::Section`] at
//! a time: every key is taken out as it is read, whatever is left is an
//! unknown key, and every refusal is a one-line [`ConfigError`] naming the
//! file, the dotted key and the reason. Durations are spelled one way in
//! both files ([`parse_duration`]) and echoed back in messages the same way
//! ([`format_duration`]). What the keys mean is up to the reader of each
//! file: `job` for job files, `ingest::config` for the ingest service.

mod duration;
pub(crate) mod error;
pub(crate) mod section;

use std::path::Path;

pub use duration::{format_duration, parse_duration};
pub use error::{ConfigError, CONFIG_ERROR_EXIT_CODE};

/// The text of the config file at `path`.
pub(crate) fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: path.to_path_buf(), source })
}

/// Config text parsed as TOML, as if read from `file` (for messages).
pub(crate) fn parse_table(text: &str, file: &Path) -> Result<toml::Table, ConfigError> {
    toml::from_str(text).map_err(|err| ConfigError::syntax(file.to_path_buf(), text, &err))
}
