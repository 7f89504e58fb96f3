use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    let file = FileConfig::parse(Path::new("mesh.toml"), text)?;
    Config::resolve(&file, &Overrides::default())
}

#[test]
fn debug_output_hides_secrets() {
    let cfg = Config {
        mesh_secret: Some("mesh-s3cret".into()),
        admin_token: Some("admin-s3cret".into()),
        peers: vec![crate::mesh::PeerConfig {
            url: "ws://x:1".into(),
            token: Some("peer-s3cret".into()),
            ..Default::default()
        }],
        ..Config::default()
    };
    let text = format!("{cfg:?}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(
        text.contains("<redacted>") && text.contains("ws://x:1"),
        "{text}"
    );
}

#[test]
fn empty_file_is_the_defaults() {
    let cfg = parse("").unwrap();
    assert_eq!(cfg.host, "127.0.0.1");
    assert_eq!(cfg.port, 3913);
    assert_eq!(cfg.idle_timeout, Duration::from_secs(60));
    assert_eq!(cfg.limits, Limits::default());
}

/// docs/configuration.md carries the generated settings table verbatim.
#[test]
fn configuration_doc_matches_the_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let begin = "<!-- BEGIN GENERATED SETTINGS -->\n";
    let end = "<!-- END GENERATED SETTINGS -->";
    let (b, e) = (
        doc.find(begin).unwrap() + begin.len(),
        doc.find(end).unwrap(),
    );
    let want = reference_markdown();
    if std::env::var_os("YMESH_UPDATE_DOCS").is_some() {
        let updated = format!("{}{}{}", &doc[..b], want, &doc[e..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    assert_eq!(
        &doc[b..e],
        want,
        "docs/configuration.md is stale: run YMESH_UPDATE_DOCS=1 cargo test --lib config"
    );
}

/// mesh.toml documents every setting, commented out, at its default; uncommenting every
/// available setting gives exactly the built-in defaults.
#[test]
fn mesh_toml_lists_every_setting_at_its_default() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("mesh.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut section = String::new();
    let mut found = HashSet::new();
    let mut uncommented = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            section = t.trim_matches(|c| c == '[' || c == ']').to_string();
            uncommented.push_str(line);
            uncommented.push('\n');
            continue;
        }
        let Some(rest) = t.strip_prefix("# ") else {
            assert!(
                t.is_empty() || t.starts_with('#'),
                "uncommented line: {line}"
            );
            continue;
        };
        let Some((key, value)) = rest.split_once(" = ") else {
            continue;
        };
        if key.contains(' ') {
            continue;
        }
        let dotted = if section.is_empty() {
            key.to_string()
        } else {
            format!("{section}.{key}")
        };
        let setting = SETTINGS
            .iter()
            .find(|s| s.key == dotted)
            .unwrap_or_else(|| panic!("mesh.toml documents unknown key {dotted}"));
        if !setting.default.is_empty() {
            assert_eq!(value, setting.default, "mesh.toml default of {dotted}");
        }
        found.insert(dotted);
        if setting.status == Status::Available {
            uncommented.push_str(rest);
            uncommented.push('\n');
        }
    }
    for s in SETTINGS {
        assert!(
            found.contains(s.key),
            "mesh.toml does not document {}",
            s.key
        );
    }
    let file = FileConfig::parse(&path, &uncommented).unwrap();
    let cfg = Config::resolve(&file, &Overrides::default()).unwrap();
    let def = Config::default();
    assert_eq!(
        (
            cfg.host,
            cfg.port,
            cfg.log_format,
            cfg.routes,
            cfg.idle_timeout
        ),
        (
            def.host,
            def.port,
            def.log_format,
            def.routes,
            def.idle_timeout
        )
    );
    assert_eq!(cfg.limits, def.limits);
    assert_eq!(cfg.pinned_rooms, def.pinned_rooms);
}

