//! Token buckets of this process for token budgets: GCRA like the request buckets, but taking a
//! variable cost and taking settlements (units given back or charged after the fact), which
//! `governor` cannot. The same arithmetic as the shared tier's script (`shared::gcra`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// One bucket: `capacity` units at once, one unit back per `interval`.
#[derive(Debug)]
pub struct Bucket {
    interval: Duration,
    capacity: u64,
    /// Theoretical arrival time; `None` = full.
    tat: Mutex<Option<Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Bucket {
    /// `per_minute` units a minute, a minute's worth (`per_minute`) at once.
    pub fn per_minute(per_minute: u32) -> Bucket {
        let per_minute = per_minute.max(1);
        Bucket {
            interval: Duration::from_secs(60) / per_minute,
            capacity: u64::from(per_minute),
            tat: Mutex::new(None),
        }
    }

    /// Units that may pass at once on a full bucket.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    fn span(&self, units: u64) -> Duration {
        self.interval
            .saturating_mul(u32::try_from(units).unwrap_or(u32::MAX))
    }

    /// Take `cost` units (at most the capacity) now, or say how long until they fit.
    pub fn take(&self, cost: u64, now: Instant) -> Result<(), Duration> {
        let cost = cost.min(self.capacity);
        let mut tat = lock(&self.tat);
        let from = tat.map_or(now, |t| t.max(now));
        let next = from + self.span(cost);
        let limit = now + self.span(self.capacity);
        if next > limit {
            return Err(next - limit);
        }
        *tat = Some(next);
        Ok(())
    }

    /// Move the bucket by `delta` units without checking: negative gives back, positive charges.
    pub fn adjust(&self, delta: i64, now: Instant) {
        let mut tat = lock(&self.tat);
        let from = tat.map_or(now, |t| t.max(now));
        let span = self.span(delta.unsigned_abs());
        *tat = Some(if delta >= 0 {
            from + span
        } else {
            from.checked_sub(span).unwrap_or(now).max(now)
        });
    }
}

/// Buckets by client (a hash of its key), forgotten once full again.
#[derive(Debug)]
pub struct KeyedBuckets {
    per_minute: u32,
    buckets: Mutex<HashMap<u64, std::sync::Arc<Bucket>>>,
}

impl KeyedBuckets {
    pub fn per_minute(per_minute: u32) -> KeyedBuckets {
        KeyedBuckets {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Units that may pass at once on a full bucket.
    pub fn capacity(&self) -> u64 {
        u64::from(self.per_minute.max(1))
    }

    fn bucket(&self, client: u64, now: Instant) -> std::sync::Arc<Bucket> {
        let mut map = lock(&self.buckets);
        if map.len() >= 4096 {
            // Full buckets are the same as absent ones: drop them.
            map.retain(|_, b| lock(&b.tat).is_some_and(|t| t > now));
        }
        map.entry(client)
            .or_insert_with(|| std::sync::Arc::new(Bucket::per_minute(self.per_minute)))
            .clone()
    }

    pub fn take(&self, client: u64, cost: u64, now: Instant) -> Result<(), Duration> {
        self.bucket(client, now).take(cost, now)
    }

    pub fn adjust(&self, client: u64, delta: i64, now: Instant) {
        self.bucket(client, now).adjust(delta, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_minute_at_once_then_the_rate_and_settlements_move_it() {
        let b = Bucket::per_minute(600); // 10 a second
        let now = Instant::now();
        assert!(b.take(500, now).is_ok());
        assert!(b.take(100, now).is_ok());
        let wait = b.take(10, now).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        // 300 of the 600 reserved were not used: given back.
        b.adjust(-300, now);
        assert!(b.take(300, now).is_ok());
        assert!(b.take(1, now).is_err());
        // Used 50 more than reserved: charged, so the bucket is in debt for 5s.
        b.adjust(50, now);
        assert_eq!(b.take(1, now).unwrap_err(), Duration::from_millis(5100));
        // A cost above the capacity is taken as the capacity, once the bucket is full.
        let later = now + Duration::from_secs(70);
        assert!(b.take(10_000, later).is_ok());
        assert!(b.take(1, later).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn clients_have_their_own_buckets() {
        let k = KeyedBuckets::per_minute(60);
        let now = Instant::now();
        assert!(k.take(1, 60, now).is_ok());
        assert!(k.take(1, 1, now).is_err());
        assert!(k.take(2, 60, now).is_ok());
    }
}
