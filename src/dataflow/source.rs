//! The source operator: reads partitions, decides clicks, holds the watermark.
//!
//! One instance per worker owns partitions `p` with `p % peers == index`.
//! For every click its partition decides duplicate / on time / too late
//! ([`PartitionState`]); counted clicks are pre-aggregated per epoch
//! ([`PreAggregator`]). The operator's capability is the worker's watermark:
//! the minimum over partitions that are not idle, rounded down to the epoch.
//! A partition is idle when its reader has caught up with the end offset —
//! never by a timer. When every partition is idle the capability follows the
//! clock (now − slack) for liveness only: a click read later is judged by its
//! own partition's watermark, and if its window was already emitted it
//! restates it (the window operator sees to that).
//! Reading happens through [`PartitionReader`], so the operator does no I/O
//! of its own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::Capability;
use timely::dataflow::{ProbeHandle, Scope, Stream};

use crate::event::{Click, EventTime, Key};

use super::partial::{AdPartial, PreAggregator};
use super::partition::{Checkpoint, PartitionState, TimeRules, Verdict};
use crate::telemetry::SourceStats;

/// Where a reader stands after a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadStatus {
    /// More clicks are available now.
    More,
    /// At the end offset; more may arrive later (a live log).
    CaughtUp,
    /// At the end of a bounded input: nothing more will ever arrive.
    Finished,
}

/// Reads one partition from its current offset.
///
/// In a dense log every offset holds a click (the embedded log, files, the
/// generator). In a log such as Kafka, offsets can also hold records that
/// are not clicks (transaction markers, records a foreign producer got
/// wrong); such a reader reports its [`position`](PartitionReader::position),
/// and every batch it returns sits at consecutive offsets ending there, so
/// the source knows the offset of every click.
pub trait PartitionReader {
    /// Appends at most `max` clicks to `out`.
    fn read(&mut self, out: &mut Vec<Click>, max: usize) -> ReadStatus;

    /// The offset just past the last record read, when offsets can hold
    /// other records than clicks; `None` for a dense log. The clicks of the
    /// last batch sit at the offsets just before it.
    fn position(&self) -> Option<u64> {
        None
    }

    /// Never reads a record at or past `offset` until lifted with `None`
    /// (the dedup replay of a resumed partition stops at its committed
    /// offset). Dense readers need not implement it: they are never asked
    /// for more clicks than remain before the limit.
    fn stop_at(&mut self, _offset: Option<u64>) {}
}

/// Opens the reader of a partition at an offset; shared by all workers of a process.
pub type ReaderFactory = Arc<dyn Fn(u32, u64) -> Box<dyn PartitionReader> + Send + Sync>;

/// What the source operator sends: partials, and where its partitions stand
/// (at the time of the epoch they close, for the epoch commit).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SourceOut {
    Partial(Key, AdPartial),
    Checkpoint(Checkpoint),
    /// A source reached the end of its bounded input: the epoch just past
    /// its partitions' watermarks (the commit of the end of a bounded run
    /// must be past every partition's, in every process).
    Finished(EventTime),
}

/// Wall-clock milliseconds since the Unix epoch, injected so tests control it.
pub type Clock = Arc<dyn Fn() -> EventTime + Send + Sync>;

/// Clicks read from one partition per activation, at most, in reads of
/// [`READ_CHUNK_CLICKS`], and only while the partition's watermark is
/// within [`MAX_EPOCHS_AHEAD`] epochs of the committed frontier. The
/// pre-aggregator is flushed once per activation at most, so on a backlog
/// whose event time is sparse (a file of a day's clicks) a large read lets
/// one flush cover several epochs: fewer, fuller partials for the join and
/// the windows (a 5M-click file run took 3.6-4.3 s at 4,096, 2.0-2.3 s at
/// 65,536). At 1M clicks/s of event time one read is well within an epoch.
pub const READ_BATCH_CLICKS: usize = 65_536;
/// Clicks asked of a reader at once.
pub const READ_CHUNK_CLICKS: usize = 4_096;
/// Pending partials that force a flush before the epoch ends.
pub const MAX_PENDING_PARTIALS: usize = 200_000;
/// How often an all-idle live source looks for new data.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// Epochs the source may read ahead of what is committed: timely has no
/// backpressure, so without this bound a source reading a backlog (a bounded
/// run, a replay, a catch-up) fills the channels between operators with the
/// partials of every epoch it has read. Enough epochs that reading goes on
/// while an epoch commits (4 made a checkpointed run ~35 % slower).
pub const MAX_EPOCHS_AHEAD: u64 = 16;
/// How soon a source held back by [`MAX_EPOCHS_AHEAD`] looks again.
const AHEAD_POLL: Duration = Duration::from_millis(1);

