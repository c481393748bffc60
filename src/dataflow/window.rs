//! The window book: open, final and restated windows of the keys one worker owns.
//!
//! Pure state machine driven by the window operator. Partials arrive tagged
//! with the timely time they travel at; the operator hands them over one
//! complete time at a time, in time order, and tells the book how far the
//! frontier has moved. Rows depend only on which partials carry which time,
//! never on how they were batched, which is what makes output identical for
//! any worker count (SEMANTICS.md, "Windows and rows").
//!
//! Every effect (a row, a ledger entry, a window's new state) is tagged with
//! the time it belongs to, whatever frontier step revealed it: an applied
//! time's effects at that time, a window's finalization at `end + allowed
//! lateness − 1` (the last time before it is final), an eviction at `end +
//! restate_within − 1`. An epoch commit through frontier `F` takes exactly the
//! effects at times below `F`, so the stored state is a consistent cut: it
//! contains the effect of every input below `F` and of nothing at or above it.
//!
//! The keys window state is committed under live here too, below both
//! operators that send and commit it: [`WinId`] for a window, [`PendingKey`]
//! for a too-late partial waiting for its batch time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hashbrown::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::event::{EventTime, Key, KeyType, MINUTE_MS};
use crate::row::{LateEntry, Row, Status};

use super::partial::{Agg, Lateness};

/// A partial aggregate addressed to one key, after catalog attribution.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyedPartial {
    pub key_type: KeyType,
    pub key: Key,
    /// Start of the 1m window.
    pub window: EventTime,
    pub lateness: Lateness,
    /// The identity of the ad partial it came from.
    pub seq: u64,
    pub agg: Agg,
    pub late_ids: Vec<crate::event::RequestId>,
}

/// Window identity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WinId {
    pub end: EventTime,
    pub granularity: u64,
    pub key_type: KeyType,
    pub key: Key,
}

impl WinId {
    fn start(&self) -> EventTime {
        self.end - self.granularity
    }
}

/// A too-late partial waiting for its batch time. `seq` is unique within a
/// run only, so `run` (the epoch the run resumed from, which grows from one
/// committing run to the next) keeps the partials of different runs apart.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PendingKey {
    pub batch: EventTime,
    pub key_type: KeyType,
    pub key: Key,
    pub window: EventTime,
    pub run: EventTime,
    pub seq: u64,
}

impl PendingKey {
    pub(crate) fn of(partial: &KeyedPartial, batch: EventTime, run: EventTime) -> PendingKey {
        PendingKey { batch, key_type: partial.key_type, key: partial.key.clone(), window: partial.window, run, seq: partial.seq }
    }
}

/// A window's state as the epoch commit stores it: version 0 while open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowValue {
    pub agg: Agg,
    pub version: u32,
}

/// One effect of the book, at the time it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    Row(Row),
    Late(LateEntry),
    /// A window's new state, or `None` once it is forgotten.
    Window(WinId, Option<WindowValue>),
}

/// Windows by identity, with an index by (end, granularity) so that closing
/// and evicting are prefixes. Lookups hash; only creation touches the index.
struct ByEnd<V> {
    windows: HashMap<WinId, V>,
    ends: BTreeMap<(EventTime, u64), Vec<WinId>>,
}

impl<V: Default> ByEnd<V> {
    fn new() -> Self {
        ByEnd { windows: HashMap::new(), ends: BTreeMap::new() }
    }

    fn entry(&mut self, id: &WinId) -> &mut V {
        if !self.windows.contains_key(id) {
            self.ends.entry((id.end, id.granularity)).or_default().push(id.clone());
        }
        self.windows.entry(id.clone()).or_default()
    }

    fn insert(&mut self, id: WinId, value: V) {
        self.ends.entry((id.end, id.granularity)).or_default().push(id.clone());
        let previous = self.windows.insert(id, value);
        assert!(previous.is_none(), "a window is inserted once");
    }

    /// Removes the windows of the first (end, granularity) if `due(end)`.
    fn pop_first_due(&mut self, due: impl Fn(EventTime) -> bool) -> Option<Vec<(WinId, V)>> {
        self.pop_first_if(|end, _| due(end))
    }

