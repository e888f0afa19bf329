//! The file layout of a Kubernetes ConfigMap volume, and its update the way kubelet makes it:
//! `switchyard.yaml -> ..data/switchyard.yaml`, `..data -> ..<timestamp>/`; an update writes a
//! new `..<timestamp>/`, points a `..data_tmp` symlink at it, renames that over `..data` (one
//! atomic step) and removes the old directory. No event ever names `switchyard.yaml`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

static VERSION: AtomicU32 = AtomicU32::new(0);

/// Write `text` as a fresh `..<timestamp>` directory holding `name`; returns its name.
fn version(dir: &Path, name: &str, text: &str) -> String {
    let n = VERSION.fetch_add(1, Ordering::Relaxed);
    let ts = format!("..2026_01_01_00_00_{:02}.{:09}", n % 60, n);
    std::fs::create_dir(dir.join(&ts)).expect("version dir");
    std::fs::write(dir.join(&ts).join(name), text).expect("config in version dir");
    ts
}

/// Lay out `dir` as a ConfigMap volume holding `name` = `text`; returns the path to give `-c`.
pub fn lay_out(dir: &Path, name: &str, text: &str) -> PathBuf {
    let ts = version(dir, name, text);
    std::os::unix::fs::symlink(&ts, dir.join("..data")).expect("..data");
    let file = dir.join(name);
    std::os::unix::fs::symlink(Path::new("..data").join(name), &file).expect("file symlink");
    file
}

/// Update the volume to `name` = `text` as kubelet does.
pub fn swap(dir: &Path, name: &str, text: &str) {
    let old = std::fs::read_link(dir.join("..data")).expect("..data is a symlink");
    let ts = version(dir, name, text);
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&ts, &tmp).expect("..data_tmp");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    std::fs::remove_dir_all(dir.join(old)).expect("remove the old version");
}
