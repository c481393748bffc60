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
    /// Lower bound set while the partition was idle and the frontier moved on.
    floor: EventTime,
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
            floor: from.floor,
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
        Checkpoint { partition: self.partition, offset: self.offset, max_ts: self.max_ts, floor: self.floor, replay_offset, replay_max_ts }
    }

    /// The partition's watermark: max event time − slack, never below the
    /// frontier it was raised to while idle.
    #[inline]
    pub fn watermark(&self) -> EventTime {
        self.max_ts.saturating_sub(self.rules.slack_ms).max(self.floor)
    }

    /// Raises the watermark while the partition is idle: the frontier moved
    /// past it, so later clicks must be judged against that frontier or they
    /// could meet a window that is already final.
    pub fn raise_watermark(&mut self, to: EventTime) {
        self.floor = self.floor.max(to);
    }

    /// Decides one click (SEMANTICS.md, "Per partition, per click").
    #[inline]
    pub fn decide(&mut self, click: &Click) -> Verdict {
        let watermark = self.watermark();
        self.advance(click.ts);
        if self.dedup.is_duplicate(click.request_id, self.max_ts) {
            return Verdict::Duplicate;
        }
        let closes = minute_start(click.ts) + MINUTE_MS + self.rules.allowed_lateness_ms;
        if closes > watermark {
            return Verdict::OnTime;
        }
        let tau = watermark - watermark % self.rules.epoch_ms;
        match self.rules.restate_within_ms {
            Some(within) if minute_start(click.ts) + MINUTE_MS + within > watermark => Verdict::Restate { tau },
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
    fn raised_watermark_judges_later_clicks() {
        let mut p = PartitionState::new(0, RULES);
        p.raise_watermark(200_000);
        assert!(matches!(p.decide(&click(61_000, 1)), Verdict::Restate { tau: 200_000 }));
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

    #[test]
    fn duplicate_is_not_counted_even_if_late() {
        let mut p = PartitionState::new(0, RULES);
        p.decide(&click(1_000, 9));
        assert_eq!(p.decide(&click(1_000, 9)), Verdict::Duplicate);
    }
}
