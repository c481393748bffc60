//! `tally::verify` end to end through public APIs: hand-made clicks in a real
//! log, hand-counted rows and ledger entries committed to a real embedded
//! store, and the report of the comparison when the store is right and when
//! each check catches it wrong; then `tally verify` itself (`--show`, the
//! catalog refusal).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use tally::catalog::Catalog;
use tally::event::{Click, KeyType, RequestId};
use tally::job::{Job, LatePolicy};
use tally::log::{Log, LogOptions};
use tally::row::{format_uuid, LateEntry, Row, Status};
use tally::store::settings::{CatalogStamp, SETTINGS_KEY};
use tally::store::{EmbeddedStore, EpochCommit, EpochStore, PartitionCheckpoint, StoredRow, WindowKey};
use tally::verify::settings::UNCHECKED_NOTE;
use tally::verify::{compare, recount, CatalogFile, MismatchKind, Recount, Report, Totals, VerifyError};

const MINUTE: u64 = 60_000;
const FIVE: u64 = 5 * MINUTE;
/// a1 moves from campaign c1 to c2 at 2m; a2 is not in the catalog.
const CATALOG: &str = "ad_id,campaign_id,advertiser_id,valid_from\na1,c1,adv1,0\na1,c2,adv1,120000\n";
/// The committed epoch of the hand-made stores: just past the watermark of
/// [`clicks`] (315 s, epoch 1 s), as a bounded run's end commits, so every
/// too-late batch (the last is 315 s) is applied. Windows of 1m closing
/// after it (end + 10 s > 315 s) are those from 300 s on.
const EPOCH: u64 = 315_001;

/// Epoch 1 s, slack 5 s, allowed lateness 10 s, dedup horizon 60 s (the
/// defaults); windows 1m and 5m by ad and campaign; restate within 2m.
fn job() -> Job {
    let mut job = Job::defaults(Path::new("verify.toml"));
    job.partitions = 1;
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
        click("a1", 30_000, 5, 5),   // wm 125 s: too late, restating (1m + 2m > 125 s)
        click("a1", 30_000, 5, 5),   // retry of a too-late click: duplicate
        click("a1", 200_000, 4, 6),  // on time
        click("a1", 40_000, 6, 7),   // wm 195 s: 1m + 2m <= 195 s: held
        click("a1", 260_000, 1, 8),  // on time
        click("a1", 320_000, 2, 9),  // on time
        click("a1", 250_000, 7, 10), // wm 315 s: too late, restating
    ]
}

/// What the newest version of every window must hold for [`clicks`]:
/// every counted click, on time or restating.
fn hand_counted_totals() -> BTreeMap<WindowKey, Totals> {
    use KeyType::{Ad, Campaign};
    let t = |key_type, key: &str, granularity_ms, window_start, clicks, distinct_users| {
        (WindowKey { key_type, key: key.into(), granularity_ms, window_start }, Totals { clicks, distinct_users })
    };
    BTreeMap::from([
        t(Ad, "a1", MINUTE, 0, 3, 3), // clicks 1, 2 and the restating 5
        t(Ad, "a1", MINUTE, 120_000, 1, 1),
        t(Ad, "a1", MINUTE, 180_000, 1, 1),
        t(Ad, "a1", MINUTE, 240_000, 2, 2), // 8 and the restating 10
        t(Ad, "a1", MINUTE, 300_000, 1, 1),
        t(Ad, "a1", FIVE, 0, 7, 5),
        t(Ad, "a1", FIVE, 300_000, 1, 1),
        t(Ad, "a2", MINUTE, 60_000, 1, 1),
        t(Ad, "a2", FIVE, 0, 1, 1),
        t(Campaign, "c1", MINUTE, 0, 3, 3),
        t(Campaign, "c1", FIVE, 0, 3, 3),
        t(Campaign, "c2", MINUTE, 120_000, 1, 1),
        t(Campaign, "c2", MINUTE, 180_000, 1, 1),
        t(Campaign, "c2", MINUTE, 240_000, 2, 2),
        t(Campaign, "c2", MINUTE, 300_000, 1, 1),
        t(Campaign, "c2", FIVE, 0, 4, 3),
        t(Campaign, "c2", FIVE, 300_000, 1, 1),
        t(Campaign, "unknown", MINUTE, 60_000, 1, 1),
        t(Campaign, "unknown", FIVE, 0, 1, 1),
    ])
}

