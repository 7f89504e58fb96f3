//! The addresses the status page shows for the node: its listen URL, or, when it listens on
//! every interface (`0.0.0.0` or `::`), one URL per address of the machine's interfaces
//! (from `if-addrs`, which mDNS discovery uses too), so a person sees where to reach it.

use std::net::IpAddr;

/// URLs the node is reached at, for its listen URL `listen` (`http://0.0.0.0:3913`).
/// A wildcard host is expanded to the interfaces' addresses (IPv4 for `0.0.0.0`, both
/// families for `::`; link-local IPv6 left out, as it needs a zone), loopback last; any other
/// listen URL is returned as it is.
pub fn node_addresses(listen: &str) -> Vec<String> {
    let Some((scheme, rest)) = listen.split_once("://") else {
        return vec![listen.to_string()];
    };
    let Ok(addr) = rest.trim_end_matches('/').parse::<std::net::SocketAddr>() else {
        return vec![listen.to_string()];
    };
    if !addr.ip().is_unspecified() {
        return vec![listen.to_string()];
    }
    let interfaces = match if_addrs::get_if_addrs() {
        Ok(i) => i,
        Err(e) => {
            tracing::debug!(error = %e, "cannot list the interface addresses");
            return vec![listen.to_string()];
        }
    };
    let expanded = expand(
        scheme,
        addr.ip(),
        addr.port(),
        interfaces.iter().map(|i| i.ip()),
    );
    if expanded.is_empty() {
        vec![listen.to_string()]
    } else {
        expanded
    }
}

/// The URLs of `ips` that a node listening on the wildcard `wildcard` answers on.
fn expand(
    scheme: &str,
    wildcard: IpAddr,
    port: u16,
    ips: impl Iterator<Item = IpAddr>,
) -> Vec<String> {
    let mut ips: Vec<IpAddr> = ips
        .filter(|ip| match ip {
            IpAddr::V4(_) => true,
            // `::` takes both families (dual stack); `0.0.0.0` only IPv4.
            IpAddr::V6(v6) => wildcard.is_ipv6() && (v6.segments()[0] & 0xffc0) != 0xfe80,
        })
        .collect();
    ips.dedup();
    // Loopback last, IPv4 before IPv6, otherwise in the order of the interfaces.
    ips.sort_by_key(|ip| (ip.is_loopback(), ip.is_ipv6()));
    ips.into_iter()
        .map(|ip| format!("{scheme}://{}", std::net::SocketAddr::new(ip, port)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_is_expanded_to_the_interfaces_and_others_are_kept() {
        let ips = ["127.0.0.1", "192.168.1.20", "::1", "fe80::1", "2001:db8::7"]
            .map(|s| s.parse::<IpAddr>().unwrap());
        assert_eq!(
            expand("http", "0.0.0.0".parse().unwrap(), 3913, ips.into_iter()),
            ["http://192.168.1.20:3913", "http://127.0.0.1:3913"]
        );
        assert_eq!(
            expand("https", "::".parse().unwrap(), 443, ips.into_iter()),
            [
                "https://192.168.1.20:443",
                "https://[2001:db8::7]:443",
                "https://127.0.0.1:443",
                "https://[::1]:443"
            ]
        );
        assert_eq!(
            node_addresses("http://127.0.0.1:3913"),
            ["http://127.0.0.1:3913"]
        );
        // This machine has at least its loopback interface.
        let here = node_addresses("http://0.0.0.0:3913");
        assert!(
            here.iter().any(|a| a == "http://127.0.0.1:3913"),
            "{here:?}"
        );
    }
}
