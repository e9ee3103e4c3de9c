//! Liveness, readiness and metrics, for load balancers and Prometheus.

use std::sync::atomic::Ordering;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;
use tally_store::Health as LikesHealth;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` (liveness), `ready`, `degraded` (serving on a weaker path),
    /// `draining` (503: shutting down, still serving for the grace period)
    /// or `down` (503).
    status: &'static str,
    /// What is degraded, if anything.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    problems: Vec<String>,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok",
        problems: vec![],
    })
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
pub struct ReadyQuery {
    /// `node`: for load balancers. 503 only for what is wrong with this
    /// node (draining, or its own embedded store down); a shared store
    /// (Redis, PostgreSQL) that fails shows as `degraded` with 200, since
    /// it fails every node alike and taking them all out of rotation would
    /// turn a partial outage (likes still answered through Redis, say)
    /// into a total one.
    scope: Option<String>,
}

/// Readiness: the stores answer and likes are being made durable, and the
/// node is not shutting down.
#[utoipa::path(get, path = "/readyz", tag = "operations", params(ReadyQuery),
    responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn readyz(
    State(state): State<AppState>,
    Query(query): Query<ReadyQuery>,
) -> (StatusCode, axum::Json<Health>) {
    // Checked first and answered without touching the stores: the node is
    // leaving and a balancer should stop sending it new work, whatever the
    // stores say.
    if state.draining.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(Health {
                status: "draining",
                problems: vec!["shutting down".into()],
            }),
        );
    }
    let mut problems = Vec::new();
    let mut down = false;
    if let Err(err) = state.catalog.ping().await {
        problems.push(format!("catalog: {err}"));
        down = true;
    }
    match state.likes.health().await {
        LikesHealth::Ready => {}
        LikesHealth::Degraded(why) => problems.push(why),
        LikesHealth::Down(why) => {
            problems.push(why);
            down = true;
        }
    }
    // Degraded but serving stays 200: in a Redis outage every node is
    // degraded, and a load balancer dropping them all would take the
    // service down instead of letting it run on PostgreSQL. For the same
    // reason a balancer's check (`scope=node`) never fails on shared stores.
    let shared_stores = state.settings.redis_url.is_some();
    if down && shared_stores && query.scope.as_deref() == Some("node") {
        down = false;
    }
    let status = match (down, problems.is_empty()) {
        (true, _) => (StatusCode::SERVICE_UNAVAILABLE, "down"),
        (false, false) => (StatusCode::OK, "degraded"),
        (false, true) => (StatusCode::OK, "ready"),
    };
    (
        status.0,
        axum::Json(Health {
            status: status.1,
            problems,
        }),
    )
}

/// Prometheus metrics, text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain", body = String)))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::render(&state).await,
    )
}
