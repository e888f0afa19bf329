//! Prefix affinity against round robin and least in-flight, on a multi-tenant LLM workload.
//!
//! What: 32 tenants, each with its own 4 KiB system prompt and random questions, sent at
//! concurrency 16 through switchyard to 4 simulated model servers, each of which caches the
//! prompts of 16 tenants (`--cache-tenants`; an LRU of 256-byte blocks; the first token costs 10 ms
//! per uncached block, a sixteenth of that per cached one: about 175 ms cold, 27 ms warm through
//! switchyard). `prefix_affinity` runs with `load_factor: 1.5` (`--load-factor`). The same workload
//! runs against `round_robin`, `least_inflight` and `prefix_affinity` in one run, each on fresh
//! simulators; then a skewed run where one tenant sends 60% of the requests.
//!
//! Why: a model server that holds a prompt's prefix in its KV cache skips its prefill, so where a
//! request goes decides its time to first token; round robin spreads every tenant over every
//! peer and evicts everyone's prefixes, affinity keeps each tenant where its prefix is, and the
//! load bound keeps a hot tenant from saturating one peer.
//!
//! How to read: per balancer, TTFT p50/p90/p99 (ms, from sending to the first SSE `data:` line,
//! through switchyard), the prefix-cache hit rate (blocks found / blocks looked up, from the
//! simulators), requests per peer, and the most requests any peer had at once, against the
//! bound `ceil(1.5 × 16 / 4) = 6` of `prefix_affinity`. The skewed run adds how the hot tenant's
//! requests spread over the peers. The first `--warmup` requests of each run fill the caches and
//! are not counted.
//!
//! Usage: `cargo bench --bench affinity [-- --requests 800 --warmup 64 --concurrency 16
//! --cache-tenants 16 --load-factor 1.5]`;
//! `-- --quick` (CI): 48 requests per run, asserting only that every request answered.

#![forbid(unsafe_code)]

mod rig;

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rig::{PeerShape, Rig};

const TENANTS: usize = 32;
const PEERS: usize = 4;
const BALANCERS: [&str; 3] = ["round_robin", "least_inflight", "prefix_affinity"];

struct Options {
    requests: usize,
    warmup: usize,
    concurrency: usize,
    /// Tenants' prompts each peer's prefix cache holds.
    cache_tenants: usize,
    /// `affinity.load_factor` of the `prefix_affinity` runs.
    load_factor: f64,
    quick: bool,
}

fn parse_options() -> Result<Options, String> {
    let mut o = Options {
        requests: 800,
        warmup: 64,
        concurrency: 16,
        cache_tenants: 16,
        load_factor: 1.5,
        quick: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> Result<usize, String> {
            let v = args.next().ok_or(format!("{name} needs a value"))?;
            v.parse().map_err(|e| format!("{name} {v:?}: {e}"))
        };
        match arg.as_str() {
            "--bench" => {}
            "--quick" => o.quick = true,
            "--requests" => o.requests = value("--requests")?,
            "--warmup" => o.warmup = value("--warmup")?,
            "--concurrency" => o.concurrency = value("--concurrency")?,
            "--cache-tenants" => o.cache_tenants = value("--cache-tenants")?,
            "--load-factor" => {
                let v = args.next().ok_or("--load-factor needs a value")?;
                o.load_factor = v.parse().map_err(|e| format!("--load-factor {v:?}: {e}"))?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if o.quick {
        (o.requests, o.warmup) = (48, 16);
    }
    if o.requests == 0 || o.concurrency == 0 {
        return Err("--requests and --concurrency must be at least 1".into());
    }
    Ok(o)
}

/// A tenant's 4 KiB system prompt.
fn system_prompt(tenant: usize) -> String {
    let line =
        format!("You are the support assistant of tenant {tenant:02}; answer in its house style. ");
    let mut s = line.repeat(4096 / line.len() + 1);
    s.truncate(4096);
    s
}

/// Which tenant sends request `i`: uniform, or tenant 0 for 60% when `skewed`.
fn tenant_of(i: usize, skewed: bool) -> usize {
    let r = switchyard::balance::hash::mix(i as u64 ^ 0x5eed);
    if skewed && r % 10 < 6 {
        0
    } else {
        (r >> 8) as usize % TENANTS
    }
}

/// One request's outcome: its tenant, the peer that answered and the time to its first token.
struct Sample {
    tenant: usize,
    peer: String,
    ttft: Duration,
}

async fn one(
    client: &reqwest::Client,
    url: &str,
    prompts: &[String],
    i: usize,
    skewed: bool,
) -> Result<Sample, String> {
    let tenant = tenant_of(i, skewed);
    let body = serde_json::json!({
        "model": "m",
        "stream": true,
        "messages": [
            {"role": "system", "content": prompts[tenant]},
            {"role": "user", "content": format!("question {i}: {}", switchyard::balance::hash::mix(i as u64))},
        ],
    })
    .to_string();
    let start = Instant::now();
    let mut resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let peer = resp
        .headers()
        .get("x-sim-instance")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_string();
    let mut ttft = None;
    let mut seen = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("body: {e}"))? {
        if ttft.is_none() {
            seen.extend_from_slice(&chunk);
            if seen.starts_with(b"data:") || seen.windows(6).any(|w| w == b"\ndata:") {
                ttft = Some(start.elapsed());
            }
        }
    }
    let ttft = ttft.ok_or("stream ended without a data: line")?;
    Ok(Sample { tenant, peer, ttft })
}

/// `n` requests from index `from`, `concurrency` at a time.
async fn drive(
    url: &str,
    prompts: &Arc<Vec<String>>,
    from: usize,
    n: usize,
    concurrency: usize,
    skewed: bool,
) -> Result<Vec<Sample>, String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let next = Arc::new(AtomicUsize::new(from));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, url, prompts, next) = (
            client.clone(),
            url.to_string(),
            prompts.clone(),
            next.clone(),
        );
        workers.spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= from + n {
                    return Ok::<_, String>(out);
                }
                out.push(one(&client, &url, &prompts, i, skewed).await?);
            }
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(done) = workers.join_next().await {
        all.extend(done.map_err(|e| e.to_string())??);
    }
    Ok(all)
}

