use std::net::IpAddr;

use mdns_sd::{IntoTxtProperties, TxtProperties, TxtProperty};

use super::*;
use crate::mesh::identity::NodeIdentity;

fn id() -> String {
    NodeIdentity::ephemeral().node_id().to_string()
}

fn txt(pairs: &[(&str, &str)]) -> TxtProperties {
    pairs.into_txt_properties()
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn defaults_match_the_documented_settings() {
    let cfg = MdnsConfig::new(id(), 3913);
    assert_eq!(cfg.service_type, "_ymesh._tcp.local.");
    assert!(cfg.interfaces.is_empty());
    assert_eq!(cfg.exclude_interfaces, vec!["docker*", "tailscale*"]);
    assert_eq!(cfg.announce_addr, None);
    assert_eq!(cfg.mesh_path, "/_mesh");
    assert_eq!(cfg.protocol_version, crate::mesh::MESH_PROTOCOL_VERSION);
    cfg.validate().unwrap();
}

#[test]
fn validation_names_the_problem() {
    let ok = MdnsConfig::new(id(), 3913);
    let cases: Vec<(MdnsConfig, &str)> = vec![
        (
            MdnsConfig {
                service_type: "_ymesh._udp.local.".into(),
                ..ok.clone()
            },
            "._tcp.local.",
        ),
        (
            MdnsConfig {
                service_type: "ymesh._tcp.local.".into(),
                ..ok.clone()
            },
            "start with '_'",
        ),
        (
            MdnsConfig {
                service_type: "_a-very-long-service-name._tcp.local.".into(),
                ..ok.clone()
            },
            "1-15",
        ),
        (
            MdnsConfig {
                port: 0,
                ..ok.clone()
            },
            "port",
        ),
        (
            MdnsConfig {
                mesh_path: "_mesh".into(),
                ..ok.clone()
            },
            "mesh path",
        ),
        (
            MdnsConfig {
                announce_addr: Some("0.0.0.0".parse().unwrap()),
                ..ok.clone()
            },
            "unicast",
        ),
    ];
    for (cfg, want) in cases {
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} should mention {want:?}");
    }
}

#[test]
fn instance_names_fit_a_dns_label() {
    let node = id();
    assert!(node.len() <= 63, "a libp2p peer id fits: {node}");
    assert_eq!(instance_name(&node), node);

    let long_a = format!("{}A", "x".repeat(80));
    let long_b = format!("{}B", "x".repeat(80));
    let (a, b) = (instance_name(&long_a), instance_name(&long_b));
    assert!(a.len() <= 63 && b.len() <= 63, "{a} / {b}");
    assert_ne!(a, b, "the hash keeps long ids apart");
    assert!(a.starts_with("xxxx"));
    assert_eq!(instance_name(&long_a), a, "stable");
    // Multi-byte characters are never cut in half; dots never reach the label.
    let wide = "é".repeat(40);
    assert!(instance_name(&wide).len() <= 63);
    assert!(!instance_name(&format!("a.b{}", "c".repeat(70))).contains('.'));
}

#[test]
fn host_names_are_per_node_dns_labels() {
    let (a, b) = (id(), id());
    let ha = host_name(&a);
    assert!(ha.starts_with("ymesh-") && ha.ends_with(".local."), "{ha}");
    assert_eq!(ha.len(), "ymesh-".len() + 16 + ".local.".len());
    assert!(ha
        .trim_end_matches(".local.")
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    assert_ne!(ha, host_name(&b));
}

#[test]
fn announced_txt_round_trips_and_holds_no_secrets() {
    let cfg = MdnsConfig::new(id(), 3913);
    let records = txt_records(&cfg);
    let keys: Vec<&str> = records.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, vec!["node_id", "path", "version"]);
    let props = records[..].into_txt_properties();
    let parsed = parse_txt(&props).unwrap();
    assert_eq!(
        parsed,
        PeerTxt {
            node_id: cfg.node_id.clone(),
            path: "/_mesh".into(),
            version: cfg.protocol_version,
            tls: false,
        }
    );
    // A node that serves TLS says so, and is dialed at https:// (wss:// for its /_mesh).
    let cfg = MdnsConfig {
        tls: true,
        ..MdnsConfig::new(id(), 3913)
    };
    let parsed = parse_txt(&txt_records(&cfg)[..].into_txt_properties()).unwrap();
    assert!(parsed.tls);
    assert_eq!(
        pick_url(ips(&["192.168.1.20"]), 3913, None, true).as_deref(),
        Some("https://192.168.1.20:3913")
    );
    assert_eq!(
        pick_url(
            ips(&["10.0.0.1", "192.168.1.20"]),
            3913,
            Some("https://192.168.1.20:3913"),
            true
        )
        .as_deref(),
        Some("https://192.168.1.20:3913")
    );
}

