//! Disk cache of compiled components: compiling costs tens of milliseconds, loading a cached one
//! tens of microseconds.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::Engine;
use wasmtime::component::Component;

pub(crate) struct ComponentCache {
    dir: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl ComponentCache {
    /// Entries live under a directory named for this crate's version and the engine's
    /// compatibility hash (wasmtime version, target, compilation settings), so a changed engine
    /// never loads code compiled for another.
    pub fn new(root: &Path, engine: &Engine) -> std::io::Result<ComponentCache> {
        let mut hasher = DefaultHasher::new();
        env!("CARGO_PKG_VERSION").hash(&mut hasher);
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let dir = root.join(format!("engine-{:016x}", hasher.finish()));
        std::fs::create_dir_all(&dir)?;
        Ok(ComponentCache { dir })
    }

    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.cwasm"))
    }

    pub fn load(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        let path = self.path(sha256);
        if !path.is_file() {
            return None;
        }
        // SAFETY: the file was written by `store` below from `Component::serialize` with an
        // engine of the same compatibility hash (the directory name), in a directory the
        // operator gives the runtime alone; wasmtime also checks the header and engine settings
        // and refuses a mismatch, which we treat as a miss.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::warn!(path = %path.display(), error = %error, "ignoring unusable compiled component in the cache");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Written to a temporary file and renamed, so a concurrent reader never sees half a file.
    pub fn store(&self, sha256: &str, component: &Component) {
        let bytes = match component.serialize() {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(error = %error, "cannot serialize compiled component for the cache");
                return;
            }
        };
        let path = self.path(sha256);
        let temp = self.dir.join(format!(
            "{sha256}.{}.{}.tmp",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = std::fs::write(&temp, &bytes).and_then(|()| std::fs::rename(&temp, &path));
        if let Err(error) = result {
            let _ = std::fs::remove_file(&temp);
            tracing::warn!(path = %path.display(), error = %error, "cannot write compiled component to the cache");
        }
    }
}
