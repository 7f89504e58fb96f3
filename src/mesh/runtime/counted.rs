//! What the mesh's links count in the node's metrics: sockets that gave way in the
//! pre-authentication budget, handshakes past their deadline, handshakes this node refused
//! (by reason), links closed because their send queue was full. The node attaches its
//! [`Metrics`] once ([`Mesh::attach_metrics`]); a mesh without them (tests) counts nothing.

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
