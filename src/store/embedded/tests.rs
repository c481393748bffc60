use std::panic::{catch_unwind, AssertUnwindSafe};

use super::*;
use crate::event::KeyType;
use crate::store::{PartitionCheckpoint, DEFAULT_RETENTION_MS};

const MINUTE: u64 = 60_000;

fn row(key: &str, start: u64, clicks: u64, status: Status, version: u32) -> StoredRow {
    let row = Row {
        key_type: KeyType::Ad,
        key: key.into(),
        granularity_ms: MINUTE,
        window_start: start,
        clicks,
        distinct_users: clicks / 2,
        status,
        version,
    };
    StoredRow { row, sketch: vec![clicks as u8; 3] }
}

fn checkpoint(partition: u32, offset: u64) -> PartitionCheckpoint {
    PartitionCheckpoint {
        partition,
        offset,
        max_ts: offset * 10,
        floor: offset,
        dedup_replay_offset: offset / 2,
        dedup_replay_max_ts: offset * 5,
    }
}

fn late(key: &str, start: u64, batch: u64, held: bool, ids: &[u128]) -> LateEntry {
    LateEntry { key_type: KeyType::Ad, key: key.into(), window_start: start, batch, held, request_ids: ids.to_vec() }
}

fn epoch(epoch: u64, generation: u64) -> EpochCommit {
    EpochCommit { epoch, generation, ..EpochCommit::default() }
}

fn window(key: &str, start: u64) -> WindowKey {
    WindowKey { key_type: KeyType::Ad, key: key.into(), granularity_ms: MINUTE, window_start: start }
}

fn a_full_commit() -> EpochCommit {
    EpochCommit {
        epoch: 1000,
        generation: 1,
        rows: vec![row("a", 0, 5, Status::Final, 1), row("a", MINUTE, 2, Status::Partial, 0), row("b", 0, 1, Status::Final, 1)],
        late: vec![late("a", 0, 1000, false, &[7, 3])],
        partitions: vec![checkpoint(0, 10), checkpoint(3, 4)],
        state_upserts: vec![(b"w/a".to_vec(), b"open".to_vec()), (b"w/b".to_vec(), b"x".to_vec())],
        state_deletes: vec![],
    }
}

#[test]
fn commit_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.last_committed().unwrap(), None);
        assert_eq!(store.begin_generation().unwrap(), 1);
        store.commit(a_full_commit()).unwrap();
    }
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let recovered = store.last_committed().unwrap().unwrap();
    assert_eq!(recovered.epoch, 1000);
    assert_eq!(recovered.generation, 1);
    assert_eq!(recovered.partitions, vec![checkpoint(0, 10), checkpoint(3, 4)]);
    assert_eq!(recovered.state, vec![(b"w/a".to_vec(), b"open".to_vec()), (b"w/b".to_vec(), b"x".to_vec())]);
    let rows: Vec<Row> = a_full_commit().rows.into_iter().map(|r| r.row).collect();
    assert_eq!(store.all_rows().unwrap(), rows);
    assert_eq!(store.row_history(&window("a", 0)).unwrap(), vec![rows[0].clone()]);
    assert_eq!(store.row_history(&window("a", MINUTE)).unwrap(), vec![], "partial rows have no history");
    assert_eq!(store.late_entries(0, MINUTE).unwrap(), vec![late("a", 0, 1000, false, &[3, 7])]);
}

#[test]
fn sketches_and_epochs_are_stored_with_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = EmbeddedStore::open(dir.path()).unwrap();
    store.commit(EpochCommit { rows: vec![row("a", 0, 9, Status::Final, 1)], ..epoch(5, 0) }).unwrap();
    let snapshot = store.snapshot().unwrap();
    let table = snapshot.txn.open_table(ROWS).unwrap();
    let value = table.get((0, "a", MINUTE, 0)).unwrap().unwrap();
    let value = decode_row(value.value()).unwrap();
    assert_eq!((value.epoch, value.sketch), (5, &[9u8, 9, 9][..]));
}

