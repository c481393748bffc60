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
//! Sink failures stop the job: they are recorded in [`CommitErrors`] and the
//! runner exits with them (fail-stop, like the cluster itself).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::Stream;

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
    mut sink: Option<Box<dyn Sink>>,
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
    records
        .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Exchange::new(|_| 0),
            "Commit",
            move |capability, _info| {
                let mut capability = capability;
                capability.downgrade(&resumed_epoch);
                let mut held = Some(capability);
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
                        commit_through(limit, epoch, &mut stash, &mut last_epoch, &mut sink, &errors, &lock);
                    }
                    // Everything below the input frontier and below the oldest
                    // record still waiting is committed (on worker 0; the other
                    // workers never hold a record).
                    let committed = stash.first_key_value().map_or(limit, |(time, _)| (*time).min(limit));
                    match held.as_mut() {
                        Some(_) if limit == EventTime::MAX && stash.is_empty() => held = None,
                        Some(cap) if committed > *cap.time() && committed < EventTime::MAX => cap.downgrade(&committed),
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

/// Commits everything below `limit` as epoch `epoch` (`limit` itself, but
/// for the end of a bounded run).
fn commit_through(
    limit: EventTime,
    epoch: EventTime,
    stash: &mut BTreeMap<EventTime, Vec<Commitable>>,
    last_epoch: &mut Option<EventTime>,
    sink: &mut Option<Box<dyn Sink>>,
    errors: &CommitErrors,
    lock: &CommitLock,
) {
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
    let Some(sink) = sink.as_mut() else {
        panic!("only worker 0 receives commit records");
    };
    let epoch = Epoch(epoch);
    let _committing = lock.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(error) = sink.stage(epoch, &batch).and_then(|()| sink.commit(epoch)) {
        errors.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(error.to_string());
        stash.clear();
    }
}
