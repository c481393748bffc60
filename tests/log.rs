//! The embedded log from the outside (`tally::log`): round trips, reopening,
//! crashes simulated by cutting and damaging segment files, rollover,
//! retention, group commit under concurrency, and durable-only reads.
//!
//! Directories live under cargo's target tmpdir, on the same file system as
//! the build, so fsyncs are real.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tally::event::{partition_of, Click};
use tally::log::{partition_dir_name, record, segment, Log, LogError, LogOptions, LogView};

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("log-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn click(i: u64) -> Click {
    Click {
        ad: format!("ad-{}", i % 7).into(),
        ts: 1_000_000 + i,
        user: i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        request_id: u128::from(i).wrapping_mul(0x0123_4567_89ab_cdef_1357_9bdf_2468_ace1) + 1,
    }
}

fn clicks(range: std::ops::Range<u64>) -> Vec<Click> {
    range.map(click).collect()
}

/// Everything from `offset` to the end, read in odd-sized steps.
fn read_all(log: &Log, partition: u32, offset: u64) -> Vec<Click> {
    let mut reader = log.reader(partition, offset).unwrap();
    let mut out = Vec::new();
    while reader.read(&mut out, 7).unwrap() > 0 {}
    assert_eq!(reader.offset(), log.end_offsets()[partition as usize]);
    out
}

fn segment_path(dir: &Path, partition: u32, base: u64) -> PathBuf {
    dir.join(partition_dir_name(partition)).join(segment::file_name(base))
}

fn segment_bases(dir: &Path, partition: u32) -> Vec<u64> {
    let mut bases: Vec<u64> = fs::read_dir(dir.join(partition_dir_name(partition)))
        .unwrap()
        .filter_map(|e| segment::parse_file_name(e.unwrap().file_name().to_str()?))
        .collect();
    bases.sort_unstable();
    bases
}

fn small_segments(segment_bytes: u64) -> LogOptions {
    LogOptions { segment_bytes, ..LogOptions::default() }
}

fn encoded_len(c: &Click) -> u64 {
    record::encode(c, &mut Vec::new()).unwrap() as u64
}

#[test]
fn round_trip_keeps_order_and_contiguous_offsets() {
    let dir = tempdir();
    let log = Log::open(dir.path(), 4, LogOptions::default()).unwrap();
    assert!(log.recovery().is_clean());
    let all = clicks(0..1000);
    let mut positions = Vec::new();
    for chunk in all.chunks(13) {
        positions.extend(log.append(chunk).unwrap().positions);
    }
    let mut expected: Vec<Vec<Click>> = vec![Vec::new(); 4];
    for (c, &(p, offset)) in all.iter().zip(&positions) {
        assert_eq!(p, partition_of(c.request_id, 4));
        assert_eq!(offset, expected[p as usize].len() as u64, "offsets are contiguous per partition, in append order");
        expected[p as usize].push(c.clone());
    }
    assert!(expected.iter().all(|e| !e.is_empty()));
    for p in 0..4 {
        assert_eq!(read_all(&log, p, 0), expected[p as usize], "partition {p}");
    }
    assert_eq!(log.end_offsets(), expected.iter().map(|e| e.len() as u64).collect::<Vec<_>>());
    assert_eq!(log.start_offsets(), [0; 4]);
    let stats = log.stats();
    assert_eq!((stats.appends, stats.records), (77, 1000));
}

#[test]
fn reopen_sees_everything_and_continues_the_offsets() {
    let dir = tempdir();
    let first = clicks(0..300);
    let ends = {
        let log = Log::open(dir.path(), 3, LogOptions::default()).unwrap();
        log.append(&first).unwrap();
        log.end_offsets()
    };
    let log = Log::open(dir.path(), 3, LogOptions::default()).unwrap();
    assert!(log.recovery().is_clean());
    assert_eq!(log.end_offsets(), ends);
    let more = clicks(300..400);
    let receipt = log.append(&more).unwrap();
    for (c, &(p, offset)) in more.iter().zip(&receipt.positions) {
        assert!(offset >= ends[p as usize], "{c:?} got offset {offset}, below the end {}", ends[p as usize]);
    }
    let everything: Vec<Click> = first.iter().chain(&more).cloned().collect();
    for p in 0..3 {
        let expected: Vec<Click> = everything.iter().filter(|c| partition_of(c.request_id, 3) == p).cloned().collect();
        assert_eq!(read_all(&log, p, 0), expected);
    }
}

