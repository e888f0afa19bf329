//! switchyard: an edge load balancer for AI model clusters, built on Pingora.
//!
//! The request path, in the order a request meets it, is in [`proxy`]; the side parts are config,
//! peer state, health checks, breakers, admin and metrics.

#![forbid(unsafe_code)]

pub mod breaker;
pub mod config;
pub mod balance;
pub mod peer;
pub mod split;
pub mod metrics;
pub mod snapshot;
pub mod app;
pub mod proxy;
pub mod admin;
pub mod server;
pub mod health;
