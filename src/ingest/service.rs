//! Starting the ingest service: bind, TLS, pre-filter, serve until stopped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use tokio_rustls::TlsAcceptor;

use super::config::{redacted_url, Auth, IngestConfig};
use super::prefilter::PreFilter;
use super::server::{openapi_route, router, ClickLog, Ingest};
use crate::event::salt::UserSalt;
use crate::http::{Hosts, Limits};
use crate::telemetry::{metrics_route, tracked, Telemetry};

/// The wall clock in unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis() as u64
}

/// A bound, not yet serving ingest service.
pub struct Service {
    pub ingest: Arc<Ingest>,
    listener: std::net::TcpListener,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    hosts: Hosts,
    summary: String,
    /// What restoring the replay guard found, for the start-up message.
    replay_note: Option<String>,
    /// What `GET /metrics` serves: ingest's figures, and what else runs in
    /// this process ([`Service::with_telemetry`]).
    telemetry: Arc<Telemetry>,
}

impl Service {
    /// Binds `config.addr` and prepares everything a request needs. Fails
    /// on a config that cannot serve (signatures on without clients, bad
    /// TLS files, a bad Redis URL, an address in use).
    pub fn bind(config: &IngestConfig, log: Arc<dyn ClickLog>, salt: UserSalt) -> Result<Service, String> {
        Service::bind_keeping_replays(config, log, salt, None)
    }

    /// [`Service::bind`], with the replay guard restored from
    /// `replay_state` (kept there by the last clean stop, see
    /// [`super::replay`]) before the listener is bound: after an unclean
    /// stop, requests signed before that are refused for a replay window,
    /// and none signed once clients can connect. What the guard found is
    /// in [`Service::replay_note`].
    pub fn bind_keeping_replays(
        config: &IngestConfig,
        log: Arc<dyn ClickLog>,
        salt: UserSalt,
        replay_state: Option<&std::path::Path>,
    ) -> Result<Service, String> {
        config.check_startable()?;
        let tls = match &config.tls {
            Some(files) => Some(crate::http::tls_acceptor(&files.cert, &files.key)?),
            None => None,
        };
        let prefilter = match &config.redis {
            Some(redis) => Some(PreFilter::new(&redis.url, redis.ttl_ms(), Duration::from_millis(redis.timeout_ms))?),
            None => None,
        };
        let ingest = Arc::new(Ingest::new(config, log, salt, prefilter, Box::new(now_ms)));
        let replay_note = match replay_state {
            Some(path) => Some(ingest.replay_guard().restore(path, now_ms()).map_err(|e| format!("replay guard: {e}"))?),
            None => None,
        };
        let listener = std::net::TcpListener::bind(config.addr).map_err(|e| format!("ingest: cannot listen on {}: {e}", config.addr))?;
        listener.set_nonblocking(true).map_err(|e| format!("ingest: {e}"))?;
        let addr = listener.local_addr().map_err(|e| format!("ingest: {e}"))?;
        let summary = summary(config, addr);
        let telemetry = Telemetry::new().with_ingest(Arc::clone(&ingest.stats)).map_err(|e| format!("metrics: {e}"))?;
        let hosts = Hosts::listed(&config.allowed_hosts);
        Ok(Service { ingest, listener, tls, limits: config.http, hosts, summary, replay_note, telemetry: Arc::new(telemetry) })
    }

    /// Serves `telemetry` on `GET /metrics` (it must hold this service's
    /// ingest figures, `self.ingest.stats`) and counts requests in it.
    pub fn with_telemetry(self, telemetry: Arc<Telemetry>) -> Service {
        Service { telemetry, ..self }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| unreachable!("a bound listener has an address"))
    }

    /// What is being served and how, for the start-up message.
    pub fn summary(&self) -> &str {
        &self.summary
    }

    /// Serves the ingest routes, `extra` routes, `GET /openapi.json`
    /// (`openapi`, the document of all of them) and `GET /metrics` until
    /// `shutdown`, every request counted by route and status.
    pub async fn serve(self, extra: Router, openapi: String, shutdown: impl std::future::Future<Output = ()>) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::from_std(self.listener)?;
        let routes = router(Arc::clone(&self.ingest)).merge(extra).merge(openapi_route(openapi));
        let app = tracked(routes.merge(metrics_route(Arc::clone(&self.telemetry))), &self.telemetry.http);
        crate::http::serve(listener, app, self.tls, self.limits, self.hosts, shutdown).await?;
        // A clean stop: keep the replay guard for the next start. If this
        // fails, the next start treats this stop as unclean.
        match self.ingest.replay_guard().persist(self.ingest.now_ms()) {
            Ok(kept) => tracing::info!("replay guard: {kept} signatures kept for the next start"),
            Err(e) => tracing::warn!("replay guard not kept: {e}; the next start refuses requests signed before it for one replay window"),
        }
        Ok(())
    }

    /// What restoring the replay guard found ([`Service::bind_keeping_replays`]).
    pub fn replay_note(&self) -> Option<&str> {
        self.replay_note.as_deref()
    }
}

fn summary(config: &IngestConfig, addr: SocketAddr) -> String {
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    let auth = match &config.auth {
        Auth::Signed(_) => format!("request signatures ON ({} clients)", config.client_rates.len()),
        Auth::Off => "request signatures OFF: anyone who can reach this address can send clicks (local use only)".to_owned(),
    };
    let redis = config.redis.as_ref().map_or(String::new(), |r| {
        let ttl = crate::config::format_duration(r.ttl_ms());
        format!(", Redis pre-filter {} (a retry within {ttl} of its id's last sighting is answered without a write)", redacted_url(&r.url))
    });
    format!("ingest: {scheme}://{addr}/v1/clicks and /v1/clicks/batch; {auth}{redis}")
}

/// Resolves when the process gets SIGINT or SIGTERM.
pub async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
