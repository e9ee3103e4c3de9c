//! Who is calling: axum extractors that turn an `Authorization: Bearer …`
//! header into a user. Tokens themselves (signing, verification, password
//! hashing) are [`tally_store::accounts`]'s; whether a well-signed token's
//! session is still alive (not signed out, its user not gone) is
//! [`crate::sessions`]'s cached check, run here for every route alike.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use tally_store::accounts::{TokenError, Verified};
use tally_store::domain::UserId;

use crate::error::ApiError;
use crate::state::AppState;

/// A caller with a valid token. Rejects with 401 `unauthorized` otherwise.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: UserId,
    /// From the signed token (usernames never change).
    pub username: String,
    /// The token's session: what sign-out revokes.
    pub session: String,
    /// The token's expiry, Unix seconds.
    pub expires_at: u64,
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

async fn verify(state: &AppState, token: &str) -> Result<AuthUser, ApiError> {
    let verified: Verified = match state.tokens.verify(token) {
        Err(TokenError::UnknownKey) if state.sessions.reload_keys_on_demand().await => {
            state.tokens.verify(token)
        }
        other => other,
    }
    .map_err(|_| ApiError::Unauthorized)?;
    let id = verified
        .claims
        .user_id()
        .map_err(|_| ApiError::Unauthorized)?;
    state.sessions.check(id, &verified.session).await?;
    Ok(AuthUser {
        id,
        username: verified.claims.name,
        session: verified.session,
        expires_at: verified.claims.exp,
    })
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?.ok_or(ApiError::Unauthorized)?;
        verify(state, token).await
    }
}

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match bearer(parts)? {
            None => Ok(Self(None)),
            Some(token) => Ok(Self(Some(verify(state, token).await?.id))),
        }
    }
}
