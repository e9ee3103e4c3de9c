//! The test harness: a real Tally on port 0 with a fresh data dir, and one
//! helper per endpoint. Behaviour tests take a [`Backend`] so every backend
//! runs the same tests (see `backend_tests!` in main.rs).

use std::io::Cursor;
use std::time::Duration;

use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use tally_client::LikeVerb;
use tally_server::config::Settings;
use tally_server::startup::Application;
use tally_server::state::AppState;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The backends the behaviour tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    /// Redis + PostgreSQL: the machine's services (see `scripts/services.sh`),
    /// a fresh database and a fresh key prefix per test.
    RedisPg,
    /// Redis Cluster + PostgreSQL: the local cluster `scripts/services.sh`
    /// starts (3 masters, 3 replicas on 7000-7005).
    ClusterPg,
}

pub fn test_redis_url() -> String {
    std::env::var("TALLY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn test_cluster_url() -> String {
    std::env::var("TALLY_TEST_CLUSTER_URL")
        .unwrap_or_else(|_| "redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002".into())
}

pub fn test_admin_database_url() -> String {
    std::env::var("TALLY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A unique name for this test's database and key prefix.
pub fn unique_name() -> String {
    format!("tally_t_{:016x}", rand::random::<u64>())
}

/// Creates a fresh database next to `admin_url`'s and returns its URL.
/// Fails loudly when PostgreSQL is not there: run ./scripts/test, which
/// starts it.
pub async fn fresh_database(admin_url: &str) -> String {
    use sqlx::Connection;
    let name = unique_name();
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL at {admin_url} is required (run ./scripts/test): {e}")
        });
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url, |(base, _)| base);
    format!("{base}/{name}")
}

/// Points settings at the production backend with fresh, private state.
pub async fn use_redis_pg(settings: &mut Settings, redis_url: &str, admin_database_url: &str) {
    settings.redis_url = Some(redis_url.to_owned());
    settings.database_url = Some(fresh_database(admin_database_url).await);
    settings.production.key_prefix = unique_name();
    settings.production.partitions = 16;
    settings.production.sync.max_delay_ms = 2;
    settings.production.reconcile_interval_secs = 0;
    // Tests that repair drift do it themselves (the cluster tests turn the
    // reconciliation after a failover back on).
    settings.production.reconcile_after_trouble_secs = 0;
}

