//! Picking a peer inside a cluster.
//!
//! Each algorithm is one [`Selection`] in its own file: [`round_robin`] (weighted, Pingora's
//! `Weighted<RoundRobin>`), [`least_inflight`] (power of two choices on in-flight requests per
//! unit of weight) and [`prefix_affinity`] (consistent hashing of the request's key under a load
//! bound; the key is stable across processes, see [`hash`]). A pick gets the request's key (a hash of whatever a hashing balancer keys on:
//! a session header, a prompt prefix) and two callbacks from the caller: `accept` says whether a
//! candidate is usable now (healthy, breaker admitting, not tried by this request, below its
//! `max_inflight`) and `load` gives its load per unit of weight. A hashing balancer is one more
//! file and one more [`Balancer`] variant; nothing in the try loop changes.

pub mod hash;
pub mod least_inflight;
pub mod prefix_affinity;
pub mod round_robin;

use crate::config::{AffinityConfig, Balance, ClusterConfig};
use pingora::lb::Backend;
use std::collections::BTreeSet;
use std::net::SocketAddr;

/// What a pick is asked.
pub struct Pick<'a> {
    /// The request's key, for balancers that hash (the others ignore it).
    pub key: u64,
    /// Whether the peer at this index may take the request now.
    pub accept: &'a dyn Fn(usize) -> bool,
    /// The load of the peer at this index: in-flight requests per unit of weight.
    pub load: &'a dyn Fn(usize) -> f64,
}

/// One way of choosing among a cluster's peers (by index in the cluster's peer list).
pub trait Selection {
    /// A peer index that `pick.accept` takes, or `None` only when it refuses every peer.
    fn pick(&self, pick: &Pick<'_>) -> Option<usize>;
}

/// A cluster's balancer: one of the selections, chosen by `balance`.
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(round_robin::RoundRobin),
    LeastInflight(least_inflight::LeastInflight),
    PrefixAffinity(prefix_affinity::PrefixAffinity),
}

impl Balancer {
    /// The balancer of cluster `c` over `peers`, in cluster order with their weights.
    pub fn for_cluster(c: &ClusterConfig, peers: &[(SocketAddr, u32)]) -> Self {
        match c.balance {
            Balance::PrefixAffinity => Balancer::PrefixAffinity(
                prefix_affinity::PrefixAffinity::new(peers, c.affinity.load_factor),
            ),
            kind => Self::new(kind, peers),
        }
    }

    /// The balancer `kind` over `peers`, in cluster order with their weights (`prefix_affinity`
    /// with its default load factor).
    pub fn new(kind: Balance, peers: &[(SocketAddr, u32)]) -> Self {
        match kind {
            Balance::PrefixAffinity => Balancer::PrefixAffinity(
                prefix_affinity::PrefixAffinity::new(peers, AffinityConfig::default().load_factor),
            ),
            Balance::RoundRobin => Balancer::RoundRobin(round_robin::RoundRobin::new(peers)),
            Balance::LeastInflight => {
                Balancer::LeastInflight(least_inflight::LeastInflight::new(peers))
            }
        }
    }

    /// Pick a peer index that `accept` takes, for a request whose key is `key`. `load(i)` is
    /// in-flight requests per unit of weight. Returns `None` only when `accept` refuses every
    /// peer.
    pub fn pick(
        &self,
        key: u64,
        accept: impl Fn(usize) -> bool,
        load: impl Fn(usize) -> f64,
    ) -> Option<usize> {
        let pick = Pick {
            key,
            accept: &accept,
            load: &load,
        };
        match self {
            Balancer::RoundRobin(s) => s.pick(&pick),
            Balancer::LeastInflight(s) => s.pick(&pick),
            Balancer::PrefixAffinity(s) => s.pick(&pick),
        }
    }
}

/// Index of a peer in its cluster's peer list, carried in a Pingora `Backend`'s extensions.
#[derive(Clone, Copy)]
struct PeerIndex(usize);

/// Pingora backends for `peers`, each carrying its index.
fn backends(peers: &[(SocketAddr, u32)]) -> BTreeSet<Backend> {
    let mut set = BTreeSet::new();
    for (i, (addr, weight)) in peers.iter().enumerate() {
        let mut b = Backend {
            addr: pingora::protocols::l4::socket::SocketAddr::Inet(*addr),
            weight: *weight as usize,
            ext: Default::default(),
        };
        b.ext.insert(PeerIndex(i));
        set.insert(b);
    }
    set
}

fn index(b: &Backend) -> Option<usize> {
    b.ext.get::<PeerIndex>().map(|p| p.0)
}

/// A usable peer by a full scan from a random start: the weighted walks are probabilistic past
/// their first step, so every selection ends with this, and finds a usable peer when there is one.
fn scan(len: usize, accept: &dyn Fn(usize) -> bool) -> Option<usize> {
    let start = rand::random_range(0..len.max(1));
    (0..len).map(|k| (start + k) % len).find(|i| accept(*i))
}

#[cfg(test)]
pub(crate) fn test_peers(weights: &[u32]) -> Vec<(SocketAddr, u32)> {
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| (SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16)), *w))
        .collect()
}
