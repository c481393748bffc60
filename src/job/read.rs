//! From a TOML table to a checked [`Job`], one section at a time.
//!
//! Each `read_*` function takes every key of its section, reports the first
//! unknown key, then checks values and their relations. Unknown keys come
//! first because a misspelt key often explains a surprising default.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::{
    Job, LatePolicy, SinkSpec, SourceSpec, DEFAULT_KAFKA_BROKERS, DEFAULT_KAFKA_TOPIC, EARLY_RESULTS_OFF, MAX_LATENESS_MS, MAX_PARTITIONS,
    MAX_WINDOW_MS, MIN_EARLY_RESULTS_MS, MIN_EPOCH_MS,
};
use crate::config::error::{one_line, KeyError};
use crate::config::format_duration;
use crate::config::section::{string_entry, Section, Spelled};
use crate::dataflow::dedup::{MAX_DEDUP_HORIZON_MS, MIN_DEDUP_HORIZON_MS};
use crate::event::{KeyType, MINUTE_MS};
use crate::sources::generator::GeneratorConfig;
use crate::store::cassandra::{self, config::MAX_REPLICATION_FACTOR, CassandraConfig};

/// Longest job name, in bytes.
const MAX_NAME_BYTES: usize = 64;

/// Reads a whole job file.
pub(super) fn job(table: Table, file: &Path) -> Result<Job, KeyError> {
    let defaults = Job::defaults(file);
    let base = file.parent().unwrap_or(Path::new(""));
    let mut root = Section::root(table);
    let name = root.string("name")?;
    let source = root.section("source")?;
    let time = root.section("time")?;
    let dedup = root.section("dedup")?;
    let windows = root.section("windows")?;
    let aggregate = root.section("aggregate")?;
    let late = root.section("late")?;
    let sink = root.section("sink")?;
    let catalog = root.section("catalog")?;
    let retention = root.section("retention")?;
    root.finish()?;

    let name = read_name(name, defaults.name.clone())?;
    let (source, partitions) = read_source(source, base, defaults.partitions)?;
    let time = read_time(time, &defaults)?;
    let dedup_horizon_ms = read_dedup(dedup, &defaults)?;
    let (windows_ms, early_results_ms) = read_windows(windows, &defaults)?;
    let (group_by, distinct_users) = read_aggregate(aggregate)?;
    let late = read_late(late, &time)?;
    let sink = read_sink(sink, base)?;
    let catalog = read_catalog(catalog, base)?;
    let (log_retention_ms, rows_retention_ms) = read_retention(retention, &defaults, dedup_horizon_ms)?;
    Ok(Job {
        name,
        file: file.to_path_buf(),
        source,
        partitions,
        epoch_ms: time.epoch.ms,
        slack_ms: time.slack.ms,
        allowed_lateness_ms: time.allowed_lateness.ms,
        dedup_horizon_ms,
        windows_ms,
        early_results_ms,
        group_by,
        distinct_users,
        late,
        sink,
        catalog,
        log_retention_ms,
        rows_retention_ms,
    })
}

/// The name a job gets when the file does not set one: the file's stem.
pub(super) fn default_name(file: &Path) -> String {
    file.file_stem().map_or_else(|| "job".to_string(), |stem| stem.to_string_lossy().into_owned())
}

fn read_name(name: Option<String>, default: String) -> Result<String, KeyError> {
    let (name, origin) = match name {
        Some(name) => (name, ""),
        None => (default, " (taken from the file name; set name = \"…\")"),
    };
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_NAME_BYTES || !name.chars().all(valid_char) {
        return Err(KeyError::new("name", format!("name {name:?}{origin} must be 1–{MAX_NAME_BYTES} bytes of [A-Za-z0-9._-]")));
    }
    Ok(name)
}

