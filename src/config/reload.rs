//! What a reload (SIGHUP, `POST /reload`) may change in a running node, and what needs a
//! restart.
//!
//! [`Reloaded::between`] takes the config the node runs with and a freshly resolved one and
//! returns the config to apply: every setting the node applies live is taken from the new
//! one ([`LIVE`]), every other setting keeps its running value, and the keys of those that
//! changed are reported (`needs_restart`), so an operator is never left believing a change
//! took effect when it did not. Pure: no I/O.

use super::schema::Config;

/// Settings a running node applies on reload (docs/configuration.md, "Reload").
pub const LIVE: &[&str] = &[
    "token",
    "shared_secret",
    "admin_token",
    "allowed_origins",
    "allowed_hosts",
    "trusted_proxies",
    "mesh_secret",
    "allow_peers",
    "mesh_open",
    "peers",
    "tls_cert",
    "tls_key",
    "tls_ca",
    "limits.max_connections",
    "limits.write_timeout_s",
    "limits.http_header_timeout_s",
    "limits.http_body_timeout_s",
    "limits.max_half_open_per_address",
    "limits.max_connections_per_address",
    "limits.per_address_loopback",
    "limits.message_rate",
    "limits.ping_interval_s",
    "limits.first_message_timeout_s",
];

/// The outcome of comparing a running config with a new one.
#[derive(Debug)]
pub struct Reloaded {
    /// The config to run with from now on.
    pub config: Config,
    /// Live settings whose value changed (applied).
    pub applied: Vec<&'static str>,
    /// Settings whose value changed but that take effect only after a restart (kept at
    /// their running value).
    pub needs_restart: Vec<&'static str>,
}