    /// Removes the windows of the first (end, granularity) if `due(end,
    /// each of them)`.
    fn pop_first_if(&mut self, due: impl Fn(EventTime, &mut dyn Iterator<Item = &V>) -> bool) -> Option<Vec<(WinId, V)>> {
        let entry = self.ends.first_entry()?;
        let windows = &self.windows;
        if !due(entry.key().0, &mut entry.get().iter().filter_map(|id| windows.get(id))) {
            return None;
        }
        let ids = entry.remove();
        Some(ids.into_iter().filter_map(|id| self.windows.remove_entry(&id)).collect())
    }
}

/// A final window, kept while it can be restated.
#[derive(Default)]
struct Closed {
    agg: Agg,
    version: u32,
    /// The sketch is not in memory but in the committed state (`agg.users`
    /// is then empty): it is read back when a too-late click restates the
    /// window.
    cold: bool,
    /// The time of the window's last state effect: once that is committed,
    /// its sketch can leave memory.
    written_at: EventTime,
}

/// The committed window state the book reads back from: where the sketches
/// of final windows live once their state is committed, instead of memory.
/// A final window waits an hour (`restate_within`) for too-late clicks that
/// rarely come, and at peak load those sketches would be most of the job's
/// memory.
pub trait CommittedWindows: Send + Sync {
    /// The committed state of window `id`, if there is one.
    fn window(&self, id: &WinId) -> Result<Option<WindowValue>, String>;
    /// Whether an earlier run may have left window `id` in the committed
    /// state: the book asks the store about a window it does not hold only
    /// then, or when it evicted that window itself.
    fn before_this_job(&self, id: &WinId) -> bool;
}

/// Settings of the book.
#[derive(Clone, Debug)]
pub struct WindowRules {
    /// Window lengths, ascending; the first is 1m.
    pub windows_ms: Vec<u64>,
    pub allowed_lateness_ms: u64,
    /// How long a final window stays restatable; `None` when late clicks are held.
    pub restate_within_ms: Option<u64>,
    /// Whether window state goes to the commit: a sink that keeps it (a
    /// store a later run resumes from) needs every window's new state; a
    /// file or memory sink keeps rows and ledger entries only, and the book
    /// then sends no state (nor copies it).
    pub keep_state: bool,
}

/// Open and recently final windows of this worker's keys.
pub struct WindowBook {
    rules: WindowRules,
    open: ByEnd<Agg>,
    closed: ByEnd<Closed>,
    /// Open 1m windows changed since the last early results.
    dirty: HashSet<WinId>,
    /// Where final windows' sketches are read back from; `None`: they stay
    /// in memory.
    committed: Option<Arc<dyn CommittedWindows>>,
    /// Final windows with their sketch in memory, by the time of the state
    /// effect that must be committed before it can go.
    resident: BTreeMap<EventTime, Vec<WinId>>,
    /// Everything below this time is committed (see [`WindowBook::release_committed`]).
    committed_through: EventTime,
    /// The latest end of a window this book evicted: only those, and an
    /// earlier run's, can be in the committed state but not in the book.
    evicted_through: EventTime,
    /// No effect may belong before this time: the window operator's
    /// capability (see [`WindowBook::hold_at`]).
    floor: EventTime,
}

/// What a step of the book produced: effects with their times, in order.
#[derive(Default, Debug)]
pub struct Emitted {
    pub effects: Vec<(EventTime, Effect)>,
}

impl Emitted {
    fn push(&mut self, time: EventTime, effect: Effect) {
        self.effects.push((time, effect));
    }

    /// The rows among the effects.
    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.effects.iter().filter_map(|(_, e)| match e {
            Effect::Row(row) => Some(row),
            _ => None,
        })
    }

    /// The late-ledger entries among the effects.
    pub fn late(&self) -> impl Iterator<Item = &LateEntry> {
        self.effects.iter().filter_map(|(_, e)| match e {
            Effect::Late(entry) => Some(entry),
            _ => None,
        })
    }
}

/// Where a window stands when a partial reaches it.
enum Place {
    /// Open: counted into its final value.
    Open,
    /// Already emitted (final or restated): a change restates it.
    Settled,
}

/// Windows a step restated, with whether an on-time click touched them (a
/// window emitted for the first time by a step is `final` if one did).
type Restated = BTreeMap<WinId, bool>;

