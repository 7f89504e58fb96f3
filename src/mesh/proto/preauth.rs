//! The budget of unauthenticated mesh connections: how many sockets on `/_mesh` may be in
//! their handshake at once, per address and in total, and which one gives way when a new
//! one arrives at a full budget.
//!
//! Anyone who reaches the port can open a socket on `/_mesh` and say nothing. Refusing new
//! sockets once a cap is reached would let such strangers keep a real peer out for as long
//! as they hold their sockets; so the budget never refuses: a new socket always gets in, and
//! when the budget is full an older pending socket gives way (the runtime closes it with
//! 4408). A real peer's handshake takes milliseconds, so it finishes (and leaves the budget)
//! long before enough newer sockets arrive to push it out.
//!
//! Which socket gives way:
//!
//! 1. when the new socket's address already holds `per_address` pending sockets, one of
//!    that address's; otherwise, when `total` are pending, any one;
//! 2. among those, a socket that has not sent anything yet before one that has (a peer
//!    sends its hello the moment it connects, so a flood of silent sockets never pushes
//!    out a peer whose hello arrived);
//! 3. then the oldest.
//!
//! Sockets leave the budget when their handshake finishes (admitted links do not count:
//! the runtime caps those separately) or when they end. Pure: no clock, no I/O; time is an
//! input, in milliseconds from any monotonic origin.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

/// The sizes of a [`PreAuthBudget`] (`limits.mesh_preauth_total`,
/// `limits.mesh_preauth_per_address`). Both are at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreAuthLimits {
    /// Most sockets in their handshake at once, from all addresses together.
    pub total: usize,
    /// Most sockets in their handshake at once from one address ([`address_key`]).
    pub per_address: usize,
}

/// One socket in its handshake.
#[derive(Debug, Clone)]
struct Pending<A> {
    address: A,
    since_ms: u64,
    /// Arrival order, for sockets that arrived in the same millisecond.
    seq: u64,
    /// It sent its first handshake message.
    heard: bool,
}

impl<A> Pending<A> {
    /// The order in which sockets give way: silent before heard, then oldest first.
    fn eviction_order(&self) -> (bool, u64, u64) {
        (self.heard, self.since_ms, self.seq)
    }
}

/// Unauthenticated sockets, keyed by `K` (the runtime's link id), grouped by address `A`.
/// See the module docs.
#[derive(Debug, Clone)]
pub struct PreAuthBudget<K, A> {
    limits: PreAuthLimits,
    pending: HashMap<K, Pending<A>>,
    per_address: HashMap<A, usize>,
    next_seq: u64,
}

impl<K, A> PreAuthBudget<K, A>
where
    K: Copy + Eq + Hash,
    A: Clone + Eq + Hash,
{
    /// An empty budget. Limits of 0 are taken as 1.
    pub fn new(limits: PreAuthLimits) -> Self {
        PreAuthBudget {
            limits: PreAuthLimits {
                total: limits.total.max(1),
                per_address: limits.per_address.max(1),
            },
            pending: HashMap::new(),
            per_address: HashMap::new(),
            next_seq: 0,
        }
    }

    /// Takes in socket `key` from `address`, arrived at `now_ms`. Returns the socket that
    /// must give way to it (already out of the budget; the caller closes it), if the budget
    /// was full. A key already in the budget is left as it is.
    pub fn admit(&mut self, key: K, address: A, now_ms: u64) -> Option<K> {
        if self.pending.contains_key(&key) {
            return None;
        }
        let victim = if self.at(&address) >= self.limits.per_address {
            self.oldest(Some(&address))
        } else if self.pending.len() >= self.limits.total {
            self.oldest(None)
        } else {
            None
        };
        if let Some(v) = victim {
            self.release(&v);
        }
        *self.per_address.entry(address.clone()).or_default() += 1;
        self.pending.insert(
            key,
            Pending {
                address,
                since_ms: now_ms,
                seq: self.next_seq,
                heard: false,
            },
        );
        self.next_seq += 1;
        victim
    }

    /// Socket `key` sent its first handshake message: it now gives way only after every
    /// silent one.
    pub fn heard(&mut self, key: &K) {
        if let Some(p) = self.pending.get_mut(key) {
            p.heard = true;
        }
    }

    /// Socket `key` finished its handshake (admitted or refused) or ended: it leaves the
    /// budget. False when it was not in it (it had given way already).
    pub fn release(&mut self, key: &K) -> bool {
        let Some(p) = self.pending.remove(key) else {
            return false;
        };
        if let Some(n) = self.per_address.get_mut(&p.address) {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(&p.address);
            }
        }
        true
    }

    /// Sockets in the budget.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no socket is in the budget.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Sockets in the budget from `address`.
    pub fn at(&self, address: &A) -> usize {
        self.per_address.get(address).copied().unwrap_or(0)
    }

    /// Whether socket `key` is in the budget.
    pub fn contains(&self, key: &K) -> bool {
        self.pending.contains_key(key)
    }

    /// The limits in force.
    pub fn limits(&self) -> PreAuthLimits {
        self.limits
    }

    /// The socket that gives way first, among those of `address` (or all).
    fn oldest(&self, address: Option<&A>) -> Option<K> {
        self.pending
            .iter()
            .filter(|(_, p)| address.is_none_or(|a| &p.address == a))
            .min_by_key(|(_, p)| p.eviction_order())
            .map(|(k, _)| *k)
    }
}

