//! The tries of one request, until one reaches its commit point: each goes where the [`Picker`]
//! says, after a jittered backoff (or the peer's own `Retry-After`) and within the route's retry
//! budget when it is a retry, under its own timeouts, and feeds its peer's breaker. With
//! `hedge`, a try that has not reached its commit point after `hedge.after` gets a second one on
//! another peer; the first of them to commit wins and the other is dropped (its connection
//! closed, its breaker admission given back without a verdict). Nothing reaches the client from
//! here; the caller relays the committed try or answers the failure.

use super::ctx::Ctx;
use super::forward::Forward;
use super::pick::{Ask, Picker, Refusal};
use super::retry;
use super::running::{Launch, Running, TryFuture, Work};
use super::trace;
use super::verdict::Ticket;
use crate::body::RequestBody;
use crate::keys;
use crate::limits::Reservation;
use crate::metrics::Metrics;
use crate::snapshot::{Route, Snapshot};
use crate::upstream::{Ready, TryError};
use futures_util::stream::{FuturesUnordered, StreamExt};
use pingora::connectors::TransportConnector;
use std::borrow::Cow;
use tokio::time::Instant;

/// One request's tries.
pub struct Tries<'a> {
    pub snap: &'a Snapshot,
    pub route: &'a Route,
    pub picker: Picker<'a>,
    pub forward: &'a Forward,
    pub body: &'a RequestBody,
    pub stream: bool,
    pub deadline: Instant,
    pub connector: &'a TransportConnector,
    pub metrics: &'a Metrics,
}

/// A try that reached its commit point, with what it holds until its response ends.
pub struct Committed<'a> {
    pub ready: Ready,
    /// The breaker's admission, to be given back with the relay's outcome.
    pub ticket: Ticket<'a>,
    /// The tokens taken from the cluster's token budget, to settle when the answer ends.
    pub reservation: Option<Reservation>,
    _work: Option<Work<'a>>,
}

/// How the tries ended.
// Committed is the common case and is moved once; boxing it would allocate on every request.
#[allow(clippy::large_enum_variant)]
pub enum Outcome<'a> {
    Committed(Committed<'a>),
    /// No try committed: the last failure (with its cluster) and why no further try started.
    Failed {
        last: Option<(usize, TryError)>,
        refusal: Option<Refusal>,
    },
}

/// The last failure: where it happened and what it was.
#[derive(Clone, Copy)]
struct Failure {
    cluster: usize,
    peer: usize,
    error: TryError,
}

/// Why no try was started.
enum Stop {
    Refused(Refusal),
    /// The retry budget, the attempts or the time left allow no more.
    Spent,
}

/// The tries of a request while they run.
struct Flight<'a> {
    running: Vec<Option<Running<'a>>>,
    futures: FuturesUnordered<TryFuture<'a>>,
    last: Option<Failure>,
    /// An answer that matched a `retry_on` answer condition: the client gets it if no other try
    /// commits (the peer's own words beat a made-up error).
    held: Option<(Ready, Ticket<'a>)>,
    hedges: u32,
}