impl Reloaded {
    /// Merges `new` into `running`; see the module docs.
    pub fn between(running: &Config, new: Config) -> Reloaded {
        let mut applied = Vec::new();
        let mut restart = Vec::new();
        let mut out = new;
        // `$key`: the setting's name; `$($f).+`: the field path in Config. Live ones are
        // reported as applied; the others are put back to the running value.
        macro_rules! live {
            ($key:literal, $($f:ident).+) => {
                if running.$($f).+ != out.$($f).+ {
                    applied.push($key);
                }
            };
        }
        macro_rules! restart {
            ($key:literal, $($f:ident).+) => {
                if running.$($f).+ != out.$($f).+ {
                    restart.push($key);
                    out.$($f).+ = running.$($f).+.clone();
                }
            };
        }
        live!("token", token);
        live!("shared_secret", shared_secret);
        live!("admin_token", admin_token);
        live!("allowed_origins", allowed_origins);
        live!("allowed_hosts", allowed_hosts);
        live!("trusted_proxies", trusted_proxies);
        live!("mesh_secret", mesh_secret);
        live!("allow_peers", allow_peers);
        live!("mesh_open", mesh_open);
        live!("peers", peers);
        live!("tls_ca", tls_ca);
        // Certificates are re-read on every reload (a renewed file has the same path); TLS
        // turned on or off needs a restart.
        if running.tls.is_some() != out.tls.is_some() {
            restart.push("tls_cert");
            out.tls = running.tls.clone();
        } else if running.tls != out.tls {
            applied.push("tls_cert");
        }
        live!("limits.max_connections", limits.max_connections);
        live!("limits.write_timeout_s", limits.write_timeout);
        live!("limits.http_header_timeout_s", limits.header_timeout);
        live!("limits.http_body_timeout_s", limits.body_timeout);
        live!(
            "limits.max_half_open_per_address",
            limits.max_half_open_per_address
        );
        live!(
            "limits.max_connections_per_address",
            limits.max_connections_per_address
        );
        live!("limits.per_address_loopback", limits.per_address_loopback);
        live!("limits.message_rate", limits.message_rate);
        live!("limits.ping_interval_s", limits.ping_interval);
        live!(
            "limits.first_message_timeout_s",
            limits.first_message_timeout
        );

        restart!("host", host);
        restart!("port", port);
        restart!("log_format", log_format);
        restart!("routes", routes);
        restart!("data_dir", data_dir);
        restart!("memory", memory);
        restart!("store.compact_log_count", store.compact_log_count);
        restart!("store.compact_log_bytes", store.compact_log_bytes);
        restart!("store.room_quota_bytes", store.room_quota_bytes);
        restart!("store.node_quota_bytes", store.node_quota_bytes);
        restart!("rooms.idle_timeout_s", idle_timeout);
        restart!("rooms.pinned", pinned_rooms);
        restart!("rooms.tombstone_days", tombstone_retention);
        restart!("limits.max_message_bytes", limits.max_message_bytes);
        restart!("limits.max_rooms", limits.max_rooms);
        restart!("limits.outbound_queue", limits.outbound_queue);
        restart!("limits.outbound_queue_bytes", limits.outbound_queue_bytes);
        restart!("limits.http_response_bytes", limits.response_bytes);
        restart!(
            "limits.mesh_handshake_timeout_s",
            limits.mesh_handshake_timeout
        );
        restart!("limits.mesh_preauth_total", limits.mesh_preauth_total);
        restart!(
            "limits.mesh_preauth_per_address",
            limits.mesh_preauth_per_address
        );
        restart!("p2p_listen", p2p.listen);
        restart!("p2p_relay", p2p.relays);
        restart!("p2p_relay_server", p2p.relay_server);
        restart!(
            "p2p_relay_max_reservations",
            p2p.relay_limits.max_reservations
        );
        restart!("p2p_relay_max_circuits", p2p.relay_limits.max_circuits);
        restart!("p2p_relay_circuit_bytes", p2p.relay_limits.circuit_bytes);
        restart!(
            "p2p_relay_circuit_duration_s",
            p2p.relay_limits.circuit_duration_s
        );
        restart!("mdns", discovery.mdns);
        restart!("mdns_service", discovery.mdns_service);
        restart!("mdns_interfaces", discovery.mdns_interfaces);
        restart!("mdns_exclude_interfaces", discovery.mdns_exclude_interfaces);
        restart!("mdns_announce_addr", discovery.mdns_announce_addr);
        restart!("tailnet", discovery.tailnet);
        Reloaded {
            config: out,
            applied,
            needs_restart: restart,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::settings::SETTINGS;

    #[test]
    fn live_settings_are_taken_and_the_others_kept_and_named() {
        let running = Config::default();
        let mut new = Config {
            token: Some("t2".into()),
            port: 9999,
            ..Config::default()
        };
        new.limits.message_rate = 5;
        new.limits.max_rooms = 7;
        let r = Reloaded::between(&running, new);
        assert_eq!(r.applied, vec!["token", "limits.message_rate"]);
        assert_eq!(r.needs_restart, vec!["port", "limits.max_rooms"]);
        assert_eq!(r.config.token.as_deref(), Some("t2"));
        assert_eq!(r.config.limits.message_rate, 5);
        assert_eq!(r.config.port, running.port);
        assert_eq!(r.config.limits.max_rooms, running.limits.max_rooms);
        let same = Reloaded::between(&running, Config::default());
        assert!(same.applied.is_empty() && same.needs_restart.is_empty());
    }

    #[test]
    fn tls_on_or_off_needs_a_restart_new_files_do_not() {
        use crate::config::schema::TlsFiles;
        let files = |c: &str| TlsFiles {
            cert: c.into(),
            key: "k.pem".into(),
        };
        let running = Config::default();
        let new = Config {
            tls: Some(files("c.pem")),
            ..Config::default()
        };
        let r = Reloaded::between(&running, new);
        assert_eq!(r.needs_restart, vec!["tls_cert"]);
        assert!(r.config.tls.is_none());
        let running = Config {
            tls: Some(files("c.pem")),
            ..Config::default()
        };
        let r = Reloaded::between(
            &running,
            Config {
                tls: Some(files("new.pem")),
                ..Config::default()
            },
        );
        assert_eq!(r.applied, vec!["tls_cert"]);
        assert_eq!(r.config.tls, Some(files("new.pem")));
    }

    /// Every live key is a setting of the table.
    #[test]
    fn p2p_settings_need_a_restart() {
        let running = Config::default();
        let mut new = Config::default();
        new.p2p.listen = vec!["/ip4/0.0.0.0/tcp/4001".into()];
        new.p2p.relay_server = true;
        let r = Reloaded::between(&running, new);
        assert_eq!(r.needs_restart, vec!["p2p_listen", "p2p_relay_server"]);
        assert_eq!(r.config.p2p, running.p2p);
    }

    #[test]
    fn live_keys_are_settings() {
        for key in LIVE {
            assert!(SETTINGS.iter().any(|s| s.key == *key), "{key}");
        }
    }
}