fn read_source(mut s: Section, base: &Path, default_partitions: u32) -> Result<(SourceSpec, u32), KeyError> {
    let kind = s.string("kind")?;
    let partitions = s.integer("partitions")?;
    let path = s.string("path")?;
    let dir = s.string("dir")?;
    let brokers = s.string("brokers")?;
    let topic = s.string("topic")?;
    let generator = s.take("generator");
    s.finish()?;

    let partitions = match partitions {
        None => default_partitions,
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|n| (1..=MAX_PARTITIONS).contains(n))
            .ok_or_else(|| s.error("partitions", format!("{n} is out of range 1..={MAX_PARTITIONS}")))?,
    };
    let kind = kind.as_deref().unwrap_or("file");
    let only_with = |key: &str, present: bool, wanted: &str| match present {
        true => Err(s.error(key, format!("only valid with kind = {wanted:?} (this source is kind = {kind:?})"))),
        false => Ok(()),
    };
    if kind != "kafka" {
        only_with("brokers", brokers.is_some(), "kafka")?;
        only_with("topic", topic.is_some(), "kafka")?;
    }
    let source = match kind {
        "file" => {
            only_with("dir", dir.is_some(), "log")?;
            only_with("generator", generator.is_some(), "generator")?;
            SourceSpec::File { path: resolve(&s, "path", path, base)? }
        }
        "generator" => {
            only_with("path", path.is_some(), "file")?;
            only_with("dir", dir.is_some(), "log")?;
            SourceSpec::Generator(read_generator(&s, generator, partitions)?)
        }
        "log" => {
            only_with("path", path.is_some(), "file")?;
            only_with("generator", generator.is_some(), "generator")?;
            SourceSpec::Log { dir: resolve(&s, "dir", dir, base)? }
        }
        "kafka" => {
            only_with("path", path.is_some(), "file")?;
            only_with("dir", dir.is_some(), "log")?;
            only_with("generator", generator.is_some(), "generator")?;
            let brokers = brokers.unwrap_or_else(|| DEFAULT_KAFKA_BROKERS.to_owned());
            let topic = topic.unwrap_or_else(|| DEFAULT_KAFKA_TOPIC.to_owned());
            check_brokers(&brokers).map_err(|reason| s.error("brokers", reason))?;
            check_topic(&topic).map_err(|reason| s.error("topic", reason))?;
            SourceSpec::Kafka { brokers, topic }
        }
        other => return Err(s.error("kind", format!("{other:?} is not one of file | generator | log | kafka"))),
    };
    Ok((source, partitions))
}

/// Bootstrap servers: `host:port` items separated by commas.
pub fn check_brokers(brokers: &str) -> Result<(), String> {
    let valid = |item: &str| match item.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    };
    if brokers.split(',').all(|item| valid(item.trim())) {
        Ok(())
    } else {
        Err(format!("{brokers:?} is not a list of host:port separated by commas"))
    }
}

/// Kafka's own topic name rules: 1–249 of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn check_topic(topic: &str) -> Result<(), String> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if topic.is_empty() || topic.len() > 249 || !topic.chars().all(valid_char) || topic == "." || topic == ".." {
        return Err(format!("{topic:?} is not a Kafka topic name (1–249 of [A-Za-z0-9._-])"));
    }
    Ok(())
}

/// Reads `[source.generator]` into a [`GeneratorConfig`].
///
/// The struct is the schema: each key is first deserialized on its own, so
/// an unknown or mistyped key is reported under its own dotted name rather
/// than as serde's message about the whole table. `partitions` follows
/// `source.partitions` unless set, and then must agree with it.
fn read_generator(source: &Section, value: Option<Value>, partitions: u32) -> Result<GeneratorConfig, KeyError> {
    let prefix = source.key("generator");
    let table = match value {
        None => Table::new(),
        Some(Value::Table(table)) => table,
        Some(other) => return Err(source.error("generator", format!("expected a table, found {}", other.type_str()))),
    };
    for (key, value) in &table {
        if let Err(reason) = generator_key(key, value) {
            return Err(KeyError::new(format!("{prefix}.{key}"), reason));
        }
    }
    let inherits_partitions = !table.contains_key("partitions");
    let mut config: GeneratorConfig =
        Value::Table(table).try_into().map_err(|err: toml::de::Error| KeyError::new(prefix.as_str(), one_line(err.message())))?;
    if inherits_partitions {
        config.partitions = partitions;
    } else if config.partitions != partitions {
        return Err(KeyError::new(
            format!("{prefix}.partitions"),
            format!("{} differs from source.partitions ({partitions}); leave it out to follow source.partitions", config.partitions),
        ));
    }
    config.validate().map_err(|reason: String| generator_error(&prefix, &reason))?;
    Ok(config)
}

