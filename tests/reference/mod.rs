//! The reference recount: a deliberately independent, naive implementation of
//! `SEMANTICS.md`, used by the integration tests to prove that the engine
//! counts correctly.
//!
//! It shares no code with the engine (`src/`): it re-reads the click log line
//! by line with `serde_json::Value`, re-implements the log's partition
//! function from its documented formula, replays each partition's clicks in
//! log order with plain loops, and computes every window row with
//! `BTreeMap`s and exact `BTreeSet`s. It is slow on purpose and optimised
//! only for being easy to check against the contract by reading.
//!
//! `distinct_users` here is the EXACT number of distinct raw `user_id`
//! strings; the engine's value is a HyperLogLog estimate, so tests compare
//! the two with a tolerance.
//!
//! The rows are the full version history of a data-driven run (a file read
//! from the start, SEMANTICS.md "Data-driven runs are deterministic in
//! full"): the final row, then one restated row per later restating batch
//! `tau`. A window with no on-time click and no restating click of a batch
//! before its close has no final row: its first batch is `restated`, version
//! one. Whatever the run, the newest row of a window is the total of its
//! counted clicks.
//!
//! Rules the contract leaves open, and what this recount does (the engine
//! must match):
//! - A blank line in the log is an invalid line (it is not a JSON object).
//!   A final newline does not start another line.
//! - In the catalog, a 3-field row is valid from 0 (always); a row whose
//!   `valid_from` ties with another row of the same ad wins if it comes later
//!   in the file. Fields are trimmed of surrounding whitespace.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// One minute, the width of the windows that lateness is judged against.
const MINUTE_MS: u64 = 60_000;
/// Key used for campaign and advertiser when the catalog has no valid version.
const UNKNOWN: &str = "unknown";
const MAX_ID_BYTES: usize = 64;
const MAX_USER_ID_BYTES: usize = 128;
/// The largest valid timestamp: the last millisecond of the year 9999 UTC.
const MAX_EVENT_TIME_MS: u64 = 253_402_300_799_999;

/// The job settings the recount depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub partitions: u32,
    pub epoch_ms: u64,
    pub slack_ms: u64,
    pub allowed_lateness_ms: u64,
    pub dedup_horizon_ms: u64,
    /// Window granularities; each must be a positive multiple of one minute.
    pub windows_ms: Vec<u64>,
    /// `Some(restate_within)` = policy restate; `None` = policy hold.
    pub restate_within_ms: Option<u64>,
    /// Key types: any of `"ad"`, `"campaign"`, `"advertiser"`.
    pub group_by: Vec<String>,
}

/// A final or restated row the engine must emit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedRow {
    pub key_type: String,
    pub key: String,
    pub granularity_ms: u64,
    pub window_start: u64,
    pub version: u32,
    /// `"final"` or `"restated"`.
    pub status: String,
    pub clicks: u64,
    /// Exact; the engine's is an estimate.
    pub distinct_users: u64,
}

/// The late ledger for one (key type, key, 1m window).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub key_type: String,
    pub key: String,
    pub window_start: u64,
    /// Too-late clicks, restating and held.
    pub count: u64,
    /// Lowercase canonical request ids of those clicks.
    pub request_ids: BTreeSet<String>,
    /// How many of `count` were held rather than restating.
    pub held: u64,
}

/// Everything the engine must reproduce for one log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recount {
    /// Sorted by (key_type, key, granularity_ms, window_start, version).
    pub rows: Vec<ExpectedRow>,
    /// Sorted by (key_type, key, window_start).
    pub ledger: Vec<LedgerEntry>,
    /// 1-based line numbers of the invalid lines, ascending.
    pub invalid_lines: Vec<u64>,
    pub duplicates: u64,
    /// Too-late clicks (restating and held), each counted once.
    pub too_late: u64,
}

/// Recounts a click log (NDJSON) against an optional catalog (CSV).
///
/// Panics on settings the contract does not define (zero partitions or
/// epoch, a window that is not a multiple of one minute, an unknown key type)
/// and on a malformed catalog: a test fixture is wrong, not the engine.
pub fn recount(ndjson: &str, catalog_csv: Option<&str>, p: &Params) -> Recount {
    check_params(p);
    let catalog = catalog_csv.map(parse_catalog).unwrap_or_default();

    let mut invalid_lines = Vec::new();
    let mut clicks = Vec::new();
    for (index, line) in ndjson.lines().enumerate() {
        let line_number = index as u64 + 1;
        match parse_click(line) {
            Some(click) => clicks.push(click),
            None => invalid_lines.push(line_number),
        }
    }

    let mut duplicates = 0;
    let mut judged = Vec::new();
    for partition in split_by_partition(clicks, p.partitions) {
        let (counted, partition_duplicates) = judge_partition(partition, p);
        duplicates += partition_duplicates;
        judged.extend(counted);
    }

    let too_late = judged.iter().filter(|j| j.fate != Fate::OnTime).count() as u64;
    Recount { rows: window_rows(&judged, &catalog, p), ledger: late_ledger(&judged, &catalog, p), invalid_lines, duplicates, too_late }
}

fn check_params(p: &Params) {
    assert!(p.partitions > 0, "partitions must be positive");
    assert!(p.epoch_ms > 0, "epoch_ms must be positive");
    for &g in &p.windows_ms {
        assert!(g > 0 && g % MINUTE_MS == 0, "window {g} ms is not a whole number of minutes");
    }
    for key_type in &p.group_by {
        assert!(matches!(key_type.as_str(), "ad" | "campaign" | "advertiser"), "unknown key type {key_type:?}");
    }
}

