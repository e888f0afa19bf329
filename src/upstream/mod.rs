//! The upstream layer: one try against one peer, up to the commit point.
//!
//! Below the config snapshot and the request path: a [`Target`] is what a snapshot's peer holds
//! (its address, its cluster's [`TlsClient`] when the cluster has `tls`, and the peer's idle
//! keep-alive connections, [`IdlePool`]);
//! [`try_once`] runs one try against it and returns a [`Ready`] response or the [`TryError`] that
//! ended it. What to do about a failure (retry it, charge the breaker, answer the client) is the
//! request path's business (`proxy::retry`); nothing here imports `proxy`.

mod attempt;
mod error;
mod framing;
mod pool;
mod reader;
mod target;
mod tls;

pub use attempt::{timeout_at, try_once, wire, Ready, TryRequest};
pub use error::TryError;
pub use framing::{bodiless_status, is_head};
pub use pool::IdlePool;
pub use reader::Response;
pub use target::{ConnectFailed, Target};
pub use tls::{TlsClient, TlsClients};