/// Checks one generator key alone; the error is a reason.
fn generator_key(key: &str, value: &Value) -> Result<(), String> {
    let single = Table::from_iter([(key.to_string(), value.clone())]);
    match Value::Table(single).try_into::<GeneratorConfig>() {
        Ok(_) => Ok(()),
        Err(err) if err.message().starts_with("unknown field") => Err("unknown key".to_string()),
        Err(err) => Err(one_line(err.message())),
    }
}

/// Places a `GeneratorConfig::validate` message under the key of the field
/// it starts with (`"viral_share: …"` → `source.generator.viral_share`), or
/// under `source.generator` when it starts with no field name.
fn generator_error(prefix: &str, reason: &str) -> KeyError {
    let field_end = reason.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(reason.len());
    let (field, rest) = reason.split_at(field_end);
    let is_field =
        !field.is_empty() && generator_key(field, &Value::Boolean(false)).map_or_else(|reason| reason != "unknown key", |()| true);
    match (is_field, rest.strip_prefix(':')) {
        (true, Some(rest)) => KeyError::new(format!("{prefix}.{field}"), rest.trim()),
        (true, None) => KeyError::new(format!("{prefix}.{field}"), reason),
        (false, _) => KeyError::new(prefix, reason),
    }
}

/// `[time]`, kept spelled for the messages of `[late]`.
struct Time {
    epoch: Spelled,
    slack: Spelled,
    allowed_lateness: Spelled,
}

fn read_time(mut s: Section, defaults: &Job) -> Result<Time, KeyError> {
    let epoch = s.duration("epoch")?;
    let slack = s.duration("watermark_slack")?;
    let allowed_lateness = s.duration("allowed_lateness")?;
    s.finish()?;

    let epoch = epoch.unwrap_or_else(|| Spelled::default_ms(defaults.epoch_ms));
    let slack = slack.unwrap_or_else(|| Spelled::default_ms(defaults.slack_ms));
    let allowed_lateness = allowed_lateness.unwrap_or_else(|| Spelled::default_ms(defaults.allowed_lateness_ms));
    if epoch.ms < MIN_EPOCH_MS {
        return Err(s.error("epoch", format!("epoch {} is below the minimum of {MIN_EPOCH_MS}ms", epoch.text)));
    }
    if !MINUTE_MS.is_multiple_of(epoch.ms) {
        return Err(s.error("epoch", format!("epoch {} does not divide 1m (every window must end on an epoch boundary)", epoch.text)));
    }
    if !allowed_lateness.ms.is_multiple_of(epoch.ms) {
        return Err(s.error("allowed_lateness", not_whole_epochs(&allowed_lateness, epoch.ms)));
    }
    for (key, value) in [("watermark_slack", &slack), ("allowed_lateness", &allowed_lateness)] {
        if value.ms > MAX_LATENESS_MS {
            return Err(s.error(key, format!("{key} {} is longer than {}", value.text, format_duration(MAX_LATENESS_MS))));
        }
    }
    Ok(Time { epoch, slack, allowed_lateness })
}

fn not_whole_epochs(value: &Spelled, epoch_ms: u64) -> String {
    format!("{} is not a multiple of the epoch ({})", value.text, format_duration(epoch_ms))
}

