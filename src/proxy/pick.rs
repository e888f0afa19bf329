//! Choosing where the next try goes, and waiting for room when there is none yet.
//!
//! A try needs a peer that is usable (healthy, breaker admitting, not drained), below its
//! `max_inflight`, in a cluster with a usable API key (if it has a pool) and with room in its
//! request budget (if it has one). Peers this request has not tried yet come first; the cluster
//! order is the split's choice, then the others heaviest first, except that `retry.other_cluster`
//! sends the last try (`last`) or every retry (`next`) to a cluster not tried yet. When no untried
//! peer can take a retry, the peer that failed may take it again (a single-endpoint provider),
//! unless its failure rules that out ([`Again`]). When no cluster can take the try now:
//! - if peers are only busy (`max_inflight`), the request waits in the cluster's admission queue,
//!   in arrival order, up to the queue timeout;
//! - if clusters are only over budget, it waits for the budget up to `rate_limit.queue_timeout`;
//! - if a shared budget could not be decided (`shared.on_error: deny`), it is refused with 503;
//! - otherwise there is no peer for it.
//!
//! A budget that counts tokens is charged the request's estimate with each try; the try carries
//! the [`Reservation`](crate::limits::Reservation) to be settled with what its answer used.
//!
//! Inside a cluster, a peer that reports itself full (`load_report`: KV cache full, or more
//! requests waiting than `max_waiting`) is taken only when no other peer can be.
//!
//! A hedge never waits and never goes to a peer already tried. The place under `max_inflight` is
//! reserved by the pick itself (a compare-and-swap on the peer's in-flight count) and held
//! through the backoff, so concurrent requests never overfill a peer.
//!
//! The [`Picker`] is the only keeper of what this request tried: the peers, the peers and
//! clusters it must not go back to, and the API keys (never sent twice to the same cluster).

use super::affinity::Keys;
use super::retry::Again;
use super::spend;
use super::verdict::Ticket;
use crate::config::OtherCluster;
use crate::limits::{Counted, QueueSlot, Refused};
use crate::metrics::Metrics;
use crate::peer::InflightGuard;
use crate::snapshot::{Cluster, Peer, Route, Snapshot};
use std::time::Duration;
use tokio::time::Instant;

mod outcome;
pub use outcome::{Admitted, Ask, Refusal};

/// The peer choice of one request across its tries.
pub struct Picker<'a> {
    snap: &'a Snapshot,
    route: &'a Route,
    /// The cluster the split chose.
    first: usize,
    /// The request's key for hashing balancers, per cluster.
    keys: Keys,
    metrics: &'a Metrics,
    /// (cluster, peer) pairs tried.
    tried: Vec<(usize, usize)>,
    /// Tried peers that must not take this request again.
    spent: Vec<(usize, usize)>,
    /// Clusters that must not take this request again.
    spent_clusters: Vec<usize>,
    /// Clusters tries were started in.
    visited: Vec<usize>,
    /// The last failure lets a tried peer take the retry.
    again: bool,
    /// (cluster, key) pairs used.
    tried_keys: Vec<(usize, usize)>,
    /// Tokens the request is expected to use, taken from token budgets with each try.
    tokens: u64,
}

enum Found {
    Peer(usize, usize, InflightGuard),
    /// Nothing now, but this cluster has peers that are only busy.
    Busy(usize),
    None,
}

impl<'a> Picker<'a> {
    /// The picker of a request on `route` whose split chose cluster `first`.
    pub fn new(
        snap: &'a Snapshot,
        route: &'a Route,
        first: usize,
        keys: Keys,
        metrics: &'a Metrics,
    ) -> Self {
        Picker {
            snap,
            route,
            first,
            keys,
            metrics,
            tried: Vec::with_capacity(route.cfg.retry.attempts as usize),
            spent: Vec::new(),
            spent_clusters: Vec::new(),
            visited: Vec::with_capacity(2),
            again: false,
            tried_keys: Vec::new(),
            tokens: 0,
        }
    }

    /// The request is expected to use `tokens` tokens (charged to the budgets that count them).
    pub fn with_tokens(mut self, tokens: u64) -> Self {
        self.tokens = tokens;
        self
    }

    /// The cluster and peer at these indices.
    pub fn at(&self, cluster: usize, peer: usize) -> (&'a Cluster, &'a Peer) {
        let c = &self.snap.clusters[cluster];
        (c, &c.peers[peer])
    }

    /// Never pick `(cluster, peer)` for this request (a peer whose committed stream broke).
    pub fn avoid(&mut self, cluster: usize, peer: usize) {
        self.tried.push((cluster, peer));
        self.spent.push((cluster, peer));
    }

    /// The try to `(cluster, peer)` failed for its API key, not the peer: the peer may be tried
    /// again with another key.
    pub fn key_rejected(&mut self, cluster: usize, peer: usize) {
        self.tried.retain(|t| *t != (cluster, peer));
    }