#[test]
fn an_uncommitted_transaction_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = EmbeddedStore::open(dir.path()).unwrap();
        store.begin_generation().unwrap();
        let txn = store.begin_write().unwrap();
        EmbeddedStore::apply(&txn, &a_full_commit(), &store.reader.target).unwrap();
        drop(txn); // the process dies between writing the epoch and committing it
        assert_eq!(store.last_committed().unwrap(), None);
        assert_eq!(store.all_rows().unwrap(), vec![]);
        assert_eq!(store.late_entries(0, u64::MAX).unwrap(), vec![]);
        store.commit(a_full_commit()).unwrap();
        assert_eq!(store.all_rows().unwrap().len(), 3);
    }
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.last_committed().unwrap().unwrap().epoch, 1000);
}

#[test]
fn a_commit_panicking_midway_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = EmbeddedStore::open(dir.path()).unwrap();
        store.commit(EpochCommit { partitions: vec![checkpoint(0, 10)], ..epoch(1, 0) }).unwrap();
        // Rows are written in order: three are in the transaction when the fourth fails its assertion.
        let mut bad = EpochCommit { epoch: 2, generation: 0, ..a_full_commit() };
        bad.rows.push(row("c", 0, 1, Status::Final, 2));
        let panicked = catch_unwind(AssertUnwindSafe(|| store.commit(bad)));
        assert!(panicked.is_err());
        let recovered = store.last_committed().unwrap().unwrap();
        assert_eq!((recovered.epoch, recovered.partitions, recovered.state), (1, vec![checkpoint(0, 10)], vec![]));
        assert_eq!(store.all_rows().unwrap(), vec![]);
        assert_eq!(store.late_entries(0, u64::MAX).unwrap(), vec![]);
        store.commit(EpochCommit { partitions: vec![checkpoint(0, 11)], ..epoch(2, 0) }).unwrap();
    }
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let recovered = store.last_committed().unwrap().unwrap();
    assert_eq!((recovered.epoch, recovered.partitions), (2, vec![checkpoint(0, 11)]));
    assert_eq!(store.all_rows().unwrap(), vec![]);
}

/// Every commit overwrites all windows with clicks = its epoch, so a reader
/// that saw half a commit would see two different click counts.
#[test]
fn readers_during_commits_see_whole_epochs() {
    const WINDOWS: u64 = 100;
    const EPOCHS: u64 = 30;
    let dir = tempfile::tempdir().unwrap();
    let mut store = EmbeddedStore::open(dir.path()).unwrap();
    let readers = [store.reader(), EmbeddedStore::open_read_only(dir.path()).unwrap()];
    let threads = readers.map(|reader| {
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            loop {
                let snapshot = reader.snapshot().unwrap();
                let rows = snapshot.all_rows().unwrap();
                let Some(last) = snapshot.last_committed().unwrap() else {
                    assert_eq!(rows, vec![]);
                    continue;
                };
                assert_eq!(rows.len() as u64, WINDOWS);
                assert!(rows.iter().all(|r| r.clicks == last.epoch), "epoch {} read half-applied", last.epoch);
                assert_eq!(last.partitions, vec![checkpoint(0, last.epoch)]);
                seen.push(last.epoch);
                if last.epoch == EPOCHS {
                    return seen;
                }
            }
        })
    });
    for e in 1..=EPOCHS {
        let rows = (0..WINDOWS).map(|w| row("a", w * MINUTE, e, Status::Partial, 0)).collect();
        store.commit(EpochCommit { rows, partitions: vec![checkpoint(0, e)], ..epoch(e, 0) }).unwrap();
    }
    for thread in threads {
        let seen = thread.join().unwrap();
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "a reader went back in time");
    }
}

