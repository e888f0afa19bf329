//! The report: the load's records joined with the simulators' arrival logs, as markdown and SVG.
//!
//! For each target, `DIR/TARGET/` holds what `run.sh` collected: `label` (the row's name),
//! `records.tsv` (one line per request, see `load::Record`), `arrivals/SERVER.log` (one line per
//! model request a simulator received: `unix_ms seq id nth fate`), `events.tsv` (`unix_ms kill|start
//! SERVER`, when the script killed and restarted a server) and, for switchyard, `access.log` and
//! `metrics.txt`. A request that was not answered correctly is explained by what it met on its way:
//! the fates it drew at each model server, in order, whether a server was killed while it was
//! there, whether it was sent while a server was down, and (switchyard) how many tries it made.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::chart::{self, Bar};
use super::stats::percentile;

/// One line of `records.tsv`.
struct Rec {
    index: u64,
    sent_ms: u128,
    stream: bool,
    outcome: String,
    detail: String,
    ttft: Option<Duration>,
    total: Duration,
}

/// One model request a simulator received.
struct Arrival {
    ms: u128,
    server: String,
    fate: String,
}

/// A server the script killed at `from` and started again at `to`.
struct Death {
    server: String,
    from: u128,
    to: u128,
}

/// One target's run, read back.
struct Run {
    name: String,
    label: String,
    records: Vec<Rec>,
    arrivals: HashMap<u64, Vec<Arrival>>,
    fates: BTreeMap<String, usize>,
    deaths: Vec<Death>,
    tries: HashMap<u64, u64>,
    metrics: Vec<String>,
}

pub fn main(args: &[String]) -> Result<(), String> {
    let o = super::options(args, &["dir", "targets", "svg", "out", "title"])?;
    let dir = PathBuf::from(o.get("dir").ok_or("--dir is required")?);
    let targets = o.get("targets").ok_or("--targets is required")?;
    let mut runs = Vec::new();
    for name in targets.split(',').filter(|t| !t.is_empty()) {
        runs.push(read_run(&dir.join(name), name)?);
    }
    let text = markdown(&runs);
    match o.get("out") {
        Some(path) => std::fs::write(path, &text).map_err(|e| format!("{path}: {e}"))?,
        None => print!("{text}"),
    }
    if let Some(path) = o.get("svg") {
        let title = o
            .get("title")
            .copied()
            .unwrap_or("Availability under chaos");
        let bars: Vec<Bar> = runs.iter().map(bar).collect();
        std::fs::write(path, chart::svg(title, &bars)).map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_run(dir: &Path, name: &str) -> Result<Run, String> {
    let label = read(&dir.join("label")).map_or(name.to_owned(), |l| l.trim().to_owned());
    let records = read(&dir.join("records.tsv"))?
        .lines()
        .filter_map(parse_record)
        .collect();
    let mut run = Run {
        name: name.to_owned(),
        label,
        records,
        arrivals: HashMap::new(),
        fates: BTreeMap::new(),
        deaths: Vec::new(),
        tries: HashMap::new(),
        metrics: Vec::new(),
    };
    let logs =
        std::fs::read_dir(dir.join("arrivals")).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in logs.flatten() {
        let path = entry.path();
        let Some(server) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            continue;
        };
        for line in read(&path)?.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            // unix_ms seq id nth fate; id "-" is a probe of the script's, not a client request.
            let (Some(ms), Some(id), Some(fate)) = (
                f.first().and_then(|v| v.parse().ok()),
                f.get(2).and_then(|v| v.parse::<u64>().ok()),
                f.get(4),
            ) else {
                continue;
            };
            let fate = fate.split('@').next().unwrap_or(fate).to_owned();
            *run.fates.entry(fate.clone()).or_default() += 1;
            run.arrivals.entry(id).or_default().push(Arrival {
                ms,
                server: server.clone(),
                fate,
            });
        }
    }
    for list in run.arrivals.values_mut() {
        // Two arrivals of one request in the same millisecond: the first ended within it, so it
        // was a fault that answers at once (a reset or a status), and goes first.
        list.sort_by_key(|a| (a.ms, !instant(&a.fate)));
    }
    if let Ok(events) = read(&dir.join("events.tsv")) {
        for line in events.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            let (Some(ms), Some(what), Some(server)) = (
                f.first().and_then(|v| v.parse::<u128>().ok()),
                f.get(1),
                f.get(2),
            ) else {
                continue;
            };
            match *what {
                "kill" => run.deaths.push(Death {
                    server: (*server).to_owned(),
                    from: ms,
                    to: u128::MAX,
                }),
                "start" => {
                    if let Some(d) = run.deaths.iter_mut().rev().find(|d| d.server == *server) {
                        d.to = ms;
                    }
                }
                _ => {}
            }
        }
    }
    if let Ok(log) = read(&dir.join("access.log")) {
        for line in log.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let id = v["request_id"]
                .as_str()
                .and_then(|s| s.strip_prefix("chaos-"))
                .and_then(|s| s.parse().ok());
            if let (Some(id), Some(tries)) = (id, v["tries"].as_u64()) {
                run.tries.insert(id, tries);
            }
        }
    }
    if let Ok(metrics) = read(&dir.join("metrics.txt")) {
        run.metrics = metrics
            .lines()
            .filter(|l| {
                [
                    "switchyard_upstream_retry_total{",
                    "switchyard_fallback_response_total{",
                    "switchyard_circuit_breaker_open_total{",
                ]
                .iter()
                .any(|m| l.starts_with(m))
            })
            .filter(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) != Some(0.0))
            .map(str::to_owned)
            .collect();
    }
    Ok(run)
}

