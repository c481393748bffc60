//! The query handlers. Each reads one store snapshot (read-committed) and
//! answers JSON; bad parameters get `400 {"field","reason"}`.

use std::sync::Arc;

use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::access::Viewer;
use super::late::{cursor, parse_cursor, read_page};
use super::params::{
    check_series_range, ParamError, Params, DEFAULT_LATE_LIMIT, DEFAULT_TOP_K, DEFAULT_WINDOWS, MAX_LATE_LIMIT, MAX_LATE_SPAN_MS, MAX_TOP_K,
};
use super::top::{Ranking, WindowId};
use super::QueryState;
use crate::event::validate::check_key;
use crate::event::KeyType;
use crate::row::{format_uuid, granularity_label, Row};
use crate::store::{LatePosition, RowFilter, StoreError, StoreSnapshot};

const ONE_MINUTE_MS: u64 = 60_000;

/// Longest a query waits for one of the running reads to end.
pub const QUERY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A failed request: a bad parameter (400), a key asking for what is not
/// its own (404, as if it did not exist), a route beyond its scope (403),
/// or an unreadable store (503).
enum Failure {
    Param(ParamError),
    NotFound(ParamError),
    Forbidden(String),
    Store(StoreError),
}

impl From<ParamError> for Failure {
    fn from(e: ParamError) -> Failure {
        Failure::Param(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        Failure::Store(e)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::Param(e) => (StatusCode::BAD_REQUEST, Json(json!({ "field": e.field, "reason": e.reason }))).into_response(),
            Failure::NotFound(e) => (StatusCode::NOT_FOUND, Json(json!({ "field": e.field, "reason": e.reason }))).into_response(),
            Failure::Forbidden(reason) => {
                (StatusCode::FORBIDDEN, Json(json!({ "field": "Authorization", "reason": reason }))).into_response()
            }
            Failure::Store(e) => {
                (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "field": "store", "reason": e.to_string() }))).into_response()
            }
        }
    }
}

fn answer(result: Result<Value, Failure>) -> Response {
    match result {
        Ok(body) => Json(body).into_response(),
        Err(failure) => failure.into_response(),
    }
}

/// Runs a store read on the blocking pool, so a long read never holds up
/// the runtime threads that also acknowledge clicks. At most
/// `state.queries` reads run at once; a read that finds none free within
/// [`QUERY_WAIT`] is answered 503 with `Retry-After`, so a flood of
/// expensive reads queues neither threads nor memory without bound.
async fn blocking(state: &QueryState, read: impl FnOnce() -> Result<Value, Failure> + Send + 'static) -> Response {
    let Ok(Ok(_permit)) = tokio::time::timeout(QUERY_WAIT, state.queries.acquire()).await else {
        let reason = format!("{} queries are running; try again", state.max_queries);
        let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "field": "query", "reason": reason }))).into_response();
        response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(1));
        return response;
    };
    match tokio::task::spawn_blocking(read).await {
        Ok(result) => {
            if let Err(Failure::Store(_)) = &result {
                state.telemetry.http.store_read_failed();
            }
            answer(result)
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "field": "query", "reason": e.to_string() }))).into_response(),
    }
}

fn params(query: Option<String>, known: &[&str]) -> Result<Params, ParamError> {
    let pairs = form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    Params::new(pairs, known)
}

pub async fn ad_clicks(state: State<Arc<QueryState>>, viewer: Extension<Viewer>, id: Path<String>, query: RawQuery) -> Response {
    let (state, viewer, id) = (state.0, viewer.0, id.0);
    blocking(&Arc::clone(&state), move || series(&state, &viewer, KeyType::Ad, &id, query.0)).await
}

pub async fn campaign_clicks(state: State<Arc<QueryState>>, viewer: Extension<Viewer>, id: Path<String>, query: RawQuery) -> Response {
    let (state, viewer, id) = (state.0, viewer.0, id.0);
    blocking(&Arc::clone(&state), move || series(&state, &viewer, KeyType::Campaign, &id, query.0)).await
}

pub async fn advertiser_clicks(state: State<Arc<QueryState>>, viewer: Extension<Viewer>, id: Path<String>, query: RawQuery) -> Response {
    let (state, viewer, id) = (state.0, viewer.0, id.0);
    blocking(&Arc::clone(&state), move || series(&state, &viewer, KeyType::Advertiser, &id, query.0)).await
}

/// `committed_epoch` and `watermark` of a snapshot: the epoch is the
/// frontier it was committed at, so both are the same time.
fn freshness(snapshot: &dyn StoreSnapshot) -> Result<Option<u64>, StoreError> {
    snapshot.committed_epoch()
}

fn row_json(row: &Row) -> Value {
    json!({
        "window_start": row.window_start,
        "window_end": row.window_end(),
        "clicks": row.clicks,
        "distinct_users": row.distinct_users,
        "status": row.status,
        "version": row.version,
    })
}