impl WindowBook {
    pub fn new(rules: WindowRules, committed: Option<Arc<dyn CommittedWindows>>) -> Self {
        assert_eq!(rules.windows_ms.first(), Some(&MINUTE_MS), "windows start with 1m");
        WindowBook {
            rules,
            open: ByEnd::new(),
            closed: ByEnd::new(),
            dirty: HashSet::new(),
            committed,
            resident: BTreeMap::new(),
            committed_through: 0,
            evicted_through: 0,
            floor: 0,
        }
    }

    /// Sets the earliest time effects may belong to: the window operator's
    /// capability. A window finalized or evicted later than its own time
    /// (the frontier jumped past it) has its effects there.
    pub fn hold_at(&mut self, time: EventTime) {
        self.floor = self.floor.max(time);
    }

    /// Lets the sketches of final windows whose state is committed below
    /// `frontier` leave memory (when there is committed state to read them
    /// back from).
    pub fn release_committed(&mut self, frontier: EventTime) {
        self.committed_through = self.committed_through.max(frontier);
        if self.committed.is_none() {
            return;
        }
        while let Some(entry) = self.resident.first_entry() {
            if *entry.key() >= frontier {
                break;
            }
            for id in entry.remove() {
                if let Some(closed) = self.closed.windows.get_mut(&id) {
                    if closed.written_at < frontier && !closed.cold {
                        closed.agg.users = Default::default();
                        closed.cold = true;
                    }
                }
            }
        }
    }

    /// Notes that a final window's state was written at `time` with its
    /// sketch in memory.
    fn wrote(&mut self, id: &WinId, time: EventTime) {
        if self.committed.is_some() {
            self.resident.entry(time).or_default().push(id.clone());
        }
    }

    /// Applies every partial that applies at the complete time `time`: on-time
    /// ones that travelled at it, too-late ones whose batch it is.
    pub fn apply_time(&mut self, time: EventTime, partials: Vec<KeyedPartial>, out: &mut Emitted) {
        self.finalize_through(time, out);
        let mut opened = BTreeSet::new();
        let mut restated = Restated::new();
        for partial in partials {
            assert_eq!(partial.lateness.applies_at(time), time, "partials are applied at their batch time");
            match partial.lateness {
                Lateness::OnTime => self.apply_counted(time, partial, true, &mut opened, &mut restated),
                Lateness::Restate(_) => {
                    out.push(time, Effect::Late(late_entry(&partial, time, false)));
                    self.apply_counted(time, partial, false, &mut opened, &mut restated);
                }
                Lateness::Held(_) => out.push(time, Effect::Late(late_entry(&partial, time, true))),
            }
        }
        if self.rules.keep_state {
            for id in opened {
                let agg = self.open.windows.get(&id).expect("touched windows are open").clone();
                out.push(time, Effect::Window(id, Some(WindowValue { agg, version: 0 })));
            }
        }
        for (id, on_time) in restated {
            self.emit_settled(&id, time, on_time, out);
        }
    }

    /// Emits the next version of a settled window at `time`: `final` when it
    /// is its first and an on-time click made it, else `restated`.
    fn emit_settled(&mut self, id: &WinId, time: EventTime, on_time: bool, out: &mut Emitted) {
        let closed = self.closed.windows.get_mut(id).expect("restated windows are closed");
        closed.version += 1;
        closed.written_at = time;
        let status = if closed.version == 1 && on_time { Status::Final } else { Status::Restated };
        out.push(time, Effect::Row(row(id, &closed.agg, status, closed.version)));
        if self.rules.keep_state {
            out.push(time, Effect::Window(id.clone(), Some(WindowValue { agg: closed.agg.clone(), version: closed.version })));
        }
        self.wrote(id, time);
    }

