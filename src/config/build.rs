//! File layer -> runtime config, with every check that needs more than one value.

use super::edge;
use super::file::*;
use super::types::*;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

/// A validation failure at `path`; `config::parse` adds the file and line.
pub struct BuildError {
    pub path: String,
    pub message: String,
}

pub(super) type Result<T> = std::result::Result<T, BuildError>;

pub(super) fn err<T>(path: impl Into<String>, message: impl Into<String>) -> Result<T> {
    Err(BuildError {
        path: path.into(),
        message: message.into(),
    })
}

pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";
pub const DEFAULT_MAX_REQUEST_BODY: usize = 4 * 1024 * 1024;
const MAX_WEIGHT: u32 = 10_000;
const MAX_ATTEMPTS: u32 = 10;

pub fn build(f: FileConfig) -> Result<Config> {
    let server = server(&f.server)?;
    if f.listeners.is_empty() {
        return err("listeners", "at least one listener is required");
    }
    let mut seen = HashSet::new();
    let mut listeners = Vec::new();
    for (i, l) in f.listeners.iter().enumerate() {
        let path = format!("listeners[{i}].addr");
        let addr = socket_addr(&path, &l.addr)?;
        if !seen.insert(addr) {
            return err(path, format!("duplicate listener address {addr}"));
        }
        let tls = match &l.tls {
            Some(t) => Some(edge::tls_files(&format!("listeners[{i}].tls"), t)?),
            None => None,
        };
        listeners.push(Listener { addr, tls });
    }
    let admin = edge::admin(f.admin.as_ref())?;
    let admin_addr = admin.addr;
    if seen.contains(&admin_addr) {
        return err("admin.addr", format!("{admin_addr} is also a listener"));
    }

    if f.clusters.is_empty() {
        return err("clusters", "at least one cluster is required");
    }
    let mut clusters = Vec::new();
    for (name, c) in &f.clusters {
        clusters.push(cluster(name, c)?);
    }
    if f.routes.is_empty() {
        return err("routes", "at least one route is required");
    }
    let mut names = HashSet::new();
    let mut routes = Vec::new();
    for (i, r) in f.routes.iter().enumerate() {
        let route = route(&format!("routes[{i}]"), r, &clusters)?;
        if !names.insert(route.name.clone()) {
            return err(
                format!("routes[{i}].name"),
                format!("duplicate route name {:?}", route.name),
            );
        }
        routes.push(route);
    }
    Ok(Config {
        server,
        listeners,
        admin,
        clusters,
        routes,
        limits: edge::limits(&f.limits)?,
        access_log: edge::access_log(f.access_log.as_ref())?,
    })
}

fn server(s: &ServerFile) -> Result<ServerSettings> {
    let d = ServerSettings::default();
    let threads = match s.threads {
        Some(0) => return err("server.threads", "must be at least 1"),
        Some(n) => n,
        None => d.threads,
    };
    Ok(ServerSettings {
        threads,
        grace_period: s.grace_period.map_or(d.grace_period, |g| g.0),
        graceful_shutdown_timeout: s
            .graceful_shutdown_timeout
            .map_or(d.graceful_shutdown_timeout, |g| g.0),
        pid_file: s.pid_file.clone().unwrap_or(d.pid_file),
        upgrade_sock: s.upgrade_sock.clone().unwrap_or(d.upgrade_sock),
    })
}

pub(super) fn socket_addr(path: &str, s: &str) -> Result<SocketAddr> {
    s.trim().parse().or_else(|_| {
        err(
            path,
            format!(
                "bad address {s:?}: expected IP:port, like \"127.0.0.1:8000\" or \"[::1]:8000\""
            ),
        )
    })
}

/// Names appear in metric labels and URLs: keep them plain.
fn name(path: &str, n: &str) -> Result<()> {
    let ok = !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        err(
            path,
            format!("bad name {n:?}: use 1-64 letters, digits, '_', '-' or '.'"),
        )
    }
}

pub(super) fn positive(
    path: &str,
    d: Option<super::units::Dur>,
    default: Duration,
) -> Result<Duration> {
    match d {
        Some(d) if d.0.is_zero() => err(path, "must be greater than zero"),
        Some(d) => Ok(d.0),
        None => Ok(default),
    }
}

