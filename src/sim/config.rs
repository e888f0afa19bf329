//! Configuration of one simulated model server.
//!
//! Two layers, as elsewhere in switchyard: [`SimArgs`] is what a person types on the command line (strings and
//! humantime durations), [`SimConfig`] is the typed value the server runs with. Integration tests build a
//! [`SimConfig`] directly; `switchyard sim` goes through [`SimArgs::into_config`], which rejects flag combinations
//! that would otherwise be silently ignored.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::chaos::{Chaos, ChaosShares};

/// How a simulated backend misbehaves when a request is selected for failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Answer with this HTTP status and an OpenAI-style error body (429 and 503 also carry `retry-after: 1`).
    Status(u16),
    /// Close the connection without sending any response.
    Reset,
    /// Never answer; hold the connection until the client goes away.
    Hang,
}

impl Failure {
    /// Packs the failure into a `u32` so it can live in an atomic and be changed at runtime without a lock.
    pub(crate) fn encode(f: Option<Failure>) -> u32 {
        match f {
            None => 0,
            Some(Failure::Reset) => 1,
            Some(Failure::Hang) => 2,
            Some(Failure::Status(s)) => 0x1_0000 | u32::from(s),
        }
    }

    /// Inverse of [`Failure::encode`].
    pub(crate) fn decode(v: u32) -> Option<Failure> {
        match v {
            0 => None,
            1 => Some(Failure::Reset),
            2 => Some(Failure::Hang),
            // The mask keeps only the low 16 bits, so the cast cannot truncate anything meaningful.
            v => Some(Failure::Status((v & 0xFFFF) as u16)),
        }
    }
}

/// Runtime configuration of a simulated model server.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Instance name, reported in `x-sim-instance`, `served_by` and `/health`. Empty means `sim-<bound port>`.
    pub name: String,
    /// Delay before the first token (default 50ms).
    pub ttft: Duration,
    /// Delay between consecutive tokens (default 20ms).
    pub token_delay: Duration,
    /// Tokens per answer (default 16).
    pub tokens: usize,
    /// Failure applied to model requests selected by `fail_every` (default none).
    pub fail: Option<Failure>,
    /// Apply `fail` to every K-th model request only; 1 (the default) means all, 0 is treated as 1.
    pub fail_every: u64,
    /// Status answered by `GET /health` (default 200).
    pub health_status: u16,
    /// Seeded random faults for requests that no header or `fail` decided (default none).
    pub chaos: Option<Chaos>,
    /// Append one line per model request arrival to this file (default none).
    pub arrivals_log: Option<PathBuf>,
    /// Streams report their usage only when asked (`stream_options.include_usage`), in a chunk of
    /// their own with no choices, as OpenAI does; off (the default), the last chunk always
    /// carries it, as some servers do.
    pub usage_when_asked: bool,
    /// Prompt-prefix blocks the simulated KV cache holds (default 0: no prefix cache).
    pub prefix_cache_blocks: usize,
    /// Prompt bytes per cache block (default 256).
    pub block_bytes: usize,
    /// Time to the first token added per prompt block not in the cache; a cached block costs a
    /// sixteenth of it (default 0).
    pub prefill_per_block: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            name: String::new(),
            ttft: Duration::from_millis(50),
            token_delay: Duration::from_millis(20),
            tokens: 16,
            fail: None,
            fail_every: 1,
            health_status: 200,
            chaos: None,
            arrivals_log: None,
            usage_when_asked: false,
            prefix_cache_blocks: 0,
            block_bytes: 256,
            prefill_per_block: Duration::ZERO,
        }
    }
}

/// The `--fail-mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailMode {
    /// Close the connection with no response.
    Reset,
    /// Never answer.
    Hang,
    /// Answer with `--fail-status`.
    Status,
}

/// Command-line flags of `switchyard sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Instance name (default `sim-<port>`).
    #[arg(long)]
    pub name: Option<String>,
    /// Latency to the first token, e.g. `50ms`.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    pub ttft: Duration,
    /// Delay between tokens, e.g. `20ms`.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    pub token_delay: Duration,
    /// Tokens per answer.
    #[arg(long, default_value_t = 16)]
    pub tokens: usize,
    /// Answer failing requests with this status (implies `--fail-mode status`).
    #[arg(long, value_parser = clap::value_parser!(u16).range(100..=599))]
    pub fail_status: Option<u16>,
    /// How failing requests fail.
    #[arg(long, value_enum)]
    pub fail_mode: Option<FailMode>,
    /// Fail only every K-th model request (1 = all).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub fail_every: u64,
    /// Status answered by `GET /health`.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(100..=599))]
    pub health_status: u16,
    /// Seeded random faults, each with the share of requests it hits, e.g.
    /// `reset=0.02,status503=0.03,hang=0.01,cut=0.02,slow=0.02`. A request's fate follows from
    /// the seed, this instance's name and the request's `x-chaos-id` (else its arrival number).
    #[arg(long, value_name = "SCHEDULE")]
    pub chaos: Option<ChaosShares>,
    /// Seed of the `--chaos` schedule.
    #[arg(long, default_value_t = 1, requires = "chaos")]
    pub chaos_seed: u64,
    /// First-token delay of the `slow` fault.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration, requires = "chaos")]
    pub chaos_slow: Duration,
    /// Append `unix_ms seq id nth fate` (tab-separated) for every model request to this file.
    #[arg(long, value_name = "FILE")]
    pub arrivals_log: Option<PathBuf>,
    /// Prompt-prefix blocks the simulated KV cache holds (0: no prefix cache).
    #[arg(long, default_value_t = 0)]
    pub prefix_cache_blocks: usize,
    /// Prompt bytes per cache block.
    #[arg(long, default_value_t = 256, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub block_bytes: usize,
    /// Time to the first token per prompt block not in the cache, e.g. `2ms`.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub prefill_per_block: Duration,
}

