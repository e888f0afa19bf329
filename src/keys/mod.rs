//! Upstream API-key pools: every try to a cluster with `api_keys` carries one key, chosen round
//! robin among the usable ones. An answer that matches a failover condition (rejected, out of
//! quota, rate-limited) counts against that key, and the try is retried with another key.
//!
//! Keys are secrets: they are kept only here and in the outgoing header. Logs, metrics, `/status`
//! and errors name a key by its fingerprint (`k-` and 8 hex digits of its SHA-256). Key state is
//! keyed by (cluster, the key's whole SHA-256) in a [`KeyRegistry`] outside the config snapshot,
//! so it survives reloads (and a re-read keys file); two keys never share a state, even when
//! their fingerprints collide. What a reload changes is not left stranded: a key judged while
//! sent in another header (or as a bare key rather than `Bearer`) starts afresh, and a key that
//! waited for a probe the reload removed comes back after `default_cooldown`. Probing disabled
//! keys back in is a background service (`services::key_probe`).
//! With a shared tier, a key taken out or brought back here is taken out or brought back on
//! every instance ([`shared`], written and read by the `services::key_sync` service, never by
//! the request path).

pub mod shared;

use crate::config::{ApiKeysConfig, KeyCooldown};
use http::{HeaderName, HeaderValue};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The short, non-secret name of a key.
pub fn fingerprint(key: &str) -> String {
    let d = Sha256::digest(key.as_bytes());
    format!("k-{:02x}{:02x}{:02x}{:02x}", d[0], d[1], d[2], d[3])
}

/// A key's whole SHA-256: what its state is kept by.
pub type Digest32 = [u8; 32];

fn digest(key: &str) -> Digest32 {
    Sha256::digest(key.as_bytes()).into()
}

/// What a snapshot keeps of the key registry: (cluster, key digest).
pub type KeyId = (String, Digest32);

/// What switchyard knows about one key of one cluster.
pub struct KeyState {
    pub cluster: String,
    /// Fingerprint: safe to show.
    pub id: String,
    /// The header value sent upstream (`Bearer <key>` or the bare key). Secret.
    value: HeaderValue,
    /// The header it is sent in, as configured when this state was made.
    header: HeaderName,
    consecutive_failures: AtomicU32,
    /// Out until this time (ms since `epoch`); 0 = not cooling.
    out_until_ms: AtomicU64,
    /// Out until a health probe passes.
    disabled: AtomicBool,
    pub(crate) probe_passes: AtomicU32,
    epoch: Instant,
    /// Told when this key is disabled: wakes the prober (see [`KeyRegistry::disabled`]).
    disabled_signal: Arc<tokio::sync::Notify>,
    /// Taken out or brought back here since the shared tier was last told.
    dirty: AtomicBool,
    /// Told when `dirty` is set: wakes the sync service (see [`KeyRegistry::changed`]).
    changed_signal: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyState")
            .field("cluster", &self.cluster)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Why a key was taken out (a metric label): `quota_body` says the answer's body mentions quota
/// (as `insufficient_quota` does).
pub fn reason_for(status: u16, quota_body: bool) -> &'static str {
    match status {
        _ if quota_body => "quota",
        401 | 403 => "unauthorized",
        402 => "quota",
        429 => "rate_limited",
        _ => "other",
    }
}

impl KeyState {
    fn new(
        cluster: &str,
        key: &str,
        cfg: &ApiKeysConfig,
        disabled_signal: Arc<tokio::sync::Notify>,
        changed_signal: Arc<tokio::sync::Notify>,
    ) -> Option<Self> {
        let bearer = cfg.bearer;
        let mut value = if bearer {
            HeaderValue::from_str(&format!("Bearer {key}")).ok()?
        } else {
            HeaderValue::from_str(key).ok()?
        };
        value.set_sensitive(true);
        Some(KeyState {
            cluster: cluster.to_string(),
            id: fingerprint(key),
            value,
            header: cfg.header.clone(),
            consecutive_failures: AtomicU32::new(0),
            out_until_ms: AtomicU64::new(0),
            disabled: AtomicBool::new(false),
            probe_passes: AtomicU32::new(0),
            epoch: Instant::now(),
            disabled_signal,
            dirty: AtomicBool::new(false),
            changed_signal,
        })
    }

