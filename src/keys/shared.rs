//! API-key state shared by the fleet: a key taken out on one instance is out on every instance,
//! until its probe passes on any of them.
//!
//! The state of a cluster's keys is one Redis hash, `{prefix}keys:{cluster}`: a field per key
//! that is out, named by its fingerprint (never the key), with `disabled` (out until a probe
//! passes) or `cool:<unix ms>` (out until then). The request path never calls Redis for it: the
//! `services::key_sync` service writes what changed here at once and publishes on [`channel`],
//! and reads each hash when told so and every 500 ms (should a message be lost), applying it to
//! the local [`KeyState`]s. So a key another instance took out stops being picked here within a
//! round trip, at worst within 500 ms (and a try that still reaches the provider with it is
//! retried with another key, as any rejected key is).

use super::{KeyPool, KeyState};
use crate::shared::{unix_ms, Op, SharedError, Tier};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// A key's state in the shared hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remote {
    /// Out until a probe passes.
    Disabled,
    /// Out until this wall-clock time (ms since the Unix epoch).
    CoolUntil(u64),
}

impl Remote {
    fn encode(self) -> String {
        match self {
            Remote::Disabled => "disabled".into(),
            Remote::CoolUntil(t) => format!("cool:{t}"),
        }
    }

    fn parse(s: &str) -> Option<Remote> {
        match s {
            "disabled" => Some(Remote::Disabled),
            _ => s.strip_prefix("cool:")?.parse().ok().map(Remote::CoolUntil),
        }
    }
}

impl KeyState {
    /// What the shared hash should say of this key now (`None`: it is in).
    fn remote(&self, now: Instant, wall: u64) -> Option<Remote> {
        if self.is_disabled() {
            return Some(Remote::Disabled);
        }
        let until = self.out_until_ms.load(Ordering::Relaxed);
        let left = until.saturating_sub(self.ms(now));
        (left > 0).then(|| Remote::CoolUntil(wall.saturating_add(left)))
    }

    /// Apply what another instance wrote; returns true when the key went out or came back.
    fn apply(&self, remote: Option<Remote>, now: Instant, wall: u64) -> bool {
        match remote {
            Some(Remote::Disabled) if !self.is_disabled() => {
                self.probe_passes.store(0, Ordering::Relaxed);
                self.disabled.store(true, Ordering::Relaxed);
                self.disabled_signal.notify_one();
                true
            }
            Some(Remote::CoolUntil(t)) if t > wall => {
                let until = self
                    .ms(crate::deadline::after(now, Duration::from_millis(t - wall)))
                    .max(1);
                let was_usable = self.is_usable(now);
                self.out_until_ms.fetch_max(until, Ordering::Relaxed);
                was_usable
            }
            // Brought back elsewhere (its probe passed there).
            None if self.is_disabled() => {
                self.consecutive_failures.store(0, Ordering::Relaxed);
                self.disabled.store(false, Ordering::Relaxed);
                self.out_until_ms.store(0, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }
}

/// The channel an instance publishes on when it wrote a key's state.
pub fn channel(tier: &Tier) -> String {
    format!("{}keys:changed", tier.prefix())
}

/// The hash of `cluster`'s keys.
fn hash_key(tier: &Tier, cluster: &str) -> String {
    format!("{}keys:{cluster}", tier.prefix())
}

/// One round for the shared pools of a snapshot: write what changed here, then read every hash
/// and apply it. Returns the keys that went out or came back because of another instance.
pub async fn sync<'a>(
    tier: &Tier,
    pools: &[(&'a str, &'a KeyPool)],
) -> Result<Vec<&'a KeyState>, SharedError> {
    let now = Instant::now();
    let wall = unix_ms(SystemTime::now());
    let mut pipe = redis::pipe();
    let mut written = Vec::new();
    for (cluster, pool) in pools {
        let hash = hash_key(tier, cluster);
        for k in &pool.keys {
            if !k.dirty.swap(false, Ordering::Relaxed) {
                continue;
            }
            written.push(k.clone());
            match k.remote(now, wall) {
                Some(r) => pipe.hset(&hash, &k.id, r.encode()).ignore(),
                None => pipe.hdel(&hash, &k.id).ignore(),
            };
        }
    }
    if !written.is_empty() {
        pipe.publish(channel(tier), "1").ignore();
    }
    for (cluster, _) in pools {
        pipe.hgetall(hash_key(tier, cluster));
    }
    let read: Result<Vec<HashMap<String, String>>, SharedError> = tier
        .call(Op::Keys, |mut conn| async move {
            pipe.query_async(&mut conn).await
        })
        .await;
    let hashes = match read {
        Ok(h) => h,
        Err(e) => {
            // Not written: try again next round.
            for k in written {
                k.dirty.store(true, Ordering::Relaxed);
            }
            return Err(e);
        }
    };
    let mut changed = Vec::new();
    for ((_, pool), hash) in pools.iter().zip(hashes) {
        for k in &pool.keys {
            if k.dirty.load(Ordering::Relaxed) {
                // Changed again while this round ran: the next round writes it first.
                continue;
            }
            let remote = hash.get(&k.id).and_then(|v| Remote::parse(v));
            if k.apply(remote, now, wall) {
                changed.push(&**k);
            }
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_junk_is_ignored() {
        for r in [Remote::Disabled, Remote::CoolUntil(1_700_000_000_123)] {
            assert_eq!(Remote::parse(&r.encode()), Some(r));
        }
        assert_eq!(Remote::parse("cool:soon"), None);
        assert_eq!(Remote::parse(""), None);
    }
}
