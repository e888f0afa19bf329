//! Reload triggers: `SIGHUP`, and a change to the config file (debounced; editors and config
//! managers that replace the file by a rename are caught too, because the directory is watched,
//! not the file). `POST /reload` on the admin listener is the third trigger (see `admin`).
//!
//! Every trigger ends in [`App::reload`]: the file is parsed and validated away from the request
//! path and swapped in with one store, or rejected with the old config still serving.

use crate::app::App;
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

pub struct ReloadTriggers {
    pub app: Arc<App>,
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
        let (tx, mut file_events) = mpsc::channel::<()>(16);
        // Keep the watcher alive for as long as this service runs.
        let _watcher = self
            .app
            .config_path
            .as_deref()
            .and_then(|path| watch(path, tx));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = recv_signal(&mut hup) => {
                    log::info!("SIGHUP: reloading the config");
                    let _ = self.app.reload().await;
                }
                Some(()) = file_events.recv() => {
                    // Debounce: wait until the file has been quiet for a moment.
                    while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, file_events.recv()).await {}
                    if self.app.config_file_changed() {
                        log::info!("config file changed: reloading");
                        let _ = self.app.reload().await;
                    }
                }
            }
        }
    }
}

async fn recv_signal(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Watch the config file's directory and send a tick for every event that names the file.
fn watch(path: &Path, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    let file_name = path.file_name()?.to_owned();
    let dir: PathBuf = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let handler = move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if ev.paths.iter().any(|p| p.file_name() == Some(&file_name)) {
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
