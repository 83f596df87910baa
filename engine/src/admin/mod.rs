//! The admin HTTP server: Prometheus metrics and a JSON status API, on a
//! thread of its own with an ordinary tokio runtime (axum on hyper),
//! never on a shard's ring. It reads what the shards publish through a
//! [`Monitor`]; a slow or hostile admin client costs that thread only.
//!
//! Bound beyond loopback it asks every request for the bearer token of
//! `[admin] token_file` (check-config refuses such an address without
//! one). Errors are JSON objects with an `error` message.

pub(crate) mod holds;
mod inject;
mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::control::Steer;
use crate::monitor::Monitor;
use crate::queues::Listing;

/// How many one-second samples of the message rates are kept: five
/// minutes, what the status page's chart shows.
const RATE_SAMPLES: usize = 300;

/// What the handlers share.
struct AdminState {
    monitor: Monitor,
    /// The bearer token every request must carry, when one is configured.
    token: Option<String>,
    /// Messages per second accepted and delivered, one sample a second,
    /// oldest first (written by the admin thread's sampler only).
    rates: parking_lot::Mutex<RateHistory>,
    /// Durable mode: the suspensions in force, and the file they are
    /// kept in across restarts.
    holds: Option<HoldBook>,
}

/// The suspensions kept on disk.
pub(crate) struct HoldBook {
    file: std::path::PathBuf,
    saved: parking_lot::Mutex<Vec<holds::SavedHold>>,
}

impl HoldBook {
    /// The book of `file`, holding `saved` (what start restored).
    pub(crate) fn new(file: std::path::PathBuf, saved: Vec<holds::SavedHold>) -> HoldBook {
        HoldBook {
            file,
            saved: parking_lot::Mutex::new(saved),
        }
    }

    /// Records that `domain` is suspended until `until` (or no longer,
    /// with `None`) and writes the file.
    fn set(&self, domain: &str, until: Option<(std::time::SystemTime, String)>) {
        let now = std::time::SystemTime::now();
        let mut saved = self.saved.lock();
        saved.retain(|h| h.domain != domain && h.left(now).is_some());
        if let Some((until, reason)) = until {
            let until_unix = until
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            saved.push(holds::SavedHold {
                domain: domain.to_string(),
                until_unix,
                reason,
            });
        }
        if let Err(e) = holds::save(&self.file, &saved) {
            tracing::warn!(
                target: "volley",
                "{}: {e}: the suspensions will not survive a restart",
                self.file.display()
            );
        }
    }
}

/// The rate samples and the totals the last one was taken from.
#[derive(Default)]
struct RateHistory {
    samples: std::collections::VecDeque<(f64, f64)>,
    last: Option<(std::time::Instant, u64, u64)>,
}

impl RateHistory {
    /// One sample from the totals `received` and `delivered` at `now`.
    fn sample(&mut self, now: std::time::Instant, received: u64, delivered: u64) {
        if let Some((then, r, d)) = self.last {
            let dt = now.saturating_duration_since(then).as_secs_f64().max(0.001);
            let per_second = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
            self.samples
                .push_back((per_second(received, r), per_second(delivered, d)));
            while self.samples.len() > RATE_SAMPLES {
                self.samples.pop_front();
            }
        }
        self.last = Some((now, received, delivered));
    }
}

/// The running server; stops (and joins its thread) when dropped.
pub(crate) struct AdminServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Serves on `listener` (bound by the caller, so that a taken address
    /// fails the start).
    pub(crate) fn start(
        listener: std::net::TcpListener,
        monitor: Monitor,
        token: Option<String>,
        holds: Option<HoldBook>,
    ) -> std::io::Result<AdminServer> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = Arc::new(AdminState {
            monitor,
            token,
            rates: parking_lot::Mutex::new(RateHistory::default()),
            holds,
        });
        let thread = std::thread::Builder::new()
            .name("volley-admin".into())
            .spawn(move || serve(listener, state, stopped))?;
        Ok(AdminServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    listener: std::net::TcpListener,
    state: Arc<AdminState>,
    stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(target: "volley", "admin server: no runtime ({e}); not serving");
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(target: "volley", "admin server: {e}; not serving");
                return;
            }
        };
        let sampler = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                let s = sampler.monitor.stats();
                sampler
                    .rates
                    .lock()
                    .sample(std::time::Instant::now(), s.received, s.delivered);
            }
        });
        let app = router(state);
        let shutdown = async {
            let _ = stopped.await;
        };
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(target: "volley", "admin server stopped: {e}");
        }
    });
}

