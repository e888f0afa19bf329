//! Config reload: read the file again and, if it is valid, swap a new snapshot in with one store
//! ([`Reloader::reload`]); on error the old snapshot keeps serving and the error is kept for
//! `/status`. Settings a reload cannot change in place (listeners, the admin address, process
//! settings) are listed for `/status` and take effect after a binary upgrade. The edge follows
//! every successful reload in place: TLS certificates are re-read and the access log retargeted.
//!
//! What triggers a reload (SIGHUP, a change to the file, SIGUSR2 for a binary upgrade) is the
//! background service in [`triggers`]; `POST /reload` on the admin listener is the other way in.

pub mod triggers;

use crate::access_log::AccessLog;
use crate::config::{self, Config, ConfigError};
use crate::listen::{TlsCerts, TlsError};
use crate::metrics::Metrics;
use crate::snapshot::{Current, Registries, Snapshot};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Hex SHA-256 of the config, shown in `/status` so operators can tell what is loaded. Secrets
/// are left out (`admin.token`, every `api_keys.keys` and the password in `shared.redis`): the digest is shown without
/// authentication, and a hash of a text holding a low-entropy secret is an oracle for it. The
/// digest is of the parsed document, so comments and layout do not change it; a text that does
/// not parse is digested as it is (it is never loaded).
pub fn digest(text: &str) -> String {
    digests(text).shown
}

/// The two digests of a config text: the one shown ([`digest`]) and the one the file watch
/// compares, of the whole parsed document, secrets included (never shown), so that a change of
/// a secret alone (a rotated API key) is a change too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Digests {
    pub shown: String,
    watched: [u8; 32],
}

/// The [`Digests`] of a config text.
pub fn digests(text: &str) -> Digests {
    let Ok(mut v) = serde_yaml::from_str::<serde_yaml::Value>(text) else {
        let d = Sha256::digest(text.as_bytes());
        return Digests {
            shown: hex(&d),
            watched: d.into(),
        };
    };
    let watched = Sha256::digest(serde_yaml::to_string(&v).unwrap_or_default().as_bytes()).into();
    redact(&mut v);
    let shown = hex(&Sha256::digest(
        serde_yaml::to_string(&v).unwrap_or_default().as_bytes(),
    ));
    Digests { shown, watched }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Blank out the secrets of a config document.
fn redact(v: &mut serde_yaml::Value) {
    let secret = serde_yaml::Value::String("<secret>".into());
    if let Some(t) = v.get_mut("admin").and_then(|a| a.get_mut("token")) {
        *t = secret.clone();
    }
    if let Some(r) = v.get_mut("shared").and_then(|s| s.get_mut("redis")) {
        if let Some(url) = r.as_str() {
            *r = serde_yaml::Value::String(crate::config::redact_url(url));
        }
    }
    if let Some(clusters) = v.get_mut("clusters").and_then(|c| c.as_mapping_mut()) {
        for (_, c) in clusters.iter_mut() {
            if let Some(k) = c.get_mut("api_keys").and_then(|k| k.get_mut("keys")) {
                *k = secret.clone();
            }
        }
    }
}

/// Why a reload failed.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read or is not a valid config: nothing changed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The config was installed, but a TLS listener's certificate could not be re-read: the
    /// certificates in force stay.
    #[error(
        "config generation {generation} is in force, but the TLS certificates were not \
         reloaded (the ones in force stay): {source}"
    )]
    Tls {
        generation: u64,
        #[source]
        source: TlsError,
    },
}

/// Read and build the config at `path`, with the digests of its text.
pub fn read(path: &std::path::Path) -> Result<(Config, Digests), ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    let cfg = config::parse(&text, &file)?;
    Ok((cfg, digests(&text)))
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

/// Reloads the config: builds snapshots from the registries and installs them.
pub struct Reloader {
    current: Arc<Current>,
    state: Arc<Registries>,
    metrics: Arc<Metrics>,
    tls: Arc<TlsCerts>,
    access_log: Arc<AccessLog>,
    /// The file the config came from (reloads read it again).
    config_path: Option<PathBuf>,
    /// Settings of the running process that a reload cannot change in place.
    boot: BootSettings,
    /// What the loaded config wanted that needs a binary upgrade (`--upgrade`) to take effect.
    needs_upgrade: Mutex<Vec<String>>,
    last_error: Mutex<Option<String>>,
    /// The watched digest of the config file's text in force (see [`Digests`]).
    watched: Mutex<[u8; 32]>,
    /// Serialises reloads: builds happen one at a time, away from the request path.
    lock: tokio::sync::Mutex<()>,
}

