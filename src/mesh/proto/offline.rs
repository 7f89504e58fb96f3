//! Rows of peers that dialed this node and went away.
//!
//! A peer that only dials in (a laptop reaching a desktop or a cloud node) has no address
//! this node could dial. When its link closes its row stays, as [`LinkState::Offline`], so
//! `GET /peers`, `ymesh status` and the status page still say where that device stands: what
//! changed since counts as missed by it. The row gives way when a link to the same node comes
//! up, and at most [`OFFLINE_ROWS`] are kept (a node dialed by ever-new devices does not grow
//! without bound).

use super::machine::MeshCore;
use super::peers::LinkState;
use super::PeerKey;

/// Rows kept for inbound-only peers whose link closed.
pub(crate) const OFFLINE_ROWS: usize = 64;

impl<H: Clone> MeshCore<H> {
    /// The link a peer dialed closed. A peer that was linked stays listed as
    /// [`LinkState::Offline`] (this node cannot dial it back, but a person asks where their
    /// laptop stands), unless another row or link shows the node; at most
    /// [`OFFLINE_ROWS`] such rows are kept, the longest offline dropped first.
    pub(super) fn inbound_gone(
        &mut self,
        key: PeerKey,
        node: &str,
        opened: bool,
        reason: &str,
        now_ms: u64,
    ) {
        let shown_elsewhere = self.linked(node)
            || self.peers.iter().any(|(k, p)| {
                *k != key && p.state != LinkState::Offline && p.node_id.as_deref() == Some(node)
            });
        let keep = opened
            && !shown_elsewhere
            && self
                .peers
                .get(&key)
                .is_some_and(|p| p.ever_linked && p.node_id.is_some());
        if !keep {
            self.peers.remove(&key);
            return;
        }
        if let Some(slot) = self.peers.get_mut(&key) {
            slot.set_state(LinkState::Offline, Some(reason.to_string()), now_ms);
        }
        let mut offline: Vec<(u64, PeerKey)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.state == LinkState::Offline)
            .map(|(k, p)| (p.since_ms, *k))
            .collect();
        if offline.len() > OFFLINE_ROWS {
            offline.sort();
            let excess = offline.len() - OFFLINE_ROWS;
            for (_, k) in offline.into_iter().take(excess) {
                self.peers.remove(&k);
            }
        }
    }

    /// A link to `node` came up on row `key`: offline rows of the same node give way to it.
    pub(super) fn forget_offline(&mut self, node: &str, key: PeerKey) {
        self.peers.retain(|k, p| {
            *k == key || p.state != LinkState::Offline || p.node_id.as_deref() != Some(node)
        });
    }
}
