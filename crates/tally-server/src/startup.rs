//! Building and running the application.
//!
//! [`Application::build`] opens the stores, binds the listener (port 0 in
//! tests) and assembles the router; [`Application::run_until`] serves until
//! the given future resolves, then drains: in-flight requests finish and the
//! like writer commits everything it accepted before the process exits.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use tally_store::accounts::{self, TokenKeys, password};
use tally_store::embedded::{self, EmbeddedLikes, SqliteCatalog};
use tally_store::production::reconcile::{self, DriftReport};
use tally_store::production::{BackgroundParts, Production, RedisLikes, start_background};
use tally_store::{
    CancelOnDrop, Catalog, ChangeFeed, Likes, SeededUsers, Stage, StoreError, Tasks,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::live::LiveHub;
use crate::load_panel::LoadPanel;
use crate::media::MediaStore;
use crate::ratelimit::RateLimits;
use crate::routes;
use crate::sessions::Sessions;
use crate::state::{AppState, Shared};
use crate::trending::TrendingCache;

/// How long each shutdown stage may take (see [`tally_store::tasks`]).
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("tokens: {0}")]
    Token(#[from] accounts::TokenError),
    #[error("password hashing: {0}")]
    Password(#[from] password::PasswordError),
    #[error("configuration: {0}")]
    Config(String),
    /// Not a source: the message says it all (no repeat in error chains).
    #[error("configuration: {0}")]
    Cors(crate::cors::CorsError),
}

/// A built, bound, not yet serving application.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    /// Every background task of the node; stopped in order after serving.
    tasks: Tasks,
    /// Stops the tasks if the application is dropped without being run.
    _cancel_on_drop: CancelOnDrop,
}

/// The stores the settings select.
struct Backend {
    catalog: Arc<dyn Catalog>,
    likes: Arc<dyn Likes>,
    /// Where the backend announces count changes.
    changes: ChangeFeed,
    /// Set on the production backend.
    production: Option<(Production, Arc<RedisLikes>)>,
}

async fn create_data_dir(settings: &Settings) -> Result<(), StartupError> {
    let dir = &settings.data_dir;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|source| StartupError::DataDir {
            path: dir.display().to_string(),
            source,
        })
}

/// Connects the production backend, which needs both URLs.
pub async fn connect_production(settings: &Settings) -> Result<Option<Production>, StartupError> {
    match (&settings.redis_url, &settings.database_url) {
        (None, None) => Ok(None),
        (Some(redis), Some(database)) => Ok(Some(
            Production::connect(redis, database, settings.production.clone()).await?,
        )),
        _ => Err(StartupError::Config(
            "the production backend needs both --redis-url and --database-url".into(),
        )),
    }
}

/// Opens the stores; the embedded writer starts on `tasks`.
async fn open_backend(settings: &Settings, tasks: &Tasks) -> Result<Backend, StartupError> {
    create_data_dir(settings).await?;
    let changes = ChangeFeed::new();
    if let Some(production) = connect_production(settings).await? {
        let config = settings.likes_config();
        let likes = Arc::new(
            production
                .likes(config.ack_timeout)
                .with_idempotency(config.idempotency_retention, config.idempotency_max_keys),
        );
        return Ok(Backend {
            catalog: Arc::new(production.catalog()),
            likes: likes.clone(),
            changes,
            production: Some((production, likes)),
        });
    }
    let dir = &settings.data_dir;
    let pool = embedded::open(dir).await?;
    let likes = EmbeddedLikes::start(
        pool.clone(),
        dir,
        settings.likes_config(),
        changes.clone(),
        tasks,
    )
    .await?;
    Ok(Backend {
        catalog: Arc::new(SqliteCatalog::new(pool)),
        likes: Arc::new(likes),
        changes,
        production: None,
    })
}

