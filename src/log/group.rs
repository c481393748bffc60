//! Group commit: many concurrent appends to a partition share one write and
//! one fsync.
//!
//! A leader/follower scheme, per partition, with no thread of its own.
//! Appenders copy their encoded records into the partition's *pending*
//! batch (which assigns their offsets) and take a ticket: the id of that
//! batch. Then each waits until its batch is durable. Whoever waits while no
//! one is writing becomes the *leader*: it takes the whole pending batch,
//! releases the lock, writes and fsyncs it (the `flush` callback), then marks
//! it durable and wakes everyone. Appends that arrive while a leader is
//! writing accumulate in the next pending batch, and one of them leads it;
//! so under load a single fsync covers many appends, and with one appender
//! there is no added latency.
//!
//! Limits: a pending batch holds at most `max_batch_bytes` (one record more
//! only if it alone is larger); an appender that finds it full leads it or
//! waits for the leader, which is the back-pressure.
//!
//! Durability contract: [`Group::wait`] returns `Ok` only once `flush` has
//! returned `Ok` for the batch holding the caller's records, i.e. once they
//! are fsynced. If `flush` fails, the partition stops: the leader returns the
//! error, every waiter and later appender gets [`LogError::Failed`], and
//! nothing more is written until the log is reopened (after a failed fsync
//! the page cache can no longer be trusted to hold what was written). The
//! records of a failed batch were never acknowledged; some of them may still
//! be found in the log after reopening.

use std::mem;
use std::sync::{Condvar, Mutex, MutexGuard};

use super::{lock, LogError};

/// What the writer needs to know of each record of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordInfo {
    /// Length of the encoded record, header included.
    pub len: u32,
    /// Event time, for the segment's newest event time.
    pub ts: u64,
}

/// Encoded records with consecutive offsets.
#[derive(Debug, Default)]
pub struct Batch {
    pub bytes: Vec<u8>,
    pub records: Vec<RecordInfo>,
    pub first_offset: u64,
}

/// Identifies a batch: appenders wait for their ticket to become durable.
pub type Ticket = u64;

/// Writes and fsyncs a batch; called by the leader without the lock held.
pub type Flush<'a> = &'a dyn Fn(&Batch) -> Result<(), LogError>;

/// The group commit state of one partition.
pub struct Group {
    partition: u32,
    max_batch_bytes: usize,
    state: Mutex<State>,
    /// Signalled when a leader finishes.
    done: Condvar,
}

struct State {
    pending: Batch,
    /// The previous batch's buffers, kept for reuse.
    spare: Batch,
    /// The offset the next enqueued record gets.
    next_offset: u64,
    /// The ticket of the pending batch.
    open: Ticket,
    /// The last durable ticket.
    durable: Ticket,
    leading: bool,
    failed: Option<String>,
}

impl Group {
    /// `next_offset` is the partition's end offset.
    pub fn new(partition: u32, next_offset: u64, max_batch_bytes: usize) -> Group {
        let state =
            State { pending: Batch::default(), spare: Batch::default(), next_offset, open: 1, durable: 0, leading: false, failed: None };
        Group { partition, max_batch_bytes, state: Mutex::new(state), done: Condvar::new() }
    }

    /// Adds records (encoded back to back in `bytes`) to the pending batch in
    /// order, pushing their offsets to `offsets`. Returns the ticket to wait
    /// for. Records that do not fit go into a later batch, after this one is
    /// flushed (by the caller, as leader, or by the current leader).
    pub fn enqueue(&self, bytes: &[u8], records: &[RecordInfo], offsets: &mut Vec<u64>, flush: Flush<'_>) -> Result<Ticket, LogError> {
        let mut st = lock(&self.state);
        let (mut next, mut at) = (0, 0);
        let mut ticket = 0;
        loop {
            self.check(&st)?;
            let taken = self.fitting(&st.pending, &records[next..]);
            if taken > 0 {
                let size: usize = records[next..next + taken].iter().map(|r| r.len as usize).sum();
                st.pending.bytes.extend_from_slice(&bytes[at..at + size]);
                st.pending.records.extend_from_slice(&records[next..next + taken]);
                offsets.extend(st.next_offset..st.next_offset + taken as u64);
                st.next_offset += taken as u64;
                ticket = st.open;
                (next, at) = (next + taken, at + size);
            }
            if next == records.len() {
                debug_assert_eq!(at, bytes.len());
                return Ok(ticket);
            }
            st = if st.leading { self.wait_turn(st) } else { self.lead(st, flush)? };
        }
    }

