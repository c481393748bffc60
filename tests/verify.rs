//! `tally::verify` end to end through public APIs: hand-made clicks in a real
//! log, hand-counted rows committed to a real embedded store, and the report
//! of the comparison when the store is right and when it is wrong.

use std::path::Path;

use tally::catalog::Catalog;
use tally::event::{partition_of, Click, KeyType};
use tally::job::{Job, LatePolicy};
use tally::log::{Log, LogOptions};
use tally::row::{Row, Status};
use tally::store::{EmbeddedStore, EpochCommit, EpochStore, StoredRow};
use tally::verify::{compare, recount, Recount, Report, VerifyError};

const MINUTE: u64 = 60_000;
const FIVE: u64 = 5 * MINUTE;
/// a1 moves from campaign c1 to c2 at 2m; a2 is not in the catalog.
const CATALOG: &str = "ad_id,campaign_id,advertiser_id,valid_from\na1,c1,adv1,0\na1,c2,adv1,120000\n";

/// Epoch 1 s, slack 5 s, allowed lateness 10 s, dedup horizon 60 s (the
/// defaults); windows 1m and 5m by ad and campaign; restate within 2m.
fn job() -> Job {
    let mut job = Job::defaults(Path::new("verify.toml"));
    job.windows_ms = vec![MINUTE, FIVE];
    job.group_by = vec![KeyType::Ad, KeyType::Campaign];
    job.late = LatePolicy::Restate { within_ms: 2 * MINUTE };
    job
}

fn click(ad: &str, ts: u64, user: u64, request_id: u128) -> Click {
    Click { ad: ad.into(), ts, user, request_id }
}

/// One partition, in this order. The comment is each click's fate, with the
/// partition watermark (max_ts − 5 s) before it.
fn clicks() -> Vec<Click> {
    vec![
        click("a1", 10_000, 1, 1),   // wm 0: on time
        click("a1", 20_000, 2, 2),   // on time
        click("a1", 20_500, 2, 1),   // retry of 1: duplicate
        click("a2", 70_000, 3, 3),   // on time, campaign unknown
        click("a1", 130_000, 1, 4),  // on time, campaign c2 (1m window 2m)
        click("a1", 30_000, 5, 5),   // wm 125 s: too late, restating in batch 125 s
        click("a1", 30_000, 5, 5),   // retry of a too-late click: duplicate
        click("a1", 200_000, 4, 6),  // on time
        click("a1", 40_000, 6, 7),   // wm 195 s: 1m + 2m <= 195 s: held
        click("a1", 260_000, 1, 8),  // on time
        click("a1", 320_000, 2, 9),  // on time
        click("a1", 250_000, 7, 10), // wm 315 s: too late, restating in batch 315 s
    ]
}

#[allow(clippy::too_many_arguments)]
fn row(key_type: KeyType, key: &str, granularity_ms: u64, window_start: u64, status: Status, version: u32, clicks: u64, users: u64) -> Row {
    Row { key_type, key: key.into(), granularity_ms, window_start, clicks, distinct_users: users, status, version }
}

fn fin(key_type: KeyType, key: &str, granularity_ms: u64, window_start: u64, clicks: u64, users: u64) -> Row {
    row(key_type, key, granularity_ms, window_start, Status::Final, 1, clicks, users)
}

fn restated(key_type: KeyType, key: &str, granularity_ms: u64, window_start: u64, version: u32, clicks: u64, users: u64) -> Row {
    row(key_type, key, granularity_ms, window_start, Status::Restated, version, clicks, users)
}

