//! The query API and the dashboard: read-committed views of the store.
//!
//! Every answer comes from one redb read transaction, which sees only
//! committed epochs, so no value from an uncommitted epoch is ever served;
//! each carries the `committed_epoch` it was read at and the `watermark`
//! (the frontier of that epoch: windows ending at least the allowed lateness
//! before it are final). The dashboard (`dashboard/`) is static HTML, CSS
//! and JS built into the binary that polls these endpoints.

mod api;
pub mod params;

use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::dataflow::stats::SourceStats;
use crate::ingest::server::Ingest;
use crate::store::embedded::EmbeddedReader;

/// The OpenAPI paths of the query API, merged with ingest's by `tally up`.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// Every route of the query API and the dashboard (method, path).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/ads/{id}/clicks"),
    ("GET", "/v1/campaigns/{id}/clicks"),
    ("GET", "/v1/advertisers/{id}/clicks"),
    ("GET", "/v1/top"),
    ("GET", "/v1/late"),
    ("GET", "/v1/stats"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/"),
    ("GET", "/app.js"),
    ("GET", "/style.css"),
];

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// What the query API reads.
pub struct QueryState {
    pub store: EmbeddedReader,
    /// Ingest counters, when ingest runs in this process.
    pub ingest: Option<Arc<Ingest>>,
    /// The job's source counters, when the job runs in this process.
    pub job: Option<Arc<SourceStats>>,
    /// The wall clock, unix ms.
    pub clock: fn() -> u64,
}

/// The routes of [`ROUTES`].
pub fn router(state: Arc<QueryState>) -> Router {
    Router::new()
        .route("/v1/ads/{id}/clicks", get(api::ad_clicks))
        .route("/v1/campaigns/{id}/clicks", get(api::campaign_clicks))
        .route("/v1/advertisers/{id}/clicks", get(api::advertiser_clicks))
        .route("/v1/top", get(api::top))
        .route("/v1/late", get(api::late))
        .route("/v1/stats", get(api::stats))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
        .with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> axum::response::Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// One OpenAPI document from two: `base` with the paths and schemas of
/// `extra` added.
pub fn merge_openapi(base: &str, extra: &str) -> serde_json::Value {
    let mut doc: serde_json::Value = serde_json::from_str(base).unwrap_or_else(|e| unreachable!("built-in OpenAPI document: {e}"));
    let extra: serde_json::Value = serde_json::from_str(extra).unwrap_or_else(|e| unreachable!("built-in OpenAPI document: {e}"));
    for section in ["paths", "components/schemas"] {
        let pointer = format!("/{section}");
        if let (Some(into), Some(from)) =
            (doc.pointer_mut(&pointer).and_then(|v| v.as_object_mut()), extra.pointer(&pointer).and_then(|v| v.as_object()))
        {
            for (key, value) in from {
                into.insert(key.clone(), value.clone());
            }
        }
    }
    doc
}
