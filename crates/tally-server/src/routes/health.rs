//! Liveness, readiness and metrics, for load balancers and Prometheus.

use std::sync::atomic::Ordering;

use axum::extract::State;
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

/// Readiness: the stores answer and likes are being made durable, and the
/// node is not shutting down.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn readyz(State(state): State<AppState>) -> (StatusCode, axum::Json<Health>) {
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
    // service down instead of letting it run on PostgreSQL.
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
        state.metrics.render(),
    )
}
