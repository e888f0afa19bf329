//! `switchyard demo`: simulated model servers for every loopback peer of `conf/demo.yaml`, then
//! the balancer on that file, so a newcomer sees the split, streaming and failover with `curl`.

use crate::config;
use crate::server::{self, RunOptions};
use crate::sim::{SimConfig, SimHandle};
use std::path::Path;
use std::time::Duration;

/// Start the simulators on a runtime of their own, print how to try it, and run the balancer.
pub fn run(config_path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let cfg = config::load(config_path)?;
    let mut sims = Vec::new();
    for c in &cfg.clusters {
        for (i, p) in c.peers.iter().enumerate() {
            let addr = match &p.addr {
                config::PeerAddr::Ip(a) if a.ip().is_loopback() => *a,
                other => {
                    return Err(format!(
                        "demo: peer {other} of cluster {} is not a loopback IP; the demo only simulates local peers",
                        c.name
                    )
                    .into())
                }
            };
            sims.push((addr, format!("{}-{}", c.name, i + 1)));
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("demo-sim")
        .enable_all()
        .build()?;
    let handles: Vec<SimHandle> = runtime.block_on(async {
        let mut out = Vec::new();
        for (addr, name) in &sims {
            let cfg = SimConfig {
                name: name.clone(),
                ttft: Duration::from_millis(150),
                token_delay: Duration::from_millis(60),
                tokens: 12,
                ..SimConfig::default()
            };
            out.push(SimHandle::start(*addr, cfg).await?);
        }
        Ok::<_, std::io::Error>(out)
    })?;
    let listen = cfg.listeners[0].addr;
    let admin = cfg.admin.addr;
    println!("switchyard demo: simulated model servers:");
    for (h, (_, name)) in handles.iter().zip(&sims) {
        println!("  {name:<12} http://{}", h.addr());
    }
    println!(
        r#"
Balancer on http://{listen} (admin http://{admin}). Try:

  curl -si {listen}/v1/chat/completions -H 'content-type: application/json' \
    -d '{{"model":"m","messages":[{{"role":"user","content":"hello"}}]}}'

  curl -sN {listen}/v1/chat/completions -H 'content-type: application/json' \
    -d '{{"model":"m","stream":true,"messages":[{{"role":"user","content":"hello"}}]}}'

  for i in $(seq 100); do curl -s -o /dev/null -D - {listen}/v1/completions -d '{{"prompt":"hi"}}' \
    | grep -i x-sim-instance; done | sort | uniq -c        # the 90/10 split

  curl -s {listen}/v1/completions -H 'x-sim-status: 503' -d '{{"prompt":"hi"}}'   # every try fails: fallback

  for i in 1 2; do curl -s -o /dev/null -D - {listen}/v1/chat/completions \
    -d '{{"model":"m","temperature":0,"messages":[{{"role":"user","content":"hi"}}]}}' \
    | grep -i x-cache-status; done                 # the edge cache: MISS, then HIT

  curl -s {admin}/status
  curl -s {admin}/metrics | grep switchyard_

Ctrl-C stops it.
"#
    );
    // The simulators keep running on `runtime` while the balancer runs in this thread.
    let _keep = (runtime, handles);
    server::run(&RunOptions {
        config_path: config_path.to_path_buf(),
        ..RunOptions::default()
    })?;
    Ok(())
}
