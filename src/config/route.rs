//! Building a route: its match and split, timeouts, retries, fallback answer and cache. Its
//! per-client limit is built by [`super::admission`].

use super::admission;
use super::check::{
    err, method, name, positive, regex, statuses, sticky, url_path, weight, Result,
};
use super::file::*;
use super::types::*;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};

/// Largest request body when `max_request_body` is not given: 4MiB.
const DEFAULT_MAX_REQUEST_BODY: usize = 4 * 1024 * 1024;
/// Most tries a route may make, the first included.
const MAX_ATTEMPTS: u32 = 10;
/// The retry budget's `window` bounds (Finagle's).
const BUDGET_WINDOW: (std::time::Duration, std::time::Duration) = (
    std::time::Duration::from_secs(1),
    std::time::Duration::from_secs(60),
);
/// The store weighs entries in KiB with a 16-bit weight.
const MAX_CACHE_ENTRY: u64 = 63 * 1024 * 1024;
/// Most continuations of one request.
const MAX_RESUMES: u32 = 10;

/// `routes[N]`; `clusters` are the built clusters, which the split names.
pub(super) fn route(base: &str, r: &RouteFile, clusters: &[ClusterConfig]) -> Result<RouteConfig> {
    name(&format!("{base}.name"), &r.name)?;
    let path_prefix = r.matcher.path_prefix.clone().unwrap_or_else(|| "/".into());
    url_path(&format!("{base}.match.path_prefix"), &path_prefix)?;
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
    let split = split(&format!("{base}.split"), &r.split, clusters)?;
    let sticky = match &r.sticky {
        Some(s) => Some(sticky(&format!("{base}.sticky"), s)?),
        None => None,
    };
    let timeouts = timeouts(&format!("{base}.timeouts"), &r.timeouts)?;
    let retry = retry(&format!("{base}.retry"), r.retry.as_ref())?;
    let hedge = match &r.hedge {
        Some(h) => Some(hedge(&format!("{base}.hedge"), h, &retry)?),
        None => None,
    };
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
        Some(l) => Some(admission::client_limit(&format!("{base}.client_limit"), l)?),
        None => None,
    };
    let cache = match &r.cache {
        Some(c) => Some(cache(&format!("{base}.cache"), c)?),
        None => None,
    };
    let resume = match &r.resume {
        Some(f) => Some(resume(&format!("{base}.resume"), f)?),
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
        hedge,
        max_request_body,
        fallback,
        cache,
        resume,
    })
}

/// `routes[N].resume`.
fn resume(base: &str, f: &ResumeFile) -> Result<ResumeConfig> {
    let d = ResumeConfig::default();
    let mode = match f.mode {
        None | Some(ResumeModeFile::Continue) => ResumeMode::Continue,
    };
    let max = f.max.unwrap_or(d.max);
    if max == 0 || max > MAX_RESUMES {
        return err(
            format!("{base}.max"),
            format!(
                "must be 1-{MAX_RESUMES} (continuations per request; leave resume out for none)"
            ),
        );
    }
    Ok(ResumeConfig { mode, max })
}

/// `routes[N].split`: one or more clusters, each named once, not all of weight zero.
fn split(base: &str, list: &[SplitFile], clusters: &[ClusterConfig]) -> Result<Vec<SplitTarget>> {
    if list.is_empty() {
        return err(base, "a route needs at least one cluster");
    }
    let mut split = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let p = format!("{base}[{i}]");
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
        let weight = weight(&format!("{p}.weight"), s.weight)?;
        split.push(SplitTarget {
            cluster: idx,
            weight,
        });
    }
    if split.iter().all(|t| t.weight == 0) {
        return err(base, "total split weight is zero");
    }
    Ok(split)
}

/// `routes[N].timeouts`. `first_byte` left out bounds nothing but `total`; `first_token` left
/// out is `first_byte` when that is given, else 15s.
fn timeouts(base: &str, t: &TimeoutsFile) -> Result<Timeouts> {
    let d = Timeouts::default();
    let key = |k: &str| format!("{base}.{k}");
    let first_byte = match t.first_byte {
        Some(f) => Some(positive(&key("first_byte"), Some(f), f.0)?),
        None => None,
    };
    let first_token = first_byte.unwrap_or(d.first_token);
    Ok(Timeouts {
        connect: positive(&key("connect"), t.connect, d.connect)?,
        first_byte,
        first_token: positive(&key("first_token"), t.first_token, first_token)?,
        idle: positive(&key("idle"), t.idle, d.idle)?,
        total: positive(&key("total"), t.total, d.total)?,
    })
}

