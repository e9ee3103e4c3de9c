//! Sign-up (`POST /v1/users`), sign-in (`POST /v1/sessions`) and sign-out
//! (`DELETE /v1/sessions/current`).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::ApiJson;
use super::views::UserView;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::text;
use tally_store::accounts::password;
use tally_store::domain::{Password, Username};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_user))
        .routes(routes!(create_session))
        .routes(routes!(delete_session))
        .routes(routes!(me))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// 3–32 characters of `[a-z0-9_]`.
    username: String,
    /// 8–128 characters.
    #[schema(value_type = String)]
    password: Password,
}

impl Credentials {
    /// Both fields through [`text::check`], at sign-up and at sign-in alike.
    fn check_text(&self) -> Result<(), ApiError> {
        text::check(text::Kind::Username, &self.username)?;
        text::check(text::Kind::Password, self.password.expose())
    }
}

/// Create a user.
#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = Credentials,
    responses(
        (status = 201, body = UserView),
        (status = 400, body = ErrorBody, description = "`invalid_request`: bad username or password shape; `invalid_text`: NUL, control or invisible format characters"),
        (status = 409, body = ErrorBody, description = "`username_taken`"),
    ))]
async fn create_user(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<(StatusCode, axum::Json<UserView>), ApiError> {
    state.limits.check_auth(peer.ip())?;
    body.check_text()?;
    let username = Username::parse(&body.username).map_err(ApiError::InvalidRequest)?;
    body.password
        .check_new()
        .map_err(ApiError::InvalidRequest)?;
    let hash = password::hash(body.password)
        .await
        .map_err(ApiError::internal)?;
    let user = state.catalog.create_user(&username, &hash).await?;
    tracing::info!(user = user.id, "user created");
    Ok((StatusCode::CREATED, axum::Json(user.into())))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// Send as `Authorization: Bearer <token>`.
    token: String,
    /// Expiry, RFC 3339.
    expires_at: String,
    user: UserView,
}

/// Sign in: trade a username and password for a bearer token.
#[utoipa::path(post, path = "/v1/sessions", tag = "users", request_body = Credentials,
    responses(
        (status = 200, body = Session),
        (status = 400, body = ErrorBody, description = "`invalid_text`: NUL, control or invisible format characters"),
        (status = 401, body = ErrorBody, description = "`invalid_credentials`"),
    ))]
async fn create_session(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<axum::Json<Session>, ApiError> {
    state.limits.check_auth(peer.ip())?;
    // Before any store sees the name: PostgreSQL refuses NUL with an error.
    body.check_text()?;
    let found = state.catalog.credentials(&body.username).await?;
    // Verify against a dummy hash for unknown users, so the answer takes as
    // long either way and does not reveal which usernames exist.
    let (user, hash) = match found {
        Some((user, hash)) => (Some(user), hash),
        None => (None, state.dummy_hash.to_string()),
    };
    let ok = password::verify(body.password, hash)
        .await
        .map_err(ApiError::internal)?;
    let user = match (user, ok) {
        (Some(user), true) => user,
        _ => return Err(ApiError::BadCredentials),
    };
    let (token, exp) = state
        .tokens
        .issue(user.id, &user.username)
        .map_err(ApiError::internal)?;
    Ok(axum::Json(Session {
        token,
        expires_at: super::views::rfc3339_ms(exp as i64 * 1000),
        user: user.into(),
    }))
}

/// Sign out: this token (its session) is refused from now on, on every
/// node; the user's other sessions stay signed in.
#[utoipa::path(delete, path = "/v1/sessions/current", tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, body = ErrorBody, description = "`unauthorized`: no token, or already signed out or expired"),
    ))]
async fn delete_session(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<StatusCode, ApiError> {
    state
        .sessions
        .revoke(user.id, &user.session, user.expires_at)
        .await?;
    tracing::info!(user = user.id, "signed out");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    id: i64,
    username: String,
    /// Whether this user may use the load panel.
    load_panel: bool,
}

/// Who the token belongs to; `401` once it has expired or was signed out,
/// or when its user no longer exists.
#[utoipa::path(get, path = "/v1/me", tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, body = Me),
        (status = 401, body = ErrorBody, description = "`unauthorized`"),
    ))]
async fn me(State(state): State<AppState>, user: AuthUser) -> axum::Json<Me> {
    axum::Json(Me {
        id: user.id,
        load_panel: state.settings.load_panel.allows(&user.username),
        username: user.username,
    })
}
