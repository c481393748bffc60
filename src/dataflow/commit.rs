//! The commit operator: stages each complete epoch into the worker's sink and commits it.
//!
//! An epoch is one timely time at this operator's input. It is staged and
//! committed only once the frontier has passed it, so a committed epoch is
//! never extended afterwards. Sink failures stop the job: they are recorded
//! in [`CommitErrors`] and the runner exits with them (fail-stop, like the
//! cluster itself).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::Stream;

use crate::event::EventTime;
use crate::row::{LateEntry, Row};
use crate::sink::{Epoch, Sink};

use super::windowing::Emission;

/// The first sink error of any worker.
pub type CommitErrors = Arc<Mutex<Option<String>>>;

/// Builds the commit operator over a worker's sink.
pub fn commit<'scope>(emissions: Stream<'scope, EventTime, Vec<Emission>>, mut sink: Box<dyn Sink>, errors: CommitErrors) {
    let mut stash: BTreeMap<EventTime, (Vec<Row>, Vec<LateEntry>)> = BTreeMap::new();
    let mut last_committed: Option<EventTime> = None;
    emissions.sink(Pipeline, "Commit", move |(input, frontier)| {
        input.for_each_stamp(|stamp, data| {
            let Some(&time) = stamp.least() else { return };
            let (rows, late) = stash.entry(time).or_default();
            for batch in data {
                for emission in batch.drain(..) {
                    match emission {
                        Emission::Row(row) => rows.push(row),
                        Emission::Late(entry) => late.push(entry),
                    }
                }
            }
        });
        let limit = frontier.frontier().iter().next().copied().unwrap_or(EventTime::MAX);
        while let Some(entry) = stash.first_entry() {
            if *entry.key() >= limit {
                break;
            }
            let (time, (rows, late)) = entry.remove_entry();
            assert!(last_committed.is_none_or(|last| last < time), "epochs commit in order");
            let epoch = Epoch(time);
            let result = sink.stage(epoch, &rows, &late).and_then(|()| sink.commit(epoch));
            if let Err(error) = result {
                errors.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(error.to_string());
                stash.clear();
                return;
            }
            last_committed = Some(time);
        }
    });
}
