//! HTTP requests by route and status: `tally_http_requests_total` and
//! `tally_http_request_duration_seconds`, counted by [`track`], a
//! middleware every router of tally goes through.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

use super::{register, MetricError, Registry};

/// The `route` label of a request no route matched: its path is the
/// caller's choice, so it is never a label.
pub const UNMATCHED: &str = "unmatched";

/// Bounds of the request-duration buckets, seconds.
const DURATION_BUCKETS_S: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// Requests by route and status.
#[derive(Debug)]
pub struct HttpStats {
    requests: IntCounterVec,
    duration: HistogramVec,
    /// Reads of the query API the store failed (answered 503).
    store_read_errors: prometheus::IntCounter,
}

impl Default for HttpStats {
    fn default() -> HttpStats {
        let requests = IntCounterVec::new(
            Opts::new("tally_http_requests_total", "HTTP requests answered, by method, route and status"),
            &["method", "route", "status"],
        );
        let duration = HistogramVec::new(
            HistogramOpts::new("tally_http_request_duration_seconds", "Time to answer an HTTP request, by route")
                .buckets(DURATION_BUCKETS_S.to_vec()),
            &["route"],
        );
        let store_read_errors =
            prometheus::IntCounter::new("tally_store_read_errors_total", "Query API reads the store failed (answered 503)");
        match (requests, duration, store_read_errors) {
            (Ok(requests), Ok(duration), Ok(store_read_errors)) => HttpStats { requests, duration, store_read_errors },
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => unreachable!("valid metrics: {e}"),
        }
    }
}

impl HttpStats {
    pub fn register(&self, registry: &Registry) -> Result<(), MetricError> {
        register(registry, &self.requests)?;
        register(registry, &self.duration)?;
        register(registry, &self.store_read_errors)
    }

    /// A query API read the store failed.
    pub fn store_read_failed(&self) {
        self.store_read_errors.inc();
    }

    fn answered(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests.with_label_values(&[method, route, &status.to_string()]).inc();
        self.duration.with_label_values(&[route]).observe(seconds);
    }
}

/// Counts the request under its route's pattern (e.g. `/v1/ads/{id}/clicks`)
/// and the answer's status. Add with `axum::middleware::from_fn_with_state`.
pub async fn track(stats: State<Arc<HttpStats>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().map_or(UNMATCHED, MatchedPath::as_str).to_owned();
    let method = method_label(request.method());
    let response = next.run(request).await;
    stats.answered(method, &route, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

/// A method as a label: any but the standard ones is the caller's choice,
/// so it is `other`.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// `GET /metrics`: every figure of `telemetry` in Prometheus's text format.
pub fn metrics_route(telemetry: Arc<super::Telemetry>) -> axum::Router {
    let handler = move || {
        let telemetry = Arc::clone(&telemetry);
        async move {
            // Reading /proc and the log's end offsets may block: not on a
            // runtime worker.
            let text = tokio::task::spawn_blocking(move || telemetry.render()).await.unwrap_or_else(|e| format!("# {e}\n"));
            ([(axum::http::header::CONTENT_TYPE, super::METRICS_CONTENT_TYPE)], text)
        }
    };
    axum::Router::new().route("/metrics", axum::routing::get(handler))
}

/// `router` with every request counted in `stats`.
pub fn tracked(router: axum::Router, stats: &Arc<HttpStats>) -> axum::Router {
    router.layer(axum::middleware::from_fn_with_state(Arc::clone(stats), track))
}
