//! How far PostgreSQL trails Redis: the backlog of unapplied events and the
//! age of the oldest, read from the streams' consumer group.

use std::time::{Duration, Instant};

use crate::production::connection::{RedisConn, Spread};
use redis::Value;

use super::resp::{GroupInfo, as_string, group_info, range_entries, split_id};
use crate::production::keys::{GROUP, Keys};
use crate::{SyncStatus, now_ms};

/// Each non-empty partition stream with its consumer group's view (`None`
/// when no worker has created the group yet).
async fn nonempty_streams(
    redis: &mut RedisConn,
    keys: &Keys,
    partitions: &[u32],
) -> Result<Vec<(u32, u64, Option<GroupInfo>)>, redis::RedisError> {
    if partitions.is_empty() {
        return Ok(Vec::new());
    }
    let mut lens = Spread::new();
    for &p in partitions {
        lens.cmd(p, "XLEN").arg(keys.stream(p));
    }
    let lens: Vec<u64> = lens.query_as(redis).await?;
    let nonempty: Vec<(u32, u64)> = partitions
        .iter()
        .copied()
        .zip(lens)
        .filter(|(_, len)| *len > 0)
        .collect();
    if nonempty.is_empty() {
        return Ok(Vec::new());
    }
    let mut infos = Spread::new();
    for (p, _) in &nonempty {
        infos.cmd(*p, "XINFO").arg("GROUPS").arg(keys.stream(*p));
    }
    let infos = infos.query(redis).await?;
    Ok(nonempty
        .into_iter()
        .zip(infos)
        .map(|((p, len), info)| (p, len, group_info(&info)))
        .collect())
}

fn all(keys: &Keys) -> Vec<u32> {
    (0..keys.partitions()).collect()
}

/// Events not yet applied to PostgreSQL across all partitions.
pub async fn backlog(redis: &mut RedisConn, keys: &Keys) -> Result<u64, redis::RedisError> {
    Ok(nonempty_streams(redis, keys, &all(keys))
        .await?
        .iter()
        .map(|(_, len, info)| GroupInfo::unapplied(info.as_ref(), *len))
        .sum())
}

/// The backlog and the age of its oldest event. Per stream the oldest
/// unapplied event is the oldest pending one, else the first after the last
/// delivered one (else the stream's first, without a group); stream ids
/// start with the milliseconds they were added at.
pub async fn status(redis: &mut RedisConn, keys: &Keys) -> Result<SyncStatus, redis::RedisError> {
    status_of(redis, keys, &all(keys)).await
}

/// [`status`] of some partitions (a worker reports those it owns).
pub(super) async fn status_of(
    redis: &mut RedisConn,
    keys: &Keys,
    partitions: &[u32],
) -> Result<SyncStatus, redis::RedisError> {
    let streams = nonempty_streams(redis, keys, partitions).await?;
    summarize(redis, keys, &streams).await
}

/// The status of streams already read: `(partition, length, group)` each.
/// One more round trip finds the oldest unapplied entry of each.
pub(super) async fn summarize(
    redis: &mut RedisConn,
    keys: &Keys,
    streams: &[(u32, u64, Option<GroupInfo>)],
) -> Result<SyncStatus, redis::RedisError> {
    let mut oldest = Spread::new();
    let mut backlog = 0;
    for (p, len, info) in streams {
        let n = GroupInfo::unapplied(info.as_ref(), *len);
        if n == 0 {
            continue;
        }
        backlog += n;
        match info {
            Some(i) if i.pending > 0 => {
                oldest.cmd(*p, "XPENDING").arg(keys.stream(*p)).arg(GROUP);
            }
            Some(i) => {
                oldest
                    .cmd(*p, "XRANGE")
                    .arg(keys.stream(*p))
                    .arg(format!("({}", i.last_delivered))
                    .arg("+")
                    .arg("COUNT")
                    .arg(1);
            }
            None => {
                oldest
                    .cmd(*p, "XRANGE")
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
    let replies = oldest.query(redis).await?;
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
    redis: &mut RedisConn,
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
