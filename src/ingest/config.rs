//! The ingest service's configuration file (TOML), read like a job file:
//! every key checked, unknown keys refused, one-line errors naming the file
//! and the dotted key. Every key and its default is in
//! `jobs/ingest.example.toml`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Value;

use super::auth::{Secret, Verifier, MIN_SECRET_BYTES};
use super::decode::DecodeLimits;
use super::limit::{AddressRates, Rate, RateLimiter, RequestRate};
use crate::config::error::KeyError;
use crate::config::section::{Section, Spelled};
use crate::config::{format_duration, parse_table, read_text, ConfigError};
use crate::dataflow::dedup::{DEFAULT_DEDUP_HORIZON_MS, MAX_DEDUP_HORIZON_MS};
use crate::event::salt::UserSalt;
use crate::event::validate::check_key;
use crate::http::{Limits, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_ADDRESS};

pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
pub const DEFAULT_PARTITIONS: u32 = 8;
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 << 20;
pub const DEFAULT_MAX_BATCH_CLICKS: usize = 10_000;
pub const DEFAULT_MAX_INFLIGHT_REQUESTS: usize = 256;
pub const DEFAULT_TIMESTAMP_PAST_MS: u64 = 7 * 86_400_000;
pub const DEFAULT_TIMESTAMP_FUTURE_MS: u64 = 5 * 60_000;
pub const DEFAULT_REPLAY_WINDOW_MS: u64 = 5 * 60_000;
pub const DEFAULT_CLICKS_PER_S: u64 = 1_000_000;
pub const DEFAULT_BURST_CLICKS: u64 = 2_000_000;
pub const DEFAULT_REDIS_TIMEOUT_MS: u64 = 20;

/// Upper bounds of the size keys, so a typo cannot ask for terabytes.
const MAX_BODY_BYTES_LIMIT: u64 = 256 << 20;
const MAX_BATCH_CLICKS_LIMIT: u64 = 1_000_000;
const MAX_CONNECTIONS_LIMIT: u64 = 100_000;
/// Upper bound of the timeout keys: a connection may wait an hour, no more.
const MAX_HTTP_TIMEOUT_MS: u64 = 3_600_000;
/// Most names in `allowed_hosts`, and their longest (a DNS name's limit).
const MAX_ALLOWED_HOSTS: usize = 256;
const MAX_HOST_NAME_BYTES: usize = 253;

/// How requests are authenticated.
#[derive(Clone, Debug)]
pub enum Auth {
    /// HMAC-SHA256 signatures by configured clients (the default).
    Signed(Verifier),
    /// No signatures: only by explicit configuration, for local use.
    Off,
}

/// Where the TLS certificate chain and private key are (PEM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Query parameters of a Redis URL that carry the password.
const REDIS_PASSWORD_PARAMS: [&str; 2] = ["pass", "password"];

/// `Debug` shows the URL as [`redacted_url`] does.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub url: String,
    /// `[redis] horizon`: how long after its last sighting a request id is
    /// answered as a duplicate. At most the dedup horizon of the job that
    /// reads the log; `None`: that horizon (`tally up` knows it; `tally
    /// ingest` takes the job default, `DEFAULT_DEDUP_HORIZON_MS`).
    pub horizon_ms: Option<u64>,
    pub timeout_ms: u64,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redacted_url(&self.url))
            .field("horizon_ms", &self.horizon_ms)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// A Redis URL fit to print: the user and password before `@`
/// (`redis://user:secret@host`) and a `pass`/`password` parameter (`redis+unix:///run/redis.sock?pass=secret`)
/// become `***`.
pub fn redacted_url(url: &str) -> String {
    let (before_query, query) = url.split_once('?').map_or((url, None), |(before, query)| (before, Some(query)));
    let (scheme, rest) = before_query.split_once("://").unwrap_or(("", before_query));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = authority.rsplit_once('@').map_or(authority.to_owned(), |(_, host)| format!("***@{host}"));
    let mut shown = if before_query.contains("://") { format!("{scheme}://{host}{path}") } else { format!("{host}{path}") };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _)) if REDIS_PASSWORD_PARAMS.iter().any(|p| name.eq_ignore_ascii_case(p)) => format!("{name}=***"),
                _ => param.to_owned(),
            })
            .collect();
        shown = format!("{shown}?{}", params.join("&"));
    }
    shown
}

