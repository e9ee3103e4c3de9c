//! The accept loop and one task per connection: hyper's HTTP/1 and HTTP/2
//! (with upgrades, for WebSockets) under a watchdog that applies the
//! timeout of the connection's phase.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::io::{ConnState, Phase, Tracked, instant};
use super::{ConnectionSettings, Counters, REFUSAL_SLOTS, Refusal, Timeouts};
use crate::error::ApiError;

/// How long an over-cap connection may take to send the request it is
/// answered on.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves `router` on `listener` until `shutdown` resolves; then stops
/// accepting, lets connections finish their requests (idle ones close at
/// once) and waits for them up to `drain_deadline`.
///
/// `ws_message_limit` bounds client messages on Socket.io's WebSocket
/// (see [`super::io`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ConnectionSettings,
    ws_message_limit: u64,
    shutdown: impl Future<Output = ()>,
    drain_deadline: Duration,
) -> std::io::Result<()> {
    let counters = Counters::new(settings.clone());
    tracing::info!(
        max_total = counters.max_total(),
        max_per_ip = settings.max_per_ip,
        "connection limits"
    );
    let timeouts = settings.timeouts();
    let refusals = Arc::new(Semaphore::new(REFUSAL_SLOTS));
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    accept_failed(err).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        match counters.admit(peer.ip()) {
            Ok(admission) => {
                let state = Arc::new(ConnState::new());
                let io = Tracked::new(stream, state.clone(), admission);
                let conn = Connection {
                    router: router.clone(),
                    peer,
                    state,
                    timeouts,
                    ws_message_limit,
                    stop: stop.clone(),
                };
                tracker.spawn(conn.run(io));
            }
            Err(why) => {
                let reason = match why {
                    Refusal::Total => "total",
                    Refusal::PerIp => "per_ip",
                };
                metrics::counter!("tally_connections_refused_total", "reason" => reason)
                    .increment(1);
                if let Ok(slot) = refusals.clone().try_acquire_owned() {
                    tracker.spawn(async move {
                        refuse(stream, why).await;
                        drop(slot);
                    });
                }
            }
        }
    }
    drop(listener);
    stop.cancel();
    tracker.close();
    if tokio::time::timeout(drain_deadline, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = tracker.len(),
            "connections still open at the shutdown deadline"
        );
    }
    Ok(())
}

/// Errors of one connection (the peer left) are retried at once; others
/// (out of file descriptors) after a pause, as `axum::serve` does.
async fn accept_failed(err: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        err.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    metrics::counter!("tally_accept_errors_total").increment(1);
    tracing::error!(error = %err, "accept failed; pausing 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// One admitted connection.
struct Connection {
    router: Router,
    peer: SocketAddr,
    state: Arc<ConnState>,
    timeouts: Timeouts,
    ws_message_limit: u64,
    stop: CancellationToken,
}

impl Connection {
    async fn run(self, io: Tracked) {
        let Self {
            router,
            peer,
            state,
            timeouts,
            ws_message_limit,
            stop,
        } = self;
        let conn_state = state.clone();
        let service = tower::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let busy = conn_state.begin_request();
            let armed = is_socketio_upgrade(&request).then(|| {
                let ok = conn_state.arm_ws_guard(ws_message_limit);
                (ok, conn_state.clone())
            });
            let router = router.clone();
            async move {
                let response = match &armed {
                    Some((false, _)) => {
                        ApiError::invalid("data sent before the WebSocket handshake was answered")
                            .into_response()
                    }
                    _ => router.oneshot(request).await?,
                };
                if let Some((_, state)) = armed
                    && response.status() != StatusCode::SWITCHING_PROTOCOLS
                {
                    state.disarm_ws_guard();
                }
                drop(busy);
                Ok::<Response, Infallible>(response)
            }
        });
        let builder = auto::Builder::new(TokioExecutor::new());
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
        tokio::pin!(conn);
        let mut stopping = false;
        loop {
            let deadline = deadline(&state, &timeouts);
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(err) = served {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                    return;
                }
                () = state.changed.notified() => {}
                () = sleep_until(deadline) => {
                    if let Some(phase) = expired(&state, &timeouts) {
                        metrics::counter!("tally_connections_timed_out_total", "phase" => phase)
                            .increment(1);
                        tracing::debug!(%peer, phase, "connection timed out");
                        return;
                    }
                }
                () = stop.cancelled(), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// When the current phase's timeout runs out (`None`: never, or not
/// before the phase changes, which wakes the watchdog).
fn deadline(state: &ConnState, t: &Timeouts) -> Option<std::time::Instant> {
    match state.phase() {
        Phase::Silent => t.idle_socket.map(|d| instant(state.opened) + d),
        Phase::ReadingHead(since) => t.header_read.map(|d| instant(since) + d),
        Phase::Idle(since) => t.keep_alive.map(|d| instant(since) + d),
        Phase::Busy => None,
    }
}

/// The phase whose timeout ran out, if one did.
fn expired(state: &ConnState, t: &Timeouts) -> Option<&'static str> {
    let now = std::time::Instant::now();
    let over =
        |since: u64, limit: Option<Duration>| limit.is_some_and(|d| now >= instant(since) + d);
    match state.phase() {
        Phase::Silent => over(state.opened, t.idle_socket).then_some("idle_socket"),
        Phase::ReadingHead(since) => over(since, t.header_read).then_some("header_read"),
        Phase::Idle(since) => over(since, t.keep_alive).then_some("keep_alive"),
        Phase::Busy => None,
    }
}

/// A Socket.io request that asks for a WebSocket.
fn is_socketio_upgrade<B>(request: &Request<B>) -> bool {
    request.uri().path().starts_with("/socket.io")
        && request
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Answers an over-cap connection's first request with the error, then
/// closes it.
async fn refuse(stream: TcpStream, why: Refusal) {
    let service = hyper::service::service_fn(move |_request: Request<Incoming>| {
        let error = match why {
            Refusal::Total => {
                ApiError::Overloaded("the server is at its connection limit; retry shortly".into())
            }
            Refusal::PerIp => {
                ApiError::TooManyConnections("too many open connections from this address".into())
            }
        };
        let mut response = error.into_response();
        response.headers_mut().insert(
            header::REFERRER_POLICY,
            header::HeaderValue::from_static(crate::routes::REFERRER_POLICY),
        );
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, conn).await;
}
