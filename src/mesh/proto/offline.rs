//! Rows of peers that dialed this node and went away.
//!
//! A peer that only dials in (a laptop reaching a desktop or a cloud node) has no address
//! this node could dial. When its link closes its row stays, as [`LinkState::Offline`], so
//! `GET /peers`, `ymesh status` and the status page still say where that device stands: what
//! changed since counts as missed by it. The row gives way when a link to the same node comes
//! up, and at most [`OFFLINE_ROWS`] are kept (a node dialed by ever-new devices does not grow
//! without bound).
//!
//! An offline row says the device is one of this node's peers, so it lasts only while the
//! rules would still let the device in: a person denying it (`ymesh peer deny`) or a reload
//! that takes it off the allow list (or changes the mesh secret it proved) removes the row,
//! as it closes a live link of the same node. The row is judged with what the device proved
//! on its last link ([`PeerSlot::last_secret`](super::peers::PeerSlot)).

use super::approval::{self, SecretCheck, Verdict};
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
        secret: Option<SecretCheck>,
        reason: &str,
        now_ms: u64,
    ) {
        let shown_elsewhere = self.linked(node)
            || self.peers.iter().any(|(k, p)| {
                *k != key && p.state != LinkState::Offline && p.node_id.as_deref() == Some(node)
            });
        let keep = opened
            && !shown_elsewhere
            && secret.is_none_or(|s| self.still_admitted(key, node, s))
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
            slot.last_secret = secret;
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

    /// Whether the rules in force now would let `node` in with what it proved last time.
    fn still_admitted(&self, key: PeerKey, node: &str, secret: SecretCheck) -> bool {
        matches!(
            approval::decide(
                &self.cfg.admission,
                &self.gate.approvals,
                node,
                self.is_configured(key, node),
                secret,
            ),
            Verdict::Welcome(_)
        )
    }

    /// The rules changed (a reload, a denial): offline rows of devices they no longer let
    /// in are removed. `secret_changed`: a mesh secret a device proved before counts no more.
    pub(super) fn prune_offline(&mut self, secret_changed: bool) {
        if secret_changed {
            for p in self.peers.values_mut() {
                if p.last_secret == Some(SecretCheck::Proven) {
                    p.last_secret = Some(SecretCheck::Wrong);
                }
            }
        }
        let gone: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| p.state == LinkState::Offline)
            .filter_map(|(k, p)| Some((*k, p.node_id.as_deref()?, p.last_secret?)))
            .filter(|(k, node, secret)| !self.still_admitted(*k, node, *secret))
            .map(|(k, _, _)| k)
            .collect();
        for k in gone {
            if let Some(p) = self.peers.remove(&k) {
                tracing::info!(
                    peer = p.node_id.as_deref().unwrap_or_default(),
                    "offline peer no longer admitted: row removed"
                );
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