fn cluster(name_: &str, c: &ClusterFile) -> Result<ClusterConfig> {
    let base = format!("clusters.{name_}");
    name(&base, name_)?;
    let balance = match c.balance.as_deref() {
        None | Some("round_robin") => Balance::RoundRobin,
        Some("least_inflight") => Balance::LeastInflight,
        Some(other) => {
            return err(
                format!("{base}.balance"),
                format!("unknown balance {other:?}: expected round_robin or least_inflight"),
            )
        }
    };
    if c.peers.is_empty() {
        return err(format!("{base}.peers"), "a cluster needs at least one peer");
    }
    let mut peers = Vec::new();
    let mut seen = HashSet::new();
    for (i, p) in c.peers.iter().enumerate() {
        let addr = socket_addr(&format!("{base}.peers[{i}].addr"), &p.addr)?;
        if !seen.insert(addr) {
            return err(
                format!("{base}.peers[{i}].addr"),
                format!("duplicate peer {addr}"),
            );
        }
        let weight = p.weight.unwrap_or(1);
        if weight > MAX_WEIGHT {
            return err(
                format!("{base}.peers[{i}].weight"),
                format!("weight {weight} is over the maximum of {MAX_WEIGHT}"),
            );
        }
        let max_inflight = match p.max_inflight {
            Some(0) => {
                return err(
                    format!("{base}.peers[{i}].max_inflight"),
                    "must be at least 1 (leave it out for no limit)",
                )
            }
            m => m,
        };
        peers.push(PeerConfig {
            addr,
            weight,
            max_inflight,
        });
    }
    if peers.iter().all(|p| p.weight == 0) {
        return err(format!("{base}.peers"), "total peer weight is zero");
    }
    let health_check = match &c.health_check {
        Some(h) => Some(health_check(&format!("{base}.health_check"), h)?),
        None => None,
    };
    let breaker = breaker(&format!("{base}.breaker"), c.breaker.as_ref())?;
    let slow_start = match c.slow_start {
        Some(d) if d.0.is_zero() => None,
        Some(d) => Some(d.0),
        None => None,
    };
    let api_keys = match &c.api_keys {
        Some(k) => Some(super::upstream::api_keys(&format!("{base}.api_keys"), k)?),
        None => None,
    };
    let rate_limit = match &c.rate_limit {
        Some(r) => Some(super::upstream::rate_limit(
            &format!("{base}.rate_limit"),
            r,
        )?),
        None => None,
    };
    let queue = super::upstream::queue(&format!("{base}.queue"), c.queue.as_ref())?;
    Ok(ClusterConfig {
        name: name_.to_string(),
        balance,
        peers,
        health_check,
        breaker,
        slow_start,
        api_keys,
        rate_limit,
        queue,
    })
}

pub(super) fn header(path: &str, k: &str, v: &str) -> Result<(HeaderName, HeaderValue)> {
    let name = HeaderName::from_bytes(k.as_bytes())
        .or_else(|_| err(path, format!("bad header name {k:?}")))?;
    let value = HeaderValue::from_str(v).or_else(|_| err(path, "bad header value"))?;
    Ok((name, value))
}

fn health_check(base: &str, h: &HealthCheckFile) -> Result<HealthCheckConfig> {
    let kind = match h.kind.as_deref() {
        None | Some("http") => HealthCheckKind::Http,
        Some("tcp") => HealthCheckKind::Tcp,
        Some(o) => {
            return err(
                format!("{base}.kind"),
                format!("unknown kind {o:?}: expected http or tcp"),
            )
        }
    };
    let d = HealthCheckConfig::default();
    let method = match &h.method {
        Some(m) => method(&format!("{base}.method"), m)?,
        None => d.method,
    };
    let path = h.path.clone().unwrap_or(d.path);
    if !path.starts_with('/') {
        return err(format!("{base}.path"), "must start with '/'");
    }
    let mut headers = Vec::new();
    for (k, v) in &h.headers {
        headers.push(header(&format!("{base}.headers.{k}"), k, v)?);
    }
    let expect_status = h.expect_status.clone().unwrap_or(d.expect_status);
    if expect_status.is_empty() || expect_status.iter().any(|s| !(100..=599).contains(s)) {
        return err(
            format!("{base}.expect_status"),
            "give one or more HTTP statuses (100-599)",
        );
    }
    let expect_body = match &h.expect_body {
        Some(re) => Some(
            regex::Regex::new(re)
                .or_else(|e| err(format!("{base}.expect_body"), format!("bad regex: {e}")))?,
        ),
        None => None,
    };
    let threshold = |key: &str, v: Option<u32>, default: u32| match v {
        Some(0) => err(format!("{base}.{key}"), "must be at least 1"),
        Some(n) => Ok(n),
        None => Ok(default),
    };
    Ok(HealthCheckConfig {
        kind,
        method,
        path,
        headers,
        body: h.body.clone().map(Bytes::from),
        expect_status,
        expect_body,
        interval: positive(&format!("{base}.interval"), h.interval, d.interval)?,
        timeout: positive(&format!("{base}.timeout"), h.timeout, d.timeout)?,
        healthy_threshold: threshold(
            "healthy_threshold",
            h.healthy_threshold,
            d.healthy_threshold,
        )?,
        unhealthy_threshold: threshold(
            "unhealthy_threshold",
            h.unhealthy_threshold,
            d.unhealthy_threshold,
        )?,
    })
}