/// The rows SEMANTICS.md gives for [`clicks`], counted by hand, in window
/// then version order.
fn hand_counted() -> Vec<Row> {
    use KeyType::{Ad, Campaign};
    vec![
        fin(Ad, "a1", MINUTE, 0, 2, 2),
        restated(Ad, "a1", MINUTE, 0, 2, 3, 3), // + click 5, batch 125 s >= close 70 s
        fin(Ad, "a1", MINUTE, 120_000, 1, 1),
        fin(Ad, "a1", MINUTE, 180_000, 1, 1),
        fin(Ad, "a1", MINUTE, 240_000, 1, 1),
        restated(Ad, "a1", MINUTE, 240_000, 2, 2, 2), // + click 10, batch 315 s >= close 310 s
        fin(Ad, "a1", MINUTE, 300_000, 1, 1),
        fin(Ad, "a1", FIVE, 0, 6, 4), // click 5's batch 125 s is before the close 310 s
        restated(Ad, "a1", FIVE, 0, 2, 7, 5),
        fin(Ad, "a1", FIVE, 300_000, 1, 1),
        fin(Ad, "a2", MINUTE, 60_000, 1, 1),
        fin(Ad, "a2", FIVE, 0, 1, 1),
        fin(Campaign, "c1", MINUTE, 0, 2, 2),
        restated(Campaign, "c1", MINUTE, 0, 2, 3, 3),
        fin(Campaign, "c1", FIVE, 0, 3, 3),
        fin(Campaign, "c2", MINUTE, 120_000, 1, 1),
        fin(Campaign, "c2", MINUTE, 180_000, 1, 1),
        fin(Campaign, "c2", MINUTE, 240_000, 1, 1),
        restated(Campaign, "c2", MINUTE, 240_000, 2, 2, 2),
        fin(Campaign, "c2", MINUTE, 300_000, 1, 1),
        fin(Campaign, "c2", FIVE, 0, 3, 2),
        restated(Campaign, "c2", FIVE, 0, 2, 4, 3),
        fin(Campaign, "c2", FIVE, 300_000, 1, 1),
        fin(Campaign, "unknown", MINUTE, 60_000, 1, 1),
        fin(Campaign, "unknown", FIVE, 0, 1, 1),
    ]
}

const HAND_COUNTED_WINDOWS: u64 = 19;

/// A one-partition log holding `clicks`, and its end offsets.
fn log_of(dir: &Path, partitions: u32, clicks: &[Click]) -> (Log, Vec<u64>) {
    let log = Log::open(&dir.join("log"), partitions, LogOptions::default()).unwrap();
    log.append(clicks).unwrap();
    let ends = log.end_offsets();
    (log, ends)
}

fn recount_of(dir: &Path) -> Recount {
    let (log, ends) = log_of(dir, 1, &clicks());
    let catalog = Catalog::parse(CATALOG).unwrap();
    recount(&log, &ends, &job(), Some(&catalog)).unwrap()
}

/// A new store in `dir` holding `rows`, committed in one epoch (settled
/// rows of one window in version order, as the job emits them).
fn store_with(dir: &Path, rows: Vec<Row>) -> EmbeddedStore {
    let mut store = EmbeddedStore::open(dir).unwrap();
    let generation = store.begin_generation().unwrap();
    let rows = rows.into_iter().map(|row| StoredRow { row, sketch: Vec::new() }).collect();
    store.commit(EpochCommit { epoch: 1, generation, rows, ..EpochCommit::default() }).unwrap();
    store
}

/// Compares a store holding `rows` with the recount of [`clicks`].
fn verify(dir: &Path, rows: Vec<Row>) -> Report {
    let recount = recount_of(dir);
    compare(&recount, &store_with(&dir.join("store"), rows).reader()).unwrap()
}

/// `rows` with the one matching `key`, `granularity`, `start`, `version` changed.
fn edit(mut rows: Vec<Row>, key: &str, granularity_ms: u64, window_start: u64, version: u32, change: impl FnOnce(&mut Row)) -> Vec<Row> {
    let target = rows
        .iter_mut()
        .find(|r| (r.key.as_str(), r.granularity_ms, r.window_start, r.version) == (key, granularity_ms, window_start, version));
    change(target.expect("a hand-counted row"));
    rows
}

#[test]
fn recount_matches_the_hand_counted_rows() {
    let dir = tempfile::tempdir().unwrap();
    let recount = recount_of(dir.path());
    assert_eq!(recount.rows(), hand_counted());
    let stats = recount.stats();
    assert_eq!((stats.clicks_read, stats.duplicates, stats.on_time, stats.restating, stats.held), (12, 2, 7, 2, 1));
}

#[test]
fn store_with_the_contract_rows_has_no_mismatches() {
    let dir = tempfile::tempdir().unwrap();
    let report = verify(dir.path(), hand_counted());
    assert_eq!(report.summary(), format!("verify: {HAND_COUNTED_WINDOWS} windows checked, 0 mismatches"));
    assert!(report.is_clean());
}

