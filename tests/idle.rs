//! Idleness and liveness of the source, driven step by step with a manual clock.
//!
//! Partitions that have caught up with their end offset must not hold the
//! frontier back; when all have, the frontier follows the clock so past
//! windows finalize without new traffic. A click that arrives later is still
//! judged by its own partition's watermark: on time there, it restates the
//! window the clock already emitted (it is not too late, and it counts), and
//! one click stamped far ahead in another partition changes nothing.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tally::dataflow::partition::TimeRules;
use tally::dataflow::{self, Attribution, PartitionReader, Plan, ReadStatus, SourceSettings, WindowRules};
use tally::event::{Click, KeyType};
use tally::row::{Row, Status};
use tally::sink::{MemorySink, Sink};
use tally::telemetry::SourceStats;

/// A live partition: reads what the test appended, then reports caught up;
/// finished once closed, so the dataflow can shut down.
#[derive(Clone, Default)]
struct LivePartition(Arc<Mutex<VecDeque<Click>>>, Arc<std::sync::atomic::AtomicBool>);

impl PartitionReader for LivePartition {
    fn read(&mut self, out: &mut Vec<Click>, max: usize) -> ReadStatus {
        let mut queue = self.0.lock().unwrap();
        let n = queue.len().min(max);
        out.extend(queue.drain(..n));
        match (queue.is_empty(), self.1.load(SeqCst)) {
            (false, _) => ReadStatus::More,
            (true, false) => ReadStatus::CaughtUp,
            (true, true) => ReadStatus::Finished,
        }
    }
}

fn click(ts: u64, id: u128) -> Click {
    Click { ad: "a".into(), ts, user: id as u64, request_id: id }
}

fn final_row(rows: &[Row], start: u64, status: Status) -> Option<Row> {
    rows.iter().find(|r| r.granularity_ms == 60_000 && r.window_start == start && r.status == status).cloned()
}

#[test]
fn caught_up_partitions_release_the_frontier_and_later_clicks_restate_by_their_own_partition() {
    let partitions = [LivePartition::default(), LivePartition::default()];
    let now = Arc::new(AtomicU64::new(0));
    let sink = MemorySink::default();
    let readers = partitions.clone();
    let clock_now = Arc::clone(&now);
    let clock: dataflow::Clock = Arc::new(move || clock_now.load(SeqCst));
    let rules = TimeRules {
        epoch_ms: 1_000,
        slack_ms: 5_000,
        allowed_lateness_ms: 10_000,
        dedup_horizon_ms: 60_000,
        restate_within_ms: Some(3_600_000),
    };
    let plan = Plan {
        source: SourceSettings {
            partitions: 2,
            rules,
            distinct_users: true,
            readers: Arc::new(move |p, _offset| Box::new(readers[p as usize].clone())),
            clock: Arc::clone(&clock),
            stats: Arc::new(SourceStats::default()),
            resume: Default::default(),
            start: Default::default(),
            resume_epoch: 0,
            leave_open: false,
            finish: Default::default(),
        },
        attribution: Arc::new(Attribution { intervals: vec![], ads: vec![], group_by: vec![KeyType::Ad] }),
        windows: WindowRules {
            windows_ms: vec![60_000],
            allowed_lateness_ms: 10_000,
            restate_within_ms: Some(3_600_000),
            keep_state: true,
        },
        early_results_ms: Some(3_600_000),
        clock,
        errors: Default::default(),
        commit_lock: Default::default(),
        restored: Default::default(),
        committed_windows: None,
        window_workers: None,
    };
    let handle = sink.handle();
    timely::execute_directly(move |worker| {
        let worker_sink: Box<dyn Sink + Send> = Box::new(handle.handle());
        worker.dataflow::<u64, _, _>(|scope| {
            dataflow::build(scope, plan, Some(worker_sink));
        });
        let mut committed: Vec<Row> = Vec::new();
        let late_seen = std::cell::Cell::new(0usize);
        let mut step_until = |worker: &mut timely::worker::Worker, what: &str, done: &dyn Fn(&[Row]) -> bool| {
            for _ in 0..2_000 {
                worker.step_or_park(Some(Duration::from_millis(5)));
                let taken = sink.take();
                late_seen.set(late_seen.get() + taken.late.len());
                committed.extend(taken.rows);
                if done(&committed) {
                    return committed.clone();
                }
            }
            panic!("timed out waiting for {what}; rows: {committed:?}");
        };

        // Partition 0 gets clicks up to 200 s, partition 1 one at 150 s: the
        // least partition watermark is 145 s.
        {
            let mut p0 = partitions[0].0.lock().unwrap();
            for i in 1..=20u64 {
                p0.push_back(click(i * 10_000, u128::from(i)));
            }
        }
        partitions[1].0.lock().unwrap().push_back(click(150_000, 100));
        let rows = step_until(worker, "windows up to the least watermark", &|rows| final_row(rows, 60_000, Status::Final).is_some());
        assert_eq!(final_row(&rows, 0, Status::Final).map(|r| r.clicks), Some(5));
        assert_eq!(final_row(&rows, 60_000, Status::Final).map(|r| r.clicks), Some(6));
        assert!(final_row(&rows, 120_000, Status::Final).is_none(), "the clock is at 0: 120 s cannot be final yet");

        // No traffic, the clock moves on: the later windows are emitted anyway.
        now.store(400_000, SeqCst);
        let rows = step_until(worker, "the clock to emit 180 s", &|rows| final_row(rows, 180_000, Status::Final).is_some());
        assert_eq!(final_row(&rows, 120_000, Status::Final).map(|r| r.clicks), Some(7));
        assert_eq!(final_row(&rows, 180_000, Status::Final).map(|r| r.clicks), Some(3));

        // One click stamped far ahead in partition 0, then two clicks on time
        // for partition 1 (its watermark is still 145 s) in the window the
        // clock emitted: they count, as a restatement, and are not late.
        partitions[0].0.lock().unwrap().push_back(click(10_000_000, 101));
        partitions[1].0.lock().unwrap().extend([click(170_000, 102), click(171_000, 103)]);
        now.store(410_000, SeqCst);
        let rows = step_until(worker, "the restatement", &|rows| {
            rows.iter().any(|r| r.window_start == 120_000 && r.status == Status::Restated && r.clicks == 9)
        });
        let latest = rows.iter().filter(|r| r.granularity_ms == 60_000 && r.window_start == 120_000).max_by_key(|r| r.version).unwrap();
        assert_eq!((latest.clicks, latest.status), (9, Status::Restated));
        assert_eq!(late_seen.get() + sink.take().late.len(), 0, "clicks on time for their partition are not late");
        partitions.iter().for_each(|p| p.1.store(true, SeqCst));
    });
}
