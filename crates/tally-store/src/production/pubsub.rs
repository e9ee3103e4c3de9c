//! Cross-node changes through Redis Pub/Sub. The like script publishes
//! `"{post} {count} {version}"` whenever a count changes; every serving node
//! reads them and announces each change on its [`ChangeFeed`], so a like on
//! any node reaches viewers on every node.
//!
//! - One Redis: one channel for the deployment (`PUBLISH`/`SUBSCRIBE`).
//! - A cluster: one channel per partition, in the partition's slot
//!   (`SPUBLISH`/`SSUBSCRIBE`: sharded Pub/Sub), so a like's message stays
//!   on its shard instead of crossing the whole cluster bus. After a
//!   failover or a slot move, Redis drops the subscription (an unsolicited
//!   `sunsubscribe`, or the dead master's connection) and the client does
//!   not reliably subscribe again by itself: [`read_sharded`] does. A
//!   `sunsubscribe` renews that channel; a dropped node connection renews
//!   everything on a fresh client (whose slot map is fresh too); and every
//!   ten seconds every channel is subscribed again whatever happened (a
//!   master that hangs instead of closing its connections sends nothing;
//!   a repeated `SSUBSCRIBE` is harmless).
//!
//! Messages published while a subscription is missing are lost (Pub/Sub
//! is at-most-once). So once a lost subscription is back (a new connection,
//! or a channel Redis dropped and that is subscribed again), the reader
//! calls [`ChangeFeed::resync`]: the live hub re-reads and re-sends the
//! current count of every post its clients watch. The periodic
//! resubscription does not: nothing was seen lost.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use redis::cluster_async::ClusterConnection;
use redis::{ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::connection::{RedisTarget, cluster_builder};
use super::keys::Keys;
use crate::{Change, ChangeFeed};

/// How often every sharded channel is subscribed again, whatever happened.
const RESUBSCRIBE_ALL: Duration = Duration::from_secs(10);

/// Reads the changes of every partition into `changes` until `stop`;
/// reconnects after errors.
pub(super) async fn read_changes(
    target: RedisTarget,
    keys: Keys,
    timeout: Duration,
    changes: ChangeFeed,
    stop: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    match target {
        RedisTarget::Single(url) => read_single(url, keys.live_channel(), changes, stop).await,
        RedisTarget::Cluster(nodes) => read_sharded(nodes, keys, timeout, changes, stop).await,
    }
}

async fn read_single(
    url: String,
    channel: String,
    changes: ChangeFeed,
    stop: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    loop {
        // Connecting may stall on a hung Redis: shutdown must not wait for it.
        let connected = tokio::select! {
            connected = async { redis::Client::open(url.as_str())?.get_async_pubsub().await } => connected,
            _ = stop.cancelled() => return Ok(()),
        };
        match connected {
            Ok(mut pubsub) => {
                let subscribed = tokio::select! {
                    subscribed = pubsub.subscribe(&channel) => subscribed,
                    _ = stop.cancelled() => return Ok(()),
                };
                if let Err(err) = subscribed {
                    tracing::warn!(error = %err, "live: cannot subscribe");
                } else {
                    // Whatever was published before this subscription (all
                    // of it, after a lost connection) is missed.
                    changes.resync();
                    let mut messages = pubsub.on_message();
                    loop {
                        tokio::select! {
                            msg = messages.next() => {
                                let Some(msg) = msg else { break };
                                let Ok(text) = msg.get_payload::<String>() else { continue };
                                if let Some(change) = parse(&text) {
                                    changes.publish(change);
                                }
                            }
                            _ = stop.cancelled() => return Ok(()),
                        }
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "live: Redis Pub/Sub unreachable; retrying"),
        }
        if pause(&stop, Duration::from_millis(500)).await {
            return Ok(());
        }
    }
}

/// Sleeps unless stopped first; true when stopped.
async fn pause(stop: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = stop.cancelled() => true,
    }
}

async fn read_sharded(
    nodes: Vec<String>,
    keys: Keys,
    timeout: Duration,
    changes: ChangeFeed,
    stop: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    let channels: Vec<String> = (0..keys.partitions())
        .map(|p| keys.shard_channel(p))
        .collect();
    loop {
        let (pushes, mut received) = mpsc::unbounded_channel::<PushInfo>();
        let connected = async {
            cluster_builder(&nodes, timeout, timeout)
                .use_protocol(ProtocolVersion::RESP3)
                .push_sender(pushes)
                .build()?
                .get_async_connection()
                .await
        };
        let mut conn = tokio::select! {
            connected = connected => match connected {
                Ok(conn) => conn,
                Err(err) => {
                    tracing::warn!(error = %err, "live: Redis Cluster unreachable; retrying");
                    if pause(&stop, Duration::from_millis(500)).await {
                        return Ok(());
                    }
                    continue;
                }
            },
            _ = stop.cancelled() => return Ok(()),
        };
        // Channels whose subscription is (or may be) missing.
        let mut missing: BTreeSet<&str> = channels.iter().map(String::as_str).collect();
        // A subscription was lost (a fresh client, or one Redis dropped):
        // re-send counts once every channel is subscribed again.
        let mut lost = true;
        let mut every = tokio::time::interval(RESUBSCRIBE_ALL);
        let mut soon = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                push = received.recv() => {
                    let Some(push) = push else { break };
                    match push.kind {
                        PushKind::SMessage => {
                            if let Some(change) = push.data.get(1).and_then(text).as_deref().and_then(parse) {
                                changes.publish(change);
                            }
                        }
                        PushKind::SUnsubscribe => {
                            if let Some(channel) = push.data.first().and_then(text)
                                && let Some(known) = channels.iter().find(|c| **c == channel)
                            {
                                tracing::info!(channel = %known, "live: Redis dropped a sharded subscription; subscribing again");
                                missing.insert(known);
                                lost = true;
                            }
                        }
                        PushKind::Disconnection => {
                            tracing::info!("live: a cluster node's connection dropped; resubscribing on a fresh client");
                            break;
                        }
                        _ => {}
                    }
                }
                _ = every.tick() => missing.extend(channels.iter().map(String::as_str)),
                _ = soon.tick(), if !missing.is_empty() => {
                    let wanted: Vec<&str> = std::mem::take(&mut missing).into_iter().collect();
                    let failed = tokio::select! {
                        failed = subscribe(&mut conn, &wanted) => failed,
                        _ = stop.cancelled() => return Ok(()),
                    };
                    missing.extend(failed);
                    if lost && missing.is_empty() {
                        lost = false;
                        changes.resync();
                    }
                }
                _ = stop.cancelled() => return Ok(()),
            }
        }
    }
}