    /// Counts a partial into its windows. Into an open 1m window only: its
    /// longer windows get it when it is rolled up. A 1m window already
    /// emitted — by the frontier, by the end of a bounded run, or because
    /// the click is too late — is restated, and so are its longer windows
    /// that were emitted too (the others count it while open).
    fn apply_counted(
        &mut self,
        time: EventTime,
        partial: KeyedPartial,
        on_time: bool,
        opened: &mut BTreeSet<WinId>,
        restated: &mut Restated,
    ) {
        for granularity in self.rules.windows_ms.clone() {
            let start = partial.window - partial.window % granularity;
            let id = WinId { end: start + granularity, granularity, key_type: partial.key_type, key: partial.key.clone() };
            match self.place(&id, time) {
                Place::Open => {
                    self.open.entry(&id).merge(&partial.agg);
                    let minute = granularity == MINUTE_MS;
                    if minute {
                        self.dirty.insert(id.clone());
                    }
                    if self.rules.keep_state {
                        opened.insert(id);
                    }
                    if minute {
                        return;
                    }
                }
                Place::Settled => {
                    self.closed.windows.get_mut(&id).expect("settled windows are closed").agg.merge(&partial.agg);
                    *restated.entry(id).or_default() |= on_time;
                }
            }
        }
    }

    /// Where window `id` stands at `time`, bringing a settled window whose
    /// state left memory back from the committed state. A window the
    /// frontier passed that nothing emitted yet is settled with version 0:
    /// its first row comes now.
    fn place(&mut self, id: &WinId, time: EventTime) -> Place {
        self.place_or(id, time, true)
    }

    /// [`WindowBook::place`]; with `passed_settles` false, a window that
    /// nothing emitted yet is opened even if the frontier passed it (a
    /// roll-up, whose window `finalize_through` closes right after).
    fn place_or(&mut self, id: &WinId, time: EventTime, passed_settles: bool) -> Place {
        if self.open.windows.contains_key(id) {
            return Place::Open;
        }
        if self.closed.windows.contains_key(id) {
            self.warm(id);
            return Place::Settled;
        }
        if let Some(value) = self.committed_value(id) {
            assert!(value.version > 0, "window {id:?} is open in the committed state but not in the book");
            self.closed.insert(id.clone(), Closed { agg: value.agg, version: value.version, cold: false, written_at: 0 });
            return Place::Settled;
        }
        if !passed_settles || id.end.saturating_add(self.rules.allowed_lateness_ms) > time {
            return Place::Open;
        }
        self.closed.insert(id.clone(), Closed::default());
        Place::Settled
    }

    /// The committed value of a window the book does not hold, if any.
    fn committed_value(&self, id: &WinId) -> Option<WindowValue> {
        let committed = self.committed.as_ref()?;
        if id.end > self.evicted_through && !committed.before_this_job(id) {
            return None;
        }
        committed.window(id).unwrap_or_else(|e| panic!("reading the committed state of window {id:?}: {e}"))
    }

    /// Reads a cold final window's sketch back from the committed state.
    /// Its clicks and version must be those the book kept: anything else
    /// means the commit lost or changed state.
    fn warm(&mut self, id: &WinId) {
        let Some(closed) = self.closed.windows.get_mut(id).filter(|c| c.cold) else { return };
        let committed = self.committed.as_ref().expect("cold windows have committed state");
        let value = committed
            .window(id)
            .unwrap_or_else(|e| panic!("reading the committed state of final window {id:?}: {e}"))
            .unwrap_or_else(|| panic!("the committed state of final window {id:?} is missing"));
        assert_eq!(
            (value.agg.clicks, value.version),
            (closed.agg.clicks, closed.version),
            "the committed state of final window {id:?} is not the one the job kept"
        );
        closed.agg.users = value.agg.users;
        closed.cold = false;
    }

    /// How long a final window stays in memory after its end: while a
    /// too-late click may still restate it. Later changes (a click on time
    /// for its partition after the clock emitted the window) read it back
    /// from the committed state.
    fn keep_ms(&self) -> u64 {
        self.rules.restate_within_ms.unwrap_or(self.rules.allowed_lateness_ms)
    }

