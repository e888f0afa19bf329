//! Deadlines computed without overflow.
//!
//! `Instant + Duration` panics when the sum does not fit. Config durations are bounded (at most
//! 365 days, `config::check::MAX_DURATION`), so a deadline made of them always fits; what comes
//! from a peer or a client (a `Retry-After`) is capped where it is read. These helpers are the
//! belt to those braces: a deadline that would not fit becomes "a very long time", never a panic.

use std::time::Duration;
use tokio::time::Instant;

/// Far enough away to count as never, near enough to fit in any `Instant`.
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `from + d`, or a deadline a century after `from` when that does not fit.
pub fn after(from: Instant, d: Duration) -> Instant {
    from.checked_add(d)
        .or_else(|| from.checked_add(FAR))
        .unwrap_or(from)
}

/// `after(Instant::now(), d)`.
pub fn from_now(d: Duration) -> Instant {
    after(Instant::now(), d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_panics() {
        let now = Instant::now();
        assert_eq!(
            after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert!(after(now, Duration::MAX) > now + Duration::from_secs(365 * 24 * 3600));
        assert!(from_now(Duration::MAX) > now);
    }
}