#[test]
fn txt_parsing_errors_are_specific() {
    let node = id();
    // Path is optional; keys are case-insensitive.
    let p = parse_txt(&txt(&[("NODE_ID", &node), ("Version", " 1 ")])).unwrap();
    assert_eq!((p.path.as_str(), p.version), ("/_mesh", 1));

    let missing_id = parse_txt(&txt(&[("version", "1")])).unwrap_err();
    assert!(matches!(
        missing_id,
        DiscoveryError::MissingTxt { key: "node_id" }
    ));
    let missing_version = parse_txt(&txt(&[("node_id", &node)])).unwrap_err();
    assert!(matches!(
        missing_version,
        DiscoveryError::MissingTxt { key: "version" }
    ));
    assert!(missing_version.to_string().contains("\"version\""));

    let bad_id = parse_txt(&txt(&[("node_id", "not-a-peer-id"), ("version", "1")])).unwrap_err();
    assert!(
        matches!(&bad_id, DiscoveryError::InvalidTxt { key: "node_id", value, .. } if value == "not-a-peer-id"),
        "{bad_id}"
    );
    let bad_version = parse_txt(&txt(&[("node_id", &node), ("version", "one")])).unwrap_err();
    assert!(matches!(
        bad_version,
        DiscoveryError::InvalidTxt { key: "version", .. }
    ));
    let bad_path = parse_txt(&txt(&[
        ("node_id", &node),
        ("version", "1"),
        ("path", "_mesh"),
    ]))
    .unwrap_err();
    assert!(matches!(
        bad_path,
        DiscoveryError::InvalidTxt { key: "path", .. }
    ));

    // A key without a value (`node_id` rather than `node_id=`) is not an id.
    let bare: TxtProperties = vec![
        TxtProperty::from("node_id"),
        TxtProperty::from(("version", "1")),
    ]
    .into_txt_properties();
    assert!(matches!(
        parse_txt(&bare).unwrap_err(),
        DiscoveryError::InvalidTxt { key: "node_id", .. }
    ));
}

#[test]
fn interface_include_and_exclude() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let default_ex = s(DEFAULT_EXCLUDE_INTERFACES);
    for (name, want) in [
        ("eth0", true),
        ("wlp2s0", true),
        ("lo", true),
        ("docker0", false),
        ("tailscale0", false),
        ("veth1234", true),
    ] {
        assert_eq!(interface_selected(name, &[], &default_ex), want, "{name}");
    }
    let include = s(&["eth*", "wlan0"]);
    assert!(interface_selected("eth1", &include, &default_ex));
    assert!(interface_selected("wlan0", &include, &default_ex));
    assert!(!interface_selected("wlan1", &include, &default_ex));
    assert!(!interface_selected("lo", &include, &default_ex));
    // Exclusion wins over inclusion.
    assert!(!interface_selected("eth1", &include, &s(&["eth1"])));
    // No lists: everything.
    assert!(interface_selected("docker0", &[], &[]));
}

#[test]
fn urls_prefer_routable_ipv4_and_stay_put() {
    assert_eq!(
        pick_url(
            ips(&["fd00::5", "192.168.1.20", "127.0.0.1"]),
            3913,
            None,
            false
        )
        .as_deref(),
        Some("http://192.168.1.20:3913")
    );
    assert_eq!(
        pick_url(ips(&["fe80::1", "fd00::5", "127.0.0.1"]), 3913, None, false).as_deref(),
        Some("http://[fd00::5]:3913")
    );
    assert_eq!(
        pick_url(ips(&["169.254.3.3", "fe80::1"]), 1, None, false).as_deref(),
        Some("http://169.254.3.3:1")
    );
    assert_eq!(
        pick_url(ips(&["::1", "127.0.0.1"]), 1, None, false).as_deref(),
        Some("http://127.0.0.1:1")
    );
    assert_eq!(pick_url(ips(&["fe80::1", "0.0.0.0"]), 1, None, false), None);
    // Lowest address on a tie, whatever the order.
    assert_eq!(
        pick_url(ips(&["10.0.0.9", "10.0.0.2"]), 1, None, false).as_deref(),
        Some("http://10.0.0.2:1")
    );
    // A previous choice that is still announced is kept...
    assert_eq!(
        pick_url(
            ips(&["10.0.0.2", "10.0.0.9"]),
            1,
            Some("http://10.0.0.9:1"),
            false
        )
        .as_deref(),
        Some("http://10.0.0.9:1")
    );
    // ...and dropped once it is not.
    assert_eq!(
        pick_url(ips(&["10.0.0.2"]), 1, Some("http://10.0.0.9:1"), false).as_deref(),
        Some("http://10.0.0.2:1")
    );
}

