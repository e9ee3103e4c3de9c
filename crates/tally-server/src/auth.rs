//! Who is calling: axum extractors that turn an `Authorization: Bearer …`
//! header into a user id. Tokens themselves (signing, verification,
//! password hashing) are [`tally_store::accounts`]'s.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use tally_store::domain::UserId;

use crate::error::ApiError;
use crate::state::AppState;

/// A caller with a valid token. Rejects with 401 `unauthorized` otherwise.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: UserId,
    /// From the signed token (usernames never change).
    pub username: String,
}

/// A caller who may be anonymous; a present but invalid token is still 401,
/// so a client with an expired token learns it instead of silently seeing
/// `likedByMe: false`.
#[derive(Debug, Clone, Copy)]
pub struct MaybeUser(pub Option<UserId>);

fn bearer(parts: &Parts) -> Result<Option<&str>, ApiError> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| ApiError::Unauthorized)?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or(ApiError::Unauthorized)?;
    Ok(Some(token.trim()))
}

fn verify(state: &AppState, token: &str) -> Result<AuthUser, ApiError> {
    let claims = state
        .tokens
        .verify(token)
        .map_err(|_| ApiError::Unauthorized)?;
    Ok(AuthUser {
        id: claims.user_id().map_err(|_| ApiError::Unauthorized)?,
        username: claims.name,
    })
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?.ok_or(ApiError::Unauthorized)?;
        verify(state, token)
    }
}

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match bearer(parts)? {
            None => Ok(Self(None)),
            Some(token) => Ok(Self(Some(verify(state, token)?.id))),
        }
    }
}
