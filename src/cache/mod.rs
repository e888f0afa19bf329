//! The edge cache: common prompts answered in a fraction of a millisecond instead of a model's
//! seconds, without the usual mistakes (keys on raw body text, keys that ignore the model or the
//! sampling parameters, answers shared across tenants, unbounded memory, streams never cached).
//!
//! On a route with `cache`, the request path calls [`lookup`] once the body is read:
//!
//! ```text
//! not deterministic / no-store -> BYPASS: on to the tries, nothing recorded
//! key (key.rs) -> store (store.rs, memory.rs): fresh? -> HIT, replayed here
//!   else join the key's flight (coalesce.rs): follower? -> the leader's answer, as it arrives
//!   else (leader, or released follower) -> MISS / EXPIRED: on to the tries with a [`Pass`]
//! ```
//!
//! The [`Pass`] (pass.rs) rides along: the relay tees the committed answer into it (bounded by
//! `max_entry_bytes`), it publishes the answer to the followers, and stores it when it completed
//! (a stream only when it ended with `data: [DONE]`). When nothing upstream can serve, the pass
//! answers with an expired entry still within `stale_if_error` (STALE) before any fallback.
//!
//! Each route with a cache has its own store and flights ([`RouteCache`]), kept across reloads
//! in [`Caches`] while the route's `max_bytes` and `vary_headers` stay the same; the other
//! settings are read from the snapshot per request and change without losing entries. Warming
//! the cache at start is a background service (`services::warm`).

mod coalesce;
pub mod key;
pub mod memory;
mod pass;
mod serve;
pub mod store;
pub mod tiered;

use crate::config::CacheConfig;
use crate::metrics::Metrics;
use crate::shared::Tier;
use coalesce::Flights;
use http::HeaderName;
use memory::MemoryStore;
use prometheus::{IntCounter, IntGauge};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use store::{CacheStore, Entry};

pub use pass::{lookup, Lookup, Pass, Request};
use tiered::TieredStore;

/// Where an answer on a cached route came from (the `x-cache-status` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// A fresh entry.
    Hit,
    /// No entry: the answer came from upstream (directly, or shared with an identical request).
    Miss,
    /// An entry existed but had expired, so the answer came from upstream.
    Expired,
    /// An expired entry, served because no upstream could answer.
    Stale,
    /// Not cacheable (not deterministic, or `cache-control: no-store`).
    Bypass,
}

impl Status {
    pub fn header(self) -> &'static str {
        match self {
            Status::Hit => "HIT",
            Status::Miss => "MISS",
            Status::Expired => "EXPIRED",
            Status::Stale => "STALE",
            Status::Bypass => "BYPASS",
        }
    }
}

/// Metric label values of `switchyard_cache_requests_total`; `coalesced` counts requests that
/// got the answer of an identical request in flight.
const RESULTS: [&str; 6] = ["hit", "miss", "expired", "stale", "bypass", "coalesced"];

/// A result counted in `switchyard_cache_requests_total`: a final status, or `Coalesced`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    Status(Status),
    Coalesced,
}

impl Counted {
    /// Position in [`RESULTS`].
    fn index(self) -> usize {
        match self {
            Counted::Status(Status::Hit) => 0,
            Counted::Status(Status::Miss) => 1,
            Counted::Status(Status::Expired) => 2,
            Counted::Status(Status::Stale) => 3,
            Counted::Status(Status::Bypass) => 4,
            Counted::Coalesced => 5,
        }
    }
}

/// The settings that shape a store: when they change on reload, the route gets a new store.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shape {
    max_bytes: u64,
    vary_headers: Vec<HeaderName>,
    /// The shared tier behind the memory store, by address.
    tier: Option<usize>,
}

impl Shape {
    fn of(c: &CacheConfig, tier: Option<&Arc<Tier>>) -> Shape {
        Shape {
            max_bytes: c.max_bytes,
            vary_headers: c.vary_headers.clone(),
            tier: tier.map(|t| Arc::as_ptr(t) as usize),
        }
    }
}

/// One route's cache: its store, its flights and its metric handles.
pub struct RouteCache {
    route: String,
    shape: Shape,
    /// Where the answers are kept.
    pub store: Arc<dyn CacheStore>,
    flights: Flights,
    results: [IntCounter; 6],
    bytes: IntGauge,
    entries: IntGauge,
    evictions: IntCounter,
    /// Replaced or dropped by a reload: requests still using it must not move the gauges.
    retired: AtomicBool,
}