    fn ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// The header value to send. Never log it.
    pub fn header_value(&self) -> &HeaderValue {
        &self.value
    }

    pub fn is_usable(&self, now: Instant) -> bool {
        !self.disabled.load(Ordering::Relaxed)
            && self.ms(now) >= self.out_until_ms.load(Ordering::Relaxed)
    }

    /// Out until a probe passes (as opposed to cooling for a while).
    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::Relaxed)
    }

    /// A try with this key was answered normally.
    pub fn on_success(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// A try with this key matched a failover condition. Returns true if the key is now out.
    pub fn on_failure(
        &self,
        cooldown: KeyCooldown,
        retry_after: Option<Duration>,
        cfg: &ApiKeysConfig,
        now: Instant,
    ) -> bool {
        let cool = |d: Duration| {
            // Saturating: a cooldown past the end of time is "out until a reload or restart".
            let until = self
                .ms(now)
                .saturating_add(d.as_millis().min(u64::MAX as u128) as u64);
            self.out_until_ms.store(until.max(1), Ordering::Relaxed);
            self.mark_changed();
        };
        match cooldown {
            KeyCooldown::RetryAfter => {
                cool(retry_after.unwrap_or(cfg.default_cooldown));
                true
            }
            KeyCooldown::For(d) => {
                cool(d);
                true
            }
            KeyCooldown::Disable => {
                let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
                if n < cfg.failure_threshold {
                    return false;
                }
                if cfg.health_check.is_some() {
                    self.probe_passes.store(0, Ordering::Relaxed);
                    self.disabled.store(true, Ordering::Relaxed);
                    self.disabled_signal.notify_one();
                    self.mark_changed();
                } else {
                    cool(cfg.default_cooldown);
                }
                true
            }
        }
    }

    /// Is this state for the key sent the way `cfg` sends it?
    fn sent_as(&self, cfg: &ApiKeysConfig) -> bool {
        self.header == cfg.header && self.value.as_bytes().starts_with(b"Bearer ") == cfg.bearer
    }

    /// A key waiting for a probe that no longer exists cools for `cooldown` instead.
    fn unstrand(&self, cooldown: Duration, now: Instant) {
        if self.disabled.swap(false, Ordering::Relaxed) {
            self.out_until_ms
                .store(self.ms(now + cooldown).max(1), Ordering::Relaxed);
            self.mark_changed();
        }
    }

    /// A health probe with this key passed `success_threshold` times: back in.
    pub fn enable(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.out_until_ms.store(0, Ordering::Relaxed);
        self.disabled.store(false, Ordering::Relaxed);
        self.mark_changed();
    }

    fn mark_changed(&self) {
        self.dirty.store(true, Ordering::Relaxed);
        self.changed_signal.notify_one();
    }
}

/// The keys of one cluster in one snapshot.
pub struct KeyPool {
    pub cfg: ApiKeysConfig,
    pub keys: Vec<Arc<KeyState>>,
    /// Statuses some failover condition names: their bodies are read to judge the key.
    pub capture_statuses: Vec<u16>,
    next: AtomicUsize,
}

impl KeyPool {
    /// The next usable key not in `exclude`, round robin.
    pub fn pick(&self, now: Instant, exclude: &[usize]) -> Option<usize> {
        let n = self.keys.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|i| !exclude.contains(i) && self.keys[*i].is_usable(now))
    }

    pub fn any_usable(&self, now: Instant) -> bool {
        self.keys.iter().any(|k| k.is_usable(now))
    }
}