    /// Returns once the batch of `ticket` is durable, leading batches as
    /// needed.
    pub fn wait(&self, ticket: Ticket, flush: Flush<'_>) -> Result<(), LogError> {
        let mut st = lock(&self.state);
        loop {
            if st.durable >= ticket {
                return Ok(());
            }
            self.check(&st)?;
            st = if st.leading { self.wait_turn(st) } else { self.lead(st, flush)? };
        }
    }

    fn check(&self, st: &State) -> Result<(), LogError> {
        match &st.failed {
            Some(reason) => Err(LogError::Failed { partition: self.partition, reason: reason.clone() }),
            None => Ok(()),
        }
    }

    /// How many of `records` fit into `pending`.
    fn fitting(&self, pending: &Batch, records: &[RecordInfo]) -> usize {
        let mut size = pending.bytes.len();
        let mut n = 0;
        for r in records {
            size += r.len as usize;
            if size > self.max_batch_bytes && !(pending.records.is_empty() && n == 0) {
                break;
            }
            n += 1;
        }
        n
    }

    fn wait_turn<'a>(&'a self, st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.done.wait(st).unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the pending batch, flushes it without the lock, and publishes
    /// the outcome.
    fn lead<'a>(&'a self, mut st: MutexGuard<'a, State>, flush: Flush<'_>) -> Result<MutexGuard<'a, State>, LogError> {
        assert!(!st.leading);
        assert!(!st.pending.records.is_empty(), "a waiter's batch is either durable, being flushed, or pending");
        let spare = mem::take(&mut st.spare);
        let mut batch = mem::replace(&mut st.pending, spare);
        batch.first_offset = st.next_offset - batch.records.len() as u64;
        let id = st.open;
        st.open += 1;
        st.leading = true;
        drop(st);

        let abandoned = Abandoned(self);
        let result = flush(&batch);
        mem::forget(abandoned);

        let mut st = lock(&self.state);
        st.leading = false;
        match &result {
            Ok(()) => {
                assert_eq!(id, st.durable + 1, "batches become durable in order");
                st.durable = id;
            }
            Err(e) => st.failed = Some(e.to_string()),
        }
        batch.bytes.clear();
        batch.records.clear();
        st.spare = batch;
        self.done.notify_all();
        result.map(|()| st)
    }
}

