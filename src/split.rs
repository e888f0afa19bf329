//! The weighted split of a route between clusters (for example 90/10).
//!
//! Not a coin flip per request: the order is a precomputed smooth weighted round robin (the
//! sequence nginx's SWRR produces), walked by one atomic counter, so a 90/10 split is 90/10 over
//! every window of a hundred requests, without a lock. A sticky key instead hashes into the
//! cumulative weight ranges, so changing 90/10 to 50/50 moves only the keys that must move.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Longest precomputed sequence; weights are reduced by their gcd first.
const MAX_TABLE: u64 = 1 << 16;

#[derive(Debug)]
pub struct Split {
    /// Target indices in SWRR order.
    table: Box<[u16]>,
    /// Cumulative weights, for sticky hashing.
    cumulative: Box<[u64]>,
    next: AtomicUsize,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Split {
    /// Build from per-target weights; at least one must be non-zero (config validation ensures it).
    pub fn new(weights: &[u32]) -> Self {
        let g = weights
            .iter()
            .filter(|w| **w > 0)
            .fold(0u64, |g, w| gcd(g, u64::from(*w)))
            .max(1);
        let mut reduced: Vec<u64> = weights.iter().map(|w| u64::from(*w) / g).collect();
        let mut total: u64 = reduced.iter().sum();
        if total > MAX_TABLE {
            // Scale down, keeping every non-zero weight at least 1.
            for w in reduced.iter_mut() {
                if *w > 0 {
                    *w = (*w * MAX_TABLE / total).max(1);
                }
            }
            total = reduced.iter().sum();
        }
        let mut table = Vec::with_capacity(total as usize);
        let mut current = vec![0i64; reduced.len()];
        for _ in 0..total {
            let mut best = 0;
            for (i, w) in reduced.iter().enumerate() {
                current[i] += *w as i64;
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total as i64;
            table.push(best as u16);
        }
        let mut acc = 0;
        let cumulative = weights
            .iter()
            .map(|w| {
                acc += u64::from(*w);
                acc
            })
            .collect();
        Split {
            table: table.into_boxed_slice(),
            cumulative,
            next: AtomicUsize::new(0),
        }
    }

    /// The next target in weighted order.
    pub fn pick(&self) -> usize {
        if self.table.len() <= 1 {
            return self.table.first().map_or(0, |t| *t as usize);
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.table[n % self.table.len()] as usize
    }

    /// The target for a sticky key's hash: always the same for the same hash and weights.
    pub fn pick_sticky(&self, hash: u64) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0).max(1);
        let point = hash % total;
        self.cumulative.iter().position(|c| point < *c).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(split: &Split, n: usize, targets: usize) -> Vec<usize> {
        let mut c = vec![0; targets];
        for _ in 0..n {
            c[split.pick()] += 1;
        }
        c
    }

    #[test]
    fn ninety_ten_holds_over_every_window_of_a_hundred() {
        let s = Split::new(&[90, 10]);
        for _ in 0..5 {
            assert_eq!(count(&s, 100, 2), vec![90, 10]);
        }
        // Smooth: the secondary's ten picks are spread out, never two in a row.
        let seq: Vec<usize> = (0..100).map(|_| s.pick()).collect();
        assert!(seq.windows(2).all(|w| !(w[0] == 1 && w[1] == 1)));
    }

    #[test]
    fn weights_reduce_and_zero_weight_never_picked() {
        let s = Split::new(&[2000, 0, 1000]);
        assert_eq!(s.table.len(), 3);
        assert_eq!(count(&s, 300, 3), vec![200, 0, 100]);
        let big = Split::new(&[10_000, 9_999, 1]);
        let c = count(&big, 20_000, 3);
        assert!(c[2] >= 1, "{c:?}");
    }

    #[test]
    fn sticky_is_stable_and_proportional() {
        let s = Split::new(&[90, 10]);
        let mut sides = [0usize; 2];
        for key in 0..10_000u64 {
            let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let side = s.pick_sticky(h);
            assert_eq!(side, s.pick_sticky(h));
            sides[side] += 1;
        }
        assert!((8_700..=9_300).contains(&sides[0]), "{sides:?}");
        // Moving to 50/50 only moves keys from primary to secondary.
        let s2 = Split::new(&[50, 50]);
        for key in 0..1000u64 {
            let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            if s.pick_sticky(h) == 1 {
                assert_eq!(s2.pick_sticky(h), 1);
            }
        }
    }
}
