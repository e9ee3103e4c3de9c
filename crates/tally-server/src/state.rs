//! The state every handler shares, behind one `Arc`: a request clones one
//! pointer. (It was a struct of a dozen `Arc`s, cloned and dropped per
//! request: ~3.5 % of a node's CPU on the like path in a profile.)

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use metrics_exporter_prometheus::PrometheusHandle;
use tally_store::accounts::TokenKeys;
use tally_store::{Catalog, Likes};

use crate::config::Settings;
use crate::live::LiveHub;
use crate::load_panel::LoadPanel;
use crate::media::MediaStore;
use crate::ratelimit::RateLimits;
use crate::sessions::Sessions;
use crate::trending::TrendingCache;

/// What handlers share; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    /// Users, posts, likers: the durable catalog.
    pub catalog: Arc<dyn Catalog>,
    /// The like hot path.
    pub likes: Arc<dyn Likes>,
    /// Signs and verifies bearer tokens (signature and expiry).
    pub tokens: Arc<TokenKeys>,
    /// Whether a well-signed token's session is still alive (cached), and
    /// signing key reloads.
    pub sessions: Arc<Sessions>,
    /// Image files.
    pub media: MediaStore,
    /// Write rate limits.
    pub limits: RateLimits,
    /// Live counts: rooms, coalescing, push. Fed by the store's change
    /// feed, never by handlers.
    pub live: Arc<LiveHub>,
    /// Settings, for the limits handlers enforce.
    pub settings: Settings,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Bounds concurrent image decodes (each may use a core and hundreds of
    /// MB), so uploads cannot starve the like path.
    pub image_slots: tokio::sync::Semaphore,
    /// A hash to verify against for unknown usernames (timing safety).
    pub dummy_hash: String,
    /// The operator's load runs against this node.
    pub load_panel: LoadPanel,
    /// Set once shutdown begins: `/readyz` answers 503 `draining` so load
    /// balancers stop routing here while the node still serves for
    /// `drain_grace_ms`. An atomic: read per health check, written once.
    pub draining: AtomicBool,
    /// Trending rankings, computed at most once per window per second.
    pub trending: TrendingCache,
}
