//! Where every try to one peer goes.

use super::pool::IdlePool;
use pingora::upstreams::peer::HttpPeer;
use std::net::SocketAddr;
use std::sync::Arc;

/// Where every try to one peer connects: the Pingora peer (for new connections) and the peer's
/// idle keep-alive connections. One `Target` per peer and snapshot, shared by all its tries (the
/// per-try timeouts are the request path's own timers, not `HttpPeer` options).
pub struct Target {
    /// The Pingora peer new connections are made to.
    pub peer: HttpPeer,
    /// The peer's idle keep-alive connections (owned by its state, so they outlive snapshots).
    pub(super) idle: Arc<IdlePool>,
}

impl Target {
    /// A cleartext HTTP/1.1 target at `addr`, reusing `idle`.
    pub fn new(addr: SocketAddr, idle: Arc<IdlePool>) -> Self {
        Target {
            peer: HttpPeer::new(addr, false, String::new()),
            idle,
        }
    }
}