// ---------------------------------------------------------------------------
// Input lines

/// A valid click line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Click {
    ad_id: String,
    ts: u64,
    user_id: String,
    /// Lowercase canonical form of the request id.
    request_id: String,
    /// The request id's 128-bit big-endian value.
    request_uuid: u128,
}

/// Parses one log line; `None` if any input rule fails.
fn parse_click(line: &str) -> Option<Click> {
    let value: Value = serde_json::from_str(line).ok()?;
    let object = value.as_object()?;
    const FIELDS: [&str; 5] = ["ad_id", "timestamp", "user_id", "request_id", "campaign_id"];
    if object.keys().any(|k| !FIELDS.contains(&k.as_str())) {
        return None;
    }

    let ad_id = object.get("ad_id")?.as_str()?;
    if !is_valid_id(ad_id) {
        return None;
    }
    // Accepted but never used: the catalog alone attributes campaigns.
    if let Some(campaign_id) = object.get("campaign_id") {
        if !is_valid_id(campaign_id.as_str()?) {
            return None;
        }
    }
    let user_id = object.get("user_id")?.as_str()?;
    if user_id.is_empty() || user_id.len() > MAX_USER_ID_BYTES {
        return None;
    }
    // `as_u64` is `None` for negative integers and for any float (`1.0`, `1e3`).
    let ts = object.get("timestamp")?.as_u64().filter(|&ts| ts <= MAX_EVENT_TIME_MS)?;
    let request_id = object.get("request_id")?.as_str()?;
    let request_uuid = parse_uuid(request_id)?;

    Some(Click { ad_id: ad_id.to_string(), ts, user_id: user_id.to_string(), request_id: request_id.to_ascii_lowercase(), request_uuid })
}

/// 1–64 bytes of `[A-Za-z0-9._:-]`.
fn is_valid_id(id: &str) -> bool {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-');
    !id.is_empty() && id.len() <= MAX_ID_BYTES && id.bytes().all(allowed)
}

/// Canonical `8-4-4-4-12` hex UUID, any case, to its big-endian value.
fn parse_uuid(text: &str) -> Option<u128> {
    let bytes = text.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    let mut value: u128 = 0;
    for (position, &byte) in bytes.iter().enumerate() {
        if matches!(position, 8 | 13 | 18 | 23) {
            if byte != b'-' {
                return None;
            }
            continue;
        }
        let digit = (byte as char).to_digit(16)?;
        value = (value << 4) | digit as u128;
    }
    Some(value)
}

// ---------------------------------------------------------------------------
// Partitions

/// The log partition of a request id: xor-fold the two 64-bit halves, apply
/// the SplitMix64 finalizer, reduce modulo the partition count.
fn partition_of(request_uuid: u128, partitions: u32) -> u32 {
    let high = (request_uuid >> 64) as u64;
    let low = request_uuid as u64;
    (splitmix64_finalizer(high ^ low) % partitions as u64) as u32
}

fn splitmix64_finalizer(mut z: u64) -> u64 {
    z ^= z >> 30;
    z = z.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z ^= z >> 27;
    z = z.wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    z
}

/// The clicks of each partition, in log order.
fn split_by_partition(clicks: Vec<Click>, partitions: u32) -> Vec<Vec<Click>> {
    let mut split: Vec<Vec<Click>> = vec![Vec::new(); partitions as usize];
    for click in clicks {
        split[partition_of(click.request_uuid, partitions) as usize].push(click);
    }
    split
}

// ---------------------------------------------------------------------------
// Per-click rules

/// What happened to a counted (non-duplicate) click.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    OnTime,
    /// Too late, applied to its windows by the restating batch `tau`.
    Restating {
        tau: u64,
    },
    /// Too late, in the ledger only.
    Held,
}

#[derive(Debug, Clone)]
struct Judged {
    click: Click,
    fate: Fate,
}

/// Replays one partition's clicks in log order; returns the non-duplicate
/// clicks with their fate, and the number of duplicates.
fn judge_partition(clicks: Vec<Click>, p: &Params) -> (Vec<Judged>, u64) {
    let mut max_ts: u64 = 0;
    let mut memory: BTreeMap<u128, u64> = BTreeMap::new();
    let mut judged = Vec::new();
    let mut duplicates = 0;
    for click in clicks {
        // The partition's own progress minus slack, and nothing else.
        let watermark = max_ts.saturating_sub(p.slack_ms);
        max_ts = max_ts.max(click.ts);
        let oldest = max_ts.saturating_sub(p.dedup_horizon_ms);
        // Remembered at the partition's event-time progress, not the click's
        // own time (a retry of a very late click is still caught), and on
        // every sighting, duplicate or not (the horizon slides).
        let remembered = memory.insert(click.request_uuid, max_ts);
        if remembered.is_some_and(|remembered| remembered >= oldest) {
            duplicates += 1;
            continue;
        }
        let fate = fate_of(click.ts, watermark, p);
        judged.push(Judged { click, fate });
    }
    (judged, duplicates)
}

