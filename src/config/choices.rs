//! The words the file layer accepts for keys with a fixed set of values (`http1`, `balance`,
//! `kind`, `failure_on`, `retry_on`, `other_cluster`, `cooldown`, `resume.mode`, `scope`,
//! `shared.on_error`), and the keys that take either a word or number or a map (`retry_on`
//! entries, `retry.budget`).
//!
//! serde parses them, so a value that is none of them is reported with the key path and line,
//! and with the accepted values listed by serde itself (unknown variant `fastest`, expected
//! `round_robin` or `least_inflight`): there is no list of names to keep in step by hand.

use super::file::{AnswerConditionFile, BudgetMapFile};
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::time::Duration;

/// `server.http1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Http1File {
    /// `lean`.
    Lean,
    /// `pingora`.
    Pingora,
}

/// `clusters.NAME.balance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalanceFile {
    /// `round_robin`.
    RoundRobin,
    /// `least_inflight`.
    LeastInflight,
    /// `prefix_affinity`.
    PrefixAffinity,
}

/// `health_check.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKindFile {
    /// `http`.
    Http,
    /// `tcp`.
    Tcp,
}

/// `routes[N].resume.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResumeModeFile {
    /// `continue`.
    Continue,
}

/// `scope` of a limit or key pool: kept by this instance, or shared through `shared.redis`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeFile {
    /// `local`.
    Local,
    /// `shared` (the default when `shared` is configured).
    Shared,
}

/// `shared.on_error`: what a decision does when the shared tier cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnErrorFile {
    /// `local`: decide with this instance's own limits.
    Local,
    /// `deny`: refuse with 503.
    Deny,
}

/// One entry of `breaker.failure_on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureFile {
    /// `connect`.
    Connect,
    /// `timeout`.
    Timeout,
    /// `reset`.
    Reset,
    /// `5xx`.
    #[serde(rename = "5xx")]
    Status5xx,
}

/// One entry of `retry.retry_on`: a named condition, a 4xx or 5xx status written as a number
/// (`503`) or a string (`"503"`), or an answer condition `{ status, body }`.
#[derive(Debug)]
pub enum RetryOnFile {
    /// A condition by name.
    Named(RetryName),
    /// A status, 400 to 599.
    Status(u16),
    /// Statuses whose body must match a regex too.
    Answer(AnswerConditionFile),
}

/// `retry.other_cluster`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OtherClusterFile {
    /// `last`.
    Last,
    /// `next`.
    Next,
    /// `never`.
    Never,
}

/// `retry.budget`: a ratio (`0.2`), or `{ ratio, window, min_per_second }`.
#[derive(Debug)]
pub enum BudgetFile {
    /// The bare number form: the ratio, with the other settings at their defaults.
    Ratio(f64),
    /// The map form.
    Map(BudgetMapFile),
}

impl<'de> Deserialize<'de> for BudgetFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BudgetFile;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a ratio like 0.2, or { ratio, window, min_per_second }")
            }
            fn visit_f64<E: de::Error>(self, r: f64) -> Result<BudgetFile, E> {
                Ok(BudgetFile::Ratio(r))
            }
            fn visit_u64<E: de::Error>(self, r: u64) -> Result<BudgetFile, E> {
                Ok(BudgetFile::Ratio(r as f64))
            }
            fn visit_i64<E: de::Error>(self, r: i64) -> Result<BudgetFile, E> {
                Ok(BudgetFile::Ratio(r as f64))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<BudgetFile, A::Error> {
                BudgetMapFile::deserialize(MapAccessDeserializer::new(map)).map(BudgetFile::Map)
            }
        }
        d.deserialize_any(V)
    }
}

/// The named conditions of `retry.retry_on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryName {
    /// `connect_failure`.
    ConnectFailure,
    /// `refused`.
    Refused,
    /// `reset`.
    Reset,
    /// `timeout`.
    Timeout,
    /// `5xx`: 500 to 505.
    #[serde(rename = "5xx")]
    Status5xx,
    /// `gateway_error`: 502, 503 and 504.
    GatewayError,
}

impl<'de> Deserialize<'de> for RetryOnFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RetryOnFile;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a retry condition or a 4xx or 5xx status")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RetryOnFile, A::Error> {
                AnswerConditionFile::deserialize(MapAccessDeserializer::new(map))
                    .map(RetryOnFile::Answer)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<RetryOnFile, E> {
                match n {
                    400..=599 => Ok(RetryOnFile::Status(n as u16)),
                    _ => Err(E::custom(format_args!("status {n} is not a 4xx or 5xx"))),
                }
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<RetryOnFile, E> {
                Err(E::custom(format_args!("status {n} is not a 4xx or 5xx")))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RetryOnFile, E> {
                // serde names the conditions in its error when the string is none of them.
                match s.parse::<u64>() {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => RetryName::deserialize(s.into_deserializer()).map(RetryOnFile::Named),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A condition's `cooldown` in `api_keys.failover.conditions`: `retry-after`, or a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CooldownFile {
    /// `retry-after`.
    RetryAfter,
    /// A duration such as `30s`; never zero.
    For(Duration),
}

impl<'de> Deserialize<'de> for CooldownFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = CooldownFile;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"retry-after\" or a duration like \"30s\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<CooldownFile, E> {
                if s == "retry-after" {
                    return Ok(CooldownFile::RetryAfter);
                }
                match humantime::parse_duration(s) {
                    Ok(d) if d.is_zero() => Err(E::custom(format_args!(
                        "bad cooldown {s:?}: must be greater than zero"
                    ))),
                    Ok(d) => super::check::bounded_duration(d)
                        .map(CooldownFile::For)
                        .map_err(|e| E::custom(format_args!("bad cooldown {s:?}: {e}"))),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Str(s), &self)),
                }
            }
        }
        d.deserialize_str(V)
    }
}
