//! One place for what tally reports about itself: the figures ingest, the
//! job and the query API write, read back by `/v1/stats` and the dashboard,
//! and exposed to Prometheus on `GET /metrics` in its text format (through
//! the `prometheus` crate, with conventional names and units:
//! `tally_…_total`, `_seconds`).
//!
//! - [`IngestStats`]: clicks received, accepted, written, rejected by
//!   field; log errors.
//! - [`SourceStats`]: what the job's sources decided (on time, duplicate,
//!   restating, held) and the dedup memory.
//! - [`CommitStats`]: epoch commits (duration, failures, rows by status),
//!   the frontier's delay, per partition committed and end offsets, lag,
//!   watermark.
//! - [`HttpStats`]: HTTP requests by route and status.
//! - The process's CPU, memory and file descriptors (`process_…`).
//!
//! Beside the figures, what a process tells its operator as it goes: its
//! [`log`] of events on stderr (start-up, commits, warnings, errors) and the
//! [`progress`] of a long command.
//!
//! Every figure is a report, never a result: exactly-once is checked by an
//! independent recount of the log, never by these numbers. This module
//! imports nothing above it: every stage writes to it, the query side reads
//! it.

mod commit;
mod freshness;
mod http;
mod ingest;
mod job;
pub mod log;
pub mod progress;

use std::sync::Arc;

pub use commit::{CommitStats, EndOffsets, PartitionPosition};
pub use freshness::{Freshness, FreshnessHook, MAX_NOTES_PER_PARTITION};
pub use http::{metrics_route, track, tracked, HttpStats};
pub use ingest::{IngestSnapshot, IngestStats, UNKNOWN_FIELD};
pub use job::{SourceStats, StatsSnapshot, MAX_UNKNOWN_ADS_KEPT, VERDICTS};
pub use prometheus::Registry;

/// A metric that could not be registered (two with one name).
pub type MetricError = prometheus::Error;

/// The media type of [`Telemetry::render`].
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn register(registry: &Registry, metric: &(impl prometheus::core::Collector + Clone + 'static)) -> Result<(), MetricError> {
    registry.register(Box::new(metric.clone()))
}

/// What one process reports: the parts that run in it, in one registry.
pub struct Telemetry {
    registry: Registry,
    pub http: Arc<HttpStats>,
    /// HTTP ingest, when it runs in this process.
    pub ingest: Option<Arc<IngestStats>>,
    /// The job's sources, when the job runs in this process.
    pub job: Option<Arc<SourceStats>>,
    /// The job's commits, when the job runs in this process.
    pub commits: Option<Arc<CommitStats>>,
}

impl Telemetry {
    /// A registry with the process's own figures and HTTP requests.
    pub fn new() -> Telemetry {
        let registry = Registry::new();
        // The process collector reads /proc: it exists on Linux only.
        let _ = registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
        let http = Arc::new(HttpStats::default());
        http.register(&registry).unwrap_or_else(|e| unreachable!("the first metrics of a registry: {e}"));
        Telemetry { registry, http, ingest: None, job: None, commits: None }
    }

    /// With HTTP ingest's figures.
    pub fn with_ingest(mut self, ingest: Arc<IngestStats>) -> Result<Telemetry, MetricError> {
        ingest.register(&self.registry)?;
        self.ingest = Some(ingest);
        Ok(self)
    }

    /// With the freshness of acknowledged clicks: ingest and the job both
    /// run in this process, and `freshness` is the one both report to.
    pub fn with_freshness(self, freshness: &Freshness) -> Result<Telemetry, MetricError> {
        freshness.register(&self.registry)?;
        Ok(self)
    }

    /// With the job's figures.
    pub fn with_job(mut self, job: Arc<SourceStats>, commits: Arc<CommitStats>) -> Result<Telemetry, MetricError> {
        job.register(&self.registry)?;
        commits.register(&self.registry)?;
        self.job = Some(job);
        self.commits = Some(commits);
        Ok(self)
    }

    /// Every figure, in Prometheus's text format.
    pub fn render(&self) -> String {
        if let Some(commits) = &self.commits {
            commits.refresh();
        }
        prometheus::TextEncoder::new().encode_to_string(&self.registry.gather()).unwrap_or_else(|e| format!("# {e}\n"))
    }
}

impl Default for Telemetry {
    fn default() -> Telemetry {
        Telemetry::new()
    }
}

/// `GET /metrics` of `telemetry` served on `addr` by a thread of its own
/// (for `tally run`, which serves nothing else), until the process ends.
/// Returns the address it listens on.
pub fn serve_metrics(addr: std::net::SocketAddr, telemetry: Arc<Telemetry>) -> Result<std::net::SocketAddr, String> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| format!("--metrics-addr: cannot listen on {addr}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| format!("--metrics-addr: {e}"))?;
    let bound = listener.local_addr().map_err(|e| format!("--metrics-addr: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("metrics runtime: {e}"))?;
    std::thread::Builder::new()
        .name("metrics".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                let app = tracked(metrics_route(Arc::clone(&telemetry)), &telemetry.http);
                let limits = crate::http::Limits { max_connections: METRICS_MAX_CONNECTIONS, ..Default::default() };
                let _ = crate::http::serve(listener, app, None, limits, crate::http::Hosts::Any, std::future::pending()).await;
            })
        })
        .map_err(|e| format!("metrics thread: {e}"))?;
    Ok(bound)
}

/// Connections the metrics server of `tally run` serves at once.
const METRICS_MAX_CONNECTIONS: usize = 16;
