//! The plugin runtime: compiles and checks components, keeps the serving version of each plugin,
//! and runs calls inside the plugin's bounds.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, types::ComponentItem};
use wasmtime::{Config, Engine, Store, Trap};

use crate::cache::ComponentCache;
use crate::error::{CallError, PrepareError};
use crate::guest_output::CallOutput;
use crate::host::{CapabilityCheck, CapabilityRequest, HostServices, ManifestCapabilityCheck};
use crate::logs::{LogLevel, LogLine, LogSource, PluginLog};
use crate::manifest::{Capability, Manifest, World};
use crate::store::{CallEnv, StoreData};
use crate::wit::v0_1_0::{self as v1, app, channel, codec, event_handler, rule};

/// How the runtime itself behaves (per-plugin bounds are in each [`Manifest`]).
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are cached; `None` compiles on every `prepare`.
    pub cache_dir: Option<PathBuf>,
    /// Consecutive plugin failures (traps, limits, bad output; not the plugin's own codec or
    /// rule errors) after which the plugin is suspended.
    pub suspend_after_failures: u32,
    /// Lines kept per plugin in its log ring.
    pub log_lines_per_plugin: usize,
    /// Largest component accepted by `prepare`.
    pub max_component_bytes: usize,
    /// Healthy instances kept per plugin version for reuse.
    pub idle_instances_per_plugin: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            suspend_after_failures: 10,
            log_lines_per_plugin: 1000,
            max_component_bytes: 32 << 20,
            idle_instances_per_plugin: 8,
        }
    }
}

/// One tick of the epoch clock that enforces call timeouts.
const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Deep enough for real parsers, small enough that runaway recursion traps quickly.
const MAX_WASM_STACK: usize = 512 << 10;

/// Runs plugins; cheap to clone (all clones share one engine and one set of plugins).
#[derive(Clone)]
pub struct PluginRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<StoreData>,
    config: RuntimeConfig,
    host: Arc<dyn HostServices>,
    check: Arc<dyn CapabilityCheck>,
    http: ureq::Agent,
    cache: Option<ComponentCache>,
    plugins: RwLock<HashMap<String, Arc<Slot>>>,
    _ticker: EpochTicker,
}

/// Advances the engine's epoch every [`EPOCH_TICK`] so running wasm notices its deadline.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> std::io::Result<EpochTicker> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("lotus-plugin-epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A plugin id: what survives version swaps (log, health, metrics).
struct Slot {
    log: Arc<PluginLog>,
    current: RwLock<Arc<Version>>,
    consecutive_failures: AtomicU32,
    suspended: AtomicBool,
    suspension_reason: Mutex<Option<String>>,
    metrics: PluginMetrics,
}

struct PluginMetrics {
    calls: metrics::Counter,
    duration: metrics::Histogram,
    fuel: metrics::Histogram,
    memory_high_water: metrics::Gauge,
    memory_peak: AtomicU64,
}

impl PluginMetrics {
    fn new(id: &str) -> PluginMetrics {
        let id = id.to_string();
        PluginMetrics {
            calls: metrics::counter!("lotus_plugin_calls_total", "plugin" => id.clone()),
            duration: metrics::histogram!("lotus_plugin_call_seconds", "plugin" => id.clone()),
            fuel: metrics::histogram!("lotus_plugin_fuel_used", "plugin" => id.clone()),
            memory_high_water: metrics::gauge!("lotus_plugin_memory_high_water_bytes", "plugin" => id),
            memory_peak: AtomicU64::new(0),
        }
    }
}

/// One compiled version of a plugin, serving calls.
struct Version {
    env: Arc<CallEnv>,
    sha256: String,
    pre: WorldPre,
    idle: Mutex<Vec<Instance>>,
}

enum WorldPre {
    Codec(codec::CodecPre<StoreData>),
    Rule(rule::RulePre<StoreData>),
    EventHandler(event_handler::EventHandlerPre<StoreData>),
    App(app::AppPre<StoreData>),
    Channel(channel::ChannelPre<StoreData>),
}

enum Exports {
    Codec(codec::Codec),
    Rule(rule::Rule),
    EventHandler(event_handler::EventHandler),
    App(app::App),
    Channel(channel::Channel),
}

struct Instance {
    store: Store<StoreData>,
    exports: Exports,
    /// Linear memory right after instantiation: what the instance needs before any call.
    baseline_memory: usize,
}

