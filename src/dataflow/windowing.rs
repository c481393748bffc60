//! The window operator: exchanges partials by key and drives the [`WindowBook`].
//!
//! Built on `unary_frontier`, because windows close on frontier progress, not
//! on data. Partials are stashed by the time they apply at (the time they
//! travel at, or the batch of too-late ones); once the input frontier passes
//! a time, that time is complete and handed to the book, in time order.
//! Windows whose end + allowed lateness the frontier has reached are
//! finalized. Early results go out at a wall-clock interval — they are
//! informative only and decide nothing.
//!
//! Every effect leaves at the time it belongs to (see `window.rs`), for the
//! epoch commit. A too-late partial that waits in the stash for a later batch
//! time is itself state: it is committed as pending when it arrives and
//! deleted when its batch is applied.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::{ProbeHandle, Stream};

use crate::event::{mix64, EventTime, KeyType};

use super::commit::Commitable;
use super::source::Clock;
use super::window::{CommittedWindows, Effect, Emitted, KeyedPartial, PendingKey, WinId, WindowBook, WindowRules, WindowValue};

/// Partials waiting for their time, with the key they are committed under
/// while they wait (if they wait).
type Stash = BTreeMap<EventTime, Vec<(Option<PendingKey>, KeyedPartial)>>;

/// Window state of a committed epoch, for the workers to pick their keys from.
#[derive(Default)]
pub struct RestoredWindows {
    pub windows: Vec<(WinId, WindowValue)>,
    pub pending: Vec<(PendingKey, KeyedPartial)>,
}

impl RestoredWindows {
    /// Keeps the windows and pending partials whose keys `keep` says.
    pub fn retain(&mut self, keep: impl Fn(KeyType, &str) -> bool) {
        self.windows.retain(|(id, _)| keep(id.key_type, &id.key));
        self.pending.retain(|(key, _)| keep(key.key_type, &key.key));
    }
}

/// The worker owning a key, as a hash (shared by routing and restore).
pub fn route_key(key_type: KeyType, key: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key_type.hash(&mut hasher);
    key.hash(&mut hasher);
    mix64(hasher.finish())
}

/// What has been committed, as the window operator sees it: the frontier
/// (from the commit operator) and, where the sink keeps state, that state.
pub struct Committed {
    pub probe: ProbeHandle<EventTime>,
    pub windows: Option<Arc<dyn CommittedWindows>>,
    /// How many workers own windows, the first ones (process 0's in a
    /// cluster whose committed windows only process 0 can read); `None`
    /// for all.
    pub owners: Option<usize>,
}

