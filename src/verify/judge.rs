//! Recount step 1: the fate of each click of one partition, in offset order
//! (SEMANTICS.md, "Per partition, per click, in partition order").
//!
//! Every decision depends only on the partition's own click sequence: its
//! largest event time so far (`max_ts`), the watermark derived from it, and
//! the dedup memory of request ids.

use std::collections::HashMap;

use crate::event::{minute_start, Click, EventTime, RequestId, MINUTE_MS};
use crate::job::{Job, LatePolicy};

use super::VerifyError;

/// The job settings the per-click rules use, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    pub slack_ms: u64,
    pub allowed_lateness_ms: u64,
    pub dedup_horizon_ms: u64,
    /// Batches are epochs: a restating click's batch is its watermark
    /// rounded down to this. Positive.
    pub epoch_ms: u64,
    /// `Some(within)` for the restate policy, `None` for hold.
    pub restate_within_ms: Option<u64>,
}

impl Rules {
    /// The rules of `job`; refuses settings that cannot be recounted.
    pub fn of(job: &Job) -> Result<Rules, VerifyError> {
        if job.epoch_ms == 0 {
            return Err(VerifyError::Job { key: "time.epoch", reason: "is 0".into() });
        }
        if let Some(&bad) = job.windows_ms.iter().find(|&&w| w == 0 || w % MINUTE_MS != 0) {
            return Err(VerifyError::Job { key: "windows.sizes", reason: format!("{bad} ms is not a positive multiple of 1m") });
        }
        let restate_within_ms = match job.late {
            LatePolicy::Restate { within_ms } => Some(within_ms),
            LatePolicy::Hold => None,
        };
        Ok(Rules {
            slack_ms: job.slack_ms,
            allowed_lateness_ms: job.allowed_lateness_ms,
            dedup_horizon_ms: job.dedup_horizon_ms,
            epoch_ms: job.epoch_ms,
            restate_within_ms,
        })
    }
}

/// What happens to one click.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fate {
    /// A retry of a request id still in the dedup memory: dropped.
    Duplicate,
    /// Counted in its windows as they close.
    OnTime,
    /// Too late for its 1m window, counted by restatement in batch `tau`.
    Restating { tau: EventTime },
    /// Too late to restate: ledger only, never counted.
    Held,
}

/// The state of one partition while its clicks are judged.
#[derive(Clone, Debug)]
pub struct PartitionJudge {
    rules: Rules,
    /// Largest event time seen so far (0 before the first click).
    max_ts: EventTime,
    /// The idle floor of the watermark. Always 0 here: a live run raises it
    /// to the frontier while the partition is idle, but a bounded replay
    /// from offset 0 never raises it.
    floor: EventTime,
    /// Request id → the partition's `max_ts` when the id was remembered.
    /// Progress rather than the click's own time, so that a retry of a very
    /// late click is still caught.
    memory: HashMap<RequestId, EventTime>,
}

impl PartitionJudge {
    pub fn new(rules: Rules) -> PartitionJudge {
        PartitionJudge { rules, max_ts: 0, floor: 0, memory: HashMap::new() }
    }

    /// Judges the next click of the partition and updates the state.
    pub fn judge(&mut self, click: &Click) -> Fate {
        let watermark = self.watermark();
        self.max_ts = self.max_ts.max(click.ts);
        let oldest = self.max_ts.saturating_sub(self.rules.dedup_horizon_ms);
        if self.memory.get(&click.request_id).is_some_and(|&remembered| remembered >= oldest) {
            return Fate::Duplicate;
        }
        self.memory.insert(click.request_id, self.max_ts);
        self.lateness(click.ts, watermark)
    }

    /// The partition watermark before the next click.
    fn watermark(&self) -> EventTime {
        self.max_ts.saturating_sub(self.rules.slack_ms).max(self.floor)
    }

    /// On time, restating or held, for a click that is not a duplicate.
    fn lateness(&self, ts: EventTime, watermark: EventTime) -> Fate {
        let end_1m = minute_start(ts).saturating_add(MINUTE_MS);
        if end_1m.saturating_add(self.rules.allowed_lateness_ms) > watermark {
            return Fate::OnTime;
        }
        match self.rules.restate_within_ms {
            Some(within) if end_1m.saturating_add(within) > watermark => {
                Fate::Restating { tau: watermark - watermark % self.rules.epoch_ms }
            }
            _ => Fate::Held,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules =
        Rules { slack_ms: 5_000, allowed_lateness_ms: 10_000, dedup_horizon_ms: 60_000, epoch_ms: 1_000, restate_within_ms: Some(120_000) };

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
    fn too_late_clicks_restate_in_the_epoch_of_the_watermark_then_are_held() {
        // After 200_500 the watermark is 195_500: the 1m window [0, 60s)
        // closed at 70s; 60s + 120s restate horizon = 180s <= 195.5s: held.
        // [60s, 120s) closed at 130s, restatable until 240s: batch 195s.
        let got = fates(RULES, &[(200_500, 1), (30_000, 2), (90_000, 3), (190_000, 4)]);
        assert_eq!(got, vec![Fate::OnTime, Fate::Held, Fate::Restating { tau: 195_000 }, Fate::OnTime]);
        let hold = Rules { restate_within_ms: None, ..RULES };
        assert_eq!(fates(hold, &[(200_500, 1), (90_000, 3)]), vec![Fate::OnTime, Fate::Held]);
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
    fn a_duplicate_does_not_refresh_the_memory() {
        // Remembered at 1s; the retry at max_ts 50s is dropped and does not
        // re-remember, so at max_ts 61.5s the id is forgotten.
        let got = fates(RULES, &[(1_000, 1), (50_000, 2), (1_000, 1), (61_500, 3), (1_000, 1)]);
        assert_eq!(got[2], Fate::Duplicate);
        assert_ne!(got[4], Fate::Duplicate);
    }

    #[test]
    fn extreme_timestamps_do_not_panic() {
        let got = fates(RULES, &[(u64::MAX, 1), (0, 2), (u64::MAX, 1)]);
        assert_eq!(got[0], Fate::OnTime);
        assert_eq!(got[2], Fate::Duplicate);
    }
}
