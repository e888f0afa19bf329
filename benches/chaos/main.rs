//! Availability under chaos: the load generator and the report of `benches/chaos/run.sh`.
//!
//! Why: the case for switchyard is that users stop seeing errors while model servers misbehave.
//! `run.sh` puts the same seeded faults on the same simulated model servers behind switchyard,
//! nginx and HAProxy (and straight at one server, the baseline), drives each with this program's
//! load, and asks it for one table: the share of client requests answered correctly and
//! completely, fallbacks counted apart, time to first token, and how many requests reached a
//! model server more than once.
//!
//! How to read: `load` prints one line per run,
//! `CHAOS target=NAME requests=N ok=N fallback=N error=N ttft_p50_us=N ttft_p99_us=N late=N`,
//! and writes one record per request (tab-separated, see [`load::Record`]). `report` joins those
//! records with the simulators' arrival logs (which server saw which request, and the fate it
//! drew there) and prints the markdown table, a chart (SVG) and, per target, what the requests
//! that were not answered correctly met on their way.
//!
//! Usage (run.sh does this): `cargo bench --bench chaos -- load --url URL --target NAME
//! --records FILE [--duration 90s] [--rate 60] [--seed 1] [--timeout 20s]`, then
//! `cargo bench --bench chaos -- report --dir DIR --targets direct,nginx,... [--svg FILE]`.

#![forbid(unsafe_code)]

mod chart;
mod load;
mod report;
#[path = "../common/stats.rs"]
mod stats;

use std::process::ExitCode;

const USAGE: &str = "usage: chaos load --url URL --target NAME --records FILE [--duration 90s] \
[--rate 60] [--seed 1] [--timeout 20s] [--stream-share 0.67] [--tokens 8-40] [--max-inflight 1024]
       chaos report --dir DIR --targets LIST [--svg FILE] [--out FILE]
(benches/chaos/run.sh runs both; see benches/README.md)";

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; without a mode there is nothing to measure on its own.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let result = match args.first().map(String::as_str) {
        Some("load") => load::main(&args[1..]),
        Some("report") => report::main(&args[1..]),
        None => {
            eprintln!("chaos: nothing to do alone; run benches/chaos/run.sh\n{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(format!("unknown mode {other:?}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chaos: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Pairs `--name value` from `args`; every name must be one of `known`.
fn options<'a>(
    args: &'a [String],
    known: &[&str],
) -> Result<std::collections::HashMap<&'a str, &'a str>, String> {
    let mut out = std::collections::HashMap::new();
    let mut it = args.iter();
    while let Some(name) = it.next() {
        let key = name
            .strip_prefix("--")
            .filter(|k| known.contains(k))
            .ok_or_else(|| format!("unknown argument {name:?}"))?;
        let value = it.next().ok_or_else(|| format!("{name} needs a value"))?;
        out.insert(key, value.as_str());
    }
    Ok(out)
}
