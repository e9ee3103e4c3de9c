//! Cross-node live counts through Redis Pub/Sub. The like script publishes
//! `"{post} {count} {version}"` on the deployment's channel whenever a count
//! changes; every node subscribes once and feeds its hub.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use super::LiveHub;

/// The channel of a deployment (by key prefix).
pub fn channel(prefix: &str) -> String {
    format!("{prefix}:live")
}

/// Subscribes and feeds `hub` until `stop`; reconnects after errors.
/// Messages published while disconnected are lost (Pub/Sub is at-most-once):
/// clients re-read counts when they resubscribe.
pub async fn subscribe_loop(
    client: redis::Client,
    channel: String,
    hub: Arc<LiveHub>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => {
                if let Err(err) = pubsub.subscribe(&channel).await {
                    tracing::warn!(error = %err, "live: cannot subscribe");
                } else {
                    let mut messages = pubsub.on_message();
                    loop {
                        tokio::select! {
                            msg = messages.next() => {
                                let Some(msg) = msg else { break };
                                let Ok(text) = msg.get_payload::<String>() else { continue };
                                if let Some((post, count, version)) = parse(&text) {
                                    hub.update(post, count, version);
                                }
                            }
                            _ = stop.changed() => return,
                        }
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "live: Redis Pub/Sub unreachable; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => return,
        }
    }
}

fn parse(text: &str) -> Option<(i64, i64, i64)> {
    let mut parts = text.split(' ');
    let post = parts.next()?.parse().ok()?;
    let count = parts.next()?.parse().ok()?;
    let version = parts.next()?.parse().ok()?;
    Some((post, count, version))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_messages() {
        assert_eq!(super::parse("12 5 1700"), Some((12, 5, 1700)));
        assert_eq!(super::parse("12 5"), None);
        assert_eq!(super::parse("x 5 1"), None);
    }
}
