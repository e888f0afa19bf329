//! The key a hashing balancer places a request by, per cluster: for a `prefix_affinity` cluster
//! a stable hash of the first `affinity.prefix_bytes` of the prompt (or of the `header:NAME`
//! value), for the others the route's sticky hash.
//!
//! The prompt is read from the body's JSON, which is parsed once and shared with the cache key.
//! Chat requests hash their messages' roles and contents, system (and developer) messages first,
//! the others in order; completions hash `prompt`. A request with nothing to hash gets a random
//! key: it is spread like any other under the load bound.

use crate::balance::hash::StableHasher;
use crate::body::RequestBody;
use crate::config::{AffinityConfig, AffinityKey, Balance};
use crate::snapshot::{Route, Snapshot};
use http::HeaderMap;
use serde_json::Value;

/// The key of each cluster a request may be sent to.
pub struct Keys {
    /// For clusters that do not hash by affinity: the route's sticky hash, or 0.
    sticky: u64,
    /// `(cluster, key)` for the route's `prefix_affinity` clusters.
    affinity: Vec<(usize, u64)>,
}

impl Keys {
    /// The keys of a request on `route` with these headers and body.
    pub fn new(
        snap: &Snapshot,
        route: &Route,
        sticky: Option<u64>,
        headers: &HeaderMap,
        body: &RequestBody,
    ) -> Keys {
        let mut affinity = Vec::new();
        for target in &route.cfg.split {
            let ci = target.cluster;
            let cfg = &snap.clusters[ci].cfg;
            if cfg.balance == Balance::PrefixAffinity && !affinity.iter().any(|(c, _)| *c == ci) {
                let key = key(&cfg.affinity, headers, body).unwrap_or_else(rand::random);
                affinity.push((ci, key));
            }
        }
        Keys {
            sticky: sticky.unwrap_or(0),
            affinity,
        }
    }

    /// The key for cluster `ci`.
    pub fn of(&self, ci: usize) -> u64 {
        self.affinity
            .iter()
            .find(|(c, _)| *c == ci)
            .map_or(self.sticky, |(_, k)| *k)
    }
}

/// The affinity key of a request, or `None` when it has nothing to hash.
pub fn key(cfg: &AffinityConfig, headers: &HeaderMap, body: &RequestBody) -> Option<u64> {
    match &cfg.key {
        AffinityKey::Header(name) => {
            let mut h = StableHasher::default();
            h.write(headers.get(name)?.as_bytes());
            Some(h.finish())
        }
        AffinityKey::Prompt => prompt_key(body.json()?, cfg.prefix_bytes),
    }
}

/// The hash of the first `limit` bytes of the prompt of a chat or completion request.
pub fn prompt_key(json: &Value, limit: usize) -> Option<u64> {
    let mut p = Prefix {
        h: StableHasher::default(),
        left: limit,
        fed: false,
    };
    if let Some(messages) = json.get("messages").and_then(Value::as_array) {
        let system = |m: &&Value| {
            matches!(
                m.get("role").and_then(Value::as_str),
                Some("system" | "developer")
            )
        };
        for m in messages
            .iter()
            .filter(system)
            .chain(messages.iter().filter(|m| !system(m)))
        {
            if !p.message(m) {
                break;
            }
        }
    } else if let Some(prompt) = json.get("prompt") {
        p.content(prompt);
    }
    p.fed.then(|| p.h.finish())
}

/// A hasher that takes at most `left` more bytes.
struct Prefix {
    h: StableHasher,
    left: usize,
    fed: bool,
}

impl Prefix {
    /// Feed `bytes` up to the limit; `false` once it is reached.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        let n = bytes.len().min(self.left);
        self.h.write(&bytes[..n]);
        self.left -= n;
        self.fed |= n > 0;
        self.left > 0
    }

    /// One chat message: its role, then its content.
    fn message(&mut self, m: &Value) -> bool {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        self.feed(role.as_bytes())
            && self.feed(b"\n")
            && m.get("content").is_none_or(|c| self.content(c))
            && self.feed(b"\x1e")
    }

    /// A message's content or a completion's prompt: text, text parts, strings or token ids.
    fn content(&mut self, c: &Value) -> bool {
        match c {
            Value::String(s) => self.feed(s.as_bytes()),
            Value::Array(parts) => parts.iter().all(|part| match part {
                Value::Number(n) => self.feed(&n.as_u64().unwrap_or(0).to_le_bytes()),
                Value::Object(_) => match part.get("text") {
                    Some(t) => self.content(t),
                    None => self.feed(part.to_string().as_bytes()),
                },
                other => self.content(other),
            }),
            Value::Null => true,
            other => self.feed(other.to_string().as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat(system: &str, user: &str) -> Value {
        json!({"model": "m", "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
        ]})
    }

    #[test]
    fn the_prefix_decides_the_key() {
        let long = "tenant seven's system prompt ".repeat(100);
        let a = prompt_key(&chat(&long, "what is 2+2?"), 2048);
        let b = prompt_key(&chat(&long, "tell me a joke"), 2048);
        assert!(a.is_some());
        assert_eq!(a, b, "only the first 2048 bytes count");
        let c = prompt_key(&chat(&long, "what is 2+2?"), 8192);
        let d = prompt_key(&chat(&long, "tell me a joke"), 8192);
        assert_ne!(c, d);
        let other = prompt_key(&chat("another tenant", "what is 2+2?"), 2048);
        assert_ne!(a, other);
    }

    #[test]
    fn system_first_roles_count_and_completions() {
        let sys_last = json!({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "be brief"},
        ]});
        let sys_first = json!({"messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
        ]});
        assert_eq!(prompt_key(&sys_last, 100), prompt_key(&sys_first, 100));
        let roles = json!({"messages": [
            {"role": "assistant", "content": "be brief"},
            {"role": "user", "content": "hi"},
        ]});
        assert_ne!(prompt_key(&roles, 100), prompt_key(&sys_first, 100));
        let parts =
            json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]});
        let plain = json!({"messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(prompt_key(&parts, 100), prompt_key(&plain, 100));
        let p1 = prompt_key(&json!({"prompt": "once upon a time"}), 9);
        let p2 = prompt_key(&json!({"prompt": "once upon a midnight"}), 9);
        assert_eq!(p1, p2);
        assert!(prompt_key(&json!({"prompt": [1, 2, 3]}), 100).is_some());
        assert_eq!(prompt_key(&json!({"model": "m"}), 100), None);
        assert_eq!(prompt_key(&json!({"messages": []}), 100), None);
    }
}
