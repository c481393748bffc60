//! The commit operator: one epoch commit per frontier step, on worker 0.
//!
//! Every worker sends what must be committed — window effects (rows, ledger
//! entries, window state), pending too-late partials, and its sources'
//! partition checkpoints — each at the timely time it belongs to, to worker
//! 0. When the frontier there passes `F`, everything below `F` is complete on
//! every worker: it becomes one [`EpochBatch`] for epoch `F`, staged and
//! committed by the sink. The batch is a consistent cut: the rows and state
//! of every input below `F`, and for each partition the last checkpoint
//! below `F`, whose clicks all travelled below it. Replaying from those
//! checkpoints after a crash therefore neither loses nor repeats a click.
//!
//! The sink works on a thread of its own ([`Committer`]), so that worker 0
//! goes on computing the next epoch while the last one is written and
//! synced: epochs are handed over in order and committed in order, and the
//! operator's output frontier only passes an epoch once the sink has
//! committed it. A panic on that thread is raised again on worker 0.
//!
//! Sink failures stop the job: they are recorded in [`CommitErrors`] and the
//! runner exits with them (fail-stop, like the cluster itself).

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::Stream;
use timely::scheduling::SyncActivator;

use crate::event::EventTime;
use crate::row::{LateEntry, Row};
use crate::sink::{Epoch, Sink};

use super::partition::Checkpoint;
use super::window::{Effect, KeyedPartial, PendingKey, WinId, WindowValue};

/// The first sink error of any worker.
pub type CommitErrors = Arc<Mutex<Option<String>>>;

/// Held while an epoch is being staged and committed: a clean shutdown takes
/// it, so it never stops the process in the middle of a commit.
pub type CommitLock = Arc<Mutex<()>>;

/// What flows to the commit operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Commitable {
    Effect(Effect),
    Pending(PendingKey, Option<KeyedPartial>),
    Checkpoint(Checkpoint),
    /// The epoch just past the watermarks of a source that finished.
    Finished(EventTime),
}

/// Everything one epoch commits. State entries are the last value per key
/// (`None`: delete).
#[derive(Clone, Debug, Default)]
pub struct EpochBatch {
    pub rows: Vec<Row>,
    pub late: Vec<LateEntry>,
    pub windows: BTreeMap<WinId, Option<WindowValue>>,
    pub pending: BTreeMap<PendingKey, Option<KeyedPartial>>,
    pub checkpoints: BTreeMap<u32, Checkpoint>,
}

impl EpochBatch {
    fn add(&mut self, record: Commitable) {
        match record {
            Commitable::Effect(Effect::Row(row)) => self.rows.push(row),
            Commitable::Effect(Effect::Late(entry)) => self.late.push(entry),
            Commitable::Effect(Effect::Window(id, value)) => {
                self.windows.insert(id, value);
            }
            Commitable::Pending(key, partial) => {
                self.pending.insert(key, partial);
            }
            Commitable::Finished(_) => {}
            Commitable::Checkpoint(checkpoint) => {
                let previous = self.checkpoints.insert(checkpoint.partition, checkpoint);
                assert!(previous.is_none_or(|p| p.offset <= checkpoint.offset), "offsets only move forward");
            }
        }
    }
}

/// Builds the commit operator; only worker 0 has a sink. Its output carries
/// no data: its frontier is what has been committed, which is what sources
/// pace their reading by.
pub fn commit<'scope>(
    records: Stream<'scope, EventTime, Vec<Commitable>>,
    sink: Option<Box<dyn Sink + Send>>,
    errors: CommitErrors,
    lock: CommitLock,
    resumed_epoch: EventTime,
) -> Stream<'scope, EventTime, Vec<()>> {
    let mut stash: BTreeMap<EventTime, Vec<Commitable>> = BTreeMap::new();
    // A resumed job has committed everything below `resumed_epoch`; its
    // next commit must be a later epoch.
    let mut last_epoch: Option<EventTime> = (resumed_epoch > 0).then_some(resumed_epoch);
    // The epoch past every finished source's partitions, in every process.
    let mut past_finished: Option<EventTime> = None;
    let worker = records.scope().worker();
    records
        .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Exchange::new(|_| 0),
            "Commit",
            move |capability, info| {
                let mut capability = capability;
                capability.downgrade(&resumed_epoch);
                let mut held = Some(capability);
                let activator = worker.sync_activator_for(info.address.to_vec());
                let mut committer = sink.map(|sink| Committer::start(sink, errors, lock, activator));
                move |(input, frontier), _output| {
                    input.for_each_stamp(|stamp, data| {
                        let Some(&time) = stamp.least() else { return };
                        let records = stash.entry(time).or_default();
                        data.for_each(|batch| {
                            for record in batch.iter() {
                                if let Commitable::Finished(past) = record {
                                    past_finished = Some(past_finished.map_or(*past, |p: EventTime| p.max(*past)));
                                }
                            }
                            records.append(batch)
                        });
                    });
                    let limit = frontier.frontier().iter().next().copied().unwrap_or(EventTime::MAX);
                    let due = stash.first_key_value().is_some_and(|(time, _)| *time < limit) && last_epoch.is_none_or(|last| last < limit);
                    if due {
                        let epoch = if limit == EventTime::MAX { final_epoch(past_finished, last_epoch) } else { limit };
                        let batch = take_through(limit, epoch, &mut stash, &mut last_epoch);
                        let Some(committer) = committer.as_mut() else { panic!("only worker 0 receives commit records") };
                        committer.hand_over(limit, Epoch(epoch), batch);
                    }
                    // Everything below the input frontier and below the oldest
                    // record still waiting is committed (on worker 0; the other
                    // workers never hold a record) once the sink is done with
                    // every epoch handed over.
                    let mut committed = stash.first_key_value().map_or(limit, |(time, _)| (*time).min(limit));
                    if let Some(done) = committer.as_ref().and_then(Committer::committed_through) {
                        committed = committed.min(done);
                    }
                    match held.as_mut() {
                        Some(_) if committed == EventTime::MAX => held = None,
                        Some(cap) if committed > *cap.time() => cap.downgrade(&committed),
                        _ => {}
                    }
                }
            },
        )
        .container::<Vec<()>>()
}

