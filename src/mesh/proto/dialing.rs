//! Dialing decisions of [`MeshCore`]: when a configured or discovered peer is probed,
//! dialed, backed off or left alone, and what a failed handshake means for its row.

use std::time::Duration;

use super::backoff::Backoff;
use super::machine::MeshCore;
use super::peers::{LinkState, Origin, PeerSlot};
use super::{Action, DiscoverySource, HandshakeEnd, LinkId, PeerKey, Probe, Timer, Transport};

impl<H: Clone> MeshCore<H> {
    /// Starts a new attempt on row `key`: probe the peer first.
    pub(super) fn dial(&mut self, key: PeerKey, now_ms: u64, out: &mut Vec<Action<H>>) {
        if self.has_link(key) {
            return;
        }
        let Some(slot) = self.peers.get_mut(&key) else {
            return;
        };
        if slot.state == LinkState::IsSelf {
            return;
        }
        if let PeerKey::Configured(i) = key {
            if let Err(e) = super::url::check_peer_address(&self.cfg.peers[i].url) {
                tracing::error!(error = %e, "peer not dialed");
                slot.set_state(
                    LinkState::Refused {
                        reason: e.to_string(),
                        next_retry_ms: 0,
                    },
                    Some(e.to_string()),
                    now_ms,
                );
                return;
            }
        }
        slot.attempt += 1;
        slot.via_other = false;
        slot.started_ms = now_ms;
        slot.set_state(LinkState::Connecting, None, now_ms);
        // A multiaddr names a libp2p node: there is no `GET /` to probe, it is dialed.
        if Transport::of_address(&slot.address) == Transport::P2p {
            out.push(Action::DialMesh {
                peer: key,
                attempt: slot.attempt,
                url: slot.address.clone(),
                transport: Transport::P2p,
                expect: slot.node_id.clone(),
            });
            return;
        }
        out.push(Action::Probe {
            peer: key,
            attempt: slot.attempt,
            url: slot.address.clone(),
        });
    }

    /// Schedules the next attempt of `key` after its backoff (`uptime` of a link that was
    /// up, which resets the backoff when it was stable).
    pub(super) fn back_off(
        &mut self,
        key: PeerKey,
        uptime: Option<u64>,
        error: String,
        now_ms: u64,
        out: &mut Vec<Action<H>>,
    ) {
        self.back_off_as(key, uptime, error, None, now_ms, out)
    }

    /// Backs off a row whose peer speaks another protocol version (`incompatible`).
    pub(super) fn back_off_incompatible(
        &mut self,
        key: PeerKey,
        reason: String,
        now_ms: u64,
        out: &mut Vec<Action<H>>,
    ) {
        self.back_off_with(
            key,
            None,
            reason.clone(),
            Why::Incompatible(reason),
            now_ms,
            out,
        )
    }

    pub(super) fn back_off_as(
        &mut self,
        key: PeerKey,
        uptime: Option<u64>,
        error: String,
        refused: Option<String>,
        now_ms: u64,
        out: &mut Vec<Action<H>>,
    ) {
        let why = match refused {
            Some(reason) => Why::Refused(reason),
            None => Why::Unreachable,
        };
        self.back_off_with(key, uptime, error, why, now_ms, out)
    }

    /// Backs off row `key` after `error`, in the state `why` says; logs the change once
    /// (when the state or the error is new, not at every retry).
    fn back_off_with(
        &mut self,
        key: PeerKey,
        uptime: Option<u64>,
        error: String,
        why: Why,
        now_ms: u64,
        out: &mut Vec<Action<H>>,
    ) {
        let r = self.random();
        let Some(slot) = self.peers.get_mut(&key) else {
            return;
        };
        let started = now_ms.saturating_sub(slot.started_ms);
        slot.backoff
            .link_closed(Duration::from_millis(uptime.unwrap_or(started)));
        let delay = slot.backoff.next_delay(r).as_millis() as u64;
        let next_retry_ms = now_ms + delay;
        let state = match why {
            Why::Refused(reason) => LinkState::Refused {
                reason,
                next_retry_ms,
            },
            Why::Incompatible(reason) => LinkState::Incompatible {
                reason,
                next_retry_ms,
            },
            Why::Unreachable => LinkState::BackingOff { next_retry_ms },
        };
        let new_error = slot.last_error.as_deref() != Some(error.as_str());
        // A link that just went down was logged by `on_closed`.
        let was_up = slot.state == LinkState::Connected;
        let name = state.name();
        let changed = slot.set_state(state, Some(error.clone()), now_ms);
        if (changed || new_error) && !was_up {
            let (url, node) = (slot.address.as_str(), slot.node_id.as_deref());
            match name {
                "backing_off" => tracing::info!(url, node, error, "peer link down; dialing again"),
                _ => tracing::warn!(url, node, state = name, error, "peer link refused"),
            }
        }
        out.push(Action::SetTimer {
            after_ms: delay,
            timer: Timer::Redial {
                peer: key,
                attempt: slot.attempt,
            },
        });
    }

