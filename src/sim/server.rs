//! Listening, connection handling and shutdown of one simulated model server.
//!
//! Tests kill and restart backends to exercise failover, so shutdown must behave like a killed process: the
//! listener closes and every open connection drops at once, with no graceful drain. Every task the server
//! spawns (the accept loop, each connection, each HTTP/2 stream hyper spawns through our executor) watches one
//! stop signal and holds a clone of one `mpsc::Sender`; shutdown raises the signal and waits until every
//! sender is gone, so when it returns nothing of the old server is left and the port can be bound again.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::arrivals::Arrivals;
use super::config::{Failure, SimConfig};
use super::handler::{self, Shared};
use super::reply::KeyRule;
use super::stats::SimStats;

/// A running simulated model server. Dropping it stops the server too, without waiting.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    done: mpsc::Receiver<()>,
}

impl SimHandle {
    /// Binds `addr` (use `127.0.0.1:0` in tests) and serves HTTP/1.1 and h2c on the current tokio runtime.
    ///
    /// An empty `cfg.name` becomes `sim-<bound port>`. Fails if the address cannot be bound or the name is not
    /// a valid header value.
    pub async fn start(addr: SocketAddr, mut cfg: SimConfig) -> io::Result<SimHandle> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        if cfg.name.is_empty() {
            cfg.name = format!("sim-{}", addr.port());
        }
        let instance = HeaderValue::from_str(&cfg.name).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("instance name {:?}: {e}", cfg.name),
            )
        })?;
        let arrivals = Arrivals::open(cfg.arrivals_log.as_deref()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("arrival log {:?}: {e}", cfg.arrivals_log.as_deref()),
            )
        })?;
        let shared = Arc::new(Shared::new(cfg, instance, arrivals));
        let (stop, stop_rx) = watch::channel(false);
        let (alive, done) = mpsc::channel(1);
        let tracker = Tracker {
            stop: stop_rx,
            _alive: alive,
        };
        tokio::spawn(accept_loop(listener, Arc::clone(&shared), tracker));
        Ok(SimHandle {
            addr,
            shared,
            stop,
            done,
        })
    }

    /// The bound address (with the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The instance name, as reported in `x-sim-instance` and `served_by`.
    pub fn name(&self) -> &str {
        &self.shared.cfg.name
    }

    /// Answer requests made with API key `key` by `rule` (`None` accepts the key again).
    pub fn set_key_rule(&self, key: &str, rule: Option<KeyRule>) {
        let mut rules = self
            .shared
            .key_rules
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match rule {
            Some(r) => rules.insert(key.to_string(), r),
            None => rules.remove(key),
        };
    }

    /// Model requests seen with API key `key`.
    pub fn key_hits(&self, key: &str) -> u64 {
        self.shared
            .key_hits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// Model requests seen with `x-chaos-id: id`.
    pub fn arrivals(&self, id: &str) -> u64 {
        self.shared.arrivals.count(id)
    }

    /// What this server has seen so far.
    pub fn stats(&self) -> &SimStats {
        &self.shared.stats
    }

    /// Changes the configured failure for requests arriving from now on (`fail_every` still applies).
    pub fn set_failure(&self, f: Option<Failure>) {
        self.shared
            .failure
            .store(Failure::encode(f), Ordering::Relaxed);
    }

    /// Make `/metrics` report `waiting` requests waiting and KV-cache use `kv` (0 to 1) instead
    /// of the real values (`None`: the real one; nothing ever waits in the simulator).
    pub fn set_reported_load(&self, waiting: Option<u64>, kv: Option<f64>) {
        self.shared.reported.set(waiting, kv);
    }

    /// Prompt-prefix blocks looked up in the prefix cache, and found there, since the start.
    pub fn prefix_cache_counts(&self) -> (u64, u64) {
        self.shared.prefix.counts()
    }

    /// Sets the status `GET /health` answers (200 means healthy).
    pub fn set_health_status(&self, status: u16) {
        self.shared.health_status.store(status, Ordering::Relaxed);
    }

    /// Stops accepting and drops every open connection, like a killed process; returns once all of the
    /// server's tasks have ended and the port is free.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        // `recv` yields `None` once every task has dropped its `Tracker`; nothing is ever sent.
        while self.done.recv().await.is_some() {}
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// Spawns tasks that end on the stop signal and that shutdown waits for; also hyper's executor for h2 streams.
#[derive(Debug, Clone)]
struct Tracker {
    stop: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
}

impl Tracker {
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, fut: F) {
        let mut tracker = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = fut => {}
                _ = tracker.stopped() => {}
            }
        });
    }

    /// Resolves when the server is told to stop (or its handle is gone).
    async fn stopped(&mut self) {
        let _ = self.stop.wait_for(|s| *s).await;
    }
}

impl<F> hyper::rt::Executor<F> for Tracker
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.spawn(async move {
            fut.await;
        });
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut tracker: Tracker) {
    loop {
        tokio::select! {
            () = tracker.stopped() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => serve(stream, Arc::clone(&shared), &tracker),
                Err(e) => {
                    // Usually descriptor exhaustion; back off instead of spinning.
                    log::warn!("sim {}: accept failed: {e}", shared.cfg.name);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

fn serve(stream: TcpStream, shared: Arc<Shared>, tracker: &Tracker) {
    // Tokens are small writes that must leave at once for the stream timing to mean anything.
    if let Err(e) = stream.set_nodelay(true) {
        log::debug!("sim {}: set_nodelay: {e}", shared.cfg.name);
    }
    let exec = tracker.clone();
    tracker.spawn(async move {
        let name = shared.cfg.name.clone();
        let service = service_fn(move |req| handler::handle(Arc::clone(&shared), req));
        let builder = auto::Builder::new(exec);
        if let Err(e) = builder
            .serve_connection(TokioIo::new(stream), service)
            .await
        {
            log::debug!("sim {name}: connection ended: {e}");
        }
    });
}
