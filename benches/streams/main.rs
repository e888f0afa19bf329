//! Many concurrent SSE streams, or many idle keep-alive connections, against one URL: the load
//! client of the streams and many-connections rows of `benches/wrk/run.sh`.
//!
//! Why: an edge balancer for LLM traffic spends its life holding long streams of small events and
//! idle keep-alive connections, not answering short requests as fast as it can; wrk measures
//! neither. This client starts N streams within a short ramp, each on a connection of its own,
//! and checks every one (status 200, exactly the asked number of token events, no error event,
//! ending with `data: [DONE]`); or it opens N connections, makes one request on each, leaves them
//! idle, and checks each is still usable with a second request.
//!
//! How to read, streams mode (one line):
//! `STREAMS url=URL streams=N ok=N errors=N p50_us=N p99_us=N max_us=N wall_ms=N peak_open=N`:
//! latency is from writing a stream's request to reading its `data: [DONE]`, over the streams
//! that were correct; errors are streams that were not (the first few are described on stderr);
//! peak_open is the most streams that were open at once (a stream is open from its connect to
//! its end).
//! Idle mode (`--idle N`):
//! `CONNS url=URL conns=N opened=N reused=N errors=N rss_before_kb=N rss_idle_kb=N rss_per_conn_b=N`:
//! opened had their first answer, reused answered the second request after the hold; the RSS
//! figures sum `VmRSS` over the `--rss-pids` (the proxy's processes) before the first connection
//! and in the middle of the hold.
//!
//! Usage: `cargo bench --bench streams -- --url http://127.0.0.1:PORT/v1/chat/completions
//! [--streams 1000] [--tokens 50] [--token-delay-ms 20] [--ttft-ms 20] [--ramp-ms 500]
//! [--timeout-secs 60] [--idle N --hold-secs 5 --setup-concurrency 200 --rss-pids PID,PID]`.
//! Only loopback addresses are accepted. Exits non-zero if anything failed.

#![forbid(unsafe_code)]

#[path = "../common/stats.rs"]
mod stats;
mod wire;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use stats::percentile;
use wire::{Ask, Conn, Sse};

/// Command-line options; unknown flags are errors, except the `--bench` that `cargo bench` adds.
struct Options {
    addr: SocketAddr,
    ask: Ask,
    /// Streams in streams mode (default 1000).
    streams: usize,
    /// All streams (or connections) start within this window (default 500 ms).
    ramp: Duration,
    /// Limit on one stream or one request (default 60 s).
    timeout: Duration,
    /// Idle mode: this many connections.
    idle: Option<usize>,
    /// Idle mode: how long the connections stay idle (default 5 s).
    hold: Duration,
    /// Idle mode: requests in flight at once while connections open and when they are reused
    /// (default 200), so the proxy does not need one upstream connection per client connection.
    setup_concurrency: usize,
    /// Idle mode: processes whose `VmRSS` is summed.
    rss_pids: Vec<u32>,
}