    /// The try to `(cluster, peer)` failed; `again` (the retry table's) says where the retry may
    /// go besides a peer not tried yet.
    pub fn failed(&mut self, cluster: usize, peer: usize, again: Again) {
        let max_wait = self.route.cfg.retry.max_retry_after;
        self.again = match again {
            Again::Peer => true,
            Again::PeerAfter(wait) if wait <= max_wait => true,
            Again::PeerAfter(_) => {
                self.spent.push((cluster, peer));
                false
            }
            Again::OtherCluster => {
                self.spent_clusters.push(cluster);
                false
            }
        };
    }

    /// Is `cluster` put after the others for this try (`retry.other_cluster`)?
    fn demoted(&self, cluster: usize, ask: Ask) -> bool {
        match self.route.cfg.retry.other_cluster {
            OtherCluster::Never => false,
            OtherCluster::Last => {
                ask.last_try && !self.visited.is_empty() && self.visited == [cluster]
            }
            OtherCluster::Next => self.visited.contains(&cluster),
        }
    }

    /// A peer of `cluster` (index `ci`) that `candidate` takes and that is below its
    /// `max_inflight`; one that reports itself full only when no other can take the request.
    fn pick_in(
        &self,
        cluster: &Cluster,
        ci: usize,
        candidate: &dyn Fn(usize) -> bool,
        now: Instant,
    ) -> Option<usize> {
        let reporting = cluster.cfg.load_report.is_some();
        [true, false]
            .into_iter()
            .filter(|skip_full| *skip_full || reporting)
            .find_map(|skip_full| {
                cluster.balancer.pick(
                    self.keys.of(ci),
                    |pi| {
                        candidate(pi)
                            && cluster.peers[pi].has_capacity()
                            && !(skip_full && reporting && cluster.reports_full(pi, now))
                    },
                    |pi| cluster.load(pi, now),
                )
            })
    }

    /// Pick a peer and reserve its place: peers not tried yet (`again` false) or tried peers
    /// that may take the request again (`again` true), the clusters in the order of the split,
    /// those [`Picker::demoted`] last.
    fn find(&self, skip: &[usize], queued_in: Option<usize>, ask: Ask, again: bool) -> Found {
        let now = Instant::now();
        let mut busy = None;
        let base = || {
            let others = self.route.by_weight.iter().copied();
            std::iter::once(self.first).chain(others.filter(|c| *c != self.first))
        };
        let order = base()
            .filter(|c| !self.demoted(*c, ask))
            .chain(base().filter(|c| self.demoted(*c, ask)));
        for ci in order {
            if skip.contains(&ci) || self.spent_clusters.contains(&ci) {
                continue;
            }
            let cluster = &self.snap.clusters[ci];
            if cluster.keys.as_ref().is_some_and(|k| !k.any_usable(now)) {
                continue;
            }
            // Requests already waiting for this cluster go first: a newcomer joins the queue.
            if let Some(q) = &cluster.queue {
                if q.waiting() > 0 && queued_in != Some(ci) {
                    busy.get_or_insert(ci);
                    continue;
                }
            }
            let checked = cluster.checked();
            let candidate = |pi: usize| {
                let p = &cluster.peers[pi];
                self.tried.contains(&(ci, pi)) == again
                    && !self.spent.contains(&(ci, pi))
                    && p.usable(checked, now)
            };
            // A lost race for the last place under `max_inflight` is picked again; bounded, as
            // each lost race means another request took a place.
            for _ in 0..4 {
                let Some(pi) = self.pick_in(cluster, ci, &candidate, now) else {
                    break;
                };
                if let Some(guard) = cluster.peers[pi].reserve() {
                    return Found::Peer(ci, pi, guard);
                }
            }
            if (0..cluster.peers.len()).any(candidate) {
                busy.get_or_insert(ci);
            }
        }
        busy.map_or(Found::None, Found::Busy)
    }

