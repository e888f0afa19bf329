//! The state shared by the proxy, the admin listener and the background services: the current
//! config snapshot (one `ArcSwap`), peer state that outlives snapshots, metrics, and the
//! upstream connection pool.

use crate::access_log::AccessLog;
use crate::cache::Caches;
use crate::config::{self, Config, ConfigError};
use crate::listen::{TlsCerts, TlsError};
use crate::metrics::Metrics;
use crate::snapshot::{Registries, Snapshot};
use arc_swap::ArcSwap;
use pingora::connectors::TransportConnector;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub struct App {
    snapshot: ArcSwap<Snapshot>,
    /// Peer, key and limiter state that outlives snapshots.
    pub state: Registries,
    pub metrics: Metrics,
    /// Pingora's transport connector: opens new connections to peers (idle keep-alive ones are
    /// kept per peer, in `PeerState::idle`; the HTTP/1.1 exchange is in `proxy::upstream`).
    pub connector: TransportConnector,
    /// The file the config came from (reloads read it again).
    pub config_path: Option<PathBuf>,
    /// Set once the first round of active health checks has finished.
    first_probe_round_done: AtomicBool,
    last_reload_error: Mutex<Option<String>>,
    /// Settings of the running process that a reload cannot change in place.
    boot: BootSettings,
    /// What the loaded config wanted that needs a binary upgrade (`--upgrade`) to take effect.
    needs_upgrade: Mutex<Vec<String>>,
    /// Serialises reloads: builds happen one at a time, away from the request path.
    reload_lock: tokio::sync::Mutex<()>,
    /// Certificates of the TLS listeners; `tls.reload()` re-reads them in place.
    pub tls: TlsCerts,
    /// The access log (off unless configured); `access_log.reopen()` after a rotation.
    pub access_log: AccessLog,
    /// Requests in flight on every listener, against `limits.max_concurrent_requests`.
    pub active_requests: AtomicUsize,
    /// Each cached route's store, kept across reloads.
    pub caches: Caches,
}

/// The parts of a config bound to the running process: listening sockets, threads, process files.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BootSettings {
    listeners: Vec<crate::config::Listener>,
    admin: std::net::SocketAddr,
    server: crate::config::ServerSettings,
}

impl BootSettings {
    fn of(cfg: &Config) -> Self {
        BootSettings {
            listeners: cfg.listeners.clone(),
            admin: cfg.admin.addr,
            server: cfg.server.clone(),
        }
    }

    /// The keys whose new values cannot be applied without an upgrade.
    fn differences(&self, other: &BootSettings) -> Vec<String> {
        let mut out = Vec::new();
        if self.listeners != other.listeners {
            out.push("listeners".to_string());
        }
        if self.admin != other.admin {
            out.push("admin.addr".to_string());
        }
        if self.server != other.server {
            out.push("server".to_string());
        }
        out
    }
}