#[test]
fn reopening_with_another_partition_count_names_both() {
    let dir = tempdir();
    drop(Log::open(dir.path(), 4, LogOptions::default()).unwrap());
    let e = Log::open(dir.path(), 8, LogOptions::default()).err().unwrap();
    assert_eq!(e.to_string(), format!("log {}: created with 4 partitions, opened with 8", dir.path().display()));
}

/// A crash in the middle of writing the last record: every cut inside it is
/// truncated back to the record before, reported, and the log continues.
#[test]
fn torn_tail_inside_the_last_record_is_truncated_and_reported() {
    let dir = tempdir();
    let written = clicks(0..20);
    drop(Log::open(dir.path(), 1, LogOptions::default()).and_then(|log| log.append(&written)).unwrap());
    let path = segment_path(dir.path(), 0, 0);
    let intact = fs::read(&path).unwrap();
    let last_start = intact.len() as u64 - encoded_len(&written[19]);
    for cut in last_start + 1..intact.len() as u64 {
        fs::write(&path, &intact[..cut as usize]).unwrap();
        let log = Log::open(dir.path(), 1, LogOptions::default()).unwrap();
        let report = &log.recovery().truncated;
        assert_eq!(report.len(), 1, "cut at {cut}");
        assert_eq!((report[0].partition, report[0].offset, report[0].position), (0, 19, last_start));
        assert_eq!(report[0].bytes_dropped, cut - last_start);
        assert_eq!(report[0].segment, path);
        assert!(report[0].to_string().starts_with("partition 0: dropped a torn tail of"), "{}", report[0]);
        assert_eq!(fs::metadata(&path).unwrap().len(), last_start, "truncated on disk");
        assert_eq!(read_all(&log, 0, 0), written[..19]);
    }
    // After the last truncation, the next append takes offset 19 again: it
    // was never acknowledged nor visible.
    let log = Log::open(dir.path(), 1, LogOptions::default()).unwrap();
    assert!(log.recovery().is_clean(), "the truncation was made durable");
    assert_eq!(log.append(&written[19..]).unwrap().positions, [(0, 19)]);
    assert_eq!(read_all(&log, 0, 0), written);
}