#[test]
fn one_click_off_is_reported_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let rows = edit(hand_counted(), "a1", FIVE, 0, 1, |r| r.clicks -= 1);
    let report = verify(dir.path(), rows);
    assert_eq!(report.mismatch_count, 1, "{}", report.summary());
    let m = &report.mismatches[0];
    assert_eq!((m.key_type, m.key.as_str(), m.granularity_ms, m.window_start, m.version), (KeyType::Ad, "a1", FIVE, 0, 1));
    assert_eq!(m.expected, Some((Status::Final, 6, 4)));
    assert_eq!(m.found, Some((Status::Final, 5, 4)));
    assert_eq!(m.reason, "clicks: expected 6, found 5");
    assert_eq!(
        report.summary(),
        format!("verify: {HAND_COUNTED_WINDOWS} windows checked, 1 mismatches\n  ad a1 5m window 0 version 1: clicks: expected 6, found 5")
    );
}

#[test]
fn a_missing_restated_version_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let rows = hand_counted().into_iter().filter(|r| !(r.key == "c2" && r.granularity_ms == FIVE && r.version == 2)).collect();
    let report = verify(dir.path(), rows);
    assert_eq!(report.mismatch_count, 1, "{}", report.summary());
    let m = &report.mismatches[0];
    assert_eq!((m.key.as_str(), m.version, m.expected, m.found), ("c2", 2, Some((Status::Restated, 4, 3)), None));
    assert!(m.reason.starts_with("missing"), "{}", m.reason);
}

#[test]
fn a_missing_window_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let rows = hand_counted().into_iter().filter(|r| r.key != "unknown" || r.granularity_ms != MINUTE).collect();
    let report = verify(dir.path(), rows);
    assert_eq!(report.mismatch_count, 1, "{}", report.summary());
    assert_eq!((report.mismatches[0].key.as_str(), report.mismatches[0].found), ("unknown", None));
}

#[test]
fn an_unexpected_version_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = hand_counted();
    rows.push(restated(KeyType::Ad, "a1", MINUTE, 300_000, 2, 2, 2));
    rows.push(fin(KeyType::Ad, "a3", MINUTE, 0, 1, 1));
    let report = verify(dir.path(), rows);
    assert_eq!(report.windows_checked, HAND_COUNTED_WINDOWS + 1, "a3's window is checked too");
    assert_eq!(report.mismatch_count, 2, "{}", report.summary());
    for m in &report.mismatches {
        assert!(m.reason.starts_with("unexpected"), "{m}");
        assert_eq!(m.expected, None);
    }
}

#[test]
fn a_wrong_status_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    // The final row stored as restated version 2: version 1 is missing,
    // version 2 is not expected.
    let rows = edit(hand_counted(), "a2", MINUTE, 60_000, 1, |r| r.version = 2);
    let rows = edit(rows, "a2", MINUTE, 60_000, 2, |r| r.status = Status::Restated);
    let report = verify(dir.path(), rows);
    assert_eq!(report.mismatch_count, 2, "{}", report.summary());
    assert!(report.mismatches[0].reason.starts_with("missing"));
    assert!(report.mismatches[1].reason.starts_with("unexpected"));
}

#[test]
fn distinct_estimates_within_the_tolerance_pass() {
    let dir = tempfile::tempdir().unwrap();
    let rows = edit(hand_counted(), "a1", FIVE, 0, 1, |r| r.distinct_users = 6); // exact 4, ±2
    let rows = edit(rows, "c2", FIVE, 0, 1, |r| r.distinct_users = 5); // exact 2, off by 3
    let report = verify(dir.path(), rows);
    assert_eq!(report.mismatch_count, 1, "{}", report.summary());
    assert_eq!(report.mismatches[0].reason, "distinct_users: estimate 5 is more than 2 off the exact 2");
}

#[test]
fn distinct_users_are_not_compared_when_the_job_does_not_measure_them() {
    let dir = tempfile::tempdir().unwrap();
    let (log, ends) = log_of(dir.path(), 1, &clicks());
    let catalog = Catalog::parse(CATALOG).unwrap();
    let recount = recount(&log, &ends, &Job { distinct_users: false, ..job() }, Some(&catalog)).unwrap();
    let rows = hand_counted().into_iter().map(|row| Row { distinct_users: 0, ..row }).collect();
    assert!(compare(&recount, &store_with(&dir.path().join("store"), rows).reader()).unwrap().is_clean());
}

