//! The typed runtime config: what the rest of switchyard reads. Built only by `config::build`,
//! so every value here has been validated. One file per part of the document; everything is
//! re-exported here, and from `config`.

mod cluster;
mod process;
mod route;
mod shared;
mod upstream;

pub use cluster::*;
pub use process::*;
pub use route::*;
pub use shared::*;
pub use upstream::*;

/// A whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Process settings.
    pub server: ServerSettings,
    /// Client-facing listeners, at least one.
    pub listeners: Vec<Listener>,
    /// The admin API.
    pub admin: AdminSettings,
    /// Clusters sorted by name; routes refer to them by index.
    pub clusters: Vec<ClusterConfig>,
    /// Routes in file order: the first match wins.
    pub routes: Vec<RouteConfig>,
    /// Protections of the client-facing side.
    pub limits: Limits,
    /// One JSON line per request; `None` when off (the default).
    pub access_log: Option<AccessLogConfig>,
    /// The DNS servers that resolve named peers.
    pub resolver: ResolverSettings,
    /// Addresses of the proxies in front of switchyard whose `x-forwarded-for` is believed.
    /// Default: none (every client's own forwarding headers are replaced).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The tier several instances share state through; `None` = every instance on its own.
    pub shared: Option<SharedConfig>,
    /// Span export; off by default.
    pub tracing: TracingConfig,
}

impl Config {
    /// The cluster called `name`.
    pub fn cluster(&self, name: &str) -> Option<&ClusterConfig> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// Every named peer: its cluster, its index in the cluster's `peers` and its name.
    pub fn named_peers(&self) -> impl Iterator<Item = (&ClusterConfig, usize, &PeerAddr)> {
        self.clusters.iter().flat_map(|c| {
            c.peers
                .iter()
                .enumerate()
                .filter(|(_, p)| p.addr.host().is_some())
                .map(move |(i, p)| (c, i, &p.addr))
        })
    }
}