/// The address a socket counts against: an IPv4 address as it is (also when it arrives as
/// an IPv4-mapped IPv6 address), an IPv6 address by its /64 prefix, since one host commonly
/// holds a whole /64.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "10.0.0.1";
    const B: &str = "10.0.0.2";
    const C: &str = "10.0.0.3";

    fn budget(total: usize, per_address: usize) -> PreAuthBudget<u64, &'static str> {
        PreAuthBudget::new(PreAuthLimits { total, per_address })
    }

    #[test]
    fn below_both_caps_nothing_gives_way() {
        let mut b = budget(4, 2);
        assert_eq!(b.admit(1, A, 0), None);
        assert_eq!(b.admit(2, A, 1), None);
        assert_eq!(b.admit(3, B, 2), None);
        assert_eq!(b.admit(4, C, 3), None);
        assert_eq!((b.len(), b.at(&A), b.at(&B)), (4, 2, 1));
    }

    #[test]
    fn at_the_address_cap_the_oldest_of_that_address_gives_way() {
        let mut b = budget(10, 3);
        b.admit(1, B, 0); // older than all of A's, but another address
        for (key, t) in [(2, 10), (3, 11), (4, 12)] {
            assert_eq!(b.admit(key, A, t), None);
        }
        assert_eq!(b.admit(5, A, 13), Some(2));
        assert_eq!(b.admit(6, A, 14), Some(3));
        assert!(b.contains(&1), "the other address keeps its socket");
        assert_eq!((b.at(&A), b.at(&B), b.len()), (3, 1, 4));
    }

    #[test]
    fn at_the_total_cap_the_oldest_of_all_gives_way() {
        let mut b = budget(3, 3);
        b.admit(1, A, 5);
        b.admit(2, B, 6);
        b.admit(3, C, 7);
        assert_eq!(b.admit(4, C, 8), Some(1));
        assert_eq!(b.admit(5, A, 9), Some(2));
        assert_eq!(b.len(), 3);
        assert_eq!((b.at(&A), b.at(&B), b.at(&C)), (1, 0, 2));
    }

    #[test]
    fn same_millisecond_arrivals_give_way_in_arrival_order() {
        let mut b = budget(2, 2);
        b.admit(7, A, 100);
        b.admit(3, A, 100);
        assert_eq!(b.admit(9, A, 100), Some(7));
        assert_eq!(b.admit(1, A, 100), Some(3));
    }

    #[test]
    fn a_socket_that_spoke_gives_way_after_every_silent_one() {
        let mut b = budget(3, 3);
        b.admit(1, A, 0); // the peer: oldest, but it sent its hello
        b.heard(&1);
        b.admit(2, A, 1);
        b.admit(3, A, 2);
        // A flood of silent sockets from the same address never pushes it out.
        for key in 4..100 {
            let gone = b.admit(key, A, key).unwrap();
            assert_ne!(gone, 1);
        }
        assert!(b.contains(&1));
        // Only once every socket has spoken does the oldest of them give way.
        b.heard(&98);
        b.heard(&99);
        assert_eq!(b.admit(100, A, 100), Some(1));
    }

    #[test]
    fn a_peer_gets_in_under_a_flood_from_its_own_address() {
        // Strangers and the peer share an address; the strangers reopen every socket that
        // gives way at once. The peer's socket survives the next `per_address - 1` arrivals
        // before its hello, and every silent one after it.
        let mut b = budget(64, 16);
        let mut t = 0;
        for key in 0..16 {
            b.admit(key, A, t);
            t += 1;
        }
        let peer = 1_000;
        assert!(b.admit(peer, A, t).is_some());
        for key in 16..31 {
            t += 1;
            assert_ne!(b.admit(key, A, t), Some(peer), "before its hello");
        }
        b.heard(&peer);
        for key in 31..10_000 {
            t += 1;
            assert_ne!(b.admit(key, A, t), Some(peer), "after its hello");
        }
        assert!(b.release(&peer), "its handshake finished inside the budget");
        assert_eq!(b.at(&A), 15);
    }

    #[test]
    fn release_frees_the_place_once() {
        let mut b = budget(2, 1);
        b.admit(1, A, 0);
        b.admit(2, B, 0);
        assert!(b.release(&1), "authenticated: leaves the budget");
        assert!(!b.release(&1), "already out");
        assert_eq!((b.len(), b.at(&A)), (1, 0));
        assert_eq!(b.admit(3, A, 1), None, "its place is free again");
        assert_eq!(b.admit(4, C, 2), Some(2), "total cap: oldest of all");
        assert!(!b.release(&2), "it gave way already");
        assert!(!b.is_empty());
        b.release(&3);
        b.release(&4);
        assert!(b.is_empty());
        assert_eq!(b.at(&A), 0);
    }

    #[test]
    fn admitting_a_known_key_changes_nothing() {
        let mut b = budget(1, 1);
        b.admit(1, A, 0);
        assert_eq!(b.admit(1, A, 5), None);
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn zero_limits_count_as_one() {
        let mut b = budget(0, 0);
        assert_eq!(
            b.limits(),
            PreAuthLimits {
                total: 1,
                per_address: 1
            }
        );
        assert_eq!(b.admit(1, A, 0), None);
        assert_eq!(b.admit(2, B, 1), Some(1));
    }

    #[test]
    fn addresses_count_ipv4_whole_and_ipv6_by_its_64_prefix() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(address_key(ip("127.0.0.1")), ip("127.0.0.1"));
        assert_eq!(address_key(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            address_key(ip("2001:db8:1:2::1")),
            address_key(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            address_key(ip("2001:db8:1:2::1")),
            address_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(address_key(ip("::1")), ip("::"));
    }
}