fn breaker(base: &str, b: Option<&BreakerFile>) -> Result<BreakerConfig> {
    let mut out = BreakerConfig::default();
    let Some(b) = b else { return Ok(out) };
    let at_least_one = |key: &str, v: Option<u32>, default: u32| match v {
        Some(0) => err(format!("{base}.{key}"), "must be at least 1"),
        Some(n) => Ok(n),
        None => Ok(default),
    };
    out.enabled = b.enabled.unwrap_or(out.enabled);
    out.consecutive_failures = at_least_one(
        "consecutive_failures",
        b.consecutive_failures,
        out.consecutive_failures,
    )?;
    if let Some(r) = b.failure_rate {
        if !(r > 0.0 && r <= 1.0) {
            return err(format!("{base}.failure_rate"), "must be in (0, 1]");
        }
        out.failure_rate = r;
    }
    out.min_requests = at_least_one("min_requests", b.min_requests, out.min_requests)?;
    out.window = positive(&format!("{base}.window"), b.window, out.window)?;
    out.open_for = positive(&format!("{base}.open_for"), b.open_for, out.open_for)?;
    out.max_open_for = positive(
        &format!("{base}.max_open_for"),
        b.max_open_for,
        out.max_open_for,
    )?;
    if out.max_open_for < out.open_for {
        return err(
            format!("{base}.max_open_for"),
            "must not be shorter than open_for",
        );
    }
    out.half_open_requests = at_least_one(
        "half_open_requests",
        b.half_open_requests,
        out.half_open_requests,
    )?;
    out.success_threshold = at_least_one(
        "success_threshold",
        b.success_threshold,
        out.success_threshold,
    )?;
    if let Some(p) = b.max_ejected_percent {
        if p > 100 {
            return err(format!("{base}.max_ejected_percent"), "must be 0-100");
        }
        out.max_ejected_percent = p;
    }
    if let Some(list) = &b.failure_on {
        let mut f = FailureOn::NONE;
        for (i, k) in list.iter().enumerate() {
            match k.as_str() {
                "connect" => f.connect = true,
                "timeout" => f.timeout = true,
                "reset" => f.reset = true,
                "5xx" => f.status_5xx = true,
                o => {
                    return err(
                        format!("{base}.failure_on[{i}]"),
                        format!("unknown failure {o:?}: expected connect, timeout, reset or 5xx"),
                    )
                }
            }
        }
        out.failure_on = f;
    }
    Ok(out)
}

pub(super) fn method(path: &str, m: &str) -> Result<Method> {
    let up = m.to_ascii_uppercase();
    Method::from_bytes(up.as_bytes()).or_else(|_| err(path, format!("bad method {m:?}")))
}

