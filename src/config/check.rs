//! The checks every part of the config shares: the error type of `build`, and the rules for
//! values that appear in more than one place (addresses, durations, counts, names, methods,
//! headers, paths, statuses, regexes, sticky keys).

use super::types::{PeerAddr, StickyKey};
use super::units::Dur;
use http::{HeaderName, HeaderValue, Method};
use std::net::SocketAddr;
use std::time::Duration;

/// A validation failure at `path`; `config::parse` adds the file and line.
pub struct BuildError {
    /// Key path such as `routes[0].split[1].cluster`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl BuildError {
    /// The same error with `hint` added in brackets.
    pub(super) fn hint(mut self, hint: &str) -> Self {
        self.message = format!("{} ({hint})", self.message);
        self
    }
}

/// What every builder returns.
pub(super) type Result<T> = std::result::Result<T, BuildError>;

/// Fail at `path` with `message`.
pub(super) fn err<T>(path: impl Into<String>, message: impl Into<String>) -> Result<T> {
    Err(BuildError {
        path: path.into(),
        message: message.into(),
    })
}

/// The longest duration any key accepts: 365 days. Every deadline is an `Instant` plus a
/// configured duration (sometimes two added, as `ttl + stale_if_error`), and `Instant + Duration`
/// panics on overflow; a bound far below the overflow keeps every such sum safe, and no sane
/// timeout, interval or TTL is longer than a year.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// `d` when it is within [`MAX_DURATION`], else the message that says why not. Every duration
/// key goes through this: it is called where a duration is read from the file (`units::Dur`),
/// so a key added later is bounded too.
pub fn bounded_duration(d: Duration) -> std::result::Result<Duration, String> {
    if d > MAX_DURATION {
        return Err(format!(
            "{} is longer than the longest duration accepted, 365days",
            humantime::format_duration(d)
        ));
    }
    Ok(d)
}

/// A duration that must not be zero, or `default` when absent.
pub(super) fn positive(path: &str, d: Option<Dur>, default: Duration) -> Result<Duration> {
    match d {
        Some(d) if d.0.is_zero() => err(path, "must be greater than zero"),
        Some(d) => Ok(d.0),
        None => Ok(default),
    }
}

/// A count that must not be zero, or `default` when absent.
pub(super) fn at_least_one<T>(path: &str, n: Option<T>, default: T) -> Result<T>
where
    T: Copy + PartialEq + From<u8>,
{
    match n {
        Some(n) if n == T::from(0) => err(path, "must be at least 1"),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

/// Largest weight of a peer or a split target.
const MAX_WEIGHT: u32 = 10_000;

/// A relative weight: 1 when absent, 0 to take no share, at most [`MAX_WEIGHT`].
pub(super) fn weight(path: &str, w: Option<u32>) -> Result<u32> {
    let w = w.unwrap_or(1);
    if w > MAX_WEIGHT {
        return err(
            path,
            format!("weight {w} is over the maximum of {MAX_WEIGHT}"),
        );
    }
    Ok(w)
}

/// An `IP:port`.
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

/// A peer's address: `IP:port`, or `host:port` with a DNS name (resolved at run time).
pub(super) fn peer_addr(path: &str, s: &str) -> Result<PeerAddr> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(PeerAddr::Ip(a));
    }
    let bad = || {
        err(
            path,
            format!(
                "bad address {s:?}: expected IP:port or host:port, like \"127.0.0.1:8000\", \
                 \"[::1]:8000\" or \"vllm.models.svc.cluster.local:8000\""
            ),
        )
    };
    let Some((host, port)) = s.rsplit_once(':') else {
        return bad();
    };
    match port.parse::<u16>() {
        Ok(port) if port > 0 && dns_name(host) => Ok(PeerAddr::Name {
            host: host.to_ascii_lowercase(),
            port,
        }),
        _ => bad(),
    }
}

/// A DNS name: dot-separated labels of letters, digits, `-` and `_`, not all digits (that is a
/// mistyped IP), at most 253 bytes.
pub(super) fn dns_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(label_ok)
        && !host
            .split('.')
            .all(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

/// An HTTP method, in any case.
pub(super) fn method(path: &str, m: &str) -> Result<Method> {
    let up = m.to_ascii_uppercase();
    Method::from_bytes(up.as_bytes()).or_else(|_| err(path, format!("bad method {m:?}")))
}

/// A request path: it starts with `/`.
pub(super) fn url_path(path: &str, p: &str) -> Result<()> {
    if p.starts_with('/') {
        Ok(())
    } else {
        err(path, "must start with '/'")
    }
}

/// `header:NAME`, `cookie:NAME` or `ip`.
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

/// A header name and value.
pub(super) fn header(path: &str, k: &str, v: &str) -> Result<(HeaderName, HeaderValue)> {
    let name = HeaderName::from_bytes(k.as_bytes())
        .or_else(|_| err(path, format!("bad header name {k:?}")))?;
    let value = HeaderValue::from_str(v).or_else(|_| err(path, "bad header value"))?;
    Ok((name, value))
}

/// Names appear in metric labels and URLs: keep them plain.
pub(super) fn name(path: &str, n: &str) -> Result<()> {
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

/// A regular expression.
pub(super) fn regex(path: &str, re: &str) -> Result<regex::Regex> {
    regex::Regex::new(re).or_else(|e| err(path, format!("bad regex: {e}")))
}

/// One or more HTTP statuses.
pub(super) fn statuses(path: &str, list: &[u16]) -> Result<()> {
    if list.is_empty() || list.iter().any(|s| !(100..=599).contains(s)) {
        return err(path, "give one or more HTTP statuses (100-599)");
    }
    Ok(())
}