const HAND_COUNTED_WINDOWS: u64 = 19;

/// The too-late clicks of [`clicks`] by key and 1m window: 5 and 10
/// restating, 7 held.
fn hand_counted_ledger() -> BTreeMap<WindowKey, BTreeSet<RequestId>> {
    let w = |key_type, key: &str, window_start| WindowKey { key_type, key: key.into(), granularity_ms: MINUTE, window_start };
    BTreeMap::from([
        (w(KeyType::Ad, "a1", 0), BTreeSet::from([5, 7])),
        (w(KeyType::Ad, "a1", 240_000), BTreeSet::from([10])),
        (w(KeyType::Campaign, "c1", 0), BTreeSet::from([5, 7])),
        (w(KeyType::Campaign, "c2", 240_000), BTreeSet::from([10])),
    ])
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

/// The rows a data-driven run of [`clicks`] commits (SEMANTICS.md: each
/// restating batch at or after a window's close restates it), in window then
/// version order. Their newest versions are [`hand_counted_totals`].
fn contract_rows() -> Vec<Row> {
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

fn late(key_type: KeyType, key: &str, window_start: u64, batch: u64, held: bool, request_ids: Vec<RequestId>) -> LateEntry {
    LateEntry { key_type, key: key.into(), window_start, batch, held, request_ids }
}

/// The ledger entries a run of [`clicks`] commits.
fn contract_ledger() -> Vec<LateEntry> {
    use KeyType::{Ad, Campaign};
    vec![
        late(Ad, "a1", 0, 125_000, false, vec![5]),
        late(Ad, "a1", 0, 195_000, true, vec![7]),
        late(Ad, "a1", 240_000, 315_000, false, vec![10]),
        late(Campaign, "c1", 0, 125_000, false, vec![5]),
        late(Campaign, "c1", 0, 195_000, true, vec![7]),
        late(Campaign, "c2", 240_000, 315_000, false, vec![10]),
    ]
}

/// What a hand-made store holds, committed as one epoch.
struct Contents {
    epoch: u64,
    rows: Vec<Row>,
    late: Vec<LateEntry>,
    /// The offset of partition 0 in the commit.
    offset: u64,
    /// The settings record, if any.
    settings: Option<Vec<u8>>,
}

impl Contents {
    /// The contract rows and ledger of all of [`clicks`], without settings.
    fn contract() -> Contents {
        Contents { epoch: EPOCH, rows: contract_rows(), late: contract_ledger(), offset: clicks().len() as u64, settings: None }
    }

    fn rows(rows: Vec<Row>) -> Contents {
        Contents { rows, ..Contents::contract() }
    }
}

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
    recount(&log.view(), &ends, &job(), Some(&catalog)).unwrap()
}

/// A new store in `dir` holding `contents` (settled rows of one window in
/// version order, as the job emits them).
fn store_with(dir: &Path, contents: Contents) -> EmbeddedStore {
    let mut store = EmbeddedStore::open(dir).unwrap();
    let generation = store.begin_generation().unwrap();
    let rows = contents.rows.into_iter().map(|row| StoredRow { row, sketch: Vec::new() }).collect();
    let checkpoint =
        PartitionCheckpoint { partition: 0, offset: contents.offset, max_ts: 0, floor: 0, dedup_replay_offset: 0, dedup_replay_max_ts: 0 };
    let state_upserts = contents.settings.map(|json| (SETTINGS_KEY.to_vec(), json)).into_iter().collect();
    let commit = EpochCommit {
        epoch: contents.epoch,
        generation,
        rows,
        late: contents.late,
        partitions: vec![checkpoint],
        state_upserts,
        state_deletes: vec![],
    };
    store.commit(commit).unwrap();
    store
}

/// Compares a store holding `contents` with the recount of [`clicks`],
/// keeping every mismatch.
fn verify(dir: &Path, contents: Contents) -> Report {
    let recount = recount_of(dir);
    let store = store_with(&dir.join("store"), contents);
    compare(&recount, &store.snapshot().unwrap(), usize::MAX).unwrap()
}

/// `rows` with the one matching `key`, `granularity`, `start`, `version` changed.
fn edit(mut rows: Vec<Row>, key: &str, granularity_ms: u64, window_start: u64, version: u32, change: impl FnOnce(&mut Row)) -> Vec<Row> {
    let target = rows
        .iter_mut()
        .find(|r| (r.key.as_str(), r.granularity_ms, r.window_start, r.version) == (key, granularity_ms, window_start, version));
    change(target.expect("a hand-counted row"));
    rows
}

/// `rows` without the ones of one window.
fn without(rows: Vec<Row>, key: &str, granularity_ms: u64, window_start: u64) -> Vec<Row> {
    rows.into_iter().filter(|r| (r.key.as_str(), r.granularity_ms, r.window_start) != (key, granularity_ms, window_start)).collect()
}

fn only(report: &Report) -> &tally::verify::Mismatch {
    assert_eq!(report.mismatch_count, 1, "{}", report.summary());
    &report.mismatches[0]
}

#[test]
fn recount_matches_the_hand_counted_totals_and_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let recount = recount_of(dir.path());
    assert_eq!(recount.windows(), &hand_counted_totals());
    assert_eq!(recount.ledger(), &hand_counted_ledger());
    let stats = recount.stats();
    assert_eq!((stats.clicks_read, stats.duplicates, stats.on_time, stats.restating, stats.held), (12, 2, 7, 2, 1));
}

