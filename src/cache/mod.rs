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
//! The [`Pass`] rides along: the relay tees the committed answer into it (bounded by
//! `max_entry_bytes`), it publishes the answer to the followers, and stores it when it completed
//! (a stream only when it ended with `data: [DONE]`). When nothing upstream can serve, the pass
//! answers with an expired entry still within `stale_if_error` (STALE) before any fallback.
//!
//! Each route with a cache has its own store and flights ([`RouteCache`]), kept across reloads
//! in [`Caches`] while the route's `max_bytes` and `vary_headers` stay the same; the other
//! settings are read from the snapshot per request and change without losing entries.

mod coalesce;
pub mod key;
mod serve;
pub mod store;
pub mod warm;

use crate::config::CacheConfig;
use crate::metrics::Metrics;
use crate::snapshot::{Route, Snapshot};
use bytes::Bytes;
use coalesce::{FlightEnd, Flights, Head, Role};
use http::HeaderName;
use key::{CacheKey, RequestControl};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use prometheus::{IntCounter, IntGauge};
use serde_json::{json, Value};
use serve::Followed;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use store::{Entry, Found, Store};
use tokio::time::Instant;

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

/// What the request path does after [`admit`].
pub enum Admit<'a> {
    /// The cache answered (HIT or a coalesced answer); the request is over.
    Answered {
        status: u16,
        /// The answer was cut short: do not reuse the client connection.
        cut: bool,
    },
    /// Go on to the tries, with the pass that records and stores the answer.
    Upstream(Pass<'a>),
}

/// The cache stage of a request on a cached route: answer it from the store, follow an identical
/// request in flight, or let it go upstream with a [`Pass`].
pub async fn admit<'a>(
    route: &'a Route,
    session: &mut Session,
    body: &Bytes,
    request_id: &str,
    deadline: Instant,
) -> Result<Admit<'a>> {
    let (Some(cache), Some(cfg)) = (route.cache.as_deref(), route.cfg.cache.as_ref()) else {
        return Err(Error::explain(
            ErrorType::InternalError,
            "cache stage on a route without cache",
        ));
    };
    let bypass = || Admit::Upstream(Pass::new(cache, cfg, Status::Bypass, None));
    let req = session.req_header();
    let control = key::request_control(&req.headers);
    if control == RequestControl::NoStore {
        return Ok(bypass());
    }
    let json = key::parse_json(body);
    if cfg.deterministic_only && !key::deterministic(json.as_ref()) {
        return Ok(bypass());
    }
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let k = key::key(
        &route.cfg.name,
        &req.method,
        path,
        &req.headers,
        &cfg.vary_headers,
        body,
        json.as_ref(),
    );
    if control == RequestControl::NoCache {
        return Ok(Admit::Upstream(Pass::new(
            cache,
            cfg,
            Status::Miss,
            Some(k),
        )));
    }
    let status = match cache
        .store
        .lookup(&k, Instant::now(), cfg.ttl, cfg.stale_if_error)
    {
        Found::Fresh(e, age) => {
            cache.results[result_index(Status::Hit)].inc();
            serve::entry(session, &e, age, Status::Hit, request_id).await?;
            return Ok(Admit::Answered {
                status: 200,
                cut: false,
            });
        }
        Found::Expired(..) => Status::Expired,
        Found::Missing => Status::Miss,
    };
    match cache.flights.join(k) {
        Role::Leader(flight) => {
            let mut pass = Pass::new(cache, cfg, status, Some(k));
            pass.leader = Some(flight);
            Ok(Admit::Upstream(pass))
        }
        Role::Follower(f) => {
            let idle = route.cfg.timeouts.idle;
            let t = cfg.lock_timeout;
            match serve::follow(session, f, status, request_id, t, idle, deadline).await? {
                Followed::OnOwn => Ok(Admit::Upstream(Pass::new(cache, cfg, status, Some(k)))),
                done => {
                    cache.results[COALESCED].inc();
                    Ok(Admit::Answered {
                        status: 200,
                        cut: matches!(done, Followed::Cut),
                    })
                }
            }
        }
    }
}

/// What is being recorded of a committed answer.
struct Recording {
    head: Arc<Head>,
    chunks: Vec<Bytes>,
    len: usize,
    /// Entry size so far (headers and bookkeeping included).
    size: usize,
}

/// A cacheable request on its way upstream: marks the answer with `x-cache-status`, records it
/// for the store, publishes it to coalesced followers, and can answer stale when nothing else
/// can. Counted in `switchyard_cache_requests_total` when dropped, by its final status.
pub struct Pass<'a> {
    cache: &'a RouteCache,
    cfg: &'a CacheConfig,
    status: Status,
    /// `None` for BYPASS.
    key: Option<CacheKey>,
    /// Set when this request leads a flight.
    leader: Option<Arc<coalesce::Flight>>,
    recording: Option<Recording>,
}