#[test]
fn a_snapshot_keeps_its_epoch_while_others_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = EmbeddedStore::open(dir.path()).unwrap();
    store.commit(EpochCommit { rows: vec![row("a", 0, 1, Status::Partial, 0)], ..epoch(1, 0) }).unwrap();
    let reader = EmbeddedStore::open_read_only(dir.path()).unwrap();
    let before = reader.snapshot().unwrap();
    store.commit(EpochCommit { rows: vec![row("a", 0, 2, Status::Partial, 0)], ..epoch(2, 0) }).unwrap();
    assert_eq!(before.all_rows().unwrap()[0].clicks, 1);
    assert_eq!(before.last_committed().unwrap().unwrap().epoch, 1);
    assert_eq!(reader.all_rows().unwrap()[0].clicks, 2);
}

#[test]
fn the_lock_refuses_a_second_open_until_the_store_and_its_readers_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    match EmbeddedStore::open(dir.path()) {
        Err(StoreError::Locked { path, pid }) => {
            assert_eq!(path, dir.path().join(LOCK_FILE));
            assert_eq!(pid, Some(std::process::id()));
        }
        other => panic!("second open: {:?}", other.err()),
    }
    let error = EmbeddedStore::open(dir.path()).err().unwrap().to_string();
    assert!(error.contains("LOCK") && error.contains(&format!("process {}", std::process::id())), "{error}");
    let reader = store.reader();
    drop(store);
    assert!(matches!(EmbeddedStore::open(dir.path()), Err(StoreError::Locked { .. })));
    drop(reader);
    let _again = EmbeddedStore::open(dir.path()).unwrap();
    assert!(EmbeddedStore::open_read_only(dir.path()).is_ok(), "readers do not take the lock");
}

#[test]
fn a_close_waits_for_the_commit_in_flight_and_leaves_a_clean_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = EmbeddedStore::open(dir.path()).unwrap();
    store.begin_generation().unwrap();
    let reader = store.reader();
    let writable = Arc::clone(&store.writable);
    let txn = store.begin_write().unwrap();
    let closer = std::thread::spawn(move || writable.close());
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!closer.is_finished(), "the close waits for the write transaction");
    EmbeddedStore::apply(&txn, &a_full_commit(), &store.reader.target).unwrap();
    txn.commit().unwrap();
    assert!(closer.join().unwrap().unwrap(), "closed");

    assert!(matches!(store.commit(epoch(2000, 1)), Err(StoreError::Closed { .. })));
    assert!(matches!(reader.snapshot(), Err(StoreError::Closed { .. })));
    assert!(!store.writable.close().unwrap(), "closed once");
    // Clean: redb opens it read-only without a repair, though the lock is still held.
    builder().open_read_only(dir.path().join(STORE_FILE)).expect("a clean file");
    let recovered = EmbeddedStore::open_read_only(dir.path()).unwrap().last_committed().unwrap().unwrap();
    assert_eq!(recovered.epoch, 1000);
}

#[test]
fn an_older_generation_is_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.begin_generation().unwrap(), 1);
    store.commit(epoch(1, 1)).unwrap();
    assert_eq!(store.begin_generation().unwrap(), 2);
    let zombie = EpochCommit { rows: vec![row("a", 0, 1, Status::Final, 1)], ..epoch(2, 1) };
    match store.commit(zombie) {
        Err(StoreError::Fenced { generation: 1, current: 2, .. }) => {}
        other => panic!("zombie commit: {other:?}"),
    }
    assert_eq!(store.all_rows().unwrap(), vec![]);
    // The fence is checked before the epoch order: a zombie behind is refused, not a crash.
    assert!(matches!(store.commit(epoch(0, 1)), Err(StoreError::Fenced { .. })));
    store.commit(epoch(2, 2)).unwrap();
    drop(store);
    let mut store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.last_committed().unwrap().unwrap().generation, 2);
    assert_eq!(store.begin_generation().unwrap(), 3, "generations persist");
}