/// The epoch the end of a bounded run is committed as: everything is below
/// it, but a later run resumes from it, so it is finite: just past every
/// partition's watermark (every too-late batch, which is at most its
/// partition's watermark, is then below it, as SEMANTICS.md's "applied in
/// the commit" reads), and after the last epoch.
fn final_epoch(past_finished: Option<EventTime>, last_epoch: Option<EventTime>) -> EventTime {
    let after_last = last_epoch.map_or(1, |last| last + 1);
    past_finished.unwrap_or(0).max(after_last)
}

/// Takes everything below `limit` out of the stash, as epoch `epoch`
/// (`limit` itself, but for the end of a bounded run).
fn take_through(
    limit: EventTime,
    epoch: EventTime,
    stash: &mut BTreeMap<EventTime, Vec<Commitable>>,
    last_epoch: &mut Option<EventTime>,
) -> EpochBatch {
    let mut batch = EpochBatch::default();
    while let Some(entry) = stash.first_entry() {
        if *entry.key() >= limit {
            break;
        }
        entry.remove().into_iter().for_each(|record| batch.add(record));
    }
    assert!(last_epoch.is_none_or(|last| last < epoch), "epochs commit in order");
    assert!(epoch < EventTime::MAX, "a committed epoch is a point a later run can resume from");
    *last_epoch = Some(epoch);
    batch
}

/// The sink, on a thread of its own: it stages and commits the epochs
/// handed to it, in order, and wakes the commit operator after each.
struct Committer {
    to_sink: Option<Sender<(EventTime, Epoch, EpochBatch)>>,
    thread: Option<JoinHandle<()>>,
    /// The `limit` of the last epoch handed over, and of the last one the
    /// sink is done with: everything below it is committed.
    handed_through: EventTime,
    done_through: Arc<AtomicU64>,
    /// A panic of the sink's thread, raised again on the worker.
    panicked: Arc<Mutex<Option<Box<dyn Any + Send>>>>,
}

impl Committer {
    fn start(mut sink: Box<dyn Sink + Send>, errors: CommitErrors, lock: CommitLock, activator: SyncActivator) -> Committer {
        let (to_sink, epochs) = channel::<(EventTime, Epoch, EpochBatch)>();
        let done_through = Arc::new(AtomicU64::new(0));
        let panicked: Arc<Mutex<Option<Box<dyn Any + Send>>>> = Arc::default();
        let (done, panic_slot) = (Arc::clone(&done_through), Arc::clone(&panicked));
        let thread = std::thread::Builder::new()
            .name("tally-commit".into())
            .spawn(move || {
                for (limit, epoch, batch) in epochs {
                    let failed = errors.lock().unwrap_or_else(|e| e.into_inner()).is_some();
                    if !failed {
                        let committing = lock.lock().unwrap_or_else(|e| e.into_inner());
                        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            sink.stage(epoch, &batch).and_then(|()| sink.commit(epoch))
                        }));
                        drop(committing);
                        match outcome {
                            Ok(Ok(())) => {}
                            Ok(Err(error)) => {
                                errors.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(error.to_string());
                            }
                            Err(payload) => {
                                *panic_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(payload);
                                let _ = activator.activate();
                                return;
                            }
                        }
                    }
                    // After a failure the epochs are dropped, and the
                    // frontier moves on so that the job ends and the runner
                    // reports the error.
                    drop(batch);
                    done.store(limit, Ordering::Release);
                    let _ = activator.activate();
                }
            })
            .expect("starting the commit thread");
        Committer { to_sink: Some(to_sink), thread: Some(thread), handed_through: 0, done_through, panicked }
    }

    /// Hands everything below `limit`, as `epoch`, to the sink.
    fn hand_over(&mut self, limit: EventTime, epoch: Epoch, batch: EpochBatch) {
        self.raise_panic();
        self.handed_through = limit;
        let sent = self.to_sink.as_ref().is_some_and(|to_sink| to_sink.send((limit, epoch, batch)).is_ok());
        if !sent {
            self.raise_panic();
            panic!("the commit thread has stopped");
        }
    }

    /// `None` when the sink is done with every epoch handed over, else the
    /// `limit` of the last one it is done with.
    fn committed_through(&self) -> Option<EventTime> {
        self.raise_panic();
        let done = self.done_through.load(Ordering::Acquire);
        (done < self.handed_through).then_some(done)
    }

    fn raise_panic(&self) {
        if let Some(payload) = self.panicked.lock().unwrap_or_else(|e| e.into_inner()).take() {
            std::panic::resume_unwind(payload);
        }
    }
}

impl Drop for Committer {
    /// Lets the sink finish what it was handed, then closes it (a store
    /// releases its directory when its sink drops).
    fn drop(&mut self) {
        self.to_sink = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
