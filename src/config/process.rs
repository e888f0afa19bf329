//! Building the keys of the process and its client-facing side: `server`, `listeners` (and
//! their TLS files), `admin`, `limits` and `access_log`.

use super::check::{at_least_one, err, positive, socket_addr, Result};
use super::file::*;
use super::types::*;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where the admin API listens when `admin.addr` is left out: loopback only.
const DEFAULT_ADMIN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9901);

/// Shortest admin token accepted: a token is the only thing between the network and `/reload`.
const MIN_TOKEN_LEN: usize = 16;

/// `server`: process settings.
pub(super) fn server(s: &ServerFile) -> Result<ServerSettings> {
    let d = ServerSettings::default();
    Ok(ServerSettings {
        threads: at_least_one("server.threads", s.threads, d.threads)?,
        grace_period: s.grace_period.map_or(d.grace_period, |g| g.0),
        graceful_shutdown_timeout: s
            .graceful_shutdown_timeout
            .map_or(d.graceful_shutdown_timeout, |g| g.0),
        pid_file: s.pid_file.clone().unwrap_or(d.pid_file),
        upgrade_sock: s.upgrade_sock.clone().unwrap_or(d.upgrade_sock),
        http1: match s.http1 {
            None => d.http1,
            Some(Http1File::Lean) => Http1Server::Lean,
            Some(Http1File::Pingora) => Http1Server::Pingora,
        },
    })
}

/// One or more listeners, each on its own address.
pub(super) fn listeners(list: &[ListenerFile]) -> Result<Vec<Listener>> {
    if list.is_empty() {
        return err("listeners", "at least one listener is required");
    }
    let mut seen = HashSet::new();
    let mut listeners = Vec::new();
    for (i, l) in list.iter().enumerate() {
        let path = format!("listeners[{i}].addr");
        let addr = socket_addr(&path, &l.addr)?;
        if !seen.insert(addr) {
            return err(path, format!("duplicate listener address {addr}"));
        }
        let tls = match &l.tls {
            Some(t) => Some(tls_files(&format!("listeners[{i}].tls"), t)?),
            None => None,
        };
        listeners.push(Listener { addr, tls });
    }
    Ok(listeners)
}

/// Certificate and key must load and match now, so that `switchyard check` and a reload catch
/// what would otherwise fail at start (Pingora panics on a bad certificate).
fn tls_files(base: &str, t: &TlsFile) -> Result<TlsFiles> {
    let files = TlsFiles {
        cert: PathBuf::from(t.cert.trim()),
        key: PathBuf::from(t.key.trim()),
    };
    match crate::certs::load(&files.cert, &files.key) {
        Ok(_) => Ok(files),
        Err(e) if e.is_key() => err(format!("{base}.key"), e.to_string()),
        Err(e) => err(format!("{base}.cert"), e.to_string()),
    }
}

/// `admin`: where the admin API listens, and its token (required off loopback).
pub(super) fn admin(a: Option<&AdminFile>) -> Result<AdminSettings> {
    let addr = match a.and_then(|a| a.addr.as_deref()) {
        Some(s) => socket_addr("admin.addr", s)?,
        None => DEFAULT_ADMIN,
    };
    let token = match a.map(|a| (a.token.as_deref(), a.token_file.as_deref())) {
        Some((Some(_), Some(_))) => {
            return err(
                "admin.token_file",
                "give admin.token or admin.token_file, not both",
            )
        }
        Some((Some(t), None)) => Some(admin_token("admin.token", t)?),
        Some((None, Some(file))) => {
            let text = std::fs::read_to_string(file.trim())
                .or_else(|e| err("admin.token_file", format!("cannot read {file}: {e}")))?;
            Some(admin_token("admin.token_file", &text)?)
        }
        Some((None, None)) | None => None,
    };
    if token.is_none() && !addr.ip().is_loopback() {
        return err(
            "admin.addr",
            format!(
                "{addr} is not a loopback address: set admin.token or admin.token_file, or \
                 bind the admin listener to 127.0.0.1"
            ),
        );
    }
    let protect_reads = a.and_then(|a| a.protect_reads).unwrap_or(false);
    if protect_reads && token.is_none() {
        return err(
            "admin.protect_reads",
            "needs admin.token or admin.token_file: there is nothing to protect the reads with",
        );
    }
    Ok(AdminSettings {
        addr,
        token,
        protect_reads,
    })
}

fn admin_token(path: &str, raw: &str) -> Result<AdminToken> {
    let t = raw.trim();
    if t.len() < MIN_TOKEN_LEN {
        return err(
            path,
            format!(
                "the token must be at least {MIN_TOKEN_LEN} characters (e.g. `openssl rand -hex 32`)"
            ),
        );
    }
    if !t.bytes().all(|b| b.is_ascii_graphic()) {
        return err(path, "the token must be printable ASCII without spaces");
    }
    Ok(AdminToken::new(t.to_string()))
}