impl RouteCache {
    fn new(
        route: &str,
        cfg: &CacheConfig,
        metrics: &Metrics,
        tier: Option<&Arc<Tier>>,
    ) -> RouteCache {
        let store: Arc<dyn CacheStore> = match tier {
            Some(t) => Arc::new(TieredStore::new(t.clone(), route, cfg.max_bytes)),
            None => Arc::new(MemoryStore::new(cfg.max_bytes)),
        };
        let c = RouteCache {
            route: route.to_string(),
            shape: Shape::of(cfg, tier),
            store,
            flights: Flights::default(),
            results: RESULTS.map(|r| metrics.cache_requests.with_label_values(&[route, r])),
            bytes: metrics.cache_bytes.with_label_values(&[route]),
            entries: metrics.cache_entries.with_label_values(&[route]),
            evictions: metrics.cache_evictions.with_label_values(&[route]),
            retired: AtomicBool::new(false),
        };
        c.update_gauges();
        c
    }

    fn update_gauges(&self) {
        if !self.retired.load(Ordering::Relaxed) {
            self.bytes.set(self.store.bytes() as i64);
            self.entries.set(self.store.entries() as i64);
        }
    }

    async fn put(&self, entry: Entry, keep_for: std::time::Duration) {
        let r = self.store.insert(Arc::new(entry), keep_for).await;
        self.evictions.inc_by(r.evicted);
        self.update_gauges();
    }

    fn count(&self, c: Counted) {
        self.results[c.index()].inc();
    }

    /// The route this cache belongs to.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// Drop every entry; returns the entries and bytes dropped.
    pub fn purge(&self) -> (u64, u64) {
        let dropped = self.store.clear();
        self.update_gauges();
        dropped
    }

    /// This cache in `/status`.
    pub fn status_json(&self) -> Value {
        let n = |c: Counted| self.results[c.index()].get();
        json!({
            "route": self.route,
            "entries": self.store.entries(),
            "bytes": self.store.bytes(),
            "max_bytes": self.store.max_bytes(),
            "in_flight": self.flights.len(),
            "hits": n(Counted::Status(Status::Hit)),
            "misses": n(Counted::Status(Status::Miss)) + n(Counted::Status(Status::Expired)),
            "coalesced": n(Counted::Coalesced),
            "stale": n(Counted::Status(Status::Stale)),
            "bypassed": n(Counted::Status(Status::Bypass)),
            "evictions": self.evictions.get(),
        })
    }
}

/// The stores of every cached route, by route name; they outlive snapshots.
#[derive(Default)]
pub struct Caches {
    stores: Mutex<HashMap<String, Arc<RouteCache>>>,
}

impl Caches {
    /// The cache of route `name`: the one it had while `max_bytes`, `vary_headers` and its
    /// shared tier are unchanged, else a new, empty one. With `cfg.shared` and a `tier`, the
    /// shared tier is behind its memory store.
    pub fn route(
        &self,
        name: &str,
        cfg: &CacheConfig,
        metrics: &Metrics,
        tier: Option<&Arc<Tier>>,
    ) -> Arc<RouteCache> {
        let tier = tier.filter(|_| cfg.shared);
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = stores.get(name).filter(|s| s.shape == Shape::of(cfg, tier)) {
            return s.clone();
        }
        if let Some(old) = stores.get(name) {
            old.retired.store(true, Ordering::Relaxed);
            log::info!("cache of route {name}: settings changed, starting empty");
        }
        let store = Arc::new(RouteCache::new(name, cfg, metrics, tier));
        stores.insert(name.to_string(), store.clone());
        store
    }

    /// Drop the caches of routes not in `keep` (once the last request using them ends).
    pub fn retain(&self, keep: &HashSet<&str>, metrics: &Metrics) {
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        stores.retain(|name, old| {
            if keep.contains(name.as_str()) {
                return true;
            }
            old.retired.store(true, Ordering::Relaxed);
            let _ = metrics.cache_bytes.remove_label_values(&[name]);
            let _ = metrics.cache_entries.remove_label_values(&[name]);
            false
        });
    }
}