impl RedisConfig {
    /// The pre-filter's TTL without a job to ask.
    pub fn ttl_ms(&self) -> u64 {
        self.horizon_ms.unwrap_or(DEFAULT_DEDUP_HORIZON_MS)
    }
}

/// A checked ingest configuration.
#[derive(Clone, Debug)]
pub struct IngestConfig {
    pub addr: SocketAddr,
    /// Partitions of the log when it is created.
    pub partitions: u32,
    pub max_body_bytes: usize,
    /// Connections and how long each step of one may take.
    pub http: Limits,
    /// Names besides IP literals and `localhost` that requests may give as
    /// their `Host`.
    pub allowed_hosts: Vec<String>,
    pub max_inflight_requests: usize,
    pub limits: DecodeLimits,
    pub auth: Auth,
    pub default_rate: Rate,
    pub client_rates: HashMap<String, Rate>,
    pub tls: Option<TlsFiles>,
    pub redis: Option<RedisConfig>,
    /// The user-id hash key; the data directory's when absent.
    pub salt: Option<UserSalt>,
    pub guards: RequestGuards,
}

impl IngestConfig {
    /// The configuration of an absent file: defaults, and no clients (so
    /// signatures must be switched off to start).
    pub fn defaults() -> IngestConfig {
        read(toml::Table::new(), Path::new(".")).unwrap_or_else(|e| unreachable!("defaults are valid: {e:?}"))
    }

    pub fn limiter(&self) -> RateLimiter {
        RateLimiter::new(self.default_rate, self.client_rates.clone(), self.guards.per_client)
    }

    /// Refuses to start with signatures on and nobody able to sign.
    pub fn check_startable(&self) -> Result<(), String> {
        match &self.auth {
            Auth::Signed(verifier) if verifier.is_empty() => {
                Err("request signatures are on but no client is configured: add [[auth.clients]] to the config, \
                 or switch signatures off for local use (auth.signatures = false, or --no-auth)"
                    .to_owned())
            }
            _ => Ok(()),
        }
    }
}

