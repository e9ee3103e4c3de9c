//! The state every handler shares. One cloneable struct of `Arc`s: cloning
//! it per request is a few reference-count bumps.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::TokenKeys;
use crate::config::Settings;
use crate::media::MediaStore;
use crate::ratelimit::RateLimits;
use crate::store::{Catalog, Likes};

#[derive(Clone)]
pub struct AppState {
    /// Users, posts, likers: the durable catalog.
    pub catalog: Arc<dyn Catalog>,
    /// The like hot path.
    pub likes: Arc<dyn Likes>,
    /// Verifies bearer tokens without a store lookup.
    pub tokens: Arc<TokenKeys>,
    /// Image files.
    pub media: MediaStore,
    /// Write rate limits.
    pub limits: Arc<RateLimits>,
    /// Live counts: rooms, coalescing, push.
    pub live: Arc<crate::live::LiveHub>,
    /// Whether like handlers feed `live` themselves (embedded backend); on
    /// the production backend changes arrive through Redis Pub/Sub.
    pub live_local: bool,
    /// Settings, for the limits handlers enforce.
    pub settings: Arc<Settings>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Bounds concurrent image decodes (each may use a core and hundreds of
    /// MB), so uploads cannot starve the like path.
    pub image_slots: Arc<tokio::sync::Semaphore>,
    /// A hash to verify against for unknown usernames (timing safety).
    pub dummy_hash: Arc<str>,
    /// The operator's load runs against this node.
    pub load_panel: Arc<crate::load_panel::LoadPanel>,
}
