//! Building what governs how much reaches an upstream, and with which credential: a cluster's
//! API-key pool, request budget and admission queue, and a route's per-client limit.

use super::check::{
    at_least_one, err, method, positive, regex, statuses, sticky, url_path, Result,
};
use super::file::{
    ApiKeysFile, ClientLimitFile, CooldownFile, KeyHealthFile, QueueFile, RateLimitFile, ScopeFile,
};
use super::types::*;
use bytes::Bytes;
use http::{HeaderName, Method};
use std::time::Duration;

/// Matching failures in a row before a key is taken out, when not given.
const FAILURE_THRESHOLD: u32 = 3;
/// The longest `retry-after` a key is cooled for, when not given: an answer asking for more (a
/// year, or `u64::MAX` seconds) is not a sane cooldown.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A key's cooldown when the answer has no `retry-after`, when not given.
const DEFAULT_COOLDOWN: Duration = Duration::from_secs(60);

/// Read a keys file: one key per line; blank lines and `#` comments skipped.
fn read_keys(path: &str, file: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(file)
        .or_else(|e| err(path, format!("cannot read keys file {file:?}: {e}")))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

/// `clusters.NAME.api_keys`: the keys, and when and for how long one is taken out.
pub(super) fn api_keys(base: &str, k: &ApiKeysFile) -> Result<ApiKeysConfig> {
    let header_name = k.header.as_deref().unwrap_or("authorization");
    let header = HeaderName::from_bytes(header_name.as_bytes()).or_else(|_| {
        err(
            format!("{base}.header"),
            format!("bad header name {header_name:?}"),
        )
    })?;
    let bearer = header == http::header::AUTHORIZATION;
    let mut keys = match (&k.keys, &k.keys_file) {
        (Some(_), Some(_)) => {
            return err(base, "give either keys or keys_file, not both");
        }
        (Some(list), None) => list.iter().map(|s| s.trim().to_string()).collect(),
        (None, Some(file)) => read_keys(&format!("{base}.keys_file"), file)?,
        (None, None) => return err(base, "an api_keys pool needs keys or keys_file"),
    };
    // A key listed twice would get twice the traffic, and a second try after its own rejection.
    let mut seen = std::collections::HashSet::new();
    keys.retain(|k| seen.insert(k.clone()));
    if keys.is_empty() {
        return err(base, "the pool has no keys");
    }
    if keys
        .iter()
        .any(|key| http::HeaderValue::from_str(key).is_err() || key.is_empty())
    {
        // Never echo a key: say which one by position only.
        let i = keys
            .iter()
            .position(|key| http::HeaderValue::from_str(key).is_err() || key.is_empty())
            .unwrap_or(0);
        return err(base, format!("key #{} is not a valid header value", i + 1));
    }
    let mut strip_headers = Vec::new();
    for (i, h) in k.strip_headers.iter().flatten().enumerate() {
        match HeaderName::from_bytes(h.trim().as_bytes()) {
            Ok(name) => strip_headers.push(name),
            Err(_) => {
                return err(
                    format!("{base}.strip_headers[{i}]"),
                    format!("bad header name {h:?}"),
                )
            }
        }
    }
    let f = k.failover.as_ref();
    let fbase = format!("{base}.failover");
    let failure_threshold = at_least_one(
        &format!("{fbase}.failure_threshold"),
        f.and_then(|f| f.failure_threshold),
        FAILURE_THRESHOLD,
    )?;
    let default_cooldown = positive(
        &format!("{fbase}.default_cooldown"),
        f.and_then(|f| f.default_cooldown),
        DEFAULT_COOLDOWN,
    )?;
    let max_retry_after = positive(
        &format!("{fbase}.max_retry_after"),
        f.and_then(|f| f.max_retry_after),
        MAX_RETRY_AFTER,
    )?;
    let conditions = match f.and_then(|f| f.conditions.as_ref()) {
        Some(list) => {
            let mut out = Vec::new();
            for (i, c) in list.iter().enumerate() {
                let p = format!("{fbase}.conditions[{i}]");
                statuses(&format!("{p}.status"), &c.status)?;
                let body = match &c.body {
                    Some(re) => Some(regex(&format!("{p}.body"), re)?),
                    None => None,
                };
                let cooldown = match c.cooldown {
                    None => KeyCooldown::Disable,
                    Some(CooldownFile::RetryAfter) => KeyCooldown::RetryAfter,
                    Some(CooldownFile::For(d)) => KeyCooldown::For(d),
                };
                out.push(KeyCondition {
                    statuses: c.status.clone(),
                    body,
                    cooldown,
                });
            }
            out
        }
        None => default_conditions(),
    };
    let health_check = match f.and_then(|f| f.health_check.as_ref()) {
        Some(h) => Some(key_health(&format!("{fbase}.health_check"), h)?),
        None => None,
    };
    Ok(ApiKeysConfig {
        header,
        bearer,
        keys,
        strip_headers,
        failure_threshold,
        conditions,
        default_cooldown,
        max_retry_after,
        health_check,
        scope: scope(k.scope),
    })
}

/// A `scope` as written; shared when left out (made local in `build` when there is no `shared`).
pub(super) fn scope(s: Option<ScopeFile>) -> Scope {
    match s {
        Some(ScopeFile::Local) => Scope::Local,
        Some(ScopeFile::Shared) | None => Scope::Shared,
    }
}

/// Rejected (401/403) or out of quota (402, or 400/429 saying `insufficient_quota`): out until a
/// probe passes; rate-limited (429): cooled for `retry-after`.
fn default_conditions() -> Vec<KeyCondition> {
    let quota = || regex::Regex::new("insufficient_quota").expect("static regex");
    vec![
        KeyCondition {
            statuses: vec![401, 403],
            body: None,
            cooldown: KeyCooldown::Disable,
        },
        KeyCondition {
            statuses: vec![402],
            body: None,
            cooldown: KeyCooldown::Disable,
        },
        KeyCondition {
            statuses: vec![400, 429],
            body: Some(quota()),
            cooldown: KeyCooldown::Disable,
        },
        KeyCondition {
            statuses: vec![429],
            body: None,
            cooldown: KeyCooldown::RetryAfter,
        },
    ]
}

fn key_health(base: &str, h: &KeyHealthFile) -> Result<KeyHealthCheck> {
    let d = KeyHealthCheck::default();
    let expect_status = h.expect_status.clone().unwrap_or(d.expect_status);
    statuses(&format!("{base}.expect_status"), &expect_status)?;
    let path = h.path.clone().unwrap_or(d.path);
    url_path(&format!("{base}.path"), &path)?;
    Ok(KeyHealthCheck {
        method: match &h.method {
            Some(m) => method(&format!("{base}.method"), m)?,
            None if h.body.is_some() => Method::POST,
            None => d.method,
        },
        path,
        body: h.body.clone().map(Bytes::from),
        expect_status,
        expect_body: match &h.expect_body {
            Some(re) => Some(regex(&format!("{base}.expect_body"), re)?),
            None => None,
        },
        interval: positive(&format!("{base}.interval"), h.interval, d.interval)?,
        timeout: positive(&format!("{base}.timeout"), h.timeout, d.timeout)?,
        success_threshold: at_least_one(
            &format!("{base}.success_threshold"),
            h.success_threshold,
            d.success_threshold,
        )?,
    })
}

/// A request rate and a token rate (at least one of them), and a request burst (default 1);
/// none of them zero.
fn rates(
    base: &str,
    rpm: Option<u32>,
    burst: Option<u32>,
    tpm: Option<u32>,
) -> Result<(Option<u32>, u32, Option<u32>)> {
    if rpm.is_none() && tpm.is_none() {
        return err(base, "give requests_per_minute, tokens_per_minute or both");
    }
    let rpm = match rpm {
        Some(n) => Some(at_least_one(
            &format!("{base}.requests_per_minute"),
            Some(n),
            n,
        )?),
        None => None,
    };
    let tpm = match tpm {
        Some(n) => Some(at_least_one(
            &format!("{base}.tokens_per_minute"),
            Some(n),
            n,
        )?),
        None => None,
    };
    if burst.is_some() && rpm.is_none() {
        return err(
            format!("{base}.burst"),
            "a burst of requests needs requests_per_minute",
        );
    }
    let burst = at_least_one(&format!("{base}.burst"), burst, 1)?;
    Ok((rpm, burst, tpm))
}

/// `clusters.NAME.rate_limit`: the request and token budgets of the cluster's upstream.
pub(super) fn rate_limit(base: &str, r: &RateLimitFile) -> Result<RateLimitConfig> {
    let (requests_per_minute, burst, tokens_per_minute) =
        rates(base, r.requests_per_minute, r.burst, r.tokens_per_minute)?;
    Ok(RateLimitConfig {
        requests_per_minute,
        burst,
        tokens_per_minute,
        queue_timeout: r.queue_timeout.map_or(Duration::ZERO, |d| d.0),
        scope: scope(r.scope),
    })
}

/// `clusters.NAME.queue`: where requests wait for a free peer.
pub(super) fn queue(base: &str, q: Option<&QueueFile>) -> Result<QueueConfig> {
    let mut out = QueueConfig::default();
    if let Some(q) = q {
        out.max_waiting = q.max_waiting.unwrap_or(out.max_waiting);
        out.timeout = positive(&format!("{base}.timeout"), q.timeout, out.timeout)?;
    }
    Ok(out)
}

/// `routes[N].client_limit`: requests and tokens per client.
pub(super) fn client_limit(base: &str, l: &ClientLimitFile) -> Result<ClientLimitConfig> {
    let (requests_per_minute, burst, tokens_per_minute) =
        rates(base, l.requests_per_minute, l.burst, l.tokens_per_minute)?;
    Ok(ClientLimitConfig {
        key: sticky(&format!("{base}.key"), &l.key)?,
        requests_per_minute,
        burst,
        tokens_per_minute,
        scope: scope(l.scope),
    })
}
