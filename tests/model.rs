//! Model tests: the engine against the independent recount in `reference/`.
//!
//! The same generated input runs through the Timely job with 1, 2 and 4
//! workers and several epoch lengths; every final and restated row, and the
//! late ledger, must equal what the naive recount of SEMANTICS.md computes
//! from the raw lines. Clicks are compared exactly; distinct users within
//! the HyperLogLog's stated error.

mod reference;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use proptest::prelude::*;

use reference::{recount, Params, Recount};
use tally::dataflow::hll::STANDARD_ERROR;
use tally::job::{Job, LatePolicy, SinkSpec, SourceSpec};
use tally::row::{format_uuid, LateEntry, Row, Status};
use tally::run::{run, RunOptions};
use tally::sources::generator::{write_catalog, write_ndjson, GeneratorConfig};

/// A generated input with a catalog that changes mid-stream and a few bad lines.
struct Input {
    ndjson: String,
    catalog: String,
}

fn input(seed: u64, clicks: u64, partitions: u32) -> Input {
    let config = GeneratorConfig {
        seed,
        clicks,
        ads: 300,
        campaigns: 40,
        advertisers: 7,
        users: 5_000,
        duplicate_rate: 0.05,
        too_late_share: 0.01,
        rate_per_s: 400,
        partitions,
        idle_partitions: 1.min(partitions - 1),
        ..GeneratorConfig::default()
    };
    let mut out = Vec::new();
    write_ndjson(&config, &mut out).unwrap();
    let mut ndjson = String::from_utf8(out).unwrap();
    // Bad lines anywhere must be skipped by both sides alike.
    ndjson.insert_str(0, "{\"ad_id\":\"\",\"timestamp\":1,\"user_id\":\"u\",\"request_id\":\"00000000-0000-0000-0000-000000000000\"}\n");
    ndjson.push_str(
        "not json\n{\"ad_id\":\"ad-000001\",\"timestamp\":-5,\"user_id\":\"u\",\"request_id\":\"00000000-0000-0000-0000-000000000001\"}\n",
    );
    let mut csv = Vec::new();
    write_catalog(&config, &mut csv).unwrap();
    let mut catalog = String::from_utf8(csv).unwrap();
    // A re-assignment from minute 3 on: clicks before and after split.
    let switch = config.start_ms + 3 * 60_000;
    for ad in ["ad-000000", "ad-000001", "ad-viral"] {
        catalog.push_str(&format!("{ad},cmp-moved,adv-moved,{switch}\n"));
    }
    // A version that starts later than the ad's first clicks: unknown before.
    catalog.push_str(&format!("ad-000096,cmp-late,adv-late,{switch}\n"));
    Input { ndjson, catalog }
}

struct Setup {
    partitions: u32,
    epoch_ms: u64,
    allowed_lateness_ms: u64,
    late: LatePolicy,
}

fn job(dir: &Path, setup: &Setup) -> Job {
    let mut job = Job::defaults(&dir.join("model.toml"));
    job.partitions = setup.partitions;
    job.epoch_ms = setup.epoch_ms;
    job.allowed_lateness_ms = setup.allowed_lateness_ms;
    job.late = setup.late.clone();
    job.source = SourceSpec::File { path: Some(dir.join("clicks.ndjson")) };
    job.catalog = Some(dir.join("ads.csv"));
    job.sink = SinkSpec::Memory;
    job
}

fn params(job: &Job) -> Params {
    Params {
        partitions: job.partitions,
        epoch_ms: job.epoch_ms,
        slack_ms: job.slack_ms,
        allowed_lateness_ms: job.allowed_lateness_ms,
        dedup_horizon_ms: job.dedup_horizon_ms,
        windows_ms: job.windows_ms.clone(),
        restate_within_ms: match job.late {
            LatePolicy::Restate { within_ms } => Some(within_ms),
            LatePolicy::Hold => None,
        },
        group_by: job.group_by.iter().map(|k| k.as_str().to_string()).collect(),
    }
}