#[test]
fn garbage_after_the_last_record_is_truncated_and_reported() {
    let dir = tempdir();
    let written = clicks(0..10);
    drop(Log::open(dir.path(), 1, LogOptions::default()).and_then(|log| log.append(&written)).unwrap());
    let path = segment_path(dir.path(), 0, 0);
    let intact = fs::read(&path).unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut garbages: Vec<Vec<u8>> = vec![vec![0; 4096], vec![0xff; 3], vec![0x21; 8]];
    for len in [1, 7, 8, 41, 300, 5000, 100_000] {
        garbages.push(
            (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect(),
        );
    }
    // A header promising a plausible record, with a payload that is not it.
    let mut fake = 40u32.to_le_bytes().to_vec();
    fake.extend_from_slice(&[0; 44]);
    garbages.push(fake);
    for garbage in garbages {
        let mut bytes = intact.clone();
        bytes.extend_from_slice(&garbage);
        fs::write(&path, &bytes).unwrap();
        let log = Log::open(dir.path(), 1, LogOptions::default()).unwrap();
        let report = &log.recovery().truncated;
        assert_eq!(report.len(), 1);
        assert_eq!((report[0].offset, report[0].position, report[0].bytes_dropped), (10, intact.len() as u64, garbage.len() as u64));
        assert_eq!(read_all(&log, 0, 0), written);
    }
}

fn corrupt_byte(path: &Path, position: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[position as usize] ^= 0x5a;
    fs::write(path, bytes).unwrap();
}

#[test]
fn a_corrupt_record_followed_by_valid_data_fails_the_open() {
    let dir = tempdir();
    let written = clicks(0..50);
    drop(Log::open(dir.path(), 1, LogOptions::default()).and_then(|log| log.append(&written)).unwrap());
    let path = segment_path(dir.path(), 0, 0);
    let start_of_30: u64 = written[..30].iter().map(encoded_len).sum();
    let pristine = fs::read(&path).unwrap();
    // The length, the CRC, the ad, the timestamp and the request id.
    for within in [1, 5, 9, 16, 40] {
        fs::write(&path, &pristine).unwrap();
        corrupt_byte(&path, start_of_30 + within);
        let e = Log::open(dir.path(), 1, LogOptions::default()).expect_err("corruption fails the open");
        assert!(matches!(e, LogError::Corrupt { partition: 0, offset: 30, .. }), "{e}");
        let message = e.to_string();
        let prefix = format!("log partition 0: corrupt record at offset 30 (byte {start_of_30} of {}): ", path.display());
        assert!(message.starts_with(&prefix), "{message}");
        assert!(message.contains("an intact record follows at byte"), "{message}");
        assert_eq!(fs::read(&path).unwrap()[..start_of_30 as usize], pristine[..start_of_30 as usize], "nothing truncated");
    }
}

#[test]
fn a_bad_tail_in_a_closed_segment_is_corruption_not_a_torn_tail() {
    let dir = tempdir();
    let written = clicks(0..40);
    {
        let log = Log::open(dir.path(), 1, small_segments(500)).unwrap();
        for c in &written {
            log.append(std::slice::from_ref(c)).unwrap();
        }
    }
    let bases = segment_bases(dir.path(), 0);
    assert!(bases.len() >= 3, "{bases:?}");
    let first = segment_path(dir.path(), 0, bases[0]);
    let last_of_first = fs::metadata(&first).unwrap().len() - encoded_len(&written[bases[1] as usize - 1]);
    corrupt_byte(&first, last_of_first + 12);
    let e = Log::open(dir.path(), 1, small_segments(500)).err().unwrap().to_string();
    assert!(e.contains(&format!("corrupt record at offset {}", bases[1] - 1)), "{e}");
    assert!(e.ends_with("newer segments follow, so it is not a torn tail and is not skipped"), "{e}");
}

#[test]
fn a_missing_middle_segment_fails_the_open() {
    let dir = tempdir();
    drop(Log::open(dir.path(), 1, small_segments(300)).and_then(|log| log.append(&clicks(0..30))).unwrap());
    let bases = segment_bases(dir.path(), 0);
    fs::remove_file(segment_path(dir.path(), 0, bases[1])).unwrap();
    let e = Log::open(dir.path(), 1, small_segments(300)).err().unwrap().to_string();
    let expected = format!("starts at offset {}, but the segment before it ends at offset {}", bases[2], bases[1]);
    assert!(e.starts_with("log partition 0: ") && e.ends_with(&expected), "{e}");
}

#[test]
fn segments_roll_over_and_reads_cross_them() {
    let dir = tempdir();
    let written = clicks(0..500);
    let segment_bytes = 2_000;
    {
        let log = Log::open(dir.path(), 1, small_segments(segment_bytes)).unwrap();
        for chunk in written.chunks(37) {
            log.append(chunk).unwrap();
        }
        assert_eq!(read_all(&log, 0, 0), written);
        for from in [0, 1, 44, 45, 46, 250, 499, 500] {
            assert_eq!(read_all(&log, 0, from), written[from as usize..], "from {from}");
        }
        assert!(log.stats().dir_fsyncs > 0, "new segment files are made durable");
    }
    let bases = segment_bases(dir.path(), 0);
    assert!(bases.len() > 10, "{bases:?}");
    assert_eq!(bases[0], 0);
    let ends: Vec<u64> = bases[1..].iter().copied().chain([500]).collect();
    for (&base, &end) in bases.iter().zip(&ends) {
        let len = fs::metadata(segment_path(dir.path(), 0, base)).unwrap().len();
        assert_eq!(len, written[base as usize..end as usize].iter().map(encoded_len).sum::<u64>(), "segment {base}");
        assert!(len <= segment_bytes, "{len}");
        if end < 500 {
            assert!(len + encoded_len(&written[end as usize]) > segment_bytes, "segment {base} closed only when full");
        }
    }
    let log = Log::open(dir.path(), 1, small_segments(segment_bytes)).unwrap();
    assert_eq!(log.end_offsets(), [500]);
    assert_eq!(read_all(&log, 0, 123), written[123..]);
}

#[test]
fn an_event_time_after_the_year_9999_is_never_appended_nor_read() {
    let dir = tempdir();
    let log = Log::open(dir.path(), 1, LogOptions::default()).unwrap();
    let too_late = Click { ts: tally::event::MAX_EVENT_TIME_MS + 1, ..click(9) };
    let e = log.append(&[click(8), too_late]).unwrap_err();
    assert!(matches!(e, LogError::TimestampTooLarge { .. }), "{e}");
    assert_eq!(log.end_offsets(), [0], "nothing of the call was written");
    log.append(&clicks(0..3)).unwrap();
    drop(log);

    // The last record as a writer without the bound wrote it: whole, CRC and all.
    let path = segment_path(dir.path(), 0, 0);
    let mut bytes = fs::read(&path).unwrap();
    let start = (encoded_len(&click(0)) + encoded_len(&click(1))) as usize;
    let payload = start + record::HEADER_BYTES;
    let ts_at = payload + 1 + usize::from(bytes[payload]);
    bytes[ts_at..ts_at + 8].copy_from_slice(&18_446_744_073_709_000_000u64.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[payload..]);
    bytes[start + 4..payload].copy_from_slice(&crc.to_le_bytes());
    fs::write(&path, &bytes).unwrap();
    let e = Log::open(dir.path(), 1, LogOptions::default()).unwrap_err().to_string();
    assert!(e.starts_with("log partition 0: corrupt record at offset 2"), "{e}");
    assert!(e.contains("timestamp 18446744073709000000 is too large") && e.contains("written whole"), "not cut as a torn tail: {e}");
}

#[test]
fn retention_never_deletes_an_offset_the_job_still_needs() {
    let dir = tempdir();
    let options = LogOptions { segment_bytes: 1_000, retention_ms: 10_000, ..LogOptions::default() };
    let log = Log::open(dir.path(), 2, options).unwrap();
    let written: Vec<Click> = (0..200).map(|i| Click { ts: i * 1000, ..click(i) }).collect();
    log.append(&written).unwrap();
    let bases: Vec<Vec<u64>> = (0..2).map(|p| segment_bases(dir.path(), p)).collect();
    assert!(bases.iter().all(|b| b.len() > 4));
    let far_future = u64::MAX;

    // Before the job's first commit it needs everything; a partition without
    // an entry is kept whole as well.
    let retention = log.enforce_retention(far_future, &[0]).unwrap();
    assert_eq!(retention.deleted, Vec::<PathBuf>::new());
    assert_eq!(retention.kept_needed, bases[0].len() - 1 + bases[1].len() - 1, "every closed segment is old enough");
    let line = retention.report(10_000).unwrap();
    assert!(line.starts_with("log retention: deleted 0 segments older than 10s; kept"), "{line}");
    assert_eq!(log.start_offsets(), [0, 0]);

    // The job needs partition 0 from inside its third segment: the first
    // two go, the third stays with everything after it.
    let needed = bases[0][2] + 1;
    let retention = log.enforce_retention(far_future, &[needed, 0]).unwrap();
    assert_eq!(retention.deleted, vec![segment_path(dir.path(), 0, bases[0][0]), segment_path(dir.path(), 0, bases[0][1])]);
    assert_eq!(log.start_offsets(), [bases[0][2], 0]);
    assert_eq!(read_all(&log, 0, needed).len() as u64, log.end_offsets()[0] - needed);

    // Needed exactly at a segment's base: the segment before it ends there and goes.
    let retention = log.enforce_retention(far_future, &[bases[0][3], 0]).unwrap();
    assert_eq!(retention.deleted, vec![segment_path(dir.path(), 0, bases[0][2])]);
}

#[test]
fn retention_deletes_old_closed_segments_only() {
    let dir = tempdir();
    let retention_ms = 10_000;
    let options = LogOptions { segment_bytes: 1_000, retention_ms, ..LogOptions::default() };
    let log = Log::open(dir.path(), 1, options).unwrap();
    // Event times 1 s apart: clicks i at ts = i * 1000.
    let written: Vec<Click> = (0..100).map(|i| Click { ts: i * 1000, ..click(i) }).collect();
    log.append(&written).unwrap();
    let bases = segment_bases(dir.path(), 0);
    assert!(bases.len() > 4);
    let mut early = log.reader(0, 0).unwrap();
    let mut seen = Vec::new();
    early.read(&mut seen, 1).unwrap();

    // Now = 50 s: segments whose newest click is before 40 s go (the job
    // needs nothing before the end).
    let retention = log.enforce_retention(50_000, &[100]).unwrap();
    let deleted = retention.deleted;
    assert_eq!(retention.kept_needed, 0);
    let kept_from = bases.iter().copied().find(|&b| {
        let end = bases.iter().copied().find(|&n| n > b).unwrap_or(100);
        (end - 1) * 1000 + retention_ms >= 50_000
    });
    let kept_from = kept_from.unwrap();
    let expected: Vec<PathBuf> = bases.iter().filter(|&&b| b < kept_from).map(|&b| segment_path(dir.path(), 0, b)).collect();
    assert!(!expected.is_empty());
    assert_eq!(deleted, expected);
    assert!(deleted.iter().all(|p| !p.exists()));
    assert_eq!(log.start_offsets(), [kept_from]);
    assert_eq!(log.end_offsets(), [100]);

    let e = log.reader(0, 0).err().unwrap();
    assert_eq!(e.to_string(), format!("log partition 0: offset 0 is no longer retained (oldest retained offset is {kept_from})"));
    assert_eq!(read_all(&log, 0, kept_from), written[kept_from as usize..]);
    // A reader already inside a deleted segment finishes it from its open file.
    while early.offset() < kept_from {
        assert!(early.read(&mut seen, 10).unwrap() > 0);
    }
    early.read(&mut seen, 1000).unwrap();
    assert_eq!(seen, written, "and then goes on into the retained ones");

    // Far in the future: every closed segment goes, the active one stays.
    let active = *segment_bases(dir.path(), 0).last().unwrap();
    log.enforce_retention(u64::MAX, &[100]).unwrap();
    assert_eq!(segment_bases(dir.path(), 0), [active]);
    assert_eq!(read_all(&log, 0, active), written[active as usize..]);
    drop(log);

    let log = Log::open(dir.path(), 1, options).unwrap();
    assert_eq!((log.start_offsets(), log.end_offsets()), (vec![active], vec![100]));
    assert_eq!(log.append(&clicks(1000..1001)).unwrap().positions, [(0, 100)]);
}

#[test]
fn concurrent_appends_are_all_present_once_with_shared_fsyncs() {
    const THREADS: u64 = 8;
    const APPENDS: u64 = 100;
    let dir = tempdir();
    let log = Arc::new(Log::open(dir.path(), 2, LogOptions::default()).unwrap());
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for a in 0..APPENDS {
                    let first = (t * APPENDS + a) * 3;
                    let batch = clicks(first..first + 1 + a % 3);
                    let receipt = log.append(&batch).unwrap();
                    for (c, &(p, _)) in batch.iter().zip(&receipt.positions) {
                        assert_eq!(p, partition_of(c.request_id, 2));
                    }
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    let mut expected = HashSet::new();
    for t in 0..THREADS {
        for a in 0..APPENDS {
            let first = (t * APPENDS + a) * 3;
            expected.extend((first..first + 1 + a % 3).map(|i| click(i).request_id));
        }
    }
    let mut seen = HashSet::new();
    for p in 0..2 {
        for c in read_all(&log, p, 0) {
            assert_eq!(partition_of(c.request_id, 2), p);
            assert!(seen.insert(c.request_id), "{c:?} twice");
        }
    }
    assert_eq!(seen, expected);
    let stats = log.stats();
    assert_eq!((stats.appends, stats.records), (THREADS * APPENDS, expected.len() as u64));
    assert!(stats.fsyncs < stats.appends, "group commit: {stats:?}");
    eprintln!("group commit: {stats:?}");
}

/// Bytes in the file past what the log has fsynced (here: put there behind
/// its back) are not visible to readers.
#[test]
fn readers_see_only_durable_records() {
    let dir = tempdir();
    let log = Log::open(dir.path(), 1, LogOptions::default()).unwrap();
    let written = clicks(0..5);
    log.append(&written).unwrap();
    let path = segment_path(dir.path(), 0, 0);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, [&bytes[..], &bytes[..]].concat()).unwrap();
    let mut reader = log.reader(0, 0).unwrap();
    let mut out = Vec::new();
    assert_eq!(reader.read(&mut out, 100).unwrap(), 5);
    assert_eq!(reader.read(&mut out, 100).unwrap(), 0, "caught up at the durable end");
    assert_eq!(out, written);
    assert_eq!(log.end_offsets(), [5]);
    // A caught-up reader sees the next append once it has returned.
    log.append(&clicks(5..6)).unwrap();
    assert_eq!(reader.read(&mut out, 100).unwrap(), 1);
    assert_eq!(out[5], click(5));
}

/// A reader racing appenders never gets ahead of the acknowledged end and
/// finally sees every record once, in order.
#[test]
fn a_reader_racing_appenders_stays_within_the_durable_end() {
    let dir = tempdir();
    let log = Arc::new(Log::open(dir.path(), 1, small_segments(4_000)).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let appenders: Vec<_> = (0..4u64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for a in 0..100 {
                    log.append(&clicks(t * 1000 + a * 2..t * 1000 + a * 2 + 2)).unwrap();
                }
            })
        })
        .collect();
    let reader = {
        let (log, done) = (log.clone(), done.clone());
        std::thread::spawn(move || {
            let mut reader = log.reader(0, 0).unwrap();
            let mut out = Vec::new();
            loop {
                let finished = done.load(Ordering::SeqCst);
                let n = reader.read(&mut out, 50).unwrap();
                assert!(reader.offset() <= log.end_offsets()[0], "read past the durable end");
                if n == 0 && finished {
                    return out;
                }
            }
        })
    };
    appenders.into_iter().for_each(|h| h.join().unwrap());
    done.store(true, Ordering::SeqCst);
    let seen = reader.join().unwrap();
    assert_eq!(seen.len(), 800);
    assert_eq!(seen, read_all(&log, 0, 0));
    for t in 0..4 {
        let ours: Vec<u64> = seen.iter().map(|c| c.ts - 1_000_000).filter(|i| i / 1000 == t).collect();
        assert_eq!(ours, (t * 1000..t * 1000 + 200).collect::<Vec<_>>(), "appender {t}'s order");
    }
}

