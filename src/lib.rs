//! switchyard: an edge load balancer for AI model clusters, built on Cloudflare's Pingora.
//!
//! The request path, in the order a request meets it, is in [`proxy`]; it reads one
//! [`snapshot`] of the config and goes upstream through [`upstream`]. The side parts are config,
//! reload, the background services (health checks, key probes, cache warm-up), admin and
//! metrics. `docs/architecture.md` draws the layers and says what each module may import. [`sim`]
//! is the simulated model server used by the demo, the tests and the benchmarks.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod app;
pub mod balance;
pub mod body;
pub mod breaker;
pub mod cache;
pub mod certs;
pub mod config;
pub mod deadline;
pub mod demo;
pub mod dns;
pub mod downstream;
pub mod hop;
pub mod keys;
pub mod limits;
pub mod listen;
pub mod metrics;
pub mod peer;
pub mod peer_load;
pub mod proxy;
pub mod reload;
pub mod respond;
pub mod retry_after;
pub mod server;
pub mod services;
pub mod shared;
pub mod sim;
pub mod snapshot;
pub mod split;
pub mod sse;
pub mod tokens;
pub mod trace;
pub mod upstream;
pub mod usage;
pub mod wire;