#[test]
fn store_with_the_contract_rows_has_no_mismatches() {
    let dir = tempfile::tempdir().unwrap();
    let report = verify(dir.path(), Contents::contract());
    assert_eq!(
        report.summary(),
        format!("verify: {HAND_COUNTED_WINDOWS} windows checked, 0 still open, 4 late-ledger windows checked, 0 mismatches")
    );
    assert!(report.is_clean());
}

#[test]
fn only_the_newest_version_is_compared_with_the_recount() {
    // A live run may batch restatements differently: a1's 5m window with
    // one version fewer, and c1's 1m window settled at once with every
    // click, are as right as the data-driven history.
    let dir = tempfile::tempdir().unwrap();
    let rows = edit(contract_rows(), "a1", FIVE, 0, 1, |r| (r.clicks, r.distinct_users) = (4, 3));
    let rows = without(rows, "c1", MINUTE, 0);
    let mut rows = without(rows, "c2", FIVE, 0);
    rows.push(fin(KeyType::Campaign, "c1", MINUTE, 0, 3, 3));
    rows.push(restated(KeyType::Campaign, "c2", FIVE, 0, 1, 4, 3));
    assert!(verify(dir.path(), Contents::rows(rows)).is_clean());
}

#[test]
fn a_newest_version_with_one_click_too_many_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let rows = edit(contract_rows(), "a1", FIVE, 0, 2, |r| r.clicks += 1);
    let report = verify(dir.path(), Contents::rows(rows));
    let m = only(&report);
    assert_eq!((m.kind, m.window.key.as_str(), m.window.granularity_ms, m.version), (MismatchKind::Totals, "a1", FIVE, Some(2)));
    assert_eq!(m.reason, "clicks: expected 7, found 8");
    assert_eq!(
        report.summary(),
        format!(
            "verify: {HAND_COUNTED_WINDOWS} windows checked, 0 still open, 4 late-ledger windows checked, 1 mismatches\n  \
             ad a1 5m window 0 version 2: clicks: expected 7, found 8"
        )
    );
}

#[test]
fn a_gap_in_the_versions_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let rows = edit(contract_rows(), "c2", FIVE, 0, 2, |r| r.version = 3);
    let m = only(&verify(dir.path(), Contents::rows(rows))).clone();
    assert_eq!((m.kind, m.window.key.as_str(), m.version), (MismatchKind::Versions, "c2", Some(3)));
    assert_eq!(m.reason, "version 3 follows version 1: settled versions are numbered without gaps");
}

#[test]
fn clicks_going_down_from_one_version_to_the_next_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let rows = edit(contract_rows(), "c2", FIVE, 0, 1, |r| r.clicks = 5);
    let m = only(&verify(dir.path(), Contents::rows(rows))).clone();
    assert_eq!((m.kind, m.version, m.reason.as_str()), (MismatchKind::Versions, Some(2), "clicks go down from 5 (version 1) to 4"));
}

#[test]
fn a_missing_settled_window_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let rows = without(contract_rows(), "unknown", MINUTE, 60_000);
    let report = verify(dir.path(), Contents::rows(rows));
    let m = only(&report);
    assert_eq!((m.kind, m.window.key.as_str(), m.version), (MismatchKind::Missing, "unknown", None));
    assert_eq!(
        m.to_string(),
        "campaign unknown 1m window 60000: missing: no final or restated row, though end + allowed lateness is within the committed \
         epoch 315001; the recount counts 1 clicks"
    );
}

