//! The in-memory store of one route's answers, bounded in bytes, with TinyUFO deciding what stays.
//!
//! TinyUFO (TinyLFU admission, S3-FIFO eviction) keeps a hot set well: a prompt asked once does
//! not push out one asked a thousand times. Each entry weighs its size in KiB rounded up and the
//! store's weight limit is `max_bytes` in KiB rounded down, so the stored bytes never exceed
//! `max_bytes`. TinyUFO keeps only a 64-bit hash of the key, so every entry carries its full
//! SHA-256 key and a lookup that finds another key's entry is a miss.
//!
//! Reads are lock-free. Writes (one per upstream answer, so rare next to reads) take a mutex, so
//! that TinyUFO's weight accounting and the byte and entry counts here are exact: concurrent
//! admissions could otherwise each make room for themselves and together overshoot the bound.
//! Entries are not dropped when they expire: an expired entry may still answer when no upstream
//! can (`stale_if_error`); past that window it is dead weight that the next answer for its key
//! replaces, or that eviction pushes out first (it is never read again).

use super::key::CacheKey;
use super::store::{CacheStore, Entry, Found, Inserted};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tinyufo::TinyUfo;
use tokio::time::Instant;

type Ufo = TinyUfo<CacheKey, Arc<Entry>>;

/// A route's answers in this process's memory (the first tier).
pub struct MemoryStore {
    ufo: ArcSwap<Ufo>,
    writes: Mutex<()>,
    max_bytes: u64,
    /// `max_bytes` in KiB, rounded down.
    weight_limit: usize,
    bytes: AtomicU64,
    entries: AtomicU64,
}

