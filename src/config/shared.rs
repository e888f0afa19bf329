//! Building `shared`: the Redis (or Valkey) URL, the key prefix, the call timeout and what a
//! decision does on error; and the rule that a `scope: shared` or `shared: true` needs it.

use super::check::{err, positive, Result};
use super::file::{FileConfig, OnErrorFile, ScopeFile, SharedFile};
use super::types::{Config, OnError, Scope, SharedConfig};
use std::time::Duration;

/// Bound on each call to the shared tier when `shared.timeout` is not given.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// Longest `shared.timeout` accepted: the tier is on the request path.
const MAX_TIMEOUT: Duration = Duration::from_secs(5);

/// `shared`.
pub(super) fn shared(s: Option<&SharedFile>) -> Result<Option<SharedConfig>> {
    let Some(s) = s else { return Ok(None) };
    let url = s.redis.trim();
    if !(url.starts_with("redis://") || url.starts_with("unix://")) {
        return err(
            "shared.redis",
            format!(
                "bad URL {url:?}: expected redis://HOST:PORT/DB (or unix:///path/to/socket); \
                 TLS (rediss://) is not supported"
            ),
        );
    }
    if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url) {
        return err("shared.redis", format!("bad URL {url:?}: {e}"));
    }
    let prefix = s.prefix.clone().unwrap_or_else(|| "switchyard:".into());
    if prefix
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return err("shared.prefix", "no spaces or control characters");
    }
    let timeout = positive("shared.timeout", s.timeout, DEFAULT_TIMEOUT)?;
    if timeout > MAX_TIMEOUT {
        return err(
            "shared.timeout",
            "must be at most 5s (it bounds calls on the request path)",
        );
    }
    Ok(Some(SharedConfig {
        redis: url.to_string(),
        prefix,
        timeout,
        on_error: match s.on_error {
            Some(OnErrorFile::Deny) => OnError::Deny,
            Some(OnErrorFile::Local) | None => OnError::Local,
        },
    }))
}

/// Without `shared`, everything is local; asking for a shared one then is an error.
pub(super) fn localize(f: &FileConfig, cfg: &mut Config) -> Result<()> {
    if cfg.shared.is_some() {
        return Ok(());
    }
    let hint = "needs the top-level shared: { redis: ... }";
    for (name, c) in &f.clusters {
        let explicit = |s: Option<ScopeFile>| s == Some(ScopeFile::Shared);
        if explicit(c.rate_limit.as_ref().and_then(|r| r.scope)) {
            return err(format!("clusters.{name}.rate_limit.scope"), hint);
        }
        if explicit(c.api_keys.as_ref().and_then(|k| k.scope)) {
            return err(format!("clusters.{name}.api_keys.scope"), hint);
        }
    }
    for (i, r) in f.routes.iter().enumerate() {
        if r.client_limit.as_ref().and_then(|l| l.scope) == Some(ScopeFile::Shared) {
            return err(format!("routes[{i}].client_limit.scope"), hint);
        }
        if r.cache.as_ref().and_then(|c| c.shared) == Some(true) {
            return err(format!("routes[{i}].cache.shared"), hint);
        }
    }
    for c in &mut cfg.clusters {
        if let Some(r) = &mut c.rate_limit {
            r.scope = Scope::Local;
        }
        if let Some(k) = &mut c.api_keys {
            k.scope = Scope::Local;
        }
    }
    for r in &mut cfg.routes {
        if let Some(l) = &mut r.client_limit {
            l.scope = Scope::Local;
        }
        if let Some(c) = &mut r.cache {
            c.shared = false;
        }
    }
    Ok(())
}