/// Rows by identity: (key type, key, granularity, start, version).
type RowKey = (String, String, u64, u64, u32);

fn engine_rows(rows: &[Row]) -> BTreeMap<RowKey, (Status, u64, u64)> {
    let mut out = BTreeMap::new();
    for row in rows.iter().filter(|r| r.status != Status::Partial) {
        let key = (row.key_type.as_str().to_string(), row.key.to_string(), row.granularity_ms, row.window_start, row.version);
        let previous = out.insert(key.clone(), (row.status, row.clicks, row.distinct_users));
        assert!(previous.is_none(), "row emitted twice: {key:?}");
    }
    out
}

/// Ledger by (key type, key, 1m window): count, held, request ids.
type Ledger = BTreeMap<(String, String, u64), (u64, u64, BTreeSet<String>)>;

fn engine_ledger(late: &[LateEntry]) -> Ledger {
    let mut out = Ledger::new();
    for entry in late {
        let slot = out.entry((entry.key_type.as_str().to_string(), entry.key.to_string(), entry.window_start)).or_default();
        let n = entry.request_ids.len() as u64;
        slot.0 += n;
        if entry.held {
            slot.1 += n;
        }
        for id in &entry.request_ids {
            assert!(slot.2.insert(format_uuid(*id)), "request id {} in the ledger twice", format_uuid(*id));
        }
    }
    out
}

fn distinct_close(estimate: u64, exact: u64) -> bool {
    let tolerance = (4.0 * STANDARD_ERROR * exact as f64).max(2.0);
    (estimate as f64 - exact as f64).abs() <= tolerance
}

/// Runs the engine and checks it against the recount; returns the final rows.
fn check(dir: &Path, setup: &Setup, workers: usize, expected: &Recount) -> BTreeMap<RowKey, (Status, u64, u64)> {
    let job = job(dir, setup);
    let report = run(&job, &RunOptions { workers, ..Default::default() }).expect("job runs");
    let committed = report.memory.expect("memory sink");
    let rows = engine_rows(&committed.rows);
    let mut missing = Vec::new();
    for want in &expected.rows {
        let key = (want.key_type.clone(), want.key.clone(), want.granularity_ms, want.window_start, want.version);
        match rows.get(&key) {
            None => missing.push(format!("missing {key:?} {} clicks={}", want.status, want.clicks)),
            Some((status, clicks, distinct)) => {
                let status = serde_json::to_value(status).unwrap();
                assert_eq!(status, want.status.as_str(), "status of {key:?}");
                assert_eq!(*clicks, want.clicks, "clicks of {key:?} (workers {workers}, epoch {})", setup.epoch_ms);
                assert!(
                    distinct_close(*distinct, want.distinct_users),
                    "distinct users of {key:?}: {distinct} vs exact {}",
                    want.distinct_users
                );
            }
        }
    }
    assert!(missing.is_empty(), "{} expected rows missing, first: {:?}", missing.len(), &missing[..missing.len().min(5)]);
    assert_eq!(rows.len(), expected.rows.len(), "engine emitted rows the recount does not expect");

    let ledger = engine_ledger(&committed.late);
    let want: Ledger = expected
        .ledger
        .iter()
        .map(|e| ((e.key_type.clone(), e.key.clone(), e.window_start), (e.count, e.held, e.request_ids.clone())))
        .collect();
    assert_eq!(ledger, want, "late ledger");
    let stats = report.stats;
    assert_eq!(stats.duplicates, expected.duplicates, "duplicates dropped");
    assert_eq!(stats.restating + stats.held, expected.too_late, "too-late clicks");
    rows
}

fn write_input(dir: &Path, input: &Input) {
    std::fs::File::create(dir.join("clicks.ndjson")).unwrap().write_all(input.ndjson.as_bytes()).unwrap();
    std::fs::File::create(dir.join("ads.csv")).unwrap().write_all(input.catalog.as_bytes()).unwrap();
}

