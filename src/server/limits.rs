//! Per-client limits the network shell enforces before anything reaches a room: the count of
//! connections per client address ([`AddressCounts`], used twice: half-open connections at
//! accept, WebSocket sessions at upgrade) and a connection's message rate ([`RateLimit`]).
//!
//! An address is an IPv4 address, or an IPv6 address by its /64 (one host usually holds a
//! whole /64); an IPv4-mapped IPv6 address counts as its IPv4 address. Loopback addresses
//! are exempt unless `limits.per_address_loopback` is set: a reverse proxy on the same host
//! is not one client. The counts live behind one short std lock, never held across an
//! `.await`; a slot gives its place back when it drops.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::config::Limits;

/// How one address is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum AddressKey {
    V4(u32),
    V6Prefix(u64),
}

fn key(ip: IpAddr) -> AddressKey {
    match ip {
        IpAddr::V4(v4) => AddressKey::V4(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => AddressKey::V4(u32::from(v4)),
            None => AddressKey::V6Prefix((u128::from(v6) >> 64) as u64),
        },
    }
}

/// Whether the per-address limits apply to `ip` under `limits`.
fn limited(ip: IpAddr, limits: &Limits) -> bool {
    let loopback = match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v| v.is_loopback()),
    };
    limits.per_address_loopback || !loopback
}

/// Connections per address, behind a short lock.
type Counts = Arc<Mutex<HashMap<AddressKey, usize>>>;

/// Live connections per address, in two kinds: half-open (accepted, no request headers yet)
/// and WebSocket sessions.
#[derive(Debug, Default)]
pub(crate) struct AddressCounts {
    half_open: Counts,
    sessions: Counts,
}

/// One counted connection of an address; dropping it gives the place back.
#[derive(Debug)]
pub(crate) struct AddressSlot {
    counts: Option<(Counts, AddressKey)>,
}

impl AddressSlot {
    /// A slot that counts nothing (the address is exempt or there is no limit).
    fn free() -> Self {
        AddressSlot { counts: None }
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Some((counts, k)) = self.counts.take() {
            let mut map = counts.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = map.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&k);
                }
            }
        }
    }
}

fn take(counts: &Counts, ip: IpAddr, cap: usize) -> Option<AddressSlot> {
    let k = key(ip);
    let mut map = counts.lock().unwrap_or_else(|e| e.into_inner());
    let n = map.entry(k).or_insert(0);
    if *n >= cap {
        return None;
    }
    *n += 1;
    Some(AddressSlot {
        counts: Some((counts.clone(), k)),
    })
}

impl AddressCounts {
    /// A place for a newly accepted connection from `ip` until its first request's headers
    /// arrive (`limits.max_half_open_per_address`); `None` when the address has its fill.
    pub(crate) fn half_open(&self, ip: IpAddr, limits: &Limits) -> Option<AddressSlot> {
        if !limited(ip, limits) {
            return Some(AddressSlot::free());
        }
        take(&self.half_open, ip, limits.max_half_open_per_address)
    }

    /// A place for a WebSocket session from `ip` (`limits.max_connections_per_address`, 0 =
    /// no limit); `None` when the address has its fill.
    pub(crate) fn connection(&self, ip: IpAddr, limits: &Limits) -> Option<AddressSlot> {
        if limits.max_connections_per_address == 0 || !limited(ip, limits) {
            return Some(AddressSlot::free());
        }
        take(&self.sessions, ip, limits.max_connections_per_address)
    }
}

/// A token bucket: `rate` messages a second on average, bursts of up to `rate` at once.
/// A rate of 0 allows everything. Kept small (one per connection): a rate past `u32::MAX`
/// a second is taken as `u32::MAX`, and the tokens are an `f32` (exact to one message up
/// to 2^24 messages).
#[derive(Debug)]
pub(crate) struct RateLimit {
    rate: u32,
    tokens: f32,
    at: Option<Instant>,
}

impl RateLimit {
    /// A bucket for `rate` messages a second (0 = no limit), full.
    pub(crate) fn new(rate: u64) -> Self {
        let rate = u32::try_from(rate).unwrap_or(u32::MAX);
        RateLimit {
            rate,
            tokens: rate as f32,
            at: None,
        }
    }

    /// Takes one message at `now`; false when the bucket is empty.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let rate = self.rate as f32;
        if let Some(at) = self.at {
            let refill = now.saturating_duration_since(at).as_secs_f32() * rate;
            self.tokens = (self.tokens + refill).min(rate);
        }
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// How long a bucket of `rate` takes to hold one more message (for tests and docs).
#[cfg(test)]
fn per_message(rate: u64) -> std::time::Duration {
    std::time::Duration::from_secs_f64(1.0 / rate as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(cap: usize, loopback: bool) -> Limits {
        Limits {
            max_half_open_per_address: cap,
            max_connections_per_address: cap,
            per_address_loopback: loopback,
            ..Limits::default()
        }
    }

    #[test]
    fn an_address_gets_its_cap_and_places_come_back() {
        let counts = AddressCounts::default();
        let l = limits(2, false);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let a = counts.half_open(ip, &l).unwrap();
        let _b = counts.half_open(ip, &l).unwrap();
        assert!(counts.half_open(ip, &l).is_none());
        // Another address is counted apart; sessions apart from half-open connections.
        assert!(counts.half_open("192.0.2.8".parse().unwrap(), &l).is_some());
        assert!(counts.connection(ip, &l).is_some());
        drop(a);
        assert!(counts.half_open(ip, &l).is_some());
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let counts = AddressCounts::default();
        let l = limits(1, false);
        let _a = counts
            .connection("2001:db8::1".parse().unwrap(), &l)
            .unwrap();
        assert!(counts
            .connection("2001:db8::2".parse().unwrap(), &l)
            .is_none());
        assert!(counts
            .connection("2001:db8:0:1::2".parse().unwrap(), &l)
            .is_some());
        let _v4 = counts.connection("192.0.2.1".parse().unwrap(), &l).unwrap();
        assert!(counts
            .connection("::ffff:192.0.2.1".parse().unwrap(), &l)
            .is_none());
    }

    #[test]
    fn loopback_is_exempt_unless_asked_and_zero_means_no_limit() {
        let counts = AddressCounts::default();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let exempt = limits(1, false);
        let _held: Vec<_> = (0..5)
            .map(|_| counts.half_open(lo, &exempt).unwrap())
            .collect();
        let counted = limits(1, true);
        let _a = counts.connection(lo, &counted).unwrap();
        assert!(counts.connection(lo, &counted).is_none());
        let off = Limits {
            max_connections_per_address: 0,
            per_address_loopback: true,
            ..Limits::default()
        };
        assert!(counts.connection(lo, &off).is_some());
    }

    #[test]
    fn the_rate_limit_allows_a_burst_then_the_average() {
        let mut r = RateLimit::new(10);
        let t0 = Instant::now();
        assert!((0..10).all(|_| r.allow(t0)));
        assert!(!r.allow(t0));
        assert!(r.allow(t0 + per_message(10)));
        assert!(!r.allow(t0 + per_message(10)));
        let mut off = RateLimit::new(0);
        assert!((0..10_000).all(|_| off.allow(t0)));
    }
}