impl<'a> Pass<'a> {
    fn new(
        cache: &'a RouteCache,
        cfg: &'a CacheConfig,
        status: Status,
        key: Option<CacheKey>,
    ) -> Self {
        Pass {
            cache,
            cfg,
            status,
            key,
            leader: None,
            recording: None,
        }
    }

    /// The `x-cache-status` header every answer on a cached route carries.
    pub fn status_header(&self) -> (&'static str, String) {
        ("x-cache-status", self.status.header().to_string())
    }

    /// The committed answer's header, before it is written: decide whether to record it, share
    /// it with followers, and mark it.
    pub fn head(&mut self, header: &mut ResponseHeader) {
        if self.key.is_some() {
            let length = header
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let storable = header.status == 200
                && key::response_storable(&header.headers)
                && length.is_none_or(|n| n <= self.cfg.max_entry_bytes);
            if storable {
                let headers = serve::kept_headers(header);
                let sse = header
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("text/event-stream"));
                let size = store::entry_size(&headers, 0);
                let head = Arc::new(Head {
                    headers,
                    content_length: length,
                    sse,
                });
                if let Some(f) = &self.leader {
                    f.publish_head(head.clone());
                }
                self.recording = Some(Recording {
                    head,
                    chunks: Vec::new(),
                    len: 0,
                    size,
                });
            } else {
                self.release();
            }
        }
        let _ = header.insert_header("x-cache-status", self.status.header());
    }

    /// Still recording: worth reading the upstream to its end even if the client has left.
    pub fn recording(&self) -> bool {
        self.recording.is_some()
    }

    /// A body chunk of the committed answer.
    pub fn chunk(&mut self, chunk: &Bytes) {
        if let Some(f) = &self.leader {
            f.publish_chunk(chunk.clone());
        }
        let Some(rec) = &mut self.recording else {
            return;
        };
        rec.size += chunk.len();
        if rec.size as u64 > self.cfg.max_entry_bytes {
            // Too large to store: stop recording; followers already on it still get the rest,
            // but nobody new joins a flight whose answer will not be stored.
            self.recording = None;
            if let (Some(f), Some(k)) = (&self.leader, &self.key) {
                self.cache.flights.leave(k, f);
            }
            return;
        }
        rec.len += chunk.len();
        rec.chunks.push(chunk.clone());
    }

    /// The committed answer ended; `complete` when the upstream sent all of it.
    pub fn end(&mut self, complete: bool) {
        if let (true, Some(rec), Some(k)) = (complete, self.recording.take(), self.key) {
            let body = serve::concat(&rec.chunks, rec.len);
            if !rec.head.sse || serve::sse_done(&body) {
                let headers = rec.head.headers.clone();
                let entry = Entry::new(k, Instant::now(), headers, body, rec.head.sse);
                // Stored before the flight leaves the board: a request arriving now finds one
                // or the other.
                self.cache.put(entry);
            }
        }
        self.recording = None;
        if let Some(f) = self.leader.take() {
            f.finish(if complete {
                FlightEnd::Complete
            } else {
                FlightEnd::Interrupted
            });
            if let Some(k) = &self.key {
                self.cache.flights.leave(k, &f);
            }
        }
    }

    /// Send this request's followers on their own (no shareable answer).
    fn release(&mut self) {
        if let Some(f) = self.leader.take() {
            f.finish(FlightEnd::Released);
            if let Some(k) = &self.key {
                self.cache.flights.leave(k, &f);
            }
        }
    }

    /// No upstream could answer: serve an expired entry within `stale_if_error` (STALE), or a
    /// fresh one an identical request stored meanwhile (HIT). Returns whether it answered.
    pub async fn serve_stored(&mut self, session: &mut Session, request_id: &str) -> Result<bool> {
        self.release();
        let Some(k) = &self.key else {
            return Ok(false);
        };
        let c = self.cfg;
        let (e, age, status) =
            match self
                .cache
                .store
                .lookup(k, Instant::now(), c.ttl, c.stale_if_error)
            {
                Found::Fresh(e, age) => (e, age, Status::Hit),
                Found::Expired(e, age) => (e, age, Status::Stale),
                Found::Missing => return Ok(false),
            };
        self.status = status;
        serve::entry(session, &e, age, status, request_id).await?;
        Ok(true)
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        // A leader that never committed (every try failed) releases its followers.
        if let Some(f) = self.leader.take() {
            f.finish(if f.has_head() {
                FlightEnd::Interrupted
            } else {
                FlightEnd::Released
            });
            if let Some(k) = &self.key {
                self.cache.flights.leave(k, &f);
            }
        }
        self.cache.results[result_index(self.status)].inc();
    }
}
