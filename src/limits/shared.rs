//! Limits shared by every instance through the shared tier: the same buckets as the local ones,
//! kept in Redis and decided by one Lua script per decision (`shared::gcra`), so that N
//! instances together allow what one would. Each also holds a local limit with the same
//! settings, which decides alone when the tier cannot answer within `shared.timeout` and
//! `shared.on_error` is `local`; with `deny` such a decision is [`Refused::Unavailable`].
//!
//! Bucket keys name the limit and its settings (`{prefix}budget:{cluster}:r{rpm}b{burst}` and
//! `...:t{tpm}`, `{prefix}client:{route}:...:{client}`): instances configured alike share a
//! bucket, and a change of settings starts a new one, as a local bucket is rebuilt.

use super::local::{LocalBudget, LocalClientLimit};
use super::{delta, ClientLimit, Counted, Refused, RequestBudget};
use crate::config::{ClientLimitConfig, OnError, RateLimitConfig};
use crate::shared::gcra::{self, Bucket, Decision};
use crate::shared::{Op, Tier};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// What to do when the tier failed: the local decision, or a refusal.
async fn fallback<F: std::future::Future<Output = Result<Counted, Refused>>>(
    tier: &Tier,
    op: Op,
    local: F,
) -> Result<Counted, Refused> {
    tier.fell_back(op);
    match tier.on_error() {
        OnError::Local => local.await,
        OnError::Deny => Err(Refused::Unavailable),
    }
}

fn decided(d: Decision) -> Result<Counted, Refused> {
    match d {
        Decision::Allowed => Ok(Counted::Shared),
        Decision::Wait(w) => Err(Refused::Over(w)),
    }
}

/// A cluster's budget shared by the fleet.
pub struct SharedBudget {
    tier: Arc<Tier>,
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    local: LocalBudget,
}

impl SharedBudget {
    pub fn new(tier: Arc<Tier>, cluster: &str, cfg: &RateLimitConfig) -> SharedBudget {
        let base = format!("{}budget:{cluster}", tier.prefix());
        SharedBudget {
            requests: cfg.requests_per_minute.map(|r| {
                let key = format!("{base}:r{r}b{}", cfg.burst);
                Bucket::per_minute(key, r, u64::from(cfg.burst))
            }),
            tokens: cfg
                .tokens_per_minute
                .map(|t| Bucket::per_minute(format!("{base}:t{t}"), t, u64::from(t))),
            local: LocalBudget::new(cfg.requests_per_minute, cfg.burst, cfg.tokens_per_minute),
            tier,
        }
    }
}

#[async_trait]
impl RequestBudget for SharedBudget {
    async fn take(&self, tokens: u64) -> Result<Counted, Refused> {
        let mut take = Vec::with_capacity(2);
        if let Some(b) = &self.requests {
            take.push((b, 1));
        }
        if let Some(b) = &self.tokens {
            take.push((b, tokens));
        }
        match gcra::take(&self.tier, &take).await {
            Ok(d) => decided(d),
            Err(_) => fallback(&self.tier, Op::Limit, self.local.take(tokens)).await,
        }
    }

    async fn wait(&self, tokens: u64, limit: Duration) -> Option<Counted> {
        let until = crate::deadline::from_now(limit);
        // Bounded: each round sleeps until the bucket said it has room (at least 5ms).
        for _ in 0..1000 {
            match self.take(tokens).await {
                Ok(c) => return Some(c),
                Err(Refused::Over(wait)) => {
                    let wait = wait.max(Duration::from_millis(5));
                    if crate::deadline::from_now(wait) > until {
                        return None;
                    }
                    tokio::time::sleep(wait).await;
                }
                Err(Refused::Unavailable) => return None,
            }
        }
        None
    }

    async fn settle(&self, counted: Counted, reserved: u64, used: u64) {
        let Some(b) = &self.tokens else { return };
        match counted {
            Counted::Local => self.local.settle_now(reserved, used),
            Counted::Shared => {
                let d = delta(reserved.min(b.capacity), used);
                if gcra::adjust(&self.tier, b, d).await.is_err() {
                    self.tier.fell_back(Op::Settle);
                }
            }
        }
    }

    fn counts_tokens(&self) -> bool {
        self.tokens.is_some()
    }
}

/// A route's per-client limit shared by the fleet.
pub struct SharedClientLimit {
    tier: Arc<Tier>,
    /// `{prefix}client:{route}:r{rpm}b{burst}` (the client is appended).
    requests: Option<(String, u32, u64)>,
    tokens: Option<(String, u32)>,
    local: LocalClientLimit,
}

impl SharedClientLimit {
    pub fn new(tier: Arc<Tier>, route: &str, cfg: &ClientLimitConfig) -> SharedClientLimit {
        let base = format!("{}client:{route}", tier.prefix());
        SharedClientLimit {
            requests: cfg.requests_per_minute.map(|r| {
                (
                    format!("{base}:r{r}b{}", cfg.burst),
                    r,
                    u64::from(cfg.burst),
                )
            }),
            tokens: cfg.tokens_per_minute.map(|t| (format!("{base}:t{t}"), t)),
            local: LocalClientLimit::new(cfg.requests_per_minute, cfg.burst, cfg.tokens_per_minute),
            tier,
        }
    }

    fn token_bucket(&self, client: u64) -> Option<Bucket> {
        let (key, t) = self.tokens.as_ref()?;
        Some(Bucket::per_minute(
            format!("{key}:{client:016x}"),
            *t,
            u64::from(*t),
        ))
    }
}

#[async_trait]
impl ClientLimit for SharedClientLimit {
    async fn check(&self, client: u64) -> Result<Counted, Refused> {
        let Some((key, rpm, burst)) = &self.requests else {
            return Ok(Counted::Shared);
        };
        let b = Bucket::per_minute(format!("{key}:{client:016x}"), *rpm, *burst);
        match gcra::take(&self.tier, &[(&b, 1)]).await {
            Ok(d) => decided(d),
            Err(_) => fallback(&self.tier, Op::Limit, self.local.check(client)).await,
        }
    }

    async fn reserve(&self, client: u64, tokens: u64) -> Result<Counted, Refused> {
        let Some(b) = self.token_bucket(client) else {
            return Ok(Counted::Shared);
        };
        match gcra::take(&self.tier, &[(&b, tokens)]).await {
            Ok(d) => decided(d),
            Err(_) => fallback(&self.tier, Op::Limit, self.local.reserve(client, tokens)).await,
        }
    }

    async fn settle(&self, client: u64, counted: Counted, reserved: u64, used: u64) {
        let Some(b) = self.token_bucket(client) else {
            return;
        };
        match counted {
            Counted::Local => self.local.settle_now(client, reserved, used),
            Counted::Shared => {
                let d = delta(reserved.min(b.capacity), used);
                if gcra::adjust(&self.tier, &b, d).await.is_err() {
                    self.tier.fell_back(Op::Settle);
                }
            }
        }
    }

    fn counts_tokens(&self) -> bool {
        self.tokens.is_some()
    }
}