/// Builds the window operator.
pub fn windows<'scope>(
    partials: Stream<'scope, EventTime, Vec<KeyedPartial>>,
    rules: WindowRules,
    early_results_ms: Option<u64>,
    clock: Clock,
    restored: Arc<RestoredWindows>,
    resumed_epoch: EventTime,
    committed: Committed,
) -> Stream<'scope, EventTime, Vec<Commitable>> {
    let (index, peers) = (partials.scope().index() as u64, partials.scope().peers() as u64);
    // The workers that own windows: all, or the first `owners` (process 0's,
    // beside the store that holds the committed windows).
    let owners = committed.owners.map_or(peers, |o| (o as u64).clamp(1, peers));
    let mine = move |key_type: KeyType, key: &str| route_key(key_type, key) % owners == index;
    // Pending too-late partials are state too: only a sink that keeps state takes them.
    let keep_state = rules.keep_state;
    partials
        .unary_frontier(
            Exchange::new(move |p: &KeyedPartial| route_key(p.key_type, &p.key) % owners),
            "Windows",
            move |capability, _info| {
                let mut capability = capability;
                capability.downgrade(&resumed_epoch);
                let mut cap = Some(capability);
                let mut book = WindowBook::new(rules, committed.windows);
                let mut stash = Stash::new();
                for (id, value) in restored.windows.iter().filter(|(id, _)| mine(id.key_type, &id.key)) {
                    book.restore(id.clone(), value.clone());
                }
                for (key, partial) in restored.pending.iter().filter(|(k, _)| mine(k.key_type, &k.key)) {
                    stash.entry(key.batch).or_default().push((Some(key.clone()), partial.clone()));
                }
                let mut last_early = clock();
                move |(input, frontier), output| {
                    let mut pending = Vec::new();
                    input.for_each_stamp(|stamp, data| {
                        let Some(&time) = stamp.least() else { return };
                        for partial in data.flat_map(|batch| batch.drain(..)) {
                            let at = partial.lateness.applies_at(time);
                            assert!(at >= time, "a batch time is never before the time a partial travels at");
                            let key = (at > time).then(|| PendingKey::of(&partial, at, resumed_epoch));
                            if let Some(key) = key.as_ref().filter(|_| keep_state) {
                                pending.push((time, Commitable::Pending(key.clone(), Some(partial.clone()))));
                            }
                            stash.entry(at).or_default().push((key, partial));
                        }
                    });
                    let Some(held) = cap.as_mut() else { return };
                    book.hold_at(*held.time());
                    book.release_committed(committed.probe.with_frontier(|f| f.iter().next().copied()).unwrap_or(EventTime::MAX));
                    let limit = frontier.frontier().iter().next().copied().unwrap_or(EventTime::MAX);
                    let mut out = Emitted::default();
                    while let Some(entry) = stash.first_entry() {
                        if *entry.key() >= limit {
                            break;
                        }
                        let (time, waiting) = entry.remove_entry();
                        let mut partials = Vec::with_capacity(waiting.len());
                        for (key, partial) in waiting {
                            if let Some(key) = key.filter(|_| keep_state) {
                                pending.push((time, Commitable::Pending(key, None)));
                            }
                            partials.push(partial);
                        }
                        book.apply_time(time, partials, &mut out);
                    }
                    book.finalize_through(limit, &mut out);
                    // Early results go out when the frontier steps: the
                    // commit of the held time is then due at once, with the
                    // partials of this very step in them. Between steps they
                    // would wait up to an epoch for a commit, and be stale by
                    // then.
                    let now = clock();
                    if limit > *held.time() && early_results_ms.is_some_and(|every| now >= last_early + every) {
                        book.early_results(*held.time(), &mut out);
                        last_early = now;
                    }
                    let effects = out.effects.into_iter().map(|(time, effect)| (time, Commitable::Effect(effect)));
                    send_by_time(held, pending.into_iter().chain(effects), output);
                    if limit == EventTime::MAX {
                        cap = None;
                    } else if limit > *held.time() {
                        held.downgrade(&limit);
                    }
                }
            },
        )
        .container::<Vec<Commitable>>()
}

/// Sends each record at its own time. A window's (or pending partial's)
/// state is sent once per time, its last value: timely may reorder the
/// messages of one time (`for_each_stamp` sorts them unstably), so the commit
/// must not depend on their order.
fn send_by_time(
    held: &timely::dataflow::operators::Capability<EventTime>,
    records: impl Iterator<Item = (EventTime, Commitable)>,
    output: &mut timely::dataflow::operators::generic::OutputBuilderSession<
        '_,
        EventTime,
        timely::container::CapacityContainerBuilder<Vec<Commitable>>,
    >,
) {
    let mut by_time: BTreeMap<EventTime, Vec<Commitable>> = BTreeMap::new();
    for (time, record) in records {
        by_time.entry(time).or_default().push(record);
    }
    for records in by_time.values_mut() {
        last_state_only(records);
    }
    for (time, records) in by_time {
        assert!(time >= *held.time(), "effects never belong before the held capability ({}): {time} {:?}", held.time(), records.first());
        let at = held.delayed(&time);
        output.session(&at).give_iterator(records.into_iter());
    }
}

/// Keeps only the last state record of each window and pending key.
fn last_state_only(records: &mut Vec<Commitable>) {
    let mut windows = std::collections::HashSet::new();
    let mut pending = std::collections::HashSet::new();
    let mut keep: Vec<bool> = records
        .iter()
        .rev()
        .map(|record| match record {
            Commitable::Effect(Effect::Window(id, _)) => windows.insert(id.clone()),
            Commitable::Pending(key, _) => pending.insert(key.clone()),
            _ => true,
        })
        .collect();
    keep.reverse();
    let mut flags = keep.into_iter();
    records.retain(|_| flags.next().unwrap_or(true));
}
