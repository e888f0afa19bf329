//! Background services: work that runs beside the request path, never on it, and stops on the
//! shutdown signal. Each is registered with Pingora's `background_service` by `server`.
//!
//! | service | what it does |
//! |---|---|
//! | [`health::HealthChecker`] | active health checks of every peer of a checked cluster |
//! | [`key_probe::KeyProber`] | probes disabled API keys until they pass again |
//! | [`key_sync::KeySync`] | shares API-key state with the other instances through the shared tier |
//! | [`load_report::LoadReporter`] | scrapes the load peers report (`load_report`: vLLM, SGLang gauges) |
//! | [`resolver::NameResolver`] | resolves peers given by DNS name, and installs new address sets |
//! | [`warm::Warmer`] | sends each cached route's warm-up requests at start and after reloads |
//! | [`sampler::Sampler`] | once a second, the dashboard's sample of rates, latency and shares |
//!
//! Config reload triggers are a service too, beside the reload they trigger (`reload::triggers`).

pub mod health;
pub mod key_probe;
pub mod key_sync;
pub mod load_report;
pub mod probe;
pub mod resolver;
pub mod sampler;
pub mod warm;
