//! The libp2p transport's settings (`p2p_listen`, `p2p_relay`, `p2p_relay_server` and the
//! relay server's limits) and their checks. Compiled in every build, so that a build without
//! the `p2p` cargo feature still parses them and refuses them with a clear message
//! ([`P2pSettings::check`]) instead of ignoring them.

use crate::mesh::proto::url::{parse_multiaddr, PeerUrlError, P2P_MISSING};

/// Default `p2p_relay_max_circuits`.
pub const DEFAULT_RELAY_MAX_CIRCUITS: usize = 64;
/// Default `p2p_relay_circuit_bytes` (bytes per relayed connection and direction; 0 = no
/// limit).
pub const DEFAULT_RELAY_CIRCUIT_BYTES: u64 = 1 << 30;
/// Default `p2p_relay_circuit_duration_s` (seconds a relayed connection may last; the peers
/// then reconnect, or have gone direct).
pub const DEFAULT_RELAY_CIRCUIT_DURATION_S: u64 = 3600;
/// Default `p2p_relay_max_reservations`.
pub const DEFAULT_RELAY_MAX_RESERVATIONS: usize = 128;

/// What the node does with libp2p.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct P2pSettings {
    /// Multiaddrs to listen on (`--p2p-listen`, `p2p_listen`), e.g. `/ip4/0.0.0.0/tcp/4001`.
    pub listen: Vec<String>,
    /// Relays to reserve a slot on (`--p2p-relay`, `p2p_relay`), each ending in the relay's
    /// `/p2p/<node id>`.
    pub relays: Vec<String>,
    /// Be a circuit relay v2 server (`--p2p-relay-server`, `p2p_relay_server`).
    pub relay_server: bool,
    /// The relay server's limits.
    pub relay_limits: RelayLimits,
}

/// Resource limits of the relay server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayLimits {
    /// Reservations held at once (`p2p_relay_max_reservations`).
    pub max_reservations: usize,
    /// Relayed connections at once (`p2p_relay_max_circuits`).
    pub max_circuits: usize,
    /// Bytes one relayed connection may carry per direction (`p2p_relay_circuit_bytes`;
    /// 0 = no limit).
    pub circuit_bytes: u64,
    /// Seconds one relayed connection may last (`p2p_relay_circuit_duration_s`).
    pub circuit_duration_s: u64,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            max_reservations: DEFAULT_RELAY_MAX_RESERVATIONS,
            max_circuits: DEFAULT_RELAY_MAX_CIRCUITS,
            circuit_bytes: DEFAULT_RELAY_CIRCUIT_BYTES,
            circuit_duration_s: DEFAULT_RELAY_CIRCUIT_DURATION_S,
        }
    }
}

impl P2pSettings {
    /// Whether any libp2p setting is on (then the node runs a libp2p swarm).
    pub fn is_on(&self) -> bool {
        !self.listen.is_empty() || !self.relays.is_empty() || self.relay_server
    }

    /// Checks one `p2p_listen` address: a multiaddr with a host and a TCP port, without a
    /// node id.
    pub fn check_listen(addr: &str) -> Result<(), PeerUrlError> {
        let a = parse_multiaddr(addr, false)?;
        if !a.node_id.is_empty() || a.relayed {
            return Err(PeerUrlError {
                url: addr.into(),
                reason: "a listen address is /ip4/ADDR/tcp/PORT (or /ip6); to be reachable \
                         through a relay, use p2p_relay"
                    .into(),
            });
        }
        if addr.starts_with("/dns") {
            return Err(PeerUrlError {
                url: addr.into(),
                reason: "listen on an IP address (/ip4 or /ip6), not a name".into(),
            });
        }
        Ok(())
    }

    /// Checks one `p2p_relay` address: the relay's multiaddr ending in its node id.
    pub fn check_relay(addr: &str) -> Result<(), PeerUrlError> {
        let a = parse_multiaddr(addr, true)?;
        if a.relayed {
            return Err(PeerUrlError {
                url: addr.into(),
                reason: "a relay is reached directly: its address ends in /p2p/<relay id>, \
                         without /p2p-circuit"
                    .into(),
            });
        }
        Ok(())
    }

    /// Refuses settings this build cannot act on: any of them in a build without the `p2p`
    /// feature (the key is returned with the message).
    pub fn check_build(&self) -> Result<(), (&'static str, String)> {
        if cfg!(feature = "p2p") {
            return Ok(());
        }
        let key = if !self.listen.is_empty() {
            "p2p_listen"
        } else if !self.relays.is_empty() {
            "p2p_relay"
        } else if self.relay_server {
            "p2p_relay_server"
        } else {
            return Ok(());
        };
        Err((key, P2P_MISSING.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_and_relay_addresses_are_checked() {
        let relay = crate::mesh::NodeIdentity::from_secret_bytes([3; 32]);
        assert!(P2pSettings::check_listen("/ip4/0.0.0.0/tcp/4001").is_ok());
        assert!(P2pSettings::check_listen("/ip6/::/tcp/0").is_ok());
        assert!(P2pSettings::check_listen("/dns4/x/tcp/1").is_err());
        assert!(P2pSettings::check_listen("/ip4/0.0.0.0/udp/1").is_err());
        let with_id = format!("/ip4/1.2.3.4/tcp/1/p2p/{}", relay.node_id());
        assert!(P2pSettings::check_listen(&with_id).is_err());
        assert!(P2pSettings::check_relay(&with_id).is_ok());
        assert!(P2pSettings::check_relay("/ip4/1.2.3.4/tcp/1").is_err());
    }

    #[test]
    fn a_build_without_the_feature_names_the_setting_it_refuses() {
        let off = P2pSettings::default();
        assert!(off.check_build().is_ok());
        let on = P2pSettings {
            relay_server: true,
            ..P2pSettings::default()
        };
        let result = on.check_build();
        if cfg!(feature = "p2p") {
            assert!(result.is_ok(), "{result:?}");
        } else {
            let (key, msg) = result.unwrap_err();
            assert_eq!(key, "p2p_relay_server");
            assert!(msg.contains("without the `p2p` cargo feature"), "{msg}");
        }
    }
}
