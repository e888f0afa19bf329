//! Edge admission, before a request is routed: a slot among the requests in flight across the
//! process, and the size of the request header. A refusal answers in JSON and closes the
//! connection (the body was not read, so it cannot be reused).

use crate::config::Limits;
pub use crate::limits::{RequestSlot, RequestSlots};
use crate::respond::JsonError;
use pingora::http::RequestHeader;

/// A request refused at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.max_concurrent_requests` reached: 503 with `retry-after: 1`.
    Busy,
    /// The request header is over `limits.max_header_bytes`: 431.
    HeaderTooLarge,
}

impl Refusal {
    /// The limit's name in `switchyard_limit_rejected_total`.
    pub fn limit(self) -> &'static str {
        match self {
            Refusal::Busy => "max_concurrent_requests",
            Refusal::HeaderTooLarge => "max_header_bytes",
        }
    }

    /// The answer to the client.
    pub fn answer(self, limits: &Limits) -> JsonError {
        match self {
            Refusal::Busy => JsonError::new(
                503,
                "overloaded",
                "switchyard is serving as many requests as it is allowed to; retry shortly",
            )
            .retry_after(1),
            Refusal::HeaderTooLarge => JsonError::new(
                431,
                "header_too_large",
                format!(
                    "request header is larger than the limit of {} bytes",
                    limits.max_header_bytes
                ),
            ),
        }
    }
}

/// Admit a request at the edge: take a slot among the requests in flight and check the header
/// size.
pub fn admit_request<'a>(
    req: &RequestHeader,
    limits: &Limits,
    slots: &'a RequestSlots,
) -> Result<RequestSlot<'a>, Refusal> {
    let slot = slots
        .take(limits.max_concurrent_requests)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes_counts_target_names_and_values() {
        let mut req = RequestHeader::build("GET", b"/v1/x?a=1", None).unwrap();
        assert_eq!(header_bytes(&req), 9);
        req.insert_header("x-a", "12345").unwrap();
        assert_eq!(header_bytes(&req), 9 + 3 + 5);
    }
}
