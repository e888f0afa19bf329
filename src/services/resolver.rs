//! Resolving peers given by DNS name: a background service that resolves every named peer (all
//! its A and AAAA records) every `dns_refresh` of its cluster, and at once when a connect to one
//! of its addresses failed (at most once a second per name), with `hickory-resolver` (the
//! system's configuration, or the servers of `resolver:`).
//!
//! Each result goes into the name's state (`crate::dns`); when an address set changed, the
//! snapshot in force is rebuilt from the same config and swapped in with one store (no reload):
//! new addresses join, removed ones drain on the old snapshot. A name that does not resolve
//! keeps its last addresses; one that never resolved leaves its cluster without those peers,
//! which is logged and shown in `/status`. Lookups bypass the resolver's cache, so the refresh
//! interval is what decides how fresh the addresses are.

use crate::config::{Config, ResolverSettings};
use crate::dns::NameState;
use crate::metrics::Metrics;
use crate::snapshot::{Current, Registries};
use async_trait::async_trait;
use futures_util::future::join_all;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, NameServerConfigGroup, ResolverConfig,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{Resolver, TokioResolver};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Shortest time between two resolutions of a name that failed connects asked for.
const MIN_GAP: Duration = Duration::from_secs(1);

/// Longest pause between two looks at the snapshot in force (one built by a reload from a
/// resolution recorded meanwhile is caught up within this).
const MAX_NAP: Duration = Duration::from_secs(1);

/// The resolver service.
pub struct NameResolver {
    pub current: Arc<Current>,
    pub state: Arc<Registries>,
    pub metrics: Arc<Metrics>,
}

/// A DNS client for `settings`, or why there is none.
pub fn dns_client(settings: &ResolverSettings) -> Result<TokioResolver, String> {
    let mut builder = if settings.servers.is_empty() {
        TokioResolver::builder_tokio()
            .map_err(|e| format!("cannot read the system's resolver configuration: {e}"))?
    } else {
        let mut group = NameServerConfigGroup::new();
        for addr in &settings.servers {
            group.push(NameServerConfig::new(*addr, Protocol::Udp));
            group.push(NameServerConfig::new(*addr, Protocol::Tcp));
        }
        let config = ResolverConfig::from_parts(None, vec![], group);
        Resolver::builder_with_config(config, TokioConnectionProvider::default())
    };
    let opts = builder.options_mut();
    opts.timeout = settings.timeout;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    Ok(builder.build())
}

/// Every address of `host`, on `port`.
pub async fn resolve(
    dns: &TokioResolver,
    settings: &ResolverSettings,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, String> {
    // The resolver retries and falls back by itself; this only bounds the whole of it.
    let limit = settings.timeout.saturating_mul(4);
    match tokio::time::timeout(limit, dns.lookup_ip(host)).await {
        Err(_) => Err(format!("no answer within {limit:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(found)) => {
            let mut addrs: Vec<SocketAddr> =
                found.iter().map(|ip| SocketAddr::new(ip, port)).collect();
            addrs.sort();
            addrs.dedup();
            Ok(addrs)
        }
    }
}

/// Resolve every named peer of `cfg` once: (key path of the peer's `addr`, name, result).
pub async fn resolve_all(cfg: &Config) -> Vec<(String, String, Result<Vec<SocketAddr>, String>)> {
    let dns = dns_client(&cfg.resolver);
    let lookups = cfg.named_peers().map(|(c, i, addr)| {
        let path = format!("clusters.{}.peers[{i}].addr", c.name);
        let dns = &dns;
        async move {
            let result = match (dns, addr.host()) {
                (Err(e), _) => Err(e.clone()),
                (Ok(dns), Some(host)) => {
                    let port = match addr {
                        crate::config::PeerAddr::Name { port, .. } => *port,
                        crate::config::PeerAddr::Ip(a) => a.port(),
                    };
                    resolve(dns, &cfg.resolver, host, port).await
                }
                (Ok(_), None) => Ok(Vec::new()),
            };
            (path, addr.to_string(), result)
        }
    });
    join_all(lookups).await
}

#[async_trait]
impl BackgroundService for NameResolver {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut client: Option<(ResolverSettings, Result<TokioResolver, String>)> = None;
        // When each name was last looked up, by (cluster, name).
        let mut last: HashMap<(String, String), Instant> = HashMap::new();
        loop {
            let snap = self.current.load();
            let settings = snap.config.resolver.clone();
            drop(snap);
            let names = self.state.names.all();
            // No DNS client (nor a look at the system's configuration) without a name to resolve.
            if !names.is_empty() && client.as_ref().is_none_or(|(s, _)| *s != settings) {
                let made = dns_client(&settings);
                if let Err(e) = &made {
                    log::error!("named peers cannot be resolved: {e}");
                }
                client = Some((settings.clone(), made));
            }
            let now = Instant::now();
            let due: Vec<Arc<NameState>> = names
                .iter()
                .filter(|n| {
                    let at = last.get(&(n.cluster.clone(), n.name()));
                    let periodic = at.is_none_or(|t| now >= *t + n.refresh());
                    let asked = n.is_stale() && at.is_none_or(|t| now >= *t + MIN_GAP);
                    periodic || asked
                })
                .cloned()
                .collect();
            if let Some((_, dns)) = &client {
                if let Ok(dns) = dns {
                    dns.clear_cache();
                }
                self.lookup(dns, &settings, &due).await;
            }
            for n in &due {
                last.insert((n.cluster.clone(), n.name()), now);
            }
            last.retain(|k, _| names.iter().any(|n| n.cluster == k.0 && n.name() == k.1));
            if self.current.load().dns_stale() {
                let snap = self
                    .current
                    .replace(|old| old.rebuild(&self.state, &self.metrics));
                log::debug!(
                    "snapshot of generation {} rebuilt for new addresses",
                    snap.generation
                );
            }
            let nap = names
                .iter()
                .filter_map(|n| {
                    let at = *last.get(&(n.cluster.clone(), n.name()))?;
                    let gap = if n.is_stale() { MIN_GAP } else { n.refresh() };
                    Some((at + gap).saturating_duration_since(Instant::now()))
                })
                .min()
                .unwrap_or(MAX_NAP)
                .clamp(Duration::from_millis(10), MAX_NAP);
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(nap) => {}
                _ = self.state.names.woken() => {}
            }
        }
    }
}

impl NameResolver {
    /// Look up every name of `due` at once and record what was found.
    async fn lookup(
        &self,
        dns: &Result<TokioResolver, String>,
        settings: &ResolverSettings,
        due: &[Arc<NameState>],
    ) {
        let found = join_all(due.iter().map(|n| async move {
            n.take_stale();
            match dns {
                Ok(dns) => resolve(dns, settings, &n.host, n.port).await,
                Err(e) => Err(e.clone()),
            }
        }))
        .await;
        for (n, result) in due.iter().zip(found) {
            let before = n.resolution();
            let failed = result.as_ref().err().cloned();
            if n.record(result) {
                log::info!(
                    "cluster {}: {} resolves to {:?} (was {:?})",
                    n.cluster,
                    n.name(),
                    n.resolution().addrs,
                    before.addrs
                );
            } else if let Some(e) = failed.or_else(|| n.resolution().error.clone()) {
                if before.error.as_deref() != Some(e.as_str()) {
                    let keeps = match before.addrs.len() {
                        0 => "its cluster has no peer of that name until it does".to_string(),
                        k => format!("its last {k} addresses stay in use"),
                    };
                    log::warn!(
                        "cluster {}: {} does not resolve ({e}); {keeps}",
                        n.cluster,
                        n.name()
                    );
                }
            }
        }
    }
}