impl Instance {
    /// Linear memory never shrinks, and some guests (a JavaScript engine's heap, an allocator
    /// that fragments) grow a little with every call. An instance that has used three quarters
    /// of its headroom is retired after a clean call, so a fresh one serves the next instead of
    /// this one failing a message at the limit.
    fn worn_out(&self) -> bool {
        let limiter = &self.store.data().limiter;
        let headroom = limiter.memory_limit.saturating_sub(self.baseline_memory);
        limiter.memory_peak > self.baseline_memory + headroom / 4 * 3
    }
}

/// A component compiled and checked against its manifest, ready to [`PluginRuntime::activate`].
pub struct PreparedPlugin {
    manifest: Manifest,
    sha256: String,
    pre: WorldPre,
    from_cache: bool,
}

impl PreparedPlugin {
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// SHA-256 of the component bytes, lower-case hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Whether the compiled code came from the disk cache.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }
}

/// What an operator sees about a plugin.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PluginStatus {
    pub id: String,
    pub version: String,
    pub world: World,
    pub sha256: String,
    /// The WIT package version the plugin is served with.
    pub wit_version: &'static str,
    /// `Some(reason)` while suspended.
    pub suspended: Option<String>,
    pub consecutive_failures: u32,
}

impl PluginStatus {
    pub fn is_active(&self) -> bool {
        self.suspended.is_none()
    }
}

/// Where a message came from or goes to (codec calls).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageContext {
    pub product_key: String,
    pub device_name: String,
    pub topic: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
}

impl PluginRuntime {
    /// A runtime whose capability decisions follow each plugin's manifest.
    pub fn new(config: RuntimeConfig, host: Arc<dyn HostServices>) -> anyhow::Result<Self> {
        Self::with_capability_check(config, host, Arc::new(ManifestCapabilityCheck))
    }

    /// A runtime with another capability decision (the policy engine).
    pub fn with_capability_check(
        config: RuntimeConfig,
        host: Arc<dyn HostServices>,
        check: Arc<dyn CapabilityCheck>,
    ) -> anyhow::Result<Self> {
        let mut engine_config = Config::new();
        engine_config
            .consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(MAX_WASM_STACK)
            // Plugins are synchronous; without async support a call is ~30 % cheaper.
            .concurrency_support(false);
        let engine = Engine::new(&engine_config)
            .map_err(|e| anyhow::anyhow!("cannot create the wasm engine: {e}"))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| anyhow::anyhow!("cannot link WASI: {e}"))?;
        // The app world imports every host interface, so its linker serves every world.
        app::App::add_to_linker::<StoreData, HasSelf<StoreData>>(&mut linker, |data| data)
            .map_err(|e| anyhow::anyhow!("cannot link the lotus:plugin interfaces: {e}"))?;