    /// Finalizes every window whose end + allowed lateness is at or below
    /// `frontier`, rolling 1m windows up into the longer ones, and evicts
    /// final windows from memory once they can no longer be restated by a
    /// too-late click and their last state is committed.
    pub fn finalize_through(&mut self, frontier: EventTime, out: &mut Emitted) {
        let lateness = self.rules.allowed_lateness_ms;
        let keeps_settled = self.rules.restate_within_ms.is_some() || self.committed.is_some();
        while let Some(closing) = self.open.pop_first_due(|end| end.saturating_add(lateness) <= frontier) {
            for (id, agg) in closing {
                let at = (id.end + lateness - 1).max(self.floor);
                self.dirty.remove(&id);
                if id.granularity == MINUTE_MS {
                    self.roll_up(&id, &agg, at, out);
                }
                out.push(at, Effect::Row(row(&id, &agg, Status::Final, 1)));
                if keeps_settled {
                    if self.rules.keep_state {
                        out.push(at, Effect::Window(id.clone(), Some(WindowValue { agg: agg.clone(), version: 1 })));
                    }
                    self.wrote(&id, at);
                    self.closed.insert(id, Closed { agg, version: 1, cold: false, written_at: at });
                } else if self.rules.keep_state {
                    out.push(at, Effect::Window(id, None));
                }
            }
        }
        let keep = self.keep_ms();
        let (committed, through, floor) = (self.committed.is_some(), self.committed_through, self.floor);
        // A window whose last state is not committed yet stays: a read-back
        // would find an older value.
        let due = |end: EventTime, group: &mut dyn Iterator<Item = &Closed>| {
            end.saturating_add(keep) <= frontier && !(committed && unwritten(group, through))
        };
        while let Some(evicted) = self.closed.pop_first_if(due) {
            let latest = evicted.iter().map(|(id, _)| id.end).max().unwrap_or(0);
            self.evicted_through = self.evicted_through.max(latest);
            for (id, _) in evicted.into_iter().filter(|_| self.rules.keep_state) {
                out.push((id.end + keep - 1).max(floor), Effect::Window(id, None));
            }
        }
    }

    fn roll_up(&mut self, minute: &WinId, agg: &Agg, at: EventTime, out: &mut Emitted) {
        let start = minute.start();
        for &granularity in &self.rules.windows_ms.clone()[1..] {
            let end = start - start % granularity + granularity;
            let id = WinId { end, granularity, key_type: minute.key_type, key: minute.key.clone() };
            match self.place_or(&id, at, false) {
                Place::Open => {
                    let open = self.open.entry(&id);
                    open.merge(agg);
                    if self.rules.keep_state {
                        out.push(at, Effect::Window(id, Some(WindowValue { agg: open.clone(), version: 0 })));
                    }
                }
                Place::Settled => {
                    self.closed.windows.get_mut(&id).expect("settled windows are closed").agg.merge(agg);
                    self.emit_settled(&id, at, true, out);
                }
            }
        }
    }

    /// Puts back windows from a committed epoch (open if version 0). Final
    /// ones come back cold when their sketch can be read from the committed
    /// state (and their sketch may then have been left out of `value`).
    pub fn restore(&mut self, id: WinId, value: WindowValue) {
        if value.version == 0 {
            self.open.insert(id, value.agg);
        } else {
            let cold = self.committed.is_some();
            let mut agg = value.agg;
            if cold {
                agg.users = Default::default();
            }
            self.closed.insert(id, Closed { agg, version: value.version, cold, written_at: 0 });
        }
    }

    /// Early results: a partial row (at `time`) for every open window changed
    /// since the last call. A longer window's value is its final 1m windows
    /// plus the open ones inside it.
    pub fn early_results(&mut self, time: EventTime, out: &mut Emitted) {
        let mut touched: BTreeSet<WinId> = BTreeSet::new();
        for minute in std::mem::take(&mut self.dirty) {
            let start = minute.start();
            for &granularity in &self.rules.windows_ms {
                let end = start - start % granularity + granularity;
                touched.insert(WinId { end, granularity, key_type: minute.key_type, key: minute.key.clone() });
            }
        }
        for id in touched {
            let mut agg = self.open.windows.get(&id).cloned().unwrap_or_default();
            if id.granularity != MINUTE_MS {
                self.add_open_minutes(&id, &mut agg);
            }
            out.push(time, Effect::Row(row(&id, &agg, Status::Partial, 0)));
        }
    }

    fn add_open_minutes(&self, id: &WinId, agg: &mut Agg) {
        let mut end = id.start() + MINUTE_MS;
        while end <= id.end {
            let minute = WinId { end, granularity: MINUTE_MS, key_type: id.key_type, key: id.key.clone() };
            if let Some(open) = self.open.windows.get(&minute) {
                agg.merge(open);
            }
            end += MINUTE_MS;
        }
    }
}

/// Whether any window of `group` wrote state at or after `through`.
fn unwritten(group: &mut dyn Iterator<Item = &Closed>, through: EventTime) -> bool {
    Iterator::any(&mut { group }, |closed| closed.written_at >= through)
}