/// Hex SHA-256 of the config text, shown in `/status` so operators can tell what is loaded.
pub fn digest(text: &str) -> String {
    let d = Sha256::digest(text.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

impl App {
    /// An app serving `config` (generation 1).
    pub fn new(config: Config, text_digest: String, config_path: Option<PathBuf>) -> Arc<App> {
        let state = Registries::default();
        let metrics = Metrics::new();
        let mut snap = Snapshot::build(config, 1, text_digest, &state, &metrics);
        let caches = Caches::default();
        caches.attach(&mut snap, &metrics);
        metrics.config_generation.set(1);
        let any_checks = snap.clusters.iter().any(|c| c.checked());
        let boot = BootSettings::of(&snap.config);
        Arc::new(App {
            snapshot: ArcSwap::from_pointee(snap),
            state,
            metrics,
            connector: TransportConnector::new(None),
            config_path,
            first_probe_round_done: AtomicBool::new(!any_checks),
            last_reload_error: Mutex::new(None),
            boot,
            needs_upgrade: Mutex::new(Vec::new()),
            reload_lock: tokio::sync::Mutex::new(()),
            caches,
            tls: TlsCerts::default(),
            access_log: AccessLog::default(),
            active_requests: AtomicUsize::new(0),
        })
    }

    /// The snapshot in force. Load once per request and keep the `Arc` to the end.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    pub fn first_probe_round_done(&self) -> bool {
        self.first_probe_round_done.load(Ordering::Acquire)
    }

    pub fn set_first_probe_round_done(&self) {
        self.first_probe_round_done.store(true, Ordering::Release);
    }

    pub fn last_reload_error(&self) -> Option<String> {
        self.last_reload_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Keys changed in the config file that need a binary upgrade to take effect (empty when
    /// the running process matches the file).
    pub fn needs_upgrade(&self) -> Vec<String> {
        self.needs_upgrade
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Does the config file on disk differ from the config in force? (Unreadable counts as
    /// changed, so the error gets reported.)
    pub fn config_file_changed(&self) -> bool {
        let Some(path) = &self.config_path else {
            return false;
        };
        match std::fs::read_to_string(path) {
            Ok(text) => digest(&text) != self.snapshot.load().digest,
            Err(_) => true,
        }
    }

    /// Read the config file again and, if it is valid, swap it in with one store. On error the
    /// old snapshot keeps serving and the error is kept for `/status`.
    pub async fn reload(&self) -> Result<u64, ConfigError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let result = match &self.config_path {
            Some(path) => {
                let path = path.clone();
                // File I/O and parsing stay off the request path's threads.
                tokio::task::spawn_blocking(move || {
                    let text =
                        std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                            file: path.display().to_string(),
                            source,
                        })?;
                    let cfg = config::parse(&text, &path.display().to_string())?;
                    Ok((cfg, digest(&text)))
                })
                .await
                .unwrap_or_else(|e| {
                    Err(ConfigError::Read {
                        file: "config".into(),
                        source: std::io::Error::other(e),
                    })
                })
            }
            None => Err(ConfigError::Read {
                file: "config".into(),
                source: std::io::Error::other("no config file to reload"),
            }),
        };
        match result {
            Ok((cfg, d)) => {
                let generation = self.install(cfg, d);
                // Certificates and the access log file follow the new config in place.
                if let Err(e) = self.reload_edge() {
                    log::error!("TLS certificates not reloaded, the ones in force stay: {e}");
                }
                Ok(generation)
            }
            Err(e) => {
                log::error!("config reload failed, keeping the config in force: {e}");
                self.metrics
                    .config_reloads
                    .with_label_values(&["error"])
                    .inc();
                *self
                    .last_reload_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Build a snapshot of `cfg` and make it the one in force; returns its generation.
    pub fn install(&self, cfg: Config, text_digest: String) -> u64 {
        let generation = self.snapshot.load().generation + 1;
        let pending = self.boot.differences(&BootSettings::of(&cfg));
        if !pending.is_empty() {
            log::warn!(
                "config changes {pending:?} cannot be applied in place: they take effect after a \
                 binary upgrade (start switchyard --upgrade, then send SIGQUIT to this process)"
            );
        }
        *self.needs_upgrade.lock().unwrap_or_else(|p| p.into_inner()) = pending;
        let mut snap = Snapshot::build(cfg, generation, text_digest, &self.state, &self.metrics);
        self.caches.attach(&mut snap, &self.metrics);
        self.snapshot.store(Arc::new(snap));
        self.metrics.config_generation.set(generation as i64);
        self.metrics.config_reloads.with_label_values(&["ok"]).inc();
        *self
            .last_reload_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        log::info!("config generation {generation} in force");
        generation
    }

    /// The edge's part of a config reload, to call after a successful one: point the access log
    /// at the configured target and reopen its file (for log rotation), then re-read every TLS
    /// listener's certificate and key in place. Returns how many certificates were reloaded; on
    /// error the certificates in force stay (the access log error is logged, not returned).
    pub fn reload_edge(&self) -> Result<usize, TlsError> {
        let snap = self.snapshot();
        let dropped = self.metrics.access_log_dropped.clone();
        if let Err(e) = self
            .access_log
            .apply(snap.config.access_log.as_ref(), dropped)
        {
            log::error!("access log: cannot open the configured target, keeping the old one: {e}");
        }
        self.access_log.reopen();
        self.tls.reload()
    }
}
