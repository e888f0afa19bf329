//! The shared tier of a route's cache: entries are also written to Redis, behind the in-memory
//! store, which stays the first tier. A lookup that memory cannot answer with a fresh entry asks
//! Redis (bounded by `shared.timeout`; a failure is a miss), and an entry found there is put in
//! memory for the next request. So an answer stored by one instance is a HIT on every other,
//! streams included (an entry keeps its `sse` flag and replays the same way from either tier).
//!
//! In Redis, under `{prefix}cache:{route}:`, an entry is one string (`e:` and the hex of its
//! SHA-256 key, which already holds the route's `vary_headers` digests: tenants never share an
//! entry) that expires after `ttl + stale_if_error`. An insertion script keeps the route's
//! shared bytes within its `max_bytes`: an index of entries by expiry and their sizes, entries
//! whose time is up leave the count, and the ones closest to expiry are dropped to make room.
//! Entries carry their wall-clock store time, so every instance judges their age alike.

use super::key::CacheKey;
use super::memory::MemoryStore;
use super::store::{CacheStore, Entry, Found, Inserted};
use crate::shared::{unix_ms, Op, Tier};
use async_trait::async_trait;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderName, HeaderValue};
use redis::Script;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

const INSERT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local size = string.len(ARGV[1])
local max = tonumber(ARGV[3])
if size > max then return 0 end
local bytes = tonumber(redis.call('GET', KEYS[4])) or 0
local function forget(member)
  bytes = bytes - (tonumber(redis.call('HGET', KEYS[3], member)) or 0)
  redis.call('HDEL', KEYS[3], member)
  redis.call('ZREM', KEYS[2], member)
end
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 64)) do
  forget(m)
end
if redis.call('HEXISTS', KEYS[3], KEYS[1]) == 1 then forget(KEYS[1]) end
local evicted = 0
while bytes + size > max do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #oldest == 0 then break end
  forget(oldest[1])
  redis.call('DEL', oldest[1])
  evicted = evicted + 1
end
if bytes < 0 then bytes = 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), KEYS[1])
redis.call('HSET', KEYS[3], KEYS[1], size)
redis.call('SET', KEYS[4], bytes + size)
return evicted
"#;

const PURGE: &str = r#"
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, m in ipairs(members) do redis.call('DEL', m) end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return #members
"#;

static INSERT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(INSERT));
static PURGE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PURGE));

/// Bumped when the encoding changes: an entry of another layout is a miss.
const MAGIC: &[u8; 4] = b"SYC1";

/// A route's store: memory first, Redis behind it.
pub struct TieredStore {
    memory: MemoryStore,
    tier: Arc<Tier>,
    /// `{prefix}cache:{route}:`.
    base: String,
}

impl TieredStore {
    pub fn new(tier: Arc<Tier>, route: &str, max_bytes: u64) -> TieredStore {
        TieredStore {
            memory: MemoryStore::new(max_bytes),
            base: format!("{}cache:{route}:", tier.prefix()),
            tier,
        }
    }

    fn entry_key(&self, key: &CacheKey) -> String {
        let mut s = String::with_capacity(self.base.len() + 66);
        s.push_str(&self.base);
        s.push_str("e:");
        for b in key.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    fn index_keys(&self) -> [String; 3] {
        ["index", "sizes", "bytes"].map(|k| format!("{}{k}", self.base))
    }
}

/// An entry read back from Redis.
struct Decoded {
    /// Its wall-clock store time (ms since the Unix epoch).
    wall: u64,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    sse: bool,
}

/// An entry as stored in Redis.
fn encode(e: &Entry, wall: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(e.size() + 64);
    out.put_slice(MAGIC);
    out.put_slice(&e.key.0);
    out.put_u64(wall);
    out.put_u8(u8::from(e.sse));
    out.put_u16(u16::try_from(e.headers.len()).unwrap_or(u16::MAX));
    for (k, v) in e.headers.iter().take(usize::from(u16::MAX)) {
        out.put_u16(u16::try_from(k.as_str().len()).unwrap_or(0));
        out.put_slice(k.as_str().as_bytes());
        out.put_u32(u32::try_from(v.len()).unwrap_or(0));
        out.put_slice(v.as_bytes());
    }
    out.put_slice(&e.body);
    out.freeze()
}

/// An entry read back, with its wall-clock store time; `None` for anything malformed or of
/// another key.
fn decode(mut b: Bytes, key: &CacheKey) -> Option<Decoded> {
    let need = |b: &Bytes, n: usize| (b.remaining() >= n).then_some(());
    need(&b, 4 + 32 + 8 + 1 + 2)?;
    if &b[..4] != MAGIC || b[4..36] != key.0 {
        return None;
    }
    b.advance(36);
    let wall = b.get_u64();
    let sse = b.get_u8() == 1;
    let n = b.get_u16();
    let mut headers = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        need(&b, 2)?;
        let kl = usize::from(b.get_u16());
        need(&b, kl)?;
        let k = HeaderName::from_bytes(&b.split_to(kl)).ok()?;
        need(&b, 4)?;
        let vl = usize::try_from(b.get_u32()).ok()?;
        need(&b, vl)?;
        let v = HeaderValue::from_maybe_shared(b.split_to(vl)).ok()?;
        headers.push((k, v));
    }
    Some(Decoded {
        wall,
        headers,
        body: b,
        sse,
    })
}

