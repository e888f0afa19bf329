//! Picking a peer inside a cluster.
//!
//! Weighted round robin uses Pingora's `Weighted<RoundRobin>` selection (lock-free, one atomic
//! counter over a weight-expanded table). `least_inflight` is the power of two choices: two
//! weighted random draws (Pingora's `Weighted<Random>`), keeping the one with fewer in-flight
//! requests per unit of weight. Either way the caller's `accept` decides whether a candidate is
//! usable now (healthy, breaker closed, not already tried, not drained), so one pick walks past
//! unusable peers without allocating.

use crate::config::Balance;
use pingora::lb::selection::{BackendIter, BackendSelection, Random, RoundRobin};
use pingora::lb::Backend;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

/// Index of a peer in its cluster's peer list, carried in a Pingora `Backend`'s extensions.
#[derive(Clone, Copy)]
struct PeerIndex(usize);

pub struct Balancer {
    kind: Balance,
    len: usize,
    /// `None` when every weight is zero (every peer drained): Pingora's tables can't be built.
    rr: Option<Arc<RoundRobin>>,
    random: Option<Arc<Random>>,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("kind", &self.kind)
            .field("len", &self.len)
            .finish()
    }
}

impl Balancer {
    /// `peers` in cluster order with their weights.
    pub fn new(kind: Balance, peers: &[(SocketAddr, u32)]) -> Self {
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
        let any_weight = peers.iter().any(|(_, w)| *w > 0);
        Balancer {
            kind,
            len: peers.len(),
            rr: any_weight.then(|| Arc::new(RoundRobin::build(&set))),
            random: any_weight.then(|| Arc::new(Random::build(&set))),
        }
    }

    /// Pick a peer index that `accept` takes. `load(i)` is in-flight requests per unit of weight
    /// (used by `least_inflight`). Returns `None` only when `accept` refuses every peer.
    pub fn pick(
        &self,
        accept: impl Fn(usize) -> bool,
        load: impl Fn(usize) -> f64,
    ) -> Option<usize> {
        let first = match self.kind {
            Balance::RoundRobin => self.rr.as_ref().and_then(|rr| {
                let mut it = rr.iter(&[]);
                (0..self.len * 2).find_map(|_| index(it.next()?).filter(|i| accept(*i)))
            }),
            Balance::LeastInflight => self.random.as_ref().and_then(|r| {
                let draw = || {
                    let mut it = r.iter(&[]);
                    (0..self.len * 2).find_map(|_| index(it.next()?).filter(|i| accept(*i)))
                };
                match (draw(), draw()) {
                    (Some(a), Some(b)) => Some(if load(b) < load(a) { b } else { a }),
                    (a, b) => a.or(b),
                }
            }),
        };
        // The weighted walk is probabilistic past its first step: finish with a full scan so a
        // usable peer is always found when there is one.
        first.or_else(|| {
            let start = rand::random_range(0..self.len.max(1));
            (0..self.len)
                .map(|k| (start + k) % self.len)
                .find(|i| accept(*i))
        })
    }
}

fn index(b: &Backend) -> Option<usize> {
    b.ext.get::<PeerIndex>().map(|p| p.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn peers(weights: &[u32]) -> Vec<(SocketAddr, u32)> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| (SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16)), *w))
            .collect()
    }

    #[test]
    fn round_robin_honours_weights_exactly_per_cycle() {
        let b = Balancer::new(Balance::RoundRobin, &peers(&[2, 1, 1]));
        let mut c = [0; 3];
        for _ in 0..400 {
            c[b.pick(|_| true, |_| 0.0).unwrap()] += 1;
        }
        assert_eq!(c, [200, 100, 100]);
    }

    #[test]
    fn skips_refused_peers_and_drained_ones() {
        let b = Balancer::new(Balance::RoundRobin, &peers(&[1, 0, 1]));
        for _ in 0..50 {
            let i = b.pick(|i| i != 0 && i != 1, |_| 0.0).unwrap();
            assert_eq!(i, 2);
        }
        assert_eq!(b.pick(|_| false, |_| 0.0), None);
        let drained = Balancer::new(Balance::RoundRobin, &peers(&[0, 0]));
        assert_eq!(drained.pick(|i| i == 1, |_| 0.0), Some(1));
    }

    #[test]
    fn least_inflight_prefers_the_less_loaded_peer() {
        let b = Balancer::new(Balance::LeastInflight, &peers(&[1, 1]));
        let load = RefCell::new([0.0f64; 2]);
        let mut c = [0; 2];
        for n in 0..1000 {
            // Peer 0 is always busier.
            *load.borrow_mut() = [5.0, 1.0];
            let i = b.pick(|_| true, |i| load.borrow()[i]).unwrap();
            c[i] += 1;
            let _ = n;
        }
        // With two choices, peer 0 wins only when both draws land on it (about a quarter).
        assert!(c[1] > 650 && c[0] > 100, "{c:?}");
    }
}