/// Reads and checks a config file; relative paths in it are relative to it.
pub fn load(path: &Path) -> Result<IngestConfig, ConfigError> {
    let table = parse_table(&read_text(path)?, path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    read(table, base).map_err(|err| err.in_file(path.to_path_buf()))
}

fn read(table: toml::Table, base: &Path) -> Result<IngestConfig, KeyError> {
    let mut root = Section::root(table);
    let addr_text = root.string("addr")?.unwrap_or_else(|| DEFAULT_ADDR.to_owned());
    let addr = addr_text.parse().map_err(|e| root.error("addr", format!("{addr_text:?} is not host:port ({e})")))?;
    let partitions = bounded(&mut root, "partitions", DEFAULT_PARTITIONS.into(), crate::log::MAX_PARTITIONS.into())? as u32;
    let max_body_bytes = bounded(&mut root, "max_body_bytes", DEFAULT_MAX_BODY_BYTES as u64, MAX_BODY_BYTES_LIMIT)? as usize;
    let max_batch_clicks = bounded(&mut root, "max_batch_clicks", DEFAULT_MAX_BATCH_CLICKS as u64, MAX_BATCH_CLICKS_LIMIT)? as usize;
    let http = http_limits(&mut root)?;
    let allowed_hosts = root.array("allowed_hosts", host_name)?.unwrap_or_default();
    if allowed_hosts.len() > MAX_ALLOWED_HOSTS {
        return Err(root.error("allowed_hosts", format!("{} names, at most {MAX_ALLOWED_HOSTS}", allowed_hosts.len())));
    }
    let max_inflight_requests =
        bounded(&mut root, "max_inflight_requests", DEFAULT_MAX_INFLIGHT_REQUESTS as u64, MAX_CONNECTIONS_LIMIT)? as usize;
    let past_ms = duration(&mut root, "timestamp_past", DEFAULT_TIMESTAMP_PAST_MS)?;
    let future_ms = duration(&mut root, "timestamp_future", DEFAULT_TIMESTAMP_FUTURE_MS)?;
    let salt = match root.string("salt")? {
        None => None,
        Some(hex) => Some(parse_salt(&hex).ok_or_else(|| root.error("salt", "expected 32 hex digits (16 bytes)"))?),
    };
    let mut rate_section = root.section("rate_limit")?;
    let default_rate =
        rate(&mut rate_section, Rate { clicks_per_s: DEFAULT_CLICKS_PER_S as f64, burst_clicks: DEFAULT_BURST_CLICKS as f64 })?;
    check_burst(&rate_section, default_rate, max_batch_clicks)?;
    let guards = request_guards(&mut root, &mut rate_section, max_body_bytes)?;
    rate_section.finish()?;
    let (auth, client_rates) = auth(&mut root, default_rate, max_batch_clicks)?;
    let tls = tls(&mut root, base)?;
    let redis = redis(&mut root)?;
    root.finish()?;
    let limits = DecodeLimits { max_batch_clicks, past_ms, future_ms };
    Ok(IngestConfig {
        addr,
        partitions,
        max_body_bytes,
        http,
        allowed_hosts,
        max_inflight_requests,
        limits,
        auth,
        default_rate,
        client_rates,
        tls,
        redis,
        salt,
        guards,
    })
}

/// A positive integer key, at most `max`.
fn bounded(section: &mut Section, key: &str, default: u64, max: u64) -> Result<u64, KeyError> {
    match section.integer(key)? {
        None => Ok(default),
        Some(n) if n >= 1 && (n as u64) <= max => Ok(n as u64),
        Some(n) => Err(section.error(key, format!("{n} is out of range 1..={max}"))),
    }
}

/// `max_connections`, `max_connections_per_address` and the timeouts of a
/// connection.
fn http_limits(root: &mut Section) -> Result<Limits, KeyError> {
    let max_connections = bounded(root, "max_connections", DEFAULT_MAX_CONNECTIONS as u64, MAX_CONNECTIONS_LIMIT)? as usize;
    let max_connections_per_address =
        bounded(root, "max_connections_per_address", DEFAULT_MAX_CONNECTIONS_PER_ADDRESS as u64, MAX_CONNECTIONS_LIMIT)? as usize;
    let defaults = Limits::default();
    let timeout = |root: &mut Section, key: &str, default: Duration| -> Result<Duration, KeyError> {
        let ms = duration(root, key, default.as_millis() as u64)?;
        if ms == 0 || ms > MAX_HTTP_TIMEOUT_MS {
            let reason = format!("{} is out of range 1ms..={}", format_duration(ms), format_duration(MAX_HTTP_TIMEOUT_MS));
            return Err(root.error(key, reason));
        }
        Ok(Duration::from_millis(ms))
    };
    Ok(Limits {
        max_connections,
        max_connections_per_address,
        header_timeout: timeout(root, "header_timeout", defaults.header_timeout)?,
        idle_timeout: timeout(root, "idle_timeout", defaults.idle_timeout)?,
        body_timeout: timeout(root, "body_timeout", defaults.body_timeout)?,
    })
}

/// One `allowed_hosts` entry: a DNS name, without port.
fn host_name(value: &Value, position: usize) -> Result<String, String> {
    let Value::String(name) = value else {
        return Err(format!("entry {position}: expected a string, found {}", value.type_str()));
    };
    let valid =
        !name.is_empty() && name.len() <= MAX_HOST_NAME_BYTES && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !valid {
        return Err(format!("entry {position}: {name:?} is not a host name (letters, digits, '-' and '.', without a port)"));
    }
    Ok(name.to_ascii_lowercase())
}

fn duration(section: &mut Section, key: &str, default_ms: u64) -> Result<u64, KeyError> {
    Ok(section.duration(key)?.map_or(default_ms, |Spelled { ms, .. }| ms))
}

fn rate(section: &mut Section, default: Rate) -> Result<Rate, KeyError> {
    let clicks_per_s = bounded(section, "clicks_per_s", default.clicks_per_s as u64, u64::from(u32::MAX))?;
    let burst_clicks = bounded(section, "burst_clicks", default.burst_clicks as u64, u64::from(u32::MAX))?;
    Ok(Rate { clicks_per_s: clicks_per_s as f64, burst_clicks: burst_clicks as f64 })
}

/// A batch must fit in a full bucket, or it could never pass.
fn check_burst(section: &Section, rate: Rate, max_batch_clicks: usize) -> Result<(), KeyError> {
    if rate.burst_clicks < max_batch_clicks as f64 {
        let reason = format!("{} is below max_batch_clicks ({max_batch_clicks}): a full batch could never pass", rate.burst_clicks);
        return Err(section.error("burst_clicks", reason));
    }
    Ok(())
}

fn auth(root: &mut Section, default_rate: Rate, max_batch_clicks: usize) -> Result<(Auth, HashMap<String, Rate>), KeyError> {
    let mut section = root.section("auth")?;
    let signatures = match section.take("signatures") {
        None | Some(Value::Boolean(true)) => true,
        Some(Value::Boolean(false)) => false,
        Some(other) => return Err(section.error("signatures", format!("expected true or false, found {}", other.type_str()))),
    };
    let replay_window_ms = duration(&mut section, "replay_window", DEFAULT_REPLAY_WINDOW_MS)?;
    let clients = section.array("clients", |value, position| client(value, position, default_rate, max_batch_clicks))?.unwrap_or_default();
    section.finish()?;
    let mut secrets = HashMap::new();
    let mut rates = HashMap::new();
    for (id, secret, rate) in clients {
        if secrets.insert(id.clone(), secret).is_some() {
            return Err(section.error("clients", format!("client {id:?} is listed twice")));
        }
        rates.insert(id, rate);
    }
    let auth = if signatures { Auth::Signed(Verifier::new(secrets, replay_window_ms)) } else { Auth::Off };
    Ok((auth, rates))
}

/// One `[[auth.clients]]` entry: `id`, `secret` or `secret_env`, and an
/// optional own rate.
fn client(value: &Value, position: usize, default_rate: Rate, max_batch_clicks: usize) -> Result<(String, Secret, Rate), String> {
    let Value::Table(table) = value else {
        return Err(format!("entry {position}: expected a table, found {}", value.type_str()));
    };
    let mut entry = Section::root(table.clone());
    let in_entry = |e: KeyError| format!("entry {position}: {}: {}", e.key, e.reason);
    let id = entry.string("id").map_err(in_entry)?.ok_or_else(|| format!("entry {position}: id: missing"))?;
    check_key(&id).map_err(|e| format!("entry {position}: id: {e}"))?;
    let secret = match (entry.string("secret").map_err(in_entry)?, entry.string("secret_env").map_err(in_entry)?) {
        (Some(secret), None) => secret,
        (None, Some(var)) => {
            std::env::var(&var).map_err(|_| format!("entry {position}: secret_env: environment variable {var:?} is not set"))?
        }
        _ => return Err(format!("entry {position}: set exactly one of secret, secret_env")),
    };
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!("entry {position}: secret: {} bytes, at least {MIN_SECRET_BYTES} required", secret.len()));
    }
    let rate = rate(&mut entry, default_rate).map_err(in_entry)?;
    if rate.burst_clicks < max_batch_clicks as f64 {
        return Err(format!("entry {position}: burst_clicks: below max_batch_clicks ({max_batch_clicks})"));
    }
    entry.finish().map_err(in_entry)?;
    Ok((id, Secret::new(secret), rate))
}