/// What a [`Reloader`] works with.
pub struct Parts {
    pub current: Arc<Current>,
    pub state: Arc<Registries>,
    pub metrics: Arc<Metrics>,
    pub tls: Arc<TlsCerts>,
    pub access_log: Arc<AccessLog>,
    pub config_path: Option<PathBuf>,
    /// The digests of the config text in force.
    pub digests: Digests,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Reloader {
    /// A reloader for the process started with the snapshot now in `parts.current`.
    pub fn new(parts: Parts) -> Self {
        let boot = BootSettings::of(&parts.current.load().config);
        Reloader {
            current: parts.current,
            state: parts.state,
            metrics: parts.metrics,
            tls: parts.tls,
            access_log: parts.access_log,
            config_path: parts.config_path,
            boot,
            needs_upgrade: Mutex::new(Vec::new()),
            last_error: Mutex::new(None),
            watched: Mutex::new(parts.digests.watched),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The error of the last reload, if it failed.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    /// Keys changed in the config file that need a binary upgrade to take effect (empty when
    /// the running process matches the file).
    pub fn needs_upgrade(&self) -> Vec<String> {
        lock(&self.needs_upgrade).clone()
    }

    /// The config file, if there is one.
    pub fn config_path(&self) -> Option<&std::path::Path> {
        self.config_path.as_deref()
    }

    /// Does the config file on disk differ from the config in force? (Unreadable counts as
    /// changed, so the error gets reported.)
    pub fn config_file_changed(&self) -> bool {
        let Some(path) = &self.config_path else {
            return false;
        };
        match std::fs::read_to_string(path) {
            Ok(text) => digests(&text).watched != *lock(&self.watched),
            Err(_) => true,
        }
    }

    /// Read the config file again and, if it is valid, swap it in with one store. On error the
    /// old snapshot keeps serving and the error is kept for `/status`.
    pub async fn reload(&self) -> Result<u64, ReloadError> {
        let _one_at_a_time = self.lock.lock().await;
        let result = match &self.config_path {
            Some(path) => {
                let path = path.clone();
                // File I/O and parsing stay off the request path's threads.
                tokio::task::spawn_blocking(move || read(&path))
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
                *lock(&self.watched) = d.watched;
                let generation = self.install(cfg, d.shown);
                // Certificates and the access log file follow the new config in place; a
                // certificate that does not load fails the reload (renewal automation must see
                // it), though the config itself is in force.
                if let Err(source) = self.reload_edge() {
                    let e = ReloadError::Tls { generation, source };
                    log::error!("{e}");
                    *lock(&self.last_error) = Some(e.to_string());
                    return Err(e);
                }
                Ok(generation)
            }
            Err(e) => {
                log::error!("config reload failed, keeping the config in force: {e}");
                self.metrics
                    .config_reloads
                    .with_label_values(&["error"])
                    .inc();
                *lock(&self.last_error) = Some(e.to_string());
                Err(e.into())
            }
        }
    }

    /// Build a snapshot of `cfg` and make it the one in force; returns its generation.
    pub fn install(&self, cfg: Config, text_digest: String) -> u64 {
        let pending = self.boot.differences(&BootSettings::of(&cfg));
        if !pending.is_empty() {
            log::warn!(
                "config changes {pending:?} cannot be applied in place: they take effect after a \
                 binary upgrade (start switchyard --upgrade, then send SIGQUIT to this process)"
            );
        }
        *lock(&self.needs_upgrade) = pending;
        // Built from the snapshot in force, under its lock: a DNS rebuild cannot slip in between.
        let snap = self.current.replace(|old| {
            Snapshot::build(
                cfg,
                old.generation + 1,
                text_digest,
                &self.state,
                &self.metrics,
            )
        });
        let generation = snap.generation;
        self.metrics.config_generation.set(generation as i64);
        self.metrics.config_reloads.with_label_values(&["ok"]).inc();
        *lock(&self.last_error) = None;
        log::info!("config generation {generation} in force");
        generation
    }

    /// The edge's part of a config reload, to call after a successful one: point the access log
    /// at the configured target and reopen its file (for log rotation), then re-read every TLS
    /// listener's certificate and key in place. Returns how many certificates were reloaded; on
    /// error the certificates in force stay (the access log error is logged, not returned).
    pub fn reload_edge(&self) -> Result<usize, TlsError> {
        let snap = self.current.load();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_leaves_secrets_out() {
        let with = |token: &str, key: &str| {
            format!("admin: {{ token: {token} }}\nclusters:\n  c:\n    api_keys: {{ keys: [{key}] }}\n    peers: []\n")
        };
        let a = digest(&with("aaaaaaaaaaaaaaaaaaaa", "sk-1"));
        assert_eq!(a, digest(&with("bbbbbbbbbbbbbbbbbbbb", "sk-2")));
        assert_ne!(
            a,
            digest(&with("aaaaaaaaaaaaaaaaaaaa", "sk-1").replace("peers: []", "peers: [x]"))
        );
        // Nor the password of the shared tier; its host is.
        let shared = |url: &str| digest(&format!("shared: {{ redis: \"{url}\" }}\n"));
        assert_eq!(shared("redis://:pw1@h:1/0"), shared("redis://:pw2@h:1/0"));
        assert_ne!(shared("redis://:pw1@h:1/0"), shared("redis://:pw1@h:2/0"));
        // Comments and layout are not the config.
        assert_eq!(a, digest(&format!("# hi\n{}", with("c", "d"))));
    }

    #[test]
    fn the_watched_digest_sees_secrets_but_not_comments() {
        let with = |token: &str, key: &str| {
            format!("admin: {{ token: {token} }}\nclusters:\n  c:\n    api_keys: {{ keys: [{key}] }}\n    peers: []\n")
        };
        let a = digests(&with("t", "sk-1"));
        assert_eq!(a.shown, digest(&with("t", "sk-1")));
        for other in [with("t", "sk-2"), with("u", "sk-1")] {
            let b = digests(&other);
            assert_eq!(a.shown, b.shown);
            assert_ne!(a.watched, b.watched, "{other}");
        }
        assert_eq!(
            a,
            digests(&format!("# rotated soon\n{}", with("t", "sk-1")))
        );
        // A text that does not parse is still digested (it is never loaded).
        assert_ne!(digests("a: [").watched, digests("a: [[").watched);
    }
}