#[test]
fn a_too_late_batch_the_commit_has_not_reached_is_pending() {
    // Committed at 315 s: the restating click read at watermark 315 s (id
    // 10) is in its batch 315 s, not yet applied. A store without it in the
    // 4m windows and the ledger is right; one with it is caught.
    let dir = tempfile::tempdir().unwrap();
    let rows = contract_rows();
    let late: Vec<LateEntry> = contract_ledger().into_iter().filter(|e| e.batch < 315_000).collect();
    let by_click_10 =
        |r: &Row| r.status == Status::Restated && (r.window_start == 240_000 || (r.granularity_ms == FIVE && r.window_start == 0));
    let before: Vec<Row> = rows.iter().filter(|r| !by_click_10(r)).cloned().collect();
    let pending = Contents { epoch: 315_000, rows: before, late: late.clone(), offset: clicks().len() as u64, settings: None };
    let catalog = data_dir(dir.path(), pending);
    let report = verify_data_dir(dir.path(), &job(), Some(&catalog)).unwrap();
    assert!(report.is_clean(), "{}", report.summary());
    let dir = tempfile::tempdir().unwrap();
    let applied_early = Contents { epoch: 315_000, rows, late, offset: clicks().len() as u64, settings: None };
    let catalog = data_dir(dir.path(), applied_early);
    assert!(!verify_data_dir(dir.path(), &job(), Some(&catalog)).unwrap().is_clean(), "a batch applied before its time is caught");
}

#[test]
fn a_window_still_open_is_not_checked() {
    // The 1m windows at 300 s close at 370 s, after the committed epoch: a
    // run that has not settled them yet (a partial row at most) is right.
    let dir = tempfile::tempdir().unwrap();
    let rows = without(without(contract_rows(), "a1", MINUTE, 300_000), "c2", MINUTE, 300_000);
    let mut rows = without(rows, "a1", FIVE, 300_000);
    rows.push(row(KeyType::Ad, "a1", MINUTE, 300_000, Status::Partial, 0, 9, 9));
    let report = verify(dir.path(), Contents::rows(rows));
    assert!(report.is_clean(), "{}", report.summary());
    assert_eq!((report.windows_checked, report.windows_open), (HAND_COUNTED_WINDOWS - 3, 3));
}

#[test]
fn a_settled_window_the_recount_counts_nothing_in_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = contract_rows();
    rows.push(fin(KeyType::Ad, "a3", MINUTE, 0, 1, 1));
    let report = verify(dir.path(), Contents::rows(rows));
    assert_eq!(report.windows_checked, HAND_COUNTED_WINDOWS + 1, "a3's window is checked too");
    let m = only(&report);
    assert_eq!((m.kind, m.window.key.as_str()), (MismatchKind::Unexpected, "a3"));
    assert_eq!(m.reason, "unexpected: final with 1 clicks, the recount counts no click in this window");
}

#[test]
fn a_dropped_or_added_ledger_entry_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let mut contents = Contents::contract();
    contents.late.retain(|e| !(e.key == "c1" && e.held));
    contents.late.push(late(KeyType::Ad, "a2", 60_000, 315_000, true, vec![3]));
    let report = verify(dir.path(), contents);
    assert_eq!(report.mismatch_count, 2, "{}", report.summary());
    let lines: Vec<String> = report.mismatches.iter().map(|m| m.to_string()).collect();
    assert_eq!(
        lines,
        [
            format!("ad a2 1m window 60000 late ledger: 1 request ids only in the store (first {})", format_uuid(3)),
            format!("campaign c1 1m window 0 late ledger: 1 request ids only in the recount (first {})", format_uuid(7)),
        ]
    );
    assert!(report.mismatches.iter().all(|m| m.kind == MismatchKind::Ledger));
}

#[test]
fn the_ledger_batch_is_not_compared() {
    // The same ids, written in other batches (and one entry split in two).
    let dir = tempfile::tempdir().unwrap();
    let mut contents = Contents::contract();
    for entry in &mut contents.late {
        entry.batch += 7_000;
    }
    contents.late.push(late(KeyType::Ad, "a1", 0, 400_000, false, vec![5]));
    assert!(verify(dir.path(), contents).is_clean());
}