fn peer_txt(node: &str, version: &str) -> TxtProperties {
    txt(&[("node_id", node), ("path", "/_mesh"), ("version", version)])
}

#[test]
fn browser_ignores_itself_and_other_versions() {
    let me = id();
    let my_full = format!("{me}._ymesh._tcp.local.");
    let mut b = Browser::new(&me, &my_full, 1);
    // Our own instance, by name or by TXT node id (e.g. after a rename on conflict).
    assert!(b
        .on_resolved(&my_full, &peer_txt(&me, "1"), ips(&["10.0.0.1"]), 3913)
        .is_empty());
    assert!(b
        .on_resolved(
            &format!("{me} (2)._ymesh._tcp.local."),
            &peer_txt(&me, "1"),
            ips(&["10.0.0.1"]),
            3913
        )
        .is_empty());
    // A peer speaking another version, or with a broken TXT record.
    let other = id();
    assert!(b
        .on_resolved(
            "x._ymesh._tcp.local.",
            &peer_txt(&other, "2"),
            ips(&["10.0.0.2"]),
            3913
        )
        .is_empty());
    assert!(b
        .on_resolved(
            "y._ymesh._tcp.local.",
            &txt(&[("version", "1")]),
            ips(&["10.0.0.3"]),
            3913
        )
        .is_empty());
    // Removing instances that were never reported reports nothing.
    assert!(b.on_removed("x._ymesh._tcp.local.").is_empty());
    assert!(b.on_removed(&my_full).is_empty());
}

#[test]
fn browser_reports_found_once_then_lost() {
    let me = id();
    let peer = id();
    let full = format!("{peer}._ymesh._tcp.local.");
    let mut b = Browser::new(&me, &format!("{me}._ymesh._tcp.local."), 1);
    let found = DiscoveryEvent::Found(Discovered {
        node_id: Some(peer.clone()),
        url: "http://10.0.0.7:4000".into(),
        source: DiscoverySource::Mdns,
    });
    assert_eq!(
        b.on_resolved(
            &full,
            &peer_txt(&peer, "1"),
            ips(&["10.0.0.7", "fe80::7"]),
            4000
        ),
        vec![found]
    );
    // Re-resolution on another interface, with a grown address set: nothing new.
    assert!(b
        .on_resolved(&full, &peer_txt(&peer, "1"), ips(&["10.0.0.7"]), 4000)
        .is_empty());
    assert!(b
        .on_resolved(
            &full.to_uppercase(),
            &peer_txt(&peer, "1"),
            ips(&["10.0.0.7", "10.0.0.1", "fd00::7"]),
            4000
        )
        .is_empty());
    // Its address changes: lost at the old URL, found at the new.
    let moved = b.on_resolved(&full, &peer_txt(&peer, "1"), ips(&["10.0.0.8"]), 4000);
    assert_eq!(moved.len(), 2);
    assert!(matches!(&moved[0], DiscoveryEvent::Lost { url, .. } if url == "http://10.0.0.7:4000"));
    assert!(matches!(&moved[1], DiscoveryEvent::Found(d) if d.url == "http://10.0.0.8:4000"));
    // No usable address: nothing, and the old entry stays.
    assert!(b
        .on_resolved(&full, &peer_txt(&peer, "1"), ips(&["fe80::8"]), 4000)
        .is_empty());
    // Goodbye: lost, with the node id mapped from the instance name.
    assert_eq!(
        b.on_removed(&full),
        vec![DiscoveryEvent::Lost {
            node_id: Some(peer.clone()),
            url: "http://10.0.0.8:4000".into(),
            source: DiscoverySource::Mdns
        }]
    );
    assert!(b.on_removed(&full).is_empty());
    // Back again: found again.
    assert_eq!(
        b.on_resolved(&full, &peer_txt(&peer, "1"), ips(&["10.0.0.8"]), 4000)
            .len(),
        1
    );
    // It restarts speaking another version: lost, not kept around.
    let lost = b.on_resolved(&full, &peer_txt(&peer, "2"), ips(&["10.0.0.8"]), 4000);
    assert!(matches!(&lost[..], [DiscoveryEvent::Lost { .. }]));
}
