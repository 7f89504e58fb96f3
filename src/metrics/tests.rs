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

#[test]
fn frames_are_classified_by_their_first_bytes() {
    let cases: [(&[u8], MessageType); 10] = [
        (&[0, 0, 1, 0], MessageType::SyncStep1),
        (&[0, 1, 2, 0, 0], MessageType::SyncStep2),
        (&[0, 2, 2, 0, 0], MessageType::SyncUpdate),
        (&[1, 5], MessageType::Awareness),
        (&[2, 0], MessageType::Auth),
        (&[3], MessageType::QueryAwareness),
        (&[102, 1, 7], MessageType::SyncStatus),
        (&[103, 0], MessageType::Command),
        (&[0], MessageType::Other),
        (&[], MessageType::Other),
    ];
    for (frame, want) in cases {
        assert_eq!(MessageType::of(frame), want, "{frame:?}");
    }
    let m = Metrics::new();
    m.client_received(&[0, 2, 2, 0, 0]);
    m.client_received(&[0, 2, 2, 0, 0]);
    m.client_sent(&[1, 5]);
    assert_eq!(m.client_messages(MessageType::SyncUpdate), (2, 0));
    assert_eq!(m.client_messages(MessageType::Awareness), (0, 1));
    let batch: Vec<Vec<u8>> = vec![vec![0, 2, 2, 0, 0], vec![1, 5], vec![0, 2, 2, 0, 0]];
    m.client_sent_batch(&batch);
    m.client_sent_batch(&batch[..1]);
    assert_eq!(m.client_messages(MessageType::SyncUpdate), (2, 3));
    assert_eq!(m.client_messages(MessageType::Awareness), (0, 2));
    assert!(m
        .encode()
        .contains("ymesh_client_bytes_total{direction=\"out\",type=\"sync_update\"} 15"));
}

/// A node with one peer, for the exposition tests.
struct OnePeer;

impl StatusSource for OnePeer {
    fn view(&self) -> NodeView {
        NodeView {
            uptime_s: 5,
            rooms_loaded: 3,
            rooms_stored: Some(4),
            store_bytes: Some(1000),
            peers: vec![PeerView {
                node_id: Some("12D3KooWPeer".into()),
                address: "ws://127.0.0.1:1".into(),
                state: "connected",
                transport: "p2p",
                rooms_synced: 2,
                rooms_pending: 1,
                oldest_pending_s: Some(9),
                links_established: 2,
                ..PeerView::default()
            }],
        }
    }
}

/// Every metric family of a fully populated registry, by exposed name (`_total` for counters).
fn exposed() -> (String, Vec<String>) {
    let m = Metrics::new();
    let store = Arc::new(StoreCounters::default());
    store.committed(3);
    store.commit_took(std::time::Duration::from_millis(2), Some(3));
    m.attach_store(store);
    let source: Arc<dyn StatusSource> = Arc::new(OnePeer);
    m.attach_source(Arc::downgrade(&source));
    let slot = m.open_connection_on("/rooms/{room}");
    m.command_result("ok");
    let text = m.encode();
    drop(slot);
    let mut names = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            names.push(match kind {
                "counter" => format!("{name}_total"),
                _ => name.to_string(),
            });
        }
    }
    (text, names)
}

#[test]
fn the_exposition_reads_the_source_and_ends_with_eof() {
    let (text, names) = exposed();
    assert!(text.ends_with("# EOF\n"), "{text}");
    for line in [
        r#"ymesh_peer_up{peer="12D3KooWPeer",transport="p2p"} 1"#,
        r#"ymesh_peer_state{peer="12D3KooWPeer",transport="p2p",state="connected"} 1"#,
        r#"ymesh_peer_state{peer="12D3KooWPeer",transport="p2p",state="backing_off"} 0"#,
        r#"ymesh_peer_rooms{peer="12D3KooWPeer",transport="p2p",status="synced"} 2"#,
        r#"ymesh_peer_rooms{peer="12D3KooWPeer",transport="p2p",status="pending"} 1"#,
        r#"ymesh_peer_oldest_pending_seconds{peer="12D3KooWPeer",transport="p2p"} 9"#,
        r#"ymesh_peer_links_established_total{peer="12D3KooWPeer",transport="p2p"} 2"#,
        r#"ymesh_connections{kind="peer"} 1"#,
        "ymesh_rooms_loaded 3",
        "ymesh_rooms_stored 4",
        "ymesh_store_commits_total 1",
        "ymesh_store_commit_batch_size_count 1",
        r#"ymesh_client_connections{route="/rooms/{room}"} 1"#,
        r#"ymesh_command_results_total{status="ok"} 1"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing in:\n{text}"
        );
    }
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "a metric family exposed twice");
}

#[test]
fn operations_doc_lists_every_metric_and_the_dashboard_uses_only_real_ones() {
    let (_, names) = exposed();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/operations.md")).expect("docs/operations.md");
    for name in &names {
        assert!(
            doc.contains(&format!("| `{name}` |")),
            "docs/operations.md has no row for {name}"
        );
    }
    let dashboard =
        std::fs::read_to_string(root.join("docs/grafana-dashboard.json")).expect("the dashboard");
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let mut used: Vec<&str> = Vec::new();
    let mut rest = dashboard.as_str();
    while let Some(i) = rest.find("ymesh_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        used.push(&tail[..end]);
        rest = &tail[end..];
    }
    assert!(!used.is_empty());
    for u in used {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| u.strip_suffix(s))
            .unwrap_or(u);
        assert!(
            names.iter().any(|n| n == u || n == base),
            "the dashboard uses {u}, which the node does not expose"
        );
    }
}