fn router(state: Arc<AdminState>) -> Router {
    // The page holds no data (it asks the API, with the token), so it is
    // served without one: a browser cannot send a header on its first load.
    let page = Router::new().route("/", get(status_page));
    // Injection asks for the token only of clients outside the trusted
    // networks, as SMTP ingest does: it checks for itself. Its body is
    // read under the ingest size limit, not axum's default.
    let inject = Router::new()
        .route("/api/inject/v1", post(inject::inject_v1))
        .route("/api/v1/inject", post(inject::inject_volley))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state.clone());
    let api = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/api/v1/status", get(status))
        .route("/api/v1/queues", get(list_queues))
        .route("/api/v1/queues/{domain}", get(show_queue))
        .route("/api/v1/queues/{domain}/suspend", post(suspend))
        .route("/api/v1/queues/{domain}/resume", post(resume))
        .route("/api/v1/queues/{domain}/flush", post(flush))
        .route("/api/v1/queues/{domain}/bounce", post(bounce))
        .route("/api/v1/drain", post(drain))
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/config/diff", post(config_diff))
        .route("/api/v1/messages/{id}", get(show_message))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state);
    page.merge(inject).merge(api)
}

/// The live status page: one self-contained document (no external
/// assets) that polls the status and queues endpoints every second.
async fn status_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        include_str!("page.html"),
    )
        .into_response()
}

/// An error as the API gives it: a status and `{"error": "..."}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// Lets a request through when no token is configured or it carries the
/// token; answers 401 otherwise.
async fn authorize(State(state): State<Arc<AdminState>>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
            return error(
                StatusCode::UNAUTHORIZED,
                "a bearer token is required (Authorization: Bearer TOKEN)",
            );
        }
    }
    next.run(request).await
}

/// Compares in time that depends on the lengths only, so the token cannot
/// be guessed byte by byte from how fast a refusal comes.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

async fn metrics_text(State(state): State<Arc<AdminState>>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(&state.monitor),
    )
        .into_response()
}

async fn status(State(state): State<Arc<AdminState>>) -> Response {
    let m = &state.monitor;
    let stats = m.stats();
    let latency = m.latency();
    axum::Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": m.uptime().as_secs_f64(),
        "shards": m.shards(),
        "stopping": m.stopping(),
        "draining": m.draining(),
        "durable": m.durable(),
        "memory": { "held_bytes": stats.held_bytes, "budget_bytes": m.memory_budget() },
        "latency_us": { "count": latency.count, "p50": latency.p50_us, "p99": latency.p99_us, "max": latency.max_us },
        "totals": stats,
        "busiest_domains": m.rates(),
        "rates_per_second": state
            .rates
            .lock()
            .samples
            .iter()
            .map(|(i, o)| json!({ "in": i, "out": o }))
            .collect::<Vec<_>>(),
    }))
    .into_response()
}

/// How `GET /api/v1/queues` sorts and cuts its list.
#[derive(serde::Deserialize)]
struct ListQuery {
    /// `depth` (most recipients first, the default) or `age` (oldest first).
    sort: Option<String>,
    /// Only domains whose names contain this.
    domain: Option<String>,
    /// At most this many (default 100, at most 10,000).
    limit: Option<usize>,
}

