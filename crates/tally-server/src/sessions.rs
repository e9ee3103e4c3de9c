//! Revocable tokens: what a signature alone cannot say. A token may be
//! well signed and unexpired and still dead: its session was signed out
//! (`DELETE /v1/sessions/current`), or its user no longer exists. Both live
//! in the shared store (PostgreSQL, or the embedded SQLite), so every node
//! of a deployment agrees; each node caches the answer per session for
//! `auth.session_cache_ms`, so the like path pays a map lookup, and one
//! store round trip per active session per cache period.
//!
//! Bounds, written down in docs/SECURITY.md: a sign-out is effective at
//! once on the node that took it and within the cache period on the others.
//! When the store cannot answer, the last known answer stands, and a session
//! never seen is let through on its signature alone (counted in
//! `tally_auth_session_lookup_errors_total`): a PostgreSQL outage must not
//! stop likes, which the production backend keeps taking without it.
//!
//! Signing keys are reloaded from the store every `auth.key_reload_secs`,
//! and at once (at most once a second) when a token names a key this node
//! has not loaded: after `tally keys rotate`, whichever node reloads first
//! signs with the new key and the others accept its tokens.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tally_store::accounts::TokenKeys;
use tally_store::domain::UserId;
use tally_store::{Catalog, SessionStatus, StoreError};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;

/// `[auth]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "snake_case")]
pub struct AuthSettings {
    /// Check every token's session (signed out? user gone?) against the
    /// store, through the cache. Off only to measure what the check costs.
    pub check_sessions: bool,
    /// How long a node trusts its cached answer for a session: the longest
    /// a sign-out takes to reach the other nodes.
    pub session_cache_ms: u64,
    /// Most sessions cached per node.
    pub session_cache_capacity: usize,
    /// How often a node reloads the signing keys (rotation, retirement).
    pub key_reload_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            check_sessions: true,
            session_cache_ms: 10_000,
            session_cache_capacity: 200_000,
            key_reload_secs: 60,
        }
    }
}

/// A cached answer about one session.
#[derive(Debug, Clone, Copy)]
struct Entry {
    status: SessionStatus,
    checked: Instant,
}

/// The per-node session check and key reloads.
pub struct Sessions {
    catalog: Arc<dyn Catalog>,
    tokens: Arc<TokenKeys>,
    settings: AuthSettings,
    /// By session id. Bounded by `session_cache_capacity`: when full, stale
    /// entries go, and if that is not enough, all of them (a burst of store
    /// lookups, rather than unbounded memory).
    cache: DashMap<String, Entry>,
    /// When keys were last reloaded on demand. A std Mutex: held for a
    /// compare and a store, never across an await.
    last_reload: Mutex<Option<Instant>>,
}

impl Sessions {
    pub fn new(catalog: Arc<dyn Catalog>, tokens: Arc<TokenKeys>, settings: AuthSettings) -> Self {
        Self {
            catalog,
            tokens,
            settings,
            cache: DashMap::new(),
            last_reload: Mutex::new(None),
        }
    }

    fn ttl(&self) -> Duration {
        Duration::from_millis(self.settings.session_cache_ms)
    }

    /// Refuses (401) a session that was signed out or whose user is gone.
    pub async fn check(&self, user: UserId, session: &str) -> Result<(), ApiError> {
        if !self.settings.check_sessions {
            return Ok(());
        }
        let cached = self.cache.get(session).map(|e| *e);
        if let Some(entry) = cached
            && entry.checked.elapsed() < self.ttl()
        {
            return verdict(entry.status);
        }
        metrics::counter!("tally_auth_session_lookups_total").increment(1);
        match self.catalog.session_status(user, session).await {
            Ok(status) => {
                self.remember(session, status);
                verdict(status)
            }
            Err(err) => {
                metrics::counter!("tally_auth_session_lookup_errors_total").increment(1);
                tracing::debug!(error = %err, "session lookup failed; using the last answer");
                cached.map_or(Ok(()), |entry| verdict(entry.status))
            }
        }
    }

    /// Signs `session` out, in the store and at once in this node's cache.
    pub async fn revoke(
        &self,
        user: UserId,
        session: &str,
        expires_at_secs: u64,
    ) -> Result<(), StoreError> {
        let expires_at_ms = i64::try_from(expires_at_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        self.catalog
            .revoke_session(user, session, expires_at_ms)
            .await?;
        self.remember(session, SessionStatus::Revoked);
        Ok(())
    }

    fn remember(&self, session: &str, status: SessionStatus) {
        if self.cache.len() >= self.settings.session_cache_capacity {
            let ttl = self.ttl();
            self.cache.retain(|_, e| e.checked.elapsed() < ttl);
            if self.cache.len() >= self.settings.session_cache_capacity {
                self.cache.clear();
            }
        }
        self.cache.insert(
            session.to_owned(),
            Entry {
                status,
                checked: Instant::now(),
            },
        );
    }

    /// Reloads the signing keys from the store.
    pub async fn reload_keys(&self) -> Result<(), ApiError> {
        let keys = self.catalog.signing_keys().await?;
        self.tokens.replace(&keys).map_err(ApiError::internal)
    }

    /// Reloads the keys for a token naming an unknown key, unless that was
    /// done less than a second ago (so forged key ids cannot make every
    /// request a store round trip). Returns whether it reloaded.
    pub async fn reload_keys_on_demand(&self) -> bool {
        {
            let mut last = self.last_reload.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
                return false;
            }
            *last = Some(Instant::now());
        }
        match self.reload_keys().await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(error = %err, "reloading signing keys failed");
                false
            }
        }
    }

    /// Reloads the keys every `key_reload_secs` until `stop`.
    pub async fn reload_keys_until(
        self: Arc<Self>,
        stop: CancellationToken,
    ) -> Result<(), std::convert::Infallible> {
        let period = Duration::from_secs(self.settings.key_reload_secs.max(1));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return Ok(()),
            }
            if let Err(err) = self.reload_keys().await {
                tracing::warn!(error = %err, "reloading signing keys failed; keeping the loaded ones");
            }
        }
    }
}

fn verdict(status: SessionStatus) -> Result<(), ApiError> {
    match status {
        SessionStatus::Active => Ok(()),
        SessionStatus::Revoked | SessionStatus::UnknownUser => Err(ApiError::SessionRevoked),
    }
}
