//! What HTTP ingest did with the clicks it was sent: received, accepted,
//! written to the log, rejected by field; and the log's refusals.

use std::borrow::Cow;

use prometheus::{IntCounter, IntCounterVec, Opts};

use super::{register, MetricError, Registry};

/// The `field` label of a click rejected for a field no click has.
pub const UNKNOWN_FIELD: &str = "unknown_field";

/// Counters since start.
#[derive(Debug)]
pub struct IngestStats {
    requests: IntCounter,
    received: IntCounter,
    accepted: IntCounter,
    written: IntCounter,
    rejected: IntCounterVec,
    log_errors: IntCounter,
    /// Where acknowledged positions are noted, when the job runs in this
    /// process too.
    freshness: super::FreshnessHook,
}

impl Default for IngestStats {
    fn default() -> IngestStats {
        let rejected = IntCounterVec::new(
            Opts::new(
                "tally_clicks_rejected_total",
                "Clicks rejected by validation, by the field that failed (body: the request as a whole)",
            ),
            &["field"],
        )
        .unwrap_or_else(|e| unreachable!("a valid metric: {e}"));
        IngestStats {
            requests: counter("tally_ingest_requests_total", "Requests to the click routes, answered or refused"),
            received: counter("tally_clicks_received_total", "Clicks in request bodies that decoded, valid or not"),
            accepted: counter(
                "tally_clicks_accepted_total",
                "Clicks acknowledged with 202: written to the log, or found there by the pre-filter",
            ),
            written: counter("tally_clicks_written_total", "Clicks written to the log"),
            rejected,
            log_errors: counter("tally_log_errors_total", "Appends the log refused or failed (the request answered 503)"),
            freshness: super::FreshnessHook::default(),
        }
    }
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("a valid metric: {e}"))
}

impl IngestStats {
    /// A request to a click route.
    pub fn request(&self) {
        self.requests.inc();
    }

    /// A body decoded into `valid` clicks and the rejected ones, by field.
    pub fn decoded<'a>(&self, valid: usize, rejected: impl IntoIterator<Item = &'a Cow<'static, str>>) {
        let mut bad = 0;
        for field in rejected {
            let label = match field {
                Cow::Borrowed(name) => name,
                Cow::Owned(_) => UNKNOWN_FIELD,
            };
            self.rejected.with_label_values(&[label]).inc();
            bad += 1;
        }
        self.received.inc_by(valid as u64 + bad);
    }

    /// Rejected clicks, whatever the field: the sum of the field counters.
    fn rejected_total(&self) -> u64 {
        use prometheus::core::Collector;
        let families = self.rejected.collect();
        families.iter().flat_map(|family| family.get_metric()).map(|metric| metric.get_counter().get_value() as u64).sum()
    }

    /// `accepted` clicks acknowledged, `written` of them written to the log.
    pub fn acknowledged(&self, accepted: usize, written: usize) {
        self.accepted.inc_by(accepted as u64);
        self.written.inc_by(written as u64);
    }

    /// Notes acknowledged positions in `freshness` from now on.
    pub fn track_freshness(&self, freshness: std::sync::Arc<super::Freshness>) {
        self.freshness.set(freshness);
    }

    /// Clicks written at these (partition, offset) positions were
    /// acknowledged at `now_ms`.
    pub fn written_at(&self, positions: &[(u32, u64)], now_ms: u64) {
        if let Some(freshness) = self.freshness.get() {
            freshness.acknowledged(positions, now_ms);
        }
    }

    /// The log refused an append or failed.
    pub fn log_error(&self) {
        self.log_errors.inc();
    }

    pub fn read(&self) -> IngestSnapshot {
        IngestSnapshot {
            requests: self.requests.get(),
            accepted: self.accepted.get(),
            rejected: self.rejected_total(),
            written: self.written.get(),
        }
    }

    /// Adds these figures to `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), MetricError> {
        register(registry, &self.requests)?;
        register(registry, &self.received)?;
        register(registry, &self.accepted)?;
        register(registry, &self.written)?;
        register(registry, &self.rejected)?;
        register(registry, &self.log_errors)
    }
}

/// A plain copy of [`IngestStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestSnapshot {
    pub requests: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub written: u64,
}
