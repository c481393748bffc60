//! The embedded store through its public API, across processes: a writer
//! killed mid-run leaves whole epochs, readers in another process never see
//! half of one, and the directory lock names its holder.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tally::event::KeyType;
use tally::row::{LateEntry, Row, Status};
use tally::store::{
    EmbeddedReader, EmbeddedStore, EpochCommit, EpochStore, PartitionCheckpoint, RowFilter, Snapshot, StoreError, StoredRow, WindowKey,
};

const MINUTE: u64 = 60_000;
/// Windows every child epoch overwrites.
const WINDOWS: u64 = 64;
/// Set for the child process: the store directory it commits to.
const CHILD_DIR_ENV: &str = "TALLY_STORE_TEST_CHILD_DIR";
/// How long a test waits for the child before failing.
const PATIENCE: Duration = Duration::from_secs(60);

fn row(key: &str, start: u64, clicks: u64, status: Status, version: u32) -> Row {
    Row { key_type: KeyType::Ad, key: key.into(), granularity_ms: MINUTE, window_start: start, clicks, distinct_users: 1, status, version }
}

fn checkpoint(offset: u64) -> PartitionCheckpoint {
    PartitionCheckpoint { partition: 0, offset, max_ts: offset, floor: 0, dedup_replay_offset: 0, dedup_replay_max_ts: 0 }
}

/// Epoch `e` of the child: every window holds `e` clicks, the ledger gains
/// request id `e`, partition 0 stands at offset `e`, the state says `e`.
fn child_epoch(e: u64, generation: u64) -> EpochCommit {
    let rows =
        (0..WINDOWS).map(|w| StoredRow { row: row("viral", w * MINUTE, e, Status::Partial, 0), sketch: vec![e as u8; 512] }).collect();
    let late = vec![LateEntry {
        key_type: KeyType::Ad,
        key: "viral".into(),
        window_start: 0,
        batch: 0,
        held: true,
        request_ids: vec![u128::from(e)],
    }];
    EpochCommit {
        epoch: e,
        generation,
        rows,
        late,
        partitions: vec![checkpoint(e)],
        state_upserts: vec![(b"epoch".to_vec(), e.to_le_bytes().to_vec())],
        state_deletes: vec![],
    }
}

/// Asserts that `snapshot` holds exactly epochs 1..=E of the child, for its
/// last committed E; returns E (0 before the first commit).
fn assert_whole_epochs(snapshot: &Snapshot) -> u64 {
    let rows = snapshot.all_rows().unwrap();
    let Some(last) = snapshot.last_committed().unwrap() else {
        assert_eq!(rows, vec![]);
        return 0;
    };
    let e = last.epoch;
    assert_eq!(rows.len() as u64, WINDOWS, "epoch {e}");
    assert!(rows.iter().all(|r| r.clicks == e), "epoch {e} seen half-applied");
    assert_eq!(last.partitions, vec![checkpoint(e)]);
    assert_eq!(last.state, vec![(b"epoch".to_vec(), e.to_le_bytes().to_vec())]);
    let ledger = snapshot.late_entries(0, MINUTE).unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].request_ids, (1..=u128::from(e)).collect::<Vec<_>>());
    e
}

/// Not a test on its own: the child process of
/// `a_killed_writer_leaves_whole_epochs_and_releases_its_lock`, committing
/// epochs until it is killed.
#[test]
#[ignore = "run by another test as a child process"]
fn child_commits_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let mut store = EmbeddedStore::open(Path::new(&dir)).unwrap();
    let generation = store.begin_generation().unwrap();
    let started = Instant::now();
    for e in 1.. {
        store.commit(child_epoch(e, generation)).unwrap();
        assert!(started.elapsed() < PATIENCE, "child was never killed");
    }
}

