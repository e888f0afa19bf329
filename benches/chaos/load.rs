//! The load: a fixed, seeded schedule of chat requests, sent open-loop, each classified when it
//! ends.
//!
//! Request `i` is a pure function of the seed and `i`: when it is sent (Poisson arrivals at the
//! given rate, so bursts come as they do from real users), whether it streams, and how many tokens
//! it asks for (`x-sim-tokens`). Every target therefore gets the very same requests at the very
//! same offsets from the start, whatever it does with them: a slow target does not get fewer
//! requests, as it would from a closed loop of clients that wait for each other. Each request
//! carries `x-chaos-id: i` (the simulators draw its fate and count its arrivals by it) and
//! `x-request-id: chaos-i` (switchyard's access log names it so).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use switchyard::sim::{answer_text, header};
use tokio::sync::Semaphore;

use super::stats::percentile;

/// What `load` is told.
struct Options {
    url: String,
    target: String,
    records: std::path::PathBuf,
    duration: Duration,
    rate: f64,
    seed: u64,
    timeout: Duration,
    stream_share: f64,
    tokens: (usize, usize),
    max_inflight: usize,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let known = [
        "url",
        "target",
        "records",
        "duration",
        "rate",
        "seed",
        "timeout",
        "stream-share",
        "tokens",
        "max-inflight",
    ];
    let o = super::options(args, &known)?;
    let need = |k: &str| o.get(k).copied().ok_or(format!("--{k} is required"));
    let duration = |k: &str, d: &str| {
        humantime::parse_duration(o.get(k).copied().unwrap_or(d)).map_err(|e| format!("--{k}: {e}"))
    };
    let number = |k: &str, d: &str| -> Result<f64, String> {
        let v = o.get(k).copied().unwrap_or(d);
        v.parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n >= 0.0)
            .ok_or(format!("--{k}: {v:?} is not a number"))
    };
    let tokens = o.get("tokens").copied().unwrap_or("8-40");
    let tokens = tokens
        .split_once('-')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .filter(|&(a, b): &(usize, usize)| a >= 2 && a <= b)
        .ok_or(format!(
            "--tokens: {tokens:?} is not MIN-MAX with 2 <= MIN <= MAX"
        ))?;
    let opts = Options {
        url: need("url")?.to_owned(),
        target: need("target")?.to_owned(),
        records: need("records")?.into(),
        duration: duration("duration", "90s")?,
        rate: number("rate", "60")?,
        seed: number("seed", "1")? as u64,
        timeout: duration("timeout", "20s")?,
        stream_share: number("stream-share", "0.67")?.min(1.0),
        tokens,
        max_inflight: number("max-inflight", "1024")? as usize,
    };
    if opts.rate <= 0.0 || opts.max_inflight == 0 {
        return Err("--rate and --max-inflight must be above 0".into());
    }
    Ok(opts)
}

/// One request of the schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Planned {
    /// Its index: the `x-chaos-id`.
    pub index: u64,
    /// When it is sent, from the start of the run.
    pub at: Duration,
    /// Whether it asks for a stream.
    pub stream: bool,
    /// Tokens it asks for.
    pub tokens: usize,
}

/// Every request of a run of `duration`: a pure function of its arguments.
fn plan(opts: &Options) -> Vec<Planned> {
    let mut out = Vec::new();
    let mut at = 0.0f64;
    let span = (opts.tokens.1 - opts.tokens.0 + 1) as u64;
    for index in 0.. {
        let h = mix(opts.seed ^ mix(index));
        // Exponential gaps: Poisson arrivals at `rate` per second.
        at += -(1.0 - unit(h)).ln() / opts.rate;
        if at >= opts.duration.as_secs_f64() {
            break;
        }
        out.push(Planned {
            index,
            at: Duration::from_secs_f64(at),
            stream: unit(mix(h ^ 1)) < opts.stream_share,
            tokens: opts.tokens.0 + (mix(h ^ 2) % span) as usize,
        });
    }
    out
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Status 200 and the whole expected answer (a stream: every token, then `[DONE]`).
    Ok,
    /// switchyard's fallback answer (`x-switchyard-fallback`).
    Fallback,
    /// Anything else.
    Error,
}

