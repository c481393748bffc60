//! The query API and the dashboard: read-committed views of the store.
//!
//! Every answer comes from one snapshot of one store ([`StoreSnapshot`]):
//! a redb read transaction of the embedded store, or a Cassandra read as
//! of the applied epoch. Either sees only committed epochs, so no value
//! from an uncommitted epoch is ever served, and no answer mixes two
//! versions of the output. Which version answers follows `DATA/serving` on
//! the embedded store ([`ServedStore`] with [`EmbeddedVersions`], re-read at
//! most every [`FOLLOW_SWITCH_MS`]), so a `tally switch` reaches a running
//! `tally up` within that time; a Cassandra job serves its live output
//! ([`ServedStore::fixed`] over a [`LazyReader`]);
//! each carries the `committed_epoch` it was read at and the `watermark`
//! (the frontier of that epoch: windows ending at least the allowed lateness
//! before it are final). The dashboard (`dashboard/`) is static HTML, CSS
//! and JS built into the binary that polls these endpoints.
//!
//! **Store calls never run on an async runtime worker.** A Cassandra
//! reader blocks on the store's own Tokio runtime, which panics inside
//! another runtime ("Cannot start a runtime from within a runtime"), and
//! an embedded read may take long: every handler that reads the store does
//! so through `tokio::task::spawn_blocking`, and so must any new one.

mod api;
mod lazy;
pub mod params;

pub use lazy::{LazyReader, CONNECT_WAIT, RETRY_AFTER};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::datadir::DataDir;
use crate::dataflow::stats::SourceStats;
use crate::ingest::server::Ingest;
use crate::store::embedded::EmbeddedReader;
use crate::store::versions::{self, LIVE};
use crate::store::{StoreError, StoreReader, StoreSnapshot};

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

/// How often the query API looks at which version to serve.
pub const FOLLOW_SWITCH_MS: u64 = 200;

/// Where the query API learns which version of the output to serve, and
/// opens it: the seam between [`ServedStore`] and a store's versions. The
/// embedded store keeps them in the data directory ([`EmbeddedVersions`]);
/// a store that keeps its serving pointer elsewhere implements this.
///
/// Both are called on a blocking thread (never on an async runtime
/// worker), at most every [`FOLLOW_SWITCH_MS`].
pub trait Versions: Send + Sync {
    /// The name of the version to serve now ([`LIVE`]: the job's own store).
    fn serving(&self) -> Result<String, StoreError>;
    /// A reader of version `name`, which is never [`LIVE`].
    fn open(&self, name: &str) -> Result<Arc<dyn StoreReader>, StoreError>;
}

/// The versions of the embedded store: the pointer `DATA/serving`, and
/// `DATA/versions/NAME/store`.
pub struct EmbeddedVersions {
    data_dir: DataDir,
}

impl EmbeddedVersions {
    pub fn new(data_dir: DataDir) -> EmbeddedVersions {
        EmbeddedVersions { data_dir }
    }

    fn unavailable(&self, e: versions::VersionError) -> StoreError {
        StoreError::Io { path: self.data_dir.serving_file(), source: std::io::Error::other(format!("the version to serve: {e}")) }
    }
}

impl Versions for EmbeddedVersions {
    fn serving(&self) -> Result<String, StoreError> {
        versions::serving(&self.data_dir).map_err(|e| self.unavailable(e))
    }

    fn open(&self, name: &str) -> Result<Arc<dyn StoreReader>, StoreError> {
        let reader: EmbeddedReader = versions::open(&self.data_dir, name).map_err(|e| self.unavailable(e))?;
        Ok(Arc::new(reader))
    }
}

/// The store the query API answers from: the served version of the output,
/// of whatever store ([`StoreReader`]).
///
/// Every method may block on the store (a Cassandra reader blocks on its
/// own runtime): call them on a blocking thread, never on an async runtime
/// worker.
pub struct ServedStore {
    /// The job's own store (version `live`).
    live: Arc<dyn StoreReader>,
    /// Where the version to serve is read; `None`: always `live`.
    versions: Option<Box<dyn Versions>>,
    current: Mutex<Served>,
}

struct Served {
    name: String,
    reader: Arc<dyn StoreReader>,
    checked: Option<Instant>,
}

impl ServedStore {
    /// Always the given store.
    pub fn fixed(live: Arc<dyn StoreReader>) -> ServedStore {
        let current = Mutex::new(Served { name: LIVE.to_owned(), reader: Arc::clone(&live), checked: None });
        ServedStore { live, versions: None, current }
    }

    /// The version `versions` names, `live` being `live`.
    pub fn following(live: Arc<dyn StoreReader>, versions: Box<dyn Versions>) -> ServedStore {
        ServedStore { versions: Some(versions), ..ServedStore::fixed(live) }
    }

    /// The embedded store `live` of `data_dir`, following `DATA/serving`.
    pub fn embedded(live: EmbeddedReader, data_dir: DataDir) -> ServedStore {
        ServedStore::following(Arc::new(live), Box::new(EmbeddedVersions::new(data_dir)))
    }

    /// One consistent view of the served version: every read of an
    /// answer goes through one snapshot.
    pub fn snapshot(&self) -> Result<Box<dyn StoreSnapshot>, StoreError> {
        self.reader()?.snapshot()
    }

    /// The name of the version served now.
    pub fn name(&self) -> String {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).name.clone()
    }

    fn reader(&self) -> Result<Arc<dyn StoreReader>, StoreError> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let Some(versions) = &self.versions else { return Ok(Arc::clone(&current.reader)) };
        if current.checked.is_some_and(|at| at.elapsed() < Duration::from_millis(FOLLOW_SWITCH_MS)) {
            return Ok(Arc::clone(&current.reader));
        }
        let name = versions.serving()?;
        if name != current.name {
            let reader = match name.as_str() {
                LIVE => Arc::clone(&self.live),
                _ => versions.open(&name)?,
            };
            *current = Served { name, reader, checked: None };
        }
        current.checked = Some(Instant::now());
        Ok(Arc::clone(&current.reader))
    }
}

/// What the query API reads.
pub struct QueryState {
    pub store: ServedStore,
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
