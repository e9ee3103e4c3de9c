//! The one place where failures become HTTP answers.
//!
//! Every error a client sees is `{"error": {"code", "message"}}` with a stable
//! snake_case `code`: clients branch on the code, people read the message.
//! Server-side failures are logged with their cause and shown to the client
//! only as `internal`, so internals never leak.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use tally_store::StoreError;

/// An error answer. Construct it with the helpers or `From` conversions.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    /// Text with characters it may not hold (see [`crate::text`]).
    #[error("{0}")]
    InvalidText(String),
    #[error("authentication required or token invalid")]
    Unauthorized,
    /// A well-signed token that was signed out, or whose user is gone.
    #[error("this session has ended; sign in again")]
    SessionRevoked,
    #[error("invalid username or password")]
    BadCredentials,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("username is already taken")]
    UsernameTaken,
    #[error("a load run is in progress; wait for its verdict")]
    LoadRunActive,
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    UnprocessableImage(String),
    #[error("too many requests; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Unavailable(String),
    /// The node holds as many connections as it may: retry soon, or
    /// elsewhere.
    #[error("{0}")]
    Overloaded(String),
    /// The client holds as many connections as one address may.
    #[error("{0}")]
    TooManyConnections(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// The JSON body of every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case, for programs.
    pub code: &'static str,
    /// Human readable; may change between versions.
    pub message: String,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidRequest(message.into())
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(err.into())
    }

    /// The HTTP status and stable code of this error.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            Self::InvalidText(_) => (StatusCode::BAD_REQUEST, "invalid_text"),
            // The same code as any dead token: every client already signs
            // out on it; the message tells the two apart for people.
            Self::SessionRevoked => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::BadCredentials => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::UsernameTaken => (StatusCode::CONFLICT, "username_taken"),
            Self::LoadRunActive => (StatusCode::CONFLICT, "load_run_active"),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::UnprocessableImage(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_image"),
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Self::TooManyConnections(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_connections"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        match &self {
            Self::Internal(cause) => tracing::error!(error = ?cause, "request failed"),
            Self::Unavailable(why) => tracing::warn!(%why, "service unavailable"),
            _ => {}
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message: self.to_string(),
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Self::RateLimited { retry_after_secs } = self
            && let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if let Self::Overloaded(_) | Self::TooManyConnections(_) = self {
            let headers = response.headers_mut();
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        if let Some(why) = err.unavailable() {
            return Self::Unavailable(why);
        }
        match err {
            StoreError::PostNotFound(id) => Self::NotFound(format!("post {id} not found")),
            StoreError::UsernameTaken => Self::UsernameTaken,
            StoreError::UnknownUser(_) => Self::SessionRevoked,
            StoreError::Unavailable(why) => Self::Unavailable(why),
            StoreError::Database(e) => Self::Internal(e.into()),
            StoreError::Internal(e) => Self::Internal(e),
        }
    }
}

/// Turns axum's extractor rejections (bad JSON, bad path, bad query) into
/// our error shape instead of axum's plain-text bodies.
macro_rules! rejection_into_api_error {
    ($($rejection:ty),* $(,)?) => {$(
        impl From<$rejection> for ApiError {
            fn from(rejection: $rejection) -> Self {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    return Self::PayloadTooLarge(rejection.body_text());
                }
                if rejection.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
                    return Self::UnsupportedMediaType(rejection.body_text());
                }
                Self::InvalidRequest(rejection.body_text())
            }
        }
    )*};
}

rejection_into_api_error!(
    axum::extract::rejection::JsonRejection,
    axum::extract::rejection::PathRejection,
    axum::extract::rejection::QueryRejection,
    axum::extract::multipart::MultipartRejection,
);

impl From<axum::extract::multipart::MultipartError> for ApiError {
    fn from(err: axum::extract::multipart::MultipartError) -> Self {
        if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::PayloadTooLarge(err.body_text())
        } else {
            Self::InvalidRequest(err.body_text())
        }
    }
}

/// Answers for routes that do not exist.
pub async fn not_found_fallback() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// Answers for routes that exist with another method.
pub async fn method_not_allowed_fallback() -> ApiError {
    ApiError::MethodNotAllowed
}
