//! Which requests arrived, by their `x-chaos-id`, and an optional log of every arrival.
//!
//! A benchmark that retries on a balancer wants to know how many client requests reached a model
//! server more than once. The load generator puts a unique id on each request; the simulator counts
//! arrivals per id (for the fate draw in [`super::chaos`] and for `GET /sim/arrivals`), and can
//! append one line per arrival to a file, which outlives the process when a test kills it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// Ids remembered at most; later new ids are counted as arrivals but not by id.
pub const ARRIVAL_IDS_KEPT: usize = 1_000_000;

/// Arrivals by id, and the arrival log.
#[derive(Debug)]
pub(crate) struct Arrivals {
    by_id: Mutex<HashMap<String, u64>>,
    log: Option<File>,
}

impl Arrivals {
    /// Opens (appending, creating it if needed) the log at `log`, when one is given.
    pub(crate) fn open(log: Option<&Path>) -> io::Result<Arrivals> {
        let log = match log {
            Some(path) => Some(File::options().create(true).append(true).open(path)?),
            None => None,
        };
        Ok(Arrivals {
            by_id: Mutex::new(HashMap::new()),
            log,
        })
    }

    /// Counts an arrival of `id` and returns which arrival of it this is (1 for the first), or
    /// `None` when the id is not counted (no id, or too many ids already).
    pub(crate) fn arrive(&self, id: &str) -> Option<u64> {
        let mut by_id = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = by_id.get_mut(id) {
            *n += 1;
            return Some(*n);
        }
        if by_id.len() >= ARRIVAL_IDS_KEPT {
            return None;
        }
        by_id.insert(id.to_owned(), 1);
        Some(1)
    }

    /// Arrivals of `id` so far.
    pub(crate) fn count(&self, id: &str) -> u64 {
        let by_id = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        by_id.get(id).copied().unwrap_or(0)
    }

    /// Appends `unix_ms<TAB>seq<TAB>id<TAB>nth<TAB>fate` to the log, when there is one. `id` is
    /// `-` for a request without one. The line goes out in one unbuffered write to a file opened
    /// for appending, so nothing is lost when the process is killed, and lines of concurrent
    /// requests never interleave. The write is a blocking call on the request's task: a few
    /// microseconds into the page cache, acceptable for a simulator.
    pub(crate) fn log(&self, seq: u64, id: Option<&str>, nth: u64, fate: &dyn std::fmt::Display) {
        let Some(mut file) = self.log.as_ref() else {
            return;
        };
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let line = format!("{ms}\t{seq}\t{}\t{nth}\t{fate}\n", id.unwrap_or("-"));
        if let Err(e) = file.write_all(line.as_bytes()) {
            log::warn!("arrival log: {e}");
        }
    }

    /// `GET /sim/arrivals`: `{"ids": N, "repeated": N, "arrivals": {"id": count, ...}}`, where
    /// `repeated` counts the ids that arrived more than once.
    pub(crate) fn json(&self) -> Value {
        let by_id = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        let repeated = by_id.values().filter(|&&n| n > 1).count();
        json!({"ids": by_id.len(), "repeated": repeated, "arrivals": &*by_id})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_arrivals_count_by_id_and_log_every_arrival() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("arrivals.log");
        let arrivals = Arrivals::open(Some(&path)).expect("open");
        assert_eq!(arrivals.arrive("a"), Some(1));
        assert_eq!(arrivals.arrive("b"), Some(1));
        assert_eq!(arrivals.arrive("a"), Some(2));
        assert_eq!((arrivals.count("a"), arrivals.count("c")), (2, 0));
        arrivals.log(3, Some("a"), 2, &"cut@4");
        arrivals.log(4, None, 4, &"ok");
        let text = std::fs::read_to_string(&path).expect("read log");
        let fields: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split('\t').skip(1).collect())
            .collect();
        assert_eq!(fields, [["3", "a", "2", "cut@4"], ["4", "-", "4", "ok"]]);
        let v = arrivals.json();
        assert_eq!(
            (v["ids"].as_u64(), v["repeated"].as_u64()),
            (Some(2), Some(1))
        );
        assert_eq!(v["arrivals"]["a"], 2);

        // A second server on the same file (a restart) appends instead of truncating.
        drop(arrivals);
        Arrivals::open(Some(&path))
            .expect("reopen")
            .log(1, Some("c"), 1, &"ok");
        let text = std::fs::read_to_string(&path).expect("read log");
        assert_eq!(text.lines().count(), 3);
    }

    #[test]
    fn sim_arrivals_without_a_log_still_count() {
        let arrivals = Arrivals::open(None).expect("no file to open");
        arrivals.log(1, Some("a"), 1, &"ok");
        assert_eq!(arrivals.arrive("a"), Some(1));
    }
}
