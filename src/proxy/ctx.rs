//! What the request path remembers of one request for its end: the access log line and the
//! request metrics (written in `logging`, whichever stage answered).

use super::meter::Measured;
use super::trace::Trace;
use crate::snapshot::Snapshot;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Per-request state, kept for the `logging` hook.
pub struct Ctx {
    pub(super) start: Instant,
    pub(super) snapshot: Option<Arc<Snapshot>>,
    pub(super) route: Option<usize>,
    pub(super) cluster: Option<usize>,
    /// Tries started.
    pub(super) tries: u32,
    /// The status answered (0 before any).
    pub(super) status: u16,
    /// Index in `cluster.peers` of the last try.
    pub(super) peer: Option<usize>,
    /// Arrival to the committed upstream response going out.
    pub(super) ttfb: Option<Duration>,
    /// The client connection is TLS.
    pub(super) tls: bool,
    /// Kept for the access log, only when it is on.
    pub(super) request_id: Option<String>,
    /// `x-cache-status` of the answer, on cached routes.
    pub(super) cache: Option<&'static str>,
    /// The client, resolved through `trusted_proxies`.
    pub(super) identity: super::identity::Identity,
    /// Reads what the committed answer used, for token budgets (off unless one applies).
    pub(super) meter: crate::tokens::Meter,
    /// Time to first token and usage of a relayed answer.
    pub(super) measured: Measured,
    /// The request's trace (from the moment it has a snapshot).
    pub(super) trace: Option<Trace>,
}

impl Ctx {
    /// A request that arrived now.
    pub fn new() -> Ctx {
        Ctx {
            start: Instant::now(),
            snapshot: None,
            route: None,
            cluster: None,
            tries: 0,
            status: 0,
            peer: None,
            ttfb: None,
            tls: false,
            request_id: None,
            cache: None,
            identity: Default::default(),
            meter: crate::tokens::Meter::off(),
            measured: Measured::default(),
            trace: None,
        }
    }
}

impl Default for Ctx {
    fn default() -> Self {
        Ctx::new()
    }
}