/// A URL this process can reach itself at: the bound port on loopback
/// (a wildcard address is not something to connect to).
fn loopback_url(listener: &TcpListener, configured: SocketAddr) -> String {
    let addr = listener.local_addr().unwrap_or(configured);
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        // Settings checked before anything starts.
        let cors = crate::cors::layer(&settings.cors).map_err(StartupError::Cors)?;
        let tasks = Tasks::new();
        // A build that fails halfway stops what it already started.
        let cancel_on_drop = tasks.cancel_on_drop();
        let backend = open_backend(&settings, &tasks).await?;
        let live = LiveHub::start(
            backend.likes.clone(),
            settings.live_max_updates_per_sec,
            &backend.changes,
            &tasks,
        );
        if let Some((production, likes)) = &backend.production {
            start_background(
                production,
                &tasks,
                BackgroundParts {
                    likes: Some(likes.clone()),
                    changes: Some(backend.changes.clone()),
                    worker: settings.production.sync.in_process,
                },
            );
        }
        let keys = backend.catalog.signing_keys().await?;
        let tokens = Arc::new(TokenKeys::new(
            &keys,
            Duration::from_secs(settings.token_ttl_secs),
        )?);
        let sessions = Arc::new(Sessions::new(
            backend.catalog.clone(),
            tokens.clone(),
            settings.auth.clone(),
        ));
        tasks.spawn(Stage::Serve, "signing-key-reload", {
            let sessions = sessions.clone();
            move |stop| sessions.reload_keys_until(stop)
        });
        let media_dir = settings.data_dir.join("media");
        let media = MediaStore::open(media_dir.clone())
            .await
            .map_err(|source| StartupError::DataDir {
                path: media_dir.display().to_string(),
                source,
            })?;
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| StartupError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        let load_panel = LoadPanel::new(
            loopback_url(&listener, settings.listen),
            settings.data_dir.join("load-runs"),
            tasks.clone(),
        );
        let state = AppState::new(Shared {
            load_panel,
            live,
            catalog: backend.catalog,
            likes: backend.likes,
            tokens,
            sessions,
            media,
            limits: RateLimits::new(settings.rate_limits),
            metrics: crate::telemetry::metrics_handle(),
            image_slots: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
            dummy_hash: password::dummy_hash().await?,
            draining: AtomicBool::new(false),
            trending: TrendingCache::new(Duration::from_millis(settings.trending_cache_ms)),
            settings,
        });
        let router = routes::router(state.clone(), cors);
        Ok(Self {
            listener,
            router,
            state,
            tasks,
            _cancel_on_drop: cancel_on_drop,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| self.state.settings.listen)
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// The shared state, for tests and tools running in the same process.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then drains: `/readyz` answers 503
    /// `draining` while the node keeps serving for `drain_grace_ms` (load
    /// balancers take it out of rotation meanwhile), then it stops
    /// accepting, in-flight requests are answered, and the background tasks
    /// stop in order (see [`Tasks::shutdown`]), the last ones making
    /// everything accepted durable.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (metrics, state) = (self.state.metrics.clone(), self.state.clone());
        self.tasks.spawn(Stage::Serve, "housekeeping", move |stop| {
            housekeeping(metrics, state, stop)
        });
        // Our own accept loop (not `axum::serve`): timeouts and connection
        // caps, see [`crate::connections`].
        let served = crate::connections::serve(
            self.listener,
            self.router,
            self.state.settings.connections.clone(),
            self.state.settings.live_limits.max_message_bytes,
            drain_after(shutdown, self.state.clone()),
            SHUTDOWN_DEADLINE,
        )
        .await;
        let stopped = self.tasks.shutdown(SHUTDOWN_DEADLINE).await;
        tracing::info!("stopped");
        served?;
        if !stopped {
            return Err(std::io::Error::other(
                "background tasks did not stop by the shutdown deadline",
            ));
        }
        Ok(())
    }
}

/// Resolves `drain_grace_ms` after `shutdown` does, having marked the
/// node draining in between: until then the listener still accepts and
/// every request is served, so a balancer's health checks (which now see
/// 503) move traffic away before connections are refused.
async fn drain_after(shutdown: impl Future<Output = ()>, state: AppState) {
    shutdown.await;
    state.draining.store(true, Ordering::Relaxed);
    let grace = state.settings.drain_grace();
    if !grace.is_zero() {
        tracing::info!(
            grace_ms = state.settings.drain_grace_ms,
            "draining: /readyz answers 503 while requests are still served for the grace period"
        );
        tokio::time::sleep(grace).await;
    }
    tracing::info!("closing the listener: finishing requests and committing accepted likes");
}

