//! The retry policy, in one table: for each way a try can fail ([`TryError`]), whether the route
//! retries it, what it does to the peer's breaker, whether a retry of it needs the retry budget,
//! where the retry may go ([`Again`]), its metric reason, and the client's answer when it was the
//! last failure. A new kind of failure is one more row in [`policy`]; the try loop, the peer
//! choice, the breaker feedback and the final answer all read the row.

use crate::config::{FailureOn, RetryOn, RetryPolicy};
use crate::upstream::TryError;
use std::time::Duration;

/// Whether a route retries a failure.
#[derive(Clone, Copy)]
pub enum Retried {
    /// Always, while tries remain (another key or peer can serve it).
    Always,
    /// When `retry_on` has one of the named conditions this function reads.
    If(fn(&RetryOn) -> bool),
    /// When `retry_on` lists this status.
    Status(u16),
}

/// What a failure does to the peer's breaker.
#[derive(Clone, Copy)]
pub enum Charge {
    /// Nothing: the try says nothing about the peer (its admission is released).
    Nothing,
    /// A failure when `failure_on` has one of the kinds this function reads, else nothing.
    If(fn(&FailureOn) -> bool),
    /// An answer with this status: a failure if it is 5xx and `failure_on` has `5xx`, else a
    /// success (4xx answers are the client's business, not the peer's).
    Status(u16),
}

/// Where the retry of a failure may go, besides a peer not tried yet (always preferred).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Again {
    /// The same peer too, after the backoff, when no other peer can take the retry (a
    /// single-endpoint provider).
    Peer,
    /// The peer asked to come back after this long: the same peer after that wait, if it is
    /// within `retry.max_retry_after`; never again for this request otherwise.
    PeerAfter(Duration),
    /// Not this cluster: the answer is about the request on the cluster's model (its context
    /// window, say), which every peer of it would give again.
    OtherCluster,
}

/// The client's answer when this failure ended the tries and no fallback answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Final {
    pub status: u16,
    /// The JSON error code.
    pub code: &'static str,
    /// The reason in `switchyard_fallback_response_total` and `x-switchyard-fallback`.
    pub reason: &'static str,
    /// `retry-after` seconds, sent with 429 and 503 only.
    pub retry_after: Option<u32>,
}

/// One row of the table.
#[derive(Clone, Copy)]
pub struct Policy {
    /// Label in `switchyard_upstream_retry_total` and logs.
    pub reason: &'static str,
    pub retried: Retried,
    pub charge: Charge,
    /// A retry of it takes a slot of the route's retry budget. Not when the request never reached
    /// a model server (a refused or unroutable connect), or when another key is what it needs:
    /// such a retry adds no load anywhere, and a peer that dies with many requests in flight must
    /// not fail them.
    pub needs_budget: bool,
    pub again: Again,
    pub answer: Final,
}

const UNAVAILABLE: Final = Final {
    status: 502,
    code: "upstream_unavailable",
    reason: "all_tries_failed",
    retry_after: Some(1),
};
const TIMEOUT: Final = Final {
    status: 504,
    code: "upstream_timeout",
    reason: "timeout",
    retry_after: None,
};

/// The client's answer when no try could be started at all.
pub const NO_PEER: Final = Final {
    status: 503,
    code: "no_healthy_upstream",
    reason: "no_peer",
    retry_after: Some(1),
};

/// The answer to a status that was the last failure.
const fn upstream_status(status: u16, retry_after: u32) -> Final {
    Final {
        status,
        code: "upstream_error",
        reason: "upstream_status",
        retry_after: Some(retry_after),
    }
}

