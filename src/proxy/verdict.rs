//! Feeding each try's outcome to its peer's circuit breaker. A [`Ticket`] holds the breaker's
//! admission for one try and always gives it back: as a success, a failure, or (when the try
//! ended without saying anything about the peer, e.g. the client left) a plain release. What
//! counts as a failure is the retry table's `charge` column (`retry::policy`).

use super::relay::{Break, RelayEnd};
use super::retry;
use crate::breaker::{Admission, Outcome, Transition};
use crate::metrics::Metrics;
use crate::snapshot::{Cluster, Peer};
use crate::upstream::TryError;
use tokio::time::Instant;

/// The breaker's admission of one try.
pub struct Ticket<'a> {
    cluster: &'a Cluster,
    peer: &'a Peer,
    metrics: &'a Metrics,
    adm: Option<Admission>,
}

impl<'a> Ticket<'a> {
    /// Admission for one try, or `None` if the breaker refuses it now.
    pub fn acquire(cluster: &'a Cluster, peer: &'a Peer, metrics: &'a Metrics) -> Option<Self> {
        let adm = peer.state.breaker.try_acquire(Instant::now())?;
        Some(Ticket {
            cluster,
            peer,
            metrics,
            adm: Some(adm),
        })
    }

    /// A try that failed before its commit point.
    pub fn try_failed(mut self, e: TryError) {
        let f = &self.cluster.cfg.breaker.failure_on;
        let outcome = retry::policy(e).breaker_failure(f).map(|failed| {
            if failed {
                Outcome::Failure
            } else {
                Outcome::Success
            }
        });
        self.finish(outcome);
    }

    /// A committed try, once its response ended.
    pub fn committed(mut self, status: u16, end: RelayEnd) {
        let f = &self.cluster.cfg.breaker.failure_on;
        let outcome = match end {
            RelayEnd::Complete if retry::status_is_failure(f, status) => Some(Outcome::Failure),
            RelayEnd::Complete => Some(Outcome::Success),
            RelayEnd::UpstreamFailed | RelayEnd::UpstreamFailedSse => {
                (f.reset || f.timeout).then_some(Outcome::Failure)
            }
            RelayEnd::Broken(b) => match b {
                Break::Reset | Break::Truncated => f.reset,
                Break::Stalled => f.timeout,
                Break::ErrorEvent => f.status_5xx,
            }
            .then_some(Outcome::Failure),
            RelayEnd::ClientGone => None,
        };
        self.finish(outcome);
    }

    fn finish(&mut self, outcome: Option<Outcome>) {
        let Some(adm) = self.adm.take() else { return };
        let breaker = &self.peer.state.breaker;
        let Some(outcome) = outcome else {
            breaker.release(adm);
            return;
        };
        let now = Instant::now();
        let t = self.cluster.record(self.peer, adm, outcome, now);
        let labels = [self.cluster.cfg.name.as_str(), self.peer.name.as_str()];
        if matches!(t, Transition::Opened | Transition::Reopened) {
            self.metrics.breaker_opens.with_label_values(&labels).inc();
        }
        if t != Transition::None {
            self.metrics
                .breaker_state
                .with_label_values(&labels)
                .set(breaker.state(now).gauge());
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let Some(adm) = self.adm.take() {
            self.peer.state.breaker.release(adm);
        }
    }
}
