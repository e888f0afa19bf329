//! One immutable snapshot of everything a request reads that config can change.
//!
//! [`Current`] holds the snapshot in force behind one `ArcSwap`; a request loads it once and uses
//! it to its end, so a reload is a single store and no request ever sees a mix of two configs.
//! State that must outlive a snapshot is not copied in: each peer, key pool, limiter, retry
//! budget and cache comes from the [`Registries`], keyed by stable identity (cluster, name and
//! address; cluster and key; cluster or route name), and is shared with every snapshot that
//! names it.
//!
//! A snapshot is also rebuilt, from the same config, when the address set behind a named peer
//! changes ([`Snapshot::rebuild`], installed by the resolver service): the same single store,
//! without a reload. [`Current::replace`] serialises every build-and-store, so a reload and a
//! rebuild never undo each other.

mod cluster;
mod registries;
mod route;

pub use cluster::{Cluster, Peer};
pub use registries::Registries;
pub use route::Route;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::shared::Tier;
use crate::trace::export::Exporter;
use arc_swap::ArcSwap;
use http::Method;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::time::Instant;

/// A config turned into what the request path needs, with metric handles resolved.
pub struct Snapshot {
    /// 1 for the config loaded at start, +1 per successful reload.
    pub generation: u64,
    pub loaded_at: SystemTime,
    /// SHA-256 of the config text, hex.
    pub digest: String,
    pub config: Config,
    /// Routes in config order (the first match wins).
    pub routes: Vec<Route>,
    /// Clusters in config order (sorted by name); routes refer to them by index.
    pub clusters: Vec<Cluster>,
    /// The shared tier (`shared`), when the config has one.
    pub shared: Option<Arc<Tier>>,
    /// Where sampled requests' spans go (`tracing.otlp_endpoint`); `None` exports nothing.
    pub exporter: Option<Arc<Exporter>>,
}

impl Snapshot {
    /// Build a snapshot. State found in `state` is reused, new state is added, and state of
    /// peers, keys, limiters and caches no longer configured is dropped from the registries
    /// (requests still holding it keep their `Arc` and finish normally).
    pub fn build(
        config: Config,
        generation: u64,
        digest: String,
        state: &Registries,
        metrics: &Metrics,
    ) -> Snapshot {
        let mut kept = cluster::Kept::default();
        let shared = state.shared.get(config.shared.as_ref(), metrics);
        let clusters: Vec<Cluster> = config
            .clusters
            .iter()
            .map(|c| Cluster::build(c, state, metrics, shared.as_ref(), &mut kept))
            .collect();
        let routes: Vec<Route> = config
            .routes
            .iter()
            .map(|r| Route::build(r, &config.clusters, state, metrics, shared.as_ref()))
            .collect();
        for gone in state.peers.retain(&kept.peers) {
            metrics.forget_peer(&gone.cluster, &gone.name);
        }
        state.names.retain(&kept.names);
        let tls: HashSet<&str> = (config.clusters.iter())
            .filter(|c| c.tls.is_some())
            .map(|c| c.name.as_str())
            .collect();
        state.tls.retain(&tls);
        metrics.forget_keys(&state.keys.retain(&kept.keys));
        let cluster_names: HashSet<&str> =
            config.clusters.iter().map(|c| c.name.as_str()).collect();
        let route_names: HashSet<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
        state.limiters.retain(&cluster_names, &route_names);
        let cached: HashSet<&str> = config
            .routes
            .iter()
            .filter(|r| r.cache.is_some())
            .map(|r| r.name.as_str())
            .collect();
        state.caches.retain(&cached, metrics);
        let exporter = state.exporters.get(
            config.tracing.otlp_endpoint.as_deref(),
            &metrics.spans_dropped,
        );
        Snapshot {
            exporter,
            generation,
            loaded_at: SystemTime::now(),
            digest,
            config,
            routes,
            clusters,
            shared,
        }
    }

    /// This snapshot's config built again, with the latest resolutions of its named peers: same
    /// generation, digest and load time (it is not a reload).
    pub fn rebuild(&self, state: &Registries, metrics: &Metrics) -> Snapshot {
        let mut snap = Snapshot::build(
            self.config.clone(),
            self.generation,
            self.digest.clone(),
            state,
            metrics,
        );
        snap.loaded_at = self.loaded_at;
        snap
    }

    /// Has the address set behind some named peer changed since this snapshot was built?
    pub fn dns_stale(&self) -> bool {
        self.clusters.iter().any(|c| c.dns_stale())
    }

    /// The first route that takes this request.
    pub fn match_route(&self, host: Option<&str>, path: &str, method: &Method) -> Option<usize> {
        self.routes
            .iter()
            .position(|r| r.matches(host, path, method))
    }

    /// Ready to serve: some route has a cluster with a usable peer.
    pub fn has_usable_route(&self, now: Instant) -> bool {
        self.routes.iter().any(|r| {
            r.cfg
                .split
                .iter()
                .any(|t| t.weight > 0 && self.clusters[t.cluster].has_usable_peer(now))
        })
    }
}

/// The snapshot in force.
pub struct Current {
    snap: ArcSwap<Snapshot>,
    /// Held while a replacement is built from the snapshot in force and stored.
    replacing: Mutex<()>,
}

impl Current {
    pub fn new(snap: Snapshot) -> Self {
        Current {
            snap: ArcSwap::from_pointee(snap),
            replacing: Mutex::new(()),
        }
    }

    /// Build a snapshot from the one in force with `build` and make it the one in force, one
    /// replacement at a time (a reload and a DNS rebuild never interleave). Returns what
    /// `build` made of the old one, for the caller's bookkeeping.
    pub fn replace(&self, build: impl FnOnce(&Snapshot) -> Snapshot) -> Arc<Snapshot> {
        let _one_at_a_time = self.replacing.lock().unwrap_or_else(|e| e.into_inner());
        let next = Arc::new(build(&self.snap.load()));
        self.snap.store(next.clone());
        next
    }

    /// The snapshot in force. Load once per request and keep the `Arc` to the end.
    pub fn load(&self) -> Arc<Snapshot> {
        self.snap.load_full()
    }

    /// Make `snap` the snapshot in force (one atomic store).
    pub fn store(&self, snap: Snapshot) {
        let _one_at_a_time = self.replacing.lock().unwrap_or_else(|e| e.into_inner());
        self.snap.store(Arc::new(snap));
    }
}