fn same_across_workers(seed: u64, clicks: u64, setup: Setup) {
    let dir = tempfile::tempdir().unwrap();
    let input = input(seed, clicks, setup.partitions);
    write_input(dir.path(), &input);
    let expected = recount(&input.ndjson, Some(&input.catalog), &params(&job(dir.path(), &setup)));
    assert!(expected.too_late > 0 && expected.duplicates > 0, "the input exercises late and duplicate clicks");
    assert!(expected.rows.iter().any(|r| r.status == "restated"), "the input restates windows");
    let one = check(dir.path(), &setup, 1, &expected);
    for workers in [2, 4] {
        assert_eq!(check(dir.path(), &setup, workers, &expected), one, "workers {workers} vs 1");
    }
}

#[test]
fn default_job_matches_recount_for_1_2_and_4_workers() {
    same_across_workers(
        11,
        60_000,
        Setup { partitions: 8, epoch_ms: 1_000, allowed_lateness_ms: 10_000, late: LatePolicy::Restate { within_ms: 3_600_000 } },
    );
}

#[test]
fn held_clicks_beyond_restatement_horizon_match_recount() {
    same_across_workers(
        12,
        40_000,
        Setup { partitions: 3, epoch_ms: 500, allowed_lateness_ms: 0, late: LatePolicy::Restate { within_ms: 90_000 } },
    );
}

#[test]
fn hold_policy_never_restates() {
    let setup = Setup { partitions: 4, epoch_ms: 2_000, allowed_lateness_ms: 4_000, late: LatePolicy::Hold };
    let dir = tempfile::tempdir().unwrap();
    let input = input(13, 30_000, setup.partitions);
    write_input(dir.path(), &input);
    let expected = recount(&input.ndjson, Some(&input.catalog), &params(&job(dir.path(), &setup)));
    let rows = check(dir.path(), &setup, 2, &expected);
    assert!(rows.values().all(|(status, _, _)| *status == Status::Final));
    assert!(expected.too_late > 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, .. ProptestConfig::default() })]

    #[test]
    fn random_seeds_and_epochs_match_recount(
        seed in 100u64..10_000,
        epoch_ms in prop::sample::select(vec![100u64, 1_000, 5_000, 60_000]),
        lateness_epochs in 0u64..4,
        partitions in 1u32..9,
        workers in prop::sample::select(vec![1usize, 2, 4]),
    ) {
        let setup = Setup {
            partitions,
            epoch_ms,
            allowed_lateness_ms: lateness_epochs * epoch_ms,
            late: LatePolicy::Restate { within_ms: 600_000.max(epoch_ms * (lateness_epochs + 1)) },
        };
        let dir = tempfile::tempdir().unwrap();
        let input = input(seed, 20_000, partitions);
        write_input(dir.path(), &input);
        let expected = recount(&input.ndjson, Some(&input.catalog), &params(&job(dir.path(), &setup)));
        check(dir.path(), &setup, workers, &expected);
    }
}

/// The acceptance scale: a 5M-click stream (default generator: 10k ads, a
/// viral ad at 40 %, retries, jitter, too-late clicks, an idle partition)
/// gives identical rows with 1 and 4 workers, equal to the recount.
#[test]
fn five_million_clicks_match_recount_with_1_and_4_workers() {
    let config = GeneratorConfig { seed: 5, clicks: 5_000_000, partitions: 8, ..GeneratorConfig::default() };
    let mut out = Vec::new();
    write_ndjson(&config, &mut out).unwrap();
    let ndjson = String::from_utf8(out).unwrap();
    let mut csv = Vec::new();
    write_catalog(&config, &mut csv).unwrap();
    let catalog = String::from_utf8(csv).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_input(dir.path(), &Input { ndjson: ndjson.clone(), catalog: catalog.clone() });
    let setup = Setup { partitions: 8, epoch_ms: 1_000, allowed_lateness_ms: 10_000, late: LatePolicy::Restate { within_ms: 3_600_000 } };
    let expected = recount(&ndjson, Some(&catalog), &params(&job(dir.path(), &setup)));
    drop(ndjson);
    assert!(expected.rows.iter().any(|r| r.status == "restated"));
    let one = check(dir.path(), &setup, 1, &expected);
    let four = check(dir.path(), &setup, 4, &expected);
    assert_eq!(one, four);
}

