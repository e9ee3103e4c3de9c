//! The write-behind worker: leases, reads, one transaction per round,
//! acknowledgement and trimming.
//!
//! Fencing: a worker that takes a partition's lease registers a new epoch
//! for it in PostgreSQL ([`pg::take_fences`]) before it reads a single
//! entry, and every batch carries the epochs it was read under; PostgreSQL
//! refuses a batch whose epoch is no longer current, inside the batch's
//! own transaction. A worker paused past its lease (GC, SIGSTOP, a slow
//! disk) therefore cannot commit once its successor has taken over: it
//! drops the partition and logs the refusal.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::production::connection::{RedisConn, Spread};
use redis::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::resp::{as_string, group_info, next_id, parse_event, stream_entries};
use super::{SyncError, SyncOutcome, SyncSettings, status};
use crate::production::RedisTrouble;
use crate::production::keys::{GROUP, Keys};
use crate::production::pg::{self, Applied, Fence, LikeEvent};
use crate::production::scripts;

struct Owned {
    /// Re-read this consumer's pending entries (id `0`) before new ones:
    /// after taking the partition over, or after a failed round.
    recover: bool,
    /// The lease epoch registered in PostgreSQL at takeover: the fencing
    /// token every batch of this partition carries.
    epoch: i64,
}

pub struct SyncWorker {
    redis: RedisConn,
    pg: PgPool,
    keys: Keys,
    settings: SyncSettings,
    /// This worker's consumer name and lease value (unique per process).
    node: String,
    owned: BTreeMap<u32, Owned>,
    leases_checked: Option<Instant>,
    stats_checked: Option<Instant>,
    /// Redis errors met, for the reconciliation that follows a failover:
    /// this worker may have written events that a promoted replica lacks.
    trouble: RedisTrouble,
}

/// A read stream entry: which partition, its id, the event.
struct Entry {
    partition: u32,
    id: String,
    event: LikeEvent,
}

impl SyncWorker {
    pub fn new(redis: RedisConn, pg: PgPool, keys: Keys, settings: SyncSettings) -> Self {
        let node = format!("node-{:016x}", rand::random::<u64>());
        Self {
            redis,
            pg,
            keys,
            settings,
            node,
            owned: BTreeMap::new(),
            leases_checked: None,
            stats_checked: None,
            trouble: RedisTrouble::default(),
        }
    }

    /// Where this worker notes the Redis errors it meets (see
    /// `production::trouble`).
    pub fn with_trouble(mut self, trouble: RedisTrouble) -> Self {
        self.trouble = trouble;
        self
    }