#[async_trait]
impl CacheStore for TieredStore {
    async fn lookup(
        &self,
        key: &CacheKey,
        now: Instant,
        ttl: Duration,
        stale_if_error: Duration,
    ) -> Found {
        let first = self.memory.lookup(key, now, ttl, stale_if_error);
        if matches!(first, Found::Fresh(..)) {
            return first;
        }
        let rkey = self.entry_key(key);
        let got: Result<Option<Vec<u8>>, _> = self
            .tier
            .call(Op::CacheGet, |mut conn| async move {
                redis::cmd("GET").arg(rkey).query_async(&mut conn).await
            })
            .await;
        let Some(Decoded {
            wall,
            headers,
            body,
            sse,
        }) = got
            .ok()
            .flatten()
            .and_then(|raw| decode(Bytes::from(raw), key))
        else {
            return first;
        };
        let age = Duration::from_millis(unix_ms(SystemTime::now()).saturating_sub(wall));
        let Some(stored_at) = now.checked_sub(age) else {
            return first;
        };
        let entry = Arc::new(Entry::new(*key, stored_at, headers, body, sse));
        if age < ttl + stale_if_error {
            // The next request here finds it in memory.
            self.memory.insert(entry.clone());
        }
        if age < ttl {
            Found::Fresh(entry, age)
        } else if age < ttl + stale_if_error && !matches!(first, Found::Expired(..)) {
            Found::Expired(entry, age)
        } else {
            first
        }
    }

    async fn insert(&self, entry: Arc<Entry>, keep_for: Duration) -> Inserted {
        let r = self.memory.insert(entry.clone());
        let value = encode(&entry, unix_ms(SystemTime::now()));
        let rkey = self.entry_key(&entry.key);
        let [index, sizes, bytes] = self.index_keys();
        let keep_ms = u64::try_from(keep_for.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let max = self.memory.max_bytes();
        let _: Result<i64, _> = self
            .tier
            .call(Op::CachePut, |mut conn| async move {
                INSERT_SCRIPT
                    .key(rkey)
                    .key(index)
                    .key(sizes)
                    .key(bytes)
                    .arg(value.as_ref())
                    .arg(keep_ms)
                    .arg(max)
                    .invoke_async(&mut conn)
                    .await
            })
            .await;
        r
    }

    fn clear(&self) -> (u64, u64) {
        let dropped = self.memory.clear();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let tier = self.tier.clone();
            let [index, sizes, bytes] = self.index_keys();
            rt.spawn(async move {
                let r: Result<i64, _> = tier
                    .call(Op::CachePurge, |mut conn| async move {
                        PURGE_SCRIPT
                            .key(index)
                            .key(sizes)
                            .key(bytes)
                            .invoke_async(&mut conn)
                            .await
                    })
                    .await;
                if let Ok(n) = r {
                    log::info!("cache: purged {n} shared entries");
                }
            });
        }
        dropped
    }

    fn bytes(&self) -> u64 {
        self.memory.bytes()
    }

    fn entries(&self) -> u64 {
        self.memory.entries()
    }

    fn max_bytes(&self) -> u64 {
        self.memory.max_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_bad_bytes_are_misses() {
        let key = CacheKey([7; 32]);
        let e = Entry::new(
            key,
            Instant::now(),
            vec![(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            )],
            Bytes::from_static(b"data: x\n\ndata: [DONE]\n\n"),
            true,
        );
        let raw = encode(&e, 1234);
        let d = decode(raw.clone(), &key).unwrap();
        assert_eq!((d.wall, d.sse), (1234, true));
        assert_eq!(d.headers, e.headers);
        assert_eq!(d.body, e.body);
        assert!(
            decode(raw.clone(), &CacheKey([8; 32])).is_none(),
            "another key"
        );
        for cut in 0..60 {
            let _ = decode(raw.slice(..cut), &key);
        }
        assert!(decode(Bytes::from_static(b"junk"), &key).is_none());
    }
}
