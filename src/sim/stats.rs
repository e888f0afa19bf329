//! Counters that let tests see what actually reached a simulated backend.
//!
//! A load balancer's behaviour (retries, rate limits, health checks, concurrency caps) is only visible from the
//! backend's side, so the simulator counts what arrives. Everything is lock-free so that the counting itself
//! does not serialise requests and distort concurrency measurements.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// How many model-request arrivals are remembered.
pub const ARRIVALS_KEPT: usize = 10_000;

/// What a simulated backend has seen since it started.
#[derive(Debug)]
pub struct SimStats {
    requests: AtomicU64,
    health_hits: AtomicU64,
    current: AtomicU64,
    max_concurrent: AtomicU64,
    abandoned: AtomicU64,
    /// Arrival times as nanoseconds after `epoch`, plus one so that zero means "slot never written".
    arrivals: Box<[AtomicU64]>,
    epoch: Instant,
}

impl Default for SimStats {
    fn default() -> Self {
        SimStats {
            requests: AtomicU64::new(0),
            health_hits: AtomicU64::new(0),
            current: AtomicU64::new(0),
            max_concurrent: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            arrivals: (0..ARRIVALS_KEPT).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
        }
    }
}

impl SimStats {
    /// Model requests (POSTs to the completion endpoints) received, failed ones included.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// `GET /health` requests received.
    pub fn health_hits(&self) -> u64 {
        self.health_hits.load(Ordering::Relaxed)
    }

    /// Model requests currently in progress (a stream counts until its body ends or is dropped).
    pub fn current(&self) -> u64 {
        self.current.load(Ordering::Relaxed)
    }

    /// The highest value [`SimStats::current`] has reached.
    pub fn max_concurrent(&self) -> u64 {
        self.max_concurrent.load(Ordering::Relaxed)
    }

    /// Model requests whose client went away before the answer was complete (the connection was
    /// closed while the server was still working on it, e.g. a proxy cancelling a losing try).
    pub fn abandoned(&self) -> u64 {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// Arrival times of the last (at most [`ARRIVALS_KEPT`]) model requests, oldest first.
    pub fn arrivals(&self) -> Vec<Instant> {
        let mut offsets: Vec<u64> = self
            .arrivals
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .filter(|&v| v != 0)
            .collect();
        offsets.sort_unstable();
        offsets
            .into_iter()
            .map(|v| self.epoch + std::time::Duration::from_nanos(v - 1))
            .collect()
    }

    /// Records a model request's arrival and returns its 1-based sequence number and a guard that keeps it
    /// counted as in progress until dropped.
    pub(crate) fn model_request(self: &Arc<Self>) -> (u64, ActiveGuard) {
        let seq = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        self.record_arrival(seq, Instant::now());
        let now = self.current.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_concurrent.fetch_max(now, Ordering::Relaxed);
        (
            seq,
            ActiveGuard {
                stats: Arc::clone(self),
                finished: false,
            },
        )
    }

    pub(crate) fn health_hit(&self) {
        self.health_hits.fetch_add(1, Ordering::Relaxed);
    }

    fn record_arrival(&self, seq: u64, at: Instant) {
        // u64 nanoseconds last 584 years; saturate rather than wrap if that is ever wrong.
        let nanos = u64::try_from(at.duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1);
        // The modulus is below ARRIVALS_KEPT, so it always fits in usize.
        let slot = (seq % ARRIVALS_KEPT as u64) as usize;
        self.arrivals[slot].store(nanos + 1, Ordering::Relaxed);
    }
}

/// Keeps a model request counted in [`SimStats::current`] while it is alive; dropped before
/// [`ActiveGuard::finish`], the request counts as [`SimStats::abandoned`].
#[derive(Debug)]
pub(crate) struct ActiveGuard {
    stats: Arc<SimStats>,
    finished: bool,
}

impl ActiveGuard {
    /// The server ended the answer itself (completed it, or cut it on purpose).
    pub(crate) fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.stats.current.fetch_sub(1, Ordering::Relaxed);
        if !self.finished {
            self.stats.abandoned.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_stats_concurrency_and_bounded_arrivals() {
        let stats = Arc::new(SimStats::default());
        let (first, mut a) = stats.model_request();
        let (_, b) = stats.model_request();
        assert_eq!(first, 1);
        assert_eq!((stats.current(), stats.max_concurrent()), (2, 2));
        a.finish();
        drop(a);
        drop(b);
        assert_eq!((stats.current(), stats.max_concurrent()), (0, 2));
        assert_eq!(stats.abandoned(), 1, "b was dropped unfinished");

        for _ in 0..ARRIVALS_KEPT + 5 {
            stats.model_request().1.finish();
        }
        let arrivals = stats.arrivals();
        assert_eq!(arrivals.len(), ARRIVALS_KEPT);
        assert!(arrivals.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(stats.requests(), ARRIVALS_KEPT as u64 + 7);
    }
}