fn parse_options() -> Result<Options, String> {
    let mut url = String::new();
    let mut ask = Ask {
        authority: String::new(),
        path: String::new(),
        tokens: 50,
        token_delay_ms: 20,
        ttft_ms: 20,
        stream: true,
    };
    let (mut streams, mut ramp_ms, mut timeout_s, mut hold_s, mut setup) = (1000, 500, 60, 5, 200);
    let (mut idle, mut rss_pids) = (None, Vec::new());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--bench" => {}
            "--url" => url = value("--url")?,
            "--streams" => streams = number(&value("--streams")?)?,
            "--tokens" => ask.tokens = number(&value("--tokens")?)?,
            "--token-delay-ms" => ask.token_delay_ms = number(&value("--token-delay-ms")?)? as u64,
            "--ttft-ms" => ask.ttft_ms = number(&value("--ttft-ms")?)? as u64,
            "--ramp-ms" => ramp_ms = number(&value("--ramp-ms")?)?,
            "--timeout-secs" => timeout_s = number(&value("--timeout-secs")?)?,
            "--idle" => idle = Some(number(&value("--idle")?)?),
            "--hold-secs" => hold_s = number(&value("--hold-secs")?)?,
            "--setup-concurrency" => setup = number(&value("--setup-concurrency")?)?,
            "--rss-pids" => {
                for p in value("--rss-pids")?.split(',').filter(|p| !p.is_empty()) {
                    rss_pids.push(p.parse().map_err(|e| format!("--rss-pids {p:?}: {e}"))?);
                }
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or("--url must be http://IP:PORT/PATH")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr: SocketAddr = authority
        .parse()
        .map_err(|e| format!("--url: {authority:?} is not IP:PORT: {e}"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("--url: {addr} is not a loopback address"));
    }
    if streams == 0 || ask.tokens == 0 || setup == 0 || idle == Some(0) || timeout_s == 0 {
        return Err("--streams, --tokens, --idle, --setup-concurrency and --timeout-secs must be at least 1".into());
    }
    ask.authority = authority.to_string();
    ask.path = if path.is_empty() { "/" } else { path }.to_string();
    ask.stream = idle.is_none();
    Ok(Options {
        addr,
        ask,
        streams,
        ramp: Duration::from_millis(ramp_ms as u64),
        timeout: Duration::from_secs(timeout_s as u64),
        idle,
        hold: Duration::from_secs(hold_s as u64),
        setup_concurrency: setup,
        rss_pids,
    })
}

fn number(s: &str) -> Result<usize, String> {
    s.parse().map_err(|e| format!("{s:?} is not a count: {e}"))
}

/// When the `i`-th of `n` starts, spread evenly over `ramp`.
fn offset(ramp: Duration, i: usize, n: usize) -> Duration {
    let share = (i as f64) / (n.max(1) as f64);
    ramp.mul_f64(share)
}

/// One stream on a connection of its own: its latency, or what was wrong with it.
async fn stream(
    addr: SocketAddr,
    request: Arc<Vec<u8>>,
    tokens: usize,
) -> Result<Duration, String> {
    let mut conn = Conn::connect(addr).await?;
    let start = Instant::now();
    conn.send(&request).await?;
    let head = conn.read_head().await?;
    if head.status != 200 {
        return Err(format!("status {}", head.status));
    }
    let mut sse = Sse::default();
    conn.read_body(&head, &mut sse).await?;
    let done = sse.done_at.ok_or("no data: [DONE]")?;
    if sse.errors > 0 {
        return Err("an error event".into());
    }
    if sse.overflow || sse.after_done > 0 {
        return Err("not a well-formed event stream".into());
    }
    if sse.tokens != tokens {
        return Err(format!("{} tokens, expected {tokens}", sse.tokens));
    }
    Ok(done.saturating_duration_since(start))
}

/// Streams open at once: now, and the most so far.
#[derive(Default)]
struct Open {
    now: AtomicUsize,
    peak: AtomicUsize,
}

/// Counts a stream as open while it lives.
struct OpenGuard(Arc<Open>);

impl OpenGuard {
    fn new(open: &Arc<Open>) -> OpenGuard {
        let now = open.now.fetch_add(1, Ordering::Relaxed) + 1;
        open.peak.fetch_max(now, Ordering::Relaxed);
        OpenGuard(open.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Errors seen, counted, with the first few described on stderr.
#[derive(Default)]
struct Errors {
    count: usize,
}

impl Errors {
    fn add(&mut self, what: &str, e: &str) {
        self.count += 1;
        if self.count <= 5 {
            eprintln!("streams: {what}: {e}");
        }
    }
}

async fn streams_mode(opts: &Options) -> bool {
    let request = Arc::new(wire::request(&opts.ask));
    let began = tokio::time::Instant::now();
    let open = Arc::new(Open::default());
    let mut set = JoinSet::new();
    for i in 0..opts.streams {
        let (request, addr, tokens, timeout) =
            (request.clone(), opts.addr, opts.ask.tokens, opts.timeout);
        let at = began + offset(opts.ramp, i, opts.streams);
        let open = open.clone();
        set.spawn(async move {
            tokio::time::sleep_until(at).await;
            let _open = OpenGuard::new(&open);
            match tokio::time::timeout(timeout, stream(addr, request, tokens)).await {
                Ok(r) => r,
                Err(_) => Err(format!("not done within {} s", timeout.as_secs())),
            }
        });
    }
    let mut samples = Vec::with_capacity(opts.streams);
    let mut errors = Errors::default();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(t)) => samples.push(t),
            Ok(Err(e)) => errors.add("stream", &e),
            Err(e) => errors.add("task", &e.to_string()),
        }
    }
    samples.sort_unstable();
    let us = |d: Duration| d.as_micros();
    let (p50, p99, max) = match samples.last() {
        Some(&max) => (
            us(percentile(&samples, 50.0)),
            us(percentile(&samples, 99.0)),
            us(max),
        ),
        None => (0, 0, 0),
    };
    println!(
        "STREAMS url=http://{}{} streams={} ok={} errors={} p50_us={p50} p99_us={p99} max_us={max} wall_ms={} peak_open={}",
        opts.addr,
        opts.ask.path,
        opts.streams,
        samples.len(),
        errors.count,
        began.elapsed().as_millis(),
        open.peak.load(Ordering::Relaxed),
    );
    errors.count == 0 && !samples.is_empty()
}

/// One plain request on an open connection; the connection stays usable unless told otherwise.
async fn exchange(conn: &mut Conn, request: &[u8]) -> Result<(), String> {
    conn.send(request).await?;
    let head = conn.read_head().await?;
    if head.status != 200 {
        return Err(format!("status {}", head.status));
    }
    let mut sink = Sse::default();
    conn.read_body(&head, &mut sink).await?;
    if sink.bytes == 0 {
        return Err("empty answer".into());
    }
    if head.close {
        return Err("the answer closed the connection".into());
    }
    Ok(())
}

/// `VmRSS` in kB summed over `pids` (a process that is gone counts 0).
fn rss_kb(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum()
}

/// Runs `exchange` on every connection, at most `limit` at once; returns the ones that answered.
async fn exchange_all(
    conns: Vec<Conn>,
    request: &Arc<Vec<u8>>,
    limit: &Arc<Semaphore>,
    timeout: Duration,
    errors: &mut Errors,
) -> Vec<Conn> {
    let mut set = JoinSet::new();
    for mut conn in conns {
        let (request, limit) = (request.clone(), limit.clone());
        set.spawn(async move {
            let _permit = limit.acquire_owned().await.map_err(|e| e.to_string())?;
            match tokio::time::timeout(timeout, exchange(&mut conn, &request)).await {
                Ok(Ok(())) => Ok(conn),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(format!("no answer within {} s", timeout.as_secs())),
            }
        });
    }
    let mut kept = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(c)) => kept.push(c),
            Ok(Err(e)) => errors.add("second request", &e),
            Err(e) => errors.add("task", &e.to_string()),
        }
    }
    kept
}

