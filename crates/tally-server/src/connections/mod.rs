//! What a reverse proxy in front of a node would otherwise give: the accept
//! loop, with timeouts per connection and caps on connections per client IP
//! and in total.
//!
//! Why a loop of our own: `axum::serve` accepts without bound and sets no
//! timer, so an idle socket, a request line dripped a byte at a time or an
//! idle keep-alive connection stays open for ever, and one client can hold
//! every file descriptor of the process (20,000 here). hyper's own
//! `header_read_timeout` starts whenever a connection waits for a request
//! head, so it cannot tell a slow head from an idle keep-alive connection;
//! [`watch`] keeps the three apart (see [`ConnectionSettings`]).
//!
//! A connection over a cap is still accepted and answered (`503
//! overloaded`, or `429 too_many_connections` for one IP's cap) in the
//! project's error shape, then closed: a client learns why, instead of
//! waiting in the kernel's backlog. Those answers have a small budget of
//! their own ([`REFUSAL_SLOTS`]); past it a connection is closed at once.

mod counter;
pub mod io;
mod serve;

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use counter::{Admission, Counters, IpCounter, IpSlot, Refusal};
pub use serve::serve;

/// Connections being answered "over the cap" at once; more are closed
/// without an answer.
pub const REFUSAL_SLOTS: usize = 64;

/// File descriptors kept for everything but client connections (Redis,
/// PostgreSQL, media files, logs) when the total cap is derived from the
/// open-file limit.
pub const RESERVED_FDS: u64 = 1024;

/// Accept-side limits (`[connections]` in the config file,
/// `TALLY_CONNECTIONS__*`). A 0 turns a cap or a timeout off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "snake_case")]
pub struct ConnectionSettings {
    /// A connection that sends nothing at all is closed after this.
    pub idle_socket_timeout_ms: u64,
    /// From the first byte of a request head to its end (request line and
    /// headers): a slower head closes the connection (slowloris).
    pub header_read_timeout_ms: u64,
    /// A keep-alive connection with no request in flight and no traffic
    /// is closed after this.
    pub keep_alive_timeout_ms: u64,
    /// Open connections per node, live sockets included. Lowered at start
    /// to the open-file limit minus [`RESERVED_FDS`].
    pub max_total: u64,
    /// Open connections per client IP.
    pub max_per_ip: u64,
    /// Loopback clients (127.0.0.0/8, ::1) skip the per-IP caps: a load
    /// balancer or a load generator on the same host.
    pub exempt_loopback: bool,
    /// Further addresses that skip the per-IP caps: a load balancer's, for
    /// which every client shares one address.
    pub exempt_ips: Vec<IpAddr>,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            idle_socket_timeout_ms: 10_000,
            header_read_timeout_ms: 10_000,
            keep_alive_timeout_ms: 60_000,
            max_total: 16_000,
            max_per_ip: 256,
            exempt_loopback: true,
            exempt_ips: Vec::new(),
        }
    }
}

impl ConnectionSettings {
    /// Whether `ip` skips the per-IP caps (HTTP and live).
    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        (self.exempt_loopback && ip.is_loopback()) || self.exempt_ips.contains(&ip)
    }

    /// The total cap this process can hold: the setting, lowered to fit
    /// the open-file limit (`RLIMIT_NOFILE`) with [`RESERVED_FDS`] to spare.
    pub fn effective_max_total(&self) -> u64 {
        let limit = open_file_limit();
        let cap = match limit {
            Some(limit) => {
                let room = limit.saturating_sub(RESERVED_FDS.min(limit / 2));
                if self.max_total == 0 {
                    room
                } else {
                    self.max_total.min(room)
                }
            }
            None => self.max_total,
        };
        if cap < self.max_total || (self.max_total == 0 && cap > 0) {
            tracing::info!(
                configured = self.max_total,
                open_file_limit = limit,
                effective = cap,
                "connections.max_total lowered to fit the open-file limit"
            );
        }
        cap
    }

    pub(crate) fn timeouts(&self) -> Timeouts {
        let ms = |v: u64| (v > 0).then(|| Duration::from_millis(v));
        Timeouts {
            idle_socket: ms(self.idle_socket_timeout_ms),
            header_read: ms(self.header_read_timeout_ms),
            keep_alive: ms(self.keep_alive_timeout_ms),
        }
    }
}

/// The per-connection timeouts; `None` is off.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub idle_socket: Option<Duration>,
    pub header_read: Option<Duration>,
    pub keep_alive: Option<Duration>,
}

/// The soft `RLIMIT_NOFILE` of this process, if it has one.
pub fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}
