//! Admission in the core: the verdict on each authenticated link, the links held until a
//! person approves them, and approvals and denials taking effect on live links.
//!
//! The verdict itself is [`approval::decide`]; this module feeds it the core's facts
//! (whether the link is to a configured peer, the approvals so far), keeps the pending
//! links (at most [`CoreConfig::max_pending`](super::CoreConfig::max_pending): an identity
//! costs an attacker nothing, so the oldest waiting one gives way), and shows them in the
//! peer table.

use std::collections::BTreeSet;

use super::approval::{self, AdmittedBy, Approvals, SecretCheck, Verdict};
use super::machine::MeshCore;
use super::peers::{LinkState, WaitingFor};
use super::{Action, LinkId, PeerKey};

/// Node ids whose first pending link this run was logged at WARN (later ones at DEBUG).
const ANNOUNCED_MAX: usize = 1024;

/// A link held until its node is approved.
#[derive(Debug, Clone)]
pub(super) struct PendingLink {
    pub(super) peer: PeerKey,
    pub(super) node: String,
    pub(super) since_ms: u64,
}

/// The core's admission state.
#[derive(Debug, Default)]
pub(super) struct Gate {
    pub(super) approvals: Approvals,
    pub(super) pending: std::collections::BTreeMap<LinkId, PendingLink>,
    /// What each authenticated link (pending or up) proved about the mesh secret, so a
    /// reload can judge it again.
    pub(super) secrets: std::collections::BTreeMap<LinkId, SecretCheck>,
    announced: BTreeSet<String>,
}

impl Gate {
    pub(super) fn new(approvals: Approvals) -> Self {
        Gate {
            approvals,
            ..Gate::default()
        }
    }
}

impl<H: Clone> MeshCore<H> {
    /// Whether `node` is a peer this node was told to dial: the link is that row's own
    /// dial, or a configured row knows `node` as its node id.
    pub(super) fn is_configured(&self, peer: PeerKey, node: &str) -> bool {
        matches!(peer, PeerKey::Configured(_)) || self.configured_node(node)
    }

    /// Whether `node` is the node of a configured peer (named in the configuration, or
    /// proven on the peer's row).
    fn configured_node(&self, node: &str) -> bool {
        self.cfg.peers.iter().enumerate().any(|(i, p)| {
            p.node_id.as_deref() == Some(node)
                || self
                    .peers
                    .get(&PeerKey::Configured(i))
                    .and_then(|s| s.node_id.as_deref())
                    == Some(node)
        })
    }

    pub(super) fn on_authenticated(
        &mut self,
        link: LinkId,
        peer: PeerKey,
        node: String,
        secret: SecretCheck,
        now_ms: u64,
        out: &mut Vec<Action<H>>,
    ) {
        let configured = self.is_configured(peer, &node);
        self.gate.secrets.insert(link, secret);
        if let Some(slot) = self.peers.get_mut(&peer) {
            // Proven by the secure channel, whatever the verdict.
            slot.node_id = Some(node.clone());
        }
        if matches!(peer, PeerKey::Configured(_)) {
            // Now this node knows who its configured peer is: a link that node dialed here
            // first, held as pending while its id was unknown, is welcome too.
            self.configured_reached(&node, now_ms, out);
        }
        let verdict = approval::decide(
            &self.cfg.admission,
            &self.gate.approvals,
            &node,
            configured,
            secret,
        );
        if let Verdict::Pending(reason) = &verdict {
            let address = self.peers.get(&peer).map(|p| p.address.clone());
            let first = self.gate.announced.len() < ANNOUNCED_MAX
                && self.gate.announced.insert(node.clone());
            if first {
                tracing::warn!(peer = node, address, "{reason}");
            } else {
                tracing::debug!(peer = node, address, "{reason}");
            }
            if let Some(slot) = self.peers.get_mut(&peer) {
                let state = LinkState::Pending {
                    waiting_for: WaitingFor::ThisNode,
                };
                slot.set_state(state, Some(reason.clone()), now_ms);
            }
            self.gate.pending.insert(
                link,
                PendingLink {
                    peer,
                    node,
                    since_ms: now_ms,
                },
            );
            self.trim_pending(out);
        }
        out.push(Action::Verdict { link, verdict });
    }

    /// Past the cap, the link that waited longest gives way.
    fn trim_pending(&mut self, out: &mut Vec<Action<H>>) {
        while self.gate.pending.len() > self.cfg.max_pending {
            let Some((&oldest, _)) = self
                .gate
                .pending
                .iter()
                .min_by_key(|(l, p)| (p.since_ms, **l))
            else {
                return;
            };
            self.gate.pending.remove(&oldest);
            out.push(Action::Verdict {
                link: oldest,
                verdict: Verdict::Refuse(
                    "too many peers wait for approval at this node; try again later".into(),
                ),
            });
        }
    }

