//! The composition root: every long-lived part of a running switchyard, made once at start. Each
//! service and the request path are given the parts they use (by `server`), not the whole.

use crate::access_log::AccessLog;
use crate::config::Config;
use crate::limits::RequestSlots;
use crate::listen::{TlsCerts, TlsError};
use crate::metrics::Metrics;
use crate::reload::{Parts, Reloader};
use crate::services::health::ProbeRound;
use crate::services::sampler::Samples;
use crate::snapshot::{Current, Registries, Snapshot};
use std::path::PathBuf;
use std::sync::Arc;

pub use crate::reload::{digest, digests, Digests};

/// The parts of a running switchyard.
pub struct App {
    /// The snapshot in force.
    pub current: Arc<Current>,
    /// Peer, key, limiter and cache state that outlives snapshots.
    pub state: Arc<Registries>,
    pub metrics: Arc<Metrics>,
    /// Reads the config again and installs it.
    pub reloader: Arc<Reloader>,
    /// Certificates of the TLS listeners; `tls.reload()` re-reads them in place.
    pub tls: Arc<TlsCerts>,
    /// The access log (off unless configured); `access_log.reopen()` after a rotation.
    pub access_log: Arc<AccessLog>,
    /// Whether the first round of active health checks has finished.
    pub probe_round: Arc<ProbeRound>,
    /// Requests in flight on every listener (the request path takes them, `/status` shows them).
    pub slots: Arc<RequestSlots>,
    /// The dashboard's recent samples.
    pub samples: Arc<Samples>,
}

impl App {
    /// An app serving `config` (generation 1), read from `config_path` if it came from a file.
    pub fn new(config: Config, digests: Digests, config_path: Option<PathBuf>) -> Arc<App> {
        let state = Arc::new(Registries::default());
        let metrics = Arc::new(Metrics::new());
        let snap = Snapshot::build(config, 1, digests.shown.clone(), &state, &metrics);
        metrics.config_generation.set(1);
        let probe_round = Arc::new(ProbeRound::new(snap.clusters.iter().any(|c| c.checked())));
        let current = Arc::new(Current::new(snap));
        let tls = Arc::new(TlsCerts::default());
        let access_log = Arc::new(AccessLog::default());
        let reloader = Arc::new(Reloader::new(Parts {
            current: current.clone(),
            state: state.clone(),
            metrics: metrics.clone(),
            tls: tls.clone(),
            access_log: access_log.clone(),
            config_path,
            digests,
        }));
        Arc::new(App {
            current,
            state,
            metrics,
            reloader,
            tls,
            access_log,
            probe_round,
            slots: Arc::new(RequestSlots::default()),
            samples: Arc::new(Samples::default()),
        })
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load()
    }

    /// Build a snapshot of `cfg` and make it the one in force; returns its generation.
    pub fn install(&self, cfg: Config, text_digest: String) -> u64 {
        self.reloader.install(cfg, text_digest)
    }

    /// Re-read the TLS certificates and retarget the access log (see [`Reloader::reload_edge`]).
    pub fn reload_edge(&self) -> Result<usize, TlsError> {
        self.reloader.reload_edge()
    }
}
