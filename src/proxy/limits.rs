//! Edge limits checked before a request is routed: requests in flight across the process and the
//! size of the request header. Both answer in JSON and close the connection (the body was not
//! read, so it cannot be reused).

use super::respond;
use crate::app::App;
use crate::config::Limits;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A request refused at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.max_concurrent_requests` reached: 503 with `retry-after: 1`.
    Busy,
    /// The request header is over `limits.max_header_bytes`: 431.
    HeaderTooLarge,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::Busy => 503,
            Refusal::HeaderTooLarge => 431,
        }
    }

    /// The limit's name in `switchyard_limit_rejected_total`.
    pub fn limit(self) -> &'static str {
        match self {
            Refusal::Busy => "max_concurrent_requests",
            Refusal::HeaderTooLarge => "max_header_bytes",
        }
    }

    /// Answer the client and make sure the connection is not reused.
    pub async fn respond(
        self,
        session: &mut Session,
        limits: &Limits,
        request_id: &str,
    ) -> Result<()> {
        session.set_keepalive(None);
        match self {
            Refusal::Busy => {
                let msg =
                    "switchyard is serving as many requests as it is allowed to; retry shortly";
                respond::json_error(session, 503, "overloaded", msg, request_id, Some(1), &[]).await
            }
            Refusal::HeaderTooLarge => {
                let msg = format!(
                    "request header is larger than the limit of {} bytes",
                    limits.max_header_bytes
                );
                respond::json_error(
                    session,
                    431,
                    "header_too_large",
                    &msg,
                    request_id,
                    None,
                    &[],
                )
                .await
            }
        }
    }
}

/// Admit a request: take a slot among the requests in flight and check the header size. The
/// slot is held until the returned guard drops.
pub fn admit<'a>(
    req: &RequestHeader,
    limits: &Limits,
    app: &'a App,
) -> std::result::Result<RequestSlot<'a>, Refusal> {
    let slot = RequestSlot::take(&app.active_requests, limits.max_concurrent_requests)
        .ok_or(Refusal::Busy)?;
    if header_bytes(req) > limits.max_header_bytes {
        return Err(Refusal::HeaderTooLarge);
    }
    Ok(slot)
}

/// The size of what the client sent before the body: the request target plus every header name
/// and value (separators and line ends not counted, so HTTP/1.1 and HTTP/2 measure alike).
pub fn header_bytes(req: &RequestHeader) -> usize {
    let target = req.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    req.headers
        .iter()
        .fold(target, |n, (k, v)| n + k.as_str().len() + v.len())
}

/// One request in flight, counted until dropped.
pub struct RequestSlot<'a>(&'a AtomicUsize);

impl<'a> RequestSlot<'a> {
    /// A slot if fewer than `max` are taken.
    pub fn take(counter: &'a AtomicUsize, max: usize) -> Option<Self> {
        let before = counter.fetch_add(1, Ordering::AcqRel);
        if before >= max {
            counter.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(RequestSlot(counter))
    }
}

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
        let n = AtomicUsize::new(0);
        let a = RequestSlot::take(&n, 2).unwrap();
        let _b = RequestSlot::take(&n, 2).unwrap();
        assert!(RequestSlot::take(&n, 2).is_none());
        assert_eq!(n.load(Ordering::Relaxed), 2);
        drop(a);
        assert!(RequestSlot::take(&n, 2).is_some());
        assert_eq!(n.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn header_bytes_counts_target_names_and_values() {
        let mut req = RequestHeader::build("GET", b"/v1/x?a=1", None).unwrap();
        assert_eq!(header_bytes(&req), 9);
        req.insert_header("x-a", "12345").unwrap();
        assert_eq!(header_bytes(&req), 9 + 3 + 5);
    }
}