/// A flag combination that cannot be honoured as written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SimArgsError {
    /// `--fail-mode status` needs a status to answer with.
    #[error("--fail-mode status requires --fail-status")]
    MissingFailStatus,
    /// `--fail-status` would be ignored by a reset or hang failure.
    #[error("--fail-status {status} conflicts with --fail-mode {mode:?}")]
    StatusWithMode {
        /// The status given.
        status: u16,
        /// The non-status mode given.
        mode: FailMode,
    },
}

impl SimArgs {
    /// Converts the flags into the listen address and the typed configuration.
    pub fn into_config(self) -> Result<(SocketAddr, SimConfig), SimArgsError> {
        let fail = match (self.fail_mode, self.fail_status) {
            (None, None) => None,
            (None | Some(FailMode::Status), Some(s)) => Some(Failure::Status(s)),
            (Some(FailMode::Status), None) => return Err(SimArgsError::MissingFailStatus),
            (Some(mode), Some(status)) => {
                return Err(SimArgsError::StatusWithMode { status, mode })
            }
            (Some(FailMode::Reset), None) => Some(Failure::Reset),
            (Some(FailMode::Hang), None) => Some(Failure::Hang),
        };
        let name = self.name.unwrap_or_default();
        let cfg = SimConfig {
            name,
            ttft: self.ttft,
            token_delay: self.token_delay,
            tokens: self.tokens,
            fail,
            fail_every: self.fail_every,
            health_status: self.health_status,
            chaos: self.chaos.map(|shares| Chaos {
                seed: self.chaos_seed,
                shares,
                slow: self.chaos_slow,
            }),
            arrivals_log: self.arrivals_log,
            usage_when_asked: false,
            prefix_cache_blocks: self.prefix_cache_blocks,
            block_bytes: self.block_bytes,
            prefill_per_block: self.prefill_per_block,
        };
        Ok((self.listen, cfg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    fn parse(args: &[&str]) -> Result<(SocketAddr, SimConfig), SimArgsError> {
        let argv = std::iter::once("sim").chain(args.iter().copied());
        Cli::try_parse_from(argv)
            .expect("flags parse")
            .sim
            .into_config()
    }

    #[test]
    fn sim_args_defaults_and_durations() {
        let (addr, cfg) = parse(&["--ttft", "1s", "--token-delay", "5ms"]).expect("valid");
        assert_eq!(addr, "127.0.0.1:8000".parse::<SocketAddr>().expect("addr"));
        assert_eq!(cfg.ttft, Duration::from_secs(1));
        assert_eq!(cfg.token_delay, Duration::from_millis(5));
        assert_eq!(cfg.tokens, 16);
        assert_eq!(cfg.fail, None);
        assert_eq!(cfg.name, "");
    }

    #[test]
    fn sim_args_failure_combinations() {
        let (_, cfg) = parse(&["--fail-status", "503", "--fail-every", "3"]).expect("valid");
        assert_eq!(cfg.fail, Some(Failure::Status(503)));
        assert_eq!(cfg.fail_every, 3);
        let (_, cfg) = parse(&["--fail-mode", "hang"]).expect("valid");
        assert_eq!(cfg.fail, Some(Failure::Hang));
        assert_eq!(
            parse(&["--fail-mode", "status"]).err(),
            Some(SimArgsError::MissingFailStatus)
        );
        assert!(matches!(
            parse(&["--fail-mode", "reset", "--fail-status", "500"]),
            Err(SimArgsError::StatusWithMode { status: 500, .. })
        ));
        assert!(Cli::try_parse_from(["sim", "--fail-every", "0"]).is_err());
    }

    #[test]
    fn sim_args_chaos_schedule() {
        let (_, cfg) = parse(&[
            "--chaos",
            "reset=0.5,slow=0.25",
            "--chaos-seed",
            "9",
            "--chaos-slow",
            "2s",
            "--arrivals-log",
            "/tmp/a.log",
        ])
        .expect("valid");
        let chaos = cfg.chaos.expect("a schedule");
        assert_eq!((chaos.seed, chaos.slow), (9, Duration::from_secs(2)));
        assert_eq!(chaos.shares.shares().len(), 2);
        assert_eq!(cfg.arrivals_log, Some(PathBuf::from("/tmp/a.log")));
        let (_, cfg) = parse(&[]).expect("valid");
        assert_eq!((cfg.chaos, cfg.arrivals_log), (None, None));
        // A bad schedule, or a seed without a schedule, is refused rather than ignored.
        assert!(Cli::try_parse_from(["sim", "--chaos", "reset=2"]).is_err());
        assert!(Cli::try_parse_from(["sim", "--chaos-seed", "3"]).is_err());
    }

    #[test]
    fn sim_failure_encoding_round_trips() {
        for f in [
            None,
            Some(Failure::Reset),
            Some(Failure::Hang),
            Some(Failure::Status(429)),
        ] {
            assert_eq!(Failure::decode(Failure::encode(f)), f);
        }
    }
}
