//! The integration tests, one binary: each suite is a module (`cargo test hostile::` runs one).
//! One binary rather than one per file: a test binary links every dependency, so twenty of them
//! cost gigabytes of disk and minutes of linking on a small CI machine.

mod common;

mod affinity;
mod cache;
mod check;
mod dashboard;
mod edge;
mod failover;
mod fleet;
mod foundation;
mod fuzz;
mod grafana;
mod hostile;
mod http1;
mod keys_limits;
mod observe;
mod relay;
mod reload;
mod resilience;
mod resume;
mod semantics;
mod timeouts;
mod upstreams;