/// Whether `viewer` may see `row` (see `owners`).
fn visible(state: &QueryState, viewer: &Viewer, row: &Row) -> bool {
    viewer.advertiser().is_none_or(|advertiser| state.owners.owns(advertiser, row.key_type, &row.key, row.window_start, row.granularity_ms))
}

/// `GET /v1/{ads,campaigns,advertisers}/{id}/clicks?window=&from=&to=`.
fn series(state: &QueryState, viewer: &Viewer, key_type: KeyType, id: &str, query: Option<String>) -> Result<Value, Failure> {
    check_key(id).map_err(|e| ParamError::new("id", e.to_string()))?;
    if let Some(advertiser) = viewer.advertiser() {
        if !state.owners.ever(advertiser, key_type, id) {
            let reason = format!("no {} {id:?} among those this key reads", key_type.as_str());
            return Err(Failure::NotFound(ParamError::new("id", reason)));
        }
    }
    let params = params(query, &["window", "from", "to"])?;
    let window = params.window(ONE_MINUTE_MS)?;
    let snapshot = state.store.snapshot()?;
    let epoch = freshness(snapshot.as_ref())?;
    let default_to = (epoch.unwrap_or_else(state.clock) / window + 1) * window;
    let to = params.time("to")?.unwrap_or(default_to);
    let from = params.time("from")?.unwrap_or(to.saturating_sub(DEFAULT_WINDOWS * window));
    check_series_range(from, to, window)?;
    let from = from / window * window;
    let filter = RowFilter { key_type, key: id.into(), granularity_ms: window, from, to };
    let rows = snapshot.rows(&filter)?;
    let rows: Vec<Value> = rows.iter().filter(|row| visible(state, viewer, row)).map(row_json).collect();
    Ok(json!({
        "key_type": key_type.as_str(),
        "key": id,
        "window": granularity_label(window),
        "from": from,
        "to": to,
        "committed_epoch": epoch,
        "watermark": epoch,
        "rows": rows,
    }))
}

/// `GET /v1/top?window=&at=&k=`: top ads and campaigns of one window.
pub async fn top(state: State<Arc<QueryState>>, viewer: Extension<Viewer>, query: RawQuery) -> Response {
    let (state, viewer) = (state.0, viewer.0);
    blocking(&Arc::clone(&state), move || top_of(&state, &viewer, query.0)).await
}

fn top_of(state: &QueryState, viewer: &Viewer, query: Option<String>) -> Result<Value, Failure> {
    let params = params(query, &["window", "at", "k"])?;
    let window = params.window(ONE_MINUTE_MS)?;
    let k = params.count("k", DEFAULT_TOP_K, MAX_TOP_K)?;
    let at = params.time("at")?;
    let (version, snapshot) = state.store.versioned_snapshot()?;
    let epoch = freshness(snapshot.as_ref())?;
    let snapshot = snapshot.as_ref();
    // Nothing committed: no window has rows.
    let Some(committed) = epoch else {
        return Ok(top_json(window, at.map(|at| at / window * window), epoch, &Ranking::default(), k));
    };
    let start = match at {
        Some(at) => Some(at / window * window),
        None => state.top.latest_window(snapshot, (version, committed), window)?,
    };
    let ranking = match start {
        Some(start) => {
            let id = WindowId { version, epoch: committed, granularity_ms: window, window_start: start };
            state.top.ranking(snapshot, id, viewer.advertiser(), &|row| visible(state, viewer, row))?
        }
        None => Arc::new(Ranking::default()),
    };
    Ok(top_json(window, start, epoch, &ranking, k))
}

fn top_json(window: u64, start: Option<u64>, epoch: Option<u64>, ranking: &Ranking, k: usize) -> Value {
    let ranked = |rows: &[Row]| -> Vec<Value> {
        rows.iter().take(k).map(|row| json!({ "key": row.key, "clicks": row.clicks, "distinct_users": row.distinct_users, "status": row.status, "version": row.version })).collect()
    };
    json!({
        "window": granularity_label(window),
        "window_start": start,
        "window_end": start.map(|s| s + window),
        "committed_epoch": epoch,
        "watermark": epoch,
        "total_clicks": ranking.total_clicks,
        "ads": ranked(&ranking.ads),
        "campaigns": ranked(&ranking.campaigns),
    })
}

/// `GET /v1/late?from=&to=&limit=&after=`: the late-click ledger, by
/// window, in pages (`late.rs`).
pub async fn late(state: State<Arc<QueryState>>, viewer: Extension<Viewer>, query: RawQuery) -> Response {
    let (state, viewer) = (state.0, viewer.0);
    blocking(&Arc::clone(&state), move || late_of(&state, &viewer, query.0)).await
}

