//! GCRA buckets kept in Redis: one Lua script per decision, so that every instance's decision is
//! atomic against every other's, and timed by the Redis server's clock (instances' clocks may
//! differ; the server's is one).
//!
//! A bucket is its theoretical arrival time (TAT, microseconds) under one key. Taking `cost`
//! units moves it `cost × interval` later; the take is allowed when the TAT stays within
//! `capacity × interval` of now, which lets `capacity` units pass at once on a full bucket and
//! one unit per `interval` after that (the same arithmetic as the local `governor` buckets). A
//! decision may take from several buckets at once (a request and its tokens): all of them or
//! none. A settlement moves a bucket without checking (earlier to give back what a reservation
//! did not use, later to charge what it used beyond it). Keys expire once their bucket is full
//! again, so idle clients leave nothing behind.

use super::{Op, SharedError, Tier};
use redis::Script;
use std::sync::LazyLock;
use std::time::Duration;

const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local check = ARGV[1] == 'take'
local new = {}
local wait = 0
for i = 1, #KEYS do
  local interval = tonumber(ARGV[3 * i - 1])
  local capacity = tonumber(ARGV[3 * i])
  local cost = tonumber(ARGV[3 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local nxt = tat + cost * interval
  if nxt < now then nxt = now end
  if check then
    local over = nxt - now - capacity * interval
    if over > wait then wait = over end
  end
  new[i] = nxt
end
if wait > 0 then return {0, math.ceil(wait)} end
for i = 1, #KEYS do
  local ttl = math.ceil((new[i] - now) / 1000) + 1000
  redis.call('SET', KEYS[i], string.format('%.0f', new[i]), 'PX', ttl)
end
return {1, 0}
"#;

static GCRA: LazyLock<Script> = LazyLock::new(|| Script::new(SCRIPT));

/// One bucket of a decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// The full Redis key.
    pub key: String,
    /// Time one unit takes to come back.
    pub interval: Duration,
    /// Units that may pass at once on a full bucket.
    pub capacity: u64,
}

impl Bucket {
    /// A bucket of `per_minute` units a minute, `capacity` at once.
    pub fn per_minute(key: String, per_minute: u32, capacity: u64) -> Bucket {
        Bucket {
            key,
            interval: Duration::from_secs(60) / per_minute.max(1),
            capacity: capacity.max(1),
        }
    }
}

/// What a take decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Taken from every bucket.
    Allowed,
    /// Taken from none: the first bucket over its limit has room again after this long.
    Wait(Duration),
}

fn args(inv: &mut redis::ScriptInvocation<'_>, take: &[(&Bucket, i64)]) {
    for (b, cost) in take {
        inv.key(b.key.as_str());
        inv.arg(b.interval.as_secs_f64() * 1e6);
        inv.arg(b.capacity);
        inv.arg(*cost);
    }
}

/// Take `cost` units from each bucket, all or none.
pub async fn take(tier: &Tier, take: &[(&Bucket, u64)]) -> Result<Decision, SharedError> {
    let signed: Vec<(&Bucket, i64)> = take
        .iter()
        .map(|(b, c)| (*b, i64::try_from((*c).min(b.capacity)).unwrap_or(i64::MAX)))
        .collect();
    let (allowed, wait_us): (i64, i64) = tier
        .call(Op::Limit, |mut conn| async move {
            let mut inv = GCRA.prepare_invoke();
            inv.arg("take");
            args(&mut inv, &signed);
            inv.invoke_async(&mut conn).await
        })
        .await?;
    Ok(if allowed == 1 {
        Decision::Allowed
    } else {
        Decision::Wait(Duration::from_micros(wait_us.max(1).unsigned_abs()))
    })
}

/// Move `bucket` by `delta` units without checking: negative gives units back, positive charges.
pub async fn adjust(tier: &Tier, bucket: &Bucket, delta: i64) -> Result<(), SharedError> {
    if delta == 0 {
        return Ok(());
    }
    let one = [(bucket, delta)];
    let _: (i64, i64) = tier
        .call(Op::Settle, |mut conn| async move {
            let mut inv = GCRA.prepare_invoke();
            inv.arg("force");
            args(&mut inv, &one);
            inv.invoke_async(&mut conn).await
        })
        .await?;
    Ok(())
}
