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
//! batch: harmless. A worker that takes over a partition first claims the
//! entries its dead predecessor read but never acknowledged (`XAUTOCLAIM`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use redis::Value;
use redis::aio::ConnectionManager;
use sqlx::PgPool;
use tokio::sync::watch;

use super::keys::{GROUP, Keys};
use super::pg::{self, LikeEvent};
use super::scripts;
use crate::store::{SyncStatus, now_ms};

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
}

struct Owned {
    /// Re-read this consumer's pending entries (id `0`) before new ones:
    /// after taking the partition over, or after a failed round.
    recover: bool,
}

pub struct SyncWorker {
    redis: ConnectionManager,
    pg: PgPool,
    keys: Keys,
    settings: SyncSettings,
    /// This worker's consumer name and lease value (unique per process).
    node: String,
    owned: BTreeMap<u32, Owned>,
    leases_checked: Option<Instant>,
    stats_checked: Option<Instant>,
}

/// A read stream entry: which partition, its id, the event.
struct Entry {
    partition: u32,
    id: String,
    event: LikeEvent,
}

impl SyncWorker {
    pub fn new(redis: ConnectionManager, pg: PgPool, keys: Keys, settings: SyncSettings) -> Self {
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
        }
    }

    /// Runs rounds until `stop` turns true, then finishes the current round.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let idle = Duration::from_millis(self.settings.max_delay_ms.max(1));
        let mut failing = Duration::ZERO;
        loop {
            let pause = match self.try_execute_task().await {
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
            if *stop.borrow() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => {}
            }
        }
        self.release_leases().await;
        tracing::info!("write-behind worker stopped");
    }

    /// Hands the owned partitions back at shutdown, so another node takes
    /// them at once instead of after the lease expires.
    async fn release_leases(&mut self) {
        let mut pipe = redis::pipe();
        for p in self.owned.keys() {
            pipe.invoke_script(scripts::RELEASE.key(self.keys.lease(*p)).arg(&self.node))
                .ignore();
        }
        if let Err(err) = pipe.query_async::<()>(&mut self.redis).await {
            tracing::warn!(error = %err, "could not release partition leases; they expire by themselves");
        }
        self.owned.clear();
    }

    /// One round. Public so tests and `tally worker --once` drive it
    /// directly instead of waiting on timers.
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
        let started = Instant::now();
        let changed = pg::apply_events(&self.pg, &events).await?;
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
        let mut pipe = redis::pipe();
        for p in 0..self.keys.partitions() {
            pipe.invoke_script(
                scripts::LEASE
                    .key(self.keys.lease(p))
                    .arg(&self.node)
                    .arg(self.settings.lease_ttl_ms),
            );
        }
        let held: Vec<i64> = pipe.query_async(&mut self.redis).await?;
        let mut gained = Vec::new();
        for (p, held) in (0..self.keys.partitions()).zip(held) {
            match (held == 1, self.owned.contains_key(&p)) {
                (true, false) => gained.push(p),
                (false, true) => {
                    tracing::info!(partition = p, "lost partition lease");
                    self.owned.remove(&p);
                }
                _ => {}
            }
        }
        for p in gained {
            self.take_over(p).await?;
            self.owned.insert(p, Owned { recover: true });
        }
        metrics::gauge!("tally_sync_partitions_owned").set(self.owned.len() as f64);
        Ok(())
    }

    /// Creates the consumer group if needed and claims every entry that
    /// other consumers read but never acknowledged.
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
        let mut pipe = redis::pipe();
        let order: Vec<(u32, bool)> = self.owned.iter().map(|(p, o)| (*p, o.recover)).collect();
        for &(p, recover) in &order {
            pipe.cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&self.node)
                .arg("COUNT")
                .arg(per_partition)
                .arg("STREAMS")
                .arg(self.keys.stream(p))
                .arg(if recover { "0" } else { ">" });
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.redis).await?;
        let mut entries = Vec::new();
        for ((p, recover), reply) in order.into_iter().zip(replies) {
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

    /// `XACK`s what was committed, raises the watermarks, trims the streams.
    async fn acknowledge(&mut self, entries: &[Entry]) -> Result<(), SyncError> {
        let mut by_partition: BTreeMap<u32, (Vec<&str>, i64)> = BTreeMap::new();
        for e in entries {
            let slot = by_partition.entry(e.partition).or_default();
            slot.0.push(&e.id);
            slot.1 = slot.1.max(e.event.version);
        }
        let mut pipe = redis::pipe();
        for (p, (ids, version)) in &by_partition {
            let stream = self.keys.stream(*p);
            pipe.cmd("XACK").arg(&stream).arg(GROUP).arg(ids).ignore();
            pipe.invoke_script(scripts::RAISE.key(self.keys.applied(*p)).arg(*version))
                .ignore();
        }
        pipe.query_async::<()>(&mut self.redis).await?;
        Ok(())
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
        let mut pipe = redis::pipe();
        for p in &partitions {
            pipe.cmd("XINFO").arg("GROUPS").arg(self.keys.stream(*p));
            pipe.cmd("XPENDING").arg(self.keys.stream(*p)).arg(GROUP);
        }
        let Ok(values) = pipe.query_async::<Vec<Value>>(&mut self.redis).await else {
            return;
        };
        let mut trim = redis::pipe();
        let mut backlog = 0u64;
        for (p, pair) in partitions.iter().zip(values.chunks(2)) {
            let Some(info) = group_info(&pair[0]) else {
                continue;
            };
            backlog += info.pending + info.lag.unwrap_or(0);
            // Everything before the oldest pending entry, and up to the last
            // delivered one, is acknowledged by every consumer.
            let oldest_pending = match &pair[1] {
                Value::Array(summary) if info.pending > 0 => summary.get(1).and_then(as_string),
                _ => None,
            };
            let min_id = oldest_pending.or_else(|| next_id(&info.last_delivered));
            if let Some(min_id) = min_id {
                trim.cmd("XTRIM")
                    .arg(self.keys.stream(*p))
                    .arg("MINID")
                    .arg(min_id)
                    .ignore();
            }
        }
        let _ = trim.query_async::<()>(&mut self.redis).await;
        self.claim_orphans(&partitions).await;
        metrics::gauge!("tally_sync_backlog_events").set(backlog as f64);
        // After the trim, the first entry of a stream is its oldest
        // unapplied event.
        let mut firsts = redis::pipe();
        for p in &partitions {
            firsts
                .cmd("XRANGE")
                .arg(self.keys.stream(*p))
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1);
        }
        let Ok(values) = firsts.query_async::<Vec<Value>>(&mut self.redis).await else {
            return;
        };
        let oldest_ms = values
            .into_iter()
            .filter_map(|v| range_entries(v).into_iter().next())
            .filter_map(|(id, _)| id.split('-').next().and_then(|ms| ms.parse::<i64>().ok()))
            .min();
        let lag = oldest_ms.map_or(0.0, |ms| (now_ms() - ms).max(0) as f64 / 1000.0);
        metrics::gauge!("tally_sync_lag_seconds").set(lag);
    }
}