/// Subscribes to each channel (each in its own slot, so one command each,
/// sent together). Returns those that failed, to try again.
async fn subscribe<'a>(conn: &mut ClusterConnection, channels: &[&'a str]) -> Vec<&'a str> {
    let results = futures::future::join_all(channels.iter().map(|&channel| {
        let mut conn = conn.clone();
        async move { (channel, conn.ssubscribe(channel).await) }
    }))
    .await;
    let mut failed = Vec::new();
    for (channel, result) in results {
        if let Err(err) = result {
            tracing::debug!(error = %err, channel, "live: SSUBSCRIBE failed; retrying");
            failed.push(channel);
        }
    }
    if !failed.is_empty() {
        tracing::warn!(
            channels = failed.len(),
            "live: some sharded subscriptions failed (a failover?); retrying"
        );
    }
    failed
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn parse(text: &str) -> Option<Change> {
    let mut parts = text.split(' ');
    let post = parts.next()?.parse().ok()?;
    let count = parts.next()?.parse().ok()?;
    let version = parts.next()?.parse().ok()?;
    Some(Change {
        post,
        count,
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_messages() {
        assert_eq!(
            parse("12 5 1700"),
            Some(Change {
                post: 12,
                count: 5,
                version: 1700
            })
        );
        assert_eq!(parse("12 5"), None);
        assert_eq!(parse("x 5 1"), None);
    }
}
