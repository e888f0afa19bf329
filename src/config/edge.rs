//! Validation of the edge keys: TLS files of the listeners, the admin token, `limits` and
//! `access_log`. Called by `build`; errors name the key path like every other config error.

use super::build::{err, positive, socket_addr, Result, DEFAULT_ADMIN};
use super::file::*;
use super::types::*;
use std::path::PathBuf;
use std::time::Duration;

/// Certificate and key must load and match now, so that `switchyard check` and a reload catch
/// what would otherwise fail at start (Pingora panics on a bad certificate).
pub(super) fn tls_files(base: &str, t: &TlsFile) -> Result<TlsFiles> {
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

/// Shortest admin token accepted: a token is the only thing between the network and `/reload`.
const MIN_TOKEN_LEN: usize = 16;

pub(super) fn admin(a: Option<&AdminFile>) -> Result<AdminSettings> {
    let addr = match a.and_then(|a| a.addr.as_deref()) {
        Some(s) => socket_addr("admin.addr", s)?,
        None => DEFAULT_ADMIN.parse().expect("valid default"),
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
    Ok(AdminSettings { addr, token })
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
        Some(d) if d.0 < Duration::from_secs(1) => {
            return err(
                "limits.keepalive_timeout",
                "must be at least 1s (Pingora counts it in whole seconds)",
            )
        }
        Some(d) => Duration::from_secs(d.0.as_secs_f64().ceil() as u64),
        None => d.keepalive_timeout,
    };
    let at_least_one = |key: &str, v: Option<u32>, default: u32| match v {
        Some(0) => err(format!("limits.{key}"), "must be at least 1"),
        Some(n) => Ok(n),
        None => Ok(default),
    };
    Ok(Limits {
        max_header_bytes,
        client_body_timeout: positive(
            "limits.client_body_timeout",
            l.client_body_timeout,
            d.client_body_timeout,
        )?,
        keepalive_timeout,
        keepalive_requests: at_least_one(
            "keepalive_requests",
            l.keepalive_requests,
            d.keepalive_requests,
        )?,
        max_connections: at_least_one(
            "max_connections",
            l.max_connections,
            d.max_connections as u32,
        )? as usize,
        max_concurrent_requests: at_least_one(
            "max_concurrent_requests",
            l.max_concurrent_requests,
            d.max_concurrent_requests as u32,
        )? as usize,
    })
}

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
