//! A walker over one TOML table that knows its dotted path.
//!
//! Keys are *taken* out of the table as they are read; whatever is left when
//! the section is finished is an unknown key, reported with its full dotted
//! path (`source.colour`). This is why a config file is read through
//! `toml::Table` and not `#[derive(Deserialize)]`: serde's
//! `deny_unknown_fields` names the field but not where it sits.

use toml::{Table, Value};

use super::duration::{duration_from_int, parse_duration};
use super::error::KeyError;

/// A duration read from the file, with its spelling kept for messages.
#[derive(Clone, Debug)]
pub(crate) struct Spelled {
    pub ms: u64,
    /// `"90s"` (quoted) for a string, `90000` for an integer.
    pub text: String,
}

impl Spelled {
    pub fn default_ms(ms: u64) -> Spelled {
        Spelled { ms, text: format!("{:?}", super::duration::format_duration(ms)) }
    }

    /// Reads a duration from a string or integer value.
    pub fn from_value(value: &Value) -> Result<Spelled, String> {
        let ms = match value {
            Value::String(text) => parse_duration(text)?,
            Value::Integer(ms) => duration_from_int(*ms)?,
            other => return Err(format!("expected a duration such as \"5s\" or integer milliseconds, found {}", other.type_str())),
        };
        Ok(Spelled { ms, text: spell(value) })
    }
}

/// A value as the file spells it, for use inside a reason.
pub(crate) fn spell(value: &Value) -> String {
    match value {
        Value::String(text) => format!("{text:?}"),
        other => other.to_string(),
    }
}

/// One table of a config file and its dotted path.
pub(crate) struct Section {
    path: String,
    table: Table,
}

impl Section {
    pub fn root(table: Table) -> Section {
        Section { path: String::new(), table }
    }

    /// The dotted path of `key` in this section.
    pub fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub fn error(&self, key: &str, reason: impl Into<String>) -> KeyError {
        KeyError::new(self.key(key), reason)
    }

    pub fn take(&mut self, key: &str) -> Option<Value> {
        self.table.remove(key)
    }

    /// The sub-table `key`; an absent table reads as an empty one.
    pub fn section(&mut self, key: &str) -> Result<Section, KeyError> {
        let table = match self.take(key) {
            None => Table::new(),
            Some(Value::Table(table)) => table,
            Some(other) => return Err(self.wrong_type(key, "a table", &other)),
        };
        Ok(Section { path: self.key(key), table })
    }

    pub fn string(&mut self, key: &str) -> Result<Option<String>, KeyError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => Err(self.wrong_type(key, "a string", &other)),
        }
    }

    /// Takes `key` if its value is the string `word` (e.g. `"off"` where a
    /// duration is expected), and says whether it was.
    pub fn take_word(&mut self, key: &str, word: &str) -> bool {
        let is_word = matches!(self.table.get(key), Some(Value::String(text)) if text == word);
        if is_word {
            self.table.remove(key);
        }
        is_word
    }

    pub fn integer(&mut self, key: &str) -> Result<Option<i64>, KeyError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Integer(n)) => Ok(Some(n)),
            Some(other) => Err(self.wrong_type(key, "an integer", &other)),
        }
    }

    pub fn duration(&mut self, key: &str) -> Result<Option<Spelled>, KeyError> {
        self.take(key).map(|value| Spelled::from_value(&value).map_err(|reason| self.error(key, reason))).transpose()
    }

    /// An array whose entries are each read by `entry`, which gets the
    /// value and its 1-based position.
    pub fn array<T>(&mut self, key: &str, entry: impl Fn(&Value, usize) -> Result<T, String>) -> Result<Option<Vec<T>>, KeyError> {
        let items = match self.take(key) {
            None => return Ok(None),
            Some(Value::Array(items)) => items,
            Some(other) => return Err(self.wrong_type(key, "an array", &other)),
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| entry(item, i + 1).map_err(|reason| self.error(key, reason)))
            .collect::<Result<Vec<T>, KeyError>>()
            .map(Some)
    }

    /// Checks that every key was taken: any key left is unknown.
    pub fn finish(&self) -> Result<(), KeyError> {
        match self.table.keys().next() {
            Some(key) => Err(self.error(key, "unknown key")),
            None => Ok(()),
        }
    }

    fn wrong_type(&self, key: &str, expected: &str, found: &Value) -> KeyError {
        self.error(key, format!("expected {expected}, found {}", found.type_str()))
    }
}

/// A string entry of an array, for [`Section::array`].
pub(crate) fn string_entry(value: &Value, position: usize) -> Result<String, String> {
    match value {
        Value::String(text) => Ok(text.clone()),
        other => Err(format!("entry {position}: expected a string, found {}", other.type_str())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelled_values_echo_the_file() {
        assert_eq!(spell(&Value::String("90s".into())), "\"90s\"");
        assert_eq!(spell(&Value::Integer(90_000)), "90000");
        assert_eq!(Spelled::default_ms(60_000).text, "\"1m\"");
    }

    #[test]
    fn leftover_keys_are_unknown_with_their_dotted_path() {
        let table: Table = toml::from_str("[a]\nb = 1\nc = 2").expect("valid toml");
        let mut root = Section::root(table);
        let mut a = root.section("a").expect("a table");
        assert_eq!(a.integer("b"), Ok(Some(1)));
        assert_eq!(a.finish(), Err(KeyError::new("a.c", "unknown key")));
        assert_eq!(root.finish(), Ok(()));
    }
}
