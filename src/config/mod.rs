//! Configuration: the YAML file becomes one validated, typed [`Config`].
//!
//! ```text
//! file -> FileConfig -> build -> Config
//!         file.rs       build.rs  types/
//!         choices.rs
//!         units.rs
//! ```
//!
//! The YAML text is deserialised into the file layer ([`file`](mod@file)), which mirrors the
//! document, rejects unknown keys and parses units and the words of keys with a fixed set of
//! values. `build` turns it into the typed runtime [`Config`] (socket addresses, durations,
//! enums, cluster indices) and checks everything that needs more than the text of one value. Every error names the file, the line and the key path, like
//! `nginx -t`:
//!
//! ```text
//! conf/switchyard.yaml:31: routes[0].split[1].cluster: unknown cluster "secndary"
//! ```
//!
//! Which file holds which part of the document (the file layer of every part is in `file.rs`):
//!
//! - `server`, `listeners`, `admin`, `limits`, `access_log`: built by `process.rs` into the types
//!   of `types/process.rs`;
//! - a cluster's peers, `health_check` and `breaker`: `cluster.rs`, `types/cluster.rs`;
//! - how it picks a peer (`balance`, `affinity`, `load_report`): `balance.rs`, typed beside the
//!   rest of the cluster;
//! - a cluster's `api_keys`, `rate_limit` and `queue`, and a route's `client_limit`:
//!   `admission.rs`, typed beside the rest of the cluster and of the route;
//! - how a cluster's peers are reached (`tls`, `host`, `strip_prefix`, `add_prefix`) and the
//!   top-level `resolver`: `upstream.rs`, `types/upstream.rs`;
//! - a route's `match`, `split`, `timeouts`, `retry`, `fallback` and `cache`: `route.rs`,
//!   `types/route.rs`;
//! - `shared` (the Redis that a fleet of instances shares state through), and the rule that a
//!   shared limit or cache needs it: `shared.rs`, `types/shared.rs`.
//!
//! `build.rs` calls the builders and checks what spans parts (routes naming clusters, an admin
//! address that is also a listener); `check.rs` holds the rules the builders share (addresses,
//! counts, durations, names, methods, statuses); `locate.rs` finds the line of a key path.

mod admission;
mod balance;
mod build;
mod check;
mod choices;
mod cluster;
pub mod file;
mod locate;
mod process;
mod route;
mod shared;
mod types;
pub mod units;
mod upstream;

pub use types::*;

use locate::LineIndex;
use std::fmt;
use std::path::Path;

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Invalid),
}

/// A config error located at a key path (and, when known, a line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The file the text came from, as given.
    pub file: String,
    /// 1-based line of the key, when it could be found.
    pub line: Option<usize>,
    /// Key path such as `routes[0].split[1].cluster`; empty for document-level errors.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.path, self.message)
        }
    }
}

impl ConfigError {
    /// The key path of the error, if it has one (used by tests and the admin API).
    pub fn path(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid(i) => Some(&i.path),
            ConfigError::Read { .. } => None,
        }
    }
}

/// Read and build the config at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    parse(&text, &file)
}

/// Build a config from YAML `text`; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let invalid = |line: Option<usize>, path: String, message: String| {
        ConfigError::Invalid(Invalid {
            file: origin.to_string(),
            line,
            path,
            message,
        })
    };
    let de = serde_yaml::Deserializer::from_str(text);
    let file: file::FileConfig = match serde_path_to_error::deserialize(de) {
        Ok(f) => f,
        Err(e) => {
            let path = clean_path(&e.path().to_string());
            let inner = e.into_inner();
            let line = inner.location().map(|l| l.line());
            let message = strip_path_prefix(&strip_location(&inner.to_string()), &path);
            return Err(invalid(line, path, message));
        }
    };
    build::build(file).map_err(|e| {
        let line = LineIndex::new(text).line_of(&e.path);
        invalid(line, e.path, e.message)
    })
}

/// The line of the key at `path` (like `clusters.primary.peers[0].addr`) in config `text`, to
/// name it in errors found after the config was built (`switchyard check --resolve`).
pub fn line_of(text: &str, path: &str) -> Option<usize> {
    LineIndex::new(text).line_of(path)
}

/// serde_path_to_error writes `.` for the root and `routes[0].x`; keep the root empty.
fn clean_path(p: &str) -> String {
    if p == "." {
        String::new()
    } else {
        p.to_string()
    }
}

/// serde_yaml starts some messages with its own view of the path (`server: unknown field`); we
/// print the full path ourselves.
fn strip_path_prefix(msg: &str, path: &str) -> String {
    let mut p = path;
    loop {
        if !p.is_empty() {
            if let Some(rest) = msg.strip_prefix(p).and_then(|r| r.strip_prefix(": ")) {
                return rest.to_string();
            }
        }
        match p.rfind(['.', '[']) {
            Some(cut) => p = &p[..cut],
            None => return msg.to_string(),
        }
    }
}

/// serde_yaml appends " at line L column C"; we print the line ourselves.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests;
