//! The shared tier: the Redis (or Valkey) through which several switchyard instances share their
//! limits, token budgets, API-key state and cache (`shared:` in the config).
//!
//! One [`Tier`] per configured `shared` section, kept across reloads while the section is
//! unchanged ([`SharedTiers`]). It holds one `redis` [`ConnectionManager`]: a multiplexed
//! connection (every call of every request is pipelined onto it), made on first use and remade
//! in the background when it breaks, so recovery after an outage needs nothing from the caller.
//!
//! Every call goes through [`Tier::call`], which bounds it by `shared.timeout`: the tier can
//! slow a request by at most that much, never stall it. A call that fails or times out is
//! counted (`switchyard_shared_errors_total`), the outage is logged once when it starts and once
//! when it ends (not per request), and the caller decides what to do instead: a limit falls back
//! to this instance's own bucket (`on_error: local`, counted in `switchyard_shared_fallbacks_total`)
//! or refuses with 503 (`on_error: deny`); a cache lookup is a miss.
//!
//! What is kept where is decided by the parts that use the tier: limits and token budgets
//! (`limits::shared`, one Lua script per decision, [`gcra`]), key state (`keys::shared`) and the
//! cache's second tier (`cache::tiered`).

pub mod gcra;

use crate::config::{OnError, SharedConfig};
use crate::metrics::Metrics;
use prometheus::{Histogram, IntCounter, IntGauge};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::{json, Value};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// What a call to the shared tier is for: the `op` label of its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A limit or budget decision (requests and tokens, one script).
    Limit,
    /// Settling a token reservation with what an answer used.
    Settle,
    /// Reading and writing API-key state.
    Keys,
    /// A cache lookup behind the in-memory store.
    CacheGet,
    /// Writing a cache entry.
    CachePut,
    /// Dropping a route's shared entries.
    CachePurge,
}

impl Op {
    const ALL: [Op; 6] = [
        Op::Limit,
        Op::Settle,
        Op::Keys,
        Op::CacheGet,
        Op::CachePut,
        Op::CachePurge,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Op::Limit => "limit",
            Op::Settle => "settle",
            Op::Keys => "keys",
            Op::CacheGet => "cache_get",
            Op::CachePut => "cache_put",
            Op::CachePurge => "cache_purge",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a call to the shared tier gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Redis(#[source] redis::RedisError),
    #[error("cannot set up the client: {0}")]
    Setup(String),
}

/// Metric handles of one op.
struct OpMetrics {
    calls: IntCounter,
    timeouts: IntCounter,
    errors: IntCounter,
    latency: Histogram,
    fell_back: IntCounter,
    denied: IntCounter,
}

/// What `/status` shows of the tier.
#[derive(Default)]
struct Health {
    /// The last call succeeded (false before the first call).
    connected: bool,
    /// Since when calls fail; `None` while they succeed.
    failing_since: Option<Instant>,
    last_error: Option<String>,
    last_error_at: Option<SystemTime>,
}

/// One shared tier: a connection to Redis, bounded calls, and what happened to them.
pub struct Tier {
    cfg: SharedConfig,
    /// Made on first use (the manager needs a runtime to spawn its reconnections on).
    conn: OnceLock<Result<ConnectionManager, String>>,
    health: Mutex<Health>,
    ops: Vec<OpMetrics>,
    connected_gauge: IntGauge,
    calls: AtomicU64,
    errors: AtomicU64,
    fallbacks: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Tier {
    /// The tier of `cfg`; nothing is connected until the first call.
    pub fn new(cfg: SharedConfig, metrics: &Metrics) -> Tier {
        let ops = Op::ALL
            .iter()
            .map(|op| {
                let l = op.label();
                OpMetrics {
                    calls: metrics.shared_calls.with_label_values(&[l]),
                    timeouts: metrics.shared_errors.with_label_values(&[l, "timeout"]),
                    errors: metrics.shared_errors.with_label_values(&[l, "error"]),
                    latency: metrics.shared_latency.with_label_values(&[l]),
                    fell_back: metrics.shared_fallbacks.with_label_values(&[l, "local"]),
                    denied: metrics.shared_fallbacks.with_label_values(&[l, "deny"]),
                }
            })
            .collect();
        Tier {
            cfg,
            conn: OnceLock::new(),
            health: Mutex::new(Health::default()),
            ops,
            connected_gauge: metrics.shared_connected.clone(),
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
        }
    }

    /// The settings it was made with.
    pub fn cfg(&self) -> &SharedConfig {
        &self.cfg
    }

    /// `shared.prefix`, put before every key.
    pub fn prefix(&self) -> &str {
        &self.cfg.prefix
    }

    /// What a limit does when a call fails.
    pub fn on_error(&self) -> OnError {
        self.cfg.on_error
    }

    fn manager(&self) -> Result<ConnectionManager, SharedError> {
        let made = self.conn.get_or_init(|| {
            let client = redis::Client::open(self.cfg.redis.as_str()).map_err(|e| e.to_string())?;
            // Each attempt is short and retried a few times; after that the next call starts a
            // new round, so an outage of any length ends by itself.
            let mc = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.cfg.timeout.max(Duration::from_millis(500))))
                .set_number_of_retries(2)
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_millis(500));
            ConnectionManager::new_lazy_with_config(client, mc).map_err(|e| e.to_string())
        });
        made.clone().map_err(SharedError::Setup)
    }

