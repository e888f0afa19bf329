//! The load a peer reports about itself (`clusters.NAME.load_report`): its own queue, the
//! requests it is running, and how full its KV cache is, read from the Prometheus text of vLLM
//! (`vllm:num_requests_waiting`, `vllm:num_requests_running`, `vllm:kv_cache_usage_perc`, or
//! `vllm:gpu_cache_usage_perc` of older releases) and SGLang (`sglang:num_queue_reqs`,
//! `sglang:num_running_reqs`, `sglang:token_usage`).
//!
//! A model server's queue says more about its load than our in-flight count: it counts the
//! requests of every balancer in front of it, and it grows when generation slows down. The
//! report is written by the scraping service and read on every pick, so it lives in atomics
//! beside the peer's other state ([`crate::peer::PeerState::load`]); a report older than
//! [`STALE_AFTER`] intervals is not used.

use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

/// A report is used for this many scrape intervals after it was taken.
pub const STALE_AFTER: u32 = 3;

/// What a peer last said about its load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    /// Requests queued, not yet scheduled (summed over the models it serves).
    pub waiting: u64,
    /// Requests being generated.
    pub running: u64,
    /// KV-cache use, 0 to 1 (the highest over its models), when it says.
    pub kv_usage: Option<f64>,
}

/// The latest report of one peer.
#[derive(Debug)]
pub struct LoadCell {
    waiting: AtomicU64,
    running: AtomicU64,
    /// `f64` bits; `u64::MAX` = not reported.
    kv: AtomicU64,
    /// When it was taken, in ms since `epoch`, plus one; 0 = never.
    at_ms: AtomicU64,
    epoch: Instant,
}

impl Default for LoadCell {
    fn default() -> Self {
        LoadCell {
            waiting: AtomicU64::new(0),
            running: AtomicU64::new(0),
            kv: AtomicU64::new(u64::MAX),
            at_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl LoadCell {
    /// Record `r`, taken at `now`.
    pub fn store(&self, r: Report, now: Instant) {
        self.waiting.store(r.waiting, Ordering::Relaxed);
        self.running.store(r.running, Ordering::Relaxed);
        let kv = r.kv_usage.map_or(u64::MAX, f64::to_bits);
        self.kv.store(kv, Ordering::Relaxed);
        let ms = now.saturating_duration_since(self.epoch).as_millis();
        let ms = u64::try_from(ms).unwrap_or(u64::MAX - 1);
        self.at_ms.store(ms.saturating_add(1), Ordering::Relaxed);
    }

    /// The latest report and its age at `now`, if there is one.
    pub fn latest(&self, now: Instant) -> Option<(Report, std::time::Duration)> {
        let at = self.at_ms.load(Ordering::Relaxed);
        if at == 0 {
            return None;
        }
        let taken = self.epoch + std::time::Duration::from_millis(at - 1);
        let kv = self.kv.load(Ordering::Relaxed);
        let r = Report {
            waiting: self.waiting.load(Ordering::Relaxed),
            running: self.running.load(Ordering::Relaxed),
            kv_usage: (kv != u64::MAX).then(|| f64::from_bits(kv)),
        };
        Some((r, now.saturating_duration_since(taken)))
    }

    /// The latest report if it is younger than `max_age` at `now`.
    pub fn fresh(&self, now: Instant, max_age: std::time::Duration) -> Option<Report> {
        self.latest(now)
            .filter(|(_, age)| *age <= max_age)
            .map(|(r, _)| r)
    }
}

/// The load in a Prometheus text page, or `None` when it has none of the known gauges.
pub fn parse(text: &str) -> Option<Report> {
    // waiting, running (summed over series), KV use (the highest).
    let mut found: [Option<f64>; 3] = [None; 3];
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
        let name = &line[..name_end];
        let slot = match name {
            "vllm:num_requests_waiting" | "sglang:num_queue_reqs" => 0,
            "vllm:num_requests_running" | "sglang:num_running_reqs" => 1,
            "vllm:kv_cache_usage_perc" | "vllm:gpu_cache_usage_perc" | "sglang:token_usage" => 2,
            _ => continue,
        };
        let rest = &line[name_end..];
        let rest = match rest.strip_prefix('{') {
            Some(labels) => match labels.rfind('}') {
                Some(end) => &labels[end + 1..],
                None => continue,
            },
            None => rest,
        };
        let Some(Ok(v)) = rest.split_whitespace().next().map(str::parse::<f64>) else {
            continue;
        };
        if !v.is_finite() || v < 0.0 {
            continue;
        }
        found[slot] = Some(match found[slot] {
            None => v,
            Some(old) if slot == 2 => old.max(v),
            Some(old) => old + v,
        });
    }
    let [waiting, running, kv] = found;
    if found.iter().all(Option::is_none) {
        return None;
    }
    let count = |v: Option<f64>| v.map_or(0, |v| v.round() as u64);
    Some(Report {
        waiting: count(waiting),
        running: count(running),
        kv_usage: kv.map(|v| v.min(1.0)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_vllm_and_sglang_pages() {
        let vllm = "# HELP vllm:num_requests_waiting Requests waiting.\n\
            # TYPE vllm:num_requests_waiting gauge\n\
            vllm:num_requests_waiting{engine=\"0\",model_name=\"llama\"} 7.0\n\
            vllm:num_requests_waiting{engine=\"1\",model_name=\"llama\"} 2.0\n\
            vllm:num_requests_running{model_name=\"llama\"} 12.0\n\
            vllm:kv_cache_usage_perc{model_name=\"llama\"} 0.42\n\
            vllm:time_to_first_token_seconds_bucket{le=\"0.1\",model_name=\"llama\"} 3.0\n";
        assert_eq!(
            parse(vllm),
            Some(Report {
                waiting: 9,
                running: 12,
                kv_usage: Some(0.42)
            })
        );
        let sglang = "sglang:num_queue_reqs{model_name=\"qwen\"} 4\n\
            sglang:num_running_reqs{model_name=\"qwen\"} 30\n\
            sglang:token_usage{model_name=\"qwen\"} 0.97 1700000000000\n";
        assert_eq!(
            parse(sglang),
            Some(Report {
                waiting: 4,
                running: 30,
                kv_usage: Some(0.97)
            })
        );
        let old = "vllm:gpu_cache_usage_perc 1.0\nvllm:num_requests_waiting NaN\n";
        assert_eq!(
            parse(old),
            Some(Report {
                waiting: 0,
                running: 0,
                kv_usage: Some(1.0)
            })
        );
        assert_eq!(parse("process_cpu_seconds_total 3\n"), None);
        assert_eq!(parse("vllm:num_requests_waiting{broken 3\n"), None);
        assert_eq!(parse(""), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_report_goes_stale() {
        let cell = LoadCell::default();
        assert_eq!(cell.fresh(Instant::now(), Duration::from_secs(3)), None);
        let r = Report {
            waiting: 5,
            running: 1,
            kv_usage: None,
        };
        cell.store(r, Instant::now());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(cell.fresh(Instant::now(), Duration::from_secs(3)), Some(r));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(cell.fresh(Instant::now(), Duration::from_secs(3)), None);
        assert!(cell.latest(Instant::now()).is_some());
    }
}