fn tls(root: &mut Section, base: &Path) -> Result<Option<TlsFiles>, KeyError> {
    let mut section = root.section("tls")?;
    let cert = section.string("cert")?;
    let key = section.string("key")?;
    section.finish()?;
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert: base.join(cert), key: base.join(key) })),
        (Some(_), None) => Err(section.error("key", "missing (tls.cert is set)")),
        (None, Some(_)) => Err(section.error("cert", "missing (tls.key is set)")),
    }
}

fn redis(root: &mut Section) -> Result<Option<RedisConfig>, KeyError> {
    let mut section = root.section("redis")?;
    let url = section.string("url")?;
    let horizon_ms = section.duration("horizon")?.map(|Spelled { ms, .. }| ms);
    let timeout_ms = duration(&mut section, "timeout", DEFAULT_REDIS_TIMEOUT_MS)?;
    if timeout_ms == 0 {
        return Err(section.error("timeout", "must be positive"));
    }
    if horizon_ms == Some(0) {
        return Err(section.error("horizon", "must be positive"));
    }
    if let Some(ms) = horizon_ms.filter(|&ms| ms > MAX_DEDUP_HORIZON_MS) {
        let max = format_duration(MAX_DEDUP_HORIZON_MS);
        return Err(section.error("horizon", format!("{} is longer than any job's dedup horizon (at most {max})", format_duration(ms))));
    }
    section.finish()?;
    Ok(url.map(|url| RedisConfig { url, horizon_ms, timeout_ms }))
}

