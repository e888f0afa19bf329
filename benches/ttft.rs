//! Time to first token: sends N sequential streaming chat requests to one URL and prints the p50 and
//! p99 of the time from sending a request to the first SSE `data:` line of its body.
//!
//! Why: for streamed completions the delay a balancer adds before the first token is the latency a
//! user feels. Run it once straight at the model simulator and once through switchyard; the
//! difference of the two figures is the time to first token that switchyard adds
//! (`benches/wrk/run.sh` does exactly that). It times the first `data:` line, not the response
//! headers, because switchyard holds the headers until the first token arrives (its commit point),
//! while the simulator sends them at once.
//!
//! How to read: one line,
//! `TTFT url=URL requests=N errors=N p50_us=N p99_us=N min_us=N max_us=N`,
//! latencies in microseconds over the requests that succeeded. Requests run one after another on
//! one kept-alive connection, so the figures leave out connection set-up; the first `--warmup`
//! requests are not counted.
//!
//! Usage: `cargo bench --bench ttft -- --url http://127.0.0.1:PORT/v1/chat/completions
//! [--requests 200] [--warmup 5] [--timeout-secs 10]`. Exits non-zero if any request failed.

#![forbid(unsafe_code)]

#[path = "common/stats.rs"]
mod stats;
use stats::percentile;

use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Command-line options; unknown flags are errors, except the `--bench` that `cargo bench` adds.
struct Options {
    /// The streaming endpoint to POST to.
    url: String,
    /// Requests that are timed (default 200).
    requests: usize,
    /// Requests sent first and not timed (default 5).
    warmup: usize,
    /// Limit on one whole request, body included (default 10 s).
    timeout: Duration,
}

fn parse_options() -> Result<Options, String> {
    let mut opts = Options {
        url: String::new(),
        requests: 200,
        warmup: 5,
        timeout: Duration::from_secs(10),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--bench" => {}
            "--url" => opts.url = value("--url")?,
            "--requests" | "-n" => opts.requests = number(&value("--requests")?)?,
            "--warmup" => opts.warmup = number(&value("--warmup")?)?,
            "--timeout-secs" => {
                opts.timeout = Duration::from_secs(number(&value("--timeout-secs")?)? as u64)
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if opts.url.is_empty() {
        return Err("--url is required".into());
    }
    if opts.requests == 0 {
        return Err("--requests must be at least 1".into());
    }
    Ok(opts)
}

fn number(s: &str) -> Result<usize, String> {
    s.parse().map_err(|e| format!("{s:?} is not a count: {e}"))
}

/// The chat request: fixed prompt, greedy decoding, streamed.
const BODY: &str = concat!(
    r#"{"model":"bench-model","messages":["#,
    r#"{"role":"system","content":"You are a concise assistant."},"#,
    r#"{"role":"user","content":"Summarise the plot of Hamlet in one sentence."}],"#,
    r#""temperature":0,"max_tokens":64,"stream":true}"#
);

/// Sends one request and returns the time to its first `data:` line. The rest of the body is read
/// to its end so that the connection goes back to the pool for the next request.
async fn one(client: &reqwest::Client, url: &str) -> Result<Duration, String> {
    let start = Instant::now();
    let mut resp = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .body(BODY)
        .send()
        .await
        .map_err(|e| format!("send: {}", with_causes(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let mut seen: Vec<u8> = Vec::with_capacity(256);
    let mut first = None;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("body: {}", with_causes(&e)))?
    {
        if first.is_none() {
            seen.extend_from_slice(&chunk);
            if has_data_line(&seen) {
                first = Some(start.elapsed());
            }
        }
    }
    first.ok_or_else(|| "stream ended without a data: line".to_string())
}

/// The error and its chain of causes, `outer: inner: innermost`.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// True when `buf` holds a line that starts with `data:`.
fn has_data_line(buf: &[u8]) -> bool {
    buf.starts_with(b"data:") || buf.windows(6).any(|w| w == b"\ndata:")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let opts = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ttft: {e}");
            return ExitCode::from(2);
        }
    };
    let client = match reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .timeout(opts.timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ttft: building the HTTP client: {e}");
            return ExitCode::from(2);
        }
    };

    let mut samples = Vec::with_capacity(opts.requests);
    let mut errors = 0usize;
    for i in 0..opts.warmup + opts.requests {
        match one(&client, &opts.url).await {
            Ok(t) if i >= opts.warmup => samples.push(t),
            Ok(_) => {}
            Err(e) => {
                errors += 1;
                if errors <= 3 {
                    eprintln!("ttft: request {i}: {e}");
                }
            }
        }
    }

    samples.sort_unstable();
    let us = |d: Duration| d.as_micros();
    let (p50, p99, min, max) = match (samples.first(), samples.last()) {
        (Some(&min), Some(&max)) => (
            us(percentile(&samples, 50.0)),
            us(percentile(&samples, 99.0)),
            us(min),
            us(max),
        ),
        _ => (0, 0, 0, 0),
    };
    println!(
        "TTFT url={} requests={} errors={errors} p50_us={p50} p99_us={p99} min_us={min} max_us={max}",
        opts.url,
        samples.len(),
    );
    if errors == 0 && !samples.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