fn fate_of(ts: u64, watermark: u64, p: &Params) -> Fate {
    let end_1m = minute_start(ts).saturating_add(MINUTE_MS);
    if end_1m.saturating_add(p.allowed_lateness_ms) > watermark {
        return Fate::OnTime;
    }
    match p.restate_within_ms {
        Some(within) if end_1m.saturating_add(within) > watermark => Fate::Restating { tau: watermark - watermark % p.epoch_ms },
        _ => Fate::Held,
    }
}

fn minute_start(ts: u64) -> u64 {
    ts - ts % MINUTE_MS
}

// ---------------------------------------------------------------------------
// Keys and the catalog

#[derive(Debug, Clone)]
struct CatalogVersion {
    valid_from: u64,
    campaign_id: String,
    advertiser_id: String,
}

#[derive(Debug, Clone, Default)]
struct Catalog {
    versions_by_ad: BTreeMap<String, Vec<CatalogVersion>>,
}

/// `ad_id,campaign_id,advertiser_id[,valid_from]`; an optional header (first
/// row, first field `ad_id`), `#` comments and blank lines are skipped.
fn parse_catalog(csv: &str) -> Catalog {
    let mut catalog = Catalog::default();
    let mut first_row = true;
    for line in csv.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let is_header = first_row && fields[0] == "ad_id";
        first_row = false;
        if is_header {
            continue;
        }
        let (ad_id, version) = parse_catalog_row(&fields, line);
        catalog.versions_by_ad.entry(ad_id).or_default().push(version);
    }
    catalog
}

fn parse_catalog_row(fields: &[&str], line: &str) -> (String, CatalogVersion) {
    assert!(matches!(fields.len(), 3 | 4), "catalog row {line:?} needs 3 or 4 fields");
    let valid_from = match fields.get(3) {
        None | Some(&"") => 0,
        Some(text) => text.parse().unwrap_or_else(|_| panic!("catalog row {line:?}: bad valid_from")),
    };
    let version = CatalogVersion { valid_from, campaign_id: fields[1].to_string(), advertiser_id: fields[2].to_string() };
    (fields[0].to_string(), version)
}

impl Catalog {
    /// (campaign, advertiser) of `ad_id` for a click in the 1m window
    /// starting at `window_start`: the latest version with
    /// `valid_from <= window_start`, else `unknown`.
    fn attribute(&self, ad_id: &str, window_start: u64) -> (String, String) {
        let mut best: Option<&CatalogVersion> = None;
        for version in self.versions_by_ad.get(ad_id).into_iter().flatten() {
            let valid = version.valid_from <= window_start;
            // `>=`: of two versions with the same valid_from, the later row wins.
            if valid && best.is_none_or(|b| version.valid_from >= b.valid_from) {
                best = Some(version);
            }
        }
        match best {
            Some(v) => (v.campaign_id.clone(), v.advertiser_id.clone()),
            None => (UNKNOWN.to_string(), UNKNOWN.to_string()),
        }
    }
}

/// The (key type, key) pairs a click counts under, one per `group_by` entry.
fn keys_of(click: &Click, catalog: &Catalog, group_by: &[String]) -> Vec<(String, String)> {
    let (campaign, advertiser) = catalog.attribute(&click.ad_id, minute_start(click.ts));
    let mut keys = Vec::new();
    for key_type in group_by {
        let key = match key_type.as_str() {
            "ad" => click.ad_id.clone(),
            "campaign" => campaign.clone(),
            "advertiser" => advertiser.clone(),
            other => panic!("unknown key type {other:?}"),
        };
        keys.push((key_type.clone(), key));
    }
    keys
}

// ---------------------------------------------------------------------------
// Window rows

/// (key type, key, granularity, window start).
type WindowKey = (String, String, u64, u64);

fn window_rows(judged: &[Judged], catalog: &Catalog, p: &Params) -> Vec<ExpectedRow> {
    // Every non-held click of each window, with its fate.
    let mut windows: BTreeMap<WindowKey, Vec<&Judged>> = BTreeMap::new();
    for j in judged {
        if j.fate == Fate::Held {
            continue;
        }
        for (key_type, key) in keys_of(&j.click, catalog, &p.group_by) {
            for &g in &p.windows_ms {
                let start = j.click.ts - j.click.ts % g;
                let window = (key_type.clone(), key.clone(), g, start);
                windows.entry(window).or_default().push(j);
            }
        }
    }

    let mut rows = Vec::new();
    for (window, clicks) in &windows {
        rows.extend(rows_of_window(window, clicks, p.allowed_lateness_ms));
    }
    rows
}

/// The final row (if any click counted before the close) and one restated
/// row per restating batch at or after the close, with running totals.
fn rows_of_window(window: &WindowKey, clicks: &[&Judged], lateness_ms: u64) -> Vec<ExpectedRow> {
    let (key_type, key, granularity_ms, window_start) = window;
    let closes_at = window_start.saturating_add(*granularity_ms).saturating_add(lateness_ms);

    let mut before_close: Vec<&Click> = Vec::new();
    let mut batches: BTreeMap<u64, Vec<&Click>> = BTreeMap::new();
    for j in clicks {
        match j.fate {
            Fate::OnTime => before_close.push(&j.click),
            Fate::Restating { tau } if tau < closes_at => before_close.push(&j.click),
            Fate::Restating { tau } => batches.entry(tau).or_default().push(&j.click),
            Fate::Held => unreachable!("held clicks are not in windows"),
        }
    }

    let row = |version: u32, status: &str, clicks: u64, users: &BTreeSet<&str>| ExpectedRow {
        key_type: key_type.clone(),
        key: key.clone(),
        granularity_ms: *granularity_ms,
        window_start: *window_start,
        version,
        status: status.to_string(),
        clicks,
        distinct_users: users.len() as u64,
    };

    let mut rows = Vec::new();
    let mut version = 0;
    let mut total_clicks = 0;
    let mut users: BTreeSet<&str> = BTreeSet::new();
    if !before_close.is_empty() {
        total_clicks += before_close.len() as u64;
        users.extend(before_close.iter().map(|c| c.user_id.as_str()));
        version = 1;
        rows.push(row(version, "final", total_clicks, &users));
    }
    // A late-only window has no final row: its first batch is version 1.
    for batch in batches.values() {
        total_clicks += batch.len() as u64;
        users.extend(batch.iter().map(|c| c.user_id.as_str()));
        version += 1;
        rows.push(row(version, "restated", total_clicks, &users));
    }
    rows
}

