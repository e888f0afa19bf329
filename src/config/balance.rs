//! Building how a cluster picks its peers: `balance`, the `affinity` of `prefix_affinity`, and
//! the `load_report` scraped from the peers (used by `least_inflight` and `prefix_affinity`).

use super::check::{err, positive, url_path, Result};
use super::file::*;
use super::types::*;
use http::HeaderName;

/// The most prompt bytes `affinity.prefix_bytes` may hash.
const MAX_PREFIX_BYTES: u64 = 1 << 20;

/// `clusters.NAME.balance` and `clusters.NAME.affinity`.
pub(super) fn balance(base: &str, c: &ClusterFile) -> Result<(Balance, AffinityConfig)> {
    let balance = match c.balance {
        None | Some(BalanceFile::RoundRobin) => Balance::RoundRobin,
        Some(BalanceFile::LeastInflight) => Balance::LeastInflight,
        Some(BalanceFile::PrefixAffinity) => Balance::PrefixAffinity,
    };
    let Some(a) = &c.affinity else {
        return Ok((balance, AffinityConfig::default()));
    };
    let path = format!("{base}.affinity");
    if balance != Balance::PrefixAffinity {
        return err(path, "only used with balance: prefix_affinity");
    }
    Ok((balance, affinity(&path, a)?))
}

fn affinity(base: &str, a: &AffinityFile) -> Result<AffinityConfig> {
    let d = AffinityConfig::default();
    let key = match a.key.as_deref().map(str::trim) {
        None | Some("prompt") => AffinityKey::Prompt,
        Some(k) => match k.split_once(':') {
            Some(("header", h)) => HeaderName::from_bytes(h.trim().as_bytes())
                .map(AffinityKey::Header)
                .or_else(|_| err(format!("{base}.key"), format!("bad header name {h:?}")))?,
            _ => {
                return err(
                    format!("{base}.key"),
                    format!("bad affinity key {k:?}: expected \"prompt\" or \"header:NAME\""),
                )
            }
        },
    };
    let prefix_bytes = match a.prefix_bytes {
        None => d.prefix_bytes,
        Some(s) if s.0 == 0 || s.0 > MAX_PREFIX_BYTES => {
            return err(
                format!("{base}.prefix_bytes"),
                format!("must be 1 byte to {MAX_PREFIX_BYTES} bytes (1MiB)"),
            )
        }
        Some(s) => s.0 as usize,
    };
    let load_factor = match a.load_factor {
        None => d.load_factor,
        Some(f) if f.is_finite() && (1.0..=100.0).contains(&f) => f,
        Some(_) => {
            return err(format!("{base}.load_factor"), "must be from 1 to 100")
                .map_err(|e| e.hint("1.25 lets a peer take a quarter more than the mean"))
        }
    };
    Ok(AffinityConfig {
        key,
        prefix_bytes,
        load_factor,
    })
}

/// `clusters.NAME.load_report`.
pub(super) fn load_report(
    base: &str,
    r: Option<&LoadReportFile>,
) -> Result<Option<LoadReportConfig>> {
    let Some(r) = r else { return Ok(None) };
    let d = LoadReportConfig::default();
    let path = r.path.clone().unwrap_or(d.path);
    url_path(&format!("{base}.path"), &path)?;
    let max_kv_usage = match r.max_kv_usage {
        None => d.max_kv_usage,
        Some(f) if f.is_finite() && f > 0.0 && f <= 1.0 => f,
        Some(_) => return err(format!("{base}.max_kv_usage"), "must be in (0, 1]"),
    };
    Ok(Some(LoadReportConfig {
        path,
        interval: positive(&format!("{base}.interval"), r.interval, d.interval)?,
        max_waiting: r.max_waiting,
        max_kv_usage,
    }))
}