fn route(base: &str, r: &RouteFile, clusters: &[ClusterConfig]) -> Result<RouteConfig> {
    name(&format!("{base}.name"), &r.name)?;
    let path_prefix = r.matcher.path_prefix.clone().unwrap_or_else(|| "/".into());
    if !path_prefix.starts_with('/') {
        return err(format!("{base}.match.path_prefix"), "must start with '/'");
    }
    let host = r.matcher.host.as_ref().map(|h| h.to_ascii_lowercase());
    let methods = match &r.matcher.methods {
        Some(ms) => {
            let mut out = Vec::new();
            for (i, m) in ms.iter().enumerate() {
                out.push(method(&format!("{base}.match.methods[{i}]"), m)?);
            }
            Some(out)
        }
        None => None,
    };
    if r.split.is_empty() {
        return err(
            format!("{base}.split"),
            "a route needs at least one cluster",
        );
    }
    let mut split = Vec::new();
    for (i, s) in r.split.iter().enumerate() {
        let p = format!("{base}.split[{i}]");
        let Some(idx) = clusters.iter().position(|c| c.name == s.cluster) else {
            return err(
                format!("{p}.cluster"),
                format!("unknown cluster {:?}", s.cluster),
            );
        };
        if split.iter().any(|t: &SplitTarget| t.cluster == idx) {
            return err(
                format!("{p}.cluster"),
                format!("cluster {:?} is listed twice", s.cluster),
            );
        }
        let weight = s.weight.unwrap_or(1);
        if weight > MAX_WEIGHT {
            return err(
                format!("{p}.weight"),
                format!("weight {weight} is over the maximum of {MAX_WEIGHT}"),
            );
        }
        split.push(SplitTarget {
            cluster: idx,
            weight,
        });
    }
    if split.iter().all(|t| t.weight == 0) {
        return err(format!("{base}.split"), "total split weight is zero");
    }
    let sticky = match &r.sticky {
        Some(s) => Some(sticky(&format!("{base}.sticky"), s)?),
        None => None,
    };
    let t = &r.timeouts;
    let tp = |k: &str| format!("{base}.timeouts.{k}");
    let d = Timeouts::default();
    let timeouts = Timeouts {
        connect: positive(&tp("connect"), t.connect, d.connect)?,
        first_byte: positive(&tp("first_byte"), t.first_byte, d.first_byte)?,
        idle: positive(&tp("idle"), t.idle, d.idle)?,
        total: positive(&tp("total"), t.total, d.total)?,
    };
    let retry = retry(&format!("{base}.retry"), r.retry.as_ref())?;
    let max_request_body = match r.max_request_body {
        Some(s) if s.0 == 0 => {
            return err(
                format!("{base}.max_request_body"),
                "must be greater than zero",
            )
        }
        Some(s) if s.0 > 1 << 30 => {
            return err(format!("{base}.max_request_body"), "must be at most 1GiB")
        }
        Some(s) => s.0 as usize,
        None => DEFAULT_MAX_REQUEST_BODY,
    };
    let fallback = match &r.fallback {
        Some(f) => Some(fallback(&format!("{base}.fallback"), f)?),
        None => None,
    };
    let client_limit = match &r.client_limit {
        Some(l) => Some(super::upstream::client_limit(
            &format!("{base}.client_limit"),
            l,
        )?),
        None => None,
    };
    let cache = match &r.cache {
        Some(c) => Some(cache(&format!("{base}.cache"), c)?),
        None => None,
    };
    Ok(RouteConfig {
        client_limit,
        name: r.name.clone(),
        matcher: RouteMatch {
            path_prefix,
            host,
            methods,
        },
        split,
        sticky,
        timeouts,
        retry,
        max_request_body,
        fallback,
        cache,
    })
}

pub(super) fn sticky(path: &str, s: &str) -> Result<StickyKey> {
    match s.split_once(':') {
        Some(("header", h)) => HeaderName::from_bytes(h.trim().as_bytes())
            .map(StickyKey::Header)
            .or_else(|_| err(path, format!("bad header name {h:?}"))),
        Some(("cookie", c)) if !c.trim().is_empty() => Ok(StickyKey::Cookie(c.trim().into())),
        None if s == "ip" => Ok(StickyKey::ClientIp),
        _ => err(
            path,
            format!("bad sticky key {s:?}: expected \"header:NAME\", \"cookie:NAME\" or \"ip\""),
        ),
    }
}

fn retry(base: &str, r: Option<&RetryFile>) -> Result<RetryPolicy> {
    let mut out = RetryPolicy::default();
    let Some(r) = r else { return Ok(out) };
    if let Some(a) = r.attempts {
        if a == 0 || a > MAX_ATTEMPTS {
            return err(
                format!("{base}.attempts"),
                format!("must be 1-{MAX_ATTEMPTS} (total tries, the first included)"),
            );
        }
        out.attempts = a;
    }
    if let Some(list) = &r.retry_on {
        let mut on = RetryOn::NONE;
        for (i, v) in list.iter().enumerate() {
            let p = format!("{base}.retry_on[{i}]");
            match v {
                serde_yaml::Value::Number(n) => match n.as_u64() {
                    Some(code @ 400..=599) => on.statuses.push(code as u16),
                    _ => return err(p, format!("status {n} is not a 4xx or 5xx")),
                },
                serde_yaml::Value::String(s) => match s.as_str() {
                    "connect_failure" => on.connect_failure = true,
                    "refused" => on.refused = true,
                    "reset" => on.reset = true,
                    "timeout" => on.timeout = true,
                    "5xx" => on.statuses.extend([500, 501, 502, 503, 504, 505]),
                    "gateway_error" => on.statuses.extend([502, 503, 504]),
                    s => match s.parse::<u16>() {
                        Ok(code @ 400..=599) => on.statuses.push(code),
                        _ => {
                            return err(
                                p,
                                format!(
                                    "unknown retry condition {s:?}: expected connect_failure, \
                                     refused, reset, timeout, 5xx, gateway_error or a status"
                                ),
                            )
                        }
                    },
                },
                _ => return err(p, "expected a condition name or a status code"),
            }
        }
        on.statuses.sort_unstable();
        on.statuses.dedup();
        out.on = on;
    }
    if let Some(b) = &r.backoff {
        out.backoff_base = b.base.map_or(out.backoff_base, |d| d.0);
        out.backoff_max = b.max.map_or(out.backoff_max, |d| d.0);
        if out.backoff_max < out.backoff_base {
            return err(format!("{base}.backoff.max"), "must not be less than base");
        }
    }
    if let Some(b) = r.budget {
        if !(b > 0.0 && b <= 1.0) {
            return err(format!("{base}.budget"), "must be in (0, 1]");
        }
        out.budget = b;
    }
    Ok(out)
}

