//! Shared integration-test harness: real switchyard processes on loopback ports, simulated model
//! backends, and an HTTP client. Everything binds 127.0.0.1 only.
#![allow(dead_code, unused_imports)]

pub mod configmap;
pub mod dns;
pub mod redis;
pub mod tls;

use std::collections::HashSet;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub mod raw;

pub use switchyard::sim::{Failure, SimConfig, SimHandle};

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free loopback port: bound, released, and never handed out twice by this process.
pub fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = l.local_addr().expect("local addr").port();
        let mut seen = HANDED_OUT.lock().unwrap();
        if seen.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// An HTTP client that never uses a proxy from the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client")
}

/// Start a simulator on a loopback port with `name`, fast by default.
pub async fn sim(name: &str) -> SimHandle {
    sim_with(SimConfig {
        name: name.to_string(),
        ttft: Duration::from_millis(5),
        token_delay: Duration::from_millis(1),
        tokens: 4,
        ..SimConfig::default()
    })
    .await
}

pub async fn sim_with(cfg: SimConfig) -> SimHandle {
    SimHandle::start("127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .expect("start simulator")
}

/// A running switchyard process; killed on drop.
pub struct Balancer {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    log_path: PathBuf,
}

/// Additions to the generated head of a test config.
#[derive(Debug, Default)]
pub struct Head {
    /// More `listeners:` items, each starting with `  - addr:`.
    pub listeners: String,
    /// More `admin:` keys, each line indented by two spaces.
    pub admin: String,
    /// A directory to use instead of a new temporary one (to place files before the start).
    pub dir: Option<tempfile::TempDir>,
    /// Lay the config out as a Kubernetes ConfigMap volume ([`configmap`]).
    pub configmap: bool,
}

impl Balancer {
    /// Start switchyard with `body` (clusters and routes) plus a generated `server`, `listeners`
    /// and `admin` section on free ports. Waits until the admin listener answers.
    pub async fn start(body: &str) -> Balancer {
        Self::start_with(Head::default(), body).await
    }

    /// [`Balancer::start`] with additions to the generated head.
    pub async fn start_with(extra: Head, body: &str) -> Balancer {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let dir = match extra.dir {
            Some(d) => d,
            None => tempfile::tempdir().expect("tempdir"),
        };
        // SWITCHYARD_TEST_HTTP1=pingora runs a suite against Pingora's HTTP/1 server instead of
        // the lean one (the default), so both stay correct.
        let http1 = match std::env::var("SWITCHYARD_TEST_HTTP1") {
            Ok(v) if !v.is_empty() => format!("  http1: {v}\n"),
            _ => String::new(),
        };
        let head = format!(
            "server:\n  threads: 2\n  grace_period: 1s\n  graceful_shutdown_timeout: 1s\n  pid_file: {d}/sy.pid\n  upgrade_sock: {d}/upgrade.sock\n{http1}listeners:\n  - addr: \"{addr}\"\n{l}admin:\n  addr: \"{admin}\"\n{a}",
            d = dir.path().display(),
            l = extra.listeners,
            a = extra.admin,
        );
        let config_path = if extra.configmap {
            configmap::lay_out(dir.path(), "switchyard.yaml", &format!("{head}{body}"))
        } else {
            let p = dir.path().join("switchyard.yaml");
            std::fs::write(&p, format!("{head}{body}")).expect("write config");
            p
        };
        let log_path = dir.path().join("switchyard.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("-c")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn switchyard");
        let b = Balancer {
            child,
            addr,
            admin,
            dir,
            config_path,
            log_path,
        };
        b.wait_admin("/healthz", Duration::from_secs(20)).await;
        b.wait_listening(Duration::from_secs(10)).await;
        b
    }

    /// Wait until an admin endpoint answers 200.
    pub async fn wait_admin(&self, path: &str, limit: Duration) {
        let c = client();
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(r) = c.get(self.admin_url(path)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "switchyard admin {path} not 200 within {limit:?}; log:\n{}",
            self.log()
        );
    }

    async fn wait_listening(&self, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("switchyard not listening; log:\n{}", self.log());
    }

    pub async fn wait_ready(&self) {
        self.wait_admin("/readyz", Duration::from_secs(20)).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal (by name, e.g. "HUP", "QUIT") to the process.
    pub fn signal(&self, sig: &str) {
        signal(self.child.id(), sig);
    }

    /// Start a second process on the same config with `--upgrade`: it takes over the listening
    /// sockets once this one gets SIGQUIT.
    pub fn spawn_upgrade(&self) -> Child {
        let log = std::fs::File::create(self.dir.path().join("upgrade.log")).expect("log file");
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("-c")
            .arg(&self.config_path)
            .arg("--upgrade")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn upgraded switchyard")
    }

    /// Whether the process has exited (reaping it if so).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// POST /reload; returns the status and JSON answer.
    pub async fn reload(&self) -> (u16, serde_json::Value) {
        let r = client()
            .post(self.admin_url("/reload"))
            .send()
            .await
            .expect("reload");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or_default())
    }

    pub async fn generation(&self) -> u64 {
        self.status().await["generation"].as_u64().unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub async fn metrics(&self) -> String {
        client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    pub async fn status(&self) -> serde_json::Value {
        client()
            .get(self.admin_url("/status"))
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("status json")
    }

    /// Replace the config body (same head) on disk, without reloading.
    pub fn write_config(&self, body: &str) {
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        let head_end = text.find("clusters:").unwrap_or(text.len());
        let tmp = self.dir.path().join("next.yaml");
        let mut f = std::fs::File::create(&tmp).unwrap();
        write!(f, "{}{}", &text[..head_end], body).unwrap();
        drop(f);
        std::fs::rename(&tmp, &self.config_path).unwrap();
    }

    /// Replace the config body of a ConfigMap layout ([`Head::configmap`]) as kubelet does.
    pub fn swap_configmap(&self, body: &str) {
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        let head_end = text.find("clusters:").unwrap_or(text.len());
        let next = format!("{}{}", &text[..head_end], body);
        configmap::swap(self.dir.path(), "switchyard.yaml", &next);
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `check` every 50 ms until it holds; fail the test, naming `what`, once `limit` passed.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Send a signal by name to a process.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} {pid} failed");
}

/// The value of a Prometheus sample with exactly these labels (in any order), or 0.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
        if n != name {
            continue;
        }
        let rest = rest.trim_end_matches('}');
        let got: Vec<(&str, &str)> = if rest.is_empty() {
            vec![]
        } else {
            rest.split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k, v.trim_matches('"')))
                .collect()
        };
        if got.len() == labels.len() && labels.iter().all(|l| got.contains(l)) {
            return value.parse().unwrap_or(0.0);
        }
    }
    0.0
}