    /// Runs rounds until `stop` is cancelled, then finishes the current
    /// round and hands its leases back.
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), std::convert::Infallible> {
        let idle = Duration::from_millis(self.settings.max_delay_ms.max(1));
        let mut failing = Duration::ZERO;
        loop {
            let round = self.try_execute_task().await;
            if let Err(SyncError::Redis(err)) = &round
                && !err.is_timeout()
            {
                self.trouble.note();
            }
            let pause = match round {
                Ok(SyncOutcome::Applied { events, .. }) if events >= self.settings.batch_size => {
                    Duration::ZERO
                }
                Ok(_) => {
                    failing = Duration::ZERO;
                    idle
                }
                Err(SyncError::Redis(err)) if err.to_string().contains("NOGROUP") => {
                    // Redis lost its data (restart without persistence,
                    // flush): take the partitions over afresh, which
                    // recreates the consumer groups.
                    tracing::warn!(
                        "consumer groups are gone (Redis lost its data); recreating them"
                    );
                    self.owned.clear();
                    self.leases_checked = None;
                    Duration::ZERO
                }
                Err(SyncError::Redis(err)) if scripts::is_noscript(&err) => {
                    // Redis restarted and forgot our scripts.
                    if let Err(err) = scripts::load_all(&mut self.redis).await {
                        tracing::warn!(error = %err, "cannot load scripts into Redis");
                    }
                    Duration::ZERO
                }
                Err(err) => {
                    failing =
                        (failing * 2).clamp(Duration::from_millis(50), Duration::from_secs(2));
                    tracing::warn!(error = %err, retry_in = ?failing, "write-behind round failed");
                    metrics::counter!("tally_sync_failures_total").increment(1);
                    for owned in self.owned.values_mut() {
                        owned.recover = true;
                    }
                    failing
                }
            };
            if stop.is_cancelled() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.cancelled() => {}
            }
        }
        self.release_leases().await;
        Ok(())
    }

    /// Hands the owned partitions back at shutdown, so another node takes
    /// them at once instead of after the lease expires.
    async fn release_leases(&mut self) {
        let mut release = Spread::new();
        for p in self.owned.keys() {
            release.script(
                *p,
                scripts::RELEASE.key(self.keys.lease(*p)).arg(&self.node),
            );
        }
        if let Err(err) = release.query(&mut self.redis).await {
            tracing::warn!(error = %err, "could not release partition leases; they expire by themselves");
        }
        self.owned.clear();
    }

    /// One round. Public so that tests drive it directly instead of
    /// waiting on timers.
    pub async fn try_execute_task(&mut self) -> Result<SyncOutcome, SyncError> {
        self.maintain_leases().await?;
        if self.owned.is_empty() {
            return Ok(SyncOutcome::Idle);
        }
        let entries = self.read().await?;
        self.trim_and_export_stats().await;
        if entries.is_empty() {
            return Ok(SyncOutcome::Idle);
        }
        let events: Vec<LikeEvent> = entries.iter().map(|e| e.event).collect();
        let fences = self.fences(&entries);
        let started = Instant::now();
        let changed = match pg::apply_events(&self.pg, &events, &fences).await? {
            Applied::Committed { changed } => changed,
            Applied::Fenced { streams } => return Ok(self.fenced(&streams)),
        };
        metrics::histogram!("tally_sync_batch_size").record(events.len() as f64);
        metrics::histogram!("tally_sync_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("tally_sync_events_total").increment(events.len() as u64);
        self.acknowledge(&entries).await?;
        Ok(SyncOutcome::Applied {
            events: events.len(),
            changed,
        })
    }

    /// Takes free partitions and renews held ones, once per lease third.
    async fn maintain_leases(&mut self) -> Result<(), SyncError> {
        let every = Duration::from_millis(self.settings.lease_ttl_ms / 3);
        if self.leases_checked.is_some_and(|t| t.elapsed() < every) {
            return Ok(());
        }
        self.leases_checked = Some(Instant::now());
        let mut leases = Spread::new();
        for p in 0..self.keys.partitions() {
            leases.script(
                p,
                scripts::LEASE
                    .key(self.keys.lease(p))
                    .arg(&self.node)
                    .arg(self.settings.lease_ttl_ms),
            );
        }
        // Per partition: on a cluster, partitions on a failing master are
        // let go (another worker, or this one later, takes them over) while
        // the others go on.
        let replies = self.query_each(&leases).await;
        let first_error = failures(&replies);
        if replies.values().all(Result::is_err)
            && let Some(err) = first_error
        {
            return Err(err.into());
        }
        let mut gained = Vec::new();
        for (p, reply) in replies {
            let (held, fresh) = match reply.as_deref() {
                Ok([Value::Int(1)]) => (true, true),
                Ok([Value::Int(2)]) => (true, false),
                _ => (false, false),
            };
            match (held, self.owned.contains_key(&p)) {
                (true, false) => gained.push(p),
                // Held, but taken afresh: this worker let the lease lapse
                // (paused?) and another may have taken the partition over
                // meanwhile, registering a newer epoch: take it over again
                // rather than have the next batch refused.
                (true, true) if fresh => gained.push(p),
                (false, true) => {
                    tracing::info!(partition = p, "lost partition lease");
                    self.owned.remove(&p);
                }
                _ => {}
            }
        }
        // Every new epoch in one commit, before any of their entries is read.
        let streams: Vec<String> = gained.iter().map(|&p| self.keys.stream(p)).collect();
        let epochs: std::collections::HashMap<String, i64> = match streams.is_empty() {
            true => Default::default(),
            false => pg::take_fences(&self.pg, &streams)
                .await?
                .into_iter()
                .collect(),
        };
        for p in gained {
            let Some(&epoch) = epochs.get(&self.keys.stream(p)) else {
                continue;
            };
            tracing::info!(partition = p, epoch, "took the partition over");
            self.take_over(p).await?;
            self.owned.insert(
                p,
                Owned {
                    recover: true,
                    epoch,
                },
            );
        }
        metrics::gauge!("tally_sync_partitions_owned").set(self.owned.len() as f64);
        Ok(())
    }

    /// After its new lease epoch is registered in PostgreSQL (from then
    /// on, the previous owner's batches are refused; registered first, so
    /// entries claimed here are not committed by both): creates the
    /// consumer group if needed and claims every entry that other consumers
    /// read but never acknowledged.
    async fn take_over(&mut self, p: u32) -> Result<(), SyncError> {
        let stream = self.keys.stream(p);
        let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.redis)
            .await;
        if let Err(err) = created
            && err.code() != Some("BUSYGROUP")
        {
            return Err(err.into());
        }
        let mut cursor = "0-0".to_owned();
        loop {
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(&stream)
                .arg(GROUP)
                .arg(&self.node)
                .arg(0)
                .arg(&cursor)
                .arg("COUNT")
                .arg(1000)
                .arg("JUSTID")
                .query_async(&mut self.redis)
                .await?;
            let Value::Array(parts) = reply else { break };
            let next = parts
                .first()
                .and_then(as_string)
                .unwrap_or_else(|| "0-0".into());
            let claimed = match parts.get(1) {
                Some(Value::Array(ids)) => ids.len(),
                _ => 0,
            };
            if claimed > 0 {
                tracing::info!(
                    partition = p,
                    claimed,
                    "claimed unacknowledged events of a previous owner"
                );
            }
            if next == "0-0" {
                break;
            }
            cursor = next;
        }
        Ok(())
    }

    /// Reads up to a batch from every owned partition in one round trip.
    async fn read(&mut self) -> Result<Vec<Entry>, SyncError> {
        let per_partition = (self.settings.batch_size / self.owned.len()).max(16);
        let mut reads = Spread::new();
        let order: Vec<(u32, bool)> = self.owned.iter().map(|(p, o)| (*p, o.recover)).collect();
        for &(p, recover) in &order {
            reads
                .cmd(p, "XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&self.node)
                .arg("COUNT")
                .arg(per_partition)
                .arg("STREAMS")
                .arg(self.keys.stream(p))
                .arg(if recover { "0" } else { ">" });
        }
        let mut replies = self.query_each(&reads).await;
        let first_error = failures(&replies);
        if replies.values().all(Result::is_err)
            && let Some(err) = first_error
        {
            return Err(err.into());
        }
        let mut entries = Vec::new();
        for (p, recover) in order {
            let Some(reply) = replies.remove(&p) else {
                continue;
            };
            let reply = match reply {
                Ok(mut replies) => replies.pop().unwrap_or(Value::Nil),
                Err(err) => {
                    if !err.is_timeout() {
                        self.trouble.note();
                    }
                    // Read again from its pending entries once it answers;
                    // a stream that lost its group (a replica promoted
                    // without it) is taken over afresh.
                    if err.to_string().contains("NOGROUP") {
                        self.owned.remove(&p);
                        self.leases_checked = None;
                    } else if let Some(o) = self.owned.get_mut(&p) {
                        o.recover = true;
                    }
                    continue;
                }
            };
            let before = entries.len();
            for (id, fields) in stream_entries(reply) {
                entries.push(Entry {
                    partition: p,
                    event: parse_event(&id, &fields)?,
                    id,
                });
            }
            if recover
                && entries.len() == before
                && let Some(o) = self.owned.get_mut(&p)
            {
                o.recover = false;
            }
        }
        Ok(entries)
    }

    /// The fencing tokens of the partitions `entries` come from.
    fn fences(&self, entries: &[Entry]) -> Vec<Fence> {
        let partitions: std::collections::BTreeSet<u32> =
            entries.iter().map(|e| e.partition).collect();
        partitions
            .into_iter()
            .filter_map(|p| {
                Some(Fence {
                    stream: self.keys.stream(p),
                    epoch: self.owned.get(&p)?.epoch,
                })
            })
            .collect()
    }

    /// PostgreSQL refused the batch: another worker took these streams'
    /// partitions over while this one was not looking (paused past its
    /// lease). Drops them without acknowledging anything (their new owner
    /// claims and applies the entries) and re-reads the others, whose
    /// events were rolled back with the batch.
    fn fenced(&mut self, streams: &[String]) -> SyncOutcome {
        let stale: Vec<u32> = self
            .owned
            .keys()
            .copied()
            .filter(|p| streams.contains(&self.keys.stream(*p)))
            .collect();
        for p in &stale {
            self.owned.remove(p);
        }
        for owned in self.owned.values_mut() {
            owned.recover = true;
        }
        // Look at the leases again next round rather than a third of a
        // lease later.
        self.leases_checked = None;
        metrics::counter!("tally_sync_fenced_total").increment(1);
        metrics::gauge!("tally_sync_partitions_owned").set(self.owned.len() as f64);
        tracing::warn!(
            partitions = ?stale,
            "write-behind commit refused (fenced): a newer lease epoch holds these partitions; \
             this worker lost them while paused and drops them"
        );
        SyncOutcome::Fenced {
            partitions: stale.len(),
        }
    }

    /// `XACK`s what was committed, raises the watermarks, trims the streams.
    async fn acknowledge(&mut self, entries: &[Entry]) -> Result<(), SyncError> {
        let mut by_partition: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
        for e in entries {
            by_partition.entry(e.partition).or_default().push(&e.id);
        }
        let mut acks = Spread::new();
        for (p, ids) in &by_partition {
            acks.cmd(*p, "XACK")
                .arg(self.keys.stream(*p))
                .arg(GROUP)
                .arg(ids);
            // Contiguous: not past the oldest entry still unacknowledged
            // (another consumer's, or one this batch skipped), see
            // `scripts::RAISE`.
            acks.script(
                *p,
                scripts::RAISE
                    .key(self.keys.applied(*p))
                    .key(self.keys.stream(*p))
                    .key(self.keys.seq(*p))
                    .arg(GROUP),
            );
        }
        // Sent again whole if a script was missing (see `query_each`): the
        // XACKs ran, the watermark did not, and both are idempotent.
        let replies = self.query_each(&acks).await;
        failures(&replies);
        for (p, reply) in replies {
            // Committed but not acknowledged: read again from the pending
            // entries (applying twice changes nothing).
            if reply.is_err()
                && let Some(o) = self.owned.get_mut(&p)
            {
                o.recover = true;
            }
        }
        Ok(())
    }

    /// [`Spread::query_each`], once more after loading the scripts if a
    /// node lacked them (a promoted replica, a restarted master): each
    /// command sent here is safe to run twice.
    async fn query_each(
        &mut self,
        spread: &Spread,
    ) -> BTreeMap<u32, redis::RedisResult<Vec<Value>>> {
        let replies = spread.query_each(&mut self.redis).await;
        let noscript = replies
            .values()
            .any(|r| r.as_ref().is_err_and(scripts::is_noscript));
        if noscript && scripts::load_all(&mut self.redis).await.is_ok() {
            return spread.query_each(&mut self.redis).await;
        }
        replies
    }

    /// Once a second: trims what every consumer has acknowledged from the
    /// owned streams, and exports backlog (entries not yet applied) and
    /// lag (age of the oldest of them).
    async fn trim_and_export_stats(&mut self) {
        if self
            .stats_checked
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.stats_checked = Some(Instant::now());
        let partitions: Vec<u32> = self.owned.keys().copied().collect();
        let mut stats = Spread::new();
        for &p in &partitions {
            stats.cmd(p, "XINFO").arg("GROUPS").arg(self.keys.stream(p));
            stats.cmd(p, "XPENDING").arg(self.keys.stream(p)).arg(GROUP);
            stats.cmd(p, "XLEN").arg(self.keys.stream(p));
        }
        let Ok(values) = stats.query(&mut self.redis).await else {
            return;
        };
        let mut trim = Spread::new();
        let mut streams = Vec::new();
        for (p, reply) in partitions.iter().zip(values.chunks(3)) {
            let info = group_info(&reply[0]);
            let len = match reply[2] {
                Value::Int(n) => n.max(0) as u64,
                _ => 0,
            };
            if let Some(info) = &info {
                // Everything before the oldest pending entry, and up to the
                // last delivered one, is acknowledged by every consumer.
                let oldest_pending = match &reply[1] {
                    Value::Array(summary) if info.pending > 0 => summary.get(1).and_then(as_string),
                    _ => None,
                };
                let min_id = oldest_pending.or_else(|| next_id(&info.last_delivered));
                if let Some(min_id) = min_id {
                    trim.cmd(*p, "XTRIM")
                        .arg(self.keys.stream(*p))
                        .arg("MINID")
                        .arg(min_id);
                }
            }
            if len > 0 {
                streams.push((*p, len, info));
            }
        }
        let _ = trim.query(&mut self.redis).await;
        self.claim_orphans(&partitions).await;
        // The same backlog and lag that readiness and the load panel read,
        // over the partitions this worker owns, from the replies above.
        if let Ok(s) = status::summarize(&mut self.redis, &self.keys, &streams).await {
            metrics::gauge!("tally_sync_backlog_events").set(s.backlog as f64);
            metrics::gauge!("tally_sync_lag_seconds").set(s.lag_ms / 1000.0);
        }
    }
}

