//! The typed config of how a cluster's peers are reached: by IP or by a DNS name, in cleartext
//! or over TLS, with which `Host` and path, and which DNS servers resolve the names.

use http::HeaderValue;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where a peer is: an address, or a DNS name whose every A/AAAA record is a peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerAddr {
    /// `IP:port`.
    Ip(SocketAddr),
    /// `host:port`, resolved at run time (and re-resolved every `dns_refresh`).
    Name {
        /// The DNS name, as written (lower-cased).
        host: String,
        port: u16,
    },
}

impl PeerAddr {
    /// The DNS name of a named peer.
    pub fn host(&self) -> Option<&str> {
        match self {
            PeerAddr::Ip(_) => None,
            PeerAddr::Name { host, .. } => Some(host),
        }
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Ip(a) => write!(f, "{a}"),
            PeerAddr::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// TLS to the peers of a cluster (`clusters.NAME.tls`), with its files loaded and checked.
#[derive(Clone)]
pub struct UpstreamTls {
    /// Server name sent and verified. Default: the peer's DNS name; an IP peer sends none and
    /// its certificate must name the IP.
    pub sni: Option<String>,
    /// Verify the peer's certificate chain and name. Default true.
    pub verify: bool,
    /// Trust anchors from `ca_file`; `None` = the system's roots.
    pub ca: Option<Arc<RootCertStore>>,
    /// `ca_file` as given.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key for mutual TLS (`cert`, `key`).
    pub client_cert: Option<Arc<CertifiedKey>>,
    /// `cert` and `key` as given.
    pub client_files: Option<(PathBuf, PathBuf)>,
    /// SHA-256 of the settings and of the files' contents: equal when nothing changed, so a
    /// reload keeps the TLS client (and its resumable sessions and idle connections).
    pub digest: String,
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("sni", &self.sni)
            .field("verify", &self.verify)
            .field("ca_file", &self.ca_file)
            .field("client_files", &self.client_files)
            .finish_non_exhaustive()
    }
}

/// What a cluster's upstream request looks like: its `Host` and path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// `host`: the upstream `Host` for every peer. Default: the peer's name (with its port when
    /// it is not the scheme's default) for named peers, the client's `Host` for IP peers.
    pub host: Option<HeaderValue>,
    /// `strip_prefix`: removed from the start of the path when it is there.
    pub strip_prefix: Option<String>,
    /// `add_prefix`: put before the path (after `strip_prefix`).
    pub add_prefix: Option<String>,
}

/// The DNS servers named peers are resolved with (`resolver:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSettings {
    /// `servers`: queried over UDP (TCP when an answer is truncated); empty = the system's
    /// (`/etc/resolv.conf`, with its search domains and `ndots`, and `/etc/hosts`).
    pub servers: Vec<SocketAddr>,
    /// `timeout`: longest wait for one answer. Default 5s.
    pub timeout: Duration,
}

impl Default for ResolverSettings {
    /// The system's servers, 5s per query.
    fn default() -> Self {
        ResolverSettings {
            servers: Vec::new(),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Default of `clusters.NAME.dns_refresh`.
pub const DNS_REFRESH: Duration = Duration::from_secs(30);
