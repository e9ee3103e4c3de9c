//! Rate limits on writes: per user for likes and uploads, per client IP for
//! sign-up and sign-in (which are costly by design and a brute-force target).
//!
//! GCRA through `governor`, keyed, in memory: limits are per node, which is
//! what a limit meant to protect a node needs. `retain_recent` runs on a
//! timer so idle keys do not accumulate.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use tally_store::domain::UserId;

/// Configured limits; 0 turns a limit off.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(default, rename_all = "snake_case")]
pub struct RateLimitSettings {
    /// Sustained like/unlike/upload requests per second per user.
    pub user_writes_per_sec: u32,
    /// Burst allowance on top of that rate.
    pub user_write_burst: u32,
    /// Sign-ups and sign-ins per minute per client IP.
    pub auth_per_min_per_ip: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            user_writes_per_sec: 20,
            user_write_burst: 200,
            auth_per_min_per_ip: 120,
        }
    }
}

pub struct RateLimits {
    user_writes: Option<DefaultKeyedRateLimiter<UserId>>,
    auth: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl RateLimits {
    pub fn new(settings: RateLimitSettings) -> Self {
        let user_writes = NonZeroU32::new(settings.user_writes_per_sec).map(|rate| {
            let burst = NonZeroU32::new(settings.user_write_burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        let auth = NonZeroU32::new(settings.auth_per_min_per_ip)
            .map(|rate| RateLimiter::keyed(Quota::per_minute(rate)));
        Self { user_writes, auth }
    }

    pub fn check_user_write(&self, user: UserId) -> Result<(), ApiError> {
        check(self.user_writes.as_ref(), &user)
    }

    pub fn check_auth(&self, ip: IpAddr) -> Result<(), ApiError> {
        check(self.auth.as_ref(), &ip)
    }

    /// Forgets keys that are back at full allowance.
    pub fn retain_recent(&self) {
        if let Some(l) = &self.user_writes {
            l.retain_recent();
        }
        if let Some(l) = &self.auth {
            l.retain_recent();
        }
    }
}

fn check<K: std::hash::Hash + Eq + Clone>(
    limiter: Option<&DefaultKeyedRateLimiter<K>>,
    key: &K,
) -> Result<(), ApiError> {
    let Some(limiter) = limiter else {
        return Ok(());
    };
    limiter.check_key(key).map_err(|not_until| {
        let wait: Duration = not_until.wait_time_from(DefaultClock::default().now());
        metrics::counter!("tally_rate_limited_total").increment(1);
        ApiError::RateLimited {
            retry_after_secs: wait.as_secs().max(1),
        }
    })
}