#[test]
fn tls_and_proxy_settings_resolve_and_bad_values_name_the_key_and_line() {
    let cfg = parse("tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\ntls_ca = \"ca.pem\"\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\n").unwrap();
    let tls = cfg.tls.unwrap();
    assert_eq!(
        (tls.cert.to_str(), tls.key.to_str()),
        (Some("c.pem"), Some("k.pem"))
    );
    assert_eq!(cfg.tls_ca.as_deref(), Some(std::path::Path::new("ca.pem")));
    assert_eq!(cfg.trusted_proxies.len(), 2);
    assert!(parse("").unwrap().tls.is_none());
    let msg = parse("\ntls_cert = \"c.pem\"\n").unwrap_err().to_string();
    assert!(
        msg.contains("mesh.toml:2:12") && msg.contains("tls_key"),
        "{msg}"
    );
    let msg = parse("tls_key = \"\"\n").unwrap_err().to_string();
    assert!(msg.contains("tls_key") && msg.contains("empty"), "{msg}");
    let msg = parse("\ntrusted_proxies = [\"10.0.0.0/40\"]\n")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("trusted_proxies[0]") && msg.contains("mesh.toml:2"),
        "{msg}"
    );
    // A key given by flag without its certificate names the flag.
    let over = Overrides {
        tls_key: Some("k.pem".into()),
        ..Default::default()
    };
    let msg = Config::resolve(&FileConfig::default(), &over)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("--tls-key") && msg.contains("tls_cert"),
        "{msg}"
    );
    // Flags win over the file.
    let file = FileConfig::parse(
        Path::new("mesh.toml"),
        "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n",
    )
    .unwrap();
    let over = Overrides {
        tls_cert: Some("flag.pem".into()),
        ..Default::default()
    };
    let cfg = Config::resolve(&file, &over).unwrap();
    assert_eq!(cfg.tls.unwrap().cert.to_str(), Some("flag.pem"));
}

#[test]
fn discovery_settings_resolve_and_bad_values_name_the_key_and_line() {
    let cfg = parse("").unwrap();
    assert_eq!(cfg.discovery.mdns, None);
    assert!(!cfg.discovery.mdns_enabled("127.0.0.1".parse().unwrap()));
    assert!(cfg.discovery.mdns_enabled("0.0.0.0".parse().unwrap()));
    assert!(cfg.discovery.tailnet.is_none());
    let cfg = parse(
        "mdns = false\nmdns_interfaces = [\"eth*\"]\nmdns_announce_addr = \"10.0.0.5\"\n\
         tailnet = true\ntailnet_tags = [\"tag:ymesh\"]\ntailnet_port = 4000\n\
         tailnet_interval_s = 5\n",
    )
    .unwrap();
    assert!(!cfg.discovery.mdns_enabled("0.0.0.0".parse().unwrap()));
    assert_eq!(cfg.discovery.mdns_interfaces, vec!["eth*".to_string()]);
    assert_eq!(
        cfg.discovery.mdns_announce_addr,
        Some("10.0.0.5".parse().unwrap())
    );
    let t = cfg.discovery.tailnet.unwrap();
    assert_eq!(t.tags, vec!["tag:ymesh".to_string()]);
    assert_eq!((t.port, t.interval), (4000, Duration::from_secs(5)));
    let over = Overrides {
        mdns: Some(true),
        ..Default::default()
    };
    let cfg = Config::resolve(&FileConfig::default(), &over).unwrap();
    assert!(cfg.discovery.mdns_enabled("127.0.0.1".parse().unwrap()));

    let msg = parse("\nmdns_service = \"_ymesh._udp.local.\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("mesh.toml:2:") && msg.contains("mdns_service"),
        "{msg}"
    );
    let msg = parse("mdns_announce_addr = \"laptop\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("mdns_announce_addr") && msg.contains("not an IP"),
        "{msg}"
    );
    let msg = parse("tailnet = true\ntailnet_port = 0\n")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("mesh.toml:2:") && msg.contains("tailnet_port"),
        "{msg}"
    );
}