/// Settings of the source operator.
#[derive(Clone)]
pub struct SourceSettings {
    pub partitions: u32,
    pub rules: TimeRules,
    pub distinct_users: bool,
    pub readers: ReaderFactory,
    pub clock: Clock,
    pub stats: Arc<SourceStats>,
    /// Checkpoints of a committed epoch to resume from, by partition.
    pub resume: Arc<BTreeMap<u32, Checkpoint>>,
    /// Where a partition without a checkpoint starts (its origin), by
    /// partition; 0 for a partition not listed.
    pub start: Arc<Vec<u64>>,
    /// The committed epoch resumed from: everything below it is committed,
    /// so the source starts there.
    pub resume_epoch: EventTime,
    /// At the end of a bounded input, hold the data frontier instead of
    /// letting the frontier pass every window (`--leave-open`).
    pub leave_open: bool,
    /// Where this process's sources say how they finished.
    pub finish: Arc<Finish>,
}

/// How the sources of one process finished a bounded input: how many did,
/// the data frontier they reached (the least partition watermark, rounded
/// down to the epoch) and the epoch just past the greatest one. The end of a
/// bounded run that finalizes everything is committed past every
/// partition's watermark (every too-late batch is applied in it), so that a
/// later run resumes from a finite epoch; with `leave_open` the run commits
/// at the data frontier and stops once that is committed.
#[derive(Default)]
pub struct Finish {
    state: std::sync::Mutex<FinishState>,
}

#[derive(Default, Clone, Copy)]
struct FinishState {
    sources: usize,
    least: Option<EventTime>,
    past: Option<EventTime>,
}

impl Finish {
    fn record(&self, least: EventTime, past: EventTime) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.sources += 1;
        state.least = Some(state.least.map_or(least, |l| l.min(least)));
        state.past = Some(state.past.map_or(past, |p| p.max(past)));
    }

    fn record_empty(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).sources += 1;
    }

    /// The epoch past every partition's watermark, once a source with
    /// partitions finished.
    pub fn past_every_watermark(&self) -> Option<EventTime> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).past
    }

    /// Whether all `sources` finished and `committed` reached their data
    /// frontier.
    pub fn committed(&self, sources: usize, committed: Option<EventTime>) -> bool {
        let state = *self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.sources == sources && committed.is_none_or(|c| state.least.is_none_or(|f| c >= f))
    }
}

struct Owned {
    state: PartitionState,
    reader: Box<dyn PartitionReader>,
    status: ReadStatus,
    /// Ids the dedup memory held after the last batch (for the stats).
    remembered: usize,
}

