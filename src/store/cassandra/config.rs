//! `[sink] kind = "cassandra"`: where the cluster is and how much of it
//! must answer.

use std::fmt;
use std::str::FromStr;

use scylla::statement::{Consistency, SerialConsistency};

/// Contact points of a job file that names none.
pub const DEFAULT_HOSTS: &str = "127.0.0.1:9042";
/// Keyspace of a job file that names none.
pub const DEFAULT_KEYSPACE: &str = "tally";
/// Replicas of a keyspace tally creates, when the job file says nothing:
/// one, for a single development node. A production cluster sets 3.
pub const DEFAULT_REPLICATION_FACTOR: u32 = 1;
/// Most replicas a keyspace may ask for.
pub const MAX_REPLICATION_FACTOR: u32 = 9;
/// Longest keyspace name Cassandra takes.
const MAX_KEYSPACE_BYTES: usize = 48;
/// Most contact points in `hosts`.
const MAX_HOSTS: usize = 64;

/// A Cassandra (or ScyllaDB) sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CassandraConfig {
    /// Contact points, `host:port`.
    pub hosts: Vec<String>,
    pub keyspace: String,
    /// Replicas per row when tally creates the keyspace (an existing
    /// keyspace keeps its own).
    pub replication_factor: u32,
    /// Reads and writes, and the commit phase of lightweight transactions.
    pub consistency: Level,
    /// The Paxos phase of lightweight transactions and the reads that
    /// decide an unknown outcome.
    pub serial_consistency: SerialLevel,
}

impl Default for CassandraConfig {
    fn default() -> Self {
        CassandraConfig {
            hosts: vec![DEFAULT_HOSTS.to_owned()],
            keyspace: DEFAULT_KEYSPACE.to_owned(),
            replication_factor: DEFAULT_REPLICATION_FACTOR,
            consistency: Level::Quorum,
            serial_consistency: SerialLevel::Serial,
        }
    }
}

impl CassandraConfig {
    /// `hosts` as the job file or `--cassandra` spell it: comma-separated
    /// `host:port`.
    pub fn hosts_text(&self) -> String {
        self.hosts.join(",")
    }
}

/// Reads `host:port,host:port`.
pub fn parse_hosts(text: &str) -> Result<Vec<String>, String> {
    let hosts: Vec<String> = text.split(',').map(str::trim).map(String::from).collect();
    if hosts.len() > MAX_HOSTS {
        return Err(format!("{} contact points, at most {MAX_HOSTS}", hosts.len()));
    }
    for host in &hosts {
        let port = host.rsplit_once(':').map(|(name, port)| (name, port.parse::<u16>()));
        match port {
            Some((name, Ok(port))) if !name.is_empty() && port > 0 => {}
            _ => return Err(format!("{host:?} is not host:port")),
        }
    }
    Ok(hosts)
}

/// A keyspace name: a lowercase letter, then up to 47 lowercase letters,
/// digits and `_` (tally never quotes it).
pub fn check_keyspace(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase());
    if !first_ok || name.len() > MAX_KEYSPACE_BYTES || !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(format!(
            "{name:?} is not a keyspace name (a lowercase letter, then lowercase letters, digits and '_', at most {MAX_KEYSPACE_BYTES} bytes)"
        ));
    }
    Ok(())
}

/// A consistency level of reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    One,
    Two,
    Three,
    Quorum,
    All,
    LocalQuorum,
    EachQuorum,
    LocalOne,
}

const LEVELS: [(Level, &str); 8] = [
    (Level::One, "one"),
    (Level::Two, "two"),
    (Level::Three, "three"),
    (Level::Quorum, "quorum"),
    (Level::All, "all"),
    (Level::LocalQuorum, "local_quorum"),
    (Level::EachQuorum, "each_quorum"),
    (Level::LocalOne, "local_one"),
];

impl FromStr for Level {
    type Err = String;

    fn from_str(text: &str) -> Result<Level, String> {
        let found = LEVELS.iter().find(|(_, name)| *name == text);
        found.map(|(level, _)| *level).ok_or_else(|| {
            let names: Vec<&str> = LEVELS.iter().map(|(_, name)| *name).collect();
            format!("{text:?} is not one of {}", names.join(" | "))
        })
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = LEVELS.iter().find(|(level, _)| level == self).map(|(_, name)| *name).expect("every level is listed");
        f.write_str(name)
    }
}

impl Level {
    pub fn driver(self) -> Consistency {
        match self {
            Level::One => Consistency::One,
            Level::Two => Consistency::Two,
            Level::Three => Consistency::Three,
            Level::Quorum => Consistency::Quorum,
            Level::All => Consistency::All,
            Level::LocalQuorum => Consistency::LocalQuorum,
            Level::EachQuorum => Consistency::EachQuorum,
            Level::LocalOne => Consistency::LocalOne,
        }
    }
}

/// The consistency of the Paxos phase of lightweight transactions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SerialLevel {
    Serial,
    LocalSerial,
}

impl FromStr for SerialLevel {
    type Err = String;

    fn from_str(text: &str) -> Result<SerialLevel, String> {
        match text {
            "serial" => Ok(SerialLevel::Serial),
            "local_serial" => Ok(SerialLevel::LocalSerial),
            _ => Err(format!("{text:?} is not one of serial | local_serial")),
        }
    }
}

impl SerialLevel {
    pub fn driver(self) -> SerialConsistency {
        match self {
            SerialLevel::Serial => SerialConsistency::Serial,
            SerialLevel::LocalSerial => SerialConsistency::LocalSerial,
        }
    }

    /// The same level as the consistency of a read that decides.
    pub fn read(self) -> Consistency {
        match self {
            SerialLevel::Serial => Consistency::Serial,
            SerialLevel::LocalSerial => Consistency::LocalSerial,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_host_and_port() {
        assert_eq!(parse_hosts("127.0.0.2:9042, 127.0.0.3:9042").unwrap(), ["127.0.0.2:9042", "127.0.0.3:9042"]);
        assert_eq!(parse_hosts("db.example:19042").unwrap(), ["db.example:19042"]);
        for bad in ["127.0.0.1", ":9042", "h:0", "h:x", "a:1,,b:2"] {
            assert!(parse_hosts(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keyspaces_are_plain_lowercase_names() {
        check_keyspace("tally").unwrap();
        check_keyspace("tally_test_2").unwrap();
        for bad in ["", "Tally", "2tally", "tal-ly", "t\"x", &"k".repeat(49)] {
            assert!(check_keyspace(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn levels_parse_and_print_alike() {
        for (level, name) in LEVELS {
            assert_eq!(name.parse::<Level>(), Ok(level));
            assert_eq!(level.to_string(), name);
        }
        assert_eq!(
            "QUORUM".parse::<Level>().unwrap_err(),
            "\"QUORUM\" is not one of one | two | three | quorum | all | local_quorum | each_quorum | local_one"
        );
        assert_eq!("local_serial".parse::<SerialLevel>(), Ok(SerialLevel::LocalSerial));
        assert!("quorum".parse::<SerialLevel>().is_err());
    }
}
