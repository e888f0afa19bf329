//! The simulated server's prefix (KV) cache, as vLLM's automatic prefix caching and SGLang's
//! radix cache behave closely enough for a balancer to be judged by: the prompt is cut into
//! blocks, each block named by the hash of everything up to its end (so a block is reused only
//! after the same prefix), kept in an LRU of `prefix_cache_blocks`. The first token costs
//! `prefill_per_block` per block not in the cache, and a sixteenth of that per cached block.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

/// What a request found in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Prefill {
    /// Blocks of the prompt.
    pub blocks: u64,
    /// Of which were cached (a prefix of the prompt).
    pub hits: u64,
}

/// An LRU of prompt-prefix blocks, with hit counters.
#[derive(Debug)]
pub(crate) struct PrefixCache {
    capacity: usize,
    block_bytes: usize,
    lru: Mutex<Lru>,
    blocks: AtomicU64,
    hits: AtomicU64,
}

#[derive(Debug, Default)]
struct Lru {
    tick: u64,
    /// Block hash → the tick it was last used at.
    used: HashMap<u64, u64>,
    /// Tick → block hash, oldest first.
    order: BTreeMap<u64, u64>,
}

impl PrefixCache {
    /// A cache of `capacity` blocks of `block_bytes` (at least 1 byte).
    pub(crate) fn new(capacity: usize, block_bytes: usize) -> Self {
        PrefixCache {
            capacity,
            block_bytes: block_bytes.max(1),
            lru: Mutex::default(),
            blocks: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        }
    }

    /// Look the prompt of `body` up and cache its blocks.
    pub(crate) fn admit(&self, body: &Value) -> Prefill {
        let text = prompt_text(body);
        let mut hasher = std::hash::DefaultHasher::new();
        let mut hashes = Vec::with_capacity(text.len() / self.block_bytes + 1);
        for block in text.chunks(self.block_bytes) {
            block.hash(&mut hasher);
            hashes.push(hasher.finish());
        }
        let mut lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
        let hits = hashes
            .iter()
            .take_while(|h| lru.used.contains_key(h))
            .count() as u64;
        for h in &hashes {
            lru.touch(*h, self.capacity);
        }
        drop(lru);
        let p = Prefill {
            blocks: hashes.len() as u64,
            hits,
        };
        self.blocks.fetch_add(p.blocks, Ordering::Relaxed);
        self.hits.fetch_add(p.hits, Ordering::Relaxed);
        p
    }

    /// Blocks looked up and found since the start.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.blocks.load(Ordering::Relaxed),
            self.hits.load(Ordering::Relaxed),
        )
    }

    /// Share of the capacity in use, 0 to 1 (0 for a cache of no blocks).
    pub(crate) fn usage(&self) -> f64 {
        if self.capacity == 0 {
            return 0.0;
        }
        let lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
        lru.used.len() as f64 / self.capacity as f64
    }
}

impl Prefill {
    /// The prefill part of the time to the first token.
    pub(crate) fn delay(&self, per_block: Duration) -> Duration {
        let missed = u32::try_from(self.blocks - self.hits).unwrap_or(u32::MAX);
        let hit = u32::try_from(self.hits).unwrap_or(u32::MAX);
        per_block
            .saturating_mul(missed)
            .saturating_add((per_block / 16).saturating_mul(hit))
    }
}

impl Lru {
    fn touch(&mut self, h: u64, capacity: usize) {
        if capacity == 0 {
            return;
        }
        self.tick += 1;
        if let Some(old) = self.used.insert(h, self.tick) {
            self.order.remove(&old);
        }
        self.order.insert(self.tick, h);
        while self.used.len() > capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.used.remove(&oldest);
        }
    }
}

/// The prompt as the model sees it: each chat message's role and content in order, or `prompt`.
fn prompt_text(body: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let content = |v: &Value, out: &mut Vec<u8>| match v {
        Value::String(s) => out.extend_from_slice(s.as_bytes()),
        other => out.extend_from_slice(other.to_string().as_bytes()),
    };
    if let Some(messages) = body.get("messages").and_then(Value::as_array) {
        for m in messages {
            if let Some(role) = m.get("role").and_then(Value::as_str) {
                out.extend_from_slice(role.as_bytes());
            }
            out.push(b'\n');
            if let Some(c) = m.get("content") {
                content(c, &mut out);
            }
            out.push(b'\n');
        }
    } else if let Some(p) = body.get("prompt") {
        content(p, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat(system: &str, user: &str) -> Value {
        json!({"messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]})
    }

    #[test]
    fn a_shared_prefix_hits_and_the_lru_evicts() {
        let c = PrefixCache::new(20, 64);
        let sys = "s".repeat(640);
        let first = c.admit(&chat(&sys, "question one"));
        assert_eq!(first.hits, 0);
        assert!(first.blocks >= 10);
        let second = c.admit(&chat(&sys, "another question"));
        assert_eq!(second.hits, 10, "the system prompt's ten full blocks");
        assert!(second.delay(Duration::from_millis(16)) < first.delay(Duration::from_millis(16)));
        // Two other long prompts push the first one out.
        c.admit(&chat(&"x".repeat(640), "q"));
        c.admit(&chat(&"y".repeat(640), "q"));
        assert_eq!(c.admit(&chat(&sys, "q")).hits, 0);
        assert!(c.usage() <= 1.0 && c.usage() > 0.9);
        let off = PrefixCache::new(0, 64);
        off.admit(&chat(&sys, "q"));
        assert_eq!(off.admit(&chat(&sys, "q")).hits, 0);
    }
}
