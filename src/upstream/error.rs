//! Why a try failed before its commit point.

use std::time::Duration;

/// Why a try failed before it could commit. What each kind means for retries, the breaker, the
/// metrics and the client's answer is one table, `proxy::retry::policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryError {
    /// The peer refused the connection.
    Refused,
    /// Any other failure to connect (no route, handshake...).
    ConnectFailure,
    /// `connect` passed.
    ConnectTimeout,
    /// The try's own wait for its commit point (`first_byte`, or `first_token` for streams)
    /// passed.
    FirstByteTimeout,
    /// The request's overall deadline (`total`) passed before the commit point: it says nothing
    /// about the peer, which may simply be generating a long answer.
    Deadline,
    /// The connection was reset or closed before a full response header.
    Reset,
    /// The response was malformed.
    Protocol,
    /// The peer answered a status the route retries.
    Status(u16),
    /// A 2xx stream whose first event is an error (`event: error`, or a `data:` object with an
    /// `error` member): how vLLM and its peers report an engine failure once the header is sent.
    ErrorEvent,
    /// The peer answered a retried 429 or 503 that says when to come back (`Retry-After`).
    RetryAfter { status: u16, after: Duration },
    /// The peer answered a status whose body matches a `retry_on` answer condition (a 400
    /// saying `context_length_exceeded`): the answer is about the request on this cluster.
    Matched(u16),
    /// The answer says the API key used is rejected, out of quota or rate-limited.
    KeyRejected(u16),
}
