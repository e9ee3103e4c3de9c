//! Cross-node changes through Redis Pub/Sub. The like script publishes
//! `"{post} {count} {version}"` on the deployment's channel whenever a count
//! changes; every serving node reads the channel once and announces each
//! change on its [`ChangeFeed`], so a like on any node reaches viewers on
//! every node.

use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::{Change, ChangeFeed};

/// Reads `channel` into `changes` until `stop`; reconnects after errors.
/// Messages published while disconnected are lost (Pub/Sub is
/// at-most-once): clients re-read counts when they resubscribe.
pub(super) async fn read_changes(
    client: redis::Client,
    channel: String,
    changes: ChangeFeed,
    stop: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    loop {
        // Connecting may stall on a hung Redis: shutdown must not wait for it.
        let connected = tokio::select! {
            connected = client.get_async_pubsub() => connected,
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
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.cancelled() => return Ok(()),
        }
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
