//! Unit tests of the log as a whole that look inside it (the published
//! segment list, the sparse index). The black-box tests, crashes included,
//! are in `tests/log.rs`.

use super::segment::INDEX_INTERVAL_RECORDS;
use super::*;

fn click(i: u64) -> Click {
    Click { ad: format!("ad-{}", i % 5).into(), ts: 10_000 + i, user: i * 31, request_id: u128::from(i) << 64 | 0xabc }
}

fn open(dir: &Path, options: LogOptions) -> Log {
    Log::open(dir, 1, options).unwrap()
}

#[test]
fn options_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (0, LogOptions::default(), "log options: partitions is 0, must be 1..=1024"),
        (1025, LogOptions::default(), "log options: partitions is 1025, must be 1..=1024"),
        (1, LogOptions { segment_bytes: 0, ..LogOptions::default() }, "log options: segment_bytes must be positive"),
        (
            1,
            LogOptions { max_batch_bytes: 10, ..LogOptions::default() },
            "log options: max_batch_bytes is 10, must be at least 296 (one record)",
        ),
    ];
    for (partitions, options, message) in cases {
        let Err(e) = Log::open(dir.path(), partitions, options) else { panic!("an error") };
        assert_eq!(e.to_string(), message);
    }
    assert!(!dir.path().join(meta::META_FILE).exists(), "nothing created for bad options");
}

#[test]
fn readers_seek_through_the_sparse_index() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogOptions::default());
    let n = 3 * INDEX_INTERVAL_RECORDS + 17;
    let clicks: Vec<Click> = (0..n).map(click).collect();
    for chunk in clicks.chunks(500) {
        log.append(chunk).unwrap();
    }
    let index: Vec<u64> = read(&log.partitions[0].shared.published)[0].index.iter().map(|e| e.offset).collect();
    assert_eq!(index, [0, INDEX_INTERVAL_RECORDS, 2 * INDEX_INTERVAL_RECORDS, 3 * INDEX_INTERVAL_RECORDS]);
    for from in [0, 1, INDEX_INTERVAL_RECORDS - 1, INDEX_INTERVAL_RECORDS, 2 * INDEX_INTERVAL_RECORDS + 5, n - 1, n] {
        let mut reader = log.reader(0, from).unwrap();
        let mut out = Vec::new();
        while reader.read(&mut out, 1000).unwrap() > 0 {}
        assert_eq!(out, clicks[from as usize..], "from {from}");
        assert_eq!(reader.offset(), n);
    }
}

/// The index built while appending equals the one rebuilt by the scan at
/// open, across segment rollovers.
#[test]
fn append_and_reopen_build_the_same_segments() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions { segment_bytes: 40_000, ..LogOptions::default() };
    let describe = |log: &Log| -> Vec<String> { read(&log.partitions[0].shared.published).iter().map(|s| format!("{s:?}")).collect() };
    let appended = {
        let log = open(dir.path(), options);
        for i in 0..30 {
            log.append(&(i * 100..(i + 1) * 100).map(click).collect::<Vec<_>>()).unwrap();
        }
        describe(&log)
    };
    assert!(appended.len() > 2, "{} segments", appended.len());
    assert!(read(&open(dir.path(), options).partitions[0].shared.published).iter().all(|s| s.bytes <= 40_000));
    assert_eq!(describe(&open(dir.path(), options)), appended);
}

#[test]
fn a_batch_larger_than_max_batch_bytes_is_split_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogOptions { max_batch_bytes: 1000, ..LogOptions::default() });
    let clicks: Vec<Click> = (0..100).map(click).collect();
    let receipt = log.append(&clicks).unwrap();
    assert_eq!(receipt.positions, (0..100).map(|o| (0, o)).collect::<Vec<_>>());
    let stats = log.stats();
    assert!(stats.batches >= 4 && stats.fsyncs == stats.batches, "{stats:?}");
    let mut out = Vec::new();
    log.reader(0, 0).unwrap().read(&mut out, 1000).unwrap();
    assert_eq!(out, clicks);
}

#[test]
fn log_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Log>();
    fn check_send<T: Send>() {}
    check_send::<LogReader>();
}