/// What one run measured.
struct Result_ {
    balance: &'static str,
    p50: f64,
    p90: f64,
    p99: f64,
    hit_rate: f64,
    per_peer: Vec<u64>,
    max_at_once: Vec<u64>,
    hot_spread: Vec<usize>,
}

fn ms(sorted: &[Duration], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

async fn run(
    balance: &'static str,
    o: &Options,
    skewed: bool,
    prompts: &Arc<Vec<String>>,
) -> Result<Result_, String> {
    // A tenant's prompt is 17 blocks.
    let shape = PeerShape {
        cache_blocks: 17 * o.cache_tenants,
        block_bytes: 256,
        prefill_per_block: Duration::from_millis(10),
    };
    let extra = match balance {
        "prefix_affinity" => format!("    affinity: {{ load_factor: {} }}\n", o.load_factor),
        _ => String::new(),
    };
    let rig = Rig::start(PEERS, &shape, balance, &extra).await?;
    drive(&rig.url, prompts, 0, o.warmup, o.concurrency, skewed).await?;
    let (q0, h0) = rig.cache_counts();
    let before: Vec<u64> = rig.sims.iter().map(|s| s.stats().requests()).collect();
    let samples = drive(
        &rig.url,
        prompts,
        o.warmup,
        o.requests,
        o.concurrency,
        skewed,
    )
    .await?;
    if samples.len() != o.requests {
        return Err(format!(
            "{balance}: {} of {} answered",
            samples.len(),
            o.requests
        ));
    }
    let (q1, h1) = rig.cache_counts();
    let mut ttfts: Vec<Duration> = samples.iter().map(|s| s.ttft).collect();
    ttfts.sort_unstable();
    let names: Vec<String> = rig.sims.iter().map(|s| s.name().to_string()).collect();
    let mut hot_spread = vec![0; PEERS];
    for s in samples.iter().filter(|s| s.tenant == 0) {
        if let Some(i) = names.iter().position(|n| *n == s.peer) {
            hot_spread[i] += 1;
        }
    }
    Ok(Result_ {
        balance,
        p50: ms(&ttfts, 50.0),
        p90: ms(&ttfts, 90.0),
        p99: ms(&ttfts, 99.0),
        hit_rate: (h1 - h0) as f64 / (q1 - q0).max(1) as f64,
        per_peer: rig
            .sims
            .iter()
            .zip(&before)
            .map(|(s, b)| s.stats().requests() - b)
            .collect(),
        max_at_once: rig
            .sims
            .iter()
            .map(|s| s.stats().max_concurrent())
            .collect(),
        hot_spread,
    })
}

fn print(title: &str, results: &[Result_], skewed: bool) {
    println!("\n{title}");
    println!("| balance | TTFT p50 ms | p90 ms | p99 ms | prefix-cache hits | requests per peer | most at once per peer |{}", if skewed { " hot tenant per peer |" } else { "" });
    println!(
        "|---|---|---|---|---|---|---|{}",
        if skewed { "---|" } else { "" }
    );
    for r in results {
        let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(" / ");
        let hot: Vec<u64> = r.hot_spread.iter().map(|v| *v as u64).collect();
        println!(
            "| `{}` | {:.1} | {:.1} | {:.1} | {:.0}% | {} | {} |{}",
            r.balance,
            r.p50,
            r.p90,
            r.p99,
            r.hit_rate * 100.0,
            list(&r.per_peer),
            list(&r.max_at_once),
            if skewed {
                format!(" {} |", list(&hot))
            } else {
                String::new()
            }
        );
    }
    let rr = results.iter().find(|r| r.balance == "round_robin");
    let pa = results.iter().find(|r| r.balance == "prefix_affinity");
    if let (Some(rr), Some(pa)) = (rr, pa) {
        println!(
            "prefix_affinity TTFT p90: {:.1}x better than round_robin",
            rr.p90 / pa.p90.max(0.001)
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let o = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("affinity: {e}");
            return ExitCode::from(2);
        }
    };
    let prompts: Arc<Vec<String>> = Arc::new((0..TENANTS).map(system_prompt).collect());
    println!(
        "affinity: {TENANTS} tenants (4 KiB system prompt each), {PEERS} peers caching {} tenants' prompts each, concurrency {}, {} requests per run after {} warm-up, load_factor {}",
        o.cache_tenants, o.concurrency, o.requests, o.warmup, o.load_factor
    );
    for (title, skewed) in [
        ("shared prefixes, tenants uniform", false),
        ("skewed: tenant 0 sends 60%", true),
    ] {
        let mut results = Vec::new();
        for balance in BALANCERS {
            match run(balance, &o, skewed, &prompts).await {
                Ok(r) => results.push(r),
                Err(e) => {
                    eprintln!("affinity: {title}, {balance}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        print(title, &results, skewed);
    }
    if o.quick {
        println!("affinity --quick: every request answered");
    }
    ExitCode::SUCCESS
}