#[test]
fn partial_rows_are_not_checked() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = hand_counted();
    rows.push(row(KeyType::Ad, "a1", MINUTE, 360_000, Status::Partial, 0, 9, 9));
    assert!(verify(dir.path(), rows).is_clean());
}

#[test]
fn restating_batches_of_different_partitions_with_the_same_tau_make_one_version() {
    let ids = |partition: u32| (1u128..).filter(move |&id| partition_of(id, 2) == partition);
    let (mut p0, mut p1) = (ids(0), ids(1));
    let mut next = |p: u32| if p == 0 { p0.next().unwrap() } else { p1.next().unwrap() };
    let clicks = vec![
        click("x", 61_000, 1, next(0)),
        click("x", 200_000, 2, next(0)),
        click("x", 100_000, 3, next(0)), // partition 0: wm 195 s, batch 195 s
        click("x", 200_400, 4, next(1)),
        click("x", 100_000, 5, next(1)), // partition 1: wm 195.4 s, batch 195 s
    ];
    let dir = tempfile::tempdir().unwrap();
    let (log, ends) = log_of(dir.path(), 2, &clicks);
    let job = Job { windows_ms: vec![MINUTE], group_by: vec![KeyType::Ad], ..job() };
    let rows = recount(&log, &ends, &job, None).unwrap().rows();
    let expected = vec![
        fin(KeyType::Ad, "x", MINUTE, 60_000, 1, 1),
        restated(KeyType::Ad, "x", MINUTE, 60_000, 2, 3, 3),
        fin(KeyType::Ad, "x", MINUTE, 180_000, 2, 2),
    ];
    assert_eq!(rows, expected);
}

#[test]
fn a_window_counted_only_by_restatement_starts_at_restated_version_1() {
    let dir = tempfile::tempdir().unwrap();
    let (log, ends) = log_of(dir.path(), 1, &[click("x", 200_000, 1, 1), click("x", 100_000, 2, 2)]);
    let job = Job { windows_ms: vec![MINUTE], group_by: vec![KeyType::Ad], ..job() };
    let recount = recount(&log, &ends, &job, None).unwrap();
    let only_restated = restated(KeyType::Ad, "x", MINUTE, 60_000, 1, 1, 1);
    let expected = vec![only_restated.clone(), fin(KeyType::Ad, "x", MINUTE, 180_000, 1, 1)];
    assert_eq!(recount.rows(), expected);
    assert!(compare(&recount, &store_with(&dir.path().join("right"), expected).reader()).unwrap().is_clean());
    let as_final = vec![fin(KeyType::Ad, "x", MINUTE, 60_000, 1, 1), fin(KeyType::Ad, "x", MINUTE, 180_000, 1, 1)];
    let report = compare(&recount, &store_with(&dir.path().join("wrong"), as_final).reader()).unwrap();
    assert_eq!(report.mismatch_count, 1, "{}", report.summary());
    assert_eq!(report.mismatches[0].reason, "status: expected Restated, found Final");
}

#[test]
fn bounded_recount_stops_at_the_given_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = log_of(dir.path(), 1, &clicks());
    let job = Job { windows_ms: vec![MINUTE], group_by: vec![KeyType::Ad], ..job() };
    let rows = recount(&log, &[2], &job, None).unwrap().rows();
    assert_eq!(rows, vec![fin(KeyType::Ad, "a1", MINUTE, 0, 2, 2)]);
}

#[test]
fn bad_end_offsets_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = log_of(dir.path(), 2, &clicks());
    let end = log.end_offsets()[0];
    assert!(matches!(recount(&log, &[0], &job(), None), Err(VerifyError::EndsCount { given: 1, partitions: 2 })));
    let beyond = recount(&log, &[end + 1, 0], &job(), None);
    assert!(matches!(beyond, Err(VerifyError::EndBeyondLog { partition: 0, .. })), "{beyond:?}");
    let zero_epoch = recount(&log, &[0, 0], &Job { epoch_ms: 0, ..job() }, None);
    assert_eq!(zero_epoch.unwrap_err().to_string(), "verify: job setting time.epoch: is 0");
}