/// The row of `e`.
pub fn policy(e: TryError) -> Policy {
    match e {
        TryError::Refused => Policy {
            reason: "refused",
            retried: Retried::If(|on| on.refused || on.connect_failure),
            charge: Charge::If(|f| f.connect),
            needs_budget: false,
            again: Again::Peer,
            answer: UNAVAILABLE,
        },
        TryError::ConnectFailure => Policy {
            reason: "connect_failure",
            retried: Retried::If(|on| on.connect_failure),
            charge: Charge::If(|f| f.connect),
            needs_budget: false,
            again: Again::Peer,
            answer: UNAVAILABLE,
        },
        TryError::ConnectTimeout => Policy {
            reason: "connect_timeout",
            retried: Retried::If(|on| on.connect_failure || on.timeout),
            charge: Charge::If(|f| f.connect || f.timeout),
            needs_budget: true,
            again: Again::Peer,
            answer: TIMEOUT,
        },
        TryError::FirstByteTimeout => Policy {
            reason: "timeout",
            retried: Retried::If(|on| on.timeout),
            charge: Charge::If(|f| f.timeout),
            needs_budget: true,
            again: Again::Peer,
            answer: TIMEOUT,
        },
        // No time is left for another try, and a long generation is no fault of the peer's.
        TryError::Deadline => Policy {
            reason: "deadline",
            retried: Retried::If(|_| false),
            charge: Charge::Nothing,
            needs_budget: true,
            again: Again::Peer,
            answer: TIMEOUT,
        },
        TryError::Reset => Policy {
            reason: "reset",
            retried: Retried::If(|on| on.reset),
            charge: Charge::If(|f| f.reset),
            needs_budget: true,
            again: Again::Peer,
            answer: UNAVAILABLE,
        },
        TryError::Protocol => Policy {
            reason: "protocol_error",
            retried: Retried::If(|on| on.reset),
            charge: Charge::If(|f| f.reset),
            needs_budget: true,
            again: Again::Peer,
            answer: UNAVAILABLE,
        },
        TryError::Status(s) => Policy {
            reason: status_reason(s),
            retried: Retried::Status(s),
            charge: Charge::Status(s),
            needs_budget: true,
            again: Again::Peer,
            answer: upstream_status(s, 1),
        },
        TryError::RetryAfter { status, after } => Policy {
            reason: status_reason(status),
            retried: Retried::Status(status),
            charge: Charge::Status(status),
            needs_budget: true,
            again: Again::PeerAfter(after),
            // The peer's own wait is passed on (rounded up to whole seconds).
            answer: upstream_status(status, whole_seconds(after)),
        },
        TryError::Matched(s) => Policy {
            reason: status_reason(s),
            retried: Retried::Always,
            charge: Charge::Status(s),
            needs_budget: true,
            again: Again::OtherCluster,
            answer: upstream_status(s, 1),
        },
        // An engine failure reported inside a 200: what a 500 would have said, before any token
        // reached the client. Retried under `reset` (the stream broke before its first token) or
        // when `retry_on` lists 500 (`5xx` does); a breaker failure under `5xx`.
        TryError::ErrorEvent => Policy {
            reason: "error_event",
            retried: Retried::If(|on| on.reset || on.statuses.contains(&500)),
            charge: Charge::If(|f| f.status_5xx),
            needs_budget: true,
            again: Again::Peer,
            answer: UNAVAILABLE,
        },
        TryError::KeyRejected(s) => Policy {
            reason: "api_key",
            retried: Retried::Always,
            charge: Charge::Nothing,
            needs_budget: false,
            again: Again::Peer,
            answer: Final {
                status: if s == 429 { 429 } else { 502 },
                code: if s == 429 {
                    "upstream_rate_limited"
                } else {
                    "upstream_auth_failed"
                },
                reason: "api_keys",
                retry_after: (s == 429).then_some(1),
            },
        },
    }
}

/// `d` in whole seconds, rounded up, for a `retry-after` header.
fn whole_seconds(d: Duration) -> u32 {
    let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    u32::try_from(secs).unwrap_or(u32::MAX)
}

fn status_reason(s: u16) -> &'static str {
    match s {
        502 => "502",
        503 => "503",
        504 => "504",
        429 => "429",
        s if s >= 500 => "5xx",
        _ => "4xx",
    }
}

