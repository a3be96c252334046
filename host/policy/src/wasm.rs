//! Prebuilt OPA Wasm bundles (`opa build -t wasm`) through the `opa-wasm` crate.
//!
//! `opa-wasm` is async (wasmtime's async API, which runs wasm on a fiber); it needs no tokio
//! runtime. [`OpaWasmPolicy`] offers a synchronous API that drives the future to completion on
//! the calling thread (`futures::executor::block_on`), so it can be used from any thread — inside
//! an async task it blocks that task for the evaluation only (tens of microseconds for small
//! policies). One wasm instance serves one evaluation at a time (a mutex around the store).

use std::path::{Path, PathBuf};

use opa_wasm::Runtime;
use opa_wasm::wasmtime::{Config, Engine, Module, Store};
use parking_lot::Mutex;
use serde_json::Value;

use crate::PolicyError;

type Instance = opa_wasm::Policy<opa_wasm::DefaultContext>;

/// A loaded OPA Wasm module with one entrypoint to evaluate.
pub struct OpaWasmPolicy {
    path: PathBuf,
    entrypoint: String,
    state: Mutex<(Store<()>, Instance)>,
}

impl std::fmt::Debug for OpaWasmPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpaWasmPolicy")
            .field("path", &self.path)
            .field("entrypoint", &self.entrypoint)
            .finish_non_exhaustive()
    }
}

impl OpaWasmPolicy {
    /// Loads `policy.wasm` (the module inside an `opa build -t wasm` bundle) with an empty `data`
    /// document. `entrypoint` is one of the module's entrypoints (`opa build -e`), e.g. `example`
    /// or `lotus/api/allow`.
    pub fn load(path: &Path, entrypoint: &str) -> Result<Self, PolicyError> {
        let bytes = std::fs::read(path).map_err(|e| PolicyError::io(path, e))?;
        Self::from_bytes(path, &bytes, entrypoint)
    }

    /// Like [`load`](Self::load) from bytes; `path` only names the bundle in errors.
    pub fn from_bytes(path: &Path, bytes: &[u8], entrypoint: &str) -> Result<Self, PolicyError> {
        let err = |message: String| PolicyError::Wasm {
            path: path.display().to_string(),
            message,
        };
        let mut config = Config::new();
        #[allow(deprecated)]
        config.async_support(true);
        let engine = Engine::new(&config).map_err(|e| err(format!("{e:#}")))?;
        let module = Module::new(&engine, bytes).map_err(|e| err(format!("{e:#}")))?;
        let mut store = Store::new(&engine, ());
        let instance = futures::executor::block_on(async {
            let runtime = Runtime::new(&mut store, &module).await?;
            let entrypoints: Vec<String> = runtime
                .entrypoints()
                .into_iter()
                .map(str::to_string)
                .collect();
            if !entrypoints.iter().any(|e| e == entrypoint) {
                anyhow::bail!(
                    "no entrypoint {entrypoint:?} in the module (it has: {})",
                    entrypoints.join(", ")
                );
            }
            runtime.without_data(&mut store).await
        })
        .map_err(|e| err(format!("{e:#}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            entrypoint: entrypoint.to_string(),
            state: Mutex::new((store, instance)),
        })
    }

    pub fn entrypoint(&self) -> &str {
        &self.entrypoint
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Evaluates the entrypoint. The result has OPA's Wasm shape: a result set,
    /// `[{"result": <value of the entrypoint>}]` (empty when undefined).
    pub fn evaluate(&self, input: &Value) -> Result<Value, PolicyError> {
        let mut guard = self.state.lock();
        let (store, instance) = &mut *guard;
        futures::executor::block_on(instance.evaluate(&mut *store, &self.entrypoint, input))
            .map_err(|e| PolicyError::Wasm {
                path: self.path.display().to_string(),
                message: format!("evaluating {}: {e:#}", self.entrypoint),
            })
    }
}