        let cache = match &config.cache_dir {
            Some(dir) => Some(ComponentCache::new(dir, &engine).map_err(|e| {
                anyhow::anyhow!(
                    "cannot create the plugin cache directory {}: {e}",
                    dir.display()
                )
            })?),
            None => None,
        };
        // Redirects are refused so a plugin cannot leave its allow-list through one.
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        let ticker = EpochTicker::start(engine.clone())?;
        Ok(PluginRuntime {
            inner: Arc::new(Inner {
                engine,
                linker,
                config,
                host,
                check,
                http,
                cache,
                plugins: RwLock::new(HashMap::new()),
                _ticker: ticker,
            }),
        })
    }

    /// Compiles (or loads from the disk cache) and checks the component: its size, that it
    /// implements the manifest's world, and that it imports only what the world offers and the
    /// manifest requests. CPU-heavy: call from a blocking thread.
    pub fn prepare(&self, manifest: Manifest, wasm: &[u8]) -> Result<PreparedPlugin, PrepareError> {
        let inner = &self.inner;
        let limit = inner.config.max_component_bytes;
        if wasm.len() > limit {
            return Err(PrepareError::TooLarge {
                bytes: wasm.len(),
                limit,
            });
        }
        let sha256 = hex::encode(Sha256::digest(wasm));

        let cached = inner
            .cache
            .as_ref()
            .and_then(|cache| cache.load(&inner.engine, &sha256));
        let from_cache = cached.is_some();
        let component = match cached {
            Some(component) => component,
            None => {
                let component = Component::new(&inner.engine, wasm).map_err(|e| {
                    let hint = if wasm.starts_with(b"\0asm\x01\0\0\0") {
                        " (this is a core wasm module; build the plugin with `--target wasm32-wasip2` to get a component)"
                    } else {
                        ""
                    };
                    PrepareError::Invalid(format!("{e:#}{hint}"))
                })?;
                if let Some(cache) = &inner.cache {
                    cache.store(&sha256, &component);
                }
                component
            }
        };

        check_imports(&inner.engine, &component, &manifest)?;
        check_exports(&inner.engine, &component, manifest.world)?;
        let instance_pre = inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| PrepareError::Incompatible(format!("{e:#}")))?;
        let incompatible = |e: wasmtime::Error| {
            PrepareError::Incompatible(format!(
                "exports do not match the {} world of lotus:plugin@{}: {e:#}",
                manifest.world,
                v1::VERSION
            ))
        };
        let pre = match manifest.world {
            World::Codec => {
                WorldPre::Codec(codec::CodecPre::new(instance_pre).map_err(incompatible)?)
            }
            World::Rule => WorldPre::Rule(rule::RulePre::new(instance_pre).map_err(incompatible)?),
            World::EventHandler => WorldPre::EventHandler(
                event_handler::EventHandlerPre::new(instance_pre).map_err(incompatible)?,
            ),
            World::App => WorldPre::App(app::AppPre::new(instance_pre).map_err(incompatible)?),
            World::Channel => {
                WorldPre::Channel(channel::ChannelPre::new(instance_pre).map_err(incompatible)?)
            }
        };
        Ok(PreparedPlugin {
            manifest,
            sha256,
            pre,
            from_cache,
        })
    }

    /// Makes the plugin serve, replacing the version with the same id atomically: calls that
    /// already started finish on the old version, every later call runs on the new one. A
    /// suspension of the old version is cleared.
    pub fn activate(&self, plugin: PreparedPlugin) {
        let inner = &self.inner;
        let id = plugin.manifest.id.clone();
        let existing_log = inner.plugins.read().get(&id).map(|slot| slot.log.clone());
        let log = existing_log
            .unwrap_or_else(|| Arc::new(PluginLog::new(inner.config.log_lines_per_plugin)));
        let version = plugin.manifest.version.clone();
        let env = Arc::new(CallEnv {
            manifest: Arc::new(plugin.manifest),
            host: inner.host.clone(),
            check: inner.check.clone(),
            log: log.clone(),
            http: inner.http.clone(),
        });
        let new = Arc::new(Version {
            env,
            sha256: plugin.sha256,
            pre: plugin.pre,
            idle: Mutex::new(Vec::new()),
        });
        // Instantiating runs the component's own initialisation (a whole language engine for
        // JavaScript and Python components); one warm instance keeps that cost out of the first
        // message's call budget. A failure here is left to the first call to report.
        if let Ok(instance) = new.instantiate(&inner.engine) {
            new.idle.lock().push(instance);
        }
        let mut plugins = inner.plugins.write();
        let slot = plugins.get(&id).cloned();
        match slot {
            Some(slot) => {
                let old = std::mem::replace(&mut *slot.current.write(), new);
                slot.consecutive_failures.store(0, Ordering::Relaxed);
                *slot.suspension_reason.lock() = None;
                slot.suspended.store(false, Ordering::Release);
                log.push(
                    LogSource::Host,
                    LogLevel::Info,
                    &version,
                    format!("activated, replacing version {}", old.env.manifest.version),
                );
            }
            None => {
                plugins.insert(
                    id.clone(),
                    Arc::new(Slot {
                        log: log.clone(),
                        current: RwLock::new(new),
                        consecutive_failures: AtomicU32::new(0),
                        suspended: AtomicBool::new(false),
                        suspension_reason: Mutex::new(None),
                        metrics: PluginMetrics::new(&id),
                    }),
                );
                log.push(
                    LogSource::Host,
                    LogLevel::Info,
                    &version,
                    "activated".to_string(),
                );
            }
        }
    }

    /// Stops serving the plugin; calls already running finish. Its log goes with it.
    pub fn deactivate(&self, id: &str) -> bool {
        self.inner.plugins.write().remove(id).is_some()
    }

    pub fn codec(&self, id: &str) -> Option<Codec> {
        self.handle(id, World::Codec).map(|handle| Codec { handle })
    }

    pub fn rule(&self, id: &str) -> Option<Rule> {
        self.handle(id, World::Rule).map(|handle| Rule { handle })
    }

    pub fn event_handler(&self, id: &str) -> Option<EventHandler> {
        self.handle(id, World::EventHandler)
            .map(|handle| EventHandler { handle })
    }

    pub fn app(&self, id: &str) -> Option<App> {
        self.handle(id, World::App).map(|handle| App { handle })
    }

    pub fn channel(&self, id: &str) -> Option<Channel> {
        self.handle(id, World::Channel)
            .map(|handle| Channel { handle })
    }

    fn handle(&self, id: &str, world: World) -> Option<Handle> {
        let slot = self.inner.plugins.read().get(id).cloned()?;
        if slot.current.read().env.manifest.world != world {
            return None;
        }
        Some(Handle {
            inner: self.inner.clone(),
            id: Arc::from(id),
            world,
        })
    }

    pub fn status(&self, id: &str) -> Option<PluginStatus> {
        let slot = self.inner.plugins.read().get(id).cloned()?;
        let version = slot.current.read().clone();
        Some(PluginStatus {
            id: id.to_string(),
            version: version.env.manifest.version.clone(),
            world: version.env.manifest.world,
            sha256: version.sha256.clone(),
            wit_version: v1::VERSION,
            suspended: slot.suspension_reason.lock().clone(),
            consecutive_failures: slot.consecutive_failures.load(Ordering::Relaxed),
        })
    }

    /// The manifest of the running version of plugin `id`.
    pub fn manifest(&self, id: &str) -> Option<Manifest> {
        let slot = self.inner.plugins.read().get(id).cloned()?;
        let manifest = slot.current.read().env.manifest.as_ref().clone();
        Some(manifest)
    }

    /// Whether plugin `id` may do `request`, decided as its host calls are: for what a plugin
    /// returns rather than calls (a handler's actions), which the platform then carries out.
    pub fn authorize(&self, id: &str, request: &CapabilityRequest<'_>) -> Result<(), String> {
        let manifest = self
            .manifest(id)
            .ok_or_else(|| format!("plugin {id} is not running"))?;
        self.inner.check.check(&manifest, request)
    }

    /// Every active or suspended plugin, by id.
    pub fn list(&self) -> Vec<PluginStatus> {
        let mut ids: Vec<String> = self.inner.plugins.read().keys().cloned().collect();
        ids.sort();
        ids.iter().filter_map(|id| self.status(id)).collect()
    }

    /// Clears a suspension; the plugin serves again with a fresh failure count.
    pub fn resume(&self, id: &str) -> bool {
        let Some(slot) = self.inner.plugins.read().get(id).cloned() else {
            return false;
        };
        let version = slot.current.read().env.manifest.version.clone();
        slot.consecutive_failures.store(0, Ordering::Relaxed);
        *slot.suspension_reason.lock() = None;
        slot.suspended.store(false, Ordering::Release);
        slot.log.push(
            LogSource::Host,
            LogLevel::Info,
            &version,
            "resumed by operator".to_string(),
        );
        true
    }

    /// The newest `limit` lines of the plugin's log, oldest first.
    pub fn logs(&self, id: &str, limit: usize) -> Vec<LogLine> {
        match self.inner.plugins.read().get(id) {
            Some(slot) => slot.log.tail(limit),
            None => Vec::new(),
        }
    }
}

