//! Who the client is, when proxies stand in front of switchyard.
//!
//! The TCP peer is the client unless it is listed in `trusted_proxies`. A trusted peer's
//! `x-forwarded-for` is read right to left, skipping trusted addresses, and the first address
//! that is not trusted is the client (nginx's `real_ip_recursive on`, Envoy's trusted hops): a
//! client can put anything at the left of the header, so only what trusted hops appended counts.
//! The resolved address is what `ip`-keyed stickiness and client limits use. What the upstream is
//! told follows the same rule (`forward.rs`): from an untrusted peer the incoming
//! `x-forwarded-for`, `forwarded`, `x-forwarded-proto` and `x-real-ip` are dropped and replaced;
//! from a trusted one the peer is appended to the chain.

use ipnet::IpNet;
use std::net::IpAddr;

/// The client of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Identity {
    /// The TCP peer.
    pub peer: Option<IpAddr>,
    /// The client, as resolved through trusted proxies (the peer when it is not one).
    pub client: Option<IpAddr>,
    /// The peer is a trusted proxy: its forwarding headers are kept and extended.
    pub trusted: bool,
}

fn trusted(ip: IpAddr, list: &[IpNet]) -> bool {
    let ip = canonical(ip);
    list.iter().any(|n| n.contains(&ip))
}

/// IPv4-mapped IPv6 (`::ffff:10.0.0.1`, what a dual-stack listener reports) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One `x-forwarded-for` element: an address, maybe with a port or brackets.
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')?.split(']').next()?.parse().ok()
}

/// Resolve the client of a request from `peer` and its `x-forwarded-for` headers.
pub fn resolve(peer: Option<IpAddr>, headers: &http::HeaderMap, list: &[IpNet]) -> Identity {
    let Some(p) = peer else {
        return Identity::default();
    };
    if !trusted(p, list) {
        return Identity {
            peer,
            client: peer,
            trusted: false,
        };
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let mut client = p;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else { break };
        client = ip;
        if !trusted(ip, list) {
            break;
        }
    }
    Identity {
        peer,
        client: Some(canonical(client)),
        trusted: true,
    }
}

/// `ip` as a `Forwarded` node (RFC 7239: IPv6 quoted and bracketed), written where it is
/// displayed (no string of its own).
pub fn forwarded_node(ip: IpAddr) -> ForwardedNode {
    ForwardedNode(ip)
}

/// See [`forwarded_node`].
pub struct ForwardedNode(IpAddr);

impl std::fmt::Display for ForwardedNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "\"[{v6}]\""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(xff: &[&str]) -> http::HeaderMap {
        let mut m = http::HeaderMap::new();
        for v in xff {
            m.append("x-forwarded-for", v.parse().unwrap());
        }
        m
    }

    #[test]
    fn only_trusted_hops_are_believed() {
        let list: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        // An untrusted peer: its header is ignored.
        let id = resolve(ip("203.0.113.9"), &h(&["1.2.3.4"]), &list);
        assert_eq!((id.client, id.trusted), (ip("203.0.113.9"), false));
        // A trusted peer: the rightmost untrusted hop.
        let id = resolve(
            ip("10.0.0.2"),
            &h(&["6.6.6.6, 198.51.100.7", "10.0.0.3"]),
            &list,
        );
        assert_eq!((id.client, id.trusted), (ip("198.51.100.7"), true));
        // Every hop trusted: the leftmost; no header: the peer; garbage stops the walk.
        let id = resolve(ip("10.0.0.2"), &h(&["10.1.1.1"]), &list);
        assert_eq!(id.client, ip("10.1.1.1"));
        assert_eq!(
            resolve(ip("10.0.0.2"), &h(&[]), &list).client,
            ip("10.0.0.2")
        );
        let id = resolve(ip("10.0.0.2"), &h(&["1.1.1.1, junk"]), &list);
        assert_eq!(id.client, ip("10.0.0.2"));
        // Ports, brackets and v4-mapped peers.
        let id = resolve(ip("::ffff:10.0.0.2"), &h(&["[2001:db8::1]:443"]), &list);
        assert_eq!((id.client, id.trusted), (ip("2001:db8::1"), true));
        assert_eq!(
            forwarded_node("2001:db8::1".parse().unwrap()).to_string(),
            "\"[2001:db8::1]\""
        );
    }
}
