//! Per-partition time keeping: watermark, dedup and lateness, click by click.
//!
//! Every decision about a click is taken here, against its own partition's
//! state only, in log order. Nothing depends on other partitions, on workers
//! or on the wall clock, so replaying the same log decides every click the
//! same way — the base of exactly-once (see SEMANTICS.md).

use crate::event::{minute_start, Click, EventTime, MINUTE_MS};

use super::dedup::Dedup;

/// Time settings of a job that the per-click rules need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRules {
    pub epoch_ms: u64,
    pub slack_ms: u64,
    pub allowed_lateness_ms: u64,
    pub dedup_horizon_ms: u64,
    /// `None`: every too-late click is held, none restates.
    pub restate_within_ms: Option<u64>,
}

/// What happens to one click.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Same request id seen within the horizon: not counted.
    Duplicate,
    /// Counted in its window.
    OnTime,
    /// Beyond allowed lateness: restates its (final) window in batch `tau`.
    Restate { tau: EventTime },
    /// Beyond the restatement horizon: recorded in the late ledger only.
    Held { tau: EventTime },
}

/// Where a partition stands, as an epoch commit stores it: enough to resume
/// reading and to rebuild the dedup memory by re-reading, never snapshotting it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub partition: u32,
    /// Next offset to read.
    pub offset: u64,
    pub max_ts: EventTime,
    /// Always 0: kept so stored checkpoints keep their layout (partitions
    /// once had an idle floor; a decision never depends on the frontier now).
    pub floor: EventTime,
    /// Re-reading from here (without counting) rebuilds every remembered id
    /// that can still match; `replay_max_ts` is the progress just before it.
    pub replay_offset: u64,
    pub replay_max_ts: EventTime,
}

/// State of one partition.
pub struct PartitionState {
    pub partition: u32,
    rules: TimeRules,
    max_ts: EventTime,
    dedup: Dedup,
    /// Next offset to read.
    offset: u64,
    /// `(offset, progress before it)` each time progress enters a new
    /// second; the oldest one still needed is the dedup replay point.
    milestones: std::collections::VecDeque<(u64, EventTime)>,
}

impl PartitionState {
    pub fn new(partition: u32, rules: TimeRules) -> Self {
        Self::resume(partition, rules, &Checkpoint { partition, offset: 0, max_ts: 0, floor: 0, replay_offset: 0, replay_max_ts: 0 })
    }

    /// A partition about to re-read from `from.replay_offset`: call
    /// [`PartitionState::replay`] for every click up to `from.offset`.
    pub fn resume(partition: u32, rules: TimeRules, from: &Checkpoint) -> Self {
        PartitionState {
            partition,
            rules,
            max_ts: from.replay_max_ts,
            dedup: Dedup::new(rules.dedup_horizon_ms),
            offset: from.replay_offset,
            milestones: [(from.replay_offset, from.replay_max_ts)].into(),
        }
    }

    /// Re-reads a click that an earlier run already counted: it only
    /// rebuilds the dedup memory and the progress.
    #[inline]
    pub fn replay(&mut self, click: &Click) {
        self.advance(click.ts);
        self.dedup.is_duplicate(click.request_id, self.max_ts);
    }

    /// Next offset to read.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Moves past offsets that hold no click (a log with markers or
    /// skipped records): the next click read sits at `offset`.
    pub fn skip_to(&mut self, offset: u64) {
        debug_assert!(offset >= self.offset, "partition {}: offsets move forward", self.partition);
        self.offset = self.offset.max(offset);
    }

    #[inline]
    fn advance(&mut self, ts: EventTime) {
        if ts / 1_000 > self.max_ts / 1_000 {
            self.milestones.push_back((self.offset, self.max_ts));
        }
        self.max_ts = self.max_ts.max(ts);
        self.offset += 1;
    }

    /// Where the partition stands now.
    pub fn checkpoint(&mut self) -> Checkpoint {
        let oldest = self.max_ts.saturating_sub(self.rules.dedup_horizon_ms);
        // Every id read before a milestone whose progress was below `oldest`
        // can no longer match: keep the last such milestone, drop the rest.
        while self.milestones.len() > 1 && self.milestones[1].1 < oldest {
            self.milestones.pop_front();
        }
        let (replay_offset, replay_max_ts) = self.milestones[0];
        Checkpoint { partition: self.partition, offset: self.offset, max_ts: self.max_ts, floor: 0, replay_offset, replay_max_ts }
    }

    /// The partition's watermark: its max event time − slack. Nothing else
    /// moves it, not the frontier and not the clock: a click that is on time
    /// here but whose window the frontier already passed restates it.
    #[inline]
    pub fn watermark(&self) -> EventTime {
        self.max_ts.saturating_sub(self.rules.slack_ms)
    }

    /// Decides one click (SEMANTICS.md, "Per partition, per click").
    #[inline]
    pub fn decide(&mut self, click: &Click) -> Verdict {
        let watermark = self.watermark();
        self.advance(click.ts);
        if self.dedup.is_duplicate(click.request_id, self.max_ts) {
            return Verdict::Duplicate;
        }
        // Timestamps are bounded (MAX_EVENT_TIME_MS) where clicks enter, and
        // horizons by the job file; saturating keeps a bug from wrapping.
        let end = minute_start(click.ts).saturating_add(MINUTE_MS);
        if end.saturating_add(self.rules.allowed_lateness_ms) > watermark {
            return Verdict::OnTime;
        }
        let tau = watermark - watermark % self.rules.epoch_ms;
        match self.rules.restate_within_ms {
            Some(within) if end.saturating_add(within) > watermark => Verdict::Restate { tau },
            _ => Verdict::Held { tau },
        }
    }