impl<'a> Tries<'a> {
    /// Run tries until one commits or none may follow; `ctx` records each try.
    pub async fn run(mut self, ctx: &mut Ctx) -> pingora::Result<Outcome<'a>> {
        let mut f = Flight {
            running: Vec::with_capacity(self.route.cfg.retry.attempts as usize),
            futures: FuturesUnordered::new(),
            last: None,
            held: None,
            hedges: 0,
        };
        let mut refusal = None;
        // Try `id` of this run is try `spans + id` of the request's trace (a resumed stream
        // runs the tries loop again).
        let spans = trace::tries_started(ctx);
        loop {
            if f.futures.is_empty() {
                match self.start(ctx, &mut f, false).await? {
                    Ok(()) => continue,
                    Err(Stop::Refused(r)) => refusal = Some(r),
                    Err(Stop::Spent) => {}
                }
                break;
            }
            let hedge_at = self.hedge_due(ctx, &f);
            let next = f.futures.next();
            let done = match hedge_at {
                Some(at) => tokio::select! {
                    done = next => done,
                    () = tokio::time::sleep_until(at) => None,
                },
                None => next.await,
            };
            let Some((id, result)) = done else {
                // A hedge is due (`futures` is never empty here).
                f.hedges += 1;
                if let Err(stop) = self.start(ctx, &mut f, true).await? {
                    self.hedge_outcome("skipped");
                    if let Stop::Refused(r) = stop {
                        log::debug!("hedge not started: {r:?}");
                    }
                }
                continue;
            };
            let Some(run) = f.running.get_mut(id).and_then(Option::take) else {
                continue;
            };
            match result {
                Ok(ready) => {
                    let status = Some(ready.header.status.as_u16());
                    if let Some((run, ready)) = self.judge(&mut f, run, ready).await {
                        trace::try_ended(ctx, spans + id, "committed", status);
                        for (lost, _) in f.running.iter().enumerate().filter(|(_, r)| r.is_some()) {
                            trace::try_ended(ctx, spans + lost, "cancelled", None);
                        }
                        return Ok(self.commit(ctx, f, run, ready));
                    }
                    let why = f.last.map_or("", |l| retry::policy(l.error).reason);
                    trace::try_ended(ctx, spans + id, why, status);
                }
                Err(e) => {
                    trace::try_ended(ctx, spans + id, retry::policy(e).reason, None);
                    self.failed(&mut f, run, e, ctx.tries);
                }
            }
        }
        if ctx.tries > 0 {
            self.route.attempts.observe(f64::from(ctx.tries));
        }
        if let Some((ready, ticket)) = f.held.take() {
            return Ok(Outcome::Committed(Committed {
                ready,
                ticket,
                reservation: None,
                _work: None,
            }));
        }
        let last = f.last.map(|l| (l.cluster, l.error));
        Ok(Outcome::Failed { last, refusal })
    }

    /// When the one try in flight gets a hedge, if the route hedges and one is left.
    fn hedge_due(&self, ctx: &Ctx, f: &Flight<'a>) -> Option<Instant> {
        let h = self.route.cfg.hedge?;
        if f.hedges >= h.max || ctx.tries >= self.route.cfg.retry.attempts || f.futures.len() != 1 {
            return None;
        }
        let started = f.running.iter().flatten().map(|r| r.started).max()?;
        Some((started + h.after).min(self.deadline))
    }

    fn hedge_outcome(&self, outcome: &str) {
        self.metrics
            .hedges
            .with_label_values(&[self.route.cfg.name.as_str(), outcome])
            .inc();
    }

    /// Start the first try, a retry of the last failure, or a hedge of the try in flight.
    async fn start(
        &mut self,
        ctx: &mut Ctx,
        f: &mut Flight<'a>,
        hedge: bool,
    ) -> pingora::Result<Result<(), Stop>> {
        let retry_cfg = &self.route.cfg.retry;
        let retry_of = f.last.filter(|_| !hedge);
        let first = retry_of.is_none() && !hedge;
        // (A first try past the deadline still runs, and fails as `Deadline`: a 504.)
        if ctx.tries >= retry_cfg.attempts || (!first && Instant::now() >= self.deadline) {
            return Ok(Err(Stop::Spent));
        }
        if let Some(l) = retry_of {
            if !retry::policy(l.error).retried_by(&retry_cfg.on) {
                return Ok(Err(Stop::Spent));
            }
        }
        let ask = Ask {
            last_try: ctx.tries + 1 == retry_cfg.attempts,
            hedge,
        };
        let a = match self.picker.next(self.deadline, ask).await {
            Ok(a) => a,
            Err(r) => return Ok(Err(Stop::Refused(r))),
        };
        if hedge && !self.route.retry_budget.try_retry(&retry_cfg.budget) {
            return Ok(Err(Stop::Spent));
        }
        if let Some(l) = retry_of {
            // A retry: within the route's retry budget (when it needs one), counted, after a
            // jittered pause, or the peer's own wait when it is the same peer again.
            let policy = retry::policy(l.error);
            if policy.needs_budget && !self.route.retry_budget.try_retry(&retry_cfg.budget) {
                return Ok(Err(Stop::Spent));
            }
            let mut pause = retry::backoff(retry_cfg, ctx.tries);
            if let retry::Again::PeerAfter(wait) = policy.again {
                if (a.cluster, a.peer) == (l.cluster, l.peer) {
                    pause = pause.max(wait);
                }
            }
            if Instant::now() + pause >= self.deadline {
                return Ok(Err(Stop::Spent));
            }
            self.metrics
                .retries
                .with_label_values(&[
                    self.route.cfg.name.as_str(),
                    self.snap.clusters[l.cluster].cfg.name.as_str(),
                    policy.reason,
                ])
                .inc();
            tokio::time::sleep(pause).await;
        }
        let (cluster, peer) = self.picker.at(a.cluster, a.peer);
        ctx.tries += 1;
        ctx.cluster = Some(a.cluster);
        ctx.peer = Some(a.peer);
        // The cluster's header; with an API-key pool, this try carries its own key (and the
        // client's credentials are gone).
        let head = self.forward.for_try(a.cluster, cluster, peer, a.key)?;
        // Each try is a span of its own: a retry's or hedge's head carries its own span id.
        let reason = match retry_of {
            _ if hedge => Some("hedge"),
            Some(l) => Some(retry::policy(l.error).reason),
            None => None,
        };
        let head = trace::try_started(ctx, head, (a.cluster, a.peer), reason);
        let key_statuses = match (&cluster.keys, a.key) {
            (Some(pool), Some(_)) => pool.capture_statuses.as_slice(),
            _ => &[][..],
        };
        let answers = self.route.answer_statuses.as_slice();
        let capture_statuses = match (key_statuses.is_empty(), answers.is_empty()) {
            (_, true) => Cow::Borrowed(key_statuses),
            (true, false) => Cow::Borrowed(answers),
            (false, false) => Cow::Owned([key_statuses, answers].concat()),
        };
        let launch = Launch {
            connector: self.connector,
            target: &peer.target,
            head,
            body: self.body.bytes(),
            stream: self.stream,
            timeouts: &self.route.cfg.timeouts,
            deadline: self.deadline,
            retry_statuses: &retry_cfg.on.statuses,
            capture_statuses,
        };
        let id = f.running.len();
        f.running
            .push(Some(Running::new(a, &peer.inflight_gauge, hedge)));
        f.futures.push(launch.run(id));
        Ok(Ok(()))
    }

    /// A try reached its commit point: `Some` to commit it, `None` when its answer says to try
    /// elsewhere (a rejected API key, a `retry_on` answer condition).
    async fn judge(
        &mut self,
        f: &mut Flight<'a>,
        run: Running<'a>,
        ready: Ready,
    ) -> Option<(Running<'a>, Ready)> {
        let (cluster, _) = self.picker.at(run.cluster, run.peer);
        cluster.latency.observe(ready.ttfb.as_secs_f64());
        let status = ready.header.status.as_u16();
        let body = ready.first.as_deref().unwrap_or_default();
        if let (Some(pool), Some(k)) = (&cluster.keys, run.key) {
            if keys::judge(pool, k, status, &ready.header.headers, body, self.metrics) {
                // The key's fault, not the peer's: another key may use this peer.
                if run.hedge {
                    self.hedge_outcome("failed");
                }
                drop(run.ticket);
                // The provider refused the key: nothing was generated.
                if let Some(r) = run.reservation {
                    r.settle(0);
                }
                self.picker.key_rejected(run.cluster, run.peer);
                ready.abandon().await;
                self.note(f, run.cluster, run.peer, TryError::KeyRejected(status));
                return None;
            }
        }
        if self.route.answer_statuses.contains(&status)
            && self.route.cfg.retry.on.answer_matches(status, body)
        {
            if run.hedge {
                self.hedge_outcome("failed");
            }
            self.note(f, run.cluster, run.peer, TryError::Matched(status));
            f.held = Some((ready, run.ticket));
            return None;
        }
        Some((run, ready))
    }

    /// Remember a failure of the try to `(cluster, peer)` and tell the picker.
    fn note(&mut self, f: &mut Flight<'a>, cluster: usize, peer: usize, error: TryError) {
        self.picker
            .failed(cluster, peer, retry::policy(error).again);
        f.last = Some(Failure {
            cluster,
            peer,
            error,
        });
    }

    /// A try failed before its commit point.
    fn failed(&mut self, f: &mut Flight<'a>, run: Running<'a>, e: TryError, tries: u32) {
        let (cluster, peer) = self.picker.at(run.cluster, run.peer);
        log::debug!("try {tries} to {} failed: {e:?}", peer.state.label);
        if matches!(e, TryError::Status(_) | TryError::RetryAfter { .. }) {
            cluster.latency.observe(run.started.elapsed().as_secs_f64());
        }
        if run.hedge {
            self.hedge_outcome("failed");
        }
        run.ticket.try_failed(e);
        // A try that timed out or was cut may still have been generated (and billed): its
        // estimate stays charged; the others are given back.
        if let Some(r) = run.reservation {
            if !matches!(e, TryError::FirstByteTimeout | TryError::Reset) {
                r.settle(0);
            }
        }
        self.note(f, run.cluster, run.peer, e);
    }

    /// Commit `ready`, the answer of `run`; every other try in flight is dropped with `f`.
    fn commit(&self, ctx: &mut Ctx, f: Flight<'a>, run: Running<'a>, ready: Ready) -> Outcome<'a> {
        if run.hedge {
            self.hedge_outcome("won");
        }
        for lost in f.running.iter().flatten().filter(|r| r.hedge) {
            log::debug!("hedge to cluster {} lost", lost.cluster);
            self.hedge_outcome("lost");
        }
        ctx.cluster = Some(run.cluster);
        ctx.peer = Some(run.peer);
        self.route.attempts.observe(f64::from(ctx.tries));
        Outcome::Committed(Committed {
            ready,
            ticket: run.ticket,
            reservation: run.reservation,
            _work: Some(run.work),
        })
    }
}