#[test]
#[should_panic(expected = "never begun")]
fn a_generation_never_begun_is_a_bug() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = EmbeddedStore::open(dir.path()).unwrap();
    let _ = store.commit(epoch(1, 1));
}

#[test]
#[should_panic(expected = "epoch 5 committed after epoch 5")]
fn epochs_must_increase() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = EmbeddedStore::open(dir.path()).unwrap();
    store.commit(epoch(5, 0)).unwrap();
    let _ = store.commit(epoch(5, 0));
}

#[test]
#[should_panic(expected = "partition 3: offset went back from 4 to 3")]
fn offsets_never_go_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = EmbeddedStore::open(dir.path()).unwrap();
    store.commit(EpochCommit { partitions: vec![checkpoint(3, 4)], ..epoch(1, 0) }).unwrap();
    let _ = store.commit(EpochCommit { partitions: vec![checkpoint(3, 3)], ..epoch(2, 0) });
}

#[test]
#[should_panic(expected = "dedup replay offset 6 beyond offset 5")]
fn the_dedup_replay_offset_is_behind_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = EmbeddedStore::open(dir.path()).unwrap();
    let bad = PartitionCheckpoint { dedup_replay_offset: 6, ..checkpoint(0, 5) };
    let _ = store.commit(EpochCommit { partitions: vec![bad], ..epoch(1, 0) });
}

#[test]
fn partitions_not_in_a_commit_keep_their_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = EmbeddedStore::open(dir.path()).unwrap();
    store.commit(EpochCommit { partitions: vec![checkpoint(1, 5), checkpoint(0, 2)], ..epoch(1, 0) }).unwrap();
    store.commit(EpochCommit { partitions: vec![checkpoint(1, 5), checkpoint(2, 1)], ..epoch(2, 0) }).unwrap();
    let recovered = store.last_committed().unwrap().unwrap();
    assert_eq!(recovered.partitions, vec![checkpoint(0, 2), checkpoint(1, 5), checkpoint(2, 1)]);
}

#[test]
fn a_partial_row_never_overwrites_a_settled_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = EmbeddedStore::open(dir.path()).unwrap();
    store.commit(EpochCommit { rows: vec![row("a", 0, 3, Status::Partial, 0)], ..epoch(1, 0) }).unwrap();
    assert_eq!(store.all_rows().unwrap(), vec![row("a", 0, 3, Status::Partial, 0).row]);
    store.commit(EpochCommit { rows: vec![row("a", 0, 5, Status::Final, 1)], ..epoch(2, 0) }).unwrap();
    store.commit(EpochCommit { rows: vec![row("a", 0, 4, Status::Partial, 0)], ..epoch(3, 0) }).unwrap();
    assert_eq!(store.all_rows().unwrap(), vec![row("a", 0, 5, Status::Final, 1).row]);
    assert_eq!(store.row_history(&window("a", 0)).unwrap(), vec![row("a", 0, 5, Status::Final, 1).row]);
}

#[test]
#[should_panic(expected = "newer than its settled row")]
fn a_partial_row_with_more_clicks_than_the_final_is_a_bug() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = EmbeddedStore::open(dir.path()).unwrap();
    store.commit(EpochCommit { rows: vec![row("a", 0, 5, Status::Final, 1)], ..epoch(1, 0) }).unwrap();
    let _ = store.commit(EpochCommit { rows: vec![row("a", 0, 6, Status::Partial, 0)], ..epoch(2, 0) });
}