fn check_imports(
    engine: &Engine,
    component: &Component,
    manifest: &Manifest,
) -> Result<(), PrepareError> {
    let package = "lotus:plugin/";
    let version_suffix = format!("@{}", v1::VERSION);
    for (name, _item) in component.component_type().imports(engine) {
        if name.starts_with("wasi:") {
            // Served by a WASI context with no files, environment, network or stdin (stdout and
            // stderr go to the plugin log); the linker refuses interfaces it does not provide.
            continue;
        }
        let Some(rest) = name.strip_prefix(package) else {
            return Err(PrepareError::ForbiddenImport {
                import: name.to_string(),
                reason: "the host provides only lotus:plugin and WASI interfaces".to_string(),
            });
        };
        let Some(interface) = rest.strip_suffix(&version_suffix) else {
            return Err(PrepareError::ForbiddenImport {
                import: name.to_string(),
                reason: format!(
                    "this host serves lotus:plugin@{}; rebuild the plugin against that version",
                    v1::VERSION
                ),
            });
        };
        if interface == "types" {
            continue;
        }
        let capability =
            Capability::from_name(interface).ok_or_else(|| PrepareError::ForbiddenImport {
                import: name.to_string(),
                reason: "lotus:plugin has no such interface".to_string(),
            })?;
        if !manifest.world.offers().contains(&capability) {
            return Err(PrepareError::ForbiddenImport {
                import: name.to_string(),
                reason: format!("the {} world does not offer `{capability}`", manifest.world),
            });
        }
        if !manifest.requests(capability) {
            return Err(PrepareError::ForbiddenImport {
                import: name.to_string(),
                reason: format!(
                    "lotus-plugin.toml does not request it; add \"{capability}\" to `capabilities`"
                ),
            });
        }
    }
    Ok(())
}