/// Periodic upkeep: histogram compaction and rate-limiter key expiry.
async fn housekeeping(
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    state: AppState,
    stop: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return Ok(()),
        }
        metrics.run_upkeep();
        n += 1;
        if n.is_multiple_of(12) {
            state.limits.retain_recent();
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}

/// `tally migrate`.
pub async fn migrate(settings: &Settings) -> Result<(), StartupError> {
    let tasks = Tasks::new();
    let _cancel_on_drop = tasks.cancel_on_drop();
    open_backend(settings, &tasks).await?;
    tasks.shutdown(SHUTDOWN_DEADLINE).await;
    Ok(())
}

/// `tally worker`: the write-behind alone, until `shutdown` resolves.
pub async fn worker(
    settings: &Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartupError> {
    let production = connect_production(settings).await?.ok_or_else(|| {
        StartupError::Config("`tally worker` needs --redis-url and --database-url".into())
    })?;
    let tasks = Tasks::new();
    start_background(
        &production,
        &tasks,
        BackgroundParts {
            likes: None,
            changes: None,
            worker: true,
        },
    );
    shutdown.await;
    tasks.shutdown(SHUTDOWN_DEADLINE).await;
    Ok(())
}

/// `tally reconcile`.
pub async fn reconcile(settings: &Settings, repair: bool) -> Result<DriftReport, StartupError> {
    let mut production = connect_production(settings).await?.ok_or_else(|| {
        StartupError::Config("`tally reconcile` needs --redis-url and --database-url".into())
    })?;
    reconcile::reconcile(
        &mut production.redis,
        &production.pg,
        &production.keys,
        repair,
    )
    .await
    .map_err(|e| StartupError::Store(StoreError::Internal(e.into())))
}

/// `tally users seed` (and `tally bench` without a tokens file): users
/// `{prefix}{n}` in the store the settings select, and with `tokens_out`
/// a file of `{id} {token}` lines, minted as they are written.
pub async fn seed_users(
    settings: &Settings,
    prefix: &str,
    count: u64,
    tokens_out: Option<&Path>,
) -> Result<SeededUsers, SeedCommandError> {
    let tasks = Tasks::new();
    let _cancel_on_drop = tasks.cancel_on_drop();
    let backend = open_backend(settings, &tasks).await?;
    let seeded = async {
        let users = backend.catalog.seed_users(prefix, count).await?;
        if let Some(path) = tokens_out {
            let keys = backend.catalog.signing_keys().await?;
            let keys = TokenKeys::new(&keys, Duration::from_secs(settings.token_ttl_secs))?;
            let (path, prefix) = (path.to_owned(), prefix.to_owned());
            tokio::task::spawn_blocking(move || {
                accounts::write_tokens(&path, accounts::mint_tokens(&keys, users, &prefix))
            })
            .await
            .map_err(accounts::SeedError::from)??;
        }
        Ok::<_, SeedCommandError>(users)
    }
    .await;
    tasks.shutdown(SHUTDOWN_DEADLINE).await;
    seeded
}

/// `tally keys rotate`: a new signing key for every new token; the current
/// ones keep verifying for `grace`, then retire. Returns the live keys,
/// newest first.
pub async fn rotate_keys(
    settings: &Settings,
    grace: Duration,
) -> Result<Vec<accounts::SigningKey>, StartupError> {
    let tasks = Tasks::new();
    let _cancel_on_drop = tasks.cancel_on_drop();
    let backend = open_backend(settings, &tasks).await?;
    let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    let keys = backend.catalog.rotate_signing_key(grace_ms).await;
    tasks.shutdown(SHUTDOWN_DEADLINE).await;
    Ok(keys?)
}

#[derive(Debug, thiserror::Error)]
pub enum SeedCommandError {
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error(transparent)]
    Seed(#[from] accounts::SeedError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("tokens: {0}")]
    Token(#[from] accounts::TokenError),
}