impl SyncWorker {
    /// Takes over entries that another consumer read and left unacknowledged
    /// for longer than a lease: a worker that lost its lease while stalled
    /// reads on until it notices, and its batch is refused (fenced): the
    /// entries it read meanwhile would otherwise stay stranded (and hold
    /// the `applied` watermark back).
    async fn claim_orphans(&mut self, partitions: &[u32]) {
        let mut claims = Spread::new();
        for &p in partitions {
            claims
                .cmd(p, "XAUTOCLAIM")
                .arg(self.keys.stream(p))
                .arg(GROUP)
                .arg(&self.node)
                .arg(self.settings.lease_ttl_ms)
                .arg("0-0")
                .arg("COUNT")
                .arg(1000)
                .arg("JUSTID");
        }
        let Ok(replies) = claims.query(&mut self.redis).await else {
            return;
        };
        for (p, reply) in partitions.iter().zip(replies) {
            let claimed = match reply {
                Value::Array(parts) => {
                    matches!(parts.get(1), Some(Value::Array(ids)) if !ids.is_empty())
                }
                _ => false,
            };
            if claimed && let Some(owned) = self.owned.get_mut(p) {
                tracing::warn!(
                    partition = p,
                    "claimed entries another worker left unacknowledged"
                );
                owned.recover = true;
            }
        }
    }
}

/// Counts and logs the partitions whose commands failed; returns the first
/// error.
fn failures(replies: &BTreeMap<u32, redis::RedisResult<Vec<Value>>>) -> Option<redis::RedisError> {
    let failed: Vec<&redis::RedisError> =
        replies.values().filter_map(|r| r.as_ref().err()).collect();
    let first = failed.first()?;
    metrics::counter!("tally_sync_partition_failures_total").increment(failed.len() as u64);
    tracing::warn!(
        partitions = failed.len(),
        error = %first,
        "write-behind: some partitions failed this round (a shard failing over?); the others go on"
    );
    Some((*first).clone())
}