#[test]
fn distinct_estimates_within_the_tolerance_pass() {
    let dir = tempfile::tempdir().unwrap();
    let rows = edit(contract_rows(), "a1", FIVE, 0, 2, |r| r.distinct_users = 7); // exact 5, ±2
    let rows = edit(rows, "c2", FIVE, 0, 2, |r| r.distinct_users = 6); // exact 3, off by 3
    let m = only(&verify(dir.path(), Contents::rows(rows))).clone();
    assert_eq!(m.reason, "distinct_users: estimate 6 is more than 2 off the exact 3");
}

#[test]
fn distinct_users_are_not_compared_when_the_job_does_not_measure_them() {
    let dir = tempfile::tempdir().unwrap();
    let (log, ends) = log_of(dir.path(), 1, &clicks());
    let catalog = Catalog::parse(CATALOG).unwrap();
    let recount = recount(&log.view(), &ends, &Job { distinct_users: false, ..job() }, Some(&catalog)).unwrap();
    let rows = contract_rows().into_iter().map(|row| Row { distinct_users: 0, ..row }).collect();
    let store = store_with(&dir.path().join("store"), Contents::rows(rows));
    assert!(compare(&recount, &store.snapshot().unwrap(), usize::MAX).unwrap().is_clean());
}

#[test]
fn a_window_counted_only_by_restatement_may_start_final_or_restated() {
    let dir = tempfile::tempdir().unwrap();
    let (log, ends) = log_of(dir.path(), 1, &[click("x", 200_000, 1, 1), click("x", 100_000, 2, 2)]);
    let job = Job { windows_ms: vec![MINUTE], group_by: vec![KeyType::Ad], ..job() };
    let recount = recount(&log.view(), &ends, &job, None).unwrap();
    let ledger = vec![late(KeyType::Ad, "x", 60_000, 195_000, false, vec![2])];
    for (name, first) in
        [("restated", restated(KeyType::Ad, "x", MINUTE, 60_000, 1, 1, 1)), ("final", fin(KeyType::Ad, "x", MINUTE, 60_000, 1, 1))]
    {
        let rows = vec![first, fin(KeyType::Ad, "x", MINUTE, 180_000, 1, 1)];
        let contents = Contents { epoch: 195_000, rows, late: ledger.clone(), offset: 2, settings: None };
        let store = store_with(&dir.path().join(name), contents);
        let report = compare(&recount, &store.snapshot().unwrap(), usize::MAX).unwrap();
        assert!(report.is_clean(), "{name}: {}", report.summary());
    }
}

#[test]
fn bounded_recount_stops_at_the_given_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = log_of(dir.path(), 1, &clicks());
    let job = Job { windows_ms: vec![MINUTE], group_by: vec![KeyType::Ad], ..job() };
    let recount = recount(&log.view(), &[2], &job, None).unwrap();
    let window = WindowKey { key_type: KeyType::Ad, key: "a1".into(), granularity_ms: MINUTE, window_start: 0 };
    assert_eq!(recount.windows(), &BTreeMap::from([(window, Totals { clicks: 2, distinct_users: 2 })]));
}

#[test]
fn bad_end_offsets_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = log_of(dir.path(), 2, &clicks());
    let end = log.end_offsets()[0];
    assert!(matches!(recount(&log.view(), &[0], &job(), None), Err(VerifyError::EndsCount { given: 1, partitions: 2 })));
    let beyond = recount(&log.view(), &[end + 1, 0], &job(), None);
    assert!(matches!(beyond, Err(VerifyError::EndBeyondLog { partition: 0, .. })), "{beyond:?}");
    let half_minute = recount(&log.view(), &[0, 0], &Job { windows_ms: vec![30_000], ..job() }, None);
    assert_eq!(half_minute.unwrap_err().to_string(), "verify: job setting windows.sizes: 30000 ms is not a positive multiple of 1m");
}

// ---------------------------------------------------------------------------
// The settings record and the catalog

/// A data directory holding the log of [`clicks`] and a store with
/// `contents`; the catalog file `ads.csv` beside it.
fn data_dir(dir: &Path, contents: Contents) -> CatalogFile {
    log_of(&dir.join("data"), 1, &clicks());
    store_with(&dir.join("data").join("store"), contents);
    std::fs::write(dir.join("ads.csv"), CATALOG).unwrap();
    CatalogFile::load(&dir.join("ads.csv")).unwrap()
}