/// A fate that ends the try as soon as it is drawn.
fn instant(fate: &str) -> bool {
    fate == "reset" || fate.starts_with("status")
}

fn parse_record(line: &str) -> Option<Rec> {
    let f: Vec<&str> = line.split('\t').collect();
    let micros = |v: &str| v.parse::<u64>().ok().map(Duration::from_micros);
    Some(Rec {
        index: f.first()?.parse().ok()?,
        sent_ms: f.get(1)?.parse().ok()?,
        stream: *f.get(2)? == "1",
        outcome: (*f.get(4)?).to_owned(),
        detail: (*f.get(5)?).to_owned(),
        ttft: micros(f.get(7)?),
        total: micros(f.get(8)?)?,
    })
}

/// Counts of one run.
struct Counts {
    n: usize,
    ok: usize,
    fallback: usize,
    error: usize,
}

fn counts(run: &Run) -> Counts {
    let count = |o: &str| run.records.iter().filter(|r| r.outcome == o).count();
    Counts {
        n: run.records.len(),
        ok: count("ok"),
        fallback: count("fallback"),
        error: count("error"),
    }
}

fn bar(run: &Run) -> Bar {
    let c = counts(run);
    let n = c.n.max(1) as f64;
    Bar {
        label: run.label.clone(),
        ok: c.ok as f64 / n,
        fallback: c.fallback as f64 / n,
        error: c.error as f64 / n,
    }
}

