//! Idleness and liveness of the source, driven step by step with a manual clock.
//!
//! Partitions that have caught up with their end offset must not hold the
//! frontier back; when all have, the frontier follows the clock so past
//! windows finalize without new traffic; and a click that arrives later in a
//! partition that was idle is judged against the frontier it was raised to,
//! so it restates a final window instead of slipping into it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tally::dataflow::partition::TimeRules;
use tally::dataflow::stats::SourceStats;
use tally::dataflow::{self, Attribution, PartitionReader, Plan, ReadStatus, SourceSettings, WindowRules};
use tally::event::{Click, KeyType};
use tally::row::{Row, Status};
use tally::sink::{MemorySink, Sink};

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
fn caught_up_partitions_release_the_frontier_and_late_arrivals_restate() {
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
            resume_epoch: 0,
        },
        attribution: Arc::new(Attribution { intervals: vec![], ads: vec![], group_by: vec![KeyType::Ad] }),
        windows: WindowRules { windows_ms: vec![60_000], allowed_lateness_ms: 10_000, restate_within_ms: Some(3_600_000) },
        early_results_ms: 3_600_000,
        clock,
        errors: Default::default(),
        commit_lock: Default::default(),
        restored: Default::default(),
        committed_windows: None,
    };
    let handle = sink.handle();
    timely::execute_directly(move |worker| {
        let worker_sink: Box<dyn Sink> = Box::new(handle.handle());
        worker.dataflow::<u64, _, _>(|scope| {
            dataflow::build(scope, plan, Some(worker_sink));
        });
        let mut committed: Vec<Row> = Vec::new();
        let mut step_until = |worker: &mut timely::worker::Worker, what: &str, done: &dyn Fn(&[Row]) -> bool| {
            for _ in 0..2_000 {
                worker.step_or_park(Some(Duration::from_millis(5)));
                committed.extend(sink.take().rows);
                if done(&committed) {
                    return committed.clone();
                }
            }
            panic!("timed out waiting for {what}; rows: {committed:?}");
        };

        // Partition 0 gets clicks up to 200 s; partition 1 stays empty.
        {
            let mut p0 = partitions[0].0.lock().unwrap();
            for i in 1..=20u64 {
                p0.push_back(click(i * 10_000, u128::from(i)));
            }
        }
        let rows = step_until(worker, "windows up to partition 0's watermark", &|rows| final_row(rows, 120_000, Status::Final).is_some());
        assert_eq!(final_row(&rows, 0, Status::Final).map(|r| r.clicks), Some(5));
        assert!(final_row(&rows, 180_000, Status::Final).is_none(), "the clock is at 0: 180 s cannot be final yet");

        // No traffic, the clock moves on: the last window finalizes anyway.
        now.store(400_000, SeqCst);
        let rows = step_until(worker, "the clock to finalize 180 s", &|rows| final_row(rows, 180_000, Status::Final).is_some());
        assert_eq!(final_row(&rows, 180_000, Status::Final).map(|r| r.clicks), Some(3));

        // A click for a final window arrives in the partition that was idle.
        // It is decided at once, and its batch completes when the frontier
        // moves past it.
        partitions[1].0.lock().unwrap().push_back(click(100_000, 99));
        now.store(410_000, SeqCst);
        let rows = step_until(worker, "the restatement", &|rows| final_row(rows, 60_000, Status::Restated).is_some());
        let restated = final_row(&rows, 60_000, Status::Restated).unwrap();
        assert_eq!((restated.clicks, restated.version), (7, 2));
        partitions.iter().for_each(|p| p.1.store(true, SeqCst));
    });
}
