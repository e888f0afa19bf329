//! The typed config of the process and its client-facing side: server settings, listeners and
//! their TLS files, the admin listener, edge limits and the access log.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Process settings, passed to Pingora's `ServerConf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Worker threads of the proxy service. Default: one per core.
    pub threads: usize,
    /// How long a terminating or upgrading process keeps serving in-flight requests. Default 30s
    /// (Pingora's own default of 300s is too long for most edges).
    pub grace_period: Duration,
    /// After the grace period, how long to wait for tasks to end. Default 5s.
    pub graceful_shutdown_timeout: Duration,
    /// Where the process id is written. Default `switchyard.pid` in [`runtime_dir`].
    pub pid_file: String,
    /// Socket the old and new process use to hand over listeners (whoever can connect to it
    /// receives the listening sockets). Default `upgrade.sock` in [`runtime_dir`].
    pub upgrade_sock: String,
    /// Which server answers HTTP/1.x on the listeners. Default [`Http1Server::Lean`].
    pub http1: Http1Server,
}

/// The server that answers HTTP/1.x connections (HTTP/2 is always Pingora's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Http1Server {
    /// switchyard's own (`listen::h1`): the faster one.
    #[default]
    Lean,
    /// Pingora's HTTP/1 server, as before the lean one existed.
    Pingora,
}

impl Default for ServerSettings {
    /// One thread per core, a grace period of 30s, 5s for tasks to end, `switchyard.pid` and
    /// `upgrade.sock` in [`runtime_dir`], and the lean HTTP/1 server.
    fn default() -> Self {
        let dir = runtime_dir();
        let at = |f: &str| dir.join(f).display().to_string();
        ServerSettings {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            grace_period: Duration::from_secs(30),
            graceful_shutdown_timeout: Duration::from_secs(5),
            pid_file: at("switchyard.pid"),
            upgrade_sock: at("upgrade.sock"),
            http1: Http1Server::Lean,
        }
    }
}

/// A directory for the process files that only this user can write to (the upgrade socket hands
/// the listening sockets to whoever connects to it, so it must not sit in a shared `/tmp`):
/// `$RUNTIME_DIRECTORY` (systemd's `RuntimeDirectory=`), else `/run/switchyard` when `/run` or
/// that directory is writable (root), else `$XDG_RUNTIME_DIR/switchyard`, else a per-user
/// directory under the temporary directory (`switchyard-UID`, created private at start; a
/// warning says so). Nothing is created here: `server` creates the directory, mode 0700.
pub fn runtime_dir() -> PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = env("RUNTIME_DIRECTORY") {
        // systemd may list several, separated by ':'.
        let first = d
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        if !first.is_empty() {
            return PathBuf::from(first);
        }
    }
    let run = PathBuf::from("/run/switchyard");
    if writable(&run) || (!run.exists() && writable(std::path::Path::new("/run"))) {
        return run;
    }
    if let Some(x) = env("XDG_RUNTIME_DIR") {
        return PathBuf::from(x).join("switchyard");
    }
    let uid = std::fs::metadata("/proc/self").map_or(0, |m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    });
    std::env::temp_dir().join(format!("switchyard-{uid}"))
}

fn writable(dir: &std::path::Path) -> bool {
    dir.is_dir()
        && std::fs::metadata(dir).is_ok_and(|m| !m.permissions().readonly())
        && tempfile_probe(dir)
}

/// Can this process create a file in `dir`? (Permission bits alone do not say, for root or
/// read-only mounts.)
fn tempfile_probe(dir: &std::path::Path) -> bool {
    let probe = dir.join(format!(".switchyard-probe-{}", std::process::id()));
    let ok = std::fs::File::create(&probe).is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

/// A client-facing listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Where it accepts connections.
    pub addr: SocketAddr,
    /// Terminate TLS here (HTTP/2 and HTTP/1.1 by ALPN); `None` for cleartext (HTTP/1.1, h2c).
    pub tls: Option<TlsFiles>,
}

/// PEM files of a TLS listener, checked to load and match when the config is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The admin listener. Default `127.0.0.1:9901`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// Where the admin API listens.
    pub addr: SocketAddr,
    /// Bearer token required on mutating endpoints; required when `addr` is not loopback.
    pub token: Option<AdminToken>,
    /// The token protects the read endpoints too (`/metrics`, `/status`, the breaker
    /// documents); `/healthz` and `/readyz` stay open for probes. Default false.
    pub protect_reads: bool,
}

/// The admin bearer token. Never printed: `Debug` shows a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    pub(crate) fn new(token: String) -> Self {
        AdminToken(token)
    }

    /// Does `presented` equal the token? Takes the same time wherever the two differ: both are
    /// hashed to fixed-length digests first, so neither the length nor a common prefix leaks.
    pub fn matches(&self, presented: &[u8]) -> bool {
        use sha2::{Digest, Sha256};
        let a = Sha256::digest(self.0.as_bytes());
        let b = Sha256::digest(presented);
        let diff = a
            .iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y));
        std::hint::black_box(diff) == 0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Protections of the client-facing side. Every value has a default; see the README, "Edge
/// limits".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Request target plus header names and values, in bytes, above which a request gets 431.
    /// Default 64KiB.
    pub max_header_bytes: usize,
    /// Longest wait for a whole request header, from its first byte (from the connection's
    /// start, for the first request); 408 after it. Lean HTTP/1 server only. Default 60s.
    pub client_header_timeout: Duration,
    /// Longest wait for the next piece of a request body. Default 30s.
    pub client_body_timeout: Duration,
    /// Longest time to receive a whole request body, however steadily it trickles in. Default
    /// 60s.
    pub client_body_total_timeout: Duration,
    /// How long an idle client connection is kept open between requests (HTTP/1.1: also each
    /// read of a later request's header; HTTP/2: idle connection). Whole seconds. Default 60s.
    pub keepalive_timeout: Duration,
    /// Requests served on one HTTP/1.1 connection before it is closed. Default 1000.
    pub keepalive_requests: u32,
    /// Client connections open at once, all listeners together; above it new connections are
    /// closed at once. Default 10000.
    pub max_connections: usize,
    /// Requests in flight at once, all listeners together; above it requests get 503. Default
    /// 4096.
    pub max_concurrent_requests: usize,
}

impl Default for Limits {
    /// Headers up to 64KiB within 60s, 30s between body pieces and 60s for a whole body, idle
    /// connections kept 60s, 1000 requests
    /// per HTTP/1.1 connection, 10000 connections and 4096 requests in flight.
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            client_header_timeout: Duration::from_secs(60),
            client_body_timeout: Duration::from_secs(30),
            client_body_total_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(60),
            keepalive_requests: 1000,
            max_connections: 10_000,
            max_concurrent_requests: 4096,
        }
    }
}

/// Span export (`tracing:`).
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// Where spans are posted (OTLP/HTTP, protobuf), as `http://host:port/path`; `None` (the
    /// default) exports nothing. The `traceparent` header is propagated either way.
    pub otlp_endpoint: Option<String>,
    /// Share of the traces a client did not mark sampled that are exported, 0 to 1. Default 1.
    pub sample_ratio: f64,
}

impl Default for TracingConfig {
    /// No export; every trace sampled once an endpoint is set.
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: None,
            sample_ratio: 1.0,
        }
    }
}

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogConfig {
    /// Written to standard error.
    Stderr,
    /// Appended to; reopened when `AccessLog::reopen` is called.
    File(PathBuf),
}