/// One request as it ended: a line of the records file.
///
/// `index sent_ms stream tokens outcome detail status ttft_us total_us got_tokens`, tab-separated;
/// `detail` is `-` for an answer, the fallback reason for a fallback, and for an error one of
/// `connect` (no connection), `reset` (closed before a response), `timeout` (the client gave up),
/// `status` (not 200), `body-error` (the connection broke mid-body), `no-done` (a stream that
/// ended without `[DONE]`), `error-event` (an SSE `event: error`), `wrong-text`, `bad-json`.
#[derive(Debug, Clone)]
pub struct Record {
    pub planned: Planned,
    pub sent_ms: u128,
    pub outcome: Outcome,
    pub detail: String,
    pub status: u16,
    pub ttft: Option<Duration>,
    pub total: Duration,
    pub got_tokens: usize,
}

impl Record {
    fn line(&self) -> String {
        let p = &self.planned;
        let outcome = match self.outcome {
            Outcome::Ok => "ok",
            Outcome::Fallback => "fallback",
            Outcome::Error => "error",
        };
        let ttft = self
            .ttft
            .map_or("-".to_string(), |t| t.as_micros().to_string());
        format!(
            "{}\t{}\t{}\t{}\t{outcome}\t{}\t{}\t{ttft}\t{}\t{}\n",
            p.index,
            self.sent_ms,
            u8::from(p.stream),
            p.tokens,
            self.detail,
            self.status,
            self.total.as_micros(),
            self.got_tokens,
        )
    }
}

pub fn main(args: &[String]) -> Result<(), String> {
    let opts = parse(args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(run(opts))
}

async fn run(opts: Options) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .http1_only()
        .pool_max_idle_per_host(opts.max_inflight)
        .connect_timeout(Duration::from_secs(2))
        .timeout(opts.timeout)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let planned = plan(&opts);
    let limit = Arc::new(Semaphore::new(opts.max_inflight));
    let url: Arc<str> = opts.url.as_str().into();
    let start = tokio::time::Instant::now();
    let mut late = 0usize;
    let mut tasks = tokio::task::JoinSet::new();
    for p in planned.iter().copied() {
        tokio::time::sleep_until(start + p.at).await;
        let permit = match Arc::clone(&limit).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // More than --max-inflight at once: the schedule slips, and the run says so.
                late += 1;
                Arc::clone(&limit)
                    .acquire_owned()
                    .await
                    .map_err(|e| format!("in-flight limit: {e}"))?
            }
        };
        let (client, url) = (client.clone(), Arc::clone(&url));
        tasks.spawn(async move {
            let record = one(&client, &url, p).await;
            drop(permit);
            record
        });
    }
    let mut records = Vec::with_capacity(planned.len());
    while let Some(done) = tasks.join_next().await {
        records.push(done.map_err(|e| format!("request task: {e}"))?);
    }
    records.sort_by_key(|r| r.planned.index);
    write_records(&opts.records, &records)?;
    println!("{}", summary(&opts.target, &records, late));
    Ok(())
}

fn write_records(path: &std::path::Path, records: &[Record]) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(err)?);
    for r in records {
        out.write_all(r.line().as_bytes()).map_err(err)?;
    }
    out.flush().map_err(err)
}

/// The `CHAOS ...` line.
fn summary(target: &str, records: &[Record], late: usize) -> String {
    let count = |o: Outcome| records.iter().filter(|r| r.outcome == o).count();
    let mut ttft: Vec<Duration> = records
        .iter()
        .filter(|r| r.outcome == Outcome::Ok)
        .filter_map(|r| r.ttft)
        .collect();
    ttft.sort_unstable();
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for r in records.iter().filter(|r| r.outcome == Outcome::Error) {
        match kinds.iter_mut().find(|(k, _)| *k == r.detail) {
            Some((_, n)) => *n += 1,
            None => kinds.push((r.detail.clone(), 1)),
        }
    }
    kinds.sort();
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k}:{n}")).collect();
    format!(
        "CHAOS target={target} requests={} ok={} fallback={} error={} ttft_p50_us={} ttft_p99_us={} late={late} errors={}",
        records.len(),
        count(Outcome::Ok),
        count(Outcome::Fallback),
        count(Outcome::Error),
        percentile(&ttft, 50.0).as_micros(),
        percentile(&ttft, 99.0).as_micros(),
        if kinds.is_empty() { "-".to_string() } else { kinds.join(",") },
    )
}