#[test]
fn every_settled_version_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = EmbeddedStore::open(dir.path()).unwrap();
    let versions = [row("a", 0, 5, Status::Final, 1), row("a", 0, 6, Status::Restated, 2), row("a", 0, 8, Status::Restated, 3)];
    store.commit(EpochCommit { rows: versions[..1].to_vec(), ..epoch(1, 0) }).unwrap();
    // Two restatements in one epoch, then a replay of the last one: absolute values overwrite.
    store.commit(EpochCommit { rows: versions[1..].to_vec(), ..epoch(2, 0) }).unwrap();
    store.commit(EpochCommit { rows: versions[2..].to_vec(), ..epoch(3, 0) }).unwrap();
    let expected: Vec<Row> = versions.iter().map(|r| r.row.clone()).collect();
    assert_eq!(store.row_history(&window("a", 0)).unwrap(), expected);
    assert_eq!(store.all_rows().unwrap(), vec![expected[2].clone()]);
    assert_eq!(store.row_history(&window("a", MINUTE)).unwrap(), vec![]);
}

#[test]
#[should_panic(expected = "older than stored version 2")]
fn an_older_version_after_a_newer_is_a_bug() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = EmbeddedStore::open(dir.path()).unwrap();
    store.commit(EpochCommit { rows: vec![row("a", 0, 6, Status::Restated, 2)], ..epoch(1, 0) }).unwrap();
    let _ = store.commit(EpochCommit { rows: vec![row("a", 0, 5, Status::Final, 1)], ..epoch(2, 0) });
}

#[test]
#[should_panic(expected = "rewritten with other values")]
fn a_version_is_never_rewritten_with_other_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = EmbeddedStore::open(dir.path()).unwrap();
    store.commit(EpochCommit { rows: vec![row("a", 0, 5, Status::Final, 1)], ..epoch(1, 0) }).unwrap();
    let _ = store.commit(EpochCommit { rows: vec![row("a", 0, 6, Status::Final, 1)], ..epoch(2, 0) });
}

#[test]
#[should_panic(expected = "status Final and version 2")]
fn version_and_status_agree() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = EmbeddedStore::open(dir.path()).unwrap();
    let _ = store.commit(EpochCommit { rows: vec![row("a", 0, 5, Status::Final, 2)], ..epoch(1, 0) });
}

#[test]
fn rows_filter_by_key_granularity_and_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = EmbeddedStore::open(dir.path()).unwrap();
    let mut hour = row("a", 0, 9, Status::Final, 1);
    hour.row.granularity_ms = 60 * MINUTE;
    let mut campaign = row("a", MINUTE, 9, Status::Final, 1);
    campaign.row.key_type = KeyType::Campaign;
    let rows = vec![
        row("a", 0, 1, Status::Final, 1),
        row("a", MINUTE, 2, Status::Final, 1),
        row("a", 2 * MINUTE, 3, Status::Partial, 0),
        row("ab", MINUTE, 4, Status::Final, 1),
        hour,
        campaign,
    ];
    store.commit(EpochCommit { rows: rows.clone(), ..epoch(1, 0) }).unwrap();
    let filter = RowFilter { key_type: KeyType::Ad, key: "a".into(), granularity_ms: MINUTE, from: MINUTE, to: 3 * MINUTE };
    assert_eq!(store.rows(&filter).unwrap(), vec![rows[1].row.clone(), rows[2].row.clone()]);
    assert_eq!(store.rows(&RowFilter { to: 2 * MINUTE, ..filter.clone() }).unwrap(), vec![rows[1].row.clone()]);
    assert_eq!(store.rows(&RowFilter { from: 3 * MINUTE, to: MINUTE, ..filter }).unwrap(), vec![]);
    assert_eq!(store.all_rows().unwrap().len(), rows.len());
}

#[test]
fn late_entries_group_by_window_batch_and_held() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = EmbeddedStore::open(dir.path()).unwrap();
    let entries = vec![late("a", 0, 5000, false, &[9, 1]), late("a", 0, 5000, true, &[4]), late("b", MINUTE, 5000, true, &[2])];
    store.commit(EpochCommit { late: entries, ..epoch(1, 0) }).unwrap();
    // A replayed ledger line is idempotent; a second batch is its own entry.
    store.commit(EpochCommit { late: vec![late("a", 0, 5000, false, &[1]), late("a", 0, 6000, false, &[5])], ..epoch(2, 0) }).unwrap();
    let expected = vec![
        late("a", 0, 5000, false, &[1, 9]),
        late("a", 0, 5000, true, &[4]),
        late("a", 0, 6000, false, &[5]),
        late("b", MINUTE, 5000, true, &[2]),
    ];
    assert_eq!(store.late_entries(0, u64::MAX).unwrap(), expected);
    assert_eq!(store.late_entries(MINUTE, 2 * MINUTE).unwrap(), expected[3..].to_vec());
}