#[test]
fn admin_token_from_file_and_override() {
    let cfg = parse("").unwrap();
    assert_eq!(cfg.admin_token, None);
    let file = FileConfig::parse(Path::new("mesh.toml"), "admin_token = \"f\"\n").unwrap();
    let cfg = Config::resolve(&file, &Overrides::default()).unwrap();
    assert_eq!(cfg.admin_token.as_deref(), Some("f"));
    let over = Overrides {
        admin_token: Some("flag".into()),
        ..Default::default()
    };
    let cfg = Config::resolve(&file, &over).unwrap();
    assert_eq!(cfg.admin_token.as_deref(), Some("flag"));
    let msg = parse("\nadmin_token = \"\"\n").unwrap_err().to_string();
    assert!(
        msg.contains("mesh.toml:2:") && msg.contains("admin_token"),
        "{msg}"
    );
}

#[test]
fn peers_parse_with_node_ids_and_share_policies() {
    let id = crate::mesh::NodeIdentity::ephemeral().node_id().to_string();
    let text = format!(
        "[[peers]]\nurl = \"ws://desktop:3913/rooms/{{id}}\"\nnode_id = \"{id}\"\nshare = [\"notes/*\", \"todo\"]\n\n[[peers]]\nurl = \"http://cloud:3913\"\n"
    );
    let cfg = parse(&text).unwrap();
    assert_eq!(cfg.peers.len(), 2);
    assert_eq!(cfg.peers[0].node_id.as_deref(), Some(id.as_str()));
    assert!(cfg.peers[0].share.allows("notes/today"));
    assert!(!cfg.peers[0].share.allows("secret"));
    assert!(cfg.peers[1].share.allows("anything"));
    let msg = parse("[[peers]]\nurl = \"ws://x:1\"\nshare = [\"\"]\n")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("peers[0].share"), "{msg}");
    let cfg = parse("[[peers]]\nurl = \"wss://x:1\"\n").unwrap();
    assert_eq!(cfg.peers[0].url, "wss://x:1");
    let msg = parse("[[peers]]\nurl = \"ftp://x:1\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("peers[0].url") && msg.contains("wss://"),
        "{msg}"
    );
    let msg = parse("[[peers]]\nurl = \"ws://x:1\"\nnode_id = \"nope\"\n")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("peers[0].node_id"), "{msg}");
    let msg = parse("allow_peers = [\"nope\"]\n").unwrap_err().to_string();
    assert!(msg.contains("allow_peers[0]"), "{msg}");
}

#[test]
fn route_templates_are_validated() {
    assert!(validate_route("/sync/v1/{room}").is_ok());
    assert!(validate_route("/a/{room}/ws").is_ok());
    for bad in [
        "sync/{room}",
        "/sync",
        "/{room}",
        "/a/{room}/{room}",
        "/a/x{room}",
        "/a/{other}/{room}",
        "/a//{room}",
        "/healthz/{room}",
        "/_mesh/{room}",
    ] {
        assert!(validate_route(bad).is_err(), "{bad} accepted");
    }
    let cfg = parse("routes = [\"/sync/v1/{room}\"]\n").unwrap();
    assert_eq!(cfg.routes, vec!["/sync/v1/{room}".to_string()]);
    let msg = parse("routes = [\"/x/{room}\", \"/x/{room}\"]\n")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("routes[1]") && msg.contains("twice"), "{msg}");
    let msg = parse("routes = []\n").unwrap_err().to_string();
    assert!(msg.contains("at least one"), "{msg}");
}

#[test]
fn repo_mesh_toml_is_all_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("mesh.toml");
    let file = FileConfig::load(&path).unwrap();
    let cfg = Config::resolve(&file, &Overrides::default()).unwrap();
    let def = Config::default();
    assert_eq!(cfg.host, def.host);
    assert_eq!(cfg.port, def.port);
    assert_eq!(cfg.limits, def.limits);
    assert!(cfg.pinned_rooms.is_empty());
}

