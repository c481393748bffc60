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
pub mod commit;
pub mod dedup;
pub mod hll;
pub mod partial;
pub mod partition;
pub mod source;
pub mod stats;
pub mod window;
pub mod windowing;

use std::sync::Arc;

use timely::dataflow::operators::Probe;
use timely::dataflow::{ProbeHandle, Scope};

use crate::event::EventTime;
use crate::sink::Sink;

pub use attribute::Attribution;
pub use commit::CommitErrors;
pub use source::{Clock, PartitionReader, ReadStatus, ReaderFactory, SourceSettings};
pub use window::WindowRules;

/// Everything a worker needs to build the job's dataflow.
#[derive(Clone)]
pub struct Plan {
    pub source: SourceSettings,
    pub attribution: Arc<Attribution>,
    pub windows: WindowRules,
    pub early_results_ms: u64,
    pub clock: Clock,
    pub errors: CommitErrors,
}

/// Builds the dataflow in `scope` and returns a probe on the committed output.
pub fn build<'scope>(scope: Scope<'scope, EventTime>, plan: Plan, sink: Box<dyn Sink>) -> ProbeHandle<EventTime> {
    let stats = Arc::clone(&plan.source.stats);
    let partials = source::click_source(scope, plan.source);
    let keyed = attribute::attribute(partials, plan.attribution, stats);
    let emissions = windowing::windows(keyed, plan.windows, plan.early_results_ms, plan.clock);
    let probe = ProbeHandle::new();
    let emissions = emissions.probe_with(&probe);
    commit::commit(emissions, sink, plan.errors);
    probe
}