fn open_reader_when_ready(dir: &Path) -> EmbeddedReader {
    let started = Instant::now();
    loop {
        if let Ok(reader) = EmbeddedStore::open_read_only(dir) {
            if reader.snapshot().is_ok() {
                return reader;
            }
        }
        assert!(started.elapsed() < PATIENCE, "the child never created its store");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_killed_writer_leaves_whole_epochs_and_releases_its_lock() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_commits_until_killed", "--ignored", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    // Read in this process while the child commits: every snapshot is whole.
    let reader = open_reader_when_ready(dir.path());
    let started = Instant::now();
    let mut seen = Vec::new();
    while seen.len() < 20 {
        let e = assert_whole_epochs(&reader.snapshot().unwrap());
        assert!(seen.last().is_none_or(|&last| last <= e), "a reader went back in time");
        if e > 0 && seen.last() != Some(&e) {
            seen.push(e);
        }
        assert!(started.elapsed() < PATIENCE, "the child stopped committing at epoch {e}");
    }
    match EmbeddedStore::open(dir.path()) {
        Err(StoreError::Locked { pid, .. }) => assert_eq!(pid, Some(child.id())),
        other => panic!("open beside the child: {:?}", other.err()),
    }

    child.kill().unwrap();
    child.wait().unwrap();
    let mut store = EmbeddedStore::open(dir.path()).unwrap();
    let last = assert_whole_epochs(&store.snapshot().unwrap());
    assert!(last >= *seen.last().unwrap(), "epoch {} was read, then lost", seen.last().unwrap());
    assert_eq!(assert_whole_epochs(&reader.snapshot().unwrap()), last, "a reader outlives the writer's restart");

    let generation = store.begin_generation().unwrap();
    assert_eq!(generation, 2);
    assert!(matches!(store.commit(child_epoch(last + 1, 1)), Err(StoreError::Fenced { .. })));
    store.commit(child_epoch(last + 1, generation)).unwrap();
    assert_eq!(assert_whole_epochs(&reader.snapshot().unwrap()), last + 1);
}

#[test]
fn a_store_left_by_a_killed_writer_opens_read_only_once_no_one_holds_its_lock() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_commits_until_killed", "--ignored", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let reader = open_reader_when_ready(dir.path());
    let started = Instant::now();
    let mut seen = 0;
    while seen < 3 {
        seen = assert_whole_epochs(&reader.snapshot().unwrap());
        assert!(started.elapsed() < PATIENCE, "the child stopped committing at epoch {seen}");
    }
    drop(reader);
    child.kill().unwrap();
    child.wait().unwrap();

    // A job that holds the lock and has not repaired the file yet.
    let lock = tally::lockfile::lock_dir(dir.path()).unwrap();
    match EmbeddedStore::open_read_only(dir.path()) {
        Err(StoreError::NeedsRepair { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
        other => panic!("read-only open of an unrepaired store beside its lock holder: {:?}", other.err()),
    }
    drop(lock);
    let reader = EmbeddedStore::open_read_only(dir.path()).expect("repaired under the free lock, then read");
    assert!(assert_whole_epochs(&reader.snapshot().unwrap()) >= seen, "epoch {seen} was read, then lost");
    EmbeddedStore::open(dir.path()).expect("the repair released the lock");
}

#[test]
fn an_epoch_round_trips_through_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let final_row = row("a", 0, 5, Status::Final, 1);
    let restated = row("a", 0, 6, Status::Restated, 2);
    {
        let mut store = EmbeddedStore::open(dir.path()).unwrap();
        let generation = store.begin_generation().unwrap();
        let commit = |epoch, row: &Row| EpochCommit {
            epoch,
            generation,
            rows: vec![StoredRow { row: row.clone(), sketch: vec![] }],
            partitions: vec![checkpoint(epoch)],
            ..EpochCommit::default()
        };
        store.commit(commit(1000, &final_row)).unwrap();
        store.commit(commit(2000, &restated)).unwrap();
    }
    let reader = EmbeddedStore::open_read_only(dir.path()).unwrap();
    let recovered = reader.last_committed().unwrap().unwrap();
    assert_eq!((recovered.epoch, recovered.generation, recovered.partitions), (2000, 1, vec![checkpoint(2000)]));
    let filter = RowFilter { key_type: KeyType::Ad, key: "a".into(), granularity_ms: MINUTE, from: 0, to: MINUTE };
    assert_eq!(reader.rows(&filter).unwrap(), vec![restated.clone()]);
    assert_eq!(reader.row_history(&WindowKey::of(&final_row)).unwrap(), vec![final_row, restated]);
}