fn check_exports(engine: &Engine, component: &Component, world: World) -> Result<(), PrepareError> {
    let exports: Vec<String> = component
        .component_type()
        .exports(engine)
        .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentFunc(_)))
        .map(|(name, _)| name.to_string())
        .collect();
    let missing: Vec<String> = world
        .exports()
        .iter()
        .filter(|name| !exports.iter().any(|e| e == *name))
        .map(|name| name.to_string())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let built_for = World::ALL.into_iter().find(|w| {
        w.exports()
            .iter()
            .all(|name| exports.iter().any(|e| e == name))
    });
    Err(PrepareError::WrongWorld {
        expected: world,
        missing,
        exports,
        looks_like: built_for,
    })
}

impl WorldPre {
    fn instantiate(&self, store: &mut Store<StoreData>) -> wasmtime::Result<Exports> {
        Ok(match self {
            WorldPre::Codec(pre) => Exports::Codec(pre.instantiate(store)?),
            WorldPre::Rule(pre) => Exports::Rule(pre.instantiate(store)?),
            WorldPre::EventHandler(pre) => Exports::EventHandler(pre.instantiate(store)?),
            WorldPre::App(pre) => Exports::App(pre.instantiate(store)?),
            WorldPre::Channel(pre) => Exports::Channel(pre.instantiate(store)?),
        })
    }
}

fn epoch_ticks(timeout: Duration) -> u64 {
    // One extra tick: the first may come at once, and a call must get at least its full budget.
    timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64 + 1
}

fn budget(store: &mut Store<StoreData>, fuel: u64, timeout: Duration) -> wasmtime::Result<()> {
    store.set_fuel(fuel)?;
    store.set_epoch_deadline(epoch_ticks(timeout));
    let data = store.data_mut();
    data.deadline = Instant::now() + timeout;
    data.limiter.memory_refused = false;
    Ok(())
}

impl Version {
    fn instantiate(&self, engine: &Engine) -> Result<Instance, (CallError, String)> {
        let limits = &self.env.manifest.limits;
        let mut store = Store::new(engine, StoreData::new(self.env.clone()));
        store.limiter(|data| &mut data.limiter);
        budget(&mut store, limits.fuel_per_call, limits.call_timeout)
            .map_err(|e| classify(&e, false, None))?;
        let instantiated = self.pre.instantiate(&mut store);
        // The component's initialisation may print (or panic); that is not the next call's.
        let panic = self.record_output(store.data().output.take());
        match instantiated {
            Ok(exports) => {
                let baseline_memory = store.data().limiter.memory_peak;
                Ok(Instance {
                    store,
                    exports,
                    baseline_memory,
                })
            }
            Err(error) => {
                let refused = store.data().limiter.memory_refused;
                Err(classify(&error, refused, panic.as_deref()))
            }
        }
    }

    /// Puts what the guest wrote during one call into the plugin log; returns the guest's panic
    /// message, if it reported one.
    fn record_output(&self, output: Option<CallOutput>) -> Option<String> {
        let mut output = output?;
        output.record(&self.env.log, &self.env.manifest.version);
        output.panic().map(str::to_string)
    }
}

