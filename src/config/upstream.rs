//! Building how a cluster's peers are reached: `tls` (its files loaded and checked here, so a
//! bad one is a config error naming the key), `host`, `strip_prefix` and `add_prefix`, and the
//! process-wide `resolver` that named peers are resolved with.

use super::check::{dns_name, err, positive, url_path, Result};
use super::file::{ClusterFile, ResolverFile, UpstreamTlsFile};
use super::types::{ResolverSettings, Rewrite, UpstreamTls};
use crate::certs;
use http::HeaderValue;
use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

/// `clusters.NAME.tls`.
pub(super) fn tls(base: &str, t: &UpstreamTlsFile) -> Result<UpstreamTls> {
    let mut digest = Sha256::new();
    let sni = match &t.sni {
        Some(s) => {
            let s = s.trim().to_ascii_lowercase();
            if !dns_name(&s) && s.parse::<IpAddr>().is_err() {
                return err(format!("{base}.sni"), format!("bad server name {s:?}"));
            }
            Some(s)
        }
        None => None,
    };
    let verify = t.verify.unwrap_or(true);
    digest.update(format!("sni={sni:?};verify={verify};").as_bytes());
    let mut file = |key: &str, path: &str| -> Result<PathBuf> {
        let bytes = std::fs::read(path).or_else(|e| {
            err(
                format!("{base}.{key}"),
                format!("cannot read {path:?}: {e}"),
            )
        })?;
        digest.update(format!("{key}={path}:{};", bytes.len()).as_bytes());
        digest.update(&bytes);
        Ok(PathBuf::from(path))
    };
    let (ca, ca_file) = match &t.ca_file {
        Some(path) => {
            let p = file("ca_file", path)?;
            let store =
                certs::load_ca(&p).or_else(|e| err(format!("{base}.ca_file"), e.to_string()))?;
            (Some(Arc::new(store)), Some(p))
        }
        None => (None, None),
    };
    let (client_cert, client_files) = match (&t.cert, &t.key) {
        (Some(c), Some(k)) => {
            let (c, k) = (file("cert", c)?, file("key", k)?);
            let pair = certs::load(&c, &k).or_else(|e| {
                let key = if e.is_key() { "key" } else { "cert" };
                err(format!("{base}.{key}"), e.to_string())
            })?;
            (Some(pair), Some((c, k)))
        }
        (None, None) => (None, None),
        (Some(_), None) => return err(format!("{base}.key"), "cert needs a key"),
        (None, Some(_)) => return err(format!("{base}.cert"), "key needs a cert"),
    };
    Ok(UpstreamTls {
        sni,
        verify,
        ca,
        ca_file,
        client_cert,
        client_files,
        digest: digest
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    })
}

/// `host`, `strip_prefix` and `add_prefix` of a cluster.
pub(super) fn rewrite(base: &str, c: &ClusterFile) -> Result<Rewrite> {
    let host = match &c.host {
        Some(h) => {
            let h = h.trim();
            let ok = !h.is_empty() && h.parse::<http::uri::Authority>().is_ok();
            match (ok, HeaderValue::from_str(h)) {
                (true, Ok(v)) => Some(v),
                _ => return err(format!("{base}.host"), format!("bad host {h:?}")),
            }
        }
        None => None,
    };
    let prefix = |key: &str, p: &Option<String>| -> Result<Option<String>> {
        match p {
            None => Ok(None),
            Some(p) => {
                url_path(&format!("{base}.{key}"), p)?;
                if p.bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
                {
                    return err(format!("{base}.{key}"), "must not hold spaces or controls");
                }
                Ok(Some(p.trim_end_matches('/').to_string()).filter(|p| !p.is_empty()))
            }
        }
    };
    Ok(Rewrite {
        host,
        strip_prefix: prefix("strip_prefix", &c.strip_prefix)?,
        add_prefix: prefix("add_prefix", &c.add_prefix)?,
    })
}

/// `resolver:`; the system's servers when left out.
pub(super) fn resolver(r: Option<&ResolverFile>) -> Result<ResolverSettings> {
    let mut out = ResolverSettings::default();
    let Some(r) = r else { return Ok(out) };
    for (i, s) in r.servers.iter().flatten().enumerate() {
        let s = s.trim();
        // A bare IP means port 53.
        let addr = s
            .parse::<SocketAddr>()
            .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)));
        match addr {
            Ok(a) => out.servers.push(a),
            Err(_) => {
                return err(
                    format!("resolver.servers[{i}]"),
                    format!("bad address {s:?}: expected IP or IP:port, like \"10.96.0.10\""),
                )
            }
        }
    }
    out.timeout = positive("resolver.timeout", r.timeout, out.timeout)?;
    Ok(out)
}
