//! The HTTP endpoints, typed.

use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::{PostId, UserId};

/// A like operation, as the API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LikeVerb {
    /// `PUT /v1/posts/{id}/like`: idempotent.
    Like,
    /// `DELETE /v1/posts/{id}/like`: idempotent.
    Unlike,
    /// `POST /v1/posts/{id}/like/toggle`: not idempotent, unless sent with
    /// an `Idempotency-Key` ([`Api::toggle_once`]).
    Toggle,
}

/// The answer to a like operation: the state and count right after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LikeAnswer {
    pub liked: bool,
    pub like_count: i64,
    /// The count's version, monotonic per post: of an answer and a live
    /// push, the one with the higher version is the newer count.
    pub version: i64,
}

/// What a client reads of a post.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostSummary {
    pub id: PostId,
    pub like_count: i64,
    /// `like_count`'s version (0: unknown, older than any push).
    pub like_version: i64,
    pub liked_by_me: bool,
}

/// What a client reads of one liker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LikerSummary {
    pub id: UserId,
    pub username: String,
}

/// One page of a keyset-paginated list.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Why a call did not give its answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The server refused or failed, with its stable error code.
    #[error("{status} {code}: {message}")]
    Status {
        status: StatusCode,
        code: String,
        message: String,
        /// `Retry-After`, in seconds, on 429 and 503.
        retry_after: Option<u64>,
    },
    #[error("no answer in time")]
    Timeout,
    #[error("connection: {0}")]
    Connection(#[source] reqwest::Error),
    /// The server answered `status` but not with the JSON expected.
    #[error("unexpected answer ({status}): {source}")]
    Decode {
        status: StatusCode,
        #[source]
        source: reqwest::Error,
    },
}

impl ApiError {
    /// Whether a write may have happened anyway (a 5xx, no answer, or an
    /// unreadable one): the client must read the state back to know.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Self::Status { status, .. } => status.is_server_error(),
            Self::Timeout | Self::Connection(_) | Self::Decode { .. } => true,
        }
    }

    /// A short label for error tallies: `429 rate_limited`, `timeout`…
    pub fn label(&self) -> String {
        match self {
            Self::Status { status, code, .. } => format!("{} {code}", status.as_u16()),
            Self::Timeout => "timeout".into(),
            Self::Connection(_) => "connection".into(),
            Self::Decode { .. } => "decode".into(),
        }
    }

    fn from_reqwest(err: reqwest::Error) -> Self {
        if err.is_timeout() {
            Self::Timeout
        } else {
            Self::Connection(err)
        }
    }
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorFields,
}

#[derive(Deserialize)]
struct ErrorFields {
    code: String,
    #[serde(default)]
    message: String,
}