pub struct TestApp {
    pub base: String,
    /// What the app was built with (the database and key prefix too).
    pub settings: Settings,
    pub client: Client,
    pub state: AppState,
    pub data_dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: i64,
    pub token: String,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, configure: impl FnOnce(&mut Settings)) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut settings = Settings::for_tests(data_dir.path().to_path_buf());
        match backend {
            Backend::Embedded => {}
            Backend::RedisPg => {
                use_redis_pg(&mut settings, &test_redis_url(), &test_admin_database_url()).await
            }
            Backend::ClusterPg => {
                use_redis_pg(
                    &mut settings,
                    &test_cluster_url(),
                    &test_admin_database_url(),
                )
                .await
            }
        }
        configure(&mut settings);
        Self::spawn_in(settings, data_dir).await
    }

    /// Stops gracefully and starts again on the same data.
    pub async fn restart(mut self) -> Self {
        self.shutdown().await;
        let data_dir =
            std::mem::replace(&mut self.data_dir, tempfile::tempdir().expect("temp dir"));
        Self::spawn_in(self.settings.clone(), data_dir).await
    }

    async fn spawn_in(settings: Settings, data_dir: TempDir) -> Self {
        let app = Application::build(settings.clone())
            .await
            .expect("app builds");
        let base = format!("http://127.0.0.1:{}", app.port());
        let state = app.state().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        let client = Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(2000)
            .build()
            .expect("client");
        Self {
            base,
            settings,
            client,
            state,
            data_dir,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// Graceful stop: waits until accepted likes are committed.
    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(120), server)
                .await
                .expect("the app stops within 120 s")
                .expect("server task")
                .expect("server");
        }
    }

    /// Connections to this app's Redis and PostgreSQL (production backend).
    pub async fn production(&self) -> tally_store::production::Production {
        tally_store::production::Production::connect(
            self.settings
                .redis_url
                .as_deref()
                .expect("production backend"),
            self.settings
                .database_url
                .as_deref()
                .expect("production backend"),
            self.settings.production.clone(),
        )
        .await
        .expect("connect to Redis and PostgreSQL")
    }

    /// Waits until the write-behind has applied everything (a no-op on the
    /// embedded backend, which answers only after its commit).
    pub async fn drain(&self) {
        if self.settings.redis_url.is_none() {
            return;
        }
        let mut p = self.production().await;
        let drained =
            tally_store::production::sync::drain(&mut p.redis, &p.keys, Duration::from_secs(60))
                .await
                .expect("read backlog");
        assert!(drained, "write-behind did not drain in 60 s");
    }

    /// The typed client of this app.
    pub fn api(&self) -> tally_client::Api {
        tally_client::Api::with_client(self.client.clone(), &self.base)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn signup(&self, username: &str, password: &str) -> Response {
        self.client
            .post(self.url("/v1/users"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .expect("request")
    }

    pub async fn login(&self, username: &str, password: &str) -> Response {
        self.client
            .post(self.url("/v1/sessions"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .expect("request")
    }

    /// Signs a user up and in through the API.
    pub async fn user(&self, username: &str) -> TestUser {
        let r = self.signup(username, "password123").await;
        assert_eq!(r.status(), StatusCode::CREATED, "signup {username}");
        let body: Value = self
            .login(username, "password123")
            .await
            .json()
            .await
            .expect("json");
        TestUser {
            id: body["user"]["id"].as_i64().expect("id"),
            token: body["token"].as_str().expect("token").to_owned(),
        }
    }

    /// Creates `n` users in bulk (the `tally users seed` path) with tokens.
    pub async fn seed_users(&self, n: u64) -> Vec<TestUser> {
        tally_store::accounts::seed_users(
            self.state.catalog.as_ref(),
            self.state.tokens.clone(),
            "seed_",
            n,
        )
        .await
        .expect("seed users")
        .tokens
        .into_iter()
        .map(|(id, token)| TestUser { id, token })
        .collect()
    }

    pub async fn upload(&self, token: Option<&str>, image: Vec<u8>, caption: &str) -> Response {
        // Not reused afterwards: a rejected upload is answered before its
        // body is read, and the server then drops the connection.
        self.api()
            .upload_request(token, image, "upload.bin", caption)
            .header("connection", "close")
            .send()
            .await
            .expect("request")
    }

    /// Creates a post with a small PNG and returns its id.
    pub async fn post(&self, author: &TestUser) -> i64 {
        let r = self
            .upload(Some(&author.token), png(32, 24), "a post")
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let body: Value = r.json().await.expect("json");
        body["id"].as_i64().expect("id")
    }

    pub async fn like_op(&self, method: reqwest::Method, path: &str, token: &str) -> Response {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// A like operation, answered as it came (tests read errors too).
    pub async fn like_verb(&self, user: &TestUser, post: i64, verb: LikeVerb) -> Response {
        self.api()
            .like_request(&user.token, post, verb)
            .send()
            .await
            .expect("request")
    }

    pub async fn like(&self, user: &TestUser, post: i64) -> Response {
        self.like_verb(user, post, LikeVerb::Like).await
    }

    pub async fn unlike(&self, user: &TestUser, post: i64) -> Response {
        self.like_verb(user, post, LikeVerb::Unlike).await
    }

    pub async fn toggle(&self, user: &TestUser, post: i64) -> Response {
        self.like_verb(user, post, LikeVerb::Toggle).await
    }

    pub async fn get_post(&self, viewer: Option<&TestUser>, post: i64) -> Value {
        let r = self
            .api()
            .post_request(viewer.map(|v| v.token.as_str()), post)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.expect("json")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub async fn get_json(&self, path: &str) -> Value {
        self.get(path).await.json().await.expect("json")
    }

    /// Every liker of a post, following cursors. Likers are read from the
    /// durable store, which the production backend's fast mode updates
    /// milliseconds after the answer: drain first.
    pub async fn all_likers(&self, post: i64) -> Vec<Value> {
        self.drain().await;
        all_pages(
            &self.client,
            &self.url(&format!("/v1/posts/{post}/likers?limit=100")),
        )
        .await
    }
}

/// Every item of a paginated list, following `nextCursor` from `url`
/// (which already has a query string).
pub async fn all_pages(client: &Client, url: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut next = url.to_owned();
    loop {
        let page: Value = client
            .get(&next)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        out.extend(page["items"].as_array().expect("items").iter().cloned());
        match page["nextCursor"].as_str() {
            Some(c) => next = format!("{url}&cursor={c}"),
            None => return out,
        }
    }
}

/// Asserts an error answer's status and code.
/// A like answer as (liked, likeCount); asserts it was a 200.
pub async fn answer(r: Response) -> (bool, i64) {
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.expect("json");
    (
        v["liked"].as_bool().expect("liked"),
        v["likeCount"].as_i64().expect("likeCount"),
    )
}

pub async fn assert_error(response: Response, status: StatusCode, code: &str) {
    assert_eq!(response.status(), status, "status");
    let body: Value = response.json().await.expect("error body is JSON");
    assert_eq!(body["error"]["code"], code, "code in {body}");
    assert!(body["error"]["message"].is_string(), "message in {body}");
}

/// A PNG of the given size.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    encode(width, height, image::ImageFormat::Png)
}

pub fn encode(width: u32, height: u32, format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 7 % 256) as u8, (y * 5 % 256) as u8, 99])
    });
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, format)
        .expect("encode");
    out.into_inner()
}

/// A tiny PNG whose header claims `width`×`height` pixels.
pub fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    tally_server::images::fixtures::png_claiming(width, height)
}