/// Builds the source operator of this worker. `committed` probes what has
/// been committed; the source reads no further than [`MAX_EPOCHS_AHEAD`]
/// epochs past its frontier.
pub fn click_source<'scope>(
    scope: Scope<'scope, EventTime>,
    settings: SourceSettings,
    committed: ProbeHandle<EventTime>,
) -> Stream<'scope, EventTime, Vec<SourceOut>> {
    let index = scope.index() as u32;
    let peers = scope.peers() as u32;
    source(scope, "ClickSource", move |capability, info| {
        let activator = scope.activator_for(info.address);
        let mut owned: Vec<Owned> = (0..settings.partitions).filter(|p| p % peers == index).map(|p| open(p, &settings)).collect();
        let mut capability = capability;
        capability.downgrade(&settings.resume_epoch);
        let mut pre = PreAggregator::new(settings.distinct_users, settings.rules.allowed_lateness_ms, index as usize);
        let mut cap = Some(capability);
        let mut buf = Vec::with_capacity(READ_CHUNK_CLICKS);
        let ahead_limit = MAX_EPOCHS_AHEAD * settings.rules.epoch_ms;
        let mut finished = false;
        move |output| {
            let Some(current) = cap.as_mut() else { return };
            if finished {
                return;
            }
            let done = committed.with_frontier(|f| f.iter().next().copied()).unwrap_or(EventTime::MAX);
            if current.time().saturating_sub(done) >= ahead_limit {
                activator.activate_after(AHEAD_POLL);
                return;
            }
            // Reading stops where the flow control would hold the source.
            let read_limit = done.saturating_add(ahead_limit);
            for p in owned.iter_mut() {
                let mut read = 0;
                while p.status != ReadStatus::Finished && read < READ_BATCH_CLICKS {
                    buf.clear();
                    p.status = p.reader.read(&mut buf, READ_CHUNK_CLICKS);
                    if let Some(position) = p.reader.position() {
                        p.state.skip_to(position - buf.len() as u64);
                    }
                    p.remembered = read_batch(&mut p.state, &buf, &mut pre, &settings.stats, p.remembered);
                    read += buf.len();
                    if buf.is_empty() || p.state.watermark() >= read_limit {
                        break;
                    }
                }
            }
            let target = worker_watermark(&owned, &settings);
            match target {
                None => {
                    let epoch_ms = settings.rules.epoch_ms;
                    let rounded = |t: EventTime| (t - t % epoch_ms).max(*current.time() + 1);
                    let reached = owned.iter().map(|p| p.state.watermark()).min().map(rounded);
                    let past = owned.iter().map(|p| p.state.watermark()).max().map(|t| rounded(t) + 1);
                    flush(&mut pre, current, EventTime::MAX, output);
                    send_checkpoints(&mut owned, current, output);
                    if let Some(past) = past {
                        output.session(current).give(SourceOut::Finished(past));
                    }
                    match (reached, past) {
                        (Some(least), Some(past)) => settings.finish.record(least, past),
                        _ => settings.finish.record_empty(),
                    }
                    match reached {
                        Some(at) if settings.leave_open => {
                            current.downgrade(&at);
                            finished = true;
                        }
                        _ => cap = None,
                    }
                    return;
                }
                Some(t) => {
                    let epoch = (t - t % settings.rules.epoch_ms).max(*current.time());
                    let caught_up = owned.iter().all(|p| p.status != ReadStatus::More);
                    if epoch > *current.time() || caught_up || pre.pending() > MAX_PENDING_PARTIALS {
                        flush(&mut pre, current, epoch, output);
                    }
                    if epoch > *current.time() {
                        send_checkpoints(&mut owned, current, output);
                        current.downgrade(&epoch);
                    }
                }
            }
            if owned.iter().any(|p| p.status == ReadStatus::More) {
                activator.activate();
            } else {
                activator.activate_after(IDLE_POLL);
            }
        }
    })
    .container::<Vec<SourceOut>>()
}

/// Opens a partition: at its start offset with no progress and empty dedup
/// memory, or from a committed checkpoint, re-reading the clicks since its
/// dedup replay point without counting them.
fn open(partition: u32, settings: &SourceSettings) -> Owned {
    let start = settings.start.get(partition as usize).copied().unwrap_or(0);
    let from = settings.resume.get(&partition).copied().unwrap_or(Checkpoint {
        partition,
        offset: start,
        max_ts: 0,
        floor: 0,
        replay_offset: start,
        replay_max_ts: 0,
    });
    let mut state = PartitionState::resume(partition, settings.rules, &from);
    let mut reader = (settings.readers)(partition, from.replay_offset);
    let mut buf = Vec::with_capacity(READ_CHUNK_CLICKS);
    reader.stop_at(Some(from.offset));
    while state.offset() < from.offset {
        buf.clear();
        let want = (from.offset - state.offset()).min(READ_CHUNK_CLICKS as u64) as usize;
        let status = reader.read(&mut buf, want);
        let position = reader.position();
        if let Some(position) = position {
            state.skip_to(position - buf.len() as u64);
        }
        buf.iter().for_each(|click| state.replay(click));
        if let Some(position) = position.filter(|_| buf.is_empty()) {
            state.skip_to(position);
        }
        assert!(
            !buf.is_empty() || status == ReadStatus::More || position.is_some_and(|p| p >= from.offset),
            "partition {partition}: the log ends at offset {} before the committed offset {}",
            state.offset(),
            from.offset
        );
    }
    reader.stop_at(None);
    assert_eq!(state.checkpoint().max_ts, from.max_ts, "partition {partition}: replay rebuilt the committed progress");
    Owned { state, reader, status: ReadStatus::More, remembered: 0 }
}

