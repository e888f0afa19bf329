//! The typed runtime config: what the rest of switchyard reads. Built only by `config::build`,
//! so every value here has been validated. One file per part of the document; everything is
//! re-exported here, and from `config`.

mod cluster;
mod process;
mod route;

pub use cluster::*;
pub use process::*;
pub use route::*;

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
}

impl Config {
    /// The cluster called `name`.
    pub fn cluster(&self, name: &str) -> Option<&ClusterConfig> {
        self.clusters.iter().find(|c| c.name == name)
    }
}
