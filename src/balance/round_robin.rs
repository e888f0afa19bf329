//! Weighted round robin: Pingora's `Weighted<RoundRobin>` selection (lock-free, one atomic
//! counter over a weight-expanded table), walked past peers the caller refuses.

use super::{backends, index, scan, Pick, Selection};
use pingora::lb::selection::{BackendIter, BackendSelection};
use std::net::SocketAddr;
use std::sync::Arc;

/// Weighted round robin over a cluster's peers.
pub struct RoundRobin {
    len: usize,
    /// `None` when every weight is zero (every peer drained): Pingora's tables can't be built.
    table: Option<Arc<pingora::lb::selection::RoundRobin>>,
}

impl std::fmt::Debug for RoundRobin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoundRobin")
            .field("len", &self.len)
            .finish()
    }
}

impl RoundRobin {
    /// Over `peers`, in cluster order with their weights.
    pub fn new(peers: &[(SocketAddr, u32)]) -> Self {
        let any_weight = peers.iter().any(|(_, w)| *w > 0);
        RoundRobin {
            len: peers.len(),
            table: any_weight
                .then(|| Arc::new(pingora::lb::selection::RoundRobin::build(&backends(peers)))),
        }
    }
}

impl Selection for RoundRobin {
    fn pick(&self, pick: &Pick<'_>) -> Option<usize> {
        let first = self.table.as_ref().and_then(|rr| {
            let mut it = rr.iter(&[]);
            (0..self.len * 2).find_map(|_| index(it.next()?).filter(|i| (pick.accept)(*i)))
        });
        first.or_else(|| scan(self.len, pick.accept))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{test_peers as peers, Balancer};
    use crate::config::Balance;

    #[test]
    fn round_robin_honours_weights_exactly_per_cycle() {
        let b = Balancer::new(Balance::RoundRobin, &peers(&[2, 1, 1]));
        let mut c = [0; 3];
        for _ in 0..400 {
            c[b.pick(0, |_| true, |_| 0.0).unwrap()] += 1;
        }
        assert_eq!(c, [200, 100, 100]);
    }

    #[test]
    fn skips_refused_peers_and_drained_ones() {
        let b = Balancer::new(Balance::RoundRobin, &peers(&[1, 0, 1]));
        for _ in 0..50 {
            let i = b.pick(0, |i| i != 0 && i != 1, |_| 0.0).unwrap();
            assert_eq!(i, 2);
        }
        assert_eq!(b.pick(0, |_| false, |_| 0.0), None);
        let drained = Balancer::new(Balance::RoundRobin, &peers(&[0, 0]));
        assert_eq!(drained.pick(0, |i| i == 1, |_| 0.0), Some(1));
    }
}