// ---------------------------------------------------------------------------
// Late ledger

fn late_ledger(judged: &[Judged], catalog: &Catalog, p: &Params) -> Vec<LedgerEntry> {
    let mut ledger: BTreeMap<(String, String, u64), LedgerEntry> = BTreeMap::new();
    for j in judged {
        if j.fate == Fate::OnTime {
            continue;
        }
        let window_start = minute_start(j.click.ts);
        for (key_type, key) in keys_of(&j.click, catalog, &p.group_by) {
            let entry = ledger.entry((key_type.clone(), key.clone(), window_start)).or_insert_with(|| LedgerEntry {
                key_type,
                key,
                window_start,
                count: 0,
                request_ids: BTreeSet::new(),
                held: 0,
            });
            entry.count += 1;
            entry.request_ids.insert(j.click.request_id.clone());
            if j.fate == Fate::Held {
                entry.held += 1;
            }
        }
    }
    ledger.into_values().collect()
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    /// One partition, 10 s epochs, no slack or lateness, a 10 min dedup
    /// horizon, 1m windows, policy hold, by ad.
    fn params() -> Params {
        Params {
            partitions: 1,
            epoch_ms: 10_000,
            slack_ms: 0,
            allowed_lateness_ms: 0,
            dedup_horizon_ms: 600_000,
            windows_ms: vec![MINUTE_MS],
            restate_within_ms: None,
            group_by: vec!["ad".to_string()],
        }
    }

    fn rid(n: u64) -> String {
        format!("00000000-0000-4000-8000-{n:012x}")
    }

    fn click(ad: &str, ts: u64, user: &str, request_id: &str) -> String {
        format!(r#"{{"ad_id":"{ad}","timestamp":{ts},"user_id":"{user}","request_id":"{request_id}"}}"#)
    }

    fn log(lines: &[String]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    /// (version, status, clicks, distinct users) of each row of one window.
    fn window(r: &Recount, key_type: &str, key: &str, g: u64, start: u64) -> Vec<(u32, String, u64, u64)> {
        r.rows
            .iter()
            .filter(|row| row.key_type == key_type && row.key == key)
            .filter(|row| row.granularity_ms == g && row.window_start == start)
            .map(|row| (row.version, row.status.clone(), row.clicks, row.distinct_users))
            .collect()
    }

    fn fin(clicks: u64, users: u64) -> (u32, String, u64, u64) {
        (1, "final".to_string(), clicks, users)
    }

    fn restated(version: u32, clicks: u64, users: u64) -> (u32, String, u64, u64) {
        (version, "restated".to_string(), clicks, users)
    }

    fn ledger_entry<'a>(r: &'a Recount, key_type: &str, key: &str, start: u64) -> &'a LedgerEntry {
        r.ledger.iter().find(|e| e.key_type == key_type && e.key == key && e.window_start == start).expect("ledger entry")
    }

    /// A request id that lands in `partition`, found by the formula under test.
    fn rid_in(partition: u32, partitions: u32, skip: usize) -> String {
        (0u64..).map(rid).filter(|r| partition_of(parse_uuid(r).unwrap(), partitions) == partition).nth(skip).unwrap()
    }

    #[test]
    fn splitmix64_finalizer_matches_the_published_sequence() {
        // SplitMix64 seeded with 0 outputs finalizer(0x9e3779b97f4a7c15) first.
        assert_eq!(splitmix64_finalizer(0x9e37_79b9_7f4a_7c15), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn partition_of_xor_folds_the_uuid_halves() {
        let high_only = parse_uuid("9e3779b9-7f4a-7c15-0000-000000000000").unwrap();
        let split = parse_uuid("9e3779b9-0000-0000-0000-00007f4a7c15").unwrap();
        let expected = (0xe220_a839_7b1d_cdafu64 % 7) as u32;
        assert_eq!(partition_of(high_only, 7), expected);
        // 0x9e3779b9_00000000 ^ 0x00000000_7f4a7c15 folds to the same value.
        assert_eq!(partition_of(split, 7), expected);
        assert_eq!(partition_of(high_only, 1), 0);
    }

    #[test]
    fn uuid_parsing_is_case_insensitive_and_canonical_only() {
        let lower = parse_uuid("0123abcd-ef01-4234-8567-89abcdef0123");
        assert_eq!(lower, Some(0x0123abcd_ef01_4234_8567_89abcdef0123));
        assert_eq!(parse_uuid("0123ABCD-EF01-4234-8567-89ABCDEF0123"), lower);
        assert_eq!(parse_uuid("0123abcdef0142348567-89abcdef0123"), None);
        assert_eq!(parse_uuid("{0123abcd-ef01-4234-8567-89abcdef012}"), None);
        assert_eq!(parse_uuid("0123abcd-ef01-4234-8567-89abcdef012g"), None);
        assert_eq!(parse_uuid("0123abcd-ef01-4234-8567_89abcdef0123"), None);
        assert_eq!(parse_uuid("+123abcd-ef01-4234-8567-89abcdef0123"), None);
    }

    #[test]
    fn invalid_lines_are_reported_by_number_and_skipped() {
        let r = rid(1);
        let lines = [
            click("a", 1_000, "u1", &rid(100)),                                                               // 1 ok
            "not json".to_string(),                                                                           // 2
            format!(r#"[{}]"#, click("a", 1_000, "u1", &rid(2))),                                             // 3 array
            r#"{"ad_id":"a","timestamp":1,"user_id":"u"}"#.to_string(),                                       // 4 no request_id
            format!(r#"{{"ad_id":"a","timestamp":1,"user_id":"u","request_id":"{r}","x":1}}"#),               // 5 extra field
            click(&"a".repeat(65), 1_000, "u1", &rid(3)),                                                     // 6 ad_id too long
            click("a b", 1_000, "u1", &rid(4)),                                                               // 7 ad_id bad byte
            click("a", 1_000, "", &rid(5)),                                                                   // 8 empty user
            click("a", 1_000, &"u".repeat(129), &rid(6)),                                                     // 9 user too long
            format!(r#"{{"ad_id":"a","timestamp":-1,"user_id":"u","request_id":"{r}"}}"#),                    // 10 negative
            format!(r#"{{"ad_id":"a","timestamp":1.0,"user_id":"u","request_id":"{r}"}}"#),                   // 11 float
            format!(r#"{{"ad_id":"a","timestamp":"1","user_id":"u","request_id":"{r}"}}"#),                   // 12 string ts
            click("a", 1_000, "u1", "0000000000004000800000000000000f"),                                      // 13 no hyphens
            format!(r#"{{"ad_id":"a","timestamp":1,"user_id":"u","request_id":"{r}","campaign_id":"c d"}}"#), // 14
            format!(r#"{{"ad_id":"a","timestamp":1,"user_id":"u","request_id":"{r}","campaign_id":null}}"#),  // 15
            format!(r#"{{"ad_id":7,"timestamp":1,"user_id":"u","request_id":"{r}"}}"#),                       // 16 number ad
            String::new(),                                                                                    // 17 blank
            click(&"A.b_c:d-9".repeat(8)[..64], 2_000, &"é".repeat(64), &rid(7).to_uppercase()),              // 18 ok
            format!(r#"{{"ad_id":"a","timestamp":3,"user_id":"u","request_id":"{r}","campaign_id":"c-1"}}"#), // 19 ok
            click("a", MAX_EVENT_TIME_MS + 1, "u1", &rid(8)),                                                 // 20 after 9999
        ];
        let recount = recount(&log(&lines), None, &params());
        assert_eq!(recount.invalid_lines, vec![2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 20]);
        assert_eq!(window(&recount, "ad", "a", MINUTE_MS, 0), vec![fin(2, 2)]);
        assert_eq!(recount.rows.len(), 2);
    }

    #[test]
    fn dedup_drops_a_retry_within_the_horizon_in_any_case() {
        let lines = [click("a", 1_000, "u1", &rid(0xab)), click("a", 2_000, "u2", &rid(0xab).to_uppercase())];
        let r = recount(&log(&lines), None, &params());
        assert_eq!(r.duplicates, 1);
        assert_eq!(window(&r, "ad", "a", MINUTE_MS, 0), vec![fin(1, 1)]);
    }

    #[test]
    fn dedup_counts_a_retry_beyond_the_horizon_again() {
        let p = Params { dedup_horizon_ms: 10_000, ..params() };
        let lines = [
            click("a", 0, "u1", &rid(1)),
            click("a", 20_000, "u2", &rid(2)),
            // max_ts 20 000, oldest 10 000: the remembered 0 is forgotten.
            click("a", 20_000, "u3", &rid(1)),
        ];
        let r = recount(&log(&lines), None, &p);
        assert_eq!(r.duplicates, 0);
        assert_eq!(window(&r, "ad", "a", MINUTE_MS, 0), vec![fin(3, 3)]);
    }

    #[test]
    fn every_sighting_refreshes_the_dedup_memory() {
        // Horizon 60 s; each click moves max_ts to its own time.
        let p = Params { dedup_horizon_ms: 60_000, ..params() };
        let (x, y) = (rid(1), rid(2));
        let lines = [
            click("a", 0, "u1", &x),       // counted; X remembered at 0
            click("a", 2_000, "u2", &y),   // counted
            click("a", 50_000, "u1", &x),  // 0 >= 50 000 - 60 000 (0): duplicate; X now at 50 000
            click("a", 61_000, "u1", &x),  // 50 000 >= 1 000: duplicate (at 0 only, it would count); X at 61 000
            click("a", 115_000, "u1", &x), // 61 000 >= 55 000: duplicate; X at 115 000
        ];
        let r = recount(&log(&lines), None, &p);
        assert_eq!(r.duplicates, 3);
        assert_eq!(window(&r, "ad", "a", MINUTE_MS, 0), vec![fin(2, 2)]);
        assert_eq!(window(&r, "ad", "a", MINUTE_MS, MINUTE_MS), vec![]);

        // A sighting more than one horizon after the one before it counts.
        let mut lines = lines[..4].to_vec();
        lines.push(click("a", 121_001, "u1", &x)); // 61 000 < 121 001 - 60 000: counted
        let r = recount(&log(&lines), None, &p);
        assert_eq!(r.duplicates, 2);
        assert_eq!(window(&r, "ad", "a", MINUTE_MS, 2 * MINUTE_MS), vec![fin(1, 1)]);
    }

    #[test]
    fn a_retried_too_late_click_counts_once() {
        let lines = [
            click("a", 300_000, "u1", &rid(1)),
            // Far behind the watermark: too late, but remembered at 300 000.
            click("a", 1_000, "u2", &rid(2)),
            click("a", 1_000, "u2", &rid(2)),
        ];
        let r = recount(&log(&lines), None, &params());
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.too_late, 1);
    }

    #[test]
    fn dedup_horizon_includes_the_retry_itself_and_is_inclusive() {
        let p = Params { dedup_horizon_ms: 10_000, ..params() };
        let lines = [
            click("a", 0, "u1", &rid(1)),
            // The retry itself moves max_ts to 15 000: oldest 5 000 > 0, not a duplicate.
            click("a", 15_000, "u1", &rid(1)),
            click("a", 16_000, "u2", &rid(2)),
            // oldest 10 000 <= 16 000 remembered: duplicate.
            click("a", 20_000, "u2", &rid(2)),
            click("a", 30_000, "u3", &rid(3)),
            // max_ts 40 000, oldest exactly 30 000 = remembered: still a duplicate.
            click("a", 40_000, "u3", &rid(3)),
        ];
        let r = recount(&log(&lines), None, &p);
        assert_eq!(r.duplicates, 2);
        assert_eq!(window(&r, "ad", "a", MINUTE_MS, 0), vec![fin(4, 3)]);
    }

    #[test]
    fn a_duplicate_still_advances_the_watermark() {
        let lines = [
            click("a", 0, "u1", &rid(1)),
            click("a", 200_000, "u1", &rid(1)), // duplicate, yet max_ts = 200 000
            click("a", 1_000, "u2", &rid(2)),   // wm 200 000 >= 60 000: too late
        ];
        let r = recount(&log(&lines), None, &params());
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.too_late, 1);
        assert_eq!(window(&r, "ad", "a", MINUTE_MS, 0), vec![fin(1, 1)]);
        assert_eq!(window(&r, "ad", "a", MINUTE_MS, 180_000), vec![]);
    }

    #[test]
    fn slack_and_allowed_lateness_bound_on_time() {
        let p = Params { slack_ms: 5_000, allowed_lateness_ms: 10_000, ..params() };
        // end1m + lateness = 70 000; on time while wm = max_ts - 5 000 < 70 000.
        let on_time = [click("a", 74_999, "u1", &rid(1)), click("a", 30_000, "u2", &rid(2))];
        let r = recount(&log(&on_time), None, &p);
        assert_eq!((r.too_late, window(&r, "ad", "a", MINUTE_MS, 0)), (0, vec![fin(1, 1)]));

        let too_late = [click("a", 75_000, "u1", &rid(1)), click("a", 30_000, "u2", &rid(2))];
        let r = recount(&log(&too_late), None, &p);
        assert_eq!((r.too_late, window(&r, "ad", "a", MINUTE_MS, 0)), (1, vec![]));
        assert_eq!(ledger_entry(&r, "ad", "a", 0).held, 1);
    }

    #[test]
    fn the_watermark_is_per_partition() {
        let p = Params { partitions: 2, ..params() };
        let lines = [
            click("a", 300_000, "u1", &rid_in(0, 2, 0)),
            click("a", 1_000, "u2", &rid_in(1, 2, 0)), // partition 1 has wm 0: on time
            click("a", 1_000, "u3", &rid_in(0, 2, 1)), // partition 0 has wm 300 000: too late
        ];
        let r = recount(&log(&lines), None, &p);
        assert_eq!(r.too_late, 1);
        assert_eq!(window(&r, "ad", "a", MINUTE_MS, 0), vec![fin(1, 1)]);
        let entry = ledger_entry(&r, "ad", "a", 0);
        assert_eq!(entry.request_ids, BTreeSet::from([rid_in(0, 2, 1)]));
        assert_eq!((entry.count, entry.held), (1, 1));
    }

    #[test]
    fn restating_batches_emit_versions_in_tau_order() {
        let p = Params { restate_within_ms: Some(1_000_000), ..params() };
        let lines = [
            click("a", 10_000, "u1", &rid(1)),
            click("a", 130_000, "u2", &rid(2)),
            click("a", 20_000, "u3", &rid(3)), // wm 130 000: tau 130 000
            click("a", 30_000, "u1", &rid(4)), // tau 130 000
            click("a", 205_000, "u4", &rid(5)),
            click("a", 40_000, "u5", &rid(6)), // wm 205 000: tau 200 000
        ];
        let r = recount(&log(&lines), None, &p);
        assert_eq!(window(&r, "ad", "a", MINUTE_MS, 0), vec![fin(1, 1), restated(2, 3, 2), restated(3, 4, 3)]);
        assert_eq!(window(&r, "ad", "a", MINUTE_MS, 120_000), vec![fin(1, 1)]);
        assert_eq!(window(&r, "ad", "a", MINUTE_MS, 180_000), vec![fin(1, 1)]);
        assert_eq!(r.too_late, 3);
        let entry = ledger_entry(&r, "ad", "a", 0);
        assert_eq!((entry.count, entry.held), (3, 0));
        assert_eq!(entry.request_ids, BTreeSet::from([rid(3), rid(4), rid(6)]));
    }

    #[test]
    fn a_late_only_window_starts_at_restated_version_1() {
        let p = Params { restate_within_ms: Some(1_000_000), ..params() };
        let lines = [
            click("a", 130_000, "u1", &rid(1)),
            click("b", 10_000, "u2", &rid(2)), // wm 130 000: tau 130 000
            click("a", 205_000, "u1", &rid(3)),
            click("b", 20_000, "u3", &rid(4)), // wm 205 000: tau 200 000
        ];
        let r = recount(&log(&lines), None, &p);
        assert_eq!(window(&r, "ad", "b", MINUTE_MS, 0), vec![restated(1, 1, 1), restated(2, 2, 2)]);
    }

    #[test]
    fn a_restating_batch_before_the_close_joins_the_final_row() {
        // Lateness 1 s is not a multiple of the 10 s epoch: the 1m window
        // [0, 60 000) closes at 61 000, the batch is tau 60 000.
        let p = Params { allowed_lateness_ms: 1_000, restate_within_ms: Some(1_000_000), ..params() };
        let lines = [
            click("a", 0, "u1", &rid(1)),
            click("a", 65_000, "u2", &rid(2)),
            click("a", 10_000, "u3", &rid(3)), // wm 65 000 >= 61 000: too late, tau 60 000
        ];
        let r = recount(&log(&lines), None, &p);
        assert_eq!(window(&r, "ad", "a", MINUTE_MS, 0), vec![fin(2, 2)]);
        assert_eq!(r.too_late, 1);
        assert_eq!(ledger_entry(&r, "ad", "a", 0).count, 1);
    }

    #[test]
    fn a_5m_final_includes_a_click_late_for_its_1m_window() {
        let p = Params { windows_ms: vec![MINUTE_MS, 5 * MINUTE_MS], restate_within_ms: Some(1_000_000), ..params() };
        let lines = [
            click("a", 10_000, "u1", &rid(1)),
            click("a", 130_000, "u2", &rid(2)),
            click("a", 30_000, "u3", &rid(3)), // wm 130 000: tau 130 000, before 5m close
            click("a", 320_000, "u4", &rid(4)),
            click("a", 40_000, "u1", &rid(5)), // wm 320 000: tau 320 000, after 5m close
        ];
        let r = recount(&log(&lines), None, &p);
        assert_eq!(window(&r, "ad", "a", MINUTE_MS, 0), vec![fin(1, 1), restated(2, 2, 2), restated(3, 3, 2)]);
        assert_eq!(window(&r, "ad", "a", 5 * MINUTE_MS, 0), vec![fin(3, 3), restated(2, 4, 3)]);
        assert_eq!(window(&r, "ad", "a", 5 * MINUTE_MS, 300_000), vec![fin(1, 1)]);
        assert_eq!(window(&r, "ad", "a", MINUTE_MS, 300_000), vec![fin(1, 1)]);
    }

    #[test]
    fn restate_within_bounds_restating_and_the_rest_is_held() {
        let p = Params { restate_within_ms: Some(100_000), ..params() };
        let lines = [
            click("a", 0, "u1", &rid(1)),
            click("a", 150_000, "u2", &rid(2)),
            click("a", 10_000, "u3", &rid(3)), // wm 150 000 < 60 000 + 100 000: tau 150 000
            click("a", 200_000, "u4", &rid(4)),
            click("a", 20_000, "u5", &rid(5)),  // wm 200 000 >= 160 000: held
            click("a", 130_000, "u6", &rid(6)), // wm 200 000 < 280 000: tau 200 000
        ];
        let r = recount(&log(&lines), None, &p);
        assert_eq!(window(&r, "ad", "a", MINUTE_MS, 0), vec![fin(1, 1), restated(2, 2, 2)]);
        assert_eq!(window(&r, "ad", "a", MINUTE_MS, 120_000), vec![fin(1, 1), restated(2, 2, 2)]);
        assert_eq!(window(&r, "ad", "a", MINUTE_MS, 180_000), vec![fin(1, 1)]);
        assert_eq!(r.too_late, 3);
        let first = ledger_entry(&r, "ad", "a", 0);
        assert_eq!((first.count, first.held), (2, 1));
        assert_eq!(first.request_ids, BTreeSet::from([rid(3), rid(5)]));
        let second = ledger_entry(&r, "ad", "a", 120_000);
        assert_eq!((second.count, second.held), (1, 0));

        // Policy hold: the same log restates nothing.
        let held = recount(&log(&lines), None, &params());
        assert_eq!(window(&held, "ad", "a", MINUTE_MS, 0), vec![fin(1, 1)]);
        assert!(held.rows.iter().all(|row| row.status == "final"));
        assert_eq!(held.ledger.iter().map(|e| e.held).sum::<u64>(), 3);
    }

    #[test]
    fn the_catalog_version_follows_the_clicks_1m_window() {
        let catalog = "# ads\n\
                       ad_id,campaign_id,advertiser_id,valid_from\n\
                       a,c1,adv1\n\
                       a, c2 ,adv1,120000\n\
                       \n\
                       b,c1,adv2,60000\n";
        let p = Params {
            windows_ms: vec![MINUTE_MS, 5 * MINUTE_MS],
            group_by: vec!["ad".into(), "campaign".into(), "advertiser".into()],
            ..params()
        };
        let lines = [
            // The client's campaign_id is ignored.
            format!(r#"{{"ad_id":"a","timestamp":10000,"user_id":"u1","request_id":"{}","campaign_id":"cX"}}"#, rid(1)),
            click("b", 59_999, "u4", &rid(2)), // before b's first version: unknown
            click("b", 70_000, "u3", &rid(3)),
            click("a", 130_000, "u2", &rid(4)), // a's second version
            click("z", 130_500, "u5", &rid(5)), // not in the catalog
        ];
        let r = recount(&log(&lines), Some(catalog), &p);
        let m = MINUTE_MS;
        assert_eq!(window(&r, "campaign", "c1", m, 0), vec![fin(1, 1)]);
        assert_eq!(window(&r, "campaign", "c1", m, 60_000), vec![fin(1, 1)]);
        assert_eq!(window(&r, "campaign", "c2", m, 120_000), vec![fin(1, 1)]);
        assert_eq!(window(&r, "campaign", "unknown", m, 0), vec![fin(1, 1)]);
        assert_eq!(window(&r, "campaign", "unknown", m, 120_000), vec![fin(1, 1)]);
        assert_eq!(window(&r, "advertiser", "adv1", m, 0), vec![fin(1, 1)]);
        assert_eq!(window(&r, "advertiser", "adv1", m, 120_000), vec![fin(1, 1)]);
        assert_eq!(window(&r, "advertiser", "adv2", m, 60_000), vec![fin(1, 1)]);
        assert_eq!(window(&r, "advertiser", "unknown", m, 0), vec![fin(1, 1)]);
        assert_eq!(window(&r, "advertiser", "unknown", m, 120_000), vec![fin(1, 1)]);
        assert_eq!(window(&r, "ad", "b", m, 0), vec![fin(1, 1)]);
        assert_eq!(window(&r, "campaign", "c1", 5 * m, 0), vec![fin(2, 2)]);
        assert_eq!(window(&r, "campaign", "c2", 5 * m, 0), vec![fin(1, 1)]);
        assert_eq!(window(&r, "campaign", "unknown", 5 * m, 0), vec![fin(2, 2)]);
        assert_eq!(window(&r, "advertiser", "adv1", 5 * m, 0), vec![fin(2, 2)]);
        assert_eq!(window(&r, "ad", "a", 5 * m, 0), vec![fin(2, 2)]);
        assert!(r.rows.iter().all(|row| row.key != "cX"));
        // 1m: 5 per key type; 5m: 3 per key type.
        assert_eq!(r.rows.len(), 24);
    }

    #[test]
    fn catalog_ties_go_to_the_later_row() {
        let catalog = parse_catalog("a,c1,adv1,0\na,c2,adv2,0\n");
        assert_eq!(catalog.attribute("a", 0), ("c2".to_string(), "adv2".to_string()));
    }

    #[test]
    fn without_a_catalog_every_ad_is_unknown() {
        let p = Params { group_by: vec!["campaign".into(), "advertiser".into()], ..params() };
        let lines = [click("a", 0, "u1", &rid(1)), click("b", 1, "u2", &rid(2))];
        let r = recount(&log(&lines), None, &p);
        assert_eq!(window(&r, "campaign", "unknown", MINUTE_MS, 0), vec![fin(2, 2)]);
        assert_eq!(window(&r, "advertiser", "unknown", MINUTE_MS, 0), vec![fin(2, 2)]);
        assert_eq!(r.rows.len(), 2);
    }

    #[test]
    fn the_ledger_has_one_entry_per_key_type() {
        let catalog = "a,c1,adv1\n";
        let p = Params { group_by: vec!["campaign".into(), "ad".into()], ..params() };
        let lines = [click("a", 200_000, "u1", &rid(1)), click("a", 0, "u2", &rid(2))];
        let r = recount(&log(&lines), Some(catalog), &p);
        let keys: Vec<(&str, &str, u64)> = r.ledger.iter().map(|e| (e.key_type.as_str(), e.key.as_str(), e.window_start)).collect();
        assert_eq!(keys, vec![("ad", "a", 0), ("campaign", "c1", 0)]);
        assert_eq!(r.too_late, 1);
    }

    #[test]
    fn rows_are_sorted_and_distinct_users_are_exact() {
        let p = Params { windows_ms: vec![5 * MINUTE_MS, MINUTE_MS], group_by: vec!["campaign".into(), "ad".into()], ..params() };
        let lines =
            [click("b", 0, "u1", &rid(1)), click("a", 1, "u1", &rid(2)), click("a", 2, "u1", &rid(3)), click("a", 3, "U1", &rid(4))];
        let r = recount(&log(&lines), None, &p);
        let order: Vec<(String, String, u64, u64, u32)> =
            r.rows.iter().map(|x| (x.key_type.clone(), x.key.clone(), x.granularity_ms, x.window_start, x.version)).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted);
        assert_eq!(window(&r, "ad", "a", MINUTE_MS, 0), vec![fin(3, 2)]);
        assert_eq!(window(&r, "campaign", "unknown", 5 * MINUTE_MS, 0), vec![fin(4, 2)]);
    }
}
