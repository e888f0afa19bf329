//! The address sets behind peers given by DNS name, as state that outlives snapshots.
//!
//! A snapshot is immutable, but the addresses behind `vllm.models.svc.cluster.local:8000` change
//! without a reload (pods come and go). Each named peer of each cluster has a [`NameState`] here,
//! keyed by (cluster, `host:port`): the resolver service (`services::resolver`) writes its latest
//! [`Resolution`] with one atomic store, and a snapshot expands the name into one peer per address
//! when it is built. A snapshot remembers which resolution it was built from
//! ([`Resolution::generation`]), so the resolver can tell it is out of date and install a rebuilt
//! one: addresses that are new join (with slow start), addresses that are gone drain (requests on
//! them hold the old snapshot and finish there). Nothing here resolves anything.

use arc_swap::ArcSwap;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;

/// The outcome of the latest resolutions of one name.
#[derive(Debug, Clone, Default)]
pub struct Resolution {
    /// The addresses of the last successful resolution, sorted; empty until one succeeded.
    pub addrs: Vec<SocketAddr>,
    /// When the name last resolved.
    pub resolved_at: Option<SystemTime>,
    /// Why the last attempt failed (`None` after a success).
    pub error: Option<String>,
    /// Bumped whenever `addrs` changes.
    pub generation: u64,
}

/// One named peer of one cluster.
#[derive(Debug)]
pub struct NameState {
    pub cluster: String,
    pub host: String,
    pub port: u16,
    resolution: ArcSwap<Resolution>,
    /// A connect to one of its addresses failed since the last resolution.
    stale: AtomicBool,
    /// `dns_refresh` of its cluster, in ms (a reload may change it).
    refresh_ms: AtomicU64,
    /// The registry's: wakes the resolver.
    wake: Arc<Notify>,
}

impl NameState {
    /// `host:port`, as configured.
    pub fn name(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The latest resolution.
    pub fn resolution(&self) -> Arc<Resolution> {
        self.resolution.load_full()
    }

    /// How often the name is resolved again.
    pub fn refresh(&self) -> Duration {
        Duration::from_millis(self.refresh_ms.load(Ordering::Relaxed))
    }

    /// A new connection to one of the name's addresses failed: ask for a resolution now (the
    /// resolver bounds how often it acts on this).
    pub fn connect_failed(&self) {
        if !self.stale.swap(true, Ordering::Relaxed) {
            self.wake.notify_one();
        }
    }

    /// Was a resolution asked for by a failed connect? Clears the request.
    pub fn take_stale(&self) -> bool {
        self.stale.swap(false, Ordering::Relaxed)
    }

    /// Is a resolution asked for (without clearing the request)?
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    /// Record a resolution: the addresses found, or why there are none. A failure keeps the
    /// last addresses (a DNS outage must not empty a cluster that works); an answer with no
    /// address is a failure too. Returns true when the address set changed.
    pub fn record(&self, found: Result<Vec<SocketAddr>, String>) -> bool {
        let old = self.resolution.load();
        let mut next = Resolution::clone(&old);
        match found {
            Ok(mut addrs) if !addrs.is_empty() => {
                addrs.sort();
                addrs.dedup();
                next.resolved_at = Some(SystemTime::now());
                next.error = None;
                if addrs != old.addrs {
                    next.addrs = addrs;
                    next.generation += 1;
                }
            }
            Ok(_) => next.error = Some("the name has no A or AAAA record".into()),
            Err(e) => next.error = Some(e),
        }
        let changed = next.generation != old.generation;
        self.resolution.store(Arc::new(next));
        changed
    }
}

/// Every named peer's state, by (cluster, `host:port`).
#[derive(Debug, Default)]
pub struct NameRegistry {
    names: Mutex<HashMap<(String, String), Arc<NameState>>>,
    wake: Arc<Notify>,
}

impl NameRegistry {
    /// The state of `cluster`'s peer `host:port`, created (unresolved) on first sight; its
    /// refresh interval is set to `refresh`.
    pub fn get_or_insert(
        &self,
        cluster: &str,
        host: &str,
        port: u16,
        refresh: Duration,
    ) -> Arc<NameState> {
        let mut map = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let key = (cluster.to_string(), format!("{host}:{port}"));
        let state = map.entry(key).or_insert_with(|| {
            self.wake.notify_one();
            Arc::new(NameState {
                cluster: cluster.to_string(),
                host: host.to_string(),
                port,
                resolution: ArcSwap::default(),
                stale: AtomicBool::new(true),
                refresh_ms: AtomicU64::new(0),
                wake: self.wake.clone(),
            })
        });
        let ms = u64::try_from(refresh.as_millis()).unwrap_or(u64::MAX);
        state.refresh_ms.store(ms, Ordering::Relaxed);
        state.clone()
    }

    /// Every name, in no particular order.
    pub fn all(&self) -> Vec<Arc<NameState>> {
        let map = self.names.lock().unwrap_or_else(|e| e.into_inner());
        map.values().cloned().collect()
    }

    /// Forget names no longer configured, by (cluster, `host:port`).
    pub fn retain(&self, keep: &HashSet<(String, String)>) {
        let mut map = self.names.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|k, _| keep.contains(k));
    }

    /// Resolves when a name is added or a connect to one of its addresses failed.
    pub async fn woken(&self) {
        self.wake.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_resolution_changes_the_generation_only_when_the_set_changes() {
        let reg = NameRegistry::default();
        let n = reg.get_or_insert("c", "vllm.svc", 8000, Duration::from_secs(30));
        assert!(n.take_stale(), "a new name asks to be resolved");
        assert_eq!(n.resolution().generation, 0);
        assert!(n.record(Ok(vec![a("10.0.0.2:8000"), a("10.0.0.1:8000")])));
        let r = n.resolution();
        assert_eq!(r.addrs, [a("10.0.0.1:8000"), a("10.0.0.2:8000")]);
        assert_eq!(r.generation, 1);
        // The same set in another order is no change.
        assert!(!n.record(Ok(vec![a("10.0.0.1:8000"), a("10.0.0.2:8000")])));
        // A failure keeps the addresses and says why.
        assert!(!n.record(Err("timed out".into())));
        let r = n.resolution();
        assert_eq!((r.addrs.len(), r.error.as_deref()), (2, Some("timed out")));
        assert!(!n.record(Ok(vec![])));
        assert!(n.resolution().error.is_some());
        assert!(n.record(Ok(vec![a("10.0.0.1:8000")])));
        assert_eq!(n.resolution().error, None);
        // A failed connect asks once until it is taken.
        n.connect_failed();
        n.connect_failed();
        assert!(n.take_stale());
        assert!(!n.take_stale());
        let same = reg.get_or_insert("c", "vllm.svc", 8000, Duration::from_secs(5));
        assert!(Arc::ptr_eq(&n, &same));
        assert_eq!(n.refresh(), Duration::from_secs(5));
        reg.retain(&HashSet::new());
        assert!(reg.all().is_empty());
    }
}