// ---- Bounds checked before a body is read, and the replay guard.

pub const DEFAULT_MAX_BODY_BYTES_IN_FLIGHT: usize = 64 << 20;
/// At most 86 MB of MACs (2^21 slots of 41 bytes; see `ingest::replay`).
pub const DEFAULT_REPLAY_GUARD_ENTRIES: usize = 1_000_000;
pub const DEFAULT_REQUESTS_PER_S_PER_ADDRESS: u64 = 1_000;
pub const DEFAULT_BURST_REQUESTS_PER_ADDRESS: u64 = 2_000;
pub const DEFAULT_FAILURES_PER_S_PER_ADDRESS: u64 = 10;
pub const DEFAULT_BURST_FAILURES_PER_ADDRESS: u64 = 20;
pub const DEFAULT_REQUESTS_PER_S_PER_CLIENT: u64 = 100_000;
pub const DEFAULT_BURST_REQUESTS_PER_CLIENT: u64 = 200_000;
/// Upper bounds of these keys (the bytes in flight are semaphore permits
/// taken in `u32` amounts).
const MAX_BODY_BYTES_IN_FLIGHT_LIMIT: u64 = u32::MAX as u64;
const MAX_REPLAY_GUARD_ENTRIES_LIMIT: u64 = 100_000_000;

/// What bounds a request before its body is read, and the replay guard.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RequestGuards {
    /// Most body bytes being read at once, all requests together.
    pub max_body_bytes_in_flight: usize,
    /// Most signatures the replay guard holds.
    pub replay_guard_entries: usize,
    pub per_address: AddressRates,
    pub per_client: RequestRate,
}