/// Sends every owned partition's checkpoint at the epoch being closed.
fn send_checkpoints(
    owned: &mut [Owned],
    cap: &Capability<EventTime>,
    output: &mut timely::dataflow::operators::generic::OutputBuilderSession<
        '_,
        EventTime,
        timely::container::CapacityContainerBuilder<Vec<SourceOut>>,
    >,
) {
    let checkpoints: Vec<SourceOut> = owned.iter_mut().map(|p| SourceOut::Checkpoint(p.state.checkpoint())).collect();
    if !checkpoints.is_empty() {
        output.session(cap).give_iterator(checkpoints.into_iter());
    }
}

/// Clicks between prefetching a click's dedup slot and deciding it: enough
/// to hide a memory access behind the work on the clicks in between.
const PREFETCH_AHEAD: usize = 8;

/// Decides and pre-aggregates one batch of a partition's clicks; returns
/// the number of ids the partition remembers afterwards.
fn read_batch(state: &mut PartitionState, clicks: &[Click], pre: &mut PreAggregator, stats: &SourceStats, remembered: usize) -> usize {
    let mut counts = [0u64; 4];
    clicks.iter().take(PREFETCH_AHEAD).for_each(|click| state.prefetch(click));
    for (i, click) in clicks.iter().enumerate() {
        if let Some(ahead) = clicks.get(i + PREFETCH_AHEAD) {
            state.prefetch(ahead);
        }
        let verdict = state.decide(click);
        counts[match verdict {
            Verdict::OnTime => 0,
            Verdict::Duplicate => 1,
            Verdict::Restate { .. } => 2,
            Verdict::Held { .. } => 3,
        }] += 1;
        pre.add(click, verdict);
    }
    let now = state.remembered();
    stats.record(counts, now as i64 - remembered as i64);
    now
}

/// The worker's watermark, or `None` once every partition has finished.
///
/// Partitions with unread data hold it at their minimum. When every
/// partition has caught up, none holds it back: it moves to the least
/// partition watermark of those still live, or to the clock (now − slack) if
/// that is later, so that past windows are emitted without new traffic. This
/// is liveness only: a click read later is still judged by its own
/// partition's watermark, and restates a window the clock already emitted.
/// (The least, not the greatest: one click stamped minutes ahead must not
/// drag every window of the worker into restatements.)
fn worker_watermark(owned: &[Owned], settings: &SourceSettings) -> Option<EventTime> {
    if owned.iter().all(|p| p.status == ReadStatus::Finished) {
        return None;
    }
    let busy = owned.iter().filter(|p| p.status == ReadStatus::More).map(|p| p.state.watermark()).min();
    Some(busy.unwrap_or_else(|| {
        let live = owned.iter().filter(|p| p.status != ReadStatus::Finished).map(|p| p.state.watermark()).min().unwrap_or(0);
        live.max((settings.clock)().saturating_sub(settings.rules.slack_ms))
    }))
}

/// Sends the epoch's partials, all at the capability; too-late ones carry
/// their batch time. `watermark` is the capability about to be taken: windows
/// it has closed are forgotten by the pre-aggregator.
fn flush(
    pre: &mut PreAggregator,
    cap: &Capability<EventTime>,
    watermark: EventTime,
    output: &mut timely::dataflow::operators::generic::OutputBuilderSession<
        '_,
        EventTime,
        timely::container::CapacityContainerBuilder<Vec<SourceOut>>,
    >,
) {
    let mut partials = pre.flush_on_time(watermark);
    partials.extend(pre.drain_late());
    if !partials.is_empty() {
        output.session(cap).give_iterator(partials.into_iter().map(|(ad, partial)| SourceOut::Partial(ad, partial)));
    }
}
