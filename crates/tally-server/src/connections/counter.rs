//! Counting open connections, in total and per client IP, with slots that
//! give themselves back when dropped (so a connection that ends in any way,
//! an upgraded WebSocket too, frees its place).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

use super::ConnectionSettings;

/// Open connections per IP. Also used by the live transports for their own
/// per-IP cap.
#[derive(Debug, Default)]
pub struct IpCounter {
    counts: DashMap<IpAddr, u64>,
}

/// One counted connection of one IP; `None` inside for an exempt client.
#[derive(Debug)]
pub struct IpSlot(Option<(Arc<IpCounter>, IpAddr)>);

impl IpCounter {
    /// A slot for `ip` unless it already holds `max` (0: no cap).
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr, max: u64) -> Option<IpSlot> {
        if max == 0 {
            return Some(IpSlot(None));
        }
        let ip = ip.to_canonical();
        let mut count = self.counts.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(IpSlot(Some((self.clone(), ip))))
    }

    /// A slot that counts nowhere (an exempt client).
    pub fn exempt() -> IpSlot {
        IpSlot(None)
    }

    /// Connections `ip` holds now.
    pub fn count(&self, ip: IpAddr) -> u64 {
        self.counts.get(&ip.to_canonical()).map_or(0, |c| *c)
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Some((counter, ip)) = self.0.take() {
            counter.counts.remove_if_mut(&ip, |_, n| {
                *n = n.saturating_sub(1);
                *n == 0
            });
        }
    }
}

/// The node's open connections.
#[derive(Debug)]
pub struct Counters {
    settings: ConnectionSettings,
    max_total: u64,
    total: Arc<AtomicU64>,
    per_ip: Arc<IpCounter>,
}

/// Why a connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The node holds `max_total` connections.
    Total,
    /// The client's IP holds `max_per_ip`.
    PerIp,
}

/// A connection's place, given back on drop.
#[derive(Debug)]
pub struct Admission {
    total: Arc<AtomicU64>,
    _ip: IpSlot,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.total.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("tally_connections_open").decrement(1.0);
    }
}

impl Counters {
    pub fn new(settings: ConnectionSettings) -> Self {
        Self {
            max_total: settings.effective_max_total(),
            settings,
            total: Arc::new(AtomicU64::new(0)),
            per_ip: Arc::new(IpCounter::default()),
        }
    }

    pub fn max_total(&self) -> u64 {
        self.max_total
    }

    /// Admits a connection from `ip`, or says which cap it is over.
    pub fn admit(&self, ip: IpAddr) -> Result<Admission, Refusal> {
        let total = self.total.fetch_add(1, Ordering::Relaxed);
        if self.max_total > 0 && total >= self.max_total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Refusal::Total);
        }
        let ip_slot = if self.settings.is_exempt(ip) {
            Some(IpCounter::exempt())
        } else {
            self.per_ip.try_acquire(ip, self.settings.max_per_ip)
        };
        let Some(ip_slot) = ip_slot else {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Refusal::PerIp);
        };
        metrics::gauge!("tally_connections_open").increment(1.0);
        Ok(Admission {
            total: self.total.clone(),
            _ip: ip_slot,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_total: u64, max_per_ip: u64) -> ConnectionSettings {
        ConnectionSettings {
            max_total,
            max_per_ip,
            exempt_loopback: false,
            ..ConnectionSettings::default()
        }
    }

    #[test]
    fn caps_per_ip_and_in_total_and_frees_on_drop() {
        let counters = Counters::new(settings(3, 2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = counters.admit(a).unwrap();
        let _a2 = counters.admit(a).unwrap();
        assert_eq!(counters.admit(a).unwrap_err(), Refusal::PerIp);
        let _b1 = counters.admit(b).unwrap();
        assert_eq!(counters.admit(b).unwrap_err(), Refusal::Total);
        drop(a1);
        let _b2 = counters.admit(b).unwrap();
        assert_eq!(counters.per_ip.count(a), 1);
    }

    #[test]
    fn exempt_addresses_skip_the_per_ip_cap() {
        let mut s = settings(0, 1);
        s.exempt_loopback = true;
        s.exempt_ips = vec!["10.0.0.9".parse().unwrap()];
        let counters = Counters::new(s);
        let held: Vec<_> = (0..5)
            .map(|_| counters.admit("127.0.0.2".parse().unwrap()).unwrap())
            .chain((0..5).map(|_| counters.admit("10.0.0.9".parse().unwrap()).unwrap()))
            .collect();
        assert_eq!(held.len(), 10);
        let v4_mapped: IpAddr = "::ffff:10.0.0.9".parse().unwrap();
        assert!(counters.admit(v4_mapped).is_ok(), "mapped addresses match");
    }
}
