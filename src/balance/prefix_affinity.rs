//! Consistent hashing with bounded loads, for `balance: prefix_affinity`.
//!
//! A model server that already holds a prompt's prefix in its KV cache answers the first token
//! many times faster, so requests that share a prefix should go to the same peer, and every
//! switchyard instance in front of the cluster should agree on which one without sharing state.
//! The order of peers for a key is rendezvous hashing (highest random weight, weighted as
//! `-weight / ln(u)`): it depends only on the key and the peers' addresses and weights, and a peer
//! joining or leaving moves only the keys it wins or won.
//!
//! Affinity alone overloads the peer of a popular prefix, so the pick is bounded as in HAProxy's
//! `hash-balance-factor` and Mirrokni, Thorup and Zadimoghaddam's scheme: the first peer in the
//! key's order whose load, counting this request, is within `ceil(load_factor × mean)` (the mean
//! over the peers that may take the request, per unit of weight). At least one peer always is;
//! retries and refused peers simply move down the key's order.

use super::hash::{mix, stable_hash};
use super::{Pick, Selection};
use std::net::SocketAddr;

/// Rendezvous hashing under a load bound.
#[derive(Debug)]
pub struct PrefixAffinity {
    /// Per peer, in cluster order: the hash of its address, and its weight.
    peers: Vec<(u64, f64)>,
    load_factor: f64,
}

impl PrefixAffinity {
    /// Over `peers`, in cluster order with their weights; a peer may take up to `load_factor`
    /// times the mean load.
    pub fn new(peers: &[(SocketAddr, u32)], load_factor: f64) -> Self {
        PrefixAffinity {
            peers: peers
                .iter()
                .map(|(addr, w)| (stable_hash(addr.to_string().as_bytes()), f64::from(*w)))
                .collect(),
            load_factor: load_factor.max(1.0),
        }
    }

    /// The rendezvous score of peer `i` for `key`: higher wins.
    fn score(&self, key: u64, i: usize) -> f64 {
        let (h, w) = self.peers[i];
        if w <= 0.0 {
            return f64::NEG_INFINITY;
        }
        // A uniform draw in (0, 1) from the top 53 bits, never 0 or 1.
        let u = ((mix(key ^ h) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        -w / u.ln()
    }
}

impl Selection for PrefixAffinity {
    fn pick(&self, pick: &Pick<'_>) -> Option<usize> {
        let n = self.peers.len();
        // Requests in flight, counting this one: `load` is per unit of weight.
        let weight = |i: usize| self.peers[i].1.max(1.0);
        let held = |i: usize| (pick.load)(i) * weight(i);
        let (mut total, mut weights, mut accepted) = (1.0f64, 0.0f64, 0usize);
        for i in (0..n).filter(|i| (pick.accept)(*i)) {
            total += held(i) - 1.0;
            weights += self.peers[i].1;
            accepted += 1;
        }
        if accepted == 0 {
            return None;
        }
        let within = |i: usize| {
            let cap = (self.load_factor * total * self.peers[i].1 / weights.max(1.0)).ceil();
            held(i) <= cap + 1e-9
        };
        let best = (0..n)
            .filter(|i| self.peers[*i].1 > 0.0 && (pick.accept)(*i) && within(*i))
            .map(|i| (self.score(pick.key, i), i))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, i)| i);
        // Every peer over the bound (only with drained peers in play): the least loaded.
        best.or_else(|| {
            (0..n)
                .filter(|i| (pick.accept)(*i))
                .min_by(|a, b| (pick.load)(*a).total_cmp(&(pick.load)(*b)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_peers as peers;
    use super::*;

    fn pick(b: &PrefixAffinity, key: u64, accept: &dyn Fn(usize) -> bool, load: &[f64]) -> usize {
        let load = |i: usize| load[i];
        b.pick(&Pick {
            key,
            accept,
            load: &load,
        })
        .unwrap()
    }

    #[test]
    fn same_key_same_peer_and_keys_spread() {
        let b = PrefixAffinity::new(&peers(&[1, 1, 1, 1]), 1.25);
        let idle = [1.0; 4];
        let mut count = [0; 4];
        for key in 0..4000u64 {
            let k = mix(key);
            let first = pick(&b, k, &|_| true, &idle);
            assert_eq!(first, pick(&b, k, &|_| true, &idle));
            count[first] += 1;
        }
        assert!(count.iter().all(|c| (800..1200).contains(c)), "{count:?}");
    }

    #[test]
    fn weights_shift_the_share() {
        let b = PrefixAffinity::new(&peers(&[3, 1]), 1.25);
        let mut count = [0; 2];
        for key in 0..4000u64 {
            count[pick(&b, mix(key), &|_| true, &[1.0, 1.0])] += 1;
        }
        assert!((2800..3200).contains(&count[0]), "{count:?}");
    }

    #[test]
    fn a_peer_leaving_moves_only_its_keys() {
        let all = peers(&[1, 1, 1, 1, 1]);
        let before = PrefixAffinity::new(&all, 1.25);
        let after = PrefixAffinity::new(&[all[0], all[1], all[3], all[4]], 1.25);
        let at = |i: usize| all[i].0;
        let mut moved = 0;
        for key in 0..2000u64 {
            let k = mix(key);
            let was = at(pick(&before, k, &|_| true, &[1.0; 5]));
            let now = [0, 1, 3, 4][pick(&after, k, &|_| true, &[1.0; 4])];
            if was != at(2) {
                assert_eq!(was, at(now), "key {key} moved off a peer that stayed");
            } else {
                moved += 1;
            }
        }
        assert!((300..500).contains(&moved), "{moved}");
    }

    #[test]
    fn the_bound_spills_to_the_next_peer_in_order() {
        let b = PrefixAffinity::new(&peers(&[1, 1, 1, 1]), 1.25);
        let key = mix(7);
        let home = pick(&b, key, &|_| true, &[1.0; 4]);
        // The home peer holds 4 (5 with this request); the others none: the mean with this
        // request is 5/4 and the bound ceil(1.25 × 5/4) = 2.
        let mut load = [1.0; 4];
        load[home] = 5.0;
        let spilled = pick(&b, key, &|_| true, &load);
        assert_ne!(spilled, home);
        // The spill goes to the key's second choice: the home peer refused gives the same.
        assert_eq!(spilled, pick(&b, key, &|i| i != home, &[1.0; 4]));
        // Within the bound it stays home: every peer holds 1, the bound is ceil(1.25 × 5/4) = 2.
        assert_eq!(pick(&b, key, &|_| true, &[2.0; 4]), home);
        assert_eq!(
            b.pick(&Pick {
                key,
                accept: &|_| false,
                load: &|_| 1.0
            }),
            None
        );
    }
}
