//! Per-request behaviour, from the configuration overridden by `x-sim-*` request headers.
//!
//! Headers let one simulated backend play many parts within a single test (slow, failing, cut off mid-stream)
//! without restarting it. A malformed knob is a bug in the test that sent it, so it is answered with 400 naming
//! the header rather than silently ignored.

use std::time::Duration;

use http::{HeaderMap, HeaderValue};

use super::config::{Failure, SimConfig};

/// Names of the request headers that override the configuration for one request.
pub mod header {
    /// Latency to first token, integer milliseconds.
    pub const TTFT_MS: &str = "x-sim-ttft-ms";
    /// Delay between tokens, integer milliseconds.
    pub const TOKEN_DELAY_MS: &str = "x-sim-token-delay-ms";
    /// Tokens in the answer.
    pub const TOKENS: &str = "x-sim-tokens";
    /// Answer with this status and an error body (a status failure).
    pub const STATUS: &str = "x-sim-status";
    /// `reset`, `hang`, `status` (uses `x-sim-status`, else the configured status, else 500) or `none`.
    pub const FAIL: &str = "x-sim-fail";
    /// Apply this request's failure only while the server has seen at most this many model
    /// requests (so a retry of the same request to the same server succeeds).
    pub const FAIL_FIRST: &str = "x-sim-fail-first";
    /// The `retry-after` value a 429 or 503 status failure carries (default `1`).
    pub const RETRY_AFTER: &str = "x-sim-retry-after";
    /// Stream this many tokens, then abort the connection mid-body.
    pub const FAIL_AFTER_TOKENS: &str = "x-sim-fail-after-tokens";
    /// Stream this many tokens, then stall forever.
    pub const HANG_AFTER_TOKENS: &str = "x-sim-hang-after-tokens";
    /// Stream this many tokens, then an error event (`data: {"error": ...}`) and `data: [DONE]`,
    /// as vLLM does when the engine fails mid-generation (0: the stream's first event is the error).
    pub const ERROR_AFTER_TOKENS: &str = "x-sim-error-after-tokens";
    /// The failure knobs of this request (`x-sim-fail`, `x-sim-status` and the `*-after-tokens`
    /// cuts) apply only on the instance of this name; elsewhere the request is served normally.
    /// A proxy sends every try of a request with the same headers: this makes one peer fail it.
    pub const FAIL_INSTANCE: &str = "x-sim-fail-instance";
    /// Send this value as the answer's `cache-control` header (e.g. `no-store`), to test caches.
    pub const CACHE_CONTROL: &str = "x-sim-cache-control";
    /// A unique id per client request, put on by a load generator: arrivals are counted by it
    /// (`GET /sim/arrivals`, the arrival log) and the `--chaos` fate is drawn from it.
    pub const CHAOS_ID: &str = "x-chaos-id";
    /// Response header naming the instance that answered.
    pub const INSTANCE: &str = "x-sim-instance";
    /// Names a request header whose value the answer repeats in [`ECHO`] (to see what a proxy
    /// sent upstream, such as `x-forwarded-proto`).
    pub const ECHO_HEADER: &str = "x-sim-echo-header";
    /// Response header carrying the value of the request header named by [`ECHO_HEADER`];
    /// absent when that request header is.
    pub const ECHO: &str = "x-sim-echo";
}

/// Upper bound on `x-sim-tokens`, so a typo cannot make the simulator build a gigabyte answer.
const MAX_TOKENS: usize = 1_000_000;

/// The behaviour of one model request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Knobs {
    pub ttft: Duration,
    pub token_delay: Duration,
    pub tokens: usize,
    /// `None`: no failure header, the configured failure and `fail_every` decide. `Some(f)`: the headers decided.
    pub header_failure: Option<Option<Failure>>,
    pub fail_after_tokens: Option<usize>,
    pub hang_after_tokens: Option<usize>,
    pub error_after_tokens: Option<usize>,
    /// Fail only the server's first N model requests.
    pub fail_first: Option<u64>,
    /// `retry-after` of a 429 or 503 status failure.
    pub retry_after: Option<String>,
    /// `cache-control` of a successful answer (streams default to `no-cache`).
    pub cache_control: Option<HeaderValue>,
}

/// A knob header whose value cannot be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("header {header}: {value:?} is not {expected}")]
pub(crate) struct KnobError {
    header: &'static str,
    value: String,
    expected: &'static str,
}

