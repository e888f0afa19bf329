//! switchyard: an edge load balancer for AI model clusters, built on Cloudflare's Pingora.

pub mod sim;
