//! switchyard: an edge load balancer for AI model clusters, built on Pingora.
//!
//! The request path, in the order a request meets it, is in [`proxy`]; the side parts are config,
//! peer state, health checks, breakers, admin and metrics.

#![forbid(unsafe_code)]

pub mod breaker;
pub mod config;