    pub(super) fn on_timer(&mut self, timer: Timer, now_ms: u64, out: &mut Vec<Action<H>>) {
        let (Timer::Redial { peer, attempt } | Timer::DeferOver { peer, attempt }) = timer;
        // A row whose own link is up needs no dial: a timer set when an older link of the row
        // closed while a newer dial was under way must not mark the new link as "reached
        // through another" (which drops its sync state).
        if !self.current(peer, attempt) || self.has_link(peer) {
            return;
        }
        let (node, defer) = match self.peers.get(&peer) {
            Some(p) => (p.node_id.clone(), p.defer),
            None => return,
        };
        if let (PeerKey::Discovered(_), Some(node)) = (peer, node.as_deref()) {
            if self.linked(node) {
                self.reached_via_other(peer, now_ms);
                return;
            }
            if defer && matches!(timer, Timer::Redial { .. }) {
                self.wait_for_dial(peer, out);
                return;
            }
        }
        self.dial(peer, now_ms, out);
    }

    /// A discovered peer with the lower id should dial: give it its time first.
    pub(super) fn wait_for_dial(&mut self, key: PeerKey, out: &mut Vec<Action<H>>) {
        let after_ms = self.cfg.discovery_defer_ms;
        if let Some(slot) = self.peers.get_mut(&key) {
            slot.attempt += 1;
            out.push(Action::SetTimer {
                after_ms,
                timer: Timer::DeferOver {
                    peer: key,
                    attempt: slot.attempt,
                },
            });
        }
    }

    /// Row `key` is reached through a link its peer dialed.
    pub(super) fn reached_via_other(&mut self, key: PeerKey, now_ms: u64) {
        if let Some(slot) = self.peers.get_mut(&key) {
            slot.via_other = true;
            // The rooms are shown on the row that carries the link.
            slot.rooms.clear();
            slot.set_state(LinkState::Connected, None, now_ms);
        }
    }

    pub(super) fn on_probed(
        &mut self,
        peer: PeerKey,
        attempt: u64,
        answer: Probe,
        now_ms: u64,
        out: &mut Vec<Action<H>>,
    ) {
        if !self.current(peer, attempt) {
            return;
        }
        let plain_index = match peer {
            PeerKey::Configured(i) if !self.cfg.peers[i].rooms.is_empty() => Some(i),
            _ => None,
        };
        match (answer, plain_index) {
            (Probe::Other, Some(index)) => out.push(Action::DialPlain {
                peer,
                attempt,
                index,
            }),
            (Probe::Other, None) => {
                let reason = "not a ymesh node; list its rooms in [[peers]] rooms = [...] to \
                              replicate with it as a plain y-websocket server"
                    .to_string();
                self.back_off_as(peer, None, reason.clone(), Some(reason), now_ms, out);
            }
            // Unreachable: let the dial report it.
            (Probe::Ymesh | Probe::Unreachable(_), _) => {
                let Some(slot) = self.peers.get(&peer) else {
                    return;
                };
                let url = match super::url::mesh_url(&slot.address) {
                    Ok(u) => u,
                    Err(e) => {
                        let reason = e.to_string();
                        self.back_off_as(peer, None, reason.clone(), Some(reason), now_ms, out);
                        return;
                    }
                };
                out.push(Action::DialMesh {
                    peer,
                    attempt,
                    url,
                    transport: Transport::Ws,
                    expect: slot.node_id.clone(),
                });
            }
        }
    }