async fn list_queues(State(state): State<Arc<AdminState>>, Query(q): Query<ListQuery>) -> Response {
    let by_age = match q.sort.as_deref() {
        None | Some("depth") => false,
        Some("age") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("sort={other:?}: sort by depth or age"),
            );
        }
    };
    let listing = Listing {
        filter: q.domain,
        by_age,
        limit: q.limit.unwrap_or(100).min(10_000),
    };
    let listed = state.monitor.queues(&listing).await;
    let (total, views) = (listed.matched, listed.views);
    axum::Json(json!({ "total": total, "queues": views })).into_response()
}

async fn show_queue(State(state): State<Arc<AdminState>>, Path(domain): Path<String>) -> Response {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    // Names that contain this one come too: enough room for them.
    let listing = Listing {
        filter: Some(domain.clone()),
        by_age: false,
        limit: 10_000,
    };
    let listed = state.monitor.queues(&listing).await;
    match listed.views.into_iter().find(|v| v.domain == domain) {
        Some(v) => axum::Json(v).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no queue for {domain}: nothing is queued for it"),
        ),
    }
}

/// The domain of a path as the queues name it, or why it is not one.
fn domain_of(raw: &str) -> Result<String, String> {
    volley_units::domain::routing_key(raw.trim_end_matches('.'))
        .map_err(|e| format!("{raw:?} is not a domain: {e}"))
}

/// What `POST .../suspend` takes.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SuspendBody {
    /// How long, as `30m`, `1h`, `2d`.
    #[serde(rename = "for")]
    duration: String,
    /// Why, for the log and the queue listing.
    reason: Option<String>,
}

/// The steer's answer: 503 when a shard did not answer.
async fn steer(state: &AdminState, domain: &str, how: Steer) -> Result<usize, Response> {
    state.monitor.steer(domain, how).await.ok_or_else(|| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "a shard did not answer in time (is Volley stopping?)",
        )
    })
}

async fn suspend(
    State(state): State<Arc<AdminState>>,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let domain = match domain_of(&raw) {
        Ok(d) => d,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let body: SuspendBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body must be {{\"for\": \"1h\", \"reason\": \"...\"}}: {e}"),
            );
        }
    };
    let duration = match volley_units::parse_duration(&body.duration) {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => return error(StatusCode::BAD_REQUEST, "\"for\" must be longer than zero"),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("\"for\": {e}")),
    };
    let reason = body
        .reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "suspended by the operator".into());
    tracing::warn!(
        target: "volley",
        "admin: {domain} suspended for {}: {reason}",
        volley_units::format_duration(duration)
    );
    let how = Steer::Suspend {
        duration,
        reason: reason.clone(),
    };
    match steer(&state, &domain, how).await {
        Ok(_) => {
            if let Some(book) = &state.holds {
                let until = std::time::SystemTime::now() + duration;
                book.set(&domain, Some((until, reason.clone())));
            }
            axum::Json(json!({
            "domain": domain,
            "suspended_for_secs": duration.as_secs_f64(),
            "reason": reason,
            }))
            .into_response()
        }
        Err(e) => e,
    }
}

