//! The operator's load panel: start a bounded load run against this node
//! and watch it (see [`crate::load_panel`]).

use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::ApiJson;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};
use crate::load_panel::{LoadRequest, LoadRun, StartError};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_run))
        .routes(routes!(current_run))
}

fn operator(state: &AppState, user: &AuthUser) -> Result<(), ApiError> {
    if state.settings.load_panel.allows(&user.username) {
        Ok(())
    } else if state.settings.load_panel.enabled {
        Err(ApiError::Forbidden(
            "only the operators named in load_panel.admins may run loads".into(),
        ))
    } else {
        Err(ApiError::Forbidden(
            "the load panel is off; start the server with --load-panel".into(),
        ))
    }
}

/// Start a load run: the server creates users and posts and drives
/// open-loop like traffic against itself, then proves the counts exact.
#[utoipa::path(post, path = "/v1/admin/load-runs", tag = "operations",
    request_body = LoadRequest,
    security(("bearer" = [])),
    responses(
        (status = 202, body = LoadRun),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a value out of bounds"),
        (status = 401, body = ErrorBody, description = "`unauthorized`"),
        (status = 403, body = ErrorBody, description = "`forbidden`: panel off or not an operator"),
        (status = 409, body = ErrorBody, description = "`load_run_active`"),
    ))]
async fn start_run(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(request): ApiJson<LoadRequest>,
) -> Result<(StatusCode, axum::Json<LoadRun>), ApiError> {
    operator(&state, &user)?;
    let run = state
        .load_panel
        .start(&state, request)
        .map_err(|e| match e {
            StartError::Invalid(msg) => ApiError::InvalidRequest(msg),
            StartError::Active => ApiError::LoadRunActive,
            StartError::Poisoned => ApiError::internal(e),
        })?;
    tracing::info!(user = user.id, run = run.id, "load run requested");
    Ok((StatusCode::ACCEPTED, axum::Json(run)))
}

/// The latest load run, in progress or finished; poll it about once a
/// second while it runs.
#[utoipa::path(get, path = "/v1/admin/load-runs/current", tag = "operations",
    security(("bearer" = [])),
    responses(
        (status = 200, body = LoadRun),
        (status = 401, body = ErrorBody, description = "`unauthorized`"),
        (status = 403, body = ErrorBody, description = "`forbidden`"),
        (status = 404, body = ErrorBody, description = "`not_found`: no run yet"),
    ))]
async fn current_run(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<axum::Json<LoadRun>, ApiError> {
    operator(&state, &user)?;
    state
        .load_panel
        .current()
        .map(axum::Json)
        .ok_or_else(|| ApiError::NotFound("no load run yet".into()))
}