/// Stops the partition if a leader unwinds out of `flush`, so that waiters
/// get an error instead of waiting forever.
struct Abandoned<'a>(&'a Group);

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        let mut st = lock(&self.0.state);
        st.leading = false;
        st.failed = Some("a writer panicked".to_owned());
        self.0.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn records(n: usize, len: u32) -> (Vec<u8>, Vec<RecordInfo>) {
        (vec![7; n * len as usize], vec![RecordInfo { len, ts: 0 }; n])
    }

    /// A flush that remembers every batch and takes a while, like an fsync.
    #[derive(Default)]
    struct Disk {
        batches: Mutex<Vec<(u64, usize, usize)>>,
    }

    impl Disk {
        fn flush(&self, batch: &Batch) -> Result<(), LogError> {
            std::thread::sleep(Duration::from_millis(2));
            lock(&self.batches).push((batch.first_offset, batch.records.len(), batch.bytes.len()));
            Ok(())
        }
    }

    #[test]
    fn single_appender_gets_contiguous_offsets() {
        let group = Group::new(0, 40, 1 << 20);
        let disk = Disk::default();
        let flush = |b: &Batch| disk.flush(b);
        let (bytes, infos) = records(3, 50);
        let mut offsets = Vec::new();
        for _ in 0..2 {
            let t = group.enqueue(&bytes, &infos, &mut offsets, &flush).unwrap();
            group.wait(t, &flush).unwrap();
        }
        assert_eq!(offsets, [40, 41, 42, 43, 44, 45]);
        assert_eq!(*lock(&disk.batches), [(40, 3, 150), (43, 3, 150)]);
    }

    #[test]
    fn concurrent_appenders_share_flushes() {
        const THREADS: usize = 8;
        const APPENDS: usize = 50;
        let group = Arc::new(Group::new(3, 0, 1 << 20));
        let disk = Arc::new(Disk::default());
        let waits = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (group, disk, waits) = (group.clone(), disk.clone(), waits.clone());
                std::thread::spawn(move || {
                    let flush = |b: &Batch| disk.flush(b);
                    let (bytes, infos) = records(2, 40);
                    let mut offsets = Vec::new();
                    for _ in 0..APPENDS {
                        let before = offsets.len();
                        let t = group.enqueue(&bytes, &infos, &mut offsets, &flush).unwrap();
                        group.wait(t, &flush).unwrap();
                        assert_eq!(offsets[before] + 1, offsets[before + 1], "one append's records stay together");
                        waits.fetch_add(1, Ordering::Relaxed);
                    }
                    offsets
                })
            })
            .collect();
        let mut all: Vec<u64> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        all.sort_unstable();
        assert_eq!(all, (0..(THREADS * APPENDS * 2) as u64).collect::<Vec<_>>());
        let batches = lock(&disk.batches);
        assert!(batches.len() < THREADS * APPENDS, "{} flushes for {} appends", batches.len(), THREADS * APPENDS);
        let mut next = 0;
        for &(first, n, _) in batches.iter() {
            assert_eq!(first, next, "batches are flushed in offset order");
            next += n as u64;
        }
    }

    #[test]
    fn batches_are_bounded() {
        let group = Group::new(0, 0, 100);
        let disk = Disk::default();
        let flush = |b: &Batch| disk.flush(b);
        let (bytes, infos) = records(7, 30);
        let mut offsets = Vec::new();
        let t = group.enqueue(&bytes, &infos, &mut offsets, &flush).unwrap();
        group.wait(t, &flush).unwrap();
        assert_eq!(offsets, (0..7).collect::<Vec<_>>());
        assert_eq!(*lock(&disk.batches), [(0, 3, 90), (3, 3, 90), (6, 1, 30)]);
        // A record larger than the bound still goes, alone.
        let (bytes, infos) = records(2, 150);
        let t = group.enqueue(&bytes, &infos, &mut offsets, &flush).unwrap();
        group.wait(t, &flush).unwrap();
        assert_eq!(lock(&disk.batches)[3..], [(7, 1, 150), (8, 1, 150)]);
    }

    #[test]
    fn a_failed_flush_stops_the_partition() {
        let group = Group::new(5, 0, 1 << 20);
        let failing = |_: &Batch| Err(LogError::Options("disk on fire".to_owned()));
        let (bytes, infos) = records(1, 40);
        let mut offsets = Vec::new();
        let t = group.enqueue(&bytes, &infos, &mut offsets, &failing).unwrap();
        assert_eq!(group.wait(t, &failing).unwrap_err().to_string(), "log options: disk on fire");
        let ok = |_: &Batch| Ok(());
        let e = group.enqueue(&bytes, &infos, &mut offsets, &ok).unwrap_err();
        assert_eq!(e.to_string(), "log partition 5: appends stopped after a write failure (log options: disk on fire); reopen the log");
    }

    #[test]
    fn a_panicking_flush_fails_waiters_instead_of_hanging_them() {
        let group = Group::new(0, 0, 1 << 20);
        let (bytes, infos) = records(1, 40);
        let mut offsets = Vec::new();
        let panicking = |_: &Batch| -> Result<(), LogError> { panic!("boom") };
        let t = group.enqueue(&bytes, &infos, &mut offsets, &panicking).unwrap();
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| group.wait(t, &panicking)));
        assert!(unwound.is_err());
        assert!(matches!(group.wait(t, &panicking), Err(LogError::Failed { .. })));
    }
}