fn row(id: &WinId, agg: &Agg, status: Status, version: u32) -> Row {
    Row {
        key_type: id.key_type,
        key: id.key.clone(),
        granularity_ms: id.granularity,
        window_start: id.start(),
        clicks: agg.clicks,
        distinct_users: agg.users.estimate(),
        status,
        version,
    }
}

fn late_entry(partial: &KeyedPartial, batch: EventTime, held: bool) -> LateEntry {
    LateEntry {
        key_type: partial.key_type,
        key: partial.key.clone(),
        window_start: partial.window,
        batch,
        held,
        request_ids: partial.late_ids.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::hll::Sketch;

    fn rules() -> WindowRules {
        WindowRules { windows_ms: vec![60_000, 300_000], allowed_lateness_ms: 10_000, restate_within_ms: Some(3_600_000), keep_state: true }
    }

    fn partial(window: u64, lateness: Lateness, clicks: u64) -> KeyedPartial {
        KeyedPartial {
            key_type: KeyType::Ad,
            key: "a".into(),
            window,
            lateness,
            seq: 0,
            agg: Agg { clicks, users: Default::default() },
            late_ids: vec![],
        }
    }

    #[test]
    fn final_rows_roll_up_minutes() {
        let mut book = WindowBook::new(rules(), None);
        let mut out = Emitted::default();
        book.apply_time(0, vec![partial(0, Lateness::OnTime, 2), partial(60_000, Lateness::OnTime, 3)], &mut out);
        book.finalize_through(u64::MAX, &mut out);
        let finals: Vec<_> = out.rows().map(|r| (r.granularity_ms, r.window_start, r.clicks)).collect();
        assert_eq!(finals, vec![(60_000, 0, 2), (60_000, 60_000, 3), (300_000, 0, 5)]);
    }

    #[test]
    fn late_batch_restates_minute_and_rollup_once() {
        let mut book = WindowBook::new(rules(), None);
        let mut out = Emitted::default();
        book.apply_time(0, vec![partial(0, Lateness::OnTime, 2)], &mut out);
        book.apply_time(400_000, vec![partial(0, Lateness::Restate(400_000), 1), partial(60_000, Lateness::Restate(400_000), 1)], &mut out);
        let restated: Vec<_> =
            out.rows().filter(|r| r.status == Status::Restated).map(|r| (r.granularity_ms, r.window_start, r.clicks, r.version)).collect();
        assert_eq!(restated, vec![(60_000, 0, 3, 2), (60_000, 60_000, 1, 1), (300_000, 0, 4, 2)]);
        assert_eq!(out.late().count(), 2);
    }

    #[test]
    fn effects_belong_to_deterministic_times() {
        let mut book = WindowBook::new(rules(), None);
        let mut out = Emitted::default();
        book.apply_time(1_000, vec![partial(0, Lateness::OnTime, 2)], &mut out);
        book.finalize_through(u64::MAX, &mut out);
        let final_minute = out.effects.iter().find(|(_, e)| matches!(e, Effect::Row(r) if r.granularity_ms == 60_000)).unwrap();
        assert_eq!(final_minute.0, 60_000 + 10_000 - 1, "finalized at the last time before end + lateness");
        assert!(out.effects.iter().any(|(t, e)| *t == 1_000 && matches!(e, Effect::Window(_, Some(v)) if v.version == 0)));
    }

    #[test]
    fn without_state_the_book_sends_the_same_rows_and_no_state() {
        let steps = |keep_state: bool| {
            let mut book = WindowBook::new(WindowRules { keep_state, ..rules() }, None);
            let mut out = Emitted::default();
            book.apply_time(0, vec![partial(0, Lateness::OnTime, 2), partial(60_000, Lateness::OnTime, 3)], &mut out);
            book.finalize_through(200_000, &mut out);
            book.apply_time(400_000, vec![partial(0, Lateness::Restate(400_000), 1)], &mut out);
            book.finalize_through(u64::MAX, &mut out);
            out
        };
        let (with, without) = (steps(true), steps(false));
        assert!(with.effects.iter().any(|(_, e)| matches!(e, Effect::Window(..))), "a store's book sends state");
        assert!(!without.effects.iter().any(|(_, e)| matches!(e, Effect::Window(..))), "no state without a store");
        let rows = |out: &Emitted| out.effects.iter().filter(|(_, e)| !matches!(e, Effect::Window(..))).cloned().collect::<Vec<_>>();
        assert_eq!(rows(&with), rows(&without), "rows and ledger entries, with their times, are the same");
        assert!(without.rows().any(|r| r.status == Status::Restated));
    }

    #[test]
    fn late_click_before_rollup_closes_joins_its_final() {
        let mut book = WindowBook::new(rules(), None);
        let mut out = Emitted::default();
        book.apply_time(0, vec![partial(0, Lateness::OnTime, 2)], &mut out);
        book.apply_time(100_000, vec![partial(0, Lateness::Restate(100_000), 1)], &mut out);
        book.finalize_through(u64::MAX, &mut out);
        let five = out.rows().find(|r| r.granularity_ms == 300_000).unwrap();
        assert_eq!((five.clicks, five.status, five.version), (3, Status::Final, 1));
    }

    /// Committed state as a store holds it: the window effects of every
    /// time below the committed frontier, applied in time order.
    #[derive(Default)]
    struct Committed(std::sync::Mutex<HashMap<WinId, WindowValue>>);

    impl Committed {
        fn commit_below(&self, out: &Emitted, frontier: EventTime) {
            let mut state = self.0.lock().unwrap();
            let mut effects: Vec<_> = out.effects.iter().filter(|(t, _)| *t < frontier).collect();
            effects.sort_by_key(|(t, _)| *t);
            for (_, effect) in effects {
                if let Effect::Window(id, value) = effect {
                    match value {
                        Some(value) => state.insert(id.clone(), value.clone()),
                        None => state.remove(id),
                    };
                }
            }
        }
    }

    impl CommittedWindows for Committed {
        fn window(&self, id: &WinId) -> Result<Option<WindowValue>, String> {
            Ok(self.0.lock().unwrap().get(id).cloned())
        }

        fn before_this_job(&self, _: &WinId) -> bool {
            false
        }
    }

    fn users(from: u64, n: u64) -> Sketch {
        let mut sketch = Sketch::default();
        (from..from + n).for_each(|u| sketch.insert(crate::event::mix64(u)));
        sketch.compact();
        sketch
    }

    fn with_users(window: u64, lateness: Lateness, from: u64, n: u64) -> KeyedPartial {
        KeyedPartial { agg: Agg { clicks: n, users: users(from, n) }, ..partial(window, lateness, n) }
    }

    #[test]
    fn final_sketches_leave_memory_once_committed_and_restate_the_same() {
        let committed = Arc::new(Committed::default());
        let mut cold = WindowBook::new(rules(), Some(committed.clone() as Arc<dyn CommittedWindows>));
        let mut warm = WindowBook::new(rules(), None);
        let (mut cold_out, mut warm_out) = (Emitted::default(), Emitted::default());
        let steps: Vec<(u64, Vec<KeyedPartial>)> = vec![
            (0, vec![with_users(0, Lateness::OnTime, 0, 2_000), with_users(60_000, Lateness::OnTime, 5_000, 40)]),
            (400_000, vec![with_users(0, Lateness::Restate(400_000), 1_900, 300)]),
            (500_000, vec![with_users(0, Lateness::Restate(500_000), 9_000, 7), with_users(60_000, Lateness::Restate(500_000), 0, 3)]),
        ];
        for (time, partials) in steps {
            cold.apply_time(time, partials.clone(), &mut cold_out);
            warm.apply_time(time, partials, &mut warm_out);
            // The commit catches up; the book lets committed sketches go.
            committed.commit_below(&cold_out, time + 1);
            cold.release_committed(time + 1);
            let resident = cold.closed.windows.values().filter(|c| !c.cold).count();
            assert_eq!(resident, 0, "at {time}: final windows' sketches are out of memory once committed");
        }
        let rows = |out: &Emitted| out.rows().cloned().collect::<Vec<_>>();
        assert_eq!(rows(&cold_out), rows(&warm_out), "restating from the committed state gives the same rows");
        assert!(rows(&cold_out).iter().any(|r| r.status == Status::Restated && r.version == 3 && r.distinct_users > 2_000));
    }

    /// A store as an earlier run left it: final windows' values stay with
    /// their rows after their state is deleted; `before` is the latest
    /// window end the store reports, and lookups are counted.
    struct Earlier {
        settled: HashMap<WinId, WindowValue>,
        before: EventTime,
        lookups: std::sync::atomic::AtomicUsize,
    }

    impl CommittedWindows for Earlier {
        fn window(&self, id: &WinId) -> Result<Option<WindowValue>, String> {
            self.lookups.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(self.settled.get(id).cloned())
        }

        fn before_this_job(&self, id: &WinId) -> bool {
            id.end <= self.before
        }
    }

    #[test]
    fn a_later_run_reads_back_what_an_earlier_one_settled_and_nothing_newer() {
        // The earlier run: window 0 final and evicted (as at the end of a
        // bounded run), its value kept where the store keeps it.
        let mut earlier = WindowBook::new(rules(), None);
        let mut out = Emitted::default();
        earlier.apply_time(0, vec![partial(0, Lateness::OnTime, 2)], &mut out);
        earlier.finalize_through(u64::MAX, &mut out);
        let settled: HashMap<WinId, WindowValue> = out
            .rows()
            .map(|r| {
                let id = WinId { end: r.window_end(), granularity: r.granularity_ms, key_type: r.key_type, key: r.key.clone() };
                (id, WindowValue { agg: Agg { clicks: r.clicks, users: Default::default() }, version: r.version })
            })
            .collect();
        let latest_end = settled.keys().map(|id| id.end).max().unwrap();
        let later = |before| {
            let store = Arc::new(Earlier { settled: settled.clone(), before, lookups: Default::default() });
            let mut book = WindowBook::new(rules(), Some(store.clone() as Arc<dyn CommittedWindows>));
            let mut out = Emitted::default();
            // More clicks for window 0, and clicks of windows no run saw.
            book.apply_time(400_000, vec![partial(0, Lateness::Restate(400_000), 1)], &mut out);
            let lookups_for_window_0 = store.lookups.load(std::sync::atomic::Ordering::SeqCst);
            book.apply_time(400_000, vec![partial(600_000, Lateness::OnTime, 5), partial(900_000, Lateness::OnTime, 1)], &mut out);
            let later_lookups = store.lookups.load(std::sync::atomic::Ordering::SeqCst) - lookups_for_window_0;
            let rows: Vec<_> = out.rows().map(|r| (r.granularity_ms, r.window_start, r.clicks, r.status, r.version)).collect();
            (rows, lookups_for_window_0, later_lookups)
        };
        let (rows, lookups, later_lookups) = later(latest_end);
        assert_eq!(rows, vec![(60_000, 0, 3, Status::Restated, 2), (300_000, 0, 3, Status::Restated, 2)]);
        assert_eq!(lookups, 2, "window 0's minute and its 5m window are read back");
        assert_eq!(later_lookups, 0, "no lookup for windows past what any run committed");
        // A store that wrongly reports nothing earlier: window 0 counts from
        // zero again. The first check would catch it.
        let (rows, ..) = later(0);
        assert_eq!(rows[0], (60_000, 0, 1, Status::Restated, 1));
    }

    #[test]
    #[should_panic(expected = "the committed state of final window")]
    fn a_lost_committed_state_stops_the_job() {
        let committed = Arc::new(Committed::default());
        let mut book = WindowBook::new(rules(), Some(committed as Arc<dyn CommittedWindows>));
        let mut out = Emitted::default();
        book.apply_time(0, vec![partial(0, Lateness::OnTime, 2)], &mut out);
        book.finalize_through(200_000, &mut out);
        // Released as if committed, but nothing was written.
        book.release_committed(200_000);
        book.apply_time(300_000, vec![partial(0, Lateness::Restate(300_000), 1)], &mut out);
    }

    #[test]
    fn early_results_cover_open_minutes() {
        let mut book = WindowBook::new(rules(), None);
        let mut out = Emitted::default();
        book.apply_time(0, vec![partial(0, Lateness::OnTime, 2), partial(60_000, Lateness::OnTime, 3)], &mut out);
        book.early_results(0, &mut out);
        let five = out.rows().find(|r| r.granularity_ms == 300_000).unwrap();
        assert_eq!((five.clicks, five.status), (5, Status::Partial));
    }
}
