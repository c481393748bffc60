//! The query API and the dashboard: read-committed views of the store.
//!
//! Every answer comes from one snapshot of one store ([`StoreSnapshot`]):
//! a redb read transaction of the embedded store, or a Cassandra read as
//! of the applied epoch. Either sees only committed epochs, so no value
//! from an uncommitted epoch is ever served, and no answer mixes two
//! versions of the output. Which version answers follows `DATA/serving` on
//! the embedded store ([`ServedStore`] with [`EmbeddedVersions`], re-read at
//! most every [`FOLLOW_SWITCH_MS`]), so a `tally switch` reaches a running
//! `tally up` within that time; a Cassandra job's query API follows the
//! serving pointer in its keyspace alike ([`CassandraFollowed`], its live
//! output read through a [`LazyReader`]);
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

pub mod access;
mod api;
mod late;
mod lazy;
pub mod owners;
pub mod params;
mod top;
mod versions;

pub use lazy::{Lazy, LazyReader, CONNECT_WAIT, RETRY_AFTER};
pub use versions::{CassandraFollowed, EmbeddedVersions, Serving, Versions};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use access::{Access, Failures};
use owners::Owners;

use crate::catalog::Catalog;
use crate::datadir::DataDir;
use crate::keys::KeyRing;
use crate::store::embedded::EmbeddedReader;
use crate::store::versions::LIVE;
use crate::store::{StoreError, StoreReader, StoreSnapshot};
use crate::telemetry::Telemetry;

/// The OpenAPI paths of the query API, and the `info` of the whole API,
/// merged with ingest's document by `tally up`.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// Every route of the query API and the dashboard (method, path).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/ads/{id}/clicks"),
    ("GET", "/v1/campaigns/{id}/clicks"),
    ("GET", "/v1/advertisers/{id}/clicks"),
    ("GET", "/v1/top"),
    ("GET", "/v1/late"),
    ("GET", "/v1/stats"),
    ("GET", "/v1/key"),
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
    serving: Serving,
    reader: Arc<dyn StoreReader>,
    /// Changes whenever `reader` does: what is cached of one reader's
    /// answers is told from another's by it.
    generation: u64,
    /// When the pointer was last read; `None`: never.
    checked: Option<Instant>,
    /// A caller is reading the pointer (the others answer from `reader`).
    checking: bool,
}

impl ServedStore {
    /// Always the given store.
    pub fn fixed(live: Arc<dyn StoreReader>) -> ServedStore {
        let current =
            Mutex::new(Served { serving: Serving::live(), reader: Arc::clone(&live), generation: 0, checked: None, checking: false });
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
        self.reader()?.0.snapshot()
    }

    /// A [`snapshot`](Self::snapshot) with the generation of the version
    /// it is of: two snapshots of one generation and one committed epoch
    /// hold the same rows.
    pub fn versioned_snapshot(&self) -> Result<(u64, Box<dyn StoreSnapshot>), StoreError> {
        let (reader, generation) = self.reader()?;
        Ok((generation, reader.snapshot()?))
    }

    /// The name of the version served now.
    pub fn name(&self) -> String {
        self.lock().serving.name.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Served> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The reader of the version to serve. The pointer is read at most
    /// every [`FOLLOW_SWITCH_MS`], by one caller at a time and outside the
    /// lock, so a slow read (a store over the network) holds up only that
    /// caller; the others answer from the version held meanwhile. Until
    /// the pointer has been read once, every caller waits for it.
    fn reader(&self) -> Result<(Arc<dyn StoreReader>, u64), StoreError> {
        let Some(versions) = &self.versions else {
            let current = self.lock();
            return Ok((Arc::clone(&current.reader), current.generation));
        };
        let mut current = self.lock();
        match current.checked {
            None => {
                // The first look: under the lock, so nobody is answered
                // from a version that may not be the served one.
                let (serving, reader) = self.look(versions.as_ref(), None)?;
                *current = Served {
                    serving,
                    reader: reader.unwrap_or_else(|| Arc::clone(&self.live)),
                    generation: current.generation + 1,
                    checked: Some(Instant::now()),
                    checking: false,
                };
                return Ok((Arc::clone(&current.reader), current.generation));
            }
            Some(at) if current.checking || at.elapsed() < Duration::from_millis(FOLLOW_SWITCH_MS) => {
                return Ok((Arc::clone(&current.reader), current.generation));
            }
            Some(_) => current.checking = true,
        }
        let held = current.serving.clone();
        drop(current);
        let looked = self.look(versions.as_ref(), Some(&held));
        let mut current = self.lock();
        current.checking = false;
        let (serving, reader) = looked?;
        if let Some(reader) = reader {
            current.serving = serving;
            current.reader = reader;
            current.generation += 1;
        }
        current.checked = Some(Instant::now());
        Ok((Arc::clone(&current.reader), current.generation))
    }

    /// Reads the pointer; with the reader of what it names when that is not
    /// `held`.
    fn look(&self, versions: &dyn Versions, held: Option<&Serving>) -> Result<(Serving, Option<Arc<dyn StoreReader>>), StoreError> {
        let serving = versions.serving()?;
        if held == Some(&serving) {
            return Ok((serving, None));
        }
        let reader = match serving.name.as_str() {
            LIVE => Arc::clone(&self.live),
            _ => versions.open(&serving)?,
        };
        Ok((serving, Some(reader)))
    }
}

/// What the query API reads.
pub struct QueryState {
    pub store: ServedStore,
    /// What this process reports about itself (ingest's and the job's
    /// figures, when they run in it).
    pub telemetry: Arc<Telemetry>,
    /// The wall clock, unix ms.
    pub clock: fn() -> u64,
    /// Who may read: keys, or anyone (`--no-auth`).
    pub access: Access,
    /// Failed keys by address.
    pub failures: Failures,
    /// Which advertiser owns which row, by the job's catalog.
    pub owners: Owners,
    /// Store reads running at once, at most `max_queries`.
    pub queries: tokio::sync::Semaphore,
    pub max_queries: usize,
    /// The windows `/v1/top` ranked, kept per committed epoch.
    pub top: top::TopCache,
}

/// Store reads of the query API that run at once by default: a few per
/// core, since each is mostly the store's CPU work.
pub const MAX_QUERIES: usize = 8;

impl QueryState {
    /// A query API over `store` open to anyone (see [`QueryState::with_keys`]),
    /// without a catalog.
    pub fn new(store: ServedStore, telemetry: Arc<Telemetry>, clock: fn() -> u64) -> QueryState {
        QueryState {
            store,
            telemetry,
            clock,
            access: Access::Open,
            failures: Failures::default(),
            owners: Owners::default(),
            queries: tokio::sync::Semaphore::new(MAX_QUERIES),
            max_queries: MAX_QUERIES,
            top: top::TopCache::default(),
        }
    }