impl MemoryStore {
    /// An empty store holding at most `max_bytes` bytes.
    pub fn new(max_bytes: u64) -> MemoryStore {
        let weight_limit = (max_bytes / 1024) as usize;
        MemoryStore {
            ufo: ArcSwap::from_pointee(new_ufo(weight_limit)),
            writes: Mutex::new(()),
            max_bytes,
            weight_limit,
            bytes: AtomicU64::new(0),
            entries: AtomicU64::new(0),
        }
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Bytes held now (always at most `max_bytes`).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn entries(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }

    /// The entry for `key`, if there is one.
    pub fn get(&self, key: &CacheKey) -> Option<Arc<Entry>> {
        self.ufo.load().get(key).filter(|e| e.key == *key)
    }

    /// Look `key` up and judge its age against `ttl` and `stale_if_error`.
    pub fn lookup(
        &self,
        key: &CacheKey,
        now: Instant,
        ttl: Duration,
        stale_if_error: Duration,
    ) -> Found {
        let Some(entry) = self.get(key) else {
            return Found::Missing;
        };
        let age = now.saturating_duration_since(entry.stored_at);
        if age < ttl {
            Found::Fresh(entry, age)
        } else if age < ttl.saturating_add(stale_if_error) {
            Found::Expired(entry, age)
        } else {
            Found::Missing
        }
    }

    /// Store `entry`, replacing any entry with its key and evicting others as needed to stay
    /// under `max_bytes`.
    pub fn insert(&self, entry: Arc<Entry>) -> Inserted {
        let weight = entry.size().div_ceil(1024);
        if weight > self.weight_limit || weight > usize::from(u16::MAX) {
            return Inserted::default();
        }
        let _one_writer = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        let ufo = self.ufo.load();
        // TinyUFO replaces the data under the same (hashed) key in place without handing the
        // old data back: account for it here. (Its `remove` is never used: a removed key stays
        // in TinyUFO's queues, and putting it again would queue it twice and upset its weights.)
        if let Some(old) = ufo.get(&entry.key) {
            self.forget(&old);
        }
        let mut out = Inserted {
            stored: true,
            evicted: 0,
        };
        for kv in ufo.put(entry.key, entry.clone(), weight as u16) {
            if Arc::ptr_eq(&kv.data, &entry) {
                // Refused by TinyLFU (the entry it would have evicted is more popular), or
                // evicted at once to make room.
                out.stored = false;
            } else {
                self.forget(&kv.data);
                out.evicted += 1;
            }
        }
        if out.stored {
            self.bytes.fetch_add(entry.size() as u64, Ordering::Relaxed);
            self.entries.fetch_add(1, Ordering::Relaxed);
        }
        out
    }

    /// Drop every entry; returns how many entries and bytes were dropped.
    pub fn clear(&self) -> (u64, u64) {
        let _one_writer = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        self.ufo.store(Arc::new(new_ufo(self.weight_limit)));
        (
            self.entries.swap(0, Ordering::Relaxed),
            self.bytes.swap(0, Ordering::Relaxed),
        )
    }

    fn forget(&self, e: &Entry) {
        self.bytes.fetch_sub(e.size() as u64, Ordering::Relaxed);
        self.entries.fetch_sub(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl CacheStore for MemoryStore {
    async fn lookup(
        &self,
        key: &CacheKey,
        now: Instant,
        ttl: Duration,
        stale_if_error: Duration,
    ) -> Found {
        MemoryStore::lookup(self, key, now, ttl, stale_if_error)
    }

    async fn insert(&self, entry: Arc<Entry>, _keep_for: Duration) -> Inserted {
        MemoryStore::insert(self, entry)
    }

    fn clear(&self) -> (u64, u64) {
        MemoryStore::clear(self)
    }

    fn bytes(&self) -> u64 {
        MemoryStore::bytes(self)
    }

    fn entries(&self) -> u64 {
        MemoryStore::entries(self)
    }

    fn max_bytes(&self) -> u64 {
        MemoryStore::max_bytes(self)
    }
}

/// TinyUFO sizes its frequency sketch and table for an expected entry count: assume answers of
/// about 4 KiB, within sane limits.
fn new_ufo(weight_limit: usize) -> Ufo {
    TinyUfo::new(weight_limit, (weight_limit / 4).clamp(16, 1 << 16))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::HeaderValue;

    fn key(n: u32) -> CacheKey {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&n.to_le_bytes());
        CacheKey(k)
    }

    fn entry(n: u32, body_len: usize, at: Instant) -> Arc<Entry> {
        Arc::new(Entry::new(
            key(n),
            at,
            vec![(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            Bytes::from(vec![b'x'; body_len]),
            false,
        ))
    }

    #[test]
    fn stored_bytes_never_exceed_the_bound() {
        let max = 64 * 1024;
        let store = MemoryStore::new(max);
        let now = Instant::now();
        let mut evicted = 0;
        for n in 0..500 {
            let r = store.insert(entry(n, 1000 + (n as usize * 37) % 3000, now));
            evicted += r.evicted;
            assert!(store.bytes() <= max, "{} > {max} after {n}", store.bytes());
        }
        assert!(evicted > 0, "filling past the bound must evict");
        assert!(store.entries() > 5 && store.entries() < 64);
        // The counts match what is really there.
        let (mut bytes, mut entries) = (0, 0);
        for n in 0..500 {
            if let Some(e) = store.get(&key(n)) {
                bytes += e.size() as u64;
                entries += 1;
            }
        }
        assert_eq!((bytes, entries), (store.bytes(), store.entries()));
    }

    #[test]
    fn concurrent_writers_keep_the_bound() {
        let max = 32 * 1024;
        let store = Arc::new(MemoryStore::new(max));
        let now = Instant::now();
        let threads: Vec<_> = (0..4u32)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for n in 0..300 {
                        store.insert(entry(t * 1000 + n, 1500, now));
                        assert!(store.bytes() <= max);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(store.bytes() <= max && store.entries() > 0);
    }

    #[test]
    fn an_entry_larger_than_the_store_is_refused() {
        let store = MemoryStore::new(4 * 1024);
        let r = store.insert(entry(1, 5000, Instant::now()));
        assert!(!r.stored);
        assert_eq!((store.bytes(), store.entries()), (0, 0));
    }

    #[test]
    fn replacing_a_key_accounts_for_the_old_entry() {
        let store = MemoryStore::new(1024 * 1024);
        let now = Instant::now();
        store.insert(entry(1, 1000, now));
        store.insert(entry(1, 3000, now));
        assert_eq!(store.entries(), 1);
        assert_eq!(store.bytes(), store.get(&key(1)).unwrap().size() as u64);
        assert_eq!(store.get(&key(1)).unwrap().body.len(), 3000);
        store.insert(entry(2, 10, now));
        let total = store.bytes();
        assert_eq!(store.clear(), (2, total));
        assert!(store.get(&key(1)).is_none() && store.get(&key(2)).is_none());
        assert_eq!((store.bytes(), store.entries()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn freshness_ttl_and_stale_window() {
        let store = MemoryStore::new(1024 * 1024);
        let ttl = Duration::from_secs(60);
        let stale = Duration::from_secs(30);
        store.insert(entry(1, 10, Instant::now()));
        let at = |s| Instant::now() + Duration::from_secs(s);
        assert!(
            matches!(store.lookup(&key(1), at(0), ttl, stale), Found::Fresh(_, a) if a.is_zero())
        );
        assert!(
            matches!(store.lookup(&key(1), at(59), ttl, stale), Found::Fresh(_, a) if a.as_secs() == 59)
        );
        assert!(matches!(
            store.lookup(&key(1), at(60), ttl, stale),
            Found::Expired(..)
        ));
        assert!(matches!(
            store.lookup(&key(1), at(89), ttl, stale),
            Found::Expired(..)
        ));
        assert!(matches!(
            store.lookup(&key(2), at(0), ttl, stale),
            Found::Missing
        ));
        // Past ttl + stale_if_error the entry no longer answers, until replaced.
        assert!(matches!(
            store.lookup(&key(1), at(90), ttl, stale),
            Found::Missing
        ));
        store.insert(entry(1, 20, Instant::now()));
        assert!(matches!(
            store.lookup(&key(1), at(90), ttl, stale),
            Found::Missing
        ));
        assert!(
            matches!(store.lookup(&key(1), at(1), ttl, stale), Found::Fresh(e, _) if e.body.len() == 20)
        );
        assert_eq!(store.entries(), 1);
        // Without stale_if_error an entry is usable only while fresh.
        store.insert(entry(3, 10, Instant::now()));
        tokio::time::advance(Duration::from_secs(61)).await;
        let now = Instant::now();
        assert!(matches!(
            store.lookup(&key(3), now, ttl, Duration::ZERO),
            Found::Missing
        ));
    }
}