    /// Find where the next try goes, waiting for room if needed (never past `deadline`; never
    /// at all for a hedge).
    pub async fn next(&mut self, deadline: Instant, ask: Ask) -> Result<Admitted<'a>, Refusal> {
        let snap = self.snap;
        let metrics = self.metrics;
        let mut skip: Vec<usize> = Vec::new();
        let mut over_budget: Option<(usize, Duration)> = None;
        let mut unavailable: Option<usize> = None;
        let mut prepaid: Option<(usize, Counted)> = None;
        let mut queued: Option<(usize, QueueSlot<'a>, Instant)> = None;
        loop {
            let queued_in = queued.as_ref().map(|q| q.0);
            let found = match self.find(&skip, queued_in, ask, false) {
                Found::None if self.again && !ask.hedge => self.find(&skip, queued_in, ask, true),
                f => f,
            };
            match found {
                Found::Peer(ci, pi, inflight) => {
                    let cluster = &snap.clusters[ci];
                    let key = match &cluster.keys {
                        Some(pool) => {
                            let used: Vec<usize> = self
                                .tried_keys
                                .iter()
                                .filter(|(c, _)| *c == ci)
                                .map(|(_, k)| *k)
                                .collect();
                            match pool.pick(Instant::now(), &used) {
                                Some(k) => Some(k),
                                None => {
                                    skip.push(ci);
                                    continue;
                                }
                            }
                        }
                        None => None,
                    };
                    let charge = spend::charge(snap, metrics, ci, self.tokens, prepaid.take());
                    let reservation = match charge.await {
                        Ok(r) => r,
                        Err(refused) => {
                            skip.push(ci);
                            match refused {
                                Refused::Over(wait) => _ = over_budget.get_or_insert((ci, wait)),
                                Refused::Unavailable => _ = unavailable.get_or_insert(ci),
                            }
                            continue;
                        }
                    };
                    if !self.tried.contains(&(ci, pi)) {
                        self.tried.push((ci, pi));
                    }
                    let Some(ticket) = Ticket::acquire(cluster, &cluster.peers[pi], metrics) else {
                        // The breaker refused: this peer is out for this request.
                        self.spent.push((ci, pi));
                        if let Some(r) = reservation {
                            r.settle(0);
                        }
                        continue;
                    };
                    if let Some(k) = key {
                        self.tried_keys.push((ci, k));
                    }
                    if !self.visited.contains(&ci) {
                        self.visited.push(ci);
                    }
                    if let Some((qc, slot, since)) = queued.take() {
                        metrics
                            .queue_wait
                            .with_label_values(&[snap.clusters[qc].cfg.name.as_str()])
                            .observe(since.elapsed().as_secs_f64());
                        drop(slot);
                    }
                    return Ok(Admitted {
                        cluster: ci,
                        peer: pi,
                        key,
                        ticket,
                        inflight,
                        reservation,
                    });
                }
                Found::Busy(ci) if ask.hedge => return Err(Refusal::Busy { cluster: ci }),
                Found::Busy(ci) => self.queue(ci, &mut queued, deadline).await?,
                Found::None => {
                    let Some((ci, wait)) = over_budget.take() else {
                        return Err(match unavailable {
                            Some(cluster) => Refusal::Unavailable { cluster },
                            None => Refusal::NoPeer,
                        });
                    };
                    let waited = match ask.hedge {
                        true => None,
                        false => self.wait_for_budget(ci, wait, deadline).await,
                    };
                    if let Some(counted) = waited {
                        skip.retain(|c| *c != ci);
                        prepaid = Some((ci, counted));
                        continue;
                    }
                    return Err(Refusal::OverBudget {
                        cluster: ci,
                        retry_after: wait,
                    });
                }
            }
        }
    }

    /// Every candidate of `ci` is busy: join its queue (once) and wait to be woken, up to the
    /// queue timeout and `deadline`.
    async fn queue(
        &self,
        ci: usize,
        queued: &mut Option<(usize, QueueSlot<'a>, Instant)>,
        deadline: Instant,
    ) -> Result<(), Refusal> {
        let cluster = &self.snap.clusters[ci];
        let metrics = self.metrics;
        let Some(q) = &cluster.queue else {
            return Err(Refusal::NoPeer);
        };
        let name = cluster.cfg.name.as_str();
        let now = Instant::now();
        if queued.is_none() {
            let Some(slot) = q.join() else {
                metrics
                    .rate_limited
                    .with_label_values(&["queue", name])
                    .inc();
                return Err(Refusal::Busy { cluster: ci });
            };
            *queued = Some((ci, slot, now));
        }
        metrics
            .queue_depth
            .with_label_values(&[name])
            .set(i64::from(q.waiting()));
        let since = queued.as_ref().map_or(now, |q| q.2);
        let until = (since + q.cfg.timeout).min(deadline);
        if now >= until {
            metrics
                .rate_limited
                .with_label_values(&["queue", name])
                .inc();
            return Err(Refusal::Busy { cluster: ci });
        }
        // Woken when a try to the cluster ends; the periodic re-check is a safety net.
        let nap = (until - now).min(Duration::from_millis(250));
        let _ = tokio::time::timeout(nap, q.notify.notified()).await;
        Ok(())
    }

    /// Every cluster is over budget: wait for `ci`'s (free again in `wait`) if its
    /// `rate_limit.queue_timeout` allows; `true` when the budget was taken.
    async fn wait_for_budget(
        &self,
        ci: usize,
        wait: Duration,
        deadline: Instant,
    ) -> Option<Counted> {
        let cluster = &self.snap.clusters[ci];
        let name = cluster.cfg.name.as_str();
        let limit = cluster
            .cfg
            .rate_limit
            .map_or(Duration::ZERO, |r| r.queue_timeout)
            .min(deadline.saturating_duration_since(Instant::now()));
        if let Some(b) = cluster.budget.as_ref().filter(|_| wait <= limit) {
            let started = Instant::now();
            if let Some(counted) = b.wait(self.tokens, limit).await {
                self.metrics
                    .queue_wait
                    .with_label_values(&[name])
                    .observe(started.elapsed().as_secs_f64());
                return Some(counted);
            }
        }
        self.metrics
            .rate_limited
            .with_label_values(&["upstream", name])
            .inc();
        None
    }
}