impl SyncWorker {
    /// Takes over entries that another consumer read and left unacknowledged
    /// for longer than a lease: a worker that lost its lease while stalled
    /// (no fencing) and then died would otherwise strand them.
    async fn claim_orphans(&mut self, partitions: &[u32]) {
        let mut pipe = redis::pipe();
        for p in partitions {
            pipe.cmd("XAUTOCLAIM")
                .arg(self.keys.stream(*p))
                .arg(GROUP)
                .arg(&self.node)
                .arg(self.settings.lease_ttl_ms)
                .arg("0-0")
                .arg("COUNT")
                .arg(1000)
                .arg("JUSTID");
        }
        let Ok(replies) = pipe.query_async::<Vec<Value>>(&mut self.redis).await else {
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

/// The consumer group's view of a stream (from `XINFO GROUPS`).
struct GroupInfo {
    pending: u64,
    last_delivered: String,
    /// Entries not yet delivered; `None` when Redis cannot tell.
    lag: Option<u64>,
}

fn group_info(reply: &Value) -> Option<GroupInfo> {
    let Value::Array(groups) = reply else {
        return None;
    };
    groups.iter().find_map(|g| {
        let fields: Vec<(String, &Value)> = match g {
            Value::Array(flat) => flat
                .chunks(2)
                .filter_map(|kv| Some((as_string(&kv[0])?, kv.get(1)?)))
                .collect(),
            Value::Map(pairs) => pairs
                .iter()
                .filter_map(|(k, v)| Some((as_string(k)?, v)))
                .collect(),
            _ => return None,
        };
        let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
        if get("name").and_then(as_string).as_deref() != Some(GROUP) {
            return None;
        }
        let int = |v: Option<&Value>| match v {
            Some(Value::Int(n)) => Some((*n).max(0) as u64),
            Some(other) => as_string(other).and_then(|s| s.parse().ok()),
            None => None,
        };
        Some(GroupInfo {
            pending: int(get("pending")).unwrap_or(0),
            last_delivered: get("last-delivered-id")
                .and_then(as_string)
                .unwrap_or_else(|| "0-0".into()),
            lag: int(get("lag")),
        })
    })
}

/// Each non-empty partition stream with its consumer group's view (`None`
/// when no worker has created the group yet).
async fn nonempty_streams(
    redis: &mut ConnectionManager,
    keys: &Keys,
) -> Result<Vec<(u32, u64, Option<GroupInfo>)>, redis::RedisError> {
    let mut lens = redis::pipe();
    for p in 0..keys.partitions() {
        lens.cmd("XLEN").arg(keys.stream(p));
    }
    let lens: Vec<u64> = lens.query_async(redis).await?;
    let nonempty: Vec<(u32, u64)> = (0..keys.partitions())
        .zip(lens)
        .filter(|(_, len)| *len > 0)
        .collect();
    if nonempty.is_empty() {
        return Ok(Vec::new());
    }
    let mut infos = redis::pipe();
    for (p, _) in &nonempty {
        infos.cmd("XINFO").arg("GROUPS").arg(keys.stream(*p));
    }
    let infos: Vec<Value> = infos.query_async(redis).await?;
    Ok(nonempty
        .into_iter()
        .zip(infos)
        .map(|((p, len), info)| (p, len, group_info(&info)))
        .collect())
}

/// Unapplied events of one stream: read but unacknowledged, plus not yet
/// read. Without the group, the whole stream.
fn unapplied(len: u64, info: Option<&GroupInfo>) -> u64 {
    info.map_or(len, |i| i.pending + i.lag.unwrap_or(len))
}

/// Events not yet applied to PostgreSQL across all partitions.
pub async fn backlog(redis: &mut ConnectionManager, keys: &Keys) -> Result<u64, redis::RedisError> {
    Ok(nonempty_streams(redis, keys)
        .await?
        .iter()
        .map(|(_, len, info)| unapplied(*len, info.as_ref()))
        .sum())
}

/// The backlog and the age of its oldest event. Per stream the oldest
/// unapplied event is the oldest pending one, else the first after the last
/// delivered one (else the stream's first, without a group); stream ids
/// start with the milliseconds they were added at.
pub async fn status(
    redis: &mut ConnectionManager,
    keys: &Keys,
) -> Result<SyncStatus, redis::RedisError> {
    let streams = nonempty_streams(redis, keys).await?;
    let mut oldest = redis::pipe();
    let mut backlog = 0;
    for (p, len, info) in &streams {
        let n = unapplied(*len, info.as_ref());
        if n == 0 {
            continue;
        }
        backlog += n;
        match info {
            Some(i) if i.pending > 0 => {
                oldest.cmd("XPENDING").arg(keys.stream(*p)).arg(GROUP);
            }
            Some(i) => {
                oldest
                    .cmd("XRANGE")
                    .arg(keys.stream(*p))
                    .arg(format!("({}", i.last_delivered))
                    .arg("+")
                    .arg("COUNT")
                    .arg(1);
            }
            None => {
                oldest
                    .cmd("XRANGE")
                    .arg(keys.stream(*p))
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1);
            }
        }
    }
    if backlog == 0 {
        return Ok(SyncStatus::default());
    }
    let replies: Vec<Value> = oldest.query_async(redis).await?;
    let oldest_ms = replies
        .into_iter()
        .filter_map(|reply| match reply {
            // XPENDING's summary: [count, smallest id, greatest id, consumers].
            Value::Array(summary) if matches!(summary.first(), Some(Value::Int(_))) => {
                summary.get(1).and_then(as_string)
            }
            range => range_entries(range).into_iter().next().map(|(id, _)| id),
        })
        .map(|id| split_id(&id).0 as i64)
        .min();
    Ok(SyncStatus {
        backlog,
        lag_ms: oldest_ms.map_or(0.0, |ms| (now_ms() - ms).max(0) as f64),
    })
}

/// Waits until every partition's stream is applied, or `timeout`.
pub async fn drain(
    redis: &mut ConnectionManager,
    keys: &Keys,
    timeout: Duration,
) -> Result<bool, redis::RedisError> {
    let deadline = Instant::now() + timeout;
    loop {
        if backlog(redis, keys).await? == 0 {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// Entries of an `XREADGROUP` reply (RESP2 array or RESP3 map; nil = none).
fn stream_entries(reply: Value) -> Vec<(String, Vec<Value>)> {
    let streams: Vec<Value> = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => kv.pop(),
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs.into_iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    };
    streams.into_iter().flat_map(range_entries).collect()
}

/// Entries of an `XRANGE`-shaped array: `[[id, [field, value, …]], …]`.
fn range_entries(value: Value) -> Vec<(String, Vec<Value>)> {
    let Value::Array(entries) = value else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter_map(|e| match e {
            Value::Array(mut pair) if pair.len() == 2 => {
                let fields = match pair.pop() {
                    Some(Value::Array(f)) => f,
                    Some(Value::Map(m)) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
                    _ => Vec::new(),
                };
                Some((as_string(&pair[0])?, fields))
            }
            _ => None,
        })
        .collect()
}

fn parse_event(id: &str, fields: &[Value]) -> Result<LikeEvent, SyncError> {
    let malformed = |why| SyncError::Malformed {
        id: id.to_owned(),
        why,
    };
    let get = |name: &str| -> Result<i64, SyncError> {
        fields
            .chunks(2)
            .find(|kv| as_string(&kv[0]).as_deref() == Some(name))
            .and_then(|kv| kv.get(1).and_then(as_string))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| malformed("missing or non-numeric field"))
    };
    Ok(LikeEvent {
        post: get("p")?,
        user: get("u")?,
        liked: get("l")? == 1,
        version: get("v")?,
        at_ms: get("t")?,
    })
}

fn split_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// The smallest id after `id`.
fn next_id(id: &str) -> Option<String> {
    let (ms, seq) = split_id(id);
    Some(match seq.checked_add(1) {
        Some(seq) => format!("{ms}-{seq}"),
        None => format!("{}-0", ms.checked_add(1)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_order_and_successors() {
        assert_eq!(split_id("5-10"), (5, 10));
        assert_eq!(next_id("5-9").as_deref(), Some("5-10"));
    }
}
