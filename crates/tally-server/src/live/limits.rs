//! Limits on live connections, the same on both transports: how many one
//! address may open, how many posts one may watch, how fast it may
//! subscribe, how large a message may be, and how long a silent client is
//! kept. Why: a subscribe costs a read of every new post's count from the
//! store (a 500-post subscribe ~145 ms of Redis and PostgreSQL work), and
//! anonymous clients could otherwise open hundreds of sockets each.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// `[live_limits]` in the config file, `TALLY_LIVE_LIMITS__*`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "snake_case")]
pub struct LiveLimits {
    /// Live connections (WebSocket and Socket.io together) per client IP;
    /// 0: no cap. Exemptions as for `connections.max_per_ip`.
    pub max_per_ip: u64,
    /// Posts one connection may watch at once.
    pub max_watched: usize,
    /// Subscribe budget per connection, in posts per second: each
    /// subscribe message costs one token per newly watched post (at least
    /// one), refilled at this rate.
    pub subscribe_posts_per_sec: u32,
    /// The budget's capacity (a client's first subscribes may spend it at
    /// once).
    pub subscribe_burst: u32,
    /// Largest client message on either transport, in bytes.
    pub max_message_bytes: u64,
    /// Client messages a plain WebSocket reads ahead while a subscribe is
    /// being answered; a client further ahead is closed.
    pub max_pending_messages: usize,
    /// The server pings every live connection this often...
    pub ping_interval_ms: u64,
    /// ...and closes one that has not answered (or sent anything) this long
    /// after the ping.
    pub ping_timeout_ms: u64,
}

impl Default for LiveLimits {
    fn default() -> Self {
        Self {
            max_per_ip: 100,
            max_watched: super::MAX_SUBSCRIPTIONS,
            subscribe_posts_per_sec: 100,
            subscribe_burst: 500,
            max_message_bytes: 64 * 1024,
            max_pending_messages: 64,
            ping_interval_ms: 25_000,
            ping_timeout_ms: 20_000,
        }
    }
}

impl LiveLimits {
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms.max(1))
    }

    pub fn ping_timeout(&self) -> Duration {
        Duration::from_millis(self.ping_timeout_ms.max(1))
    }

    pub fn subscribe_bucket(&self) -> SubscribeBucket {
        SubscribeBucket {
            tokens: f64::from(self.subscribe_burst),
            capacity: f64::from(self.subscribe_burst),
            per_sec: f64::from(self.subscribe_posts_per_sec),
            last: Instant::now(),
        }
    }

    /// The error for a subscribe that would go over `max_watched`.
    pub fn too_many(&self) -> LiveError {
        LiveError {
            code: "too_many_subscriptions",
            message: format!("at most {} posts per connection", self.max_watched),
        }
    }
}

/// An error message on a live connection, the same on both transports.
#[derive(Debug, Clone, Serialize)]
pub struct LiveError {
    pub code: &'static str,
    pub message: String,
}

impl LiveError {
    pub fn invalid(message: impl std::fmt::Display) -> Self {
        Self {
            code: "invalid_request",
            message: message.to_string(),
        }
    }
}

/// One connection's subscribe budget (a token bucket; no timer, it refills
/// when asked).
#[derive(Debug)]
pub struct SubscribeBucket {
    tokens: f64,
    capacity: f64,
    per_sec: f64,
    last: Instant,
}

impl SubscribeBucket {
    /// Takes the cost of subscribing to `posts` new posts, or says how long
    /// to wait (nothing is taken then). A rate of 0 is no limit.
    pub fn take(&mut self, posts: usize) -> Result<(), LiveError> {
        if self.per_sec <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.capacity);
        let cost = posts.max(1) as f64;
        if cost <= self.tokens {
            self.tokens -= cost;
            return Ok(());
        }
        metrics::counter!("tally_live_subscribes_limited_total").increment(1);
        let wait = ((cost - self.tokens) / self.per_sec).ceil().max(1.0);
        Err(LiveError {
            code: "rate_limited",
            message: format!("subscribing too fast; retry in {wait} s"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_bucket_spends_its_burst_then_refills() {
        let limits = LiveLimits {
            subscribe_posts_per_sec: 10,
            subscribe_burst: 20,
            ..LiveLimits::default()
        };
        let mut bucket = limits.subscribe_bucket();
        assert!(bucket.take(15).is_ok());
        assert!(bucket.take(0).is_ok(), "an empty subscribe costs one");
        assert_eq!(bucket.take(5).unwrap_err().code, "rate_limited");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(bucket.take(5).is_ok(), "refilled 10 in a second");
    }
}
