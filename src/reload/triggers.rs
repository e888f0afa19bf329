//! Reload triggers: `SIGHUP`, and a change to the config file (debounced; editors and config
//! managers that replace the file by a rename are caught too, because the directory is watched,
//! not the file). `POST /reload` on the admin listener is the third trigger (see `admin`).
//!
//! Any change in the directory counts, not only events that name the file: a Kubernetes
//! ConfigMap volume updates by swapping its `..data` symlink to a new `..<timestamp>` directory,
//! and the file (a symlink through `..data`) is never named by an event. After the debounce the
//! file's resolved content is compared with the config in force, so unrelated files cost a read
//! and a digest, never a reload.
//!
//! Every trigger ends in [`Reloader::reload`]: the file is parsed and validated away from the
//! request path and swapped in with one store, or rejected with the old config still serving.
//!
//! `SIGUSR2` starts a binary upgrade the way nginx does: the running process starts its successor
//! (the binary now at the path it was started from, with `--upgrade`), waits until the successor
//! listens on the upgrade socket, and sends itself `SIGQUIT` to hand over its listening sockets.
//! Because the successor is a child, it stays in the same systemd unit (cgroup).

use super::Reloader;
use async_trait::async_trait;
use notify::{RecursiveMode, Watcher};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// Quiet time after the last file event before reloading (editors write in several steps).
const DEBOUNCE: Duration = Duration::from_millis(250);
/// Longest wait for that quiet time: the file's content is compared then in any case.
const MAX_DEBOUNCE: Duration = Duration::from_secs(2);

pub struct ReloadTriggers {
    pub reloader: Arc<Reloader>,
    /// How to start a successor for `SIGUSR2`: program and arguments (with `--upgrade`).
    pub successor: Vec<std::ffi::OsString>,
    /// The upgrade socket the successor will listen on.
    pub upgrade_sock: PathBuf,
}

#[async_trait]
impl BackgroundService for ReloadTriggers {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!("cannot listen for SIGHUP, reload by signal is off: {e}");
                None
            }
        };
        let mut usr2 = signal(SignalKind::user_defined2()).ok();
        let (tx, mut file_events) = mpsc::channel::<()>(16);
        // Keep the watcher alive for as long as this service runs.
        let _watcher = self.reloader.config_path().and_then(|path| watch(path, tx));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = recv_signal(&mut hup) => {
                    log::info!("SIGHUP: reloading the config");
                    let _ = self.reloader.reload().await;
                }
                Some(()) = recv_signal(&mut usr2) => {
                    log::info!("SIGUSR2: starting a successor for a binary upgrade");
                    if let Err(e) = self.start_successor().await {
                        log::error!("binary upgrade not started: {e}");
                    }
                }
                Some(()) = file_events.recv() => {
                    // Debounce: wait until the directory has been quiet for a moment, but not
                    // forever (another file there may be written all the time).
                    let until = tokio::time::Instant::now() + MAX_DEBOUNCE;
                    while tokio::time::Instant::now() < until {
                        match tokio::time::timeout(DEBOUNCE, file_events.recv()).await {
                            Ok(Some(())) => {}
                            _ => break,
                        }
                    }
                    if self.reloader.config_file_changed() {
                        log::info!("config file changed: reloading");
                        let _ = self.reloader.reload().await;
                    }
                }
            }
        }
    }
}

impl ReloadTriggers {
    /// Start the successor, wait for its upgrade socket, then hand over with `SIGQUIT`.
    async fn start_successor(&self) -> std::io::Result<()> {
        let (program, args) = self
            .successor
            .split_first()
            .ok_or_else(|| std::io::Error::other("no command to start a successor"))?;
        // A socket file left by an earlier upgrade would look like the successor is ready.
        let _ = std::fs::remove_file(&self.upgrade_sock);
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(false)
            .spawn()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if self.upgrade_sock.exists() {
                break;
            }
            if let Some(status) = child.try_wait()? {
                return Err(std::io::Error::other(format!(
                    "the successor exited before taking over ({status})"
                )));
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.start_kill();
                return Err(std::io::Error::other(
                    "the successor did not open the upgrade socket within 30s",
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        log::info!("successor (pid {:?}) is waiting: handing over", child.id());
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGQUIT).map_err(std::io::Error::other)
    }
}

async fn recv_signal(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Watch the config file's directory and send a tick for every change in it (the caller
/// compares the file's content before reloading).
fn watch(path: &Path, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    path.file_name()?;
    let dir: PathBuf = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let handler = move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if !matches!(ev.kind, notify::EventKind::Access(_)) {
                // A full channel already holds a pending tick: nothing is lost.
                let _ = tx.try_send(());
            }
        }
    };
    match notify::recommended_watcher(handler) {
        Ok(mut w) => match w.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => Some(w),
            Err(e) => {
                log::error!(
                    "cannot watch {}: {e}; reload by file change is off",
                    dir.display()
                );
                None
            }
        },
        Err(e) => {
            log::error!("cannot watch files: {e}; reload by file change is off");
            None
        }
    }
}