fn fallback(base: &str, f: &FallbackFile) -> Result<Fallback> {
    let status = f.status.unwrap_or(200);
    if !(200..=599).contains(&status) {
        return err(format!("{base}.status"), "must be an HTTP status 200-599");
    }
    let content_type = f
        .content_type
        .clone()
        .unwrap_or_else(|| "application/json".into());
    if HeaderValue::from_str(&content_type).is_err() {
        return err(format!("{base}.content_type"), "bad header value");
    }
    let body = Bytes::from(f.body.clone());
    // YAML single-quoted strings keep `\n` literally; the documented form is single-quoted.
    let stream_body = match &f.stream_body {
        Some(s) => Bytes::from(s.replace("\\n", "\n")),
        None => {
            let one_line = f.body.replace('\n', " ");
            Bytes::from(format!("data: {one_line}\n\ndata: [DONE]\n\n"))
        }
    };
    Ok(Fallback {
        status,
        content_type,
        body,
        stream_body,
    })
}

/// The store weighs entries in KiB with a 16-bit weight.
const MAX_CACHE_ENTRY: u64 = 63 * 1024 * 1024;

fn cache(base: &str, c: &CacheFile) -> Result<CacheConfig> {
    let d = CacheConfig::default();
    let max_bytes = match c.max_bytes {
        Some(s) if s.0 < 1024 => return err(format!("{base}.max_bytes"), "must be at least 1KiB"),
        Some(s) => s.0,
        None => d.max_bytes,
    };
    let max_entry_bytes = match c.max_entry_bytes {
        Some(s) if s.0 == 0 => {
            return err(
                format!("{base}.max_entry_bytes"),
                "must be greater than zero",
            )
        }
        Some(s) if s.0 > MAX_CACHE_ENTRY => {
            return err(format!("{base}.max_entry_bytes"), "must be at most 63MiB")
        }
        Some(s) => s.0,
        None => d.max_entry_bytes.min(max_bytes),
    };
    if max_entry_bytes > max_bytes {
        return err(
            format!("{base}.max_entry_bytes"),
            format!("must not be larger than max_bytes ({max_bytes} bytes)"),
        );
    }
    let vary_headers = match &c.vary_headers {
        Some(list) => {
            let mut out: Vec<HeaderName> = Vec::new();
            for (i, h) in list.iter().enumerate() {
                let name = HeaderName::from_bytes(h.trim().as_bytes()).or_else(|_| {
                    err(
                        format!("{base}.vary_headers[{i}]"),
                        format!("bad header name {h:?}"),
                    )
                })?;
                if out.contains(&name) {
                    return err(
                        format!("{base}.vary_headers[{i}]"),
                        format!("header {name} is listed twice"),
                    );
                }
                out.push(name);
            }
            out
        }
        None => d.vary_headers,
    };
    let warm = match c.warm.as_deref().map(str::trim) {
        Some("") => return err(format!("{base}.warm"), "give a file path"),
        Some(p) => Some(std::path::PathBuf::from(p)),
        None => None,
    };
    Ok(CacheConfig {
        ttl: positive(&format!("{base}.ttl"), c.ttl, d.ttl)?,
        max_bytes,
        max_entry_bytes,
        vary_headers,
        deterministic_only: c.deterministic_only.unwrap_or(d.deterministic_only),
        stale_if_error: c.stale_if_error.map_or(d.stale_if_error, |s| s.0),
        lock_timeout: positive(
            &format!("{base}.lock_timeout"),
            c.lock_timeout,
            d.lock_timeout,
        )?,
        warm,
    })
}
