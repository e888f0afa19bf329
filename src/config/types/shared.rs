//! The typed config of the shared tier: the Redis (or Valkey) that several instances share
//! limits, token budgets, API-key state and the cache through, and what each limit does with it.

use std::time::Duration;

/// `shared:`: where the fleet's shared state lives, and what a decision does when it cannot be
/// reached in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedConfig {
    /// `redis://[user:password@]HOST:PORT/DB` (as given; shown in `/status` without the password).
    pub redis: String,
    /// Put before every key switchyard writes. Default `switchyard:`.
    pub prefix: String,
    /// Bound on every call to the shared tier; past it the call counts as failed. Default 50ms.
    pub timeout: Duration,
    /// What a limit decision does when a call fails. Default [`OnError::Local`].
    pub on_error: OnError,
}

impl SharedConfig {
    /// The Redis URL without its password, to show.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.redis)
    }
}

/// `redis://user:secret@host` → `redis://user:***@host`: a Redis URL safe to show or digest.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(parts) => parts,
        None => return url.to_string(),
    };
    let user = auth.split_once(':').map_or(auth, |(u, _)| u);
    format!("{scheme}://{user}:***@{host}")
}

/// What a limit decision does when the shared tier fails or is too slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Decide with this instance's own limit (each instance then allows the full limit).
    Local,
    /// Refuse the request with 503.
    Deny,
}

/// Where a limit, a key pool's state or a cache is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// In this process only.
    Local,
    /// In the shared tier, for every instance configured alike (the default with `shared`).
    Shared,
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact_url("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(redact_url("redis://:pw@h:1/2"), "redis://:***@h:1/2");
        assert_eq!(redact_url("redis://u:p@ss@h:1"), "redis://u:***@h:1");
    }
}