/// Turns a wasm failure into the caller's reason, plus the full text (backtrace included) for the
/// plugin's log. A Rust guest traps with a bare `unreachable` after printing why it panicked, so
/// the panic message, when there is one, leads the reason.
fn classify(
    error: &wasmtime::Error,
    memory_refused: bool,
    panic: Option<&str>,
) -> (CallError, String) {
    let detail = format!("{error:?}");
    let trapped = |what: String| match panic {
        Some(panic) => CallError::Trap(format!("{panic} ({what})")),
        None => CallError::Trap(what),
    };
    let reason = match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => CallError::OutOfFuel,
        Some(Trap::Interrupt) => CallError::Timeout,
        Some(Trap::StackOverflow) => {
            CallError::Trap("wasm stack exhausted (recursion too deep)".to_string())
        }
        // A guest that cannot grow its memory usually aborts (an `unreachable` trap).
        _ if memory_refused => CallError::MemoryLimit,
        Some(trap) => trapped(trap.to_string()),
        None => trapped(error.to_string()),
    };
    (reason, detail)
}

/// A call target: resolves the plugin's serving version on every call, so handles stay valid
/// across upgrades.
#[derive(Clone)]
struct Handle {
    inner: Arc<Inner>,
    id: Arc<str>,
    world: World,
}

impl Handle {
    /// Has the plugin's latest call failed (and no call succeeded since)?
    fn failing(&self) -> bool {
        self.inner
            .plugins
            .read()
            .get(&*self.id)
            .is_some_and(|slot| slot.consecutive_failures.load(Ordering::Relaxed) != 0)
    }

