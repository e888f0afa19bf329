//! The edge cache: common prompts answered in a fraction of a millisecond instead of a model's
//! seconds, without the usual mistakes (keys on raw body text, keys that ignore the model or the
//! sampling parameters, answers shared across tenants, unbounded memory, streams never cached).
//!
//! On a route with `cache`, the request path calls [`admit`] once the body is read:
//!
//! ```text
//! not deterministic / no-store -> BYPASS: on to the tries, nothing recorded
//! key (key.rs) -> store (store.rs): fresh? -> HIT, replayed here
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
//! settings are read from the snapshot per request and change without losing entries.

mod coalesce;
pub mod key;
mod pass;
mod serve;
pub mod store;
pub mod warm;

use crate::config::CacheConfig;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use coalesce::Flights;
use http::HeaderName;
use prometheus::{IntCounter, IntGauge};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use store::{Entry, Store};

pub use pass::{admit, Admit, Pass};

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
const COALESCED: usize = 5;

fn result_index(s: Status) -> usize {
    match s {
        Status::Hit => 0,
        Status::Miss => 1,
        Status::Expired => 2,
        Status::Stale => 3,
        Status::Bypass => 4,
    }
}

/// The settings that shape a store: when they change on reload, the route gets a new store.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shape {
    max_bytes: u64,
    vary_headers: Vec<HeaderName>,
}

impl Shape {
    fn of(c: &CacheConfig) -> Shape {
        Shape {
            max_bytes: c.max_bytes,
            vary_headers: c.vary_headers.clone(),
        }
    }
}

/// One route's cache: its store, its flights and its metric handles.
pub struct RouteCache {
    route: String,
    shape: Shape,
    pub store: Store,
    flights: Flights,
    results: [IntCounter; 6],
    bytes: IntGauge,
    entries: IntGauge,
    evictions: IntCounter,
    /// Replaced or dropped by a reload: requests still using it must not move the gauges.
    retired: AtomicBool,
}

impl RouteCache {
    fn new(route: &str, cfg: &CacheConfig, metrics: &Metrics) -> RouteCache {
        let c = RouteCache {
            route: route.to_string(),
            shape: Shape::of(cfg),
            store: Store::new(cfg.max_bytes),
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

    fn put(&self, entry: Entry) {
        let r = self.store.insert(Arc::new(entry));
        self.evictions.inc_by(r.evicted);
        self.update_gauges();
    }

    /// Drop every entry; returns the entries and bytes dropped.
    pub fn purge(&self) -> (u64, u64) {
        let dropped = self.store.clear();
        self.update_gauges();
        dropped
    }

    fn status_json(&self) -> Value {
        json!({
            "route": self.route,
            "entries": self.store.entries(),
            "bytes": self.store.bytes(),
            "max_bytes": self.store.max_bytes(),
            "in_flight": self.flights.len(),
            "hits": self.results[0].get(),
            "misses": self.results[1].get() + self.results[2].get(),
            "coalesced": self.results[COALESCED].get(),
            "stale": self.results[3].get(),
            "bypassed": self.results[4].get(),
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
    /// Give each cached route of `snap` its store: the one it had while `max_bytes` and
    /// `vary_headers` are unchanged, else a new, empty one. Stores of routes that lost their
    /// cache are dropped (once the last request using them ends).
    pub fn attach(&self, snap: &mut Snapshot, metrics: &Metrics) {
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = HashMap::new();
        for route in &mut snap.routes {
            let Some(cfg) = &route.cfg.cache else {
                continue;
            };
            let name = route.cfg.name.as_str();
            let store = match stores.remove(name) {
                Some(s) if s.shape == Shape::of(cfg) => s,
                old => {
                    if let Some(old) = old {
                        old.retired.store(true, Ordering::Relaxed);
                        log::info!("cache of route {name}: settings changed, starting empty");
                    }
                    Arc::new(RouteCache::new(name, cfg, metrics))
                }
            };
            route.cache = Some(store.clone());
            next.insert(name.to_string(), store);
        }
        for (name, old) in stores.drain() {
            old.retired.store(true, Ordering::Relaxed);
            let _ = metrics.cache_bytes.remove_label_values(&[&name]);
            let _ = metrics.cache_entries.remove_label_values(&[&name]);
        }
        *stores = next;
    }
}

/// `POST /cache/purge[?route=NAME]`: `None` when the named route has no cache.
pub fn purge(snap: &Snapshot, route: Option<&str>) -> Option<Value> {
    let mut purged = Vec::new();
    for r in &snap.routes {
        let Some(c) = &r.cache else { continue };
        if route.is_some_and(|name| name != r.cfg.name) {
            continue;
        }
        let (entries, bytes) = c.purge();
        log::info!("cache of route {}: purged {entries} entries", r.cfg.name);
        purged.push(json!({"route": r.cfg.name, "entries": entries, "bytes": bytes}));
    }
    if route.is_some() && purged.is_empty() {
        return None;
    }
    Some(json!({"result": "ok", "purged": purged}))
}

/// The `cache` part of `/status`: totals and each cached route.
pub fn status_json(snap: &Snapshot) -> Value {
    let routes: Vec<Value> = snap
        .routes
        .iter()
        .filter_map(|r| r.cache.as_ref().map(|c| c.status_json()))
        .collect();
    let sum = |k: &str| routes.iter().filter_map(|r| r[k].as_u64()).sum::<u64>();
    json!({
        "entries": sum("entries"),
        "bytes": sum("bytes"),
        "hits": sum("hits"),
        "misses": sum("misses"),
        "routes": routes,
    })
}
