//! A simulated OpenAI-compatible model server, for the demo, the integration tests and the benchmarks.
//!
//! A load balancer for model clusters is only as well tested as its backends are realistic: answers that take
//! time to the first token, streams whose tokens arrive spread out, backends that fail, hang or die mid-stream.
//! This module provides such a backend, controlled by configuration ([`SimConfig`], or [`SimArgs`] on the
//! command line), at runtime through [`SimHandle`], and per request through the `x-sim-*` headers in
//! [`header`]. It counts what arrives ([`SimStats`]) so tests can check the balancer from the backend's side.
//!
//! Endpoints: `POST /v1/chat/completions`, `POST /v1/completions` (both with `"stream": true` support),
//! `GET /health`, `GET /v1/models`; anything else is a 404. Configured failures apply to the two completion
//! endpoints only; `/health` answers the status set by [`SimHandle::set_health_status`].

mod config;
mod knobs;
mod stats;

pub use config::{FailMode, Failure, SimArgs, SimArgsError, SimConfig};
pub use knobs::header;
pub use stats::{SimStats, ARRIVALS_KEPT};