async fn resume(State(state): State<Arc<AdminState>>, Path(raw): Path<String>) -> Response {
    let domain = match domain_of(&raw) {
        Ok(d) => d,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    match steer(&state, &domain, Steer::Resume).await {
        Ok(n) => {
            if let Some(book) = &state.holds {
                book.set(&domain, None);
            }
            if n > 0 {
                tracing::info!(target: "volley", "admin: {domain} resumed");
            }
            axum::Json(json!({ "domain": domain, "was_suspended": n > 0 })).into_response()
        }
        Err(e) => e,
    }
}

async fn flush(State(state): State<Arc<AdminState>>, Path(raw): Path<String>) -> Response {
    let domain = match domain_of(&raw) {
        Ok(d) => d,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    match steer(&state, &domain, Steer::Flush).await {
        Ok(n) => {
            tracing::info!(target: "volley", "admin: {domain} flushed: {n} deferred recipients retried now");
            axum::Json(json!({ "domain": domain, "retried": n })).into_response()
        }
        Err(e) => e,
    }
}

/// What `POST .../bounce` takes.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BounceBody {
    /// Why, for the log, the bounce replies and the DSNs.
    reason: String,
}

async fn bounce(
    State(state): State<Arc<AdminState>>,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let domain = match domain_of(&raw) {
        Ok(d) => d,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let reason = match serde_json::from_slice::<BounceBody>(&body) {
        Ok(b) if !b.reason.trim().is_empty() => b.reason,
        Ok(_) => return error(StatusCode::BAD_REQUEST, "the reason must not be empty"),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body must be {{\"reason\": \"...\"}}: {e}"),
            );
        }
    };
    match steer(
        &state,
        &domain,
        Steer::Bounce {
            reason: reason.clone(),
        },
    )
    .await
    {
        Ok(n) => {
            tracing::warn!(target: "volley", "admin: {domain}: {n} queued recipients bounced: {reason}");
            axum::Json(json!({ "domain": domain, "bounced": n, "reason": reason })).into_response()
        }
        Err(e) => e,
    }
}

async fn show_message(State(state): State<Arc<AdminState>>, Path(raw): Path<String>) -> Response {
    let Ok(id) = u64::from_str_radix(raw.trim(), 16) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{raw:?} is not a message id (hex, as the 250 reply and the log give it)"),
        );
    };
    match state.monitor.message(id).await {
        Some(view) => axum::Json(view).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!(
                "no recipient of message {id:016x} is queued (delivered, bounced, in a transaction now, or unknown)"
            ),
        ),
    }
}

async fn drain(State(state): State<Arc<AdminState>>) -> Response {
    state.monitor.request_drain();
    let stats = state.monitor.stats();
    axum::Json(json!({ "draining": true, "queued": stats.queued })).into_response()
}

/// One change of a reload as the API gives it.
fn change_json(c: &crate::config::Change) -> serde_json::Value {
    let applies = match c.applies {
        crate::config::Applies::Now => "now",
        crate::config::Applies::AtRestart => "restart",
    };
    json!({ "setting": c.setting, "detail": c.detail, "applies": applies, "line": c.to_string() })
}

/// Reads the configuration file again and applies it, as SIGHUP does.
async fn reload(State(state): State<Arc<AdminState>>) -> Response {
    match state.monitor.reload().await {
        Ok(changes) => axum::Json(json!({
            "reloaded": true,
            "changes": changes.iter().map(change_json).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(why) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("reload refused: {why}"),
        ),
    }
}

/// What a reload to the TOML in the body would change (the file as
/// given: `volley serve`'s command-line flags are not applied to it).
async fn config_diff(State(state): State<Arc<AdminState>>, body: String) -> Response {
    match crate::config::Config::from_toml(&body) {
        Ok(new) => {
            let changes = state.monitor.changes_to(&new);
            axum::Json(json!({ "changes": changes.iter().map(change_json).collect::<Vec<_>>() }))
                .into_response()
        }
        Err(problems) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({
                "error": format!("the configuration has {} problem(s)", problems.len()),
                "problems": problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })),
        )
            .into_response(),
    }
}

async fn not_found(request: Request) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint: {} {}",
            request.method(),
            request.uri().path()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn rate_samples_are_per_second_and_bounded() {
        let mut h = super::RateHistory::default();
        let t0 = std::time::Instant::now();
        h.sample(t0, 0, 0);
        assert!(h.samples.is_empty(), "one sample needs two readings");
        h.sample(t0 + std::time::Duration::from_secs(2), 100, 40);
        assert_eq!(h.samples.back(), Some(&(50.0, 20.0)));
        for i in 0..400u64 {
            h.sample(t0 + std::time::Duration::from_secs(3 + i), 100 + i, 40);
        }
        assert_eq!(h.samples.len(), super::RATE_SAMPLES);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"s3cret", b"s3cret"));
        assert!(!same(b"s3cret", b"s3creT"));
        assert!(!same(b"s3cret", b"s3cre"));
        assert!(!same(b"", b"x"));
    }
}
