//! What a try must know about HTTP framing beyond the response itself, because the try writes
//! the request itself (header and body in one write): whether an answer has a body at all, and
//! whether a failure on a pooled connection may be retried for free.

use std::time::Duration;

/// A status whose answer has no body by definition: 1xx, 204, 304 (RFC 9110 §6.4.1).
pub fn bodiless_status(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

/// Is the request on the wire (as `wire` wrote it: the method first) a `HEAD`? Its answer has no
/// body whatever its `content-length` or `transfer-encoding` say.
pub fn is_head(wire: &[u8]) -> bool {
    wire.starts_with(b"HEAD ")
}

/// Does the answer to this request carry no body?
pub fn no_body(wire: &[u8], status: u16) -> bool {
    is_head(wire) || bodiless_status(status)
}

/// How soon after the send a pooled connection's failure still counts as "the peer had closed
/// it already": the peer's FIN or RST was on its way while the connection was taken from the
/// pool. Later, the peer had the request and failed on it: that is an ordinary failed try.
pub const STALE_WINDOW: Duration = Duration::from_millis(250);

/// May a failure on a pooled connection be retried at once on a fresh one, as no try at all?
/// Only when nothing of the answer had arrived and it came right after the send.
pub fn free_retry(reused: bool, any_response_byte: bool, since_send: Duration) -> bool {
    reused && !any_response_byte && since_send <= STALE_WINDOW
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_bodiless_statuses() {
        assert!(is_head(b"HEAD /v1/models HTTP/1.1\r\n"));
        assert!(!is_head(b"HEADER / HTTP/1.1\r\n"));
        assert!(!is_head(b"GET /HEAD HTTP/1.1\r\n"));
        assert!(no_body(b"GET / HTTP/1.1\r\n", 204));
        assert!(no_body(b"GET / HTTP/1.1\r\n", 304));
        assert!(!no_body(b"GET / HTTP/1.1\r\n", 200));
    }

    #[test]
    fn free_retries_only_for_stale_connections() {
        let ms = Duration::from_millis;
        assert!(free_retry(true, false, ms(3)));
        assert!(
            !free_retry(false, false, ms(3)),
            "a fresh connection is a try"
        );
        assert!(!free_retry(true, true, ms(3)), "part of the answer came");
        assert!(
            !free_retry(true, false, Duration::from_secs(25)),
            "the peer had it"
        );
    }
}