    pub(super) fn on_found(
        &mut self,
        id: String,
        url: String,
        source: DiscoverySource,
        now_ms: u64,
        out: &mut Vec<Action<H>>,
    ) {
        if id == self.cfg.node_id {
            return;
        }
        // A configured peer is dialed by its own row: never twice.
        let configured = self.cfg.peers.iter().any(|p| {
            p.node_id.as_deref() == Some(id.as_str())
                || super::url::authority(&p.url)
                    .is_some_and(|a| Some(a) == super::url::authority(&url))
        }) || self.peers.iter().any(|(k, p)| {
            matches!(k, PeerKey::Configured(_)) && p.node_id.as_deref() == Some(id.as_str())
        });
        if configured {
            tracing::debug!(peer = id, source = %source, "discovered a configured peer");
            return;
        }
        if let Some((key, slot)) = self.discovered_mut(&id) {
            slot.gone = false;
            if slot.address == url {
                return;
            }
            // It moved: start over at the new address.
            self.peers.remove(&key);
        }
        let found = self
            .peers
            .keys()
            .filter(|k| matches!(k, PeerKey::Discovered(_)))
            .count();
        if found >= self.cfg.max_discovered {
            tracing::warn!(
                peer = id,
                url,
                "discovered peer ignored: already {} discovered peers",
                self.cfg.max_discovered
            );
            return;
        }
        tracing::info!(peer = id, url, source = %source, "discovered a peer");
        let key = PeerKey::Discovered(self.next_discovered);
        self.next_discovered += 1;
        let mut slot = PeerSlot::new(url, Origin::Found(source), Some(id.clone()), now_ms);
        slot.backoff = Backoff::new(self.cfg.backoff);
        // Both nodes discover each other: the one with the lower id dials; the other waits
        // for that link and dials only if it does not come.
        slot.defer = self.cfg.node_id.as_str() > id.as_str();
        let defer = slot.defer;
        self.peers.insert(key, slot);
        if self.linked(&id) {
            self.reached_via_other(key, now_ms);
        } else if defer {
            self.wait_for_dial(key, out);
        } else {
            self.dial(key, now_ms, out);
        }
    }

    pub(super) fn discovered_mut(&mut self, id: &str) -> Option<(PeerKey, &mut PeerSlot)> {
        self.peers.iter_mut().find_map(|(k, p)| {
            (matches!(p.origin, Origin::Found(_)) && p.node_id.as_deref() == Some(id))
                .then_some((*k, p))
        })
    }

    pub(super) fn on_lost(&mut self, id: &str, source: DiscoverySource) {
        let linked = self.linked(id);
        let Some((key, slot)) = self.discovered_mut(id) else {
            return;
        };
        if slot.origin != Origin::Found(source) {
            return;
        }
        tracing::info!(peer = id, source = %source, "peer's announcement is gone");
        slot.gone = true;
        if !linked {
            self.peers.remove(&key);
        }
    }

    /// A dialed connection opened: the row is in its handshake.
    pub(super) fn on_dial_opened(&mut self, peer: PeerKey, attempt: u64, now_ms: u64) {
        if self.current(peer, attempt) {
            if let Some(slot) = self.peers.get_mut(&peer) {
                slot.set_state(LinkState::Handshaking, None, now_ms);
            }
        }
    }

    pub(super) fn on_handshake_failed(
        &mut self,
        _link: LinkId,
        peer: PeerKey,
        end: HandshakeEnd,
        now_ms: u64,
        out: &mut Vec<Action<H>>,
    ) {
        if let PeerKey::Inbound(_) = peer {
            let address = self.peers.get(&peer).map(|p| p.address.clone());
            let node = self.peers.get(&peer).and_then(|p| p.node_id.clone());
            match &end {
                // A node this one refused (a denial, a version): the operator wants to know.
                HandshakeEnd::Refused(reason) | HandshakeEnd::Incompatible(reason) => {
                    tracing::warn!(address, node, reason, "inbound peer refused")
                }
                // A socket that never finished its handshake is anyone's: one line per
                // socket at INFO would let a flood of strangers fill the log.
                HandshakeEnd::Closed(reason) => {
                    tracing::debug!(address, reason, "inbound link ended in its handshake")
                }
                HandshakeEnd::IsSelf => {}
            }
            self.peers.remove(&peer);
            return;
        }
        match end {
            HandshakeEnd::IsSelf => {
                let addr = self.peers.get(&peer).map(|p| p.address.clone());
                tracing::warn!(
                    url = addr,
                    "peer address leads back to this node; not dialing it again"
                );
                if let Some(slot) = self.peers.get_mut(&peer) {
                    slot.set_state(LinkState::IsSelf, None, now_ms);
                }
            }
            HandshakeEnd::Refused(reason) => {
                self.back_off_as(peer, None, reason.clone(), Some(reason), now_ms, out);
            }
            HandshakeEnd::Incompatible(reason) => {
                self.back_off_incompatible(peer, reason, now_ms, out);
            }
            HandshakeEnd::Closed(reason) => {
                self.back_off(peer, None, reason, now_ms, out);
            }
        }
    }
}

/// Which state a row backs off in.
enum Why {
    /// The peer could not be reached or the link closed: `backing_off`.
    Unreachable,
    /// The peer answered and one side refused: `refused`.
    Refused(String),
    /// Another protocol version: `incompatible`.
    Incompatible(String),
}
