//! The floor of the proxied-path benchmark: Pingora's own reverse proxy with no logic at all.
//!
//! Why: switchyard is built on Pingora, so part of its cost per request is the framework's. This
//! proxy is `pingora-proxy` with an `upstream_peer` that always returns one fixed peer: no
//! routing, no split, no retries, no timeouts beyond Pingora's defaults, no metrics, no added
//! headers, Pingora's own keep-alive pool. `benches/wrk/run.sh` measures it in the same run as
//! nginx, HAProxy and switchyard (its "pingora (no logic)" row), so the report shows how much of
//! the distance to nginx is Pingora's and how much is switchyard's.
//!
//! Usage: `cargo bench --bench pingora_floor -- --listen 127.0.0.1:PORT --upstream
//! 127.0.0.1:PORT [--threads 1]`. Runs until killed (SIGTERM shuts it down within a second).

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use std::net::SocketAddr;
use std::process::ExitCode;

/// Proxies every request to one peer.
struct Floor {
    peer: HttpPeer,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }
}

fn main() -> ExitCode {
    let (mut listen, mut upstream, mut threads) = (None, None, 1usize);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "--bench" => continue,
            "--listen" | "--upstream" | "--threads" => args.next(),
            other => {
                eprintln!("pingora_floor: unknown argument {other}");
                return ExitCode::from(2);
            }
        };
        let Some(value) = value else {
            eprintln!("pingora_floor: {arg} needs a value");
            return ExitCode::from(2);
        };
        let ok = match arg.as_str() {
            "--listen" => value
                .parse::<SocketAddr>()
                .map(|a| listen = Some(a))
                .is_ok(),
            "--upstream" => value
                .parse::<SocketAddr>()
                .map(|a| upstream = Some(a))
                .is_ok(),
            _ => value.parse::<usize>().map(|n| threads = n.max(1)).is_ok(),
        };
        if !ok {
            eprintln!("pingora_floor: bad value for {arg}: {value}");
            return ExitCode::from(2);
        }
    }
    let (Some(listen), Some(upstream)) = (listen, upstream) else {
        eprintln!("usage: pingora_floor --listen ADDR --upstream ADDR [--threads N]");
        return ExitCode::from(2);
    };
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let floor = Floor {
        peer: HttpPeer::new(upstream, false, String::new()),
    };
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, floor);
    proxy.add_tcp(&listen.to_string());
    server.add_service(proxy);
    server.run_forever()
}
