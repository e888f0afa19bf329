//! The access log: one JSON line per request, to a file or stderr, off by default.
//!
//! The request path never waits on the disk. Lines go through a bounded channel to a writer
//! thread of their own; when the channel is full the line is dropped and counted in
//! `switchyard_access_log_dropped_total`. The writer batches what is queued and flushes when the
//! queue is empty, so a quiet log is on disk within one write.
//!
//! What a line holds is fixed by [`Entry`]: no header values, no query string, no body. The
//! `authorization` header, API keys and prompts therefore never reach the log.
//!
//! Log rotation: [`AccessLog::reopen`] reopens the file by path (the config reload calls it), so
//! logrotate's `create` plus a reload works; `copytruncate` works without anything, as the file
//! is opened in append mode.

use crate::config::AccessLogConfig;
use arc_swap::ArcSwapOption;
use prometheus::IntCounter;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

/// Lines queued for the writer at most (a few MiB); more are dropped and counted.
pub const QUEUE_LINES: usize = 16 * 1024;

/// One request, as logged. Field order is the order in the line.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// When the request arrived, RFC 3339 UTC with milliseconds.
    pub time: String,
    pub request_id: &'a str,
    /// Client address (`IP:port`).
    pub client: Option<SocketAddr>,
    pub method: &'a str,
    /// The path without its query string (which may carry secrets).
    pub path: &'a str,
    pub route: Option<&'a str>,
    pub cluster: Option<&'a str>,
    /// The upstream peer of the last try (`IP:port`).
    pub peer: Option<&'a str>,
    /// Status sent to the client (0 when none could be sent).
    pub status: u16,
    /// Upstream tries.
    pub tries: u32,
    /// Cache outcome; `null` until switchyard has a cache.
    pub cache: Option<&'a str>,
    /// Arrival to the response header going out; `null` when no response was sent.
    pub ttfb_ms: Option<f64>,
    /// Arrival to the first body byte relayed from a peer (a stream's first token); `null` for
    /// answers switchyard wrote itself and answers without a body.
    pub ttft_ms: Option<f64>,
    /// Tokens the answer's `usage` reports; `null` when it reports none.
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub duration_ms: f64,
    /// Response body bytes sent to the client.
    pub bytes_sent: usize,
    /// Request body bytes read from the client.
    pub bytes_received: usize,
    /// Whether the client connection is TLS.
    pub tls: bool,
    /// `"1.1"` or `"2"`.
    pub http: &'static str,
}

enum Msg {
    Line(String),
    Reopen,
}

/// The writer in force.
struct Sink {
    tx: SyncSender<Msg>,
    target: AccessLogConfig,
    dropped: IntCounter,
}

/// The process's access log; off until [`AccessLog::apply`] turns it on.
#[derive(Default)]
pub struct AccessLog {
    sink: ArcSwapOption<Sink>,
}

impl AccessLog {
    /// Is a writer running? Callers skip building an [`Entry`] when not.
    pub fn is_on(&self) -> bool {
        self.sink.load().is_some()
    }

    /// Write to `target` (`None` turns the log off). A writer already writing to the same
    /// target is kept; otherwise a new one opens the file first (so an unwritable path is an
    /// error here, with the old writer still in force) and the old one drains and stops.
    pub fn apply(&self, target: Option<&AccessLogConfig>, dropped: IntCounter) -> io::Result<()> {
        let Some(target) = target else {
            self.sink.store(None);
            return Ok(());
        };
        if let Some(cur) = self.sink.load().as_ref() {
            if &cur.target == target {
                return Ok(());
            }
        }
        let out = Out::open(target)?;
        let (tx, rx) = sync_channel(QUEUE_LINES);
        let thread_dropped = dropped.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(rx, out, thread_dropped))?;
        self.sink.store(Some(Arc::new(Sink {
            tx,
            target: target.clone(),
            dropped,
        })));
        Ok(())
    }

    /// Queue one line; never blocks. Dropped (and counted) when the writer is behind.
    pub fn log(&self, entry: &Entry<'_>) {
        let guard = self.sink.load();
        let Some(sink) = guard.as_ref() else { return };
        let Ok(line) = serde_json::to_string(entry) else {
            sink.dropped.inc();
            return;
        };
        match sink.tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => sink.dropped.inc(),
        }
    }

    /// Reopen the log file by its path (after a rotation moved it away). No-op for stderr.
    pub fn reopen(&self) {
        if let Some(sink) = self.sink.load().as_ref() {
            // Never block the caller on a stuck disk: a full queue skips this reopen.
            if sink.tx.try_send(Msg::Reopen).is_err() {
                log::warn!("access log queue full: reopen skipped");
            }
        }
    }
}

