use std::sync::Arc;

use serde_json::json;

use super::*;

/// What the HTTP layer sends: the snapshot inside the `{"data": ...}` envelope.
fn enveloped<T: Serialize>(value: T) -> String {
    json!({ "data": value }).to_string()
}

#[test]
fn a_connection_counts_until_its_slot_is_dropped() {
    let m = Metrics::new();
    let a = m.open_connection();
    let b = m.open_connection();
    assert_eq!((a.before(), b.before()), (0, 1));
    assert_eq!(m.connections(), 2);
    drop(a);
    assert_eq!(m.connections(), 1);
    let c = m.open_connection();
    assert_eq!(c.before(), 1, "a slot sees the connections open before it");
    drop((b, c));
    assert_eq!(m.connections(), 0);
}

#[test]
fn refusals_count_and_show_in_the_node_counters() {
    let m = Metrics::new();
    m.quota_refused();
    m.quota_refused();
    let _slot = m.open_connection();
    assert_eq!(m.quota_refusals(), 2);
    assert_eq!(
        m.node(),
        NodeCounters {
            connections: 1,
            quota_refusals: 2
        }
    );
}

#[test]
fn node_status_serialises_as_the_hand_built_root_did() {
    let status = NodeStatus {
        name: "ymesh",
        version: "0.1.0",
        node_id: "12D3KooWX".into(),
        uptime_s: 7,
        rooms: 3,
        counters: NodeCounters {
            connections: 2,
            quota_refusals: 1,
        },
        discovery: vec!["mdns"],
    };
    // The JSON `GET /` answered before the counters had a home.
    let before = json!({
        "name": "ymesh",
        "version": "0.1.0",
        "node_id": "12D3KooWX",
        "uptime_s": 7,
        "rooms": 3,
        "connections": 2,
        "quota_refusals": 1,
        "discovery": ["mdns"],
    });
    assert_eq!(enveloped(&status), enveloped(before));
}

#[test]
fn store_counters_count_commits_failures_and_compactions() {
    let c = StoreCounters::default();
    c.committed(3);
    c.committed(10);
    c.committed(4);
    c.commit_failed();
    c.compacted();
    c.compacted();
    assert_eq!(
        c.counts(),
        StoreCounts {
            appends: 17,
            commits: 3,
            failed_commits: 1,
            compactions: 2,
            max_batch: 10,
        }
    );
}

#[test]
fn the_registry_reads_an_attached_store_once_attached() {
    let m = Metrics::new();
    assert_eq!(m.snapshot().store, None, "no store (--memory)");
    let store = Arc::new(StoreCounters::default());
    assert!(m.attach_store(store.clone()));
    assert!(!m.attach_store(Arc::default()), "attached once");
    store.committed(5);
    let snap = m.snapshot();
    assert_eq!(snap.store.map(|s| (s.appends, s.commits)), Some((5, 1)));
    assert_eq!(snap.node, NodeCounters::default());
}

#[test]
fn dir_traffic_counts_messages_and_bytes_per_kind() {
    let d = DirTraffic::default();
    d.add(TrafficKind::Sync, 100);
    d.add(TrafficKind::Sync, 20);
    d.add(TrafficKind::Control, 7);
    d.add(TrafficKind::Other, 1);
    assert_eq!(
        d.of(TrafficKind::Sync),
        TrafficCount {
            messages: 2,
            bytes: 120
        }
    );
    assert_eq!(d.of(TrafficKind::Awareness), TrafficCount::default());
    assert_eq!(d.messages(), 4);
    let snap = d.snapshot();
    assert_eq!(snap.messages(), 4);
    for kind in TrafficKind::ALL {
        let count = match kind {
            TrafficKind::Control => snap.control,
            TrafficKind::Sync => snap.sync,
            TrafficKind::Awareness => snap.awareness,
            TrafficKind::Other => snap.other,
        };
        assert_eq!(count, d.of(kind), "{kind:?}");
    }
}

#[test]
fn link_traffic_keeps_the_two_directions_apart() {
    let t = LinkTraffic::default();
    t.sent().add(TrafficKind::Sync, 10);
    t.sent().add(TrafficKind::Control, 5);
    t.received().add(TrafficKind::Awareness, 3);
    assert_eq!(t.messages_sent(), 2);
    assert_eq!(t.sync_messages_sent(), 1);
    let snap = t.snapshot();
    assert_eq!(snap.sent.messages(), 2);
    assert_eq!(snap.received.messages(), 1);
    assert_eq!(snap.received.awareness.bytes, 3);
}

#[test]
fn traffic_snapshots_serialise_as_the_hand_built_peers_json_did() {
    let t = LinkTraffic::default();
    t.sent().add(TrafficKind::Control, 1203);
    t.sent().add(TrafficKind::Sync, 18);
    t.received().add(TrafficKind::Awareness, 40);
    // The shape `GET /peers` gave each direction before.
    let pair = |m: u64, b: u64| json!({ "messages": m, "bytes": b });
    let sent = json!({
        "control": pair(1, 1203), "sync": pair(1, 18),
        "awareness": pair(0, 0), "other": pair(0, 0),
    });
    let received = json!({
        "control": pair(0, 0), "sync": pair(0, 0),
        "awareness": pair(1, 40), "other": pair(0, 0),
    });
    let snap = t.snapshot();
    assert_eq!(
        enveloped(json!({ "sent": snap.sent, "received": snap.received })),
        enveloped(json!({ "sent": sent, "received": received }))
    );
    assert_eq!(
        enveloped(snap),
        enveloped(json!({ "sent": sent, "received": received }))
    );
}

#[test]
fn traffic_snapshots_read_back_partial_json() {
    // What `ymesh status` gets from a node: the CLI totals each direction.
    let d: DirTrafficSnapshot = serde_json::from_value(
        json!({ "sync": { "messages": 3 }, "control": { "messages": 2, "bytes": 9 } }),
    )
    .unwrap();
    assert_eq!(d.messages(), 5);
    assert_eq!(d.control.bytes, 9);
    let full = LinkTraffic::default();
    full.sent().add(TrafficKind::Sync, 4);
    let back: LinkTrafficSnapshot =
        serde_json::from_value(serde_json::to_value(full.snapshot()).unwrap()).unwrap();
    assert_eq!(back, full.snapshot());
}

#[test]
fn counting_from_many_threads_loses_nothing() {
    let m = Metrics::new();
    let t = Arc::new(LinkTraffic::default());
    let s = Arc::new(StoreCounters::default());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (m, t, s) = (m.clone(), t.clone(), s.clone());
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    let _slot = m.open_connection();
                    m.quota_refused();
                    t.sent().add(TrafficKind::Sync, 2);
                    s.committed(1);
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    assert_eq!(m.connections(), 0);
    assert_eq!(m.quota_refusals(), 4000);
    assert_eq!(
        t.sent().of(TrafficKind::Sync),
        TrafficCount {
            messages: 4000,
            bytes: 8000
        }
    );
    assert_eq!((s.counts().commits, s.counts().max_batch), (4000, 1));
}