#[test]
fn values_and_precedence() {
    let text = "host = \"0.0.0.0\"\nport = 4000\n[rooms]\nidle_timeout_s = 5\npinned = [\"a\", \"b/c\"]\n[limits]\nmax_rooms = 10\n";
    let file = FileConfig::parse(Path::new("m.toml"), text).unwrap();
    let cfg = Config::resolve(&file, &Overrides::default()).unwrap();
    assert_eq!(cfg.host, "0.0.0.0");
    assert_eq!(cfg.port, 4000);
    assert_eq!(cfg.idle_timeout, Duration::from_secs(5));
    assert!(cfg.pinned_rooms.contains("b/c"));
    assert_eq!(cfg.limits.max_rooms, 10);
    let over = Overrides {
        port: Some(0),
        ..Default::default()
    };
    assert_eq!(Config::resolve(&file, &over).unwrap().port, 0);
}

#[test]
fn mesh_pre_authentication_limits_parse_and_refuse_zero() {
    let cfg = parse(
        "[limits]\nmesh_handshake_timeout_s = 2\nmesh_preauth_total = 8\nmesh_preauth_per_address = 3\n",
    )
    .unwrap();
    assert_eq!(cfg.limits.mesh_handshake_timeout, Duration::from_secs(2));
    assert_eq!(
        (
            cfg.limits.mesh_preauth_total,
            cfg.limits.mesh_preauth_per_address
        ),
        (8, 3)
    );
    for key in [
        "mesh_handshake_timeout_s",
        "mesh_preauth_total",
        "mesh_preauth_per_address",
    ] {
        let msg = parse(&format!("[limits]\n{key} = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(&format!("limits.{key}")) && msg.contains("mesh.toml:2:"),
            "{msg}"
        );
    }
}

#[test]
fn unknown_key_names_key_and_line() {
    let err = parse("port = 1\n\n[limits]\nmax_roms = 3\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("mesh.toml:4:"), "{msg}");
    assert!(msg.contains("max_roms"), "{msg}");
    assert!(msg.contains("unknown key `limits.max_roms`"), "{msg}");
}

#[test]
fn wrong_type_names_line() {
    let msg = parse("\nport = \"x\"\n").unwrap_err().to_string();
    assert!(msg.starts_with("mesh.toml:2:"), "{msg}");
    let msg = parse("port = 70000\n").unwrap_err().to_string();
    assert!(msg.starts_with("mesh.toml:1:"), "{msg}");
}

#[test]
fn invalid_values_name_key_and_line() {
    let msg = parse("[limits]\n\nmax_rooms = 0\n")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("mesh.toml:3:13"), "{msg}");
    assert!(msg.contains("limits.max_rooms"), "{msg}");
    let msg = parse("[rooms]\npinned = [\"ok\", \"\"]\n")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("rooms.pinned[1]"), "{msg}");
    assert!(msg.contains("mesh.toml:2:"), "{msg}");
    let msg = parse("host = \"not a host\"\n").unwrap_err().to_string();
    assert!(
        msg.contains("`host`") && msg.contains("mesh.toml:1:8"),
        "{msg}"
    );
}

