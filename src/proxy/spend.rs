//! Token budgets on the request path: what a request is expected to use, the client's token
//! reservation (after the cache, so a HIT spends nothing), the body that asks a stream for its
//! usage, and the settlement once the answer ended. The clusters' budgets are charged per try
//! ([`charge`], called by the picker) and settled by the upstream stage with the same count.

use super::ctx::Ctx;
use super::{answer, request, Switchyard};
use crate::body::RequestBody;
use crate::downstream::Downstream;
use crate::limits::{Counted, Refused, Reservation};
use crate::metrics::Metrics;
use crate::respond::{self, JsonError};
use crate::snapshot::{Route, Snapshot};
use crate::tokens::{self, Meter};
use pingora::Result;

/// The token accounting of one request.
#[derive(Default)]
pub(super) struct Spend {
    /// Some token budget applies to the request.
    pub on: bool,
    /// Tokens it is expected to use (prompt and completion).
    pub estimate: u64,
    /// Tokens of its prompt.
    prompt: u64,
    /// The body sent upstream when it is not the client's: a stream asked for its usage.
    pub sent: Option<RequestBody>,
    /// Switchyard asked the stream for its usage: the relay drops the usage chunk.
    asked_usage: bool,
    /// The tokens reserved in the client's limit.
    client: Option<Reservation>,
}

impl Spend {
    /// The meter the relay reads the answer with.
    pub fn meter(&self) -> Meter {
        if self.on {
            Meter::new(self.prompt, self.asked_usage)
        } else {
            Meter::off()
        }
    }

    /// The request ended having used `used` tokens (0 when nothing was served).
    pub fn settle(&mut self, used: u64) {
        if let Some(r) = self.client.take() {
            r.settle(used);
        }
    }
}

/// Does a token budget apply to requests on `route` (its client limit, or a cluster's budget)?
fn counts_tokens(snap: &Snapshot, route: &Route) -> bool {
    route
        .client_limit
        .as_ref()
        .is_some_and(|l| l.counts_tokens())
        || route
            .cfg
            .split
            .iter()
            .any(|t| (snap.clusters[t.cluster].budget.as_ref()).is_some_and(|b| b.counts_tokens()))
}

impl Switchyard {
    /// Estimate the request's tokens and reserve them in the client's token limit; `None` when
    /// the client is over it (and was answered 429, or 503 when a shared limit could not decide).
    pub(super) async fn reserve_tokens(
        &self,
        client: &mut impl Downstream,
        ctx: &mut Ctx,
        snap: &Snapshot,
        route: &Route,
        body: &RequestBody,
        rid: &str,
    ) -> Result<Option<Spend>> {
        if !counts_tokens(snap, route) {
            return Ok(Some(Spend::default()));
        }
        let mut spend = Spend {
            on: true,
            estimate: tokens::estimate(body),
            prompt: tokens::prompt_estimate(body),
            sent: None,
            asked_usage: false,
            client: None,
        };
        if body.stream() {
            spend.sent = tokens::ask_usage(body).map(RequestBody::new);
            spend.asked_usage = spend.sent.is_some();
        }
        let limit = route.client_limit.as_ref().filter(|l| l.counts_tokens());
        let (Some(limit), Some(cfg)) = (limit, route.cfg.client_limit.as_ref()) else {
            return Ok(Some(spend));
        };
        let key = request::sticky_hash(client, &cfg.key, ctx.identity.client).unwrap_or(0);
        let name = route.cfg.name.as_str();
        let e = match limit.reserve(key, spend.estimate).await {
            Ok(counted) => {
                let m = &self.metrics.token_budget;
                m.with_label_values(&["client", name, "reserved"])
                    .inc_by(spend.estimate);
                let settled = m.with_label_values(&["client", name, "settled"]);
                spend.client = Some(Reservation::client(
                    limit.clone(),
                    key,
                    counted,
                    spend.estimate,
                    settled,
                ));
                return Ok(Some(spend));
            }
            Err(Refused::Over(wait)) => {
                let msg = "this client's token budget is used up; retry later";
                JsonError::new(429, "rate_limited", msg)
                    .retry_after(respond::retry_after_secs(wait))
            }
            Err(Refused::Unavailable) => unavailable(),
        };
        self.metrics
            .rate_limited
            .with_label_values(&["client", name])
            .inc();
        answer::local(client, ctx, &e, rid, &[])
            .await
            .map(|()| None)
    }
}

/// The answer when a shared limit could not be decided and `shared.on_error` is `deny`.
pub(super) fn unavailable() -> JsonError {
    JsonError::new(
        503,
        "shared_tier_unavailable",
        "the shared rate-limit tier cannot be reached; retry shortly",
    )
    .retry_after(1)
}

/// Take one try's request (and `tokens` tokens) from cluster `ci`'s budget, if it has one,
/// unless they were taken while waiting for it (`prepaid`); the tokens as a reservation to
/// settle with what the try's answer used.
pub(super) async fn charge(
    snap: &Snapshot,
    metrics: &Metrics,
    ci: usize,
    tokens: u64,
    prepaid: Option<(usize, Counted)>,
) -> std::result::Result<Option<Reservation>, Refused> {
    let cluster = &snap.clusters[ci];
    let Some(budget) = &cluster.budget else {
        return Ok(None);
    };
    let counted = match prepaid.filter(|p| p.0 == ci) {
        Some((_, c)) => c,
        None => budget.take(tokens).await?,
    };
    if !budget.counts_tokens() {
        return Ok(None);
    }
    let labels = |kind| ["upstream", cluster.cfg.name.as_str(), kind];
    let m = &metrics.token_budget;
    m.with_label_values(&labels("reserved")).inc_by(tokens);
    let settled = m.with_label_values(&labels("settled"));
    Ok(Some(Reservation::budget(
        budget.clone(),
        counted,
        tokens,
        settled,
    )))
}
