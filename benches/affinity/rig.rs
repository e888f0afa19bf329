//! The rig of one run: four simulated model servers with a prefix cache, and a switchyard
//! process in front of them with the balancer under test. Loopback only; everything stops when
//! the rig is dropped.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchyard::sim::{SimConfig, SimHandle};

/// What every simulated peer is like.
pub struct PeerShape {
    /// Prefix-cache capacity, in blocks.
    pub cache_blocks: usize,
    pub block_bytes: usize,
    pub prefill_per_block: Duration,
}

/// Simulators and a switchyard in front of them.
pub struct Rig {
    pub sims: Vec<SimHandle>,
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local addr: {e}"))
}

impl Rig {
    /// `peers` simulators shaped `shape`, behind switchyard with `balance` (and `extra` cluster
    /// keys, indented by four spaces).
    pub async fn start(
        peers: usize,
        shape: &PeerShape,
        balance: &str,
        extra: &str,
    ) -> Result<Rig, String> {
        let mut sims = Vec::new();
        for i in 0..peers {
            let cfg = SimConfig {
                name: format!("peer{i}"),
                ttft: Duration::from_millis(5),
                token_delay: Duration::from_millis(2),
                tokens: 8,
                prefix_cache_blocks: shape.cache_blocks,
                block_bytes: shape.block_bytes,
                prefill_per_block: shape.prefill_per_block,
                ..SimConfig::default()
            };
            let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
            sims.push(
                SimHandle::start(addr, cfg)
                    .await
                    .map_err(|e| format!("simulator: {e}"))?,
            );
        }
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let (port, admin) = (free_port()?, free_port()?);
        let peer_list: String = sims
            .iter()
            .map(|s| format!("      - {{ addr: \"{}\" }}\n", s.addr()))
            .collect();
        let d = dir.path().display();
        let config = format!(
            "server:\n  threads: 2\n  grace_period: 1s\n  graceful_shutdown_timeout: 1s\n  pid_file: {d}/sy.pid\n  upgrade_sock: {d}/upgrade.sock\n\
             listeners:\n  - addr: \"127.0.0.1:{port}\"\nadmin:\n  addr: \"127.0.0.1:{admin}\"\n\
             clusters:\n  pool:\n    balance: {balance}\n{extra}    peers:\n{peer_list}\
             routes:\n  - name: chat\n    split: [{{ cluster: pool }}]\n    retry: {{ attempts: 1 }}\n"
        );
        let path = dir.path().join("switchyard.yaml");
        std::fs::write(&path, config).map_err(|e| format!("write config: {e}"))?;
        let log = std::fs::File::create(dir.path().join("switchyard.log"))
            .map_err(|e| format!("log: {e}"))?;
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("-c")
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn switchyard: {e}"))?;
        let rig = Rig {
            sims,
            url: format!("http://127.0.0.1:{port}/v1/chat/completions"),
            child,
            _dir: dir,
        };
        rig.wait_ready(&format!("http://127.0.0.1:{admin}/readyz"))
            .await?;
        Ok(rig)
    }

    async fn wait_ready(&self, readyz: &str) -> Result<(), String> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(r) = client.get(readyz).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("switchyard did not become ready in 30 s".into())
    }

    /// Prefix-cache blocks looked up and found, over every peer.
    pub fn cache_counts(&self) -> (u64, u64) {
        self.sims.iter().fold((0, 0), |(q, h), s| {
            let (sq, sh) = s.prefix_cache_counts();
            (q + sq, h + sh)
        })
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