enum Out {
    Stderr,
    File(PathBuf, BufWriter<File>),
}

impl Out {
    fn open(target: &AccessLogConfig) -> io::Result<Out> {
        Ok(match target {
            AccessLogConfig::Stderr => Out::Stderr,
            AccessLogConfig::File(p) => Out::File(p.clone(), BufWriter::new(open_append(p)?)),
        })
    }

    fn write_line(&mut self, line: &str) -> io::Result<()> {
        match self {
            Out::Stderr => {
                let mut e = io::stderr().lock();
                e.write_all(line.as_bytes())?;
                e.write_all(b"\n")
            }
            Out::File(_, w) => {
                w.write_all(line.as_bytes())?;
                w.write_all(b"\n")
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Out::Stderr => Ok(()),
            Out::File(_, w) => w.flush(),
        }
    }

    fn reopen(&mut self) -> io::Result<()> {
        if let Out::File(path, w) = self {
            w.flush()?;
            *w = BufWriter::new(open_append(path)?);
        }
        Ok(())
    }
}

fn open_append(p: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(p)
}

/// The writer thread: until every sender is gone, write what is queued, then flush.
fn write_loop(rx: Receiver<Msg>, mut out: Out, dropped: IntCounter) {
    let mut warned = false;
    let mut handle = |out: &mut Out, msg: Msg| {
        let result = match msg {
            Msg::Line(line) => out.write_line(&line).inspect_err(|_| dropped.inc()),
            Msg::Reopen => out.reopen(),
        };
        if let Err(e) = result {
            if !warned {
                log::error!("access log: {e} (further errors are only counted)");
                warned = true;
            }
        }
    };
    while let Ok(msg) = rx.recv() {
        handle(&mut out, msg);
        while let Ok(msg) = rx.try_recv() {
            handle(&mut out, msg);
        }
        let _ = out.flush();
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn entry(id: &str) -> Entry<'_> {
        Entry {
            time: "2024-01-01T00:00:00.000Z".into(),
            request_id: id,
            client: Some("127.0.0.1:5000".parse().unwrap()),
            method: "POST",
            path: "/v1/chat/completions",
            route: Some("chat"),
            cluster: None,
            peer: None,
            status: 200,
            tries: 1,
            cache: None,
            ttfb_ms: Some(1.5),
            ttft_ms: Some(1.6),
            prompt_tokens: Some(3),
            completion_tokens: None,
            duration_ms: 2.0,
            bytes_sent: 10,
            bytes_received: 20,
            tls: false,
            http: "1.1",
        }
    }

    fn wait_for_lines(path: &Path, n: usize) -> Vec<String> {
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if lines.len() >= n || start.elapsed() > Duration::from_secs(5) {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn writes_json_lines_and_reopens_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::default();
        assert!(!log.is_on());
        let dropped = IntCounter::new("d", "d").unwrap();
        log.apply(Some(&AccessLogConfig::File(path.clone())), dropped.clone())
            .unwrap();
        assert!(log.is_on());
        log.log(&entry("first"));
        let lines = wait_for_lines(&path, 1);
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["request_id"], "first");
        assert_eq!(v["client"], "127.0.0.1:5000");
        assert!(v["cache"].is_null());

        // Rotation by rename: the writer keeps the old file until told to reopen.
        let rotated = dir.path().join("access.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen();
        log.log(&entry("second"));
        let lines = wait_for_lines(&path, 1);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("\"second\""));
        assert_eq!(wait_for_lines(&rotated, 1).len(), 1);
        assert_eq!(dropped.get(), 0);

        log.apply(None, dropped).unwrap();
        assert!(!log.is_on());
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let (tx, _rx) = sync_channel(1);
        let dropped = IntCounter::new("d", "d").unwrap();
        let log = AccessLog::default();
        // A sink whose writer never reads: the second line cannot be queued.
        log.sink.store(Some(Arc::new(Sink {
            tx,
            target: AccessLogConfig::Stderr,
            dropped: dropped.clone(),
        })));
        let start = Instant::now();
        for i in 0..100 {
            log.log(&entry(&i.to_string()));
        }
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(dropped.get(), 99);
    }
}
