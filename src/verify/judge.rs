//! Verify step 2: the fate of each click of one partition, in offset order
//! (SEMANTICS.md, "Per partition, per click, in partition order").
//!
//! Every decision depends only on the partition's own click sequence: its
//! largest event time so far (`max_ts`), the watermark derived from it
//! (`max_ts − slack`, nothing else), and the dedup memory of request ids.
//! Which batch restates a too-late click is not decided here: it depends on
//! when the frontier moved, and only the latest version of a window is a
//! function of the log.

use std::collections::HashMap;

use crate::event::{minute_start, Click, EventTime, RequestId, MINUTE_MS};
use crate::job::Job;

use super::VerifyError;

/// The job settings the per-click rules use, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    pub slack_ms: u64,
    pub allowed_lateness_ms: u64,
    pub dedup_horizon_ms: u64,
    /// `Some(within)` for the restate policy, `None` for hold.
    pub restate_within_ms: Option<u64>,
}

impl Rules {
    /// The rules of `job`; refuses settings that cannot be recounted.
    pub fn of(job: &Job) -> Result<Rules, VerifyError> {
        if let Some(&bad) = job.windows_ms.iter().find(|&&w| w == 0 || w % MINUTE_MS != 0) {
            return Err(VerifyError::Job { key: "windows.sizes", reason: format!("{bad} ms is not a positive multiple of 1m") });
        }
        let restate_within_ms = job.late.restate_within_ms();
        Ok(Rules {
            slack_ms: job.slack_ms,
            allowed_lateness_ms: job.allowed_lateness_ms,
            dedup_horizon_ms: job.dedup_horizon_ms,
            restate_within_ms,
        })
    }
}

/// What happens to one click.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fate {
    /// A retry of a request id still in the dedup memory: dropped.
    Duplicate,
    /// Counted in its windows.
    OnTime,
    /// Too late for its 1m window, counted by restatement (and in the
    /// ledger).
    Restating,
    /// Too late to restate: ledger only, never counted.
    Held,
}

/// The state of one partition while its clicks are judged.
#[derive(Clone, Debug)]
pub struct PartitionJudge {
    rules: Rules,
    /// Largest event time seen so far (0 before the first click).
    max_ts: EventTime,
    /// Request id → the partition's `max_ts` when the id was last seen,
    /// duplicate or not. Progress rather than the click's own time, so that
    /// a retry of a very late click is still caught.
    memory: HashMap<RequestId, EventTime>,
}

impl PartitionJudge {
    pub fn new(rules: Rules) -> PartitionJudge {
        PartitionJudge { rules, max_ts: 0, memory: HashMap::new() }
    }

    /// The partition's watermark before its next click: a too-late click
    /// is restated (or held) in the batch of this watermark rounded down to
    /// the epoch, and appears in committed rows and the ledger once the
    /// committed epoch is past that batch.
    pub fn watermark(&self) -> EventTime {
        self.max_ts.saturating_sub(self.rules.slack_ms)
    }

    /// Judges the next click of the partition and updates the state.
    pub fn judge(&mut self, click: &Click) -> Fate {
        let watermark = self.watermark();
        self.max_ts = self.max_ts.max(click.ts);
        let oldest = self.max_ts.saturating_sub(self.rules.dedup_horizon_ms);
        // Every sighting refreshes the memory: the horizon slides along a
        // chain of retries.
        let remembered = self.memory.insert(click.request_id, self.max_ts);
        if remembered.is_some_and(|remembered| remembered >= oldest) {
            return Fate::Duplicate;
        }
        self.lateness(click.ts, watermark)
    }

