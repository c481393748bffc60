//! The job as a Timely dataflow: pure logic, sources and sinks behind traits.
//!
//! ```text
//! click_source ──(ad partials per epoch)──▶ attribute (differential join with catalog)
//!   ──(exchange by key)──▶ windows ──▶ commit (sink.stage / sink.commit per epoch)
//! ```
//!
//! Timely times are event time in milliseconds; the frontier is the
//! watermark. Nothing in here touches a socket, file or clock directly: the
//! readers, sinks and clock are handed in, so tests can drive the dataflow
//! deterministically.

pub mod attribute;
pub mod bootstrap;
pub mod commit;
pub mod dedup;
pub mod hll;
pub mod partial;
pub mod partition;
pub mod source;
pub mod totals;
pub mod window;
pub mod windowing;

use std::sync::Arc;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::{Concat, Probe};
use timely::dataflow::{ProbeHandle, Scope, Stream};

use crate::event::{EventTime, Key};
use crate::sink::Sink;

pub use attribute::Attribution;
pub use commit::{CommitErrors, CommitLock, Commitable, EpochBatch};
use partial::AdPartial;
pub use partition::Checkpoint;
pub use source::{Clock, Finish, PartitionReader, ReadStatus, ReaderFactory, SourceOut, SourceSettings};
pub use window::{CommittedWindows, WindowRules};
pub use windowing::RestoredWindows;

/// Everything a worker needs to build the job's dataflow.
#[derive(Clone)]
pub struct Plan {
    pub source: SourceSettings,
    pub attribution: Arc<Attribution>,
    pub windows: WindowRules,
    /// Wall-clock interval of partial rows; `None`: none.
    pub early_results_ms: Option<u64>,
    pub clock: Clock,
    pub errors: CommitErrors,
    pub commit_lock: CommitLock,
    /// Window state of the committed epoch the job resumes from.
    pub restored: Arc<RestoredWindows>,
    /// The sink's committed window state, where final windows' sketches are
    /// read back from (so they need not stay in memory); `None` for sinks
    /// that keep no state.
    pub committed_windows: Option<Arc<dyn CommittedWindows>>,
    /// How many workers own windows, the first ones: `None` for all. A
    /// cluster whose store lives with process 0 keeps every window there,
    /// where the committed windows can be read back.
    pub window_workers: Option<usize>,
}

/// Builds the dataflow in `scope` and returns a probe whose frontier is
/// what has been committed: done once everything is. Only worker 0 gets the
/// sink.
pub fn build<'scope>(scope: Scope<'scope, EventTime>, plan: Plan, sink: Option<Box<dyn Sink + Send>>) -> ProbeHandle<EventTime> {
    let stats = Arc::clone(&plan.source.stats);
    let resumed_epoch = plan.source.resume_epoch;
    let committed = ProbeHandle::new();
    let out = source::click_source(scope, plan.source, committed.clone());
    let (partials, checkpoints) = split(out);
    let keyed = attribute::attribute(partials, plan.attribution, stats);
    let committed_state = windowing::Committed { probe: committed.clone(), windows: plan.committed_windows, owners: plan.window_workers };
    let effects = windowing::windows(keyed, plan.windows, plan.early_results_ms, plan.clock, plan.restored, resumed_epoch, committed_state);
    let records = effects.concat(checkpoints);
    commit::commit(records, sink, plan.errors, plan.commit_lock, resumed_epoch).probe_with(&committed);
    committed
}

/// The source's partials, and what it sends the commit.
type Split<'scope> = (Stream<'scope, EventTime, Vec<(Key, AdPartial)>>, Stream<'scope, EventTime, Vec<Commitable>>);

/// Separates the source's partials from its checkpoints.
fn split<'scope>(out: Stream<'scope, EventTime, Vec<SourceOut>>) -> Split<'scope> {
    let partials = out.clone().unary(Pipeline, "Partials", |_, _| {
        |input, output| {
            input.for_each_stamp(|cap, data| {
                let mut session = output.session(&cap);
                for batch in data {
                    session.give_iterator(batch.iter().filter_map(|o| match o {
                        SourceOut::Partial(ad, partial) => Some((ad.clone(), partial.clone())),
                        SourceOut::Checkpoint(_) | SourceOut::Finished(_) => None,
                    }));
                }
            })
        }
    });
    let checkpoints = out.unary(Pipeline, "Checkpoints", |_, _| {
        |input, output| {
            input.for_each_stamp(|cap, data| {
                let mut session = output.session(&cap);
                for batch in data {
                    session.give_iterator(batch.drain(..).filter_map(|o| match o {
                        SourceOut::Checkpoint(checkpoint) => Some(Commitable::Checkpoint(checkpoint)),
                        SourceOut::Finished(past) => Some(Commitable::Finished(past)),
                        SourceOut::Partial(..) => None,
                    }));
                }
            })
        }
    });
    (partials.container::<Vec<(Key, AdPartial)>>(), checkpoints.container::<Vec<Commitable>>())
}