fn read_dedup(mut s: Section, defaults: &Job) -> Result<u64, KeyError> {
    let horizon = s.duration("horizon")?;
    s.finish()?;
    let horizon = horizon.unwrap_or_else(|| Spelled::default_ms(defaults.dedup_horizon_ms));
    if horizon.ms < MIN_DEDUP_HORIZON_MS {
        return Err(s.error("horizon", format!("horizon {} is shorter than {}", horizon.text, format_duration(MIN_DEDUP_HORIZON_MS))));
    }
    if horizon.ms > MAX_DEDUP_HORIZON_MS {
        return Err(s.error("horizon", format!("horizon {} is longer than {}", horizon.text, format_duration(MAX_DEDUP_HORIZON_MS))));
    }
    Ok(horizon.ms)
}

/// `dedup_horizon_ms` is the job's own `dedup.horizon`.
fn read_retention(mut s: Section, defaults: &Job, dedup_horizon_ms: u64) -> Result<(u64, u64), KeyError> {
    let log = s.duration("log")?;
    let rows = s.duration("rows")?;
    s.finish()?;
    let log = log.unwrap_or_else(|| Spelled::default_ms(defaults.log_retention_ms));
    let rows = rows.unwrap_or_else(|| Spelled::default_ms(defaults.rows_retention_ms));
    if log.ms < dedup_horizon_ms {
        let horizon = format_duration(dedup_horizon_ms);
        return Err(
            s.error("log", format!("{} is shorter than the dedup horizon ({horizon}): recovery re-reads that much of the log", log.text))
        );
    }
    if rows.ms == 0 {
        return Err(s.error("rows", format!("{} keeps no rows", rows.text)));
    }
    Ok((log.ms, rows.ms))
}

fn read_windows(mut s: Section, defaults: &Job) -> Result<(Vec<u64>, Option<u64>), KeyError> {
    let sizes = s.array("sizes", |value, position| {
        Spelled::from_value(value).map_err(|reason| match value {
            Value::String(_) | Value::Integer(_) => reason,
            _ => format!("entry {position}: {reason}"),
        })
    })?;
    // `"off"`: no partial rows; absent: the default.
    let early = if s.take_word("early_results", EARLY_RESULTS_OFF) { None } else { Some(s.duration("early_results")?) };
    s.finish()?;

    let windows_ms = match sizes {
        None => defaults.windows_ms.clone(),
        Some(sizes) => check_windows(&sizes).map_err(|reason| s.error("sizes", reason))?,
    };
    let Some(early) = early else { return Ok((windows_ms, None)) };
    let Some(early) = early.or_else(|| defaults.early_results_ms.map(Spelled::default_ms)) else { return Ok((windows_ms, None)) };
    if early.ms < MIN_EARLY_RESULTS_MS {
        return Err(s.error("early_results", format!("{} is shorter than {}", early.text, format_duration(MIN_EARLY_RESULTS_MS))));
    }
    Ok((windows_ms, Some(early.ms)))
}

/// Every window is a whole number of 1m windows, at most a day, listed
/// once; 1m itself is among them. Returns them sorted.
fn check_windows(sizes: &[Spelled]) -> Result<Vec<u64>, String> {
    let mut windows_ms: Vec<u64> = Vec::with_capacity(sizes.len());
    for size in sizes {
        if size.ms == 0 {
            return Err(format!("window {} must be positive", size.text));
        }
        if !size.ms.is_multiple_of(MINUTE_MS) {
            return Err(format!("window {} is not a multiple of 1m", size.text));
        }
        if size.ms > MAX_WINDOW_MS {
            return Err(format!("window {} is longer than {}", size.text, format_duration(MAX_WINDOW_MS)));
        }
        if windows_ms.contains(&size.ms) {
            return Err(format!("window {} is listed twice (as {})", size.text, format_duration(size.ms)));
        }
        windows_ms.push(size.ms);
    }
    if !windows_ms.contains(&MINUTE_MS) {
        return Err("windows must include \"1m\" (every window is built from 1m windows)".into());
    }
    windows_ms.sort_unstable();
    Ok(windows_ms)
}