/// Exact boundaries, where an off-by-one in the engine would change a count:
/// a click read when its window's end + allowed lateness equals the
/// partition's watermark is too late, one millisecond before it is on time;
/// a retry exactly one horizon after its original is still a duplicate, one
/// millisecond later it is not.
#[test]
fn boundaries_of_lateness_and_dedup_match_recount() {
    let clicks: [(u64, u128); 8] = [
        (74_999, 1),
        (59_999, 2), // watermark 69 999 < 60 000 + 10 000: on time
        (75_000, 3),
        (59_998, 4), // watermark 70 000 = 60 000 + 10 000: too late
        (134_999, 5),
        (134_999, 2), // remembered at 74 999 = 134 999 − 60 000: duplicate
        (135_001, 7),
        (135_001, 3), // remembered at 75 000 < 135 001 − 60 000: counted again
    ];
    let ndjson: String = clicks
        .iter()
        .map(|(ts, id)| format!("{{\"ad_id\":\"a\",\"timestamp\":{ts},\"user_id\":\"u{id}\",\"request_id\":\"{}\"}}\n", format_uuid(*id)))
        .collect();
    let input = Input { ndjson, catalog: "ad_id,campaign_id,advertiser_id\na,c,v\n".into() };
    let dir = tempfile::tempdir().unwrap();
    write_input(dir.path(), &input);
    let setup = Setup { partitions: 1, epoch_ms: 1_000, allowed_lateness_ms: 10_000, late: LatePolicy::Restate { within_ms: 3_600_000 } };
    let expected = recount(&input.ndjson, Some(&input.catalog), &params(&job(dir.path(), &setup)));
    assert_eq!((expected.duplicates, expected.too_late), (1, 1), "the input sits on the boundaries");
    for workers in [1, 2] {
        check(dir.path(), &setup, workers, &expected);
    }
}

/// The dedup horizon slides: every sighting of a request id, a dropped
/// duplicate included, refreshes it. X@61000 is a duplicate because X@50000
/// refreshed X (remembered at 0 only, it would count again), and X@115000
/// is one because X@61000 did.
#[test]
fn a_retry_chain_within_the_horizon_counts_once_match_recount() {
    let clicks: [(u64, u128); 6] = [(0, 1), (2_000, 2), (50_000, 1), (61_000, 1), (115_000, 1), (116_000, 3)];
    let ndjson: String = clicks
        .iter()
        .map(|(ts, id)| format!("{{\"ad_id\":\"a\",\"timestamp\":{ts},\"user_id\":\"u{id}\",\"request_id\":\"{}\"}}\n", format_uuid(*id)))
        .collect();
    let input = Input { ndjson, catalog: "ad_id,campaign_id,advertiser_id\na,c,v\n".into() };
    let dir = tempfile::tempdir().unwrap();
    write_input(dir.path(), &input);
    let setup = Setup { partitions: 1, epoch_ms: 1_000, allowed_lateness_ms: 10_000, late: LatePolicy::Restate { within_ms: 3_600_000 } };
    let expected = recount(&input.ndjson, Some(&input.catalog), &params(&job(dir.path(), &setup)));
    assert_eq!(expected.duplicates, 3, "X@50000, X@61000 and X@115000");
    check(dir.path(), &setup, 1, &expected);
}
