//! Why a try failed before its commit point.

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
    /// `first_byte` (or the overall deadline) passed before the commit point.
    FirstByteTimeout,
    /// The connection was reset or closed before a full response header.
    Reset,
    /// The response was malformed.
    Protocol,
    /// The peer answered a status the route retries.
    Status(u16),
    /// A 2xx stream whose first event is an error (`event: error`, or a `data:` object with an
    /// `error` member): how vLLM and its peers report an engine failure once the header is sent.
    ErrorEvent,
    /// The answer says the API key used is rejected, out of quota or rate-limited.
    KeyRejected(u16),
}