/// The endpoints of one Tally, over one connection pool.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    /// A client of the Tally at `base` (`http://host:port`) with a
    /// per-request `timeout` and up to `idle_per_host` pooled connections.
    pub fn new(base: &str, timeout: Duration, idle_per_host: usize) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(idle_per_host)
            .build()
            .map_err(ApiError::Connection)?;
        Ok(Self::with_client(http, base))
    }

    /// A client over an existing `reqwest` client (its settings kept).
    pub fn with_client(http: reqwest::Client, base: &str) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let request = self.http.request(method, self.url(path));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    // Requests, for callers that want the raw response (tests of errors).

    pub fn like_request(&self, token: &str, post: PostId, verb: LikeVerb) -> RequestBuilder {
        let (method, path) = match verb {
            LikeVerb::Like => (Method::PUT, format!("/v1/posts/{post}/like")),
            LikeVerb::Unlike => (Method::DELETE, format!("/v1/posts/{post}/like")),
            LikeVerb::Toggle => (Method::POST, format!("/v1/posts/{post}/like/toggle")),
        };
        self.request(method, &path, Some(token))
    }

    /// A toggle with an `Idempotency-Key`: a retry with the same key
    /// answers what the first did instead of flipping again.
    pub fn toggle_request(&self, token: &str, post: PostId, key: &str) -> RequestBuilder {
        self.like_request(token, post, LikeVerb::Toggle)
            .header("Idempotency-Key", key)
    }

    pub fn post_request(&self, token: Option<&str>, post: PostId) -> RequestBuilder {
        self.request(Method::GET, &format!("/v1/posts/{post}"), token)
    }

    pub fn feed_request(
        &self,
        token: Option<&str>,
        limit: u32,
        cursor: Option<&str>,
    ) -> RequestBuilder {
        self.request(Method::GET, "/v1/posts", token)
            .query(&[("limit", limit.to_string())])
            .query(&cursor.map(|c| vec![("cursor", c)]).unwrap_or_default())
    }

    pub fn likers_request(&self, post: PostId, limit: u32, cursor: Option<&str>) -> RequestBuilder {
        self.request(Method::GET, &format!("/v1/posts/{post}/likers"), None)
            .query(&[("limit", limit.to_string())])
            .query(&cursor.map(|c| vec![("cursor", c)]).unwrap_or_default())
    }

    /// `POST /v1/posts`: an image (`file_name` hints its type) and a caption.
    pub fn upload_request(
        &self,
        token: Option<&str>,
        image: Vec<u8>,
        file_name: &str,
        caption: &str,
    ) -> RequestBuilder {
        let form = reqwest::multipart::Form::new()
            .part(
                "image",
                reqwest::multipart::Part::bytes(image).file_name(file_name.to_owned()),
            )
            .text("caption", caption.to_owned());
        self.request(Method::POST, "/v1/posts", token)
            .multipart(form)
    }

    // Typed calls.

    /// Likes, unlikes or toggles; the answer carries the count after it.
    pub async fn like(
        &self,
        token: &str,
        post: PostId,
        verb: LikeVerb,
    ) -> Result<LikeAnswer, ApiError> {
        send(self.like_request(token, post, verb)).await
    }

    /// Toggles once per `key`: safe to retry after a timeout with the
    /// same key.
    pub async fn toggle_once(
        &self,
        token: &str,
        post: PostId,
        key: &str,
    ) -> Result<LikeAnswer, ApiError> {
        send(self.toggle_request(token, post, key)).await
    }

    /// A post as `token`'s user sees it (anonymous without a token).
    pub async fn post(&self, token: Option<&str>, post: PostId) -> Result<PostSummary, ApiError> {
        send(self.post_request(token, post)).await
    }

    /// A page of the feed, newest first.
    pub async fn feed(
        &self,
        token: Option<&str>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<PostSummary>, ApiError> {
        send(self.feed_request(token, limit, cursor)).await
    }

    /// A page of who liked `post`, newest like first.
    pub async fn likers(
        &self,
        post: PostId,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<LikerSummary>, ApiError> {
        send(self.likers_request(post, limit, cursor)).await
    }

    /// Every liker of `post`, page by page.
    pub async fn all_likers(&self, post: PostId) -> Result<Vec<LikerSummary>, ApiError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.likers(post, 100, cursor.as_deref()).await?;
            out.extend(page.items);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// Creates a post; returns its id.
    pub async fn upload(
        &self,
        token: &str,
        image: Vec<u8>,
        file_name: &str,
        caption: &str,
    ) -> Result<PostId, ApiError> {
        #[derive(Deserialize)]
        struct Created {
            id: PostId,
        }
        let created: Created =
            send(self.upload_request(Some(token), image, file_name, caption)).await?;
        Ok(created.id)
    }
}

/// Sends `request` and reads a 2xx answer as `T`, anything else as an
/// [`ApiError`] with the server's error code.
pub async fn send<T: DeserializeOwned>(request: RequestBuilder) -> Result<T, ApiError> {
    let response = request.send().await.map_err(ApiError::from_reqwest)?;
    read(response).await
}

async fn read<T: DeserializeOwned>(response: Response) -> Result<T, ApiError> {
    let status = response.status();
    if status.is_success() {
        return response
            .json()
            .await
            .map_err(|source| ApiError::Decode { status, source });
    }
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let (code, message) = match response.json::<ErrorEnvelope>().await {
        Ok(e) => (e.error.code, e.error.message),
        Err(_) => (String::new(), String::new()),
    };
    Err(ApiError::Status {
        status,
        code,
        message,
        retry_after,
    })
}
