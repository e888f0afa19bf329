//! How much may reach an upstream, and how much one client may send: request budgets per cluster,
//! per-client limits per route, the admission queue where requests wait when every peer of a
//! cluster is at its `max_inflight`, and the retry budget of each route.
//!
//! Budgets and client limits are traits ([`RequestBudget`], [`ClientLimit`]): today's
//! implementations are local to the process (GCRA via the `governor` crate, [`local`]); a tier
//! shared by several instances is a second implementation of the same traits, chosen per limit
//! when the snapshot is built, with no change to the request path.
//!
//! Everything here lives in a [`LimiterRegistry`] outside the config snapshot, reused across
//! reloads while its settings are unchanged: a reload must not hand out a fresh burst or reset a
//! retry budget.

pub mod local;
mod queue;
mod registry;
mod retry;
mod slots;

pub use queue::{AdmissionQueue, QueueSlot};
pub use registry::LimiterRegistry;
pub use retry::RetryBudget;
pub use slots::{RequestSlot, RequestSlots};

use async_trait::async_trait;
use std::time::Duration;

/// A cluster's request budget: how many requests its upstream may see.
#[async_trait]
pub trait RequestBudget: Send + Sync {
    /// Take one request's worth now, or say how long until one is free.
    async fn take(&self) -> Result<(), Duration>;
    /// Wait (at most `limit`) for the budget, then take it; `false` if it did not come in time.
    async fn wait(&self, limit: Duration) -> bool;
}

/// A route's per-client request limit, keyed by a hash of the client's key.
#[async_trait]
pub trait ClientLimit: Send + Sync {
    /// Count one request of `client`; `Err` holds how long until it may send again.
    async fn check(&self, client: u64) -> Result<(), Duration>;
}