/// `max_body_bytes_in_flight` and `replay_guard_entries` at the root, the
/// request rates in `[rate_limit]`.
fn request_guards(root: &mut Section, rates: &mut Section, max_body_bytes: usize) -> Result<RequestGuards, KeyError> {
    let in_flight =
        bounded(root, "max_body_bytes_in_flight", DEFAULT_MAX_BODY_BYTES_IN_FLIGHT as u64, MAX_BODY_BYTES_IN_FLIGHT_LIMIT)? as usize;
    if in_flight < max_body_bytes {
        let reason = format!("{in_flight} is below max_body_bytes ({max_body_bytes}): a full body could never be read");
        return Err(root.error("max_body_bytes_in_flight", reason));
    }
    let entries = bounded(root, "replay_guard_entries", DEFAULT_REPLAY_GUARD_ENTRIES as u64, MAX_REPLAY_GUARD_ENTRIES_LIMIT)? as usize;
    let mut request_rate = |per_s: &str, burst: &str, default_per_s: u64, default_burst: u64| -> Result<RequestRate, KeyError> {
        let requests_per_s = bounded(rates, per_s, default_per_s, u64::from(u32::MAX))? as f64;
        let burst_requests = bounded(rates, burst, default_burst, u64::from(u32::MAX))? as f64;
        Ok(RequestRate { requests_per_s, burst_requests })
    };
    let requests = request_rate(
        "requests_per_s_per_address",
        "burst_requests_per_address",
        DEFAULT_REQUESTS_PER_S_PER_ADDRESS,
        DEFAULT_BURST_REQUESTS_PER_ADDRESS,
    )?;
    let failures = request_rate(
        "failures_per_s_per_address",
        "burst_failures_per_address",
        DEFAULT_FAILURES_PER_S_PER_ADDRESS,
        DEFAULT_BURST_FAILURES_PER_ADDRESS,
    )?;
    let per_client = request_rate(
        "requests_per_s_per_client",
        "burst_requests_per_client",
        DEFAULT_REQUESTS_PER_S_PER_CLIENT,
        DEFAULT_BURST_REQUESTS_PER_CLIENT,
    )?;
    Ok(RequestGuards {
        max_body_bytes_in_flight: in_flight,
        replay_guard_entries: entries,
        per_address: AddressRates { requests, failures },
        per_client,
    })
}

