//! How much may reach an upstream, and how much one client may send: request budgets per cluster,
//! per-client limits per route, the admission queue where requests wait when every peer of a
//! cluster is at its `max_inflight`, and the retry budget of each route.
//!
//! Budgets and client limits are traits ([`RequestBudget`], [`ClientLimit`]) with two
//! implementations, chosen per limit when the snapshot is built: [`local`] to the process (GCRA
//! via the `governor` crate for requests, [`bucket`] for tokens) and [`shared`] by every instance
//! through the shared tier (one Lua script per decision), which falls back to a local one when
//! the tier cannot answer (`shared.on_error: local`).
//!
//! Both count requests (`requests_per_minute`) and tokens (`tokens_per_minute`). Tokens are
//! reserved before a request goes out, from an estimate, and settled when its answer ends with
//! what it used ([`Reservation`]): the difference is given back or charged.
//!
//! Everything here lives in a [`LimiterRegistry`] outside the config snapshot, reused across
//! reloads while its settings are unchanged: a reload must not hand out a fresh burst or reset a
//! retry budget.

pub mod bucket;
pub mod local;
mod queue;
mod registry;
mod retry;
pub mod shared;
mod slots;

pub use queue::{AdmissionQueue, QueueSlot};
pub use registry::LimiterRegistry;
pub use retry::RetryBudget;
pub use slots::{RequestSlot, RequestSlots};

use async_trait::async_trait;
use prometheus::IntCounter;
use std::sync::Arc;
use std::time::Duration;

/// Why a limit said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Over the limit: there is room again after this long.
    Over(Duration),
    /// The shared tier could not decide in time, and `shared.on_error` is `deny`.
    Unavailable,
}

/// Which bucket a take was counted in, so that its settlement goes to the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// This process's own bucket.
    Local,
    /// The shared tier's.
    Shared,
}

/// A cluster's upstream budget: how many requests and tokens its upstream may see.
#[async_trait]
pub trait RequestBudget: Send + Sync {
    /// Take one request and `tokens` tokens (an estimate, settled later) now, or say why not.
    async fn take(&self, tokens: u64) -> Result<Counted, Refused>;
    /// Wait (at most `limit`) for the budget, then take it; `None` if it did not come in time.
    async fn wait(&self, tokens: u64, limit: Duration) -> Option<Counted>;
    /// A take of `reserved` tokens used `used`: give back or charge the difference.
    async fn settle(&self, counted: Counted, reserved: u64, used: u64);
    /// Does it count tokens (`tokens_per_minute`)?
    fn counts_tokens(&self) -> bool;
}

/// A route's per-client limit, keyed by a hash of the client's key.
#[async_trait]
pub trait ClientLimit: Send + Sync {
    /// Count one request of `client` (a no-op without `requests_per_minute`).
    async fn check(&self, client: u64) -> Result<Counted, Refused>;
    /// Reserve `tokens` tokens for `client` (a no-op without `tokens_per_minute`).
    async fn reserve(&self, client: u64, tokens: u64) -> Result<Counted, Refused>;
    /// A reservation of `reserved` tokens used `used`: give back or charge the difference.
    async fn settle(&self, client: u64, counted: Counted, reserved: u64, used: u64);
    /// Does it count tokens (`tokens_per_minute`)?
    fn counts_tokens(&self) -> bool;
}

/// Where a reservation's tokens were taken.
enum Holder {
    Budget(Arc<dyn RequestBudget>),
    Client(Arc<dyn ClientLimit>, u64),
}

/// Tokens reserved for one request (or one try) before it went out. Settle it with what the
/// answer used; dropped unsettled, the estimate stays charged.
pub struct Reservation {
    holder: Holder,
    counted: Counted,
    tokens: u64,
    /// `switchyard_token_budget_tokens_total{kind="settled"}` of the limit.
    settled: IntCounter,
}

impl Reservation {
    /// `tokens` taken from a cluster's budget.
    pub fn budget(
        b: Arc<dyn RequestBudget>,
        counted: Counted,
        tokens: u64,
        settled: IntCounter,
    ) -> Reservation {
        Reservation {
            holder: Holder::Budget(b),
            counted,
            tokens,
            settled,
        }
    }

    /// `tokens` taken from a client's limit.
    pub fn client(
        l: Arc<dyn ClientLimit>,
        client: u64,
        counted: Counted,
        tokens: u64,
        settled: IntCounter,
    ) -> Reservation {
        Reservation {
            holder: Holder::Client(l, client),
            counted,
            tokens,
            settled,
        }
    }

    /// The tokens reserved.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Settle with `used` tokens, in the background: nobody waits for it.
    pub fn settle(self, used: u64) {
        self.settled.inc_by(used);
        if used == self.tokens {
            return;
        }
        let (counted, reserved) = (self.counted, self.tokens);
        let holder = self.holder;
        tokio::spawn(async move {
            match holder {
                Holder::Budget(b) => b.settle(counted, reserved, used).await,
                Holder::Client(l, c) => l.settle(c, counted, reserved, used).await,
            }
        });
    }
}

/// `used - reserved`, as a signed count.
pub(crate) fn delta(reserved: u64, used: u64) -> i64 {
    let d = i128::from(used) - i128::from(reserved);
    i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX })
}