fn markdown(runs: &[Run]) -> String {
    let mut s = String::new();
    s.push_str("| target | requests | answered correctly | fallback answers | errors | TTFT p50 | TTFT p99 | reached a model server 2+ times | model requests per client request |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for run in runs {
        let c = counts(run);
        let mut ttft: Vec<Duration> = run
            .records
            .iter()
            .filter(|r| r.outcome == "ok")
            .filter_map(|r| r.ttft)
            .collect();
        ttft.sort_unstable();
        let ids: Vec<u64> = run.records.iter().map(|r| r.index).collect();
        let seen = |id: &u64| run.arrivals.get(id).map_or(0, Vec::len);
        let repeated = ids.iter().filter(|id| seen(id) > 1).count();
        let model_requests: usize = ids.iter().map(seen).sum();
        let _ = writeln!(
            s,
            "| {} | {} | **{}** | {} | {} | {} | {} | {} ({}) | {:.2} |",
            run.label,
            thousands(c.n),
            share(c.ok, c.n),
            counted(c.fallback, c.n),
            counted(c.error, c.n),
            time(percentile(&ttft, 50.0)),
            time(percentile(&ttft, 99.0)),
            thousands(repeated),
            share(repeated, c.n),
            model_requests as f64 / c.n.max(1) as f64,
        );
    }
    s.push_str("\nThe fates the model servers drew, by model request (the same schedule for every target; the counts differ with where each target sent its requests and its retries):\n\n");
    let mut names: Vec<&String> = runs.iter().flat_map(|r| r.fates.keys()).collect();
    names.sort();
    names.dedup();
    let _ = writeln!(
        s,
        "| target | {} |",
        names
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(s, "|---|{}", "---:|".repeat(names.len()));
    for run in runs {
        let cells: Vec<String> = names
            .iter()
            .map(|n| thousands(run.fates.get(*n).copied().unwrap_or(0)))
            .collect();
        let _ = writeln!(s, "| {} | {} |", run.label, cells.join(" | "));
    }
    for run in runs {
        failures(&mut s, run);
    }
    s
}

/// The table of what the requests that were not answered correctly met.
fn failures(s: &mut String, run: &Run) {
    let failed: Vec<&Rec> = run.records.iter().filter(|r| r.outcome != "ok").collect();
    let _ = writeln!(
        s,
        "\n#### {}: the {} requests not answered correctly\n\nGrouped by what they met: the fates they drew at the model servers they reached, in order (`(killed)`: the server was killed while the request was there), and which servers were down when they were sent.\n",
        run.label,
        thousands(failed.len())
    );
    if failed.is_empty() {
        return;
    }
    let with_tries = !run.tries.is_empty();
    let mut groups: BTreeMap<(String, String, String, String, String), Vec<u64>> = BTreeMap::new();
    for r in &failed {
        let key = (
            if r.stream { "stream" } else { "plain" }.to_owned(),
            format!("{} ({})", r.outcome, r.detail),
            chain(run, r),
            down_during(run, r),
            run.tries
                .get(&r.index)
                .map_or("-".into(), |t| t.to_string()),
        );
        groups.entry(key).or_default().push(r.index);
    }
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
    s.push_str("| requests | kind | the client got | what the model servers did, in order | sent while down |");
    s.push_str(if with_tries { " tries |" } else { "" });
    s.push_str(" e.g. request |\n|---:|---|---|---|---|");
    s.push_str(if with_tries { "---:|" } else { "" });
    s.push_str("---|\n");
    const SHOWN: usize = 20;
    for ((kind, got, chain, down, tries), ids) in groups.iter().take(SHOWN) {
        let _ = write!(s, "| {} | {kind} | {got} | {chain} | {down} |", ids.len());
        if with_tries {
            let _ = write!(s, " {tries} |");
        }
        let _ = writeln!(s, " {} |", ids[0]);
    }
    if groups.len() > SHOWN {
        let rest: usize = groups.iter().skip(SHOWN).map(|g| g.1.len()).sum();
        let _ = writeln!(
            s,
            "| {rest} | | {} other combinations | | |{}",
            groups.len() - SHOWN,
            if with_tries { " |" } else { "" }
        );
    }
    if !run.metrics.is_empty() {
        let _ = writeln!(
            s,
            "\n{} metrics at the end of its run (non-zero):\n\n```",
            run.name
        );
        for line in &run.metrics {
            let _ = writeln!(s, "{line}");
        }
        s.push_str("```\n");
    }
}

/// The fates request `r` drew, in order (`killed` when its server was killed while it was there).
fn chain(run: &Run, r: &Rec) -> String {
    let end = r.sent_ms + r.total.as_millis();
    let Some(list) = run.arrivals.get(&r.index) else {
        return "none reached".into();
    };
    let steps: Vec<String> = list
        .iter()
        .map(|a| {
            let killed = run
                .deaths
                .iter()
                .any(|d| d.server == a.server && d.from >= a.ms && d.from <= end);
            if killed {
                format!("{} (killed)", a.fate)
            } else {
                a.fate.clone()
            }
        })
        .collect();
    steps.join(" → ")
}

/// The servers that were down (killed, not yet back) when `r` was sent.
fn down_during(run: &Run, r: &Rec) -> String {
    let down: Vec<&str> = run
        .deaths
        .iter()
        .filter(|d| d.from <= r.sent_ms && r.sent_ms < d.to)
        .map(|d| d.server.as_str())
        .collect();
    if down.is_empty() {
        "".into()
    } else {
        down.join(", ")
    }
}

fn share(part: usize, whole: usize) -> String {
    format!("{:.2} %", 100.0 * part as f64 / whole.max(1) as f64)
}

fn counted(part: usize, whole: usize) -> String {
    if part == 0 {
        return "0".into();
    }
    format!("{} ({})", thousands(part), share(part, whole))
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn time(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}