impl Policy {
    /// Does a route with `on` retry this failure?
    pub fn retried_by(&self, on: &RetryOn) -> bool {
        match self.retried {
            Retried::Always => true,
            Retried::If(f) => f(on),
            Retried::Status(s) => on.statuses.contains(&s),
        }
    }

    /// Does it count as a breaker failure (`Some(true)`), a success (`Some(false)`), or say
    /// nothing about the peer (`None`), under `failure_on`?
    pub fn breaker_failure(&self, failure_on: &FailureOn) -> Option<bool> {
        match self.charge {
            Charge::Nothing => None,
            Charge::If(f) => f(failure_on).then_some(true),
            Charge::Status(s) => Some(status_is_failure(failure_on, s)),
        }
    }
}

/// Is an answer with `status` a breaker failure under `failure_on`?
pub fn status_is_failure(failure_on: &FailureOn, status: u16) -> bool {
    status >= 500 && failure_on.status_5xx
}

/// Jittered exponential backoff before retry number `n` (1-based): uniform in
/// `[0, min(max, base * 2^(n-1))]`, as Envoy does.
pub fn backoff(r: &RetryPolicy, n: u32) -> Duration {
    let cap = r
        .backoff_base
        .saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(r.backoff_max);
    cap.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_agrees_with_the_documented_defaults() {
        let on = RetryOn::default();
        let all = FailureOn::ALL;
        for e in [
            TryError::Refused,
            TryError::ConnectFailure,
            TryError::ConnectTimeout,
            TryError::FirstByteTimeout,
            TryError::Reset,
            TryError::Protocol,
            TryError::ErrorEvent,
            TryError::Status(502),
            TryError::Status(503),
            TryError::Status(504),
        ] {
            assert!(policy(e).retried_by(&on), "{e:?} is retried by default");
            assert_eq!(policy(e).breaker_failure(&all), Some(true), "{e:?}");
        }
        for s in [400, 429, 500] {
            assert!(!policy(TryError::Status(s)).retried_by(&on), "{s}");
        }
        assert_eq!(
            policy(TryError::Status(429)).breaker_failure(&all),
            Some(false)
        );
        assert_eq!(
            policy(TryError::KeyRejected(401)).breaker_failure(&all),
            None
        );
        let only_5xx = RetryOn {
            statuses: vec![500, 501, 502, 503, 504, 505],
            ..RetryOn::NONE
        };
        assert!(policy(TryError::ErrorEvent).retried_by(&only_5xx));
        assert!(!policy(TryError::ErrorEvent).retried_by(&RetryOn::NONE));
        assert!(!policy(TryError::Refused).needs_budget);
        let after = Duration::from_millis(1500);
        let throttled = policy(TryError::RetryAfter { status: 429, after });
        assert!(
            !throttled.retried_by(&on),
            "429 is retried only when listed"
        );
        assert_eq!(throttled.again, Again::PeerAfter(after));
        assert_eq!(throttled.answer.retry_after, Some(2), "rounded up");
        assert_eq!(throttled.reason, "429");
        let matched = policy(TryError::Matched(400));
        assert!(
            matched.retried_by(&RetryOn::NONE),
            "matched by its own condition"
        );
        assert_eq!(matched.again, Again::OtherCluster);
        assert_eq!(matched.breaker_failure(&all), Some(false));
        assert!(!policy(TryError::Deadline).retried_by(&on));
        assert_eq!(policy(TryError::Deadline).breaker_failure(&all), None);
        assert_eq!(policy(TryError::Deadline).answer.status, 504);
        assert!(policy(TryError::Reset).needs_budget);
        assert_eq!(policy(TryError::FirstByteTimeout).answer.status, 504);
        assert_eq!(policy(TryError::KeyRejected(429)).answer.status, 429);
        assert_eq!(policy(TryError::KeyRejected(401)).answer.status, 502);
    }
}