async fn idle_mode(opts: &Options, n: usize) -> bool {
    let request = Arc::new(wire::request(&opts.ask));
    let limit = Arc::new(Semaphore::new(opts.setup_concurrency));
    let rss_before = rss_kb(&opts.rss_pids);
    let began = tokio::time::Instant::now();
    let mut errors = Errors::default();
    let mut set = JoinSet::new();
    for i in 0..n {
        let (request, limit, addr, timeout) =
            (request.clone(), limit.clone(), opts.addr, opts.timeout);
        let at = began + offset(opts.ramp, i, n);
        set.spawn(async move {
            tokio::time::sleep_until(at).await;
            let _permit = limit.acquire_owned().await.map_err(|e| e.to_string())?;
            let first = async {
                let mut conn = Conn::connect(addr).await?;
                exchange(&mut conn, &request).await.map(|()| conn)
            };
            match tokio::time::timeout(timeout, first).await {
                Ok(r) => r,
                Err(_) => Err(format!("no first answer within {} s", timeout.as_secs())),
            }
        });
    }
    let mut conns = Vec::with_capacity(n);
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(c)) => conns.push(c),
            Ok(Err(e)) => errors.add("first request", &e),
            Err(e) => errors.add("task", &e.to_string()),
        }
    }
    let opened = conns.len();
    tokio::time::sleep(opts.hold / 2).await;
    let rss_idle = rss_kb(&opts.rss_pids);
    tokio::time::sleep(opts.hold - opts.hold / 2).await;
    let reused = exchange_all(conns, &request, &limit, opts.timeout, &mut errors)
        .await
        .len();
    let per_conn = if opened > 0 {
        (rss_idle.saturating_sub(rss_before) * 1024) / opened as u64
    } else {
        0
    };
    println!(
        "CONNS url=http://{}{} conns={n} opened={opened} reused={reused} errors={} rss_before_kb={rss_before} rss_idle_kb={rss_idle} rss_per_conn_b={per_conn}",
        opts.addr, opts.ask.path, errors.count,
    );
    errors.count == 0 && reused == n
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let opts = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("streams: {e}");
            return ExitCode::from(2);
        }
    };
    let ok = match opts.idle {
        Some(n) => idle_mode(&opts, n).await,
        None => streams_mode(&opts).await,
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
