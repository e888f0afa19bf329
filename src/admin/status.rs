//! The documents of the admin listener: `/status`, a peer's breaker, the cache's part of
//! `/status`, and the result of a cache purge.

use crate::snapshot::{Cluster, Peer, Snapshot};
use serde_json::{json, Value};
use tokio::time::Instant;

/// One peer's breaker, as `/health/circuit-breaker` and `/status` show it.
pub fn breaker_json(cluster: &str, p: &Peer, now: Instant) -> Value {
    let b = p.state.breaker.snapshot(now);
    json!({
        "cluster": cluster,
        "peer": p.name,
        "state": b.state,
        "failure_count": b.failure_count,
        "success_count": b.success_count,
        "consecutive_failures": b.consecutive_failures,
        "last_failure_time": b.last_failure_time,
        "opened_until": b.opened_until,
        "open_for_ms": b.open_for_ms,
        "trips": b.trips,
    })
}

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The `/status` document.
pub fn status_json(snap: &Snapshot, last_reload_error: Option<String>) -> Value {
    let now = Instant::now();
    let routes: Vec<Value> = snap
        .routes
        .iter()
        .map(|r| {
            let m = &r.cfg.matcher;
            json!({
                "name": r.cfg.name,
                "match": {
                    "path_prefix": m.path_prefix,
                    "host": m.host,
                    "methods": m.methods.as_ref().map(|ms| ms.iter().map(|m| m.as_str()).collect::<Vec<_>>()),
                },
                "split": r.cfg.split.iter().map(|t| json!({
                    "cluster": snap.clusters[t.cluster].cfg.name,
                    "weight": t.weight,
                })).collect::<Vec<_>>(),
                "inflight": r.inflight.get(),
            })
        })
        .collect();
    let clusters: Vec<Value> = snap
        .clusters
        .iter()
        .map(|c| {
            let checked = c.checked();
            let keys = c.keys.as_ref().map(|pool| {
                pool.keys
                    .iter()
                    .map(|k| json!({"key_id": k.id, "usable": k.is_usable(now), "disabled": k.is_disabled()}))
                    .collect::<Vec<_>>()
            });
            json!({
                "name": c.cfg.name,
                "api_keys": keys,
                "balance": format!("{:?}", c.cfg.balance),
                "health_check": checked,
                "tls": c.cfg.tls.is_some(),
                "dns": dns_json(c),
                "peers": c.peers.iter().enumerate().map(|(pi, p)| json!({
                    "addr": p.state.addr.to_string(),
                    "name": p.state.id.name,
                    "weight": p.weight,
                    "inflight": p.state.inflight(),
                    "load_report": load_json(c, pi, now),
                    "health": p.state.health().as_str(),
                    "usable": p.usable(checked, now),
                    "breaker": breaker_json(&c.cfg.name, p, now),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "generation": snap.generation,
        "loaded_at": rfc3339(snap.loaded_at),
        "config_sha256": snap.digest,
        "last_reload_error": last_reload_error,
        "routes": routes,
        "clusters": clusters,
        "cache": cache_json(snap),
        "shared": snap.shared.as_ref().map(|t| t.status_json()),
    })
}

/// The `dns` part of a cluster in `/status`: each named peer with its latest resolution.
/// A peer's own load report (`load_report`): `null` without one, else what it last said, how
/// long ago, whether that is still used (`fresh`) and whether it makes the peer skipped (`full`).
fn load_json(c: &Cluster, pi: usize, now: Instant) -> Value {
    if c.cfg.load_report.is_none() {
        return Value::Null;
    }
    match c.peers[pi].state.load.latest(now) {
        None => json!({"reported": false}),
        Some((r, age)) => json!({
            "reported": true,
            "waiting": r.waiting,
            "running": r.running,
            "kv_cache_usage": r.kv_usage,
            "age_ms": age.as_millis() as u64,
            "fresh": c.report(pi, now).is_some(),
            "full": c.reports_full(pi, now),
        }),
    }
}

fn dns_json(c: &Cluster) -> Value {
    let names: Vec<Value> = c
        .dns
        .iter()
        .map(|(n, _)| {
            let r = n.resolution();
            json!({
                "name": n.name(),
                "refresh_ms": u64::try_from(n.refresh().as_millis()).unwrap_or(u64::MAX),
                "resolved_at": r.resolved_at.map(rfc3339),
                "addresses": r.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "error": r.error,
            })
        })
        .collect();
    Value::Array(names)
}

/// `POST /cache/purge[?route=NAME]`: `None` when the named route has no cache.
pub fn cache_purge(snap: &Snapshot, route: Option<&str>) -> Option<Value> {
    let mut purged = Vec::new();
    for r in &snap.routes {
        let Some(c) = &r.cache else { continue };
        if route.is_some_and(|name| name != r.cfg.name) {
            continue;
        }
        let (entries, bytes) = c.purge();
        log::info!("cache of route {}: purged {entries} entries", r.cfg.name);
        purged.push(json!({"route": r.cfg.name, "entries": entries, "bytes": bytes}));
    }
    if route.is_some() && purged.is_empty() {
        return None;
    }
    Some(json!({"result": "ok", "purged": purged}))
}

/// The `cache` part of `/status`: totals and each cached route.
pub fn cache_json(snap: &Snapshot) -> Value {
    let routes: Vec<Value> = snap
        .routes
        .iter()
        .filter_map(|r| r.cache.as_ref().map(|c| c.status_json()))
        .collect();
    let sum = |k: &str| routes.iter().filter_map(|r| r[k].as_u64()).sum::<u64>();
    json!({
        "entries": sum("entries"),
        "bytes": sum("bytes"),
        "hits": sum("hits"),
        "misses": sum("misses"),
        "routes": routes,
    })
}