impl Knobs {
    /// Reads the knobs of one request; `configured` is the failure currently set on the server.
    pub(crate) fn from_headers(
        headers: &HeaderMap,
        cfg: &SimConfig,
        configured: Option<Failure>,
    ) -> Result<Knobs, KnobError> {
        let ms = |name| {
            Ok::<_, KnobError>(
                number::<u64>(headers, name, "milliseconds")?.map(Duration::from_millis),
            )
        };
        let tokens = match number::<usize>(headers, header::TOKENS, "a token count")? {
            Some(n) if n > MAX_TOKENS => {
                return Err(invalid(header::TOKENS, &n.to_string(), "at most 1000000"))
            }
            Some(n) => n,
            None => cfg.tokens,
        };
        let status = match number::<u16>(headers, header::STATUS, "an HTTP status")? {
            Some(s) if !(100..=599).contains(&s) => {
                return Err(invalid(header::STATUS, &s.to_string(), "100..=599"))
            }
            s => s,
        };
        let header_failure = match text(headers, header::FAIL)? {
            Some("reset") => Some(Some(Failure::Reset)),
            Some("hang") => Some(Some(Failure::Hang)),
            Some("none") => Some(None),
            Some("status") => {
                let configured_status = match configured {
                    Some(Failure::Status(s)) => Some(s),
                    _ => None,
                };
                Some(Some(Failure::Status(
                    status.or(configured_status).unwrap_or(500),
                )))
            }
            Some(other) => return Err(invalid(header::FAIL, other, "reset, hang, status or none")),
            None => status.map(|s| Some(Failure::Status(s))),
        };
        let count = |name| number::<usize>(headers, name, "a token count");
        let (fail_after, hang_after, error_after) = (
            count(header::FAIL_AFTER_TOKENS)?,
            count(header::HANG_AFTER_TOKENS)?,
            count(header::ERROR_AFTER_TOKENS)?,
        );
        // Malformed knobs are refused everywhere; well-formed ones fail only their instance.
        let here = text(headers, header::FAIL_INSTANCE)?.is_none_or(|n| n == cfg.name);
        let fails = |v: Option<usize>| v.filter(|_| here);
        Ok(Knobs {
            ttft: ms(header::TTFT_MS)?.unwrap_or(cfg.ttft),
            token_delay: ms(header::TOKEN_DELAY_MS)?.unwrap_or(cfg.token_delay),
            tokens,
            header_failure: header_failure.filter(|_| here),
            fail_after_tokens: fails(fail_after),
            hang_after_tokens: fails(hang_after),
            error_after_tokens: fails(error_after),
            fail_first: number::<u64>(headers, header::FAIL_FIRST, "a request count")?
                .filter(|_| here),
            retry_after: text(headers, header::RETRY_AFTER)?.map(str::to_owned),
            cache_control: text(headers, header::CACHE_CONTROL)?
                .and_then(|v| HeaderValue::from_str(v).ok()),
        })
    }
}

fn invalid(header: &'static str, value: &str, expected: &'static str) -> KnobError {
    KnobError {
        header,
        value: value.to_owned(),
        expected,
    }
}

fn text<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<Option<&'a str>, KnobError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.trim())).map_err(|_| {
            invalid(
                name,
                &String::from_utf8_lossy(v.as_bytes()),
                "visible ASCII",
            )
        }),
    }
}

fn number<T: std::str::FromStr>(
    headers: &HeaderMap,
    name: &'static str,
    expected: &'static str,
) -> Result<Option<T>, KnobError> {
    match text(headers, name)? {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| invalid(name, s, expected)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knobs(
        pairs: &[(&'static str, &'static str)],
        configured: Option<Failure>,
    ) -> Result<Knobs, KnobError> {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.insert(*k, http::HeaderValue::from_static(v));
        }
        Knobs::from_headers(&headers, &SimConfig::default(), configured)
    }

    #[test]
    fn sim_knobs_default_to_config() {
        let k = knobs(&[], None).expect("no headers");
        assert_eq!(
            (k.ttft, k.token_delay, k.tokens),
            (Duration::from_millis(50), Duration::from_millis(20), 16)
        );
        assert_eq!(k.header_failure, None);
    }

    #[test]
    fn sim_knobs_headers_override() {
        let k = knobs(
            &[
                (header::TTFT_MS, "7"),
                (header::TOKENS, "3"),
                (header::STATUS, "429"),
            ],
            None,
        )
        .expect("ok");
        assert_eq!((k.ttft, k.tokens), (Duration::from_millis(7), 3));
        assert_eq!(k.header_failure, Some(Some(Failure::Status(429))));
        let k = knobs(&[(header::FAIL, "status")], Some(Failure::Status(502))).expect("ok");
        assert_eq!(k.header_failure, Some(Some(Failure::Status(502))));
        let k = knobs(&[(header::FAIL, "none")], Some(Failure::Reset)).expect("ok");
        assert_eq!(k.header_failure, Some(None));
        assert_eq!(k.cache_control, None);
        let k = knobs(&[(header::CACHE_CONTROL, "no-store")], None).expect("ok");
        assert_eq!(k.cache_control, Some(HeaderValue::from_static("no-store")));
    }

    #[test]
    fn sim_knobs_fail_only_the_named_instance() {
        let cut = [
            (header::FAIL_AFTER_TOKENS, "2"),
            (header::ERROR_AFTER_TOKENS, "1"),
            (header::STATUS, "503"),
        ];
        let mut headers = HeaderMap::new();
        for (k, v) in cut {
            headers.insert(k, HeaderValue::from_static(v));
        }
        headers.insert(header::FAIL_INSTANCE, HeaderValue::from_static("a"));
        let on = |name: &str| {
            let cfg = SimConfig {
                name: name.into(),
                ..SimConfig::default()
            };
            Knobs::from_headers(&headers, &cfg, None).expect("well-formed")
        };
        let a = on("a");
        assert_eq!(
            (a.fail_after_tokens, a.error_after_tokens, a.header_failure),
            (Some(2), Some(1), Some(Some(Failure::Status(503))))
        );
        let b = on("b");
        assert_eq!(
            (b.fail_after_tokens, b.error_after_tokens, b.header_failure),
            (None, None, None)
        );
        headers.insert(header::HANG_AFTER_TOKENS, HeaderValue::from_static("x"));
        let cfg = SimConfig::default();
        assert!(
            Knobs::from_headers(&headers, &cfg, None).is_err(),
            "still checked"
        );
    }

    #[test]
    fn sim_knobs_reject_malformed_values() {
        let err = knobs(&[(header::TTFT_MS, "50ms")], None).expect_err("not an integer");
        assert_eq!(
            err.to_string(),
            "header x-sim-ttft-ms: \"50ms\" is not milliseconds"
        );
        assert!(knobs(&[(header::STATUS, "42")], None).is_err());
        assert!(knobs(&[(header::FAIL, "explode")], None).is_err());
    }
}