    /// On time, restating or held, for a click that is not a duplicate.
    fn lateness(&self, ts: EventTime, watermark: EventTime) -> Fate {
        let end_1m = minute_start(ts).saturating_add(MINUTE_MS);
        if end_1m.saturating_add(self.rules.allowed_lateness_ms) > watermark {
            return Fate::OnTime;
        }
        match self.rules.restate_within_ms {
            Some(within) if end_1m.saturating_add(within) > watermark => Fate::Restating,
            _ => Fate::Held,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules { slack_ms: 5_000, allowed_lateness_ms: 10_000, dedup_horizon_ms: 60_000, restate_within_ms: Some(120_000) };

    fn click(ts: u64, request_id: u128) -> Click {
        Click { ad: "a".into(), ts, user: 1, request_id }
    }

    fn fates(rules: Rules, clicks: &[(u64, u128)]) -> Vec<Fate> {
        let mut judge = PartitionJudge::new(rules);
        clicks.iter().map(|&(ts, id)| judge.judge(&click(ts, id))).collect()
    }

    #[test]
    fn watermark_is_taken_before_the_click() {
        // A click that jumps far ahead is on time although it moves max_ts.
        assert_eq!(fates(RULES, &[(10_000_000, 1)]), vec![Fate::OnTime]);
    }

    #[test]
    fn too_late_clicks_restate_within_the_restate_horizon_then_are_held() {
        // After 200_500 the watermark is 195_500: the 1m window [0, 60s)
        // closed at 70s; 60s + 120s restate horizon = 180s <= 195.5s: held.
        // [60s, 120s) closed at 130s, restatable until 240s.
        let got = fates(RULES, &[(200_500, 1), (30_000, 2), (90_000, 3), (190_000, 4)]);
        assert_eq!(got, vec![Fate::OnTime, Fate::Held, Fate::Restating, Fate::OnTime]);
        let hold = Rules { restate_within_ms: None, ..RULES };
        assert_eq!(fates(hold, &[(200_500, 1), (90_000, 3)]), vec![Fate::OnTime, Fate::Held]);
    }

    #[test]
    fn the_watermark_is_the_partitions_progress_minus_slack_alone() {
        // max_ts 75s, watermark 70s = 60s + 10s: a click of [0, 60s) is too
        // late; one millisecond less progress and it would be on time.
        assert_eq!(fates(RULES, &[(75_000, 1), (59_999, 2)])[1], Fate::Restating);
        assert_eq!(fates(RULES, &[(74_999, 1), (59_999, 2)])[1], Fate::OnTime);
    }

    #[test]
    fn dedup_remembers_progress_not_the_clicks_time() {
        // The late click 2 is remembered at max_ts 200s, so its retry at
        // max_ts 250s is still within the 60 s horizon.
        let got = fates(RULES, &[(200_000, 1), (90_000, 2), (250_000, 3), (90_000, 2)]);
        assert_eq!(got[3], Fate::Duplicate);
    }

    #[test]
    fn dedup_forgets_beyond_the_horizon_and_the_boundary_is_inclusive() {
        let got = fates(RULES, &[(1_000, 1), (61_000, 2), (1_000, 1)]);
        assert_eq!(got[2], Fate::Duplicate, "remembered at 1s, oldest is 1s");
        let got = fates(RULES, &[(1_000, 1), (61_001, 2), (1_000, 1)]);
        assert_ne!(got[2], Fate::Duplicate, "remembered at 1s, oldest is 1.001s");
    }

    #[test]
    fn every_sighting_refreshes_the_memory_so_the_horizon_slides() {
        // Horizon 60 s, one partition, X = 1 and Y = 2; every click moves
        // max_ts to its own time, so `oldest = ts - 60 000`.
        let got = fates(RULES, &[(0, 1), (2_000, 2), (50_000, 1), (61_000, 1), (115_000, 1)]);
        // X@0: first sighting, on time; X remembered at 0.
        assert_eq!(got[0], Fate::OnTime);
        // Y@2000: first sighting, on time.
        assert_eq!(got[1], Fate::OnTime);
        // X@50000: 0 >= 0 (oldest saturates): duplicate; X remembered at 50 000.
        assert_eq!(got[2], Fate::Duplicate);
        // X@61000: 50 000 >= 1 000: duplicate, because X@50000 refreshed it
        // (remembered at 0 only, it would have counted again); X at 61 000.
        assert_eq!(got[3], Fate::Duplicate);
        // X@115000: 61 000 >= 55 000: still a duplicate; X at 115 000.
        assert_eq!(got[4], Fate::Duplicate);
        // The chain breaks only when a sighting comes more than one horizon
        // after the one before it: X@121001 after X@61000 counts again.
        let got = fates(RULES, &[(0, 1), (2_000, 2), (50_000, 1), (61_000, 1), (121_001, 1)]);
        assert_eq!(got[4], Fate::OnTime, "61 000 < 121 001 - 60 000 = 61 001");
    }

    #[test]
    fn extreme_timestamps_do_not_panic() {
        let got = fates(RULES, &[(u64::MAX, 1), (0, 2), (u64::MAX, 1)]);
        assert_eq!(got[0], Fate::OnTime);
        assert_eq!(got[2], Fate::Duplicate);
    }
}