/// A chat request body.
pub fn chat(content: &str, stream: bool) -> String {
    serde_json::json!({
        "model": "m",
        "messages": [{"role": "user", "content": content}],
        "stream": stream,
    })
    .to_string()
}

/// Requests in flight at the edge and tries in flight on every peer, from `/status`.
pub async fn held(lb: &Balancer) -> (u64, u64) {
    let s = lb.status().await;
    let edge = s["edge"]["requests_in_flight"].as_u64().unwrap_or(u64::MAX);
    let peers = s["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["peers"].as_array().cloned().unwrap_or_default())
        .map(|p| p["inflight"].as_u64().unwrap_or(u64::MAX))
        .sum();
    (edge, peers)
}

/// After a hostile client: nothing is left held (within `limit`), and a normal request to
/// `url` (a chat completion) is answered 200.
pub async fn still_serves(lb: &Balancer, url: &str, limit: Duration) {
    wait_until(limit, "no request or peer slot left held", || async {
        held(lb).await == (0, 0)
    })
    .await;
    let r = client()
        .post(url)
        .header("content-type", "application/json")
        .body(chat("still there?", false))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("a normal request after the hostile one");
    assert_eq!(r.status(), 200, "a normal request after the hostile one");
}

/// One entry of `clusters:` named `name` with `peers`, plus `extra` lines (indented by four).
pub fn cluster_yaml(name: &str, peers: &[&SimHandle], extra: &str) -> String {
    let list: Vec<String> = peers
        .iter()
        .map(|p| format!("{{ addr: \"{}\" }}", p.addr()))
        .collect();
    format!("  {name}:\n    peers: [ {} ]\n{extra}", list.join(", "))
}

/// A `routes:` section with one route `chat` on `/v1/` split as `split`, plus `extra` lines.
pub fn route_yaml(split: &[(&str, u32)], extra: &str) -> String {
    let s: Vec<String> = split
        .iter()
        .map(|(c, w)| format!("{{ cluster: {c}, weight: {w} }}"))
        .collect();
    format!(
        "routes:\n  - name: chat\n    match: {{ path_prefix: \"/v1/\" }}\n    split: [ {} ]\n{extra}",
        s.join(", ")
    )
}
