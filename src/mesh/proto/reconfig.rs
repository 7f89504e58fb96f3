//! A configuration reload reaching the core ([`Event::Reconfigure`](super::Event)): new
//! configured peers and new admission rules, applied to a running mesh without touching
//! links they do not concern.
//!
//! - **Peers** are matched whole (URL, expected node id, share policy, rooms, token): an
//!   unchanged entry keeps its row, its links and its index; an entry that is gone, or
//!   changed, is retired (its row removed, its links closed) and a changed or new entry gets
//!   a fresh row that is dialed at once. Rows are keyed by index, so a retired index is
//!   never reused: its entry stays in the list as an empty placeholder that nothing dials
//!   or matches.
//! - **Admission**: every live link and every pending one is judged again by
//!   [`approval::decide`] under the new rules, with what its handshake proved. A link whose
//!   node is no longer admitted is closed (it redials and waits as pending, or is let in by
//!   what it proves then); a pending link the new rules admit is welcomed. A link admitted
//!   by the mesh secret counts as not having proven it when the secret changed: it must
//!   redial and prove the new one. A link welcomed before the reload whose handshake ends
//!   after it is judged again when it comes up (`on_handshaken`), so no link slips between
//!   the verdict and the link. Offline rows of devices the new rules no longer admit go
//!   too ([`super::offline`]).

use super::approval::{self, AdmissionPolicy, SecretCheck, Verdict};
use super::backoff::Backoff;
use super::machine::{Kind, MeshCore};
use super::peers::{Origin, PeerSlot};
use super::{Action, LinkId, PeerConfig, PeerKey};

impl<H: Clone> MeshCore<H> {
    pub(super) fn reconfigure(
        &mut self,
        peers: Vec<PeerConfig>,
        admission: AdmissionPolicy,
        secret_changed: bool,
        now_ms: u64,
        out: &mut Vec<Action<H>>,
    ) {
        self.reconfigure_peers(peers, now_ms, out);
        self.cfg.admission = admission;
        if secret_changed {
            for check in self.gate.secrets.values_mut() {
                if *check == SecretCheck::Proven {
                    *check = SecretCheck::Wrong;
                }
            }
        }
        self.readmit(now_ms, out);
        self.prune_offline(secret_changed);
    }

    fn reconfigure_peers(&mut self, peers: Vec<PeerConfig>, now_ms: u64, out: &mut Vec<Action<H>>) {
        let mut fresh = peers;
        for i in 0..self.cfg.peers.len() {
            if self.cfg.peers[i].url.is_empty() {
                continue; // retired earlier
            }
            if let Some(pos) = fresh.iter().position(|p| *p == self.cfg.peers[i]) {
                fresh.remove(pos);
                continue;
            }
            let url = std::mem::take(&mut self.cfg.peers[i]).url;
            let key = PeerKey::Configured(i);
            self.peers.remove(&key);
            self.close_links_of(
                |l| l == key,
                "the peer was removed from this node's configuration",
                out,
            );
            tracing::info!(peer = url, "configured peer removed");
        }
        for p in fresh {
            let key = PeerKey::Configured(self.cfg.peers.len());
            let mut slot = PeerSlot::new(p.url.clone(), Origin::Config, p.node_id.clone(), now_ms);
            slot.backoff = Backoff::new(self.cfg.backoff);
            tracing::info!(peer = p.url, "configured peer added");
            self.cfg.peers.push(p);
            self.peers.insert(key, slot);
            if self.started {
                self.dial(key, now_ms, out);
            }
        }
    }

    /// Closes the live links whose row `which` selects.
    fn close_links_of(
        &mut self,
        which: impl Fn(PeerKey) -> bool,
        reason: &str,
        out: &mut Vec<Action<H>>,
    ) {
        for l in self.links.values_mut() {
            if which(l.peer) && !l.closing {
                l.closing = true;
                out.push(Action::Close {
                    handle: l.handle.clone(),
                    reason: reason.to_string(),
                });
            }
        }
    }

    /// Judges every mesh link and every pending link again under the current rules.
    fn readmit(&mut self, now_ms: u64, out: &mut Vec<Action<H>>) {
        let live: Vec<(LinkId, PeerKey, String)> = self
            .links
            .iter()
            .filter(|(_, l)| !l.closing && matches!(l.kind, Kind::Mesh { .. }))
            .map(|(id, l)| (*id, l.peer, l.node.clone()))
            .collect();
        for (link, peer, node) in live {
            if let Verdict::Welcome(_) = self.verdict_again(link, peer, &node) {
                continue;
            }
            if let Some(l) = self.links.get_mut(&link) {
                l.closing = true;
                tracing::info!(
                    peer = node,
                    "peer no longer admitted after a configuration change"
                );
                out.push(Action::Close {
                    handle: l.handle.clone(),
                    reason: "no longer admitted after a configuration change".into(),
                });
            }
        }
        let pending: Vec<(LinkId, PeerKey, String)> = self
            .gate
            .pending
            .iter()
            .map(|(l, p)| (*l, p.peer, p.node.clone()))
            .collect();
        for (link, peer, node) in pending {
            if let Verdict::Welcome(by) = self.verdict_again(link, peer, &node) {
                self.welcome_one(link, by, now_ms, out);
            }
        }
    }

    /// The verdict on authenticated link `link` to `node` under the rules in force now, with
    /// what its handshake proved.
    pub(super) fn verdict_again(&self, link: LinkId, peer: PeerKey, node: &str) -> Verdict {
        let secret = self
            .gate
            .secrets
            .get(&link)
            .copied()
            .unwrap_or(SecretCheck::NotConfigured);
        approval::decide(
            &self.cfg.admission,
            &self.gate.approvals,
            node,
            self.is_configured(peer, node),
            secret,
        )
    }
}
