//! The write-behind: Redis Streams → PostgreSQL, in batches, losing nothing.
//!
//! Each partition's stream is applied by one worker at a time, the holder of
//! the partition's lease, so a partition's events are applied in order
//! (versions make order irrelevant anyway, see `pg::apply_events`; the lease
//! also keeps two workers from computing count deltas on the same rows at
//! once). A round: renew leases, read every owned partition in one pipelined
//! round trip (`XREADGROUP`), apply everything read in one PostgreSQL
//! transaction, then `XACK`, raise the partition's `applied` watermark and
//! trim what is acknowledged. A crash between commit and `XACK` replays the
//! batch: harmless. A worker that takes over a partition first registers a
//! new lease epoch in PostgreSQL, which fences its predecessor off (a batch
//! carrying an older epoch is refused inside its transaction), then claims
//! the entries the predecessor read but never acknowledged (`XAUTOCLAIM`).
//! The `applied` watermark (what strict durability waits for) only rises
//! over a contiguous prefix of the stream: never past an entry not yet
//! acknowledged.

//!
//! - [`worker`]: the rounds ([`SyncWorker`]);
//! - [`status`]: the backlog and lag, for readiness, metrics and the load
//!   panel;
//! - `resp`: decoding the stream replies.

mod resp;
mod status;
mod worker;

pub use status::{backlog, drain, status};
pub use worker::SyncWorker;

/// Write-behind tuning.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, rename_all = "snake_case")]
pub struct SyncSettings {
    /// Run the workers inside `tally serve` (else run `tally worker`).
    pub in_process: bool,
    /// Most events applied in one PostgreSQL transaction.
    pub batch_size: usize,
    /// How long an event may wait for more to share its batch.
    pub max_delay_ms: u64,
    /// A partition lease not renewed within this is taken over.
    pub lease_ttl_ms: u64,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            in_process: true,
            batch_size: 2000,
            max_delay_ms: 5,
            lease_ttl_ms: 5000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("malformed stream entry {id}: {why}")]
    Malformed { id: String, why: &'static str },
}

/// What one round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// Applied this many events (rows that changed: `changed`).
    Applied { events: usize, changed: u64 },
    /// Nothing to do.
    Idle,
    /// PostgreSQL refused the batch: this many partitions were taken over
    /// by another worker meanwhile, and are dropped (see `worker`).
    Fenced { partitions: usize },
}