fn parse_salt(hex: &str) -> Option<UserSalt> {
    let bytes = hex.as_bytes();
    if bytes.len() != 32 {
        return None;
    }
    let mut salt = [0u8; 16];
    for (byte, pair) in salt.iter_mut().zip(bytes.chunks_exact(2)) {
        let digit = |b: u8| (b as char).to_digit(16);
        *byte = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(UserSalt::from_bytes(salt))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<IngestConfig, String> {
        read(toml::from_str(text).unwrap(), Path::new("/etc/tally")).map_err(|e| format!("{}: {}", e.key, e.reason))
    }

    #[test]
    fn defaults_need_clients_or_signatures_off() {
        let config = IngestConfig::defaults();
        assert_eq!(config.addr.to_string(), DEFAULT_ADDR);
        assert!(config.check_startable().unwrap_err().contains("--no-auth"));
        assert!(parse("[auth]\nsignatures = false").unwrap().check_startable().is_ok());
    }

    #[test]
    fn clients_rates_tls_and_redis_are_read() {
        let config = parse(
            r#"
            max_batch_clicks = 100
            [auth]
            replay_window = "1m"
            [[auth.clients]]
            id = "web"
            secret = "0123456789abcdef"
            clicks_per_s = 10
            burst_clicks = 100
            [tls]
            cert = "cert.pem"
            key = "/keys/key.pem"
            [redis]
            url = "redis://127.0.0.1:6379"
            timeout = "5ms"
            "#,
        )
        .unwrap();
        assert!(config.check_startable().is_ok());
        assert_eq!(config.client_rates["web"], Rate { clicks_per_s: 10.0, burst_clicks: 100.0 });
        let tls = config.tls.unwrap();
        assert_eq!((tls.cert, tls.key), (PathBuf::from("/etc/tally/cert.pem"), PathBuf::from("/keys/key.pem")));
        let redis = config.redis.unwrap();
        assert_eq!((redis.timeout_ms, redis.horizon_ms, redis.ttl_ms()), (5, None, DEFAULT_DEDUP_HORIZON_MS));
    }

    #[test]
    fn connection_limits_and_allowed_hosts_are_read() {
        assert_eq!(IngestConfig::defaults().http, Limits::default());
        let config = parse(
            r#"
            max_connections = 10
            max_connections_per_address = 2
            header_timeout = "2s"
            idle_timeout = "5s"
            body_timeout = "500ms"
            allowed_hosts = ["Tally.Example.com"]
            "#,
        )
        .unwrap();
        let expected = Limits {
            max_connections: 10,
            max_connections_per_address: 2,
            header_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_millis(500),
        };
        assert_eq!((config.http, config.allowed_hosts), (expected, vec!["tally.example.com".to_owned()]));
    }

    #[test]
    fn redis_passwords_are_never_shown() {
        let cases = [
            ("redis://user:s3cret@db:6379/0", "redis://***@db:6379/0"),
            ("redis://:s3cret@db", "redis://***@db"),
            ("rediss://s3cret@db/?protocol=resp3", "rediss://***@db/?protocol=resp3"),
            ("redis+unix:///run/redis.sock?db=1&pass=s3cret", "redis+unix:///run/redis.sock?db=1&pass=***"),
            ("redis://127.0.0.1:6379/", "redis://127.0.0.1:6379/"),
            ("db:6379", "db:6379"),
        ];
        for (url, shown) in cases {
            assert_eq!(redacted_url(url), shown, "{url}");
        }
        let config = parse("[redis]\nurl = \"redis://u:s3cret@db\"").unwrap();
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn bad_keys_are_named() {
        let cases = [
            ("addr = \"nowhere\"", "addr: \"nowhere\" is not host:port"),
            ("max_batch_clicks = 0", "max_batch_clicks: 0 is out of range"),
            ("colour = 1", "colour: unknown key"),
            ("[auth]\nsignatures = \"no\"", "auth.signatures: expected true or false"),
            ("[[auth.clients]]\nid = \"a\"\nsecret = \"short\"", "auth.clients: entry 1: secret: 5 bytes"),
            ("[[auth.clients]]\nid = \"a b\"\nsecret = \"0123456789abcdef\"", "auth.clients: entry 1: id: invalid character"),
            ("[[auth.clients]]\nid = \"a\"\nsecret = \"0123456789abcdef\"\nextra = 1", "auth.clients: entry 1: extra: unknown key"),
            ("[rate_limit]\nburst_clicks = 10", "rate_limit.burst_clicks: 10 is below max_batch_clicks"),
            ("[tls]\ncert = \"c.pem\"", "tls.key: missing"),
            ("salt = \"xyz\"", "salt: expected 32 hex digits"),
            ("[redis]\nurl = \"redis://x\"\nhorizon = \"8d\"", "redis.horizon: 8d is longer than any job's dedup horizon (at most 7d)"),
            ("[redis]\nurl = \"redis://x\"\nhorizon = 0", "redis.horizon: must be positive"),
            ("header_timeout = \"0s\"", "header_timeout: 0ms is out of range 1ms..=1h"),
            ("idle_timeout = \"2h\"", "idle_timeout: 2h is out of range 1ms..=1h"),
            ("max_connections_per_address = 0", "max_connections_per_address: 0 is out of range"),
            ("allowed_hosts = [\"tally.example:8080\"]", "allowed_hosts: entry 1: \"tally.example:8080\" is not a host name"),
            ("allowed_hosts = [1]", "allowed_hosts: entry 1: expected a string"),
            ("max_body_bytes_in_flight = 1024", "max_body_bytes_in_flight: 1024 is below max_body_bytes"),
            ("replay_guard_entries = 0", "replay_guard_entries: 0 is out of range"),
            ("[rate_limit]\nfailures_per_s_per_address = 0", "rate_limit.failures_per_s_per_address: 0 is out of range"),
        ];
        for (text, expected) in cases {
            let error = parse(text).unwrap_err();
            assert!(error.starts_with(expected), "{text:?}: {error}");
        }
    }
}