fn late_of(state: &QueryState, viewer: &Viewer, query: Option<String>) -> Result<Value, Failure> {
    let params = params(query, &["from", "to", "limit", "after"])?;
    let limit = params.count("limit", DEFAULT_LATE_LIMIT, MAX_LATE_LIMIT)?;
    let after = params.get("after").map(|text| parse_cursor(text).map_err(|reason| ParamError::new("after", reason))).transpose()?;
    let snapshot = state.store.snapshot()?;
    let epoch = freshness(snapshot.as_ref())?;
    let to = params.time("to")?.unwrap_or_else(|| epoch.unwrap_or_else(state.clock) + 1);
    let from = params.time("from")?.unwrap_or(to.saturating_sub(3_600_000));
    if from >= to {
        return Err(ParamError::new("from", format!("{from} is not before to ({to})")).into());
    }
    if to - from > MAX_LATE_SPAN_MS {
        return Err(
            ParamError::new("from", format!("the range spans {} ms, at most {MAX_LATE_SPAN_MS} (one day) per request", to - from)).into()
        );
    }
    if let Some(at) = after.as_ref().filter(|at| at.window_start < from || at.window_start >= to) {
        let reason =
            format!("the cursor is at window {}, not in from..to ({from}..{to}): pass the same from and to as its page", at.window_start);
        return Err(ParamError::new("after", reason).into());
    }
    // Ledger entries are kept per 1m window.
    let keep = |at: &LatePosition| match viewer.advertiser() {
        Some(advertiser) => state.owners.owns(advertiser, at.key_type, &at.key, at.window_start, ONE_MINUTE_MS),
        None => true,
    };
    let page = read_page(snapshot.as_ref(), (from, to), after.as_ref(), limit, &keep)?;
    let entries: Vec<Value> = page
        .entries
        .iter()
        .map(|e| {
            let ids: Vec<String> = e.request_ids.iter().map(|id| format_uuid(*id)).collect();
            json!({ "key_type": e.key_type.as_str(), "key": e.key, "window_start": e.window_start, "batch": e.batch, "held": e.held, "request_ids": ids })
        })
        .collect();
    Ok(json!({ "from": from, "to": to, "committed_epoch": epoch, "entries": entries, "next": page.next.as_ref().map(cursor) }))
}

/// `GET /v1/stats`: freshness and counters for the dashboard.
pub async fn stats(state: State<Arc<QueryState>>, viewer: Extension<Viewer>) -> Response {
    if let Some(advertiser) = viewer.0.advertiser() {
        let reason = format!("this key reads advertiser {advertiser:?}'s numbers; /v1/stats needs an operator key");
        return Failure::Forbidden(reason).into_response();
    }
    let state = state.0;
    blocking(&Arc::clone(&state), move || stats_of(&state)).await
}

fn stats_of(state: &QueryState) -> Result<Value, Failure> {
    let epoch = freshness(state.store.snapshot()?.as_ref())?;
    let now = (state.clock)();
    let ingest = state.telemetry.ingest.as_ref().map(|ingest| {
        let s = ingest.read();
        json!({ "requests": s.requests, "accepted": s.accepted, "rejected": s.rejected, "written": s.written })
    });
    let job = state.telemetry.job.as_ref().map(|job| {
        let s = job.read();
        json!({ "on_time": s.on_time, "duplicates": s.duplicates, "restating": s.restating, "held": s.held })
    });
    Ok(json!({
        "now_ms": now,
        "committed_epoch": epoch,
        "watermark": epoch,
        "watermark_lag_ms": epoch.map(|e| now.saturating_sub(e)),
        "ingest": ingest,
        "job": job,
    }))
}

pub async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// Ready once the store answers a read (read on a blocking thread, as
/// every store call: a Cassandra read must not run on a runtime worker).
pub async fn readyz(state: State<Arc<QueryState>>) -> Response {
    let state = state.0;
    match tokio::task::spawn_blocking(move || state.store.snapshot().and_then(|s| s.committed_epoch())).await {
        Ok(Ok(epoch)) => Json(json!({ "status": "ready", "committed_epoch": epoch })).into_response(),
        Ok(Err(e)) => {
            let body = json!({ "status": "unavailable", "field": "store", "reason": e.to_string() });
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "field": "query", "reason": e.to_string() }))).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_read_waits_for_a_free_slot_then_is_refused_with_503() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::EmbeddedStore::open(dir.path()).unwrap();
        let served = super::super::ServedStore::fixed(std::sync::Arc::new(store.reader()));
        let telemetry = std::sync::Arc::new(crate::telemetry::Telemetry::new());
        let state = QueryState::new(served, telemetry, || 0).with_max_queries(1);
        let held = state.queries.acquire().await.unwrap();
        let refused = blocking(&state, || Ok(json!(1))).await;
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers().get(axum::http::header::RETRY_AFTER).unwrap(), "1");
        drop(held);
        assert_eq!(blocking(&state, || Ok(json!(1))).await.status(), StatusCode::OK);
    }
}