fn read_aggregate(mut s: Section) -> Result<(Vec<KeyType>, bool), KeyError> {
    let group_by = s.array("group_by", string_entry)?;
    let measures = s.array("measures", string_entry)?;
    s.finish()?;

    let group_by = match group_by {
        None => vec![KeyType::Ad, KeyType::Campaign, KeyType::Advertiser],
        Some(names) => check_group_by(&names).map_err(|reason| s.error("group_by", reason))?,
    };
    let distinct_users = match measures {
        None => true,
        Some(names) => check_measures(&names).map_err(|reason| s.error("measures", reason))?,
    };
    Ok((group_by, distinct_users))
}

fn check_group_by(names: &[String]) -> Result<Vec<KeyType>, String> {
    if names.is_empty() {
        return Err("must list at least one of ad | campaign | advertiser".into());
    }
    let mut keys = Vec::with_capacity(names.len());
    for name in names {
        let key = match name.as_str() {
            "ad" => KeyType::Ad,
            "campaign" => KeyType::Campaign,
            "advertiser" => KeyType::Advertiser,
            other => return Err(format!("{other:?} is not one of ad | campaign | advertiser")),
        };
        if keys.contains(&key) {
            return Err(format!("{name:?} is listed twice"));
        }
        keys.push(key);
    }
    Ok(keys)
}

/// Returns whether `distinct_users` is measured.
fn check_measures(names: &[String]) -> Result<bool, String> {
    let mut seen: Vec<&str> = Vec::with_capacity(names.len());
    for name in names {
        if !matches!(name.as_str(), "clicks" | "distinct_users") {
            return Err(format!("{name:?} is not one of clicks | distinct_users"));
        }
        if seen.contains(&name.as_str()) {
            return Err(format!("{name:?} is listed twice"));
        }
        seen.push(name);
    }
    if !seen.contains(&"clicks") {
        return Err("must include \"clicks\" (it is always counted)".into());
    }
    Ok(seen.contains(&"distinct_users"))
}

fn read_late(mut s: Section, time: &Time) -> Result<LatePolicy, KeyError> {
    let policy = s.string("policy")?;
    let within = s.duration("restate_within")?;
    s.finish()?;

    match policy.as_deref().unwrap_or("restate") {
        "restate" => {
            let within = within.unwrap_or_else(|| Spelled::default_ms(super::DEFAULT_RESTATE_WITHIN_MS));
            if within.ms <= time.allowed_lateness.ms {
                return Err(s.error(
                    "restate_within",
                    format!("{} must be longer than time.allowed_lateness ({})", within.text, format_duration(time.allowed_lateness.ms)),
                ));
            }
            if !within.ms.is_multiple_of(time.epoch.ms) {
                return Err(s.error("restate_within", not_whole_epochs(&within, time.epoch.ms)));
            }
            if within.ms > MAX_LATENESS_MS {
                return Err(s.error(
                    "restate_within",
                    format!("restate_within {} is longer than {}", within.text, format_duration(MAX_LATENESS_MS)),
                ));
            }
            Ok(LatePolicy::Restate { within_ms: within.ms })
        }
        "hold" => match within {
            Some(_) => Err(s.error("restate_within", "only valid with policy = \"restate\" (this job's policy is \"hold\")")),
            None => Ok(LatePolicy::Hold),
        },
        other => Err(s.error("policy", format!("{other:?} is not one of restate | hold"))),
    }
}