    /// Starts loading what deciding `click` will look at (see
    /// [`Dedup::prefetch`]); call it a few clicks ahead.
    #[inline]
    pub fn prefetch(&self, click: &Click) {
        self.dedup.prefetch(click.request_id);
    }

    /// Number of request ids in the dedup memory.
    pub fn remembered(&self) -> usize {
        self.dedup.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: TimeRules = TimeRules {
        epoch_ms: 1_000,
        slack_ms: 5_000,
        allowed_lateness_ms: 10_000,
        dedup_horizon_ms: 60_000,
        restate_within_ms: Some(3_600_000),
    };

    fn click(ts: u64, id: u128) -> Click {
        Click { ad: "a".into(), ts, user: 1, request_id: id }
    }

    #[test]
    fn watermark_is_max_minus_slack() {
        let mut p = PartitionState::new(0, RULES);
        p.decide(&click(100_000, 1));
        p.decide(&click(90_000, 2));
        assert_eq!(p.watermark(), 95_000);
    }

    #[test]
    fn too_late_once_window_end_plus_lateness_reached() {
        let mut p = PartitionState::new(0, RULES);
        p.decide(&click(135_000, 1)); // watermark 130_000 = 60_000 + 60_000 + 10_000
        assert_eq!(p.decide(&click(59_999, 2)), Verdict::Restate { tau: 130_000 });
        assert_eq!(p.decide(&click(60_000, 3)), Verdict::Restate { tau: 130_000 });
        assert_eq!(p.decide(&click(120_000, 4)), Verdict::OnTime);
    }

    #[test]
    fn beyond_restatement_horizon_is_held() {
        let mut p = PartitionState::new(0, RULES);
        p.decide(&click(10_000_000, 1));
        assert!(matches!(p.decide(&click(1_000, 2)), Verdict::Held { .. }));
    }

    #[test]
    fn resuming_from_a_checkpoint_decides_like_the_original() {
        let clicks: Vec<Click> = (0..5_000u64).map(|i| click(i * 97 % 200_000 + i * 50, u128::from(i % 1_700))).collect();
        let mut original = PartitionState::new(0, RULES);
        let (before, after) = clicks.split_at(3_000);
        before.iter().for_each(|c| {
            original.decide(c);
        });
        let checkpoint = original.checkpoint();
        assert!(checkpoint.replay_offset > 0, "old ids need no replay");
        let mut resumed = PartitionState::resume(0, RULES, &checkpoint);
        clicks[checkpoint.replay_offset as usize..3_000].iter().for_each(|c| resumed.replay(c));
        assert_eq!((resumed.offset(), resumed.max_ts), (checkpoint.offset, checkpoint.max_ts));
        for c in after {
            assert_eq!(resumed.decide(c), original.decide(c));
        }
    }

    /// The decisions after resuming from a checkpoint taken at `at`, and
    /// those of the uninterrupted partition from there on.
    fn resumed_and_original(clicks: &[Click], at: usize) -> (Vec<Verdict>, Vec<Verdict>) {
        let mut original = PartitionState::new(0, RULES);
        clicks[..at].iter().for_each(|c| {
            original.decide(c);
        });
        let checkpoint = original.checkpoint();
        let mut resumed = PartitionState::resume(0, RULES, &checkpoint);
        clicks[checkpoint.replay_offset as usize..at].iter().for_each(|c| resumed.replay(c));
        assert_eq!((resumed.offset(), resumed.max_ts), (checkpoint.offset, checkpoint.max_ts));
        let after = &clicks[at..];
        (after.iter().map(|c| resumed.decide(c)).collect(), after.iter().map(|c| original.decide(c)).collect())
    }

    #[test]
    fn a_duplicate_before_the_replay_point_does_not_change_later_decisions() {
        // X@0, Y@2000, X@50000 (duplicate), then progress to 121 s so that
        // the replay point passes X@0; X@61000 and X@115000 decide the same
        // after a restart at every position.
        let clicks: Vec<Click> =
            [(0, 1), (2_000, 2), (50_000, 1), (61_000, 1), (70_000, 3), (121_000, 4), (115_000, 1), (122_000, 5), (181_500, 1)]
                .iter()
                .map(|&(ts, id)| click(ts, id))
                .collect();
        for at in 0..=clicks.len() {
            let (resumed, original) = resumed_and_original(&clicks, at);
            assert_eq!(resumed, original, "checkpoint after {at} clicks");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// A resumed partition decides exactly as an uninterrupted one, for
        /// every checkpoint position, with many retries of few ids.
        #[test]
        fn resuming_anywhere_decides_like_the_original(
            steps in proptest::collection::vec((0u64..40_000, 0u64..2, 0u128..40), 1..400),
        ) {
            let mut ts = 0u64;
            let clicks: Vec<Click> = steps.iter().map(|&(jump, back, id)| {
                ts += jump / 4;
                click(if back == 1 { ts.saturating_sub(jump * 3) } else { ts }, id)
            }).collect();
            for at in 0..=clicks.len() {
                let (resumed, original) = resumed_and_original(&clicks, at);
                proptest::prop_assert_eq!(resumed, original, "checkpoint after {} clicks", at);
            }
        }
    }

    #[test]
    fn duplicate_is_not_counted_even_if_late() {
        let mut p = PartitionState::new(0, RULES);
        p.decide(&click(1_000, 9));
        assert_eq!(p.decide(&click(1_000, 9)), Verdict::Duplicate);
    }
}