/// Judge the key used by a try from its answer (`status`, `headers` and the start of its `body`).
/// Returns true when the answer matched a failover condition (the try must be retried with
/// another key); updates the key and the metrics.
pub fn judge(
    pool: &KeyPool,
    k: usize,
    status: u16,
    headers: &http::HeaderMap,
    body: &[u8],
    metrics: &crate::metrics::Metrics,
) -> bool {
    let key = &pool.keys[k];
    let matched = pool.cfg.conditions.iter().find(|c| {
        c.statuses.contains(&status)
            && c.body
                .as_ref()
                .is_none_or(|re| re.is_match(&String::from_utf8_lossy(body)))
    });
    let Some(cond) = matched else {
        key.on_success();
        return false;
    };
    // Seconds or an HTTP-date, capped: an upstream cannot take a key out for a year, nor make
    // the cooldown's deadline overflow.
    let retry_after = crate::retry_after::of(headers, pool.cfg.max_retry_after);
    let now = Instant::now();
    if key.on_failure(cond.cooldown, retry_after, &pool.cfg, now) {
        let says_quota = String::from_utf8_lossy(body).contains("quota");
        let reason = reason_for(status, says_quota);
        log::warn!(
            "API key {} of cluster {} taken out ({reason}, status {status})",
            key.id,
            key.cluster
        );
        metrics
            .api_key_disabled
            .with_label_values(&[key.cluster.as_str(), key.id.as_str(), reason])
            .inc();
        metrics
            .api_key_usable
            .with_label_values(&[key.cluster.as_str(), key.id.as_str()])
            .set(0);
    }
    true
}

/// Key state by (cluster, key digest), outliving snapshots.
#[derive(Default)]
pub struct KeyRegistry {
    keys: Mutex<HashMap<KeyId, Arc<KeyState>>>,
    disabled: Arc<tokio::sync::Notify>,
    changed: Arc<tokio::sync::Notify>,
}

impl KeyRegistry {
    /// Completes when a key was taken out or brought back since the last call, so the sync
    /// service tells the shared tier at once rather than at its next round.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Completes when a key has been disabled since the last call (a key disabled while nobody
    /// waits is remembered), so the prober can sleep while every key is in.
    pub async fn disabled(&self) {
        self.disabled.notified().await
    }

    /// The pool for `cluster`, reusing the state of keys seen before (sent the same way). A key
    /// listed twice is in the pool once.
    pub fn pool(&self, cluster: &str, cfg: &ApiKeysConfig, keep: &mut HashSet<KeyId>) -> KeyPool {
        let mut map = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut seen = HashSet::new();
        let keys = cfg
            .keys
            .iter()
            .filter_map(|k| {
                let id = (cluster.to_string(), digest(k));
                if !seen.insert(id.1) {
                    return None;
                }
                keep.insert(id.clone());
                if let Some(s) = map.get(&id).filter(|s| s.sent_as(cfg)) {
                    if cfg.health_check.is_none() {
                        s.unstrand(cfg.default_cooldown, now);
                    }
                    return Some(s.clone());
                }
                let s = Arc::new(KeyState::new(
                    cluster,
                    k,
                    cfg,
                    self.disabled.clone(),
                    self.changed.clone(),
                )?);
                map.insert(id, s.clone());
                Some(s)
            })
            .collect();
        let mut capture_statuses: Vec<u16> = cfg
            .conditions
            .iter()
            .flat_map(|c| c.statuses.iter().copied())
            .collect();
        capture_statuses.sort_unstable();
        capture_statuses.dedup();
        KeyPool {
            cfg: cfg.clone(),
            keys,
            capture_statuses,
            next: AtomicUsize::new(0),
        }
    }

    /// Forget the keys no snapshot uses any more; returns the (cluster, fingerprint) pairs
    /// dropped, so their metrics can go too.
    pub fn retain(&self, keep: &HashSet<KeyId>) -> Vec<(String, String)> {
        let mut map = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let mut gone = Vec::new();
        map.retain(|k, state| {
            let kept = keep.contains(k);
            if !kept {
                gone.push((state.cluster.clone(), state.id.clone()));
            }
            kept
        });
        gone
    }
}

#[cfg(test)]
mod tests;
