//! switchyard: an edge load balancer for AI model clusters, built on Cloudflare's Pingora.
//!
//! The request path, in the order a request meets it, is in [`proxy`]; the side parts are config,
//! snapshots, peer state, health checks, breakers, admin and metrics. [`sim`] is the simulated
//! model server used by the demo, the tests and the benchmarks.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod app;
pub mod balance;
pub mod breaker;
pub mod cache;
pub mod config;
pub mod demo;
pub mod health;
pub mod keys;
pub mod limits;
pub mod listen;
pub mod metrics;
pub mod peer;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod sim;
pub mod snapshot;
pub mod split;
