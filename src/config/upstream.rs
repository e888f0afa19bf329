//! Building the keys that govern how much reaches an upstream: API-key pools, request budgets,
//! admission queues and per-client limits.

use super::build::{err, method, positive, sticky, Result};
use super::file::{ApiKeysFile, ClientLimitFile, KeyHealthFile, QueueFile, RateLimitFile};
use super::types::*;
use bytes::Bytes;
use http::{HeaderName, Method};
use std::time::Duration;

fn regex(path: &str, re: &str) -> Result<regex::Regex> {
    regex::Regex::new(re).or_else(|e| err(path, format!("bad regex: {e}")))
}

fn statuses(path: &str, list: &[u16]) -> Result<()> {
    if list.is_empty() || list.iter().any(|s| !(100..=599).contains(s)) {
        return err(path, "give one or more HTTP statuses (100-599)");
    }
    Ok(())
}

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

pub fn api_keys(base: &str, k: &ApiKeysFile) -> Result<ApiKeysConfig> {
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
    keys.dedup();
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
    let f = k.failover.as_ref();
    let fbase = format!("{base}.failover");
    let failure_threshold = match f.and_then(|f| f.failure_threshold) {
        Some(0) => return err(format!("{fbase}.failure_threshold"), "must be at least 1"),
        Some(n) => n,
        None => 3,
    };
    let default_cooldown = positive(
        &format!("{fbase}.default_cooldown"),
        f.and_then(|f| f.default_cooldown),
        Duration::from_secs(60),
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
                let cooldown = match c.cooldown.as_deref() {
                    None => KeyCooldown::Disable,
                    Some("retry-after") => KeyCooldown::RetryAfter,
                    Some(d) => match humantime::parse_duration(d) {
                        Ok(d) if !d.is_zero() => KeyCooldown::For(d),
                        _ => {
                            return err(
                                format!("{p}.cooldown"),
                                format!(
                                "expected \"retry-after\" or a duration like \"30s\", got {d:?}"
                            ),
                            )
                        }
                    },
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
        failure_threshold,
        conditions,
        default_cooldown,
        health_check,
    })
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
    if !path.starts_with('/') {
        return err(format!("{base}.path"), "must start with '/'");
    }
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
        success_threshold: match h.success_threshold {
            Some(0) => return err(format!("{base}.success_threshold"), "must be at least 1"),
            Some(n) => n,
            None => d.success_threshold,
        },
    })
}

fn rpm_burst(base: &str, rpm: u32, burst: Option<u32>) -> Result<(u32, u32)> {
    if rpm == 0 {
        return err(format!("{base}.requests_per_minute"), "must be at least 1");
    }
    let burst = burst.unwrap_or(1);
    if burst == 0 {
        return err(format!("{base}.burst"), "must be at least 1");
    }
    Ok((rpm, burst))
}

pub fn rate_limit(base: &str, r: &RateLimitFile) -> Result<RateLimitConfig> {
    let (requests_per_minute, burst) = rpm_burst(base, r.requests_per_minute, r.burst)?;
    Ok(RateLimitConfig {
        requests_per_minute,
        burst,
        queue_timeout: r.queue_timeout.map_or(Duration::ZERO, |d| d.0),
    })
}

pub fn queue(base: &str, q: Option<&QueueFile>) -> Result<QueueConfig> {
    let mut out = QueueConfig::default();
    if let Some(q) = q {
        out.max_waiting = q.max_waiting.unwrap_or(out.max_waiting);
        out.timeout = positive(&format!("{base}.timeout"), q.timeout, out.timeout)?;
    }
    Ok(out)
}

pub fn client_limit(base: &str, l: &ClientLimitFile) -> Result<ClientLimitConfig> {
    let (requests_per_minute, burst) = rpm_burst(base, l.requests_per_minute, l.burst)?;
    Ok(ClientLimitConfig {
        key: sticky(&format!("{base}.key"), &l.key)?,
        requests_per_minute,
        burst,
    })
}