fn verify_data_dir(dir: &Path, job: &Job, catalog: Option<&CatalogFile>) -> Result<Report, VerifyError> {
    let data = dir.join("data");
    let log = Log::open(&data.join("log"), 1, LogOptions::default()).unwrap();
    let store = EmbeddedStore::open_read_only(&data.join("store")).unwrap();
    tally::verify::verify(&log.view(), &store, job, catalog, 10, &Default::default())
}

/// The settings record of a run of [`job`] with the catalog `stamp`.
fn settings_json(stamp: Option<&CatalogStamp>) -> Vec<u8> {
    job().settings(stamp.cloned()).to_json()
}

#[test]
fn verify_refuses_another_catalog_than_the_one_committed_with() {
    let dir = tempfile::tempdir().unwrap();
    let stamp = CatalogStamp::of(Path::new("ads.csv"), CATALOG.as_bytes());
    let catalog = data_dir(dir.path(), Contents { settings: Some(settings_json(Some(&stamp))), ..Contents::contract() });
    let report = verify_data_dir(dir.path(), &job(), Some(&catalog)).unwrap();
    assert!(report.is_clean() && report.notes.is_empty(), "{}", report.summary());

    let none = verify_data_dir(dir.path(), &job(), None).unwrap_err().to_string();
    assert_eq!(
        none,
        format!(
            "verify: the store's last commit was made with catalog ads.csv (fingerprint {}); pass it with --catalog",
            stamp.fingerprint
        )
    );
    std::fs::write(dir.path().join("other.csv"), "a1,c9,adv9\n").unwrap();
    let other = CatalogFile::load(&dir.path().join("other.csv")).unwrap();
    let refused = verify_data_dir(dir.path(), &job(), Some(&other));
    assert!(matches!(refused, Err(VerifyError::Catalog(_))), "{refused:?}");
}

#[test]
fn verify_refuses_a_job_that_counts_differently_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = data_dir(dir.path(), Contents { settings: Some(settings_json(None)), ..Contents::contract() });
    let error = verify_data_dir(dir.path(), &Job { dedup_horizon_ms: 120_000, ..job() }, None).unwrap_err();
    assert!(matches!(error, VerifyError::Incompatible { key: "dedup.horizon", .. }), "{error}");
    assert_eq!(
        error.to_string(),
        "verify: the store was committed with dedup.horizon = 60000 ms, the job file has 120000 ms; verify with the job file the store \
         was made with"
    );
    let refused = verify_data_dir(dir.path(), &job(), Some(&catalog));
    assert!(refused.unwrap_err().to_string().contains("made without a catalog"));
}

#[test]
fn a_store_without_settings_is_verified_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = data_dir(dir.path(), Contents::contract());
    let report = verify_data_dir(dir.path(), &job(), Some(&catalog)).unwrap();
    assert!(report.is_clean());
    assert_eq!(report.notes, [UNCHECKED_NOTE]);
    assert!(report.summary().ends_with(&format!("0 mismatches\n{UNCHECKED_NOTE}")));
}

// ---------------------------------------------------------------------------
// `tally verify`

const JOB_TOML: &str = r#"
[source]
kind = "log"
partitions = 1

[windows]
sizes = ["1m", "5m"]

[aggregate]
group_by = ["ad", "campaign"]

[late]
restate_within = "2m"

[sink]
kind = "store"
"#;

fn tally_verify(dir: &Path, args: &[&str]) -> (i32, String, String) {
    std::fs::write(dir.join("verify.toml"), JOB_TOML).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tally"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("verify")
        .arg(dir.join("verify.toml"))
        .args(args)
        .output()
        .expect("run tally verify");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (output.status.code().unwrap_or(-1), text(output.stdout), text(output.stderr))
}

