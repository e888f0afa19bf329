//! `Retry-After` (RFC 9110 §10.2.3): seconds, or an HTTP-date, read into a bounded wait.
//!
//! An upstream says how long to stay away with either form; both are read, and the wait is
//! capped so that no answer can take a key or a peer out for longer than the caller allows (a
//! `Retry-After: 18446744073709551615` must not overflow a deadline, and a year is not a sane
//! cooldown).

use http::HeaderMap;
use std::time::{Duration, SystemTime};

/// The wait a `Retry-After` value asks for, at most `cap`; `None` when absent or unreadable. A
/// date in the past is a wait of zero.
pub fn parse(value: &str, now: SystemTime, cap: Duration) -> Option<Duration> {
    let v = value.trim();
    let wait = if v.bytes().all(|b| b.is_ascii_digit()) && !v.is_empty() {
        // Any number of digits: too many to fit is simply "a long time".
        Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(v).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(cap))
}

/// The `retry-after` of an answer's headers (see [`parse`]).
pub fn of(headers: &HeaderMap, cap: Duration) -> Option<Duration> {
    let v = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    parse(v, SystemTime::now(), cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn seconds_dates_and_nonsense() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse("2", now, HOUR), Some(Duration::from_secs(2)));
        assert_eq!(parse(" 0 ", now, HOUR), Some(Duration::ZERO));
        assert_eq!(parse("18446744073709551615", now, HOUR), Some(HOUR));
        assert_eq!(parse("99999999999999999999999", now, HOUR), Some(HOUR));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(parse(&later, now, HOUR), Some(Duration::from_secs(90)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse(&past, now, HOUR), Some(Duration::ZERO));
        for bad in ["", "-1", "1.5", "soon", "2 s"] {
            assert_eq!(parse(bad, now, HOUR), None, "{bad:?}");
        }
    }
}