fn read_sink(mut s: Section, base: &Path) -> Result<SinkSpec, KeyError> {
    let kind = s.string("kind")?;
    let path = s.string("path")?;
    let cassandra = CassandraKeys {
        hosts: s.string("hosts")?,
        keyspace: s.string("keyspace")?,
        replication_factor: s.integer("replication_factor")?,
        consistency: s.string("consistency")?,
        serial_consistency: s.string("serial_consistency")?,
    };
    s.finish()?;

    let kind = kind.as_deref().unwrap_or("file");
    if kind != "cassandra" {
        if let Some(key) = cassandra.given() {
            return Err(s.error(key, format!("only valid with kind = \"cassandra\" (this sink is kind = \"{kind}\")")));
        }
    }
    match kind {
        "file" => Ok(SinkSpec::File { path: resolve(&s, "path", path, base)? }),
        "memory" => match path {
            Some(_) => Err(s.error("path", "only valid with kind = \"file\" (this sink is kind = \"memory\")")),
            None => Ok(SinkSpec::Memory),
        },
        "store" => match path {
            Some(_) => Err(s.error("path", "only valid with kind = \"file\" (the store lives in the data directory)")),
            None => Ok(SinkSpec::Store),
        },
        "cassandra" => match path {
            Some(_) => Err(s.error("path", "only valid with kind = \"file\" (this sink is kind = \"cassandra\")")),
            None => Ok(SinkSpec::Cassandra(cassandra.read(&s)?)),
        },
        other => Err(s.error("kind", format!("{other:?} is not one of file | memory | store | cassandra"))),
    }
}

/// The keys of a Cassandra sink, as given.
struct CassandraKeys {
    hosts: Option<String>,
    keyspace: Option<String>,
    replication_factor: Option<i64>,
    consistency: Option<String>,
    serial_consistency: Option<String>,
}

impl CassandraKeys {
    /// The first key given, if any.
    fn given(&self) -> Option<&'static str> {
        [
            ("hosts", self.hosts.is_some()),
            ("keyspace", self.keyspace.is_some()),
            ("replication_factor", self.replication_factor.is_some()),
            ("consistency", self.consistency.is_some()),
            ("serial_consistency", self.serial_consistency.is_some()),
        ]
        .into_iter()
        .find_map(|(key, given)| given.then_some(key))
    }

    fn read(self, s: &Section) -> Result<CassandraConfig, KeyError> {
        let defaults = CassandraConfig::default();
        let hosts = match self.hosts {
            Some(text) => cassandra::config::parse_hosts(&text).map_err(|reason| s.error("hosts", reason))?,
            None => defaults.hosts,
        };
        let keyspace = self.keyspace.unwrap_or(defaults.keyspace);
        cassandra::config::check_keyspace(&keyspace).map_err(|reason| s.error("keyspace", reason))?;
        let replication_factor = match self.replication_factor {
            Some(n) if (1..=i64::from(MAX_REPLICATION_FACTOR)).contains(&n) => n as u32,
            Some(n) => return Err(s.error("replication_factor", format!("{n} is not in 1..={MAX_REPLICATION_FACTOR}"))),
            None => defaults.replication_factor,
        };
        let consistency = match self.consistency {
            Some(text) => text.parse().map_err(|reason| s.error("consistency", reason))?,
            None => defaults.consistency,
        };
        let serial_consistency = match self.serial_consistency {
            Some(text) => text.parse().map_err(|reason| s.error("serial_consistency", reason))?,
            None => defaults.serial_consistency,
        };
        Ok(CassandraConfig { hosts, keyspace, replication_factor, consistency, serial_consistency })
    }
}

fn read_catalog(mut s: Section, base: &Path) -> Result<Option<PathBuf>, KeyError> {
    let path = s.string("path")?;
    s.finish()?;
    resolve(&s, "path", path, base)
}

/// A path from the job file, relative to the job file's directory.
fn resolve(s: &Section, key: &str, path: Option<String>, base: &Path) -> Result<Option<PathBuf>, KeyError> {
    match path {
        None => Ok(None),
        Some(path) if path.is_empty() => Err(s.error(key, "empty path")),
        Some(path) => Ok(Some(base.join(path))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_messages_land_on_their_field() {
        let err = generator_error("source.generator", "viral_share: 2 is not in 0..=1");
        assert_eq!(err.key, "source.generator.viral_share");
        assert_eq!(err.reason, "2 is not in 0..=1");
        let err = generator_error("source.generator", "idle_partitions must be < partitions");
        assert_eq!(err.key, "source.generator.idle_partitions");
        assert_eq!(err.reason, "idle_partitions must be < partitions");
        let err = generator_error("source.generator", "must produce a click");
        assert_eq!(err.key, "source.generator");
    }
}
