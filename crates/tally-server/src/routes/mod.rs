//! The HTTP surface: each feature module has its own `router()`; this one
//! merges them, adds the cross-cutting layers (limits, timeouts, logs,
//! metrics, panic safety, CORS when configured) and serves the OpenAPI
//! document and media files.

mod common_errors;
mod extract;
mod health;
pub(crate) mod likes;
mod load_panel;
mod posts;
mod trending;
mod users;
pub mod views;

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower::util::option_layer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::CorsLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::error::{self, ApiError};
use crate::live;
use crate::media;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Tally", description = "Exact, durable, live like counts for image posts."),
    modifiers(&BearerAuth),
    tags(
        (name = "users", description = "Sign-up and sign-in"),
        (name = "posts", description = "Image posts and the feed"),
        (name = "likes", description = "Likes: idempotent, exact, with the new count"),
        (name = "operations", description = "Health and metrics"),
        (name = "live", description = "Live counts (also over Socket.io at /socket.io/)"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document, as served at `/openapi.json`.
pub fn openapi(max_upload_bytes: usize) -> utoipa::openapi::OpenApi {
    let mut openapi = api_routes(max_upload_bytes).split_for_parts().1;
    common_errors::add(&mut openapi);
    openapi
}

fn api_routes(max_upload_bytes: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(users::router())
        .merge(posts::router(max_upload_bytes))
        .merge(trending::router())
        .merge(likes::router())
        .merge(health::router())
        .merge(load_panel::router())
        .routes(utoipa_axum::routes!(live::websocket::live))
}

/// The whole application; `cors` (see [`crate::cors::layer`]) wraps
/// everything but the `Referrer-Policy` header, Socket.io included.
pub fn router(state: AppState, cors: Option<CorsLayer>) -> Router {
    let settings = state.settings.clone();
    let socketio = live::socketio::layer(state.live.clone(), &settings);
    let (api, mut openapi) = api_routes(settings.max_upload_bytes).split_for_parts();
    common_errors::add(&mut openapi);

    // The docs page loads only its own files; Swagger UI sets inline
    // styles, hence 'unsafe-inline' for styles (never for scripts).
    let docs = Router::new()
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(DOCS_CONTENT_SECURITY_POLICY),
        ));

    Router::new()
        .merge(api)
        .merge(docs)
        .nest(media::URL_PREFIX, media::router())
        .merge(crate::web::router())
        .fallback(error::not_found_fallback)
        .method_not_allowed_fallback(error::method_not_allowed_fallback)
        .layer(DefaultBodyLimit::max(settings.max_json_bytes))
        .layer(middleware::from_fn_with_state(
            Duration::from_secs(settings.request_timeout_secs),
            timeout,
        ))
        .layer(middleware::from_fn(record_metrics))
        .layer(
            // Per-request spans and lines at DEBUG (see `telemetry`): off
            // by default, `RUST_LOG=tower_http=debug` turns them on.
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::DEBUG))
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        // Outermost: Socket.io's long-polling requests must not pass the
        // request timeout (a poll waits by design).
        .layer(socketio)
        // Cross-origin access when configured: preflights are answered here,
        // before any handler (authentication, rate limits) sees them.
        .layer(option_layer(cors))
        // Every answer, Socket.io's too: no page or API answer leaks its
        // URL to another site.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static(REFERRER_POLICY),
        ))
        .with_state(state)
}

/// Sent on every answer (see [`router`]).
pub const REFERRER_POLICY: &str = "no-referrer";

/// `/docs`: its own scripts only, inline styles (Swagger UI sets them), no
/// framing.
const DOCS_CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     style-src 'self' 'unsafe-inline'; script-src 'self'; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// Answers 503 when a request takes too long, in our error shape.
async fn timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Unavailable("request timed out".into()).into_response(),
    }
}

/// Request count and latency per route template (never per id).
async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let response = next.run(request).await;
    if response.status().is_server_error() {
        tracing::warn!(%method, %route, status = response.status().as_u16(), "request failed");
    }
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