    fn call<T>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&Exports, &mut Store<StoreData>) -> wasmtime::Result<Result<T, CallError>>,
    ) -> Result<T, CallError> {
        let Some(slot) = self.inner.plugins.read().get(&*self.id).cloned() else {
            return Err(CallError::Failed(format!(
                "plugin {} is not active",
                self.id
            )));
        };
        if slot.suspended.load(Ordering::Acquire) {
            let reason = slot.suspension_reason.lock().clone().unwrap_or_default();
            return Err(CallError::Suspended(reason));
        }
        let version = slot.current.read().clone();
        let manifest = &version.env.manifest;
        if manifest.world != self.world {
            return Err(CallError::Failed(format!(
                "plugin {} is now a {} plugin, not {}",
                self.id, manifest.world, self.world
            )));
        }
        let limits = &manifest.limits;
        let started = Instant::now();
        slot.metrics.calls.increment(1);

        let idle = version.idle.lock().pop();
        let mut instance = match idle {
            Some(mut instance) => match budget(
                &mut instance.store,
                limits.fuel_per_call,
                limits.call_timeout,
            ) {
                Ok(()) => instance,
                Err(error) => {
                    return Err(self.failed(
                        &slot,
                        &version,
                        operation,
                        classify(&error, false, None),
                    ));
                }
            },
            None => match version.instantiate(&self.inner.engine) {
                Ok(instance) => instance,
                Err(failure) => return Err(self.failed(&slot, &version, operation, failure)),
            },
        };

        let outcome = f(&instance.exports, &mut instance.store);
        // Taken on every call, so a pooled instance's output is logged once, by the call that
        // wrote it.
        let panic = version.record_output(instance.store.data().output.take());

        let fuel_left = instance.store.get_fuel().unwrap_or(0);
        slot.metrics
            .fuel
            .record(limits.fuel_per_call.saturating_sub(fuel_left) as f64);
        slot.metrics
            .duration
            .record(started.elapsed().as_secs_f64());
        let peak = instance.store.data().limiter.memory_peak as u64;
        if peak > slot.metrics.memory_peak.fetch_max(peak, Ordering::Relaxed) {
            slot.metrics.memory_high_water.set(peak as f64);
        }

        match outcome {
            Ok(result) => {
                // The instance finished the call cleanly, so its state is sound: keep it, unless
                // its memory is close to the limit.
                if instance.worn_out() {
                    metrics::counter!("lotus_plugin_instances_retired_total", "plugin" => self.id.to_string())
                        .increment(1);
                    drop(instance);
                } else {
                    let mut idle = version.idle.lock();
                    if idle.len() < self.inner.config.idle_instances_per_plugin {
                        idle.push(instance);
                    }
                }
                match result {
                    Ok(value) => {
                        self.succeeded(&slot);
                        Ok(value)
                    }
                    Err(error) if error.is_plugin_failure() => {
                        let detail = error.to_string();
                        Err(self.failed(&slot, &version, operation, (error, detail)))
                    }
                    Err(error) => {
                        // The plugin's own answer (a decode error): it works as designed.
                        self.succeeded(&slot);
                        metrics::counter!("lotus_plugin_errors_total", "plugin" => self.id.to_string(), "reason" => error.reason())
                            .increment(1);
                        Err(error)
                    }
                }
            }
            Err(error) => {
                // Never reuse an instance that trapped: its memory may be half-updated.
                let refused = instance.store.data().limiter.memory_refused;
                drop(instance);
                Err(self.failed(
                    &slot,
                    &version,
                    operation,
                    classify(&error, refused, panic.as_deref()),
                ))
            }
        }
    }

    fn succeeded(&self, slot: &Slot) {
        if slot.consecutive_failures.load(Ordering::Relaxed) != 0 {
            slot.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    fn failed(
        &self,
        slot: &Slot,
        version: &Version,
        operation: &str,
        (error, detail): (CallError, String),
    ) -> CallError {
        let manifest = &version.env.manifest;
        metrics::counter!("lotus_plugin_errors_total", "plugin" => self.id.to_string(), "reason" => error.reason()).increment(1);
        slot.log.push(
            LogSource::Host,
            LogLevel::Error,
            &manifest.version,
            format!("{operation} failed: {error}; {detail}"),
        );
        tracing::warn!(plugin = %self.id, version = %manifest.version, operation, reason = error.reason(), "plugin call failed: {error}");
        let failures = slot.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let threshold = self.inner.config.suspend_after_failures;
        if threshold > 0 && failures >= threshold && !slot.suspended.load(Ordering::Acquire) {
            let reason = format!("{failures} consecutive failures, the last: {error}");
            let mut stored = slot.suspension_reason.lock();
            // Only the call that flips the flag reports, so the platform alarms once.
            if !slot.suspended.swap(true, Ordering::AcqRel) {
                *stored = Some(reason.clone());
                drop(stored);
                slot.log.push(
                    LogSource::Host,
                    LogLevel::Error,
                    &manifest.version,
                    format!("suspended: {reason}"),
                );
                tracing::error!(plugin = %self.id, "plugin suspended: {reason}");
                metrics::counter!("lotus_plugin_suspensions_total", "plugin" => self.id.to_string()).increment(1);
                self.inner.host.plugin_suspended(&self.id, &reason);
            }
        }
        error
    }
}

fn wit_context(context: &MessageContext) -> v1::types::MessageContext {
    v1::types::MessageContext {
        product_key: context.product_key.clone(),
        device_name: context.device_name.clone(),
        topic: context.topic.clone(),
        at_ms: context.at_ms,
    }
}

fn max_output(store: &Store<StoreData>) -> usize {
    store.data().env.manifest.limits.max_output_bytes
}

fn wrong_exports() -> CallError {
    CallError::Failed("instance does not match its world".to_string())
}

/// A codec plugin: raw device bytes ↔ Alink JSON.
#[derive(Clone)]
pub struct Codec {
    handle: Handle,
}

impl Codec {
    pub fn id(&self) -> &str {
        &self.handle.id
    }

    /// Whether its latest call failed: a caller that runs calls on an async worker thread
    /// should then move them off it, because the next one may also run into its deadline.
    pub fn is_failing(&self) -> bool {
        self.handle.failing()
    }

    /// Raw uplink → Alink JSON request text (checked: a JSON object with a `method` string and
    /// `params` object or array, within the output limit).
    pub fn decode(
        &self,
        topic: &str,
        payload: &[u8],
        context: &MessageContext,
    ) -> Result<String, CallError> {
        let context = wit_context(context);
        self.handle.call("decode", |exports, store| {
            let Exports::Codec(codec) = exports else {
                return Ok(Err(wrong_exports()));
            };
            let limit = max_output(store);
            Ok(
                match codec.call_decode(&mut *store, topic, payload, &context)? {
                    Ok(text) => crate::alink::check_request(text, limit),
                    Err(error) => Err(codec_error(error)),
                },
            )
        })
    }

    /// Alink JSON downlink → the bytes for the device.
    pub fn encode(&self, message: &str, context: &MessageContext) -> Result<Vec<u8>, CallError> {
        let context = wit_context(context);
        self.handle.call("encode", |exports, store| {
            let Exports::Codec(codec) = exports else {
                return Ok(Err(wrong_exports()));
            };
            let limit = max_output(store);
            Ok(match codec.call_encode(&mut *store, message, &context)? {
                Ok(bytes) if bytes.len() > limit => Err(CallError::OutputTooLarge {
                    bytes: bytes.len(),
                    limit,
                }),
                Ok(bytes) => Ok(bytes),
                Err(error) => Err(codec_error(error)),
            })
        })
    }
}

fn codec_error(error: codec::CodecError) -> CallError {
    CallError::Codec {
        message: error.message,
        offset: error.offset,
        field: error.field,
    }
}

/// Most actions one rule or handler call may return; more is a runaway plugin.
const MAX_ACTIONS: usize = 1000;

fn check_actions(actions: Vec<v1::types::Action>) -> Result<Vec<v1::types::Action>, CallError> {
    if actions.len() > MAX_ACTIONS {
        return Err(CallError::InvalidOutput(format!(
            "{} actions returned, at most {MAX_ACTIONS} allowed",
            actions.len()
        )));
    }
    Ok(actions)
}

/// A rule plugin.
#[derive(Clone)]
pub struct Rule {
    handle: Handle,
}

impl Rule {
    pub fn id(&self) -> &str {
        &self.handle.id
    }

    pub fn evaluate(&self, trigger: &v1::Trigger) -> Result<Vec<v1::types::Action>, CallError> {
        self.handle.call("evaluate", |exports, store| {
            let Exports::Rule(rule) = exports else {
                return Ok(Err(wrong_exports()));
            };
            Ok(rule
                .call_evaluate(&mut *store, trigger)?
                .map_err(CallError::Plugin)
                .and_then(check_actions))
        })
    }
}

/// An event-handler plugin.
#[derive(Clone)]
pub struct EventHandler {
    handle: Handle,
}

impl EventHandler {
    pub fn id(&self) -> &str {
        &self.handle.id
    }

    pub fn handle(
        &self,
        event: &v1::types::PlatformEvent,
    ) -> Result<Vec<v1::types::Action>, CallError> {
        self.handle.call("handle", |exports, store| {
            let Exports::EventHandler(handler) = exports else {
                return Ok(Err(wrong_exports()));
            };
            Ok(handler
                .call_handle(&mut *store, event)?
                .map_err(CallError::Plugin)
                .and_then(check_actions))
        })
    }
}

/// An app plugin (ISV integration).
#[derive(Clone)]
pub struct App {
    handle: Handle,
}

impl App {
    pub fn id(&self) -> &str {
        &self.handle.id
    }

    pub fn on_message(&self, message: &v1::types::DeviceMessage) -> Result<(), CallError> {
        self.handle.call("on-message", |exports, store| {
            let Exports::App(app) = exports else {
                return Ok(Err(wrong_exports()));
            };
            Ok(app
                .call_on_message(&mut *store, message)?
                .map_err(CallError::Plugin))
        })
    }

    pub fn on_status(&self, change: &v1::types::StatusChange) -> Result<(), CallError> {
        self.handle.call("on-status", |exports, store| {
            let Exports::App(app) = exports else {
                return Ok(Err(wrong_exports()));
            };
            Ok(app
                .call_on_status(&mut *store, change)?
                .map_err(CallError::Plugin))
        })
    }

    pub fn on_event(&self, event: &v1::types::PlatformEvent) -> Result<(), CallError> {
        self.handle.call("on-event", |exports, store| {
            let Exports::App(app) = exports else {
                return Ok(Err(wrong_exports()));
            };
            Ok(app
                .call_on_event(&mut *store, event)?
                .map_err(CallError::Plugin))
        })
    }
}

/// A notification channel plugin.
#[derive(Clone)]
pub struct Channel {
    handle: Handle,
}

impl Channel {
    pub fn id(&self) -> &str {
        &self.handle.id
    }

    pub fn deliver(
        &self,
        notification: &v1::types::Notification,
    ) -> Result<v1::Delivery, CallError> {
        self.handle.call("deliver", |exports, store| {
            let Exports::Channel(channel) = exports else {
                return Ok(Err(wrong_exports()));
            };
            Ok(channel
                .call_deliver(&mut *store, notification)?
                .map_err(CallError::Plugin))
        })
    }
}
