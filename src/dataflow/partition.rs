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

/// State of one partition.
pub struct PartitionState {
    pub partition: u32,
    rules: TimeRules,
    max_ts: EventTime,
    /// Lower bound set while the partition was idle and the frontier moved on.
    floor: EventTime,
    dedup: Dedup,
}

impl PartitionState {
    pub fn new(partition: u32, rules: TimeRules) -> Self {
        PartitionState { partition, rules, max_ts: 0, floor: 0, dedup: Dedup::new(rules.dedup_horizon_ms) }
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
        self.max_ts = self.max_ts.max(click.ts);
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
    fn duplicate_is_not_counted_even_if_late() {
        let mut p = PartitionState::new(0, RULES);
        p.decide(&click(1_000, 9));
        assert_eq!(p.decide(&click(1_000, 9)), Verdict::Duplicate);
    }
}
