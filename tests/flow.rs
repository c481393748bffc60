//! Flow control: a source never reads far ahead of what has reached the commit.
//!
//! Timely has no backpressure. Two workers: worker 0 holds the sink, whose
//! commits are slow; worker 1's source reads a partition with a long backlog.
//! Without a bound, worker 1 would read its whole backlog while worker 0 is
//! still committing the first epochs, and every partial of it would wait in
//! the channels. With it, at every commit the clicks read are within a few
//! epochs (plus one read of a reader and the watermark slack) of the epoch,
//! however many clicks the source reads per activation.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tally::dataflow::partition::TimeRules;
use tally::dataflow::source::{MAX_EPOCHS_AHEAD, READ_CHUNK_CLICKS};
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

/// Runs two workers over two partitions' backlogs with `sink` on worker 0,
/// until the job is done or `stop` is set (worker 0: 30 s later); each
/// worker's result, a panic as `Err`.
fn run_two_workers(sink: Box<dyn Sink + Send>, read_to: &Arc<AtomicU64>, stop: &'static AtomicBool) -> Vec<Result<(), String>> {
    let backlogs: Arc<Vec<Mutex<Option<VecDeque<Click>>>>> = Arc::new((0..2).map(|p| Mutex::new(Some(backlog(p)))).collect());
    let rules = TimeRules {
        epoch_ms: EPOCH_MS,
        slack_ms: SLACK_MS,
        allowed_lateness_ms: 10_000,
        dedup_horizon_ms: 60_000,
        restate_within_ms: Some(3_600_000),
    };
    let (readers_read_to, readers) = (Arc::clone(read_to), Arc::clone(&backlogs));
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
    let sink = Arc::new(Mutex::new(Some(sink)));
    let guards = timely::execute(timely::Config::process(2), move |worker| {
        let sink = if worker.index() == 0 { sink.lock().unwrap().take() } else { None };
        let plan = plan.clone();
        let probe = worker.dataflow::<u64, _, _>(|scope| dataflow::build(scope, plan, sink));
        // Worker 0 waits 30 s past `stop` for a panic of its own.
        let grace = if worker.index() == 0 { Duration::from_secs(30) } else { Duration::ZERO };
        let mut stopping: Option<std::time::Instant> = None;
        worker.step_or_park_while(Some(Duration::from_millis(5)), || {
            let since = stop.load(SeqCst).then(|| *stopping.get_or_insert_with(std::time::Instant::now));
            !probe.done() && since.is_none_or(|since| since.elapsed() < grace)
        });
        // A stopped worker drops its dataflow: Timely would otherwise wait
        // for it to complete, which it cannot without worker 0.
        if !probe.done() {
            worker.installed_dataflows().into_iter().for_each(|id| worker.drop_dataflow(id));
        }
    })
    .unwrap();
    guards.join()
}

#[test]
fn a_source_reads_at_most_a_few_epochs_ahead_of_the_commit() {
    let read_to = Arc::new(AtomicU64::new(0));
    let worst_ahead_ms = Arc::new(AtomicU64::new(0));
    let commits = Arc::new(AtomicU64::new(0));
    let sink = SlowSink { read_to: Arc::clone(&read_to), worst_ahead_ms: Arc::clone(&worst_ahead_ms), commits: Arc::clone(&commits) };
    static NEVER: AtomicBool = AtomicBool::new(false);
    for result in run_two_workers(Box::new(sink), &read_to, &NEVER) {
        result.unwrap();
    }

    // One read is READ_CHUNK_CLICKS ms here; the watermark trails by the slack.
    let bound = MAX_EPOCHS_AHEAD * EPOCH_MS + READ_CHUNK_CLICKS as u64 + SLACK_MS + EPOCH_MS;
    let worst = worst_ahead_ms.load(SeqCst);
    assert!(worst <= bound, "a source read {worst} ms of event time past the epoch being staged (bound {bound} ms)");
    assert!(commits.load(SeqCst) > 10, "the job committed epoch by epoch ({} commits)", commits.load(SeqCst));
}

/// A sink that breaks an invariant at its third commit.
struct PanickingSink {
    commits: u64,
}

impl Sink for PanickingSink {
    fn stage(&mut self, _epoch: Epoch, _batch: &EpochBatch) -> Result<(), SinkError> {
        Ok(())
    }

    fn commit(&mut self, _epoch: Epoch) -> Result<(), SinkError> {
        self.commits += 1;
        assert!(self.commits < 3, "the sink found its store inconsistent");
        Ok(())
    }
}

/// The sink commits on a thread of its own; a panic there must reach the
/// panic hook (which, in `tally`, ends the process: fail-stop) and be raised
/// again on worker 0, not leave the job waiting for a commit that never
/// comes. Here the hook lets the workers stop, and worker 0 must have
/// panicked.
#[test]
fn a_panic_in_the_sink_stops_worker_0() {
    static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
    static STOP: AtomicBool = AtomicBool::new(false);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current().name().unwrap_or("").to_owned();
        SEEN.lock().unwrap_or_else(|e| e.into_inner()).push(format!("{thread}: {info}"));
        STOP.store(true, SeqCst);
        default_hook(info);
    }));
    let read_to = Arc::new(AtomicU64::new(0));
    let results = run_two_workers(Box::new(PanickingSink { commits: 0 }), &read_to, &STOP);
    assert!(results[0].is_err(), "worker 0 went on after its sink panicked: {results:?}");
    let seen = SEEN.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(
        seen.iter().any(|m| m.starts_with("tally-commit: ") && m.contains("the sink found its store inconsistent")),
        "the sink's panic was not reported from its thread: {seen:?}"
    );
}
