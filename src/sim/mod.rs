//! A simulated OpenAI-compatible model server, for the demo, the integration tests and the benchmarks.
//!
//! A load balancer for model clusters is only as well tested as its backends are realistic: answers that take
//! time to the first token, streams whose tokens arrive spread out, backends that fail, hang or die mid-stream.
//! This module provides such a backend, controlled by configuration ([`SimConfig`], or [`SimArgs`] on the
//! command line), at runtime through [`SimHandle`], and per request through the `x-sim-*` headers in
//! [`header`]. It counts what arrives ([`SimStats`]) so tests can check the balancer from the backend's side.
//!
//! Endpoints: `POST /v1/chat/completions`, `POST /v1/completions` (both with `"stream": true` support),
//! `GET /health`, `GET /v1/models`, `GET /sim/arrivals` (model requests counted by `x-chaos-id`),
//! `GET /metrics` (vLLM-named gauges: requests running and waiting, KV-cache use, and the prefix
//! cache's hit counters); anything else is a 404. With `prefix_cache_blocks`, each instance keeps
//! an LRU of prompt-prefix blocks and the first token costs `prefill_per_block` per uncached block
//! (`prefix.rs`). Configured failures and the seeded fault schedule ([`Chaos`]) apply to the two completion
//! endpoints only; `/health` answers the status set by [`SimHandle::set_health_status`].

mod answer;
mod arrivals;
mod chaos;
mod config;
mod gauges;
mod handler;
mod knobs;
mod prefill;
mod prefix;
mod reply;
mod server;
mod stats;
mod stream;
#[cfg(test)]
mod tests;

pub use answer::answer_text;
pub use arrivals::ARRIVAL_IDS_KEPT;
pub use chaos::{Chaos, ChaosError, ChaosShares, Fate, Fault};
pub use config::{FailMode, Failure, SimArgs, SimArgsError, SimConfig};
pub use knobs::header;
pub use reply::KeyRule;
pub use server::SimHandle;
pub use stats::{SimStats, ARRIVALS_KEPT};

/// Blocking entry point of `switchyard sim`: builds its own tokio runtime and serves until Ctrl-C.
pub fn run(args: SimArgs) -> std::io::Result<()> {
    let (addr, cfg) = args
        .into_config()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let handle = SimHandle::start(addr, cfg).await?;
        log::info!(
            "simulated model server {} listening on {}",
            handle.name(),
            handle.addr()
        );
        tokio::signal::ctrl_c().await?;
        log::info!("simulated model server {} stopping", handle.name());
        handle.shutdown().await;
        Ok(())
    })
}