/// `limits`: protections of the client-facing side.
pub(super) fn limits(l: &LimitsFile) -> Result<Limits> {
    let d = Limits::default();
    let max_header_bytes = match l.max_header_bytes {
        Some(s) if s.0 < 1024 => return err("limits.max_header_bytes", "must be at least 1KiB"),
        // Pingora refuses HTTP/1.1 headers over 1 MiB before switchyard sees them.
        Some(s) if s.0 > 1024 * 1024 => {
            return err("limits.max_header_bytes", "must be at most 1MiB")
        }
        Some(s) => s.0 as usize,
        None => d.max_header_bytes,
    };
    let keepalive_timeout = match l.keepalive_timeout {
        Some(t) if t.0 < Duration::from_secs(1) => {
            return err(
                "limits.keepalive_timeout",
                "must be at least 1s (Pingora counts it in whole seconds)",
            )
        }
        Some(t) => Duration::from_secs(t.0.as_secs_f64().ceil() as u64),
        None => d.keepalive_timeout,
    };
    let count = |key: &str, v: Option<u32>, default: usize| {
        at_least_one(&format!("limits.{key}"), v.map(|n| n as usize), default)
    };
    Ok(Limits {
        max_header_bytes,
        client_header_timeout: positive(
            "limits.client_header_timeout",
            l.client_header_timeout,
            d.client_header_timeout,
        )?,
        client_body_timeout: positive(
            "limits.client_body_timeout",
            l.client_body_timeout,
            d.client_body_timeout,
        )?,
        client_body_total_timeout: positive(
            "limits.client_body_total_timeout",
            l.client_body_total_timeout,
            d.client_body_total_timeout,
        )?,
        keepalive_timeout,
        keepalive_requests: at_least_one(
            "limits.keepalive_requests",
            l.keepalive_requests,
            d.keepalive_requests,
        )?,
        max_connections: count("max_connections", l.max_connections, d.max_connections)?,
        max_concurrent_requests: count(
            "max_concurrent_requests",
            l.max_concurrent_requests,
            d.max_concurrent_requests,
        )?,
    })
}

/// `trusted_proxies`: CIDRs (`10.0.0.0/8`, `2001:db8::/32`) or single addresses.
pub(super) fn trusted_proxies(list: &[String]) -> Result<Vec<ipnet::IpNet>> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            let t = s.trim();
            t.parse::<ipnet::IpNet>()
                .or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|n| n.trunc())
                .or_else(|_| {
                    err(
                        format!("trusted_proxies[{i}]"),
                        format!("bad address {s:?}: expected a CIDR like \"10.0.0.0/8\" or an IP"),
                    )
                })
        })
        .collect()
}

/// `access_log`: stderr or a file whose directory exists.
pub(super) fn access_log(a: Option<&AccessLogFile>) -> Result<Option<AccessLogConfig>> {
    let Some(a) = a else { return Ok(None) };
    let p = a.path.trim();
    if p == "stderr" {
        return Ok(Some(AccessLogConfig::Stderr));
    }
    if p.is_empty() {
        return err("access_log.path", "give a file path or \"stderr\"");
    }
    let path = PathBuf::from(p);
    // The file itself is opened (created) at start, not by `check`; its directory must exist.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return err(
            "access_log.path",
            format!("directory {} does not exist", dir.display()),
        );
    }
    if path.is_dir() {
        return err("access_log.path", format!("{p} is a directory"));
    }
    Ok(Some(AccessLogConfig::File(path)))
}

/// `tracing`: an `http://` OTLP endpoint (the path `/v1/traces` when it has none) and a sample
/// ratio between 0 and 1.
pub(super) fn tracing(t: Option<&TracingFile>) -> Result<TracingConfig> {
    let d = TracingConfig::default();
    let Some(t) = t else { return Ok(d) };
    let sample_ratio = match t.sample_ratio {
        None => d.sample_ratio,
        Some(r) if r.is_finite() && (0.0..=1.0).contains(&r) => r,
        Some(r) => {
            return err(
                "tracing.sample_ratio",
                format!("{r} is not between 0 and 1"),
            )
        }
    };
    let otlp_endpoint = match t.otlp_endpoint.as_deref().map(str::trim) {
        None => None,
        Some(e) => Some(otlp_endpoint(e)?),
    };
    Ok(TracingConfig {
        otlp_endpoint,
        sample_ratio,
    })
}

fn otlp_endpoint(e: &str) -> Result<String> {
    const KEY: &str = "tracing.otlp_endpoint";
    let uri: http::Uri = match e.parse() {
        Ok(u) => u,
        Err(_) => return err(KEY, format!("{e:?} is not a URL")),
    };
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return err(
                KEY,
                "https is not supported: send spans to an OpenTelemetry Collector on this host or network over http (it forwards them over TLS)",
            )
        }
        _ => {
            return err(
                KEY,
                format!("{e:?}: give an http:// URL such as http://127.0.0.1:4318/v1/traces"),
            )
        }
    }
    let Some(authority) = uri.authority().filter(|a| !a.host().is_empty()) else {
        return err(KEY, format!("{e:?} has no host"));
    };
    let path = match uri.path_and_query().map(|p| p.as_str()) {
        None | Some("") | Some("/") => "/v1/traces",
        Some(p) => p,
    };
    Ok(format!("http://{authority}{path}"))
}
