//! The requests in flight on every listener, against `limits.max_concurrent_requests`: taken at
//! the edge (`proxy::edge`), shown in `/status` (so a test or an operator can see that nothing
//! is left held), and given back when the request ends however it ends.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The requests in flight on every listener, against `limits.max_concurrent_requests`.
#[derive(Debug, Default)]
pub struct RequestSlots(AtomicUsize);

impl RequestSlots {
    /// A slot if fewer than `max` are taken; held until the guard drops.
    pub fn take(&self, max: usize) -> Option<RequestSlot<'_>> {
        let before = self.0.fetch_add(1, Ordering::AcqRel);
        if before >= max {
            self.0.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(RequestSlot(&self.0))
    }

    /// Requests in flight now.
    pub fn in_use(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// One request in flight, counted until dropped.
pub struct RequestSlot<'a>(&'a AtomicUsize);

impl Drop for RequestSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back() {
        let n = RequestSlots::default();
        let a = n.take(2).unwrap();
        let _b = n.take(2).unwrap();
        assert!(n.take(2).is_none());
        assert_eq!(n.in_use(), 2);
        drop(a);
        assert!(n.take(2).is_some());
        assert_eq!(n.in_use(), 1);
    }
}
