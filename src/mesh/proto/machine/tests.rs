//! Unit tests of the mesh core: single decisions, event by event. The simulator
//! (`tests/mesh_sim.rs`) drives whole meshes of cores.

use super::*;
use crate::command::{CommandIssuer, CommandKind};
use crate::mesh::proto::approval::{SecretCheck, Verdict};
use crate::mesh::proto::{DiscoverySource, PeerRow, Probe};

type Core = MeshCore<u64>;

fn core(me: &str, peers: Vec<PeerConfig>) -> Core {
    let mut c = Core::new(CoreConfig::new(me, peers, 7), 0);
    let _ = c.handle(Event::Start, 0);
    c
}

fn peer(url: &str) -> PeerConfig {
    PeerConfig {
        url: url.into(),
        ..PeerConfig::default()
    }
}

fn handshaken(c: &mut Core, link: LinkId, peer: PeerKey, node: &str, tag: u8) -> Vec<Action<u64>> {
    c.handle(
        Event::Handshaken {
            link,
            peer,
            node_id: node.into(),
            tag: vec![tag],
            handle: link,
            road: crate::mesh::proto::Road::default(),
        },
        10,
    )
}

fn admitted(actions: &[Action<u64>], link: LinkId) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Admit { link: l, .. } if *l == link))
}

fn rejected(actions: &[Action<u64>], link: LinkId) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Reject { link: l, .. } if *l == link))
}

fn open(c: &mut Core, link: LinkId, rooms: &[(&str, &str)]) -> Vec<Action<u64>> {
    c.handle(
        Event::LinkOpened {
            link,
            ours: rooms
                .iter()
                .map(|(r, d)| (r.to_string(), d.to_string()))
                .collect(),
            changed: Vec::new(),
            marker: None,
            store_now: Some(5),
        },
        10,
    )
}

#[test]
fn a_link_dialed_to_a_discovered_peer_counts_as_dialed_by_this_node() {
    // "a" < "b": the link "a" dialed wins on both sides, whether "a" found "b" by
    // configuration or by discovery.
    let mut a = core("a", vec![]);
    let found = a.handle(
        Event::Discovered {
            node_id: "b".into(),
            url: "http://b:3913".into(),
            source: DiscoverySource::Mdns,
        },
        1,
    );
    assert!(matches!(found[..], [Action::Probe { .. }]), "{found:?}");
    let ours = handshaken(&mut a, 1, PeerKey::Discovered(0), "b", 9);
    assert!(admitted(&ours, 1));
    let _ = a.handle(
        Event::InboundOpened {
            link: 2,
            remote: "b".into(),
        },
        10,
    );
    // "b" dialed too (it has "a" configured): its link is the duplicate, whatever its tag.
    let theirs = handshaken(&mut a, 2, PeerKey::Inbound(2), "b", 1);
    assert!(rejected(&theirs, 2), "{theirs:?}");
    assert_eq!(a.live_links().len(), 1);
}

#[test]
fn two_links_dialed_by_the_same_node_are_told_apart_by_their_tag() {
    let mut b = core("b", vec![]);
    for link in [1, 2] {
        let _ = b.handle(
            Event::InboundOpened {
                link,
                remote: "a".into(),
            },
            1,
        );
    }
    assert!(admitted(
        &handshaken(&mut b, 1, PeerKey::Inbound(1), "a", 8),
        1
    ));
    // The later link has the smaller tag: it is kept and the first is closed.
    let second = handshaken(&mut b, 2, PeerKey::Inbound(2), "a", 3);
    assert!(admitted(&second, 2), "{second:?}");
    assert!(second
        .iter()
        .any(|a| matches!(a, Action::Close { handle: 1, .. })));
}

#[test]
fn a_peer_reached_through_its_own_link_is_dialed_again_when_that_link_closes() {
    // "b" has "a" configured; "a" (lower id) dialed "b" first.
    let mut b = core("b", vec![peer("ws://a:3913")]);
    let _ = b.handle(
        Event::InboundOpened {
            link: 1,
            remote: "a".into(),
        },
        1,
    );
    assert!(admitted(
        &handshaken(&mut b, 1, PeerKey::Inbound(1), "a", 5),
        1
    ));
    let ours = handshaken(&mut b, 2, PeerKey::Configured(0), "a", 2);
    assert!(rejected(&ours, 2));
    let row = &b.rows()[0].1;
    assert_eq!(row.state, LinkState::Connected);
    // The link "a" dialed goes away: "b" dials at once, no poll, no backoff.
    let after = b.handle(
        Event::LinkClosed {
            link: 1,
            reason: "gone".into(),
        },
        20,
    );
    assert!(
        after.iter().any(|a| matches!(
            a,
            Action::Probe {
                peer: PeerKey::Configured(0),
                ..
            }
        )),
        "{after:?}"
    );
}