    /// A subscription to `channel` on a connection of its own (Redis gives a subscriber's
    /// connection to pub/sub only), made within `shared.timeout` (at least 500 ms). Its stream
    /// ends when the connection breaks; the caller subscribes again later.
    pub async fn subscribe(&self, channel: &str) -> Result<redis::aio::PubSubStream, SharedError> {
        let client = redis::Client::open(self.cfg.redis.as_str())
            .map_err(|e| SharedError::Setup(e.to_string()))?;
        let limit = self.cfg.timeout.max(Duration::from_millis(500));
        let made = tokio::time::timeout(limit, async {
            let mut p = client.get_async_pubsub().await?;
            p.subscribe(channel).await?;
            Ok::<_, redis::RedisError>(p)
        });
        match made.await {
            Ok(Ok(p)) => Ok(p.into_on_message()),
            Ok(Err(e)) => Err(SharedError::Redis(e)),
            Err(_) => Err(SharedError::Timeout(limit)),
        }
    }

    /// Run `f` on the connection, bounded by `shared.timeout`; counted and timed under `op`.
    pub async fn call<T, F, Fut>(&self, op: Op, f: F) -> Result<T, SharedError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let m = &self.ops[op.index()];
        m.calls.inc();
        self.calls.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = match self.manager() {
            Ok(conn) => match tokio::time::timeout(self.cfg.timeout, f(conn)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(SharedError::Redis(e)),
                Err(_) => Err(SharedError::Timeout(self.cfg.timeout)),
            },
            Err(e) => Err(e),
        };
        m.latency.observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => self.succeeded(),
            Err(e) => {
                match e {
                    SharedError::Timeout(_) => m.timeouts.inc(),
                    _ => m.errors.inc(),
                }
                self.failed(op, e);
            }
        }
        result
    }

    fn succeeded(&self) {
        let mut h = lock(&self.health);
        if let Some(since) = h.failing_since.take() {
            log::info!(
                "shared tier {}: reachable again after {:.1}s; sharing resumes",
                self.cfg.redacted_url(),
                since.elapsed().as_secs_f64()
            );
        }
        if !h.connected {
            h.connected = true;
            self.connected_gauge.set(1);
        }
    }

    fn failed(&self, op: Op, e: &SharedError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut h = lock(&self.health);
        if h.failing_since.is_none() {
            let instead = match self.cfg.on_error {
                OnError::Local => "limits fall back to this instance's own",
                OnError::Deny => "requests under a shared limit get 503",
            };
            log::warn!(
                "shared tier {}: {} failed: {e}; {instead}, the cache answers from memory \
                 (logged once per outage)",
                self.cfg.redacted_url(),
                op.label()
            );
            h.failing_since = Some(Instant::now());
        }
        h.connected = false;
        h.last_error = Some(e.to_string());
        h.last_error_at = Some(SystemTime::now());
        self.connected_gauge.set(0);
    }

    /// A decision of `op` was made without the tier: by the local limit, or (`deny`) refused.
    pub fn fell_back(&self, op: Op) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        let m = &self.ops[op.index()];
        match self.cfg.on_error {
            OnError::Local => m.fell_back.inc(),
            OnError::Deny => m.denied.inc(),
        }
    }

    /// The `shared` part of `/status`.
    pub fn status_json(&self) -> Value {
        let h = lock(&self.health);
        json!({
            "redis": self.cfg.redacted_url(),
            "prefix": self.cfg.prefix,
            "timeout_ms": u64::try_from(self.cfg.timeout.as_millis()).unwrap_or(u64::MAX),
            "on_error": match self.cfg.on_error { OnError::Local => "local", OnError::Deny => "deny" },
            "connected": h.connected,
            "failing_for_ms": h.failing_since.map(|s| u64::try_from(s.elapsed().as_millis()).unwrap_or(u64::MAX)),
            "last_error": h.last_error,
            "last_error_at": h.last_error_at.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            "calls": self.calls.load(Ordering::Relaxed),
            "errors": self.errors.load(Ordering::Relaxed),
            "fallbacks": self.fallbacks.load(Ordering::Relaxed),
        })
    }
}

/// The tier of the config in force, kept across reloads while `shared` is unchanged (so its
/// connection and counters are too).
#[derive(Default)]
pub struct SharedTiers {
    current: Mutex<Option<Arc<Tier>>>,
}

impl SharedTiers {
    /// The tier for `cfg` (`None` without `shared`).
    pub fn get(&self, cfg: Option<&SharedConfig>, metrics: &Metrics) -> Option<Arc<Tier>> {
        let mut cur = lock(&self.current);
        let Some(cfg) = cfg else {
            *cur = None;
            metrics.shared_connected.set(0);
            return None;
        };
        if let Some(t) = cur.as_ref().filter(|t| t.cfg == *cfg) {
            return Some(t.clone());
        }
        let t = Arc::new(Tier::new(cfg.clone(), metrics));
        *cur = Some(t.clone());
        Some(t)
    }
}

/// Milliseconds since the Unix epoch, the clock every instance shares (entries and key
/// cooldowns carry wall-clock times; limits use the Redis server's own clock).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
