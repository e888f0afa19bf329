//! The admission queue of a cluster: where requests wait, in arrival order, for a peer below its
//! `max_inflight`.

use crate::config::QueueConfig;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

/// Where requests wait for a peer below its `max_inflight`, in arrival order.
pub struct AdmissionQueue {
    pub cfg: QueueConfig,
    /// Woken (one at a time, first come first served) when a try to the cluster ends.
    pub notify: Arc<Notify>,
    waiting: AtomicU32,
}

impl AdmissionQueue {
    /// A queue with `cfg`, woken by `notify` (the cluster's wake-up shared with its peers).
    pub fn new(cfg: QueueConfig, notify: Arc<Notify>) -> Self {
        AdmissionQueue {
            cfg,
            notify,
            waiting: AtomicU32::new(0),
        }
    }

    /// Requests waiting now.
    pub fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Join the queue, unless it is full. The guard leaves it when dropped.
    pub fn join(&self) -> Option<QueueSlot<'_>> {
        let prev = self.waiting.fetch_add(1, Ordering::Relaxed);
        if prev >= self.cfg.max_waiting {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(QueueSlot(self))
    }
}

/// A place in the queue, left when dropped.
pub struct QueueSlot<'a>(&'a AdmissionQueue);

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
        // Pass the turn on: the next waiter re-checks for a free peer.
        self.0.notify.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn queue_is_bounded() {
        let cfg = QueueConfig {
            max_waiting: 2,
            timeout: Duration::from_secs(1),
        };
        let q = AdmissionQueue::new(cfg, Arc::new(Notify::new()));
        let a = q.join();
        let b = q.join();
        assert!(a.is_some() && b.is_some());
        assert!(q.join().is_none());
        drop(a);
        assert_eq!(q.waiting(), 1);
    }
}