#[test]
fn state_upserts_and_deletes_apply_with_the_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = EmbeddedStore::open(dir.path()).unwrap();
    let upserts = vec![(b"k1".to_vec(), b"v1".to_vec()), (b"k2".to_vec(), b"v2".to_vec())];
    store.commit(EpochCommit { state_upserts: upserts, ..epoch(1, 0) }).unwrap();
    let next = EpochCommit {
        state_upserts: vec![(b"k2".to_vec(), b"v2'".to_vec()), (b"k3".to_vec(), b"v3".to_vec())],
        state_deletes: vec![b"k1".to_vec(), b"k3".to_vec(), b"never".to_vec()],
        ..epoch(2, 0)
    };
    store.commit(next).unwrap();
    assert_eq!(store.last_committed().unwrap().unwrap().state, vec![(b"k2".to_vec(), b"v2'".to_vec())]);
}

#[test]
fn sweep_drops_old_windows_in_every_table() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = EmbeddedStore::open(dir.path()).unwrap();
    let rows = vec![
        row("a", 0, 5, Status::Final, 1),
        row("a", MINUTE, 6, Status::Restated, 2),
        row("b", 2 * MINUTE, 7, Status::Final, 1),
        row("b", 3 * MINUTE, 1, Status::Partial, 0),
    ];
    let entries = vec![late("a", 0, 1, false, &[1, 2]), late("b", 3 * MINUTE, 1, true, &[3])];
    store.commit(EpochCommit { rows: rows.clone(), late: entries, ..epoch(1, 0) }).unwrap();
    assert_eq!(store.sweep(0).unwrap(), 0);
    // rows 2 + versions 2 + ledger 2
    assert_eq!(store.sweep(2 * MINUTE).unwrap(), 6);
    assert_eq!(store.all_rows().unwrap(), vec![rows[2].row.clone(), rows[3].row.clone()]);
    assert_eq!(store.row_history(&window("a", MINUTE)).unwrap(), vec![]);
    assert_eq!(store.row_history(&window("b", 2 * MINUTE)).unwrap(), vec![rows[2].row.clone()]);
    assert_eq!(store.late_entries(0, u64::MAX).unwrap(), vec![late("b", 3 * MINUTE, 1, true, &[3])]);
    assert_eq!(store.last_committed().unwrap().unwrap().epoch, 1, "the commit record stays");
    assert_eq!(store.sweep(u64::MAX.saturating_sub(DEFAULT_RETENTION_MS)).unwrap(), 4);
}

#[test]
fn another_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let txn = store.begin_write().unwrap();
        txn.open_table(META).unwrap().insert(META_FORMAT, FORMAT_VERSION + 1).unwrap();
        txn.commit().unwrap();
    }
    for error in [EmbeddedStore::open(dir.path()).err(), EmbeddedStore::open_read_only(dir.path()).err()] {
        match error {
            Some(StoreError::Format { found, expected, .. }) => assert_eq!((found, expected), (FORMAT_VERSION + 1, FORMAT_VERSION)),
            other => panic!("open of another format: {other:?}"),
        }
    }
}

#[test]
fn reading_a_directory_without_a_store_fails() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(EmbeddedStore::open_read_only(dir.path()), Err(StoreError::Io { .. })));
}

#[test]
fn handles_go_to_other_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<EmbeddedStore>();
    send_sync::<EmbeddedReader>();
}