#[test]
fn tally_verify_lists_as_many_mismatches_as_shown() {
    let dir = tempfile::tempdir().unwrap();
    // Three windows one click off.
    let rows = edit(contract_rows(), "a1", FIVE, 0, 2, |r| r.clicks += 1);
    let rows = edit(rows, "a2", FIVE, 0, 1, |r| r.clicks += 1);
    let rows = edit(rows, "c1", FIVE, 0, 1, |r| r.clicks += 1);
    data_dir(dir.path(), Contents::rows(rows));
    let catalog = dir.path().join("ads.csv");
    let catalog = catalog.to_str().unwrap();

    let (code, stdout, _) = tally_verify(dir.path(), &["--catalog", catalog]);
    assert_eq!(code, 1);
    assert_eq!(stdout.lines().count(), 1 + 3 + 1, "the count, three mismatches, the settings note:\n{stdout}");
    let (code, stdout, _) = tally_verify(dir.path(), &["--catalog", catalog, "--show", "1"]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[1..], ["  ad a1 5m window 0 version 2: clicks: expected 7, found 8", "  (2 more not listed)", UNCHECKED_NOTE]);
    let (_, stdout, _) = tally_verify(dir.path(), &["--catalog", catalog, "--show", "0"]);
    assert_eq!(stdout.lines().nth(1), Some("  (3 more not listed)"));
}

#[test]
fn tally_verify_refuses_another_catalog_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let stamp = CatalogStamp::of(Path::new("ads.csv"), CATALOG.as_bytes());
    data_dir(dir.path(), Contents { settings: Some(settings_json(Some(&stamp))), ..Contents::contract() });
    std::fs::write(dir.path().join("other.csv"), "a1,c9,adv9\n").unwrap();
    let other = dir.path().join("other.csv");

    let (code, stdout, stderr) = tally_verify(dir.path(), &["--catalog", other.to_str().unwrap()]);
    assert_eq!((code, stdout.as_str()), (2, ""));
    assert!(
        stderr.starts_with(&format!(
            "error: tally verify: the store's last commit was made with catalog ads.csv (fingerprint {})",
            stamp.fingerprint
        )),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let (code, stdout, _) = tally_verify(dir.path(), &["--catalog", dir.path().join("ads.csv").to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.ends_with(" 0 mismatches\n"), "{stdout}");
}

// ---------------------------------------------------------------------------
// A run started mid-log: the recount starts at the store's origin

/// `tally COMMAND clicks-only.toml ARGS` on `dir/data`: the job of
/// `tally_verify` without distinct users, so that only clicks are compared.
fn tally_clicks_only(dir: &Path, command: &str, args: &[&str]) -> (i32, String, String) {
    let job = JOB_TOML.replace("group_by = [\"ad\", \"campaign\"]", "group_by = [\"ad\", \"campaign\"]\nmeasures = [\"clicks\"]");
    std::fs::write(dir.join("clicks-only.toml"), job).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tally"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg(command)
        .arg(dir.join("clicks-only.toml"))
        .args(args)
        .output()
        .expect("run tally");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (output.status.code().unwrap_or(-1), text(output.stdout), text(output.stderr))
}

#[test]
fn a_run_from_mid_log_is_recounted_from_its_origin_and_a_tampered_origin_mismatches() {
    let dir = tempfile::tempdir().unwrap();
    drop(log_of(&dir.path().join("data"), 1, &clicks()));
    // From offset 2: the retry of click 1 is the first click of the range,
    // and its original lies before it, so it counts (dedup memory starts
    // empty at the origin).
    let (code, _, stderr) = tally_clicks_only(dir.path(), "run", &["--from", "0:2", "--bounded"]);
    assert_eq!(code, 0, "{stderr}");
    let store = dir.path().join("data").join("store");
    let rows = EmbeddedStore::open_read_only(&store).unwrap().all_rows().unwrap();
    let a1_first_minute = rows.iter().find(|r| r.key == "a1" && r.granularity_ms == MINUTE && r.window_start == 0).unwrap();
    assert_eq!(a1_first_minute.clicks, 2, "the retry at offset 2 and the restating click 5; clicks 1 and 2 are before the range");
    let (code, stdout, _) = tally_clicks_only(dir.path(), "verify", &[]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.ends_with(" 0 mismatches\n"), "{stdout}");

    // The same store claiming to have counted from offset 0.
    {
        let mut writer = EmbeddedStore::open(&store).unwrap();
        let last = writer.last_committed().unwrap().unwrap();
        let generation = writer.begin_generation().unwrap();
        let origin = tally::store::settings::Origin::zero(1);
        let state_upserts = vec![(tally::store::settings::ORIGIN_KEY.to_vec(), origin.to_json())];
        writer.commit(EpochCommit { epoch: last.epoch + 1, generation, state_upserts, ..Default::default() }).unwrap();
    }
    let (code, stdout, _) = tally_clicks_only(dir.path(), "verify", &[]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("ad a1 1m window 0 version 2: clicks: expected 3, found 2"), "{stdout}");
}