/// `routes[N].hedge`: a hedge is a try, so `max` leaves room for it in `retry.attempts`.
fn hedge(base: &str, h: &HedgeFile, retry: &RetryPolicy) -> Result<HedgeConfig> {
    let d = HedgeConfig::default();
    let after = positive(&format!("{base}.after"), h.after, d.after)?;
    let max = h.max.unwrap_or(d.max);
    if max == 0 || max >= retry.attempts {
        return err(
            format!("{base}.max"),
            format!(
                "must be 1 to {} (a hedge is a try: retry.attempts is {})",
                retry.attempts.saturating_sub(1),
                retry.attempts
            ),
        );
    }
    Ok(HedgeConfig { after, max })
}

/// `routes[N].retry.retry_on`.
fn retry_on(base: &str, list: &[RetryOnFile]) -> Result<RetryOn> {
    let mut on = RetryOn::NONE;
    for (i, v) in list.iter().enumerate() {
        match v {
            RetryOnFile::Status(code) => on.statuses.push(*code),
            RetryOnFile::Named(name) => match name {
                RetryName::ConnectFailure => on.connect_failure = true,
                RetryName::Refused => on.refused = true,
                RetryName::Reset => on.reset = true,
                RetryName::Timeout => on.timeout = true,
                RetryName::Status5xx => on.statuses.extend([500, 501, 502, 503, 504, 505]),
                RetryName::GatewayError => on.statuses.extend([502, 503, 504]),
            },
            RetryOnFile::Answer(a) => {
                let p = format!("{base}[{i}]");
                let list = a.status.to_vec();
                statuses(&format!("{p}.status"), &list)?;
                if let Some(s) = list.iter().find(|s| !(400..=599).contains(*s)) {
                    return err(
                        format!("{p}.status"),
                        format!("status {s} is not a 4xx or 5xx"),
                    );
                }
                match &a.body {
                    Some(re) => on.answers.push(AnswerCondition {
                        statuses: list,
                        body: regex(&format!("{p}.body"), re)?,
                    }),
                    None => on.statuses.extend(list),
                }
            }
        }
    }
    on.statuses.sort_unstable();
    on.statuses.dedup();
    if let Some(a) = on
        .answers
        .iter()
        .find(|a| a.statuses.iter().any(|s| on.statuses.contains(s)))
    {
        let i = list
            .iter()
            .position(|v| matches!(v, RetryOnFile::Answer(f) if f.body.as_deref() == Some(a.body.as_str())))
            .unwrap_or(0);
        return err(
            format!("{base}[{i}].status"),
            "this status is also retried whatever its body: the body condition would never decide",
        );
    }
    Ok(on)
}

/// `routes[N].retry.budget`: a bare number is the ratio.
fn budget(base: &str, b: &BudgetFile) -> Result<BudgetConfig> {
    let mut out = BudgetConfig::default();
    let (ratio, ratio_path) = match b {
        BudgetFile::Ratio(r) => (Some(*r), base.to_string()),
        BudgetFile::Map(m) => {
            if let Some(w) = m.window {
                let (lo, hi) = BUDGET_WINDOW;
                if w.0 < lo || w.0 > hi {
                    return err(format!("{base}.window"), "must be 1s to 60s");
                }
                out.window = w.0;
            }
            if let Some(n) = m.min_per_second {
                if n > 100_000 {
                    return err(format!("{base}.min_per_second"), "must be at most 100000");
                }
                out.min_per_second = n;
            }
            (m.ratio, format!("{base}.ratio"))
        }
    };
    if let Some(r) = ratio {
        if !(r.is_finite() && (0.0..=1.0).contains(&r)) {
            return err(ratio_path, "must be in [0, 1]");
        }
        out.ratio = r;
    }
    Ok(out)
}

/// `routes[N].retry`; the default policy when left out.
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
        out.on = retry_on(&format!("{base}.retry_on"), list)?;
    }
    if let Some(b) = &r.backoff {
        out.backoff_base = b.base.map_or(out.backoff_base, |d| d.0);
        out.backoff_max = b.max.map_or(out.backoff_max, |d| d.0);
        if out.backoff_max < out.backoff_base {
            return err(format!("{base}.backoff.max"), "must not be less than base");
        }
    }
    if let Some(b) = &r.budget {
        out.budget = budget(&format!("{base}.budget"), b)?;
    }
    out.other_cluster = match r.other_cluster {
        None => out.other_cluster,
        Some(OtherClusterFile::Last) => OtherCluster::Last,
        Some(OtherClusterFile::Next) => OtherCluster::Next,
        Some(OtherClusterFile::Never) => OtherCluster::Never,
    };
    if let Some(m) = r.max_retry_after {
        if m.0 > std::time::Duration::from_secs(300) {
            return err(format!("{base}.max_retry_after"), "must be at most 300s");
        }
        out.max_retry_after = m.0;
    }
    Ok(out)
}

/// `routes[N].fallback`.
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

/// `routes[N].cache`.
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
        shared: c.shared.unwrap_or(d.shared),
    })
}