    /// At most `n` store reads at once (at least one).
    pub fn with_max_queries(self, n: usize) -> QueryState {
        let n = n.max(1);
        QueryState { queries: tokio::sync::Semaphore::new(n), max_queries: n, ..self }
    }

    /// Every `/v1/*` read needs a key of `keys`.
    pub fn with_keys(self, keys: KeyRing) -> QueryState {
        QueryState { access: Access::Keys(keys), ..self }
    }

    /// Rows are attributed to advertisers by `catalog`, the one the job
    /// counts with.
    pub fn with_catalog(self, catalog: Option<&Catalog>) -> QueryState {
        QueryState { owners: Owners::new(catalog), ..self }
    }
}

/// The routes of [`ROUTES`].
pub fn router(state: Arc<QueryState>) -> Router {
    let reads = Router::new()
        .route("/v1/ads/{id}/clicks", get(api::ad_clicks))
        .route("/v1/campaigns/{id}/clicks", get(api::campaign_clicks))
        .route("/v1/advertisers/{id}/clicks", get(api::advertiser_clicks))
        .route("/v1/top", get(api::top))
        .route("/v1/late", get(api::late))
        .route("/v1/stats", get(api::stats))
        .route("/v1/key", get(access::key))
        .route_layer(axum::middleware::from_fn_with_state(Arc::clone(&state), access::authenticate));
    Router::new()
        .merge(reads)
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
        .with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> axum::response::Response {
    // The dashboard loads nothing but its own files and asks nothing but
    // this server: a script injected through data shown on it can neither
    // run inline nor send anything elsewhere.
    const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
        connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "no-cache"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    ];
    (headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::mpsc;

    use super::*;
    use crate::store::EmbeddedStore;

    /// A pointer that names `name`; from the second look on, each look
    /// waits for a word on `gate`.
    struct Gated {
        name: Mutex<String>,
        looks: AtomicU32,
        gate: Mutex<mpsc::Receiver<()>>,
        version: Arc<dyn StoreReader>,
    }

    impl Versions for Arc<Gated> {
        fn serving(&self) -> Result<Serving, StoreError> {
            if self.looks.fetch_add(1, Ordering::SeqCst) > 0 {
                self.gate.lock().unwrap().recv().unwrap();
            }
            Ok(Serving { name: self.name.lock().unwrap().clone(), build: None })
        }

        fn open(&self, _: &Serving) -> Result<Arc<dyn StoreReader>, StoreError> {
            Ok(Arc::clone(&self.version))
        }
    }

    #[test]
    fn a_slow_look_at_the_pointer_holds_up_only_its_own_caller_and_a_switch_is_followed() {
        let (live_dir, version_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let live = EmbeddedStore::open(live_dir.path()).unwrap();
        let version = EmbeddedStore::open(version_dir.path()).unwrap();
        let (open, gate) = mpsc::channel();
        let versions = Arc::new(Gated {
            name: Mutex::new(LIVE.to_owned()),
            looks: AtomicU32::new(0),
            gate: Mutex::new(gate),
            version: Arc::new(version.reader()),
        });
        let served = Arc::new(ServedStore::following(Arc::new(live.reader()), Box::new(Arc::clone(&versions))));
        served.snapshot().unwrap();
        assert_eq!(served.name(), LIVE);

        // The pointer now names `v`; the next look waits at the gate.
        *versions.name.lock().unwrap() = "v".to_owned();
        std::thread::sleep(Duration::from_millis(FOLLOW_SWITCH_MS + 50));
        let looking = {
            let served = Arc::clone(&served);
            std::thread::spawn(move || served.snapshot().map(|_| ()))
        };
        while versions.looks.load(Ordering::SeqCst) < 2 {
            std::thread::yield_now();
        }
        // Another caller answers meanwhile, from the version held.
        let (done, answered) = mpsc::channel();
        {
            let served = Arc::clone(&served);
            std::thread::spawn(move || done.send((served.snapshot().is_ok(), served.name())).unwrap());
        }
        let other = answered.recv_timeout(Duration::from_secs(30)).expect("a second caller waited for the first one's look");
        assert_eq!(other, (true, LIVE.to_owned()));
        assert_eq!(versions.looks.load(Ordering::SeqCst), 2, "one look at a time");

        open.send(()).unwrap();
        looking.join().unwrap().unwrap();
        assert_eq!(served.name(), "v");
    }
}
