//! A hash that is the same in every switchyard process, on every platform and in every release:
//! FNV-1a over the bytes, finished with MurmurHash3's 64-bit mixer. Consistent hashing needs
//! this (std's `DefaultHasher` may change between Rust releases), so that every instance in
//! front of a cluster maps a key to the same peer without sharing any state.

/// FNV-1a, 64 bits, with a mixed finish.
#[derive(Debug, Clone, Copy)]
pub struct StableHasher(u64);

impl Default for StableHasher {
    fn default() -> Self {
        StableHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl StableHasher {
    /// Feed `bytes`.
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The hash of everything fed so far.
    pub fn finish(&self) -> u64 {
        mix(self.0)
    }
}

/// The stable hash of `bytes`.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h = StableHasher::default();
    h.write(bytes);
    h.finish()
}

/// MurmurHash3's finaliser: a bijection on `u64` whose every output bit depends on every input bit.
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_across_releases() {
        // Pinned: a change here moves every key of every running cluster.
        assert_eq!(stable_hash(b""), mix(0xcbf2_9ce4_8422_2325));
        // The published FNV-1a test vectors, then the mixer's known fixed point.
        let mut a = StableHasher::default();
        a.write(b"a");
        assert_eq!(a.0, 0xaf63_dc4c_8601_ec8c);
        let mut foobar = StableHasher::default();
        foobar.write(b"foobar");
        assert_eq!(foobar.0, 0x8594_4171_f739_67e8);
        assert_eq!(mix(0), 0);
        assert_eq!(stable_hash(b"a"), mix(0xaf63_dc4c_8601_ec8c));
        let mut h = StableHasher::default();
        h.write(b"system:");
        h.write(b"you are helpful");
        assert_eq!(h.finish(), stable_hash(b"system:you are helpful"));
    }
}
