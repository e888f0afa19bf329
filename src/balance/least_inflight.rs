//! Least in-flight by the power of two choices: two weighted random draws (Pingora's
//! `Weighted<Random>`), keeping the one with fewer in-flight requests per unit of weight.

use super::{backends, index, scan, Pick, Selection};
use pingora::lb::selection::{BackendIter, BackendSelection, Random};
use std::net::SocketAddr;
use std::sync::Arc;

/// Power of two choices over a cluster's peers.
pub struct LeastInflight {
    len: usize,
    /// `None` when every weight is zero (every peer drained).
    random: Option<Arc<Random>>,
}

impl std::fmt::Debug for LeastInflight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeastInflight")
            .field("len", &self.len)
            .finish()
    }
}

impl LeastInflight {
    /// Over `peers`, in cluster order with their weights.
    pub fn new(peers: &[(SocketAddr, u32)]) -> Self {
        let any_weight = peers.iter().any(|(_, w)| *w > 0);
        LeastInflight {
            len: peers.len(),
            random: any_weight.then(|| Arc::new(Random::build(&backends(peers)))),
        }
    }
}

impl Selection for LeastInflight {
    fn pick(&self, pick: &Pick<'_>) -> Option<usize> {
        let first = self.random.as_ref().and_then(|r| {
            let draw = || {
                let mut it = r.iter(&[]);
                (0..self.len * 2).find_map(|_| index(it.next()?).filter(|i| (pick.accept)(*i)))
            };
            match (draw(), draw()) {
                (Some(a), Some(b)) => Some(if (pick.load)(b) < (pick.load)(a) {
                    b
                } else {
                    a
                }),
                (a, b) => a.or(b),
            }
        });
        first.or_else(|| scan(self.len, pick.accept))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{test_peers as peers, Balancer};
    use crate::config::Balance;

    #[test]
    fn least_inflight_prefers_the_less_loaded_peer() {
        let b = Balancer::new(Balance::LeastInflight, &peers(&[1, 1]));
        // Peer 0 is always busier.
        let load = [5.0f64, 1.0];
        let mut c = [0; 2];
        for _ in 0..1000 {
            c[b.pick(0, |_| true, |i| load[i]).unwrap()] += 1;
        }
        // With two choices, peer 0 wins only when both draws land on it (about a quarter).
        assert!(c[1] > 650 && c[0] > 100, "{c:?}");
    }
}