/// Sends one request and classifies how it ended.
async fn one(client: &reqwest::Client, url: &str, p: Planned) -> Record {
    let body = json!({
        "model": "chaos-model",
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": format!("Question {}: what is a load balancer for?", p.index)},
        ],
        "max_tokens": p.tokens,
        "stream": p.stream,
    })
    .to_string();
    let sent_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let started = Instant::now();
    let mut rec = Record {
        planned: p,
        sent_ms,
        outcome: Outcome::Error,
        detail: String::new(),
        status: 0,
        ttft: None,
        total: Duration::ZERO,
        got_tokens: 0,
    };
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .header(header::CHAOS_ID, p.index.to_string())
        .header("x-request-id", format!("chaos-{}", p.index))
        .header(header::TOKENS, p.tokens.to_string())
        .body(body)
        .send()
        .await;
    let (outcome, detail) = match sent {
        Err(e) => (Outcome::Error, send_error(&e).to_owned()),
        Ok(resp) => read_answer(resp, p, started, &mut rec).await,
    };
    rec.outcome = outcome;
    rec.detail = detail;
    rec.total = started.elapsed();
    rec
}

fn send_error(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "reset"
    }
}

fn body_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout"
    } else {
        "body-error"
    }
    .to_string()
}

/// Reads the answer's body to its end and says what it was.
async fn read_answer(
    mut resp: reqwest::Response,
    p: Planned,
    started: Instant,
    rec: &mut Record,
) -> (Outcome, String) {
    rec.status = resp.status().as_u16();
    let fallback = resp
        .headers()
        .get("x-switchyard-fallback")
        .map(|v| v.to_str().unwrap_or("?").to_owned());
    let expected = answer_text(p.tokens);
    let mut sse = Sse::default();
    let mut body = Vec::new();
    let ended = loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if rec.ttft.is_none() && !p.stream && !chunk.is_empty() {
                    rec.ttft = Some(started.elapsed());
                }
                if p.stream {
                    let before = sse.tokens;
                    sse.feed(&chunk);
                    if before == 0 && sse.tokens > 0 {
                        rec.ttft = Some(started.elapsed());
                    }
                } else {
                    body.extend_from_slice(&chunk);
                }
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(body_error(&e)),
        }
    };
    rec.got_tokens = sse.tokens;
    if let Some(reason) = fallback {
        return (Outcome::Fallback, reason);
    }
    if rec.status != 200 {
        return (Outcome::Error, "status".into());
    }
    if let Err(kind) = ended {
        let kind = if sse.error_event {
            "error-event".into()
        } else {
            kind
        };
        return (Outcome::Error, kind);
    }
    if p.stream {
        if sse.error_event {
            return (Outcome::Error, "error-event".into());
        }
        if !sse.done {
            return (Outcome::Error, "no-done".into());
        }
        if sse.text != expected {
            return (Outcome::Error, "wrong-text".into());
        }
        return (Outcome::Ok, "-".into());
    }
    match serde_json::from_slice::<Value>(&body) {
        Err(_) => (Outcome::Error, "bad-json".into()),
        Ok(v) if v["choices"][0]["message"]["content"].as_str() == Some(expected.as_str()) => {
            (Outcome::Ok, "-".into())
        }
        Ok(_) => (Outcome::Error, "wrong-text".into()),
    }
}

/// An SSE body read so far: the text of its tokens, whether it said `[DONE]` or `event: error`.
#[derive(Debug, Default)]
struct Sse {
    buf: Vec<u8>,
    text: String,
    tokens: usize,
    done: bool,
    error_event: bool,
}

impl Sse {
    fn feed(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
        while let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = self.buf.drain(..pos + 2).collect();
            for line in String::from_utf8_lossy(&event[..pos]).lines() {
                if let Some(kind) = line.strip_prefix("event:") {
                    self.error_event |= kind.trim() == "error";
                } else if let Some(data) = line.strip_prefix("data:") {
                    self.data(data.trim());
                }
            }
        }
    }

    fn data(&mut self, data: &str) {
        if data == "[DONE]" {
            self.done = true;
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            self.text.push_str(t);
            self.tokens += 1;
        }
    }
}

/// The splitmix64 finaliser: a stable, well-spread hash of a number.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform number in `[0, 1)` from the top 53 bits.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}
