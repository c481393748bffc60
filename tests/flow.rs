//! Flow control: a source never reads far ahead of what has reached the commit.
//!
//! Timely has no backpressure. Two workers: worker 0 holds the sink, whose
//! commits are slow; worker 1's source reads a partition with a long backlog.
//! Without a bound, worker 1 would read its whole backlog while worker 0 is
//! still committing the first epochs, and every partial of it would wait in
//! the channels. With it, at every commit the clicks read are within a few
//! epochs (plus one read batch and the watermark slack) of the epoch.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tally::dataflow::partition::TimeRules;
use tally::dataflow::source::{MAX_EPOCHS_AHEAD, READ_BATCH_CLICKS};
use tally::dataflow::{self, Attribution, EpochBatch, PartitionReader, Plan, ReadStatus, SourceSettings, WindowRules};
use tally::event::{Click, KeyType};
use tally::sink::{Epoch, Sink, SinkError};
use tally::telemetry::SourceStats;

const EPOCH_MS: u64 = 1_000;
const SLACK_MS: u64 = 5_000;
/// One click per millisecond of event time for 300 s, per partition.
const CLICKS: u64 = 300_000;
const START_MS: u64 = 1_767_225_600_000;

/// A bounded partition that records the newest event time it handed out.
struct Backlog {
    clicks: VecDeque<Click>,
    read_to: Arc<AtomicU64>,
}

impl PartitionReader for Backlog {
    fn read(&mut self, out: &mut Vec<Click>, max: usize) -> ReadStatus {
        let n = self.clicks.len().min(max);
        out.extend(self.clicks.drain(..n));
        if let Some(last) = out.last() {
            self.read_to.fetch_max(last.ts, SeqCst);
        }
        if self.clicks.is_empty() {
            ReadStatus::Finished
        } else {
            ReadStatus::More
        }
    }
}

/// A sink whose every commit takes a while, noting how far ahead the
/// sources had read when it was asked to stage an epoch.
struct SlowSink {
    read_to: Arc<AtomicU64>,
    /// The most event time read beyond a staged epoch, and the commits.
    worst_ahead_ms: Arc<AtomicU64>,
    commits: Arc<AtomicU64>,
}

impl Sink for SlowSink {
    fn stage(&mut self, epoch: Epoch, _batch: &EpochBatch) -> Result<(), SinkError> {
        if epoch.0 < u64::MAX {
            let ahead = self.read_to.load(SeqCst).saturating_sub(epoch.0);
            self.worst_ahead_ms.fetch_max(ahead, SeqCst);
        }
        std::thread::sleep(Duration::from_millis(20));
        Ok(())
    }

    fn commit(&mut self, _epoch: Epoch) -> Result<(), SinkError> {
        self.commits.fetch_add(1, SeqCst);
        Ok(())
    }
}

fn backlog(partition: u32) -> VecDeque<Click> {
    (0..CLICKS)
        .map(|i| Click { ad: "a".into(), ts: START_MS + i, user: i, request_id: u128::from(i) << 8 | u128::from(partition) })
        .collect()
}

#[test]
fn a_source_reads_at_most_a_few_epochs_ahead_of_the_commit() {
    let read_to = Arc::new(AtomicU64::new(0));
    let worst_ahead_ms = Arc::new(AtomicU64::new(0));
    let commits = Arc::new(AtomicU64::new(0));
    let backlogs: Arc<Vec<Mutex<Option<VecDeque<Click>>>>> = Arc::new((0..2).map(|p| Mutex::new(Some(backlog(p)))).collect());
    let rules = TimeRules {
        epoch_ms: EPOCH_MS,
        slack_ms: SLACK_MS,
        allowed_lateness_ms: 10_000,
        dedup_horizon_ms: 60_000,
        restate_within_ms: Some(3_600_000),
    };
    let (readers_read_to, readers) = (Arc::clone(&read_to), Arc::clone(&backlogs));
    let plan = Plan {
        source: SourceSettings {
            partitions: 2,
            rules,
            distinct_users: false,
            readers: Arc::new(move |p, _offset| {
                let clicks = readers[p as usize].lock().unwrap().take().expect("each partition is opened once");
                Box::new(Backlog { clicks, read_to: Arc::clone(&readers_read_to) })
            }),
            clock: Arc::new(|| 0),
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
        clock: Arc::new(|| 0),
        errors: Default::default(),
        commit_lock: Default::default(),
        restored: Default::default(),
        committed_windows: None,
        window_workers: None,
    };
    let sink = Arc::new(Mutex::new(Some(SlowSink {
        read_to: Arc::clone(&read_to),
        worst_ahead_ms: Arc::clone(&worst_ahead_ms),
        commits: Arc::clone(&commits),
    })));
    let guards = timely::execute(timely::Config::process(2), move |worker| {
        let sink = if worker.index() == 0 { sink.lock().unwrap().take().map(|s| Box::new(s) as Box<dyn Sink>) } else { None };
        let plan = plan.clone();
        let probe = worker.dataflow::<u64, _, _>(|scope| dataflow::build(scope, plan, sink));
        worker.step_or_park_while(Some(Duration::from_millis(5)), || !probe.done());
    })
    .unwrap();
    for result in guards.join() {
        result.unwrap();
    }

    // One read batch is 4,096 ms here; the watermark trails by the slack.
    let bound = MAX_EPOCHS_AHEAD * EPOCH_MS + READ_BATCH_CLICKS as u64 + SLACK_MS + EPOCH_MS;
    let worst = worst_ahead_ms.load(SeqCst);
    assert!(worst <= bound, "a source read {worst} ms of event time past the epoch being staged (bound {bound} ms)");
    assert!(commits.load(SeqCst) > 10, "the job committed epoch by epoch ({} commits)", commits.load(SeqCst));
}
