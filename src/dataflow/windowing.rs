//! The window operator: exchanges partials by key and drives the [`WindowBook`].
//!
//! Built on `unary_frontier`, because windows close on frontier progress, not
//! on data. Partials are stashed by the time they apply at (the time they
//! travel at, or the batch of too-late ones); once the input frontier passes
//! a time, that time is complete and handed to the book, in time order. Windows whose end + allowed lateness the frontier has reached
//! are finalized. Early results go out at a wall-clock interval — they are
//! informative only and decide nothing.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::Stream;

use crate::event::{mix64, EventTime};
use crate::row::{LateEntry, Row};

use super::source::Clock;
use super::window::{Emitted, KeyedPartial, WindowBook, WindowRules};

/// What the window operator sends to the commit operator.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Emission {
    Row(Row),
    Late(LateEntry),
}

/// Routes a partial to the worker owning its key.
fn route(partial: &KeyedPartial) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    partial.key_type.hash(&mut hasher);
    partial.key.as_str().hash(&mut hasher);
    mix64(hasher.finish())
}

/// Builds the window operator.
pub fn windows<'scope>(
    partials: Stream<'scope, EventTime, Vec<KeyedPartial>>,
    rules: WindowRules,
    early_results_ms: u64,
    clock: Clock,
) -> Stream<'scope, EventTime, Vec<Emission>> {
    partials
        .unary_frontier(Exchange::new(route), "Windows", move |capability, _info| {
            let mut cap = Some(capability);
            let mut book = WindowBook::new(rules);
            let mut stash: BTreeMap<EventTime, Vec<KeyedPartial>> = BTreeMap::new();
            let mut last_early = clock();
            move |(input, frontier), output| {
                input.for_each_stamp(|stamp, data| {
                    let Some(&time) = stamp.least() else { return };
                    for partial in data.flat_map(|batch| batch.drain(..)) {
                        let at = partial.lateness.applies_at(time);
                        assert!(at >= time, "a batch time is never before the time a partial travels at");
                        stash.entry(at).or_default().push(partial);
                    }
                });
                let Some(held) = cap.as_mut() else { return };
                let limit = frontier.frontier().iter().next().copied().unwrap_or(EventTime::MAX);
                let mut out = Emitted::default();
                while let Some(entry) = stash.first_entry() {
                    if *entry.key() >= limit {
                        break;
                    }
                    let (time, partials) = entry.remove_entry();
                    book.apply_time(time, partials, &mut out);
                }
                book.finalize_through(limit, &mut out);
                let now = clock();
                if now >= last_early + early_results_ms {
                    book.early_results(&mut out);
                    last_early = now;
                }
                if !out.rows.is_empty() || !out.late.is_empty() {
                    let rows = out.rows.into_iter().map(Emission::Row);
                    let late = out.late.into_iter().map(Emission::Late);
                    output.session(held).give_iterator(rows.chain(late));
                }
                if limit == EventTime::MAX {
                    cap = None;
                } else if limit > *held.time() {
                    held.downgrade(&limit);
                }
            }
        })
        .container::<Vec<Emission>>()
}
