//! What the mesh's links count in the node's metrics: sockets that gave way in the
//! pre-authentication budget, handshakes past their deadline, handshakes this node refused
//! (by reason), links closed because their send queue was full. The node attaches its
//! [`Metrics`] once ([`Mesh::attach_metrics`]); a mesh without them (tests) counts nothing.
//! Also the libp2p relay's gate ([`RelayAdmission`]): it asks the core who may reserve and
//! counts who was refused.

use std::sync::Arc;

use super::Mesh;
use crate::metrics::{Denial, Limit, LimitCounter, Metrics};

impl Mesh {
    /// Counts the links' refusals and limit hits in `metrics` from now on (once; a second
    /// call is ignored). Attach before [`Mesh::start`].
    pub fn attach_metrics(&self, metrics: Arc<Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// Counts one hit of `limit` by a link.
    pub(crate) fn limit_hit(&self, limit: Limit) {
        if let Some(m) = self.metrics.get() {
            m.limit_hit(limit);
        }
    }

    /// Counts one handshake this node refused.
    pub(crate) fn handshake_refused(&self, reason: Denial) {
        if let Some(m) = self.metrics.get() {
            m.handshake_refused(reason);
        }
    }

    /// The counter of links closed for a full queue (resolved once per link).
    pub(crate) fn queue_full_counter(&self) -> LimitCounter {
        self.metrics
            .get()
            .map(|m| m.limit_counter(Limit::PeerLinkQueue))
            .unwrap_or_default()
    }
}

/// The relay's gate: reservations only for nodes the mesh core admits now
/// ([`MeshCore::admits_relay_reservation`](crate::mesh::proto::MeshCore::admits_relay_reservation)),
/// refusals counted as `relay_reservation`. Holds the mesh weakly: the swarm task that asks
/// must not keep the mesh alive.
#[cfg(feature = "p2p")]
pub(crate) struct RelayAdmission(pub(crate) std::sync::Weak<Mesh>);

#[cfg(feature = "p2p")]
impl crate::mesh::transport::p2p::RelayGate for RelayAdmission {
    fn admits(&self, node: &str) -> bool {
        self.0
            .upgrade()
            .is_some_and(|m| super::lock(&m.core).admits_relay_reservation(node))
    }

    fn refused(&self, _node: &str) {
        if let Some(m) = self.0.upgrade() {
            m.handshake_refused(Denial::RelayReservation);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::super::LinkHandle;
    use crate::metrics::{Limit, LinkTraffic, Metrics, TrafficKind};
    use crate::room::Kick;

    #[test]
    fn a_link_closed_for_a_full_queue_is_counted() {
        let metrics = Metrics::new();
        let (tx, _rx) = crate::queue::channel(1, 1 << 20);
        let kick = Arc::new(Kick::default());
        let handle = LinkHandle {
            tx,
            kick: kick.clone(),
            counters: Arc::new(LinkTraffic::default()),
            queue_full: metrics.limit_counter(Limit::PeerLinkQueue),
        };
        assert!(handle.offer(Bytes::from_static(b"one"), TrafficKind::Control));
        assert_eq!(metrics.limit_hits(Limit::PeerLinkQueue), 0);
        assert!(!handle.offer(Bytes::from_static(b"two"), TrafficKind::Control));
        assert_eq!(metrics.limit_hits(Limit::PeerLinkQueue), 1);
        assert_eq!(kick.reason().map(|c| c.code()), Some(4429));
        assert!(metrics
            .encode()
            .contains(r#"ymesh_limit_hits_total{limit="peer_link_queue"} 1"#));
    }
}