/// Every default the settings table shows (and so docs/configuration.md and mesh.toml) is
/// the built-in default, field by field, including the defaults the discovery code owns.
#[test]
fn settings_table_defaults_are_the_built_in_defaults() {
    let mut top = String::new();
    let mut sections: Vec<(&str, String)> = Vec::new();
    for s in SETTINGS {
        if s.default.is_empty() || s.status != Status::Available {
            continue;
        }
        match s.key.split_once('.') {
            None => top.push_str(&format!("{} = {}\n", s.key, s.default)),
            Some((section, key)) => {
                if sections.last().map(|(name, _)| *name) != Some(section) {
                    sections.push((section, String::new()));
                }
                if let Some((_, text)) = sections.last_mut() {
                    text.push_str(&format!("{key} = {}\n", s.default));
                }
            }
        }
    }
    let mut text = top;
    for (name, keys) in &sections {
        text.push_str(&format!("[{name}]\n{keys}"));
    }
    let cfg = parse(&text).unwrap();
    let def = Config::default();
    assert_eq!(
        (
            &cfg.host,
            cfg.port,
            cfg.log_format,
            &cfg.routes,
            &cfg.data_dir
        ),
        (
            &def.host,
            def.port,
            def.log_format,
            &def.routes,
            &def.data_dir
        )
    );
    assert_eq!((cfg.memory, cfg.store), (def.memory, def.store));
    assert_eq!((cfg.peers.len(), &cfg.allow_peers), (0, &def.allow_peers));
    assert_eq!(
        (&cfg.mesh_secret, &cfg.admin_token),
        (&def.mesh_secret, &def.admin_token)
    );
    assert_eq!(
        (cfg.idle_timeout, &cfg.pinned_rooms, cfg.tombstone_retention),
        (def.idle_timeout, &def.pinned_rooms, def.tombstone_retention)
    );
    assert_eq!(cfg.limits, def.limits);
    assert_eq!(cfg.discovery, def.discovery);
    // The tailnet keys count only with tailnet discovery on.
    let on = text.replace("tailnet = false\n", "tailnet = true\n");
    assert_ne!(on, text, "the table lists `tailnet = false`");
    assert_eq!(
        parse(&on).unwrap().discovery.tailnet,
        Some(crate::mesh::discovery::TailnetConfig::default())
    );
}

/// Errors about a value given by flag or environment name both, as the table lists them.
#[test]
fn override_sources_are_named_from_the_table() {
    use super::settings::given_by;
    assert_eq!(given_by("host"), "--host / HOST");
    assert_eq!(given_by("peers"), "--peer");
    assert_eq!(given_by("mesh_secret"), "--mesh-secret / YMESH_MESH_SECRET");
    assert_eq!(given_by("allow_peers"), "--allow-peer");
    assert_eq!(given_by("admin_token"), "--admin-token / YMESH_ADMIN_TOKEN");
    let over = Overrides {
        admin_token: Some(String::new()),
        ..Default::default()
    };
    let msg = Config::resolve(&FileConfig::default(), &over)
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("--admin-token / YMESH_ADMIN_TOKEN: `admin_token`"),
        "{msg}"
    );
}

/// A value of the wrong type names its key, its line and column, and the type expected, in
/// words (a bare `expected u16` is not enough to fix a file).
#[test]
fn type_errors_name_the_key_the_line_and_the_expected_type() {
    let cases: [(&str, &str, &str); 7] = [
        (
            "port = \"abc\"\n",
            "mesh.toml:1:8: `port`: invalid type: string \"abc\"",
            "expected an integer from 0 to 65535",
        ),
        ("port = 70000\n", "mesh.toml:1:8: `port`:", "0 to 65535"),
        (
            "[limits]\nmax_rooms = \"many\"\n",
            "mesh.toml:2:13: `limits.max_rooms`:",
            "expected a whole number",
        ),
        (
            "memory = 1\n",
            "mesh.toml:1:10: `memory`:",
            "expected a boolean",
        ),
        (
            "[rooms]\npinned = [\"a\", 2]\n",
            "mesh.toml:2:16: `rooms.pinned[1]`:",
            "expected a string",
        ),
        (
            "[[peers]]\nurl = 5\n",
            "mesh.toml:2:7: `peers[0].url`:",
            "expected a string",
        ),
        (
            "routes = \"/r/{room}\"\n",
            "mesh.toml:1:10: `routes`:",
            "expected an array",
        ),
    ];
    for (text, starts, expected) in cases {
        let msg = parse(text).unwrap_err().to_string();
        assert!(msg.starts_with(starts), "{text:?}: {msg}");
        assert!(msg.contains(expected), "{text:?}: {msg}");
    }
}