#[test]
fn bad_requests_are_clear_errors() {
    let dir = tempdir();
    let log = Log::open(dir.path(), 2, LogOptions::default()).unwrap();
    log.append(&clicks(0..10)).unwrap();
    let end = log.end_offsets()[0];
    assert_eq!(log.reader(2, 0).err().unwrap().to_string(), "log: no partition 2 (the log has 2)");
    assert_eq!(
        log.reader(0, end + 1).err().unwrap().to_string(),
        format!("log partition 0: offset {} is beyond the end offset {end}", end + 1)
    );
    let mut long = clicks(10..12);
    long[1].ad = "x".repeat(300).into();
    let e = log.append(&long).unwrap_err();
    assert_eq!(e.to_string(), "log: ad id of 300 bytes does not fit a record (max 255)");
    assert_eq!(log.end_offsets().iter().sum::<u64>(), 10, "nothing of a rejected append is written");
    assert!(log.append(&[]).unwrap().positions.is_empty());
}

/// Clicks whose times go back and forth, as late and out-of-order clicks do.
fn jumbled(range: std::ops::Range<u64>) -> Vec<Click> {
    range.map(|i| Click { ts: 1_000_000 + (i * 7919) % 1_000, ..click(i) }).collect()
}

#[test]
fn a_view_beside_the_owner_is_a_snapshot_of_durable_records() {
    let dir = tempdir();
    let log = Log::open(dir.path(), 1, small_segments(400)).unwrap();
    let written = jumbled(0..200);
    log.append(&written).unwrap();
    assert!(segment_bases(dir.path(), 0).len() > 3, "several segments");

    // The owner holds the lock; a view opens anyway and writes nothing.
    let view = LogView::open(dir.path()).unwrap();
    assert_eq!((view.start_offsets(), view.end_offsets()), (vec![0], vec![200]));
    let mut read = Vec::new();
    view.reader(0, 0).unwrap().read(&mut read, 1_000).unwrap();
    assert_eq!(read, written);
    // A time is the first offset whose click is at or after it.
    for time in [0, 1_000_000, 1_000_001, 1_000_500, 1_000_998, 1_000_999, 1_001_000, u64::MAX] {
        let expected = written.iter().position(|c| c.ts >= time).map_or(200, |p| p as u64);
        assert_eq!(view.offset_at_time(0, time).unwrap(), expected, "time {time}");
    }

    // Appends after it opened are not in the snapshot; the owner's own view follows them.
    log.append(&jumbled(200..210)).unwrap();
    assert_eq!(view.end_offsets(), vec![200]);
    assert_eq!(log.view().end_offsets(), vec![210]);
    // A record being written (a partial tail) ends a fresh view's partition.
    drop(log);
    let last = *segment_bases(dir.path(), 0).last().unwrap();
    let path = segment_path(dir.path(), 0, last);
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(&[9, 0, 0]);
    fs::write(&path, &bytes).unwrap();
    assert_eq!(LogView::open(dir.path()).unwrap().end_offsets(), vec![210]);
    assert!(matches!(LogView::open(&dir.path().join("nowhere")), Err(LogError::Missing { .. })));
}
