//! What a route's cache keeps and the seam for where it keeps it.
//!
//! [`CacheStore`] is what the cache stage asks of a store: look an answer up by key and age,
//! insert one, clear them all, and say how much it holds. The in-memory store ([`MemoryStore`],
//! TinyUFO) is the first tier; with a shared tier, [`TieredStore`] puts Redis behind it (asked
//! when memory misses, written through), chosen per route when the snapshot is built. The stage holds the store
//! as `Arc<dyn CacheStore>`: one virtual call per lookup, nothing next to the key's hashing.
//!
//! [`MemoryStore`]: super::memory::MemoryStore
//! [`TieredStore`]: super::tiered::TieredStore

use super::key::CacheKey;
use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Where one route's answers are kept.
#[async_trait]
pub trait CacheStore: Send + Sync {
    /// Look `key` up and judge its age against `ttl` and `stale_if_error`.
    async fn lookup(
        &self,
        key: &CacheKey,
        now: Instant,
        ttl: Duration,
        stale_if_error: Duration,
    ) -> Found;
    /// Store `entry`, replacing any entry with its key, evicting others to stay in bounds;
    /// `keep_for` is how long it may answer (`ttl + stale_if_error`).
    async fn insert(&self, entry: Arc<Entry>, keep_for: Duration) -> Inserted;
    /// Drop every entry; returns how many entries and bytes were dropped.
    fn clear(&self) -> (u64, u64);
    /// Bytes held now (always at most `max_bytes`).
    fn bytes(&self) -> u64;
    /// Entries held now.
    fn entries(&self) -> u64;
    /// The bound on the bytes held.
    fn max_bytes(&self) -> u64;
}

/// Bookkeeping counted into each entry's size besides its headers and body.
const ENTRY_OVERHEAD: usize = 128;

/// A stored answer (always a complete 200).
#[derive(Debug)]
pub struct Entry {
    pub key: CacheKey,
    pub stored_at: Instant,
    /// End-to-end response headers worth replaying (see `serve::keep_header`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// A server-sent-events answer (replayed chunked, as `text/event-stream`).
    pub sse: bool,
    size: usize,
}

impl Entry {
    pub fn new(
        key: CacheKey,
        stored_at: Instant,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
        sse: bool,
    ) -> Entry {
        let size = entry_size(&headers, body.len());
        Entry {
            key,
            stored_at,
            headers,
            body,
            sse,
            size,
        }
    }

    /// Bytes this entry counts against `max_bytes`.
    pub fn size(&self) -> usize {
        self.size
    }
}

/// The size an entry with these headers and a body of `body_len` bytes would have.
pub fn entry_size(headers: &[(HeaderName, HeaderValue)], body_len: usize) -> usize {
    let head: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    ENTRY_OVERHEAD + head + body_len
}

/// What a lookup found.
#[derive(Debug, Clone)]
pub enum Found {
    /// Younger than `ttl`.
    Fresh(Arc<Entry>, Duration),
    /// Past `ttl` but within `ttl + stale_if_error`: not served, except when no upstream can.
    Expired(Arc<Entry>, Duration),
    Missing,
}

/// What an insert did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    /// The entry is in the store (TinyLFU may refuse a newcomer less popular than its victim).
    pub stored: bool,
    pub evicted: u64,
}
