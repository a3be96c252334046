//! Hot reload: a watcher on the policy directory feeds changed files through the test gate.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher as _};

use crate::engine::{check_file_name, relative_name, sha256_hex};
use crate::{PolicyEngine, PolicyError};

/// Quiet time after the last change before files are applied.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Keeps a directory watched; dropping it stops watching.
pub struct PolicyWatcher {
    _watcher: notify::RecommendedWatcher,
    dir: PathBuf,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for PolicyWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyWatcher")
            .field("dir", &self.dir)
            .finish()
    }
}

impl PolicyWatcher {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PolicyWatcher {
    fn drop(&mut self) {
        // Dropping the notify watcher closes the channel; the thread then ends. It is not joined
        // here so that a drop never waits for a replace in progress.
        self.thread.take();
    }
}

impl PolicyEngine {
    /// Watches `dir` recursively. When a `*.rego` file is written (and nothing else changed for
    /// [`DEBOUNCE`]), its source goes through [`replace`](Self::replace): accepted versions are
    /// logged at info, rejected ones at warn and the old version keeps serving. A source whose
    /// SHA-256 equals the serving one (e.g. written by [`write_file`](Self::write_file)) is
    /// ignored. A deleted file is removed only if the remaining tests still pass.
    pub fn watch(&self, dir: &Path) -> Result<PolicyWatcher, PolicyError> {
        let dir = dir.canonicalize().map_err(|e| PolicyError::io(dir, e))?;
        let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
        let mut watcher = notify::recommended_watcher(move |ev| {
            let _ = tx.send(ev);
        })
        .map_err(|e| PolicyError::Watch {
            path: dir.clone(),
            message: e.to_string(),
        })?;
        watcher
            .watch(&dir, RecursiveMode::Recursive)
            .map_err(|e| PolicyError::Watch {
                path: dir.clone(),
                message: e.to_string(),
            })?;
        let engine = self.clone();
        let root = dir.clone();
        let thread = std::thread::Builder::new()
            .name("policy-watch".into())
            .spawn(move || watch_loop(engine, root, rx))
            .map_err(|e| PolicyError::io(&dir, e))?;
        tracing::info!(dir = %dir.display(), "watching policies");
        Ok(PolicyWatcher {
            _watcher: watcher,
            dir,
            thread: Some(thread),
        })
    }
}

fn watch_loop(
    engine: PolicyEngine,
    root: PathBuf,
    rx: mpsc::Receiver<notify::Result<notify::Event>>,
) {
    let mut pending: BTreeSet<PathBuf> = BTreeSet::new();
    let mut last = Instant::now();
    loop {
        let timeout = if pending.is_empty() {
            Duration::from_secs(3600)
        } else {
            DEBOUNCE.saturating_sub(last.elapsed())
        };
        match rx.recv_timeout(timeout) {
            Ok(Ok(event)) => {
                if matches!(event.kind, notify::EventKind::Access(_)) {
                    continue;
                }
                for p in event.paths {
                    if p.extension().is_some_and(|e| e == "rego") {
                        pending.insert(p);
                        last = Instant::now();
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "policy watcher error"),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if !pending.is_empty() && last.elapsed() >= DEBOUNCE {
                    for path in std::mem::take(&mut pending) {
                        apply(&engine, &root, &path);
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn apply(engine: &PolicyEngine, root: &Path, path: &Path) {
    let file = relative_name(root, path);
    if check_file_name(&file).is_err() {
        return;
    }
    match std::fs::read_to_string(path) {
        Ok(source) => {
            if engine.sha256_of(&file).as_deref() == Some(sha256_hex(&source).as_str()) {
                return;
            }
            match engine.replace(&file, &source) {
                Ok(version) => tracing::info!(file, version, "policy reloaded"),
                Err(e) => {
                    tracing::warn!(file, error = %e, "policy change rejected; the previous version keeps serving")
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if engine.sha256_of(&file).is_none() {
                return;
            }
            match engine.remove(&file) {
                Ok(_) => tracing::info!(file, "policy file deleted; module removed"),
                Err(e) => {
                    tracing::warn!(file, error = %e, "policy file deleted but removing it fails the tests; it keeps serving")
                }
            }
        }
        Err(e) => tracing::warn!(file, error = %e, "cannot read changed policy file"),
    }
}