    pub(super) fn on_peer_pending(&mut self, peer: PeerKey, reason: String, now_ms: u64) {
        tracing::info!(peer = ?peer, reason, "the peer holds this node until its operator approves it");
        if let Some(slot) = self.peers.get_mut(&peer) {
            let state = LinkState::Pending {
                waiting_for: WaitingFor::Peer,
            };
            slot.set_state(state, Some(reason), now_ms);
        }
    }

    /// A person approved `node`: its waiting links are welcomed.
    pub(super) fn approve(&mut self, node: &str, now_ms: u64, out: &mut Vec<Action<H>>) {
        self.gate.approvals.approve(node);
        self.welcome_pending(node, AdmittedBy::Approved, now_ms, out);
    }

    /// A configured row's link reached `node`: links of `node` held as pending (it dialed
    /// first, before this node knew its id) are welcomed now; the tie-break keeps one.
    pub(super) fn configured_reached(&mut self, node: &str, now_ms: u64, out: &mut Vec<Action<H>>) {
        self.welcome_pending(node, AdmittedBy::Configured, now_ms, out);
    }

    fn welcome_pending(
        &mut self,
        node: &str,
        by: AdmittedBy,
        now_ms: u64,
        out: &mut Vec<Action<H>>,
    ) {
        for (link, p) in self.take_pending(node) {
            self.welcome_taken(link, &p, by, now_ms, out);
        }
    }

    /// Welcomes pending link `link` (if it still waits).
    pub(super) fn welcome_one(
        &mut self,
        link: LinkId,
        by: AdmittedBy,
        now_ms: u64,
        out: &mut Vec<Action<H>>,
    ) {
        if let Some(p) = self.gate.pending.remove(&link) {
            self.welcome_taken(link, &p, by, now_ms, out);
        }
    }

    fn welcome_taken(
        &mut self,
        link: LinkId,
        p: &PendingLink,
        by: AdmittedBy,
        now_ms: u64,
        out: &mut Vec<Action<H>>,
    ) {
        if let Some(slot) = self.peers.get_mut(&p.peer) {
            slot.set_state(LinkState::Connecting, None, now_ms);
        }
        tracing::info!(peer = p.node, by = ?by, "pending peer admitted");
        out.push(Action::Verdict {
            link,
            verdict: Verdict::Welcome(by),
        });
    }

    /// A person denied `node`: its waiting links are refused and its live links closed.
    pub(super) fn deny(&mut self, node: &str, out: &mut Vec<Action<H>>) {
        self.gate.approvals.deny(node);
        let reason = format!("node {node} was denied by this node's operator");
        for (link, _) in self.take_pending(node) {
            out.push(Action::Verdict {
                link,
                verdict: Verdict::Refuse(reason.clone()),
            });
        }
        for l in self.links.values_mut() {
            if l.node == node && !l.closing {
                l.closing = true;
                out.push(Action::Close {
                    handle: l.handle.clone(),
                    reason: reason.clone(),
                });
            }
        }
        // Its offline row goes now; a live link's row goes when the link closes.
        self.prune_offline(false);
        tracing::info!(peer = node, "peer denied");
    }

    /// Removes and returns the pending links of `node`.
    fn take_pending(&mut self, node: &str) -> Vec<(LinkId, PendingLink)> {
        let links: Vec<LinkId> = self
            .gate
            .pending
            .iter()
            .filter(|(_, p)| p.node == node)
            .map(|(l, _)| *l)
            .collect();
        links
            .into_iter()
            .filter_map(|l| self.gate.pending.remove(&l).map(|p| (l, p)))
            .collect()
    }

    /// Forgets link `link` as pending (it was established, or it ended).
    pub(super) fn unpend(&mut self, link: LinkId) {
        self.gate.pending.remove(&link);
    }

    /// Whether `node` may hold a reservation on this node's libp2p circuit relay (when it
    /// is a relay server): a node this node's rules admit without a link (open mesh, allow
    /// list, approval, configuration) or one linked to it now (it proved what admission
    /// asked, such as the mesh secret, which a relay cannot check). A denied node never. A
    /// relay open to anyone would carry strangers' traffic up to its limits.
    pub fn admits_relay_reservation(&self, node: &str) -> bool {
        if self.gate.approvals.denied.contains(node) {
            return false;
        }
        if self.linked(node) {
            return true;
        }
        matches!(
            approval::decide(
                &self.cfg.admission,
                &self.gate.approvals,
                node,
                self.configured_node(node),
                SecretCheck::NotConfigured,
            ),
            Verdict::Welcome(_)
        )
    }

    /// The approvals and denials so far.
    pub fn approvals(&self) -> &Approvals {
        &self.gate.approvals
    }

    /// Links held until a person approves their node: (link, node id, since).
    pub fn pending_links(&self) -> Vec<(LinkId, String, u64)> {
        self.gate
            .pending
            .iter()
            .map(|(l, p)| (*l, p.node.clone(), p.since_ms))
            .collect()
    }
}