#[test]
fn the_marker_moves_only_after_a_settled_link() {
    let mut a = core("a", vec![]);
    // (link, marker in use, store position at link-up, up for, marker persisted)
    let cases = [
        (1, Some(3), Some(9), 1_000, None),
        (2, Some(3), Some(9), 20_000, Some(9)),
        (3, None, Some(12), 1_000, Some(12)),
    ];
    for (link, marker, store_now, up_for, persisted) in cases {
        let _ = a.handle(
            Event::InboundOpened {
                link,
                remote: "b".into(),
            },
            10,
        );
        let _ = handshaken(&mut a, link, PeerKey::Inbound(link), "b", 1);
        let _ = a.handle(
            Event::LinkOpened {
                link,
                ours: BTreeMap::new(),
                changed: Vec::new(),
                marker,
                store_now,
            },
            10,
        );
        let closed = a.handle(
            Event::LinkClosed {
                link,
                reason: "gone".into(),
            },
            10 + up_for,
        );
        let moved = closed.iter().find_map(|a| match a {
            Action::PersistMarker { marker, .. } => Some(*marker),
            _ => None,
        });
        assert_eq!(moved, persisted, "link {link} up {up_for} ms: {closed:?}");
    }
}

#[test]
fn a_command_is_delivered_once_and_passed_on_to_the_other_links() {
    let mut a = core("a", vec![]);
    for (link, node) in [(1, "b"), (2, "c"), (3, "d")] {
        let _ = a.handle(
            Event::InboundOpened {
                link,
                remote: node.into(),
            },
            1,
        );
        let _ = handshaken(&mut a, link, PeerKey::Inbound(link), node, 1);
        let _ = open(&mut a, link, &[]);
    }
    let command = CommandIssuer::new("b", "boot").issue(
        CommandKind::Compact,
        None,
        serde_json::json!({}),
        0,
        60_000,
    );
    let arrive = |a: &mut Core, link| {
        a.handle(
            Event::Control {
                link,
                control: Control::Command {
                    command: command.clone(),
                    state_vector: None,
                },
            },
            100,
        )
    };
    let first = arrive(&mut a, 1);
    let delivered = first
        .iter()
        .filter(|a| matches!(a, Action::DeliverCommand { .. }))
        .count();
    assert_eq!(delivered, 1);
    let forwarded: Vec<LinkId> = first
        .iter()
        .filter_map(|a| match a {
            Action::ForwardCommand { links, .. } => Some(links.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(forwarded, vec![2, 3]);
    // The same command over another link: nothing.
    assert!(arrive(&mut a, 2).is_empty());
}

#[test]
fn fanout_skips_the_link_a_change_came_from() {
    let mut a = core("a", vec![]);
    for (link, node) in [(1, "b"), (2, "c")] {
        let _ = a.handle(
            Event::InboundOpened {
                link,
                remote: node.into(),
            },
            1,
        );
        let _ = handshaken(&mut a, link, PeerKey::Inbound(link), node, 1);
    }
    let mut to = Vec::new();
    a.fanout("notes", Some(1), 50, true, |link, _, plain| {
        assert!(!plain);
        to.push(link)
    });
    assert_eq!(to, vec![2]);
    assert!(!a.has_targets(Some(1)) || a.has_targets(None));
}

#[test]
fn a_peer_that_is_not_a_ymesh_node_is_refused_unless_it_has_rooms() {
    let mut a = core("a", vec![peer("ws://plain:1234")]);
    let refused = a.handle(
        Event::Probed {
            peer: PeerKey::Configured(0),
            attempt: 1,
            answer: Probe::Other,
        },
        5,
    );
    assert!(
        matches!(refused[..], [Action::SetTimer { .. }]),
        "{refused:?}"
    );
    assert!(matches!(a.rows()[0].1.state, LinkState::Refused { .. }));
    let mut with_rooms = peer("ws://plain:1234");
    with_rooms.rooms = vec!["r".into()];
    let mut b = core("b", vec![with_rooms]);
    let dial = b.handle(
        Event::Probed {
            peer: PeerKey::Configured(0),
            attempt: 1,
            answer: Probe::Other,
        },
        5,
    );
    assert!(
        matches!(dial[..], [Action::DialPlain { index: 0, .. }]),
        "{dial:?}"
    );
}

/// Every room of the node is listed for every peer: unknown before any link, not shared
/// when the policy keeps it, pending with a count when changed while the peer is away, and
/// synced once the peer acknowledged.
#[test]
fn room_status_covers_every_room_with_every_peer() {
    use crate::mesh::proto::RoomStatus;
    let mut cfg = peer("ws://b:3913");
    cfg.share = SharePolicy::List(vec!["a".into(), "c".into()]);
    let mut c = core("A", vec![cfg]);
    let _ = c.handle(
        Event::LocalRooms {
            rooms: vec!["a".into(), "b".into()],
        },
        1,
    );
    let status = |c: &Core, room: &str| {
        let rows = c.rows();
        let row = &rows
            .iter()
            .find(|(k, _)| *k == PeerKey::Configured(0))
            .unwrap()
            .1;
        let r = row.rooms.iter().find(|r| r.name == room).cloned();
        r.map(|r| (r.status, r.unacked))
    };
    assert_eq!(status(&c, "a"), Some((RoomStatus::Unknown, None)));
    assert_eq!(status(&c, "b"), Some((RoomStatus::NotShared, None)));
    // Linked: "a" is confirmed by the manifest exchange, then a change is in flight until
    // the peer acknowledges it.
    let _ = handshaken(&mut c, 1, PeerKey::Configured(0), "B", 1);
    let ours: BTreeMap<String, String> = [("a".to_string(), "d1".to_string())].into();
    let _ = c.handle(
        Event::LinkOpened {
            link: 1,
            ours,
            changed: vec![],
            marker: None,
            store_now: None,
        },
        11,
    );
    let manifest = Control::Manifest {
        rooms: vec![ManifestEntry {
            name: "a".into(),
            digest: "d1".into(),
        }],
        complete: true,
    };
    let _ = c.handle(
        Event::Control {
            link: 1,
            control: manifest,
        },
        12,
    );
    assert_eq!(status(&c, "a"), Some((RoomStatus::Synced, None)));
    c.fanout("a", None, 13, true, |_, _, _| {});
    assert_eq!(status(&c, "a"), Some((RoomStatus::Pending, Some(1))));
    let ack = Control::Ack {
        rooms: [("a".to_string(), 1)].into(),
    };
    let _ = c.handle(
        Event::Control {
            link: 1,
            control: ack,
        },
        14,
    );
    assert_eq!(status(&c, "a"), Some((RoomStatus::Synced, None)));
    // The peer goes away: a change and a new room are pending, counted.
    let _ = c.handle(
        Event::LinkClosed {
            link: 1,
            reason: "gone".into(),
        },
        15,
    );
    assert_eq!(status(&c, "a"), Some((RoomStatus::Synced, None)));
    c.fanout("a", None, 16, true, |_, _, _| panic!("no link is up"));
    c.fanout("c", None, 17, true, |_, _, _| {});
    c.fanout("c", None, 18, true, |_, _, _| {});
    assert_eq!(status(&c, "a"), Some((RoomStatus::Pending, Some(1))));
    assert_eq!(status(&c, "c"), Some((RoomStatus::Pending, Some(2))));
    // Presence is not a change.
    c.fanout("a", None, 19, false, |_, _, _| {});
    assert_eq!(status(&c, "a"), Some((RoomStatus::Pending, Some(1))));
}

fn node_id(b: u8) -> String {
    crate::mesh::NodeIdentity::from_secret_bytes([b; 32])
        .node_id()
        .to_string()
}

/// (With the `p2p` feature: a lean build refuses multiaddr peers before the core sees them.)
#[cfg(feature = "p2p")]
#[test]
fn a_multiaddr_peer_is_dialed_over_libp2p_without_a_probe_and_expects_its_node_id() {
    let b = node_id(2);
    let addr = format!("/ip4/127.0.0.1/tcp/4001/p2p/{b}");
    let mut a = Core::new(CoreConfig::new(node_id(1), vec![peer(&addr)], 7), 0);
    let start = a.handle(Event::Start, 0);
    match &start[..] {
        [Action::DialMesh {
            url,
            transport,
            expect,
            ..
        }] => {
            assert_eq!(url, &addr);
            assert_eq!(*transport, crate::mesh::proto::Transport::P2p);
            assert_eq!(expect.as_deref(), Some(b.as_str()));
        }
        other => panic!("{other:?}"),
    }
    let row = &a.rows()[0].1;
    assert_eq!((row.transport, row.relayed), ("p2p", false));
}

#[test]
fn a_multiaddr_peer_found_again_by_mdns_is_not_dialed_twice() {
    let (me, b) = (node_id(1), node_id(2));
    let addr = format!("/ip4/127.0.0.1/tcp/4001/p2p/{b}");
    let mut a = Core::new(CoreConfig::new(me, vec![peer(&addr)], 7), 0);
    let _ = a.handle(Event::Start, 0);
    let found = a.handle(
        Event::Discovered {
            node_id: b.clone(),
            url: "http://10.0.0.2:3913".into(),
            source: DiscoverySource::Mdns,
        },
        1,
    );
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(a.rows().len(), 1);
}

#[test]
fn a_websocket_link_and_a_p2p_link_to_one_node_keep_one_and_the_row_shows_its_road() {
    use crate::mesh::proto::{Road, Transport};
    // "a" < "b": "a" dials "b" over libp2p (relayed), and "b" also dials "a" by WebSocket
    // (found by mDNS, say). Both ends keep the link "a" dialed, whichever came up first.
    let mut a = core("a", vec![peer("ws://b:3913")]);
    let _ = a.handle(
        Event::InboundOpened {
            link: 2,
            remote: "10.0.0.2:5000".into(),
        },
        1,
    );
    let theirs = handshaken(&mut a, 2, PeerKey::Inbound(2), "b", 1);
    assert!(admitted(&theirs, 2));
    let relayed = Road {
        transport: Transport::P2p,
        relayed: true,
    };
    let ours = a.handle(
        Event::Handshaken {
            link: 1,
            peer: PeerKey::Configured(0),
            node_id: "b".into(),
            tag: vec![9],
            handle: 1,
            road: relayed,
        },
        10,
    );
    assert!(admitted(&ours, 1), "{ours:?}");
    assert!(ours
        .iter()
        .any(|x| matches!(x, Action::Close { handle: 2, .. })));
    let rows = a.rows();
    let row = &rows
        .iter()
        .find(|(k, _)| *k == PeerKey::Configured(0))
        .unwrap()
        .1;
    assert_eq!((row.transport, row.relayed), ("p2p", true));
}

/// An inbound link from `node` (id `link`), handshaken and opened with room "r".
fn inbound_up(c: &mut Core, link: LinkId, node: &str, now_ms: u64) {
    let _ = c.handle(
        Event::InboundOpened {
            link,
            remote: format!("10.0.0.{link}:5000"),
        },
        now_ms,
    );
    assert!(admitted(
        &handshaken(c, link, PeerKey::Inbound(link), node, 1),
        link
    ));
    let _ = open(c, link, &[("r", "d")]);
}

fn close(c: &mut Core, link: LinkId, now_ms: u64) {
    let _ = c.handle(
        Event::LinkClosed {
            link,
            reason: "connection reset".into(),
        },
        now_ms,
    );
}

fn row_of<'a>(rows: &'a [(PeerKey, PeerRow)], node: &str) -> Vec<&'a PeerRow> {
    rows.iter()
        .map(|(_, r)| r)
        .filter(|r| r.node_id.as_deref() == Some(node))
        .collect()
}

#[test]
fn a_peer_that_dialed_in_stays_listed_as_offline_when_its_link_closes() {
    let mut a = core("a", vec![]);
    inbound_up(&mut a, 1, "laptop", 10);
    close(&mut a, 1, 20);
    let rows = a.rows();
    let laptop = row_of(&rows, "laptop");
    assert_eq!(laptop.len(), 1, "{rows:?}");
    assert_eq!(laptop[0].state, LinkState::Offline);
    assert_eq!(laptop[0].state.name(), "offline");
    assert_eq!(laptop[0].last_error.as_deref(), Some("connection reset"));
    assert_eq!(laptop[0].source, "inbound");
    // A change made while it is away is one it lacks.
    a.fanout("r", None, 30, true, |_, _, _| {});
    let rows = a.rows();
    let room = &row_of(&rows, "laptop")[0].rooms;
    assert!(room.iter().any(|r| r.name == "r" && !r.synced), "{room:?}");
    // It dials again: one row, connected, on the new link.
    inbound_up(&mut a, 2, "laptop", 40);
    let rows = a.rows();
    let laptop = row_of(&rows, "laptop");
    assert_eq!(laptop.len(), 1, "{rows:?}");
    assert_eq!(laptop[0].state, LinkState::Connected);
}

#[test]
fn a_link_closed_before_it_opened_leaves_no_offline_row() {
    let mut a = core("a", vec![]);
    let _ = a.handle(
        Event::InboundOpened {
            link: 1,
            remote: "10.0.0.1:5000".into(),
        },
        1,
    );
    let _ = handshaken(&mut a, 1, PeerKey::Inbound(1), "laptop", 1);
    close(&mut a, 1, 5);
    assert!(a.rows().is_empty(), "{:?}", a.rows());
}

#[test]
fn a_peer_that_dialed_in_and_is_configured_here_is_not_listed_twice() {
    // "b" has "a" configured, and "a" dialed first: the configured row shows "a".
    let mut b = core("b", vec![peer("ws://a:3913")]);
    inbound_up(&mut b, 1, "a", 1);
    let _ = handshaken(&mut b, 2, PeerKey::Configured(0), "a", 2);
    close(&mut b, 1, 20);
    let rows = b.rows();
    assert_eq!(row_of(&rows, "a").len(), 1, "{rows:?}");
    assert!(rows.iter().all(|(k, _)| *k == PeerKey::Configured(0)));
}

#[test]
fn offline_rows_are_bounded_the_longest_offline_dropped_first() {
    let mut a = core("a", vec![]);
    let n = crate::mesh::proto::offline::OFFLINE_ROWS as u64 + 3;
    for i in 0..n {
        inbound_up(&mut a, i + 1, &format!("device{i}"), 10 + i);
        close(&mut a, i + 1, 100 + i);
    }
    let rows = a.rows();
    assert_eq!(rows.len(), crate::mesh::proto::offline::OFFLINE_ROWS);
    for i in 0..3 {
        assert!(row_of(&rows, &format!("device{i}")).is_empty());
    }
    assert_eq!(row_of(&rows, &format!("device{}", n - 1)).len(), 1);
}

/// A core that admits no one by default: only `allow`, approvals and, with `has_secret`, a
/// peer that proves the mesh secret.
fn closed_core(me: &str, allow: &[&str], has_secret: bool) -> Core {
    let mut cfg = CoreConfig::new(me, vec![], 7);
    cfg.admission = closed_policy(allow, has_secret);
    let mut c = Core::new(cfg, 0);
    let _ = c.handle(Event::Start, 0);
    c
}

fn closed_policy(allow: &[&str], has_secret: bool) -> AdmissionPolicy {
    AdmissionPolicy {
        open: false,
        allow: allow.iter().map(|s| s.to_string()).collect(),
        has_secret,
    }
}

/// An inbound link from `node` judged as the real handshake does (the secret check, then
/// the verdict), admitted, opened with room "r", then closed: an offline row.
fn dial_in_and_leave(c: &mut Core, link: LinkId, node: &str, secret: SecretCheck, now_ms: u64) {
    let _ = c.handle(
        Event::InboundOpened {
            link,
            remote: format!("10.0.0.{link}:5000"),
        },
        now_ms,
    );
    let verdict = c.handle(
        Event::Authenticated {
            link,
            peer: PeerKey::Inbound(link),
            node_id: node.into(),
            secret,
        },
        now_ms,
    );
    assert!(
        verdict.iter().any(|a| matches!(
            a,
            Action::Verdict {
                verdict: Verdict::Welcome(_),
                ..
            }
        )),
        "{verdict:?}"
    );
    assert!(admitted(
        &handshaken(c, link, PeerKey::Inbound(link), node, 1),
        link
    ));
    let _ = open(c, link, &[("r", "d")]);
    close(c, link, now_ms + 1);
    let rows = c.rows();
    assert_eq!(row_of(&rows, node)[0].state, LinkState::Offline, "{rows:?}");
}

fn reload(c: &mut Core, admission: AdmissionPolicy, secret_changed: bool) {
    let _ = c.handle(
        Event::Reconfigure {
            peers: vec![],
            admission,
            secret_changed,
        },
        50,
    );
}

#[test]
fn an_offline_row_goes_when_a_reload_takes_the_device_off_the_allow_list() {
    let mut a = closed_core("a", &["laptop", "phone"], false);
    dial_in_and_leave(&mut a, 1, "laptop", SecretCheck::NotConfigured, 10);
    dial_in_and_leave(&mut a, 2, "phone", SecretCheck::NotConfigured, 20);
    reload(&mut a, closed_policy(&["phone"], false), false);
    let rows = a.rows();
    assert!(row_of(&rows, "laptop").is_empty(), "{rows:?}");
    assert_eq!(row_of(&rows, "phone")[0].state, LinkState::Offline);
}

#[test]
fn a_denied_device_leaves_no_offline_row() {
    let mut a = closed_core("a", &["laptop", "phone"], false);
    // Offline when denied: the row goes at once.
    dial_in_and_leave(&mut a, 1, "laptop", SecretCheck::NotConfigured, 10);
    let _ = a.handle(
        Event::Deny {
            node_id: "laptop".into(),
        },
        30,
    );
    assert!(row_of(&a.rows(), "laptop").is_empty(), "{:?}", a.rows());
    // Linked when denied: its link is closed, and no offline row is left behind.
    inbound_up_judged(&mut a, 2, "phone");
    let closing = a.handle(
        Event::Deny {
            node_id: "phone".into(),
        },
        40,
    );
    assert!(
        closing
            .iter()
            .any(|x| matches!(x, Action::Close { handle: 2, .. })),
        "{closing:?}"
    );
    close(&mut a, 2, 41);
    assert!(row_of(&a.rows(), "phone").is_empty(), "{:?}", a.rows());
}

/// An inbound link from `node`, judged and admitted, left up.
fn inbound_up_judged(c: &mut Core, link: LinkId, node: &str) {
    inbound_up_judged_with(c, link, node, SecretCheck::NotConfigured);
}

#[test]
fn an_offline_row_let_in_by_the_mesh_secret_lasts_until_the_secret_changes() {
    let mut a = closed_core("a", &[], true);
    dial_in_and_leave(&mut a, 1, "laptop", SecretCheck::Proven, 10);
    // The allow list changes, the secret does not: the laptop would still be let in.
    reload(&mut a, closed_policy(&["phone"], true), false);
    assert_eq!(row_of(&a.rows(), "laptop")[0].state, LinkState::Offline);
    // A new secret: what the laptop proved no longer counts.
    reload(&mut a, closed_policy(&["phone"], true), true);
    assert!(row_of(&a.rows(), "laptop").is_empty(), "{:?}", a.rows());
}

#[test]
fn only_admitted_or_linked_nodes_may_reserve_on_the_relay() {
    let mut a = closed_core("a", &["laptop"], true);
    // A stranger: refused. The allow list: admitted.
    assert!(!a.admits_relay_reservation("stranger"));
    assert!(a.admits_relay_reservation("laptop"));
    // A node linked after proving the secret: admitted while the link lasts.
    inbound_up_judged_with(&mut a, 1, "phone", SecretCheck::Proven);
    assert!(a.admits_relay_reservation("phone"));
    close(&mut a, 1, 30);
    assert!(!a.admits_relay_reservation("phone"));
    // Approved: admitted; denied: refused, whatever else admits it.
    let _ = a.handle(
        Event::Approve {
            node_id: "tablet".into(),
        },
        40,
    );
    assert!(a.admits_relay_reservation("tablet"));
    let _ = a.handle(
        Event::Deny {
            node_id: "laptop".into(),
        },
        41,
    );
    assert!(!a.admits_relay_reservation("laptop"));
    // A configured peer's node: admitted. An open mesh admits anyone.
    let mut c = Core::new(
        CoreConfig::new(
            "c",
            vec![PeerConfig {
                url: "ws://desk:3913".into(),
                node_id: Some("desk".into()),
                ..PeerConfig::default()
            }],
            7,
        ),
        0,
    );
    let _ = c.handle(Event::Start, 0);
    assert!(c.admits_relay_reservation("desk"));
    assert!(!c.admits_relay_reservation("stranger"));
    let mut open = closed_core("o", &[], false);
    reload(
        &mut open,
        AdmissionPolicy {
            open: true,
            ..AdmissionPolicy::default()
        },
        false,
    );
    assert!(open.admits_relay_reservation("stranger"));
}

/// An inbound link from `node`, judged with `secret` and admitted, left up.
fn inbound_up_judged_with(c: &mut Core, link: LinkId, node: &str, secret: SecretCheck) {
    let _ = c.handle(
        Event::InboundOpened {
            link,
            remote: format!("10.0.0.{link}:5000"),
        },
        1,
    );
    let _ = c.handle(
        Event::Authenticated {
            link,
            peer: PeerKey::Inbound(link),
            node_id: node.into(),
            secret,
        },
        1,
    );
    assert!(admitted(
        &handshaken(c, link, PeerKey::Inbound(link), node, 1),
        link
    ));
    let _ = open(c, link, &[("r", "d")]);
}
