//! Cross-origin access for browser apps served from another origin (the
//! Expo web build of the mobile app, at e.g. `http://127.0.0.1:19006`).
//!
//! Off by default: with no `cors.allowed_origins` the server sends no CORS
//! header at all, and browsers keep pages of other sites from reading its
//! answers (same-origin only). With origins listed, [`layer`] answers their
//! preflights and marks their answers readable, on every path: the JSON API,
//! `/openapi.json` and Socket.io's long-polling (`/socket.io/`).
//!
//! Only exact origins (`scheme://host[:port]`), never `*`, and never
//! `Access-Control-Allow-Credentials`: clients authenticate with an
//! `Authorization: Bearer` token that a page has to send on purpose, never
//! with cookies a browser would attach by itself. An origin not listed
//! gets no `Access-Control-Allow-Origin` (its browser withholds the answer)
//! rather than a 403: clients other than browsers send no `Origin`.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, Uri, header};
use serde::{Deserialize, Deserializer, Serialize};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::routes::likes::IDEMPOTENCY_KEY;

/// How long a browser may cache a preflight's answer.
pub const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// `[cors]` in the config file, `TALLY_CORS__ALLOWED_ORIGINS`, `tally serve
/// --cors-origin`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "snake_case")]
pub struct CorsSettings {
    /// Origins whose pages may call the API, exactly as browsers send them
    /// (`http://127.0.0.1:19006`, `https://app.example.com`). Empty: no
    /// CORS at all. A string is split at commas (for the environment).
    #[serde(deserialize_with = "list_or_commas")]
    pub allowed_origins: Vec<String>,
}

/// A setting that is not a list of exact origins.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cors.allowed_origins: {origin:?} {problem}")]
pub struct CorsError {
    pub origin: String,
    pub problem: &'static str,
}

/// The CORS layer for `settings`, `None` when no origin is listed; an error
/// for any entry that is not an exact origin.
pub fn layer(settings: &CorsSettings) -> Result<Option<CorsLayer>, CorsError> {
    let origins = settings
        .allowed_origins
        .iter()
        .map(|o| parse_origin(o))
        .collect::<Result<Vec<_>, _>>()?;
    if origins.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static(IDEMPOTENCY_KEY),
            ])
            .expose_headers([header::RETRY_AFTER])
            .max_age(PREFLIGHT_MAX_AGE),
    ))
}

/// An origin as a browser sends it: `http` or `https`, a host, an optional
/// port, nothing else. Case does not matter (it is lowered); a default port
/// or a trailing slash would never match what a browser sends, so they are
/// refused rather than silently never matching.
fn parse_origin(raw: &str) -> Result<HeaderValue, CorsError> {
    let fail = |problem| CorsError {
        origin: raw.to_owned(),
        problem,
    };
    let origin = raw.trim().to_ascii_lowercase();
    if origin == "*" {
        return Err(fail(
            "is not accepted: list exact origins (scheme://host[:port])",
        ));
    }
    let (scheme, rest) = origin.split_once("://").ok_or_else(|| {
        fail("is not an origin: write scheme://host[:port], e.g. http://127.0.0.1:19006")
    })?;
    if scheme != "http" && scheme != "https" {
        return Err(fail("is not an origin: the scheme must be http or https"));
    }
    if rest.contains(['/', '?', '#']) {
        return Err(fail(
            "has a path, query or trailing slash: an origin is scheme://host[:port] only",
        ));
    }
    if rest.is_empty() {
        return Err(fail("has no host"));
    }
    if rest.contains('@') {
        return Err(fail(
            "has user info: an origin is scheme://host[:port] only",
        ));
    }
    let uri: Uri = origin
        .parse()
        .map_err(|_| fail("is not an origin: write scheme://host[:port]"))?;
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty())
        .ok_or_else(|| fail("has no host"))?;
    if authority.as_str().ends_with(':') {
        return Err(fail("has an empty port"));
    }
    let default_port = if scheme == "http" { 80 } else { 443 };
    if authority.port_u16() == Some(default_port) {
        return Err(fail(
            "names its scheme's default port, which browsers leave out: drop the port",
        ));
    }
    HeaderValue::from_str(&origin).map_err(|_| fail("is not a valid header value"))
}

/// A list, or one string of comma-separated entries (what an environment
/// variable holds).
fn list_or_commas<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCommas {
        List(Vec<String>),
        Commas(String),
    }
    Ok(match ListOrCommas::deserialize(d)? {
        ListOrCommas::List(list) => list,
        ListOrCommas::Commas(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(origins: &[&str]) -> CorsSettings {
        CorsSettings {
            allowed_origins: origins.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn no_origins_no_layer() {
        assert!(layer(&CorsSettings::default()).unwrap().is_none());
    }

    #[test]
    fn exact_origins_are_accepted() {
        for ok in [
            "http://127.0.0.1:19006",
            "https://app.example.com",
            "http://localhost:8081",
            "http://[::1]:19006",
            "HTTPS://App.Example.com",
        ] {
            assert!(parse_origin(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            parse_origin("HTTP://LocalHost:19006").unwrap(),
            "http://localhost:19006"
        );
        assert!(
            layer(&settings(&["http://127.0.0.1:19006", "https://a.example"]))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn anything_else_is_refused_with_the_reason() {
        for (bad, why) in [
            ("not a url", "is not an origin"),
            ("*", "is not accepted"),
            ("http://127.0.0.1:19006/", "trailing slash"),
            ("http://127.0.0.1:19006/app", "has a path"),
            ("http://host?x=1", "query"),
            ("ftp://host", "http or https"),
            ("null", "is not an origin"),
            ("127.0.0.1:19006", "is not an origin"),
            ("http://", "has no host"),
            ("http://user@host", "user info"),
            ("http://host:", "empty port"),
            ("http://host:80", "default port"),
            ("https://host:443", "default port"),
            ("http://ho st", "is not an origin"),
        ] {
            let err = parse_origin(bad).expect_err(bad);
            let message = err.to_string();
            assert!(message.contains(why), "{bad}: {message}");
            assert!(message.starts_with("cors.allowed_origins: "), "{message}");
        }
        let err = layer(&settings(&["http://ok.example", "not a url"])).unwrap_err();
        assert_eq!(err.origin, "not a url");
    }

    #[test]
    fn the_environment_form_is_split_at_commas() {
        let from = |value: serde_json::Value| -> CorsSettings {
            serde_json::from_value(serde_json::json!({ "allowed_origins": value })).unwrap()
        };
        assert_eq!(
            from(serde_json::json!(
                "http://a.example, http://b.example:3000,"
            ))
            .allowed_origins,
            ["http://a.example", "http://b.example:3000"]
        );
        assert_eq!(
            from(serde_json::json!(["http://a.example"])).allowed_origins,
            ["http://a.example"]
        );
        assert!(from(serde_json::json!("")).allowed_origins.is_empty());
    }
}
