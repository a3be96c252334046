//! The policy engine: loading, the test gate, versions, evaluation with per-thread engines.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::PolicyError;
use crate::bytecode::{self, CompiledDecisions};
use crate::log::{DecisionLog, DecisionRecord};
use crate::testing::{TestReport, TestResult};
use crate::wasm::OpaWasmPolicy;

/// The answer of a decision point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allow: bool,
    /// Why not, when denied (`data.<package>.reason`, if the policy defines it).
    pub reason: Option<String>,
    /// The version of the package that decided.
    pub version: u64,
    /// Time spent evaluating.
    pub elapsed: Duration,
}

/// One stored version of a policy file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// The package version this source produced.
    pub version: u64,
    pub file: String,
    /// Package name without `data.`, e.g. `lotus.api`.
    pub package: String,
    pub source: String,
    /// Hex SHA-256 of `source`.
    pub sha256: String,
    /// Unix time in milliseconds when it started serving.
    pub at_ms: u64,
}

/// A loaded module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleInfo {
    pub file: String,
    pub package: String,
    /// The current version of the module's package.
    pub version: u64,
    pub sha256: String,
    /// A `*_test.rego` file (run at load and replace time, never used to serve decisions).
    pub test: bool,
}

#[derive(Debug, Clone)]
struct ModuleEntry {
    package: String,
    source: Arc<str>,
    sha256: String,
}

/// An immutable set of modules with the compiled serving engine (test modules excluded).
struct Snapshot {
    generation: u64,
    modules: BTreeMap<String, ModuleEntry>,
    package_versions: BTreeMap<String, u64>,
    /// Packages that have non-test modules, i.e. can be evaluated.
    serving_packages: BTreeSet<String>,
    serving: regorus::Engine,
    /// The packages the bytecode VM serves (the others are interpreted).
    compiled: CompiledDecisions,
}

struct WasmMount {
    policy: OpaWasmPolicy,
    version: u64,
}

struct Inner {
    id: u64,
    state: RwLock<Arc<Snapshot>>,
    generation: AtomicU64,
    /// Serialises changes (replace, remove, rollback, mounts).
    write: Mutex<()>,
    history: Mutex<BTreeMap<String, Vec<PolicyVersion>>>,
    wasm: RwLock<HashMap<String, Arc<WasmMount>>>,
    wasm_versions: Mutex<HashMap<String, u64>>,
    log: RwLock<Option<Arc<DecisionLog>>>,
    subscribers: Mutex<Vec<mpsc::Sender<u64>>>,
}

/// Evaluates Rego v1 policies. Cheap to clone (an `Arc`), `Send + Sync`.
///
/// Evaluation never takes a lock held by another evaluation: each thread keeps its own clone of
/// the compiled regorus engine, keyed by this engine's identity and generation, and re-clones it
/// after a swap.
#[derive(Clone)]
pub struct PolicyEngine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("generation", &self.generation())
            .field("modules", &self.inner.state.read().modules.len())
            .finish()
    }
}

static NEXT_ENGINE_ID: AtomicU64 = AtomicU64::new(1);

struct CachedEngine {
    engine_id: u64,
    generation: u64,
    engine: regorus::Engine,
}

thread_local! {
    static THREAD_ENGINES: RefCell<Vec<CachedEngine>> = const { RefCell::new(Vec::new()) };
}

/// Per-thread engine clones kept for at most this many policy engines.
const THREAD_CACHE_ENGINES: usize = 4;

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Is this file a test module?
pub fn is_test_file(file: &str) -> bool {
    file.ends_with("_test.rego")
}

/// Checks a policy file name: relative, `/`-separated, ending in `.rego`, no `..` or empty parts.
pub(crate) fn check_file_name(file: &str) -> Result<(), PolicyError> {
    let ok = file.ends_with(".rego")
        && !file.starts_with('/')
        && !file.contains('\\')
        && file
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != ".." && !p.starts_with('.'));
    if ok {
        Ok(())
    } else {
        Err(PolicyError::InvalidFileName(file.to_string()))
    }
}

/// Every `*.rego` file under `dir`, as `/`-separated names relative to `dir`, with its source.
pub(crate) fn read_dir_sources(dir: &Path) -> Result<BTreeMap<String, Arc<str>>, PolicyError> {
    fn walk(
        root: &Path,
        dir: &Path,
        out: &mut BTreeMap<String, Arc<str>>,
    ) -> Result<(), PolicyError> {
        let entries = std::fs::read_dir(dir).map_err(|e| PolicyError::io(dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| PolicyError::io(dir, e))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let ty = entry.file_type().map_err(|e| PolicyError::io(&path, e))?;
            if ty.is_dir() {
                walk(root, &path, out)?;
            } else if name.ends_with(".rego") {
                let source =
                    std::fs::read_to_string(&path).map_err(|e| PolicyError::io(&path, e))?;
                out.insert(relative_name(root, &path), source.into());
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

pub(crate) fn relative_name(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// The result of compiling a set of sources and running their tests.
pub(crate) struct Built {
    pub packages: BTreeMap<String, String>,
    pub serving: regorus::Engine,
    pub report: TestReport,
}

fn parse_error(file: &str, e: anyhow::Error) -> PolicyError {
    PolicyError::Parse {
        file: file.to_string(),
        message: format!("{e:#}"),
    }
}

fn new_regorus() -> regorus::Engine {
    let mut e = regorus::Engine::new();
    // Rego v1 is regorus' default; say so explicitly.
    e.set_rego_v0(false);
    e.set_strict_builtin_errors(false);
    e
}

/// Forces regorus to analyse and prepare the modules now (it is lazy), so compile errors surface
/// at load time and clones start prepared.
fn prepare(engine: &mut regorus::Engine) -> Result<(), PolicyError> {
    engine
        .eval_query("true".to_string(), false)
        .map(|_| ())
        .map_err(|e| PolicyError::Compile {
            message: format!("{e:#}"),
        })
}

/// The names of the `test_*` rules of each module, in file order.
fn test_rules(engine: &mut regorus::Engine) -> Vec<Vec<String>> {
    use regorus::unstable::{Rule, RuleHead};
    engine
        .get_modules()
        .iter()
        .map(|m| {
            let mut names: Vec<String> = Vec::new();
            for rule in &m.policy {
                if let Rule::Spec {
                    head: RuleHead::Compr { refr, .. },
                    ..
                } = rule.as_ref()
                {
                    let name = refr.span().text();
                    if name.starts_with("test_")
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        && !names.iter().any(|n| n == name)
                    {
                        names.push(name.to_string());
                    }
                }
            }
            names
        })
        .collect()
}

/// Parses every module, runs every test and compiles the serving engine (without test modules).
/// Fails on a parse or compile error; failing tests are in the report.
pub(crate) fn build(sources: &BTreeMap<String, Arc<str>>) -> Result<Built, PolicyError> {
    let mut all = new_regorus();
    let mut serving = new_regorus();
    let mut packages = BTreeMap::new();
    for (file, source) in sources {
        let package = all
            .add_policy(file.clone(), source.to_string())
            .map_err(|e| parse_error(file, e))?;
        let package = package
            .strip_prefix("data.")
            .unwrap_or(&package)
            .to_string();
        if !is_test_file(file) {
            serving
                .add_policy(file.clone(), source.to_string())
                .map_err(|e| parse_error(file, e))?;
        }
        packages.insert(file.clone(), package);
    }
    prepare(&mut all)?;
    prepare(&mut serving)?;
    let tests = test_rules(&mut all);
    let mut results = Vec::new();
    for ((file, package), names) in packages.iter().zip(tests) {
        for name in names {
            let path = format!("data.{package}.{name}");
            let started = Instant::now();
            let outcome = all.eval_rule(path);
            let duration = started.elapsed();
            let (passed, error) = match outcome {
                Ok(regorus::Value::Bool(true)) => (true, None),
                Ok(regorus::Value::Undefined) => (
                    false,
                    Some("undefined: a condition of the test did not hold".to_string()),
                ),
                Ok(other) => (
                    false,
                    Some(format!(
                        "evaluated to {}, expected true",
                        other.to_json_str().unwrap_or_else(|_| format!("{other:?}"))
                    )),
                ),
                Err(e) => (false, Some(format!("{e:#}"))),
            };
            results.push(TestResult {
                package: package.clone(),
                name,
                file: file.clone(),
                passed,
                error,
                duration,
            });
        }
    }
    Ok(Built {
        packages,
        serving,
        report: TestReport { results },
    })
}

/// Builds and requires every test to pass.
fn build_gated(sources: &BTreeMap<String, Arc<str>>) -> Result<Built, PolicyError> {
    let built = build(sources)?;
    let failures: Vec<(String, String)> = built
        .report
        .results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| {
            (
                format!("{}.{} ({})", r.package, r.name, r.file),
                r.error.clone().unwrap_or_default(),
            )
        })
        .collect();
    if failures.is_empty() {
        Ok(built)
    } else {
        Err(PolicyError::TestsFailed { failures })
    }
}

fn to_json(v: regorus::Value) -> Value {
    match v {
        regorus::Value::Undefined => Value::Null,
        v => serde_json::to_value(&v).unwrap_or(Value::Null),
    }
}

impl PolicyEngine {
    /// Loads every `*.rego` file under `dir` (recursively; files ending `_test.rego` are tests),
    /// compiles them, runs every test and refuses to start on a parse error, a compile error or a
    /// failing test. Every package starts at version 1.
    pub fn from_dir(dir: &Path) -> Result<PolicyEngine, PolicyError> {
        let sources = read_dir_sources(dir)?;
        Self::from_map(sources)
    }

    /// Like [`from_dir`](Self::from_dir) from `(file name, source)` pairs.
    pub fn from_sources<I, F, S>(sources: I) -> Result<PolicyEngine, PolicyError>
    where
        I: IntoIterator<Item = (F, S)>,
        F: Into<String>,
        S: Into<String>,
    {
        let mut map = BTreeMap::new();
        for (f, s) in sources {
            let f = f.into();
            check_file_name(&f)?;
            map.insert(f, Arc::<str>::from(s.into()));
        }
        Self::from_map(map)
    }

    fn from_map(sources: BTreeMap<String, Arc<str>>) -> Result<PolicyEngine, PolicyError> {
        let built = build_gated(&sources)?;
        let at_ms = now_ms();
        let mut package_versions = BTreeMap::new();
        let mut modules = BTreeMap::new();
        let mut history = BTreeMap::new();
        for (file, source) in sources {
            let package = built.packages[&file].clone();
            package_versions.insert(package.clone(), 1);
            let sha256 = sha256_hex(&source);
            history.insert(
                file.clone(),
                vec![PolicyVersion {
                    version: 1,
                    file: file.clone(),
                    package: package.clone(),
                    source: source.to_string(),
                    sha256: sha256.clone(),
                    at_ms,
                }],
            );
            modules.insert(
                file,
                ModuleEntry {
                    package,
                    source,
                    sha256,
                },
            );
        }
        let serving_packages = serving_packages(&modules);
        let compiled = CompiledDecisions::compile(&built.serving, &serving_packages);
        let snapshot = Snapshot {
            generation: 1,
            modules,
            package_versions,
            serving_packages,
            serving: built.serving,
            compiled,
        };
        Ok(PolicyEngine {
            inner: Arc::new(Inner {
                id: NEXT_ENGINE_ID.fetch_add(1, Ordering::Relaxed),
                state: RwLock::new(Arc::new(snapshot)),
                generation: AtomicU64::new(1),
                write: Mutex::new(()),
                history: Mutex::new(history),
                wasm: RwLock::new(HashMap::new()),
                wasm_versions: Mutex::new(HashMap::new()),
                log: RwLock::new(None),
                subscribers: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Attaches a decision log: from now on [`decide`](Self::decide) records its decisions.
    pub fn set_decision_log(&self, log: Option<Arc<DecisionLog>>) {
        *self.inner.log.write() = log;
    }

    pub fn decision_log(&self) -> Option<Arc<DecisionLog>> {
        self.inner.log.read().clone()
    }

    /// A counter bumped on every swap (replace, remove, rollback, wasm mount); callers compare it
    /// to invalidate their caches. Starts at 1.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Same as [`generation`](Self::generation).
    pub fn version(&self) -> u64 {
        self.generation()
    }

    /// A channel that receives the new generation after every swap. Dropping the receiver
    /// unsubscribes.
    pub fn subscribe(&self) -> mpsc::Receiver<u64> {
        let (tx, rx) = mpsc::channel();
        self.inner.subscribers.lock().push(tx);
        rx
    }

    /// The current version of a package (Rego or mounted wasm).
    pub fn package_version(&self, package: &str) -> Option<u64> {
        if let Some(m) = self.inner.wasm.read().get(package) {
            return Some(m.version);
        }
        self.inner
            .state
            .read()
            .package_versions
            .get(package)
            .copied()
    }

    /// The loaded modules, by file name.
    pub fn modules(&self) -> Vec<ModuleInfo> {
        let snap = self.inner.state.read().clone();
        snap.modules
            .iter()
            .map(|(file, m)| ModuleInfo {
                file: file.clone(),
                package: m.package.clone(),
                version: snap.package_versions.get(&m.package).copied().unwrap_or(1),
                sha256: m.sha256.clone(),
                test: is_test_file(file),
            })
            .collect()
    }

    /// The current source of a file.
    pub fn source(&self, file: &str) -> Option<String> {
        self.inner
            .state
            .read()
            .modules
            .get(file)
            .map(|m| m.source.to_string())
    }

    /// Every version of a file that served, oldest first (in memory, since start).
    pub fn history(&self, file: &str) -> Vec<PolicyVersion> {
        self.inner
            .history
            .lock()
            .get(file)
            .cloned()
            .unwrap_or_default()
    }

    /// Replaces (or adds) one file: parses it, compiles it with every other current module, runs
    /// every test, and only if all pass swaps it in atomically. Returns the new version of the
    /// file's package. On error nothing changes. The same source as the current one is a no-op
    /// that returns the current version.
    pub fn replace(&self, file_name: &str, source: &str) -> Result<u64, PolicyError> {
        check_file_name(file_name)?;
        let _w = self.inner.write.lock();
        let cur = self.inner.state.read().clone();
        let sha = sha256_hex(source);
        if let Some(m) = cur.modules.get(file_name)
            && m.sha256 == sha
        {
            return Ok(cur.package_versions.get(&m.package).copied().unwrap_or(1));
        }
        let mut sources: BTreeMap<String, Arc<str>> = cur
            .modules
            .iter()
            .map(|(f, m)| (f.clone(), m.source.clone()))
            .collect();
        sources.insert(file_name.to_string(), source.into());
        let built = build_gated(&sources)?;
        Ok(self.commit(&cur, sources, built, file_name))
    }

    /// Removes a file, if the remaining modules still compile and pass their tests. Returns the
    /// new generation.
    pub fn remove(&self, file_name: &str) -> Result<u64, PolicyError> {
        let _w = self.inner.write.lock();
        let cur = self.inner.state.read().clone();
        if !cur.modules.contains_key(file_name) {
            return Err(PolicyError::UnknownFile(file_name.to_string()));
        }
        let mut sources: BTreeMap<String, Arc<str>> = cur
            .modules
            .iter()
            .map(|(f, m)| (f.clone(), m.source.clone()))
            .collect();
        sources.remove(file_name);
        let built = build_gated(&sources)?;
        self.commit(&cur, sources, built, file_name);
        Ok(self.generation())
    }

    /// Restores the previous source of a file as a new version, through the same test gate. For
    /// a file that was removed, restores its last source.
    pub fn rollback(&self, file_name: &str) -> Result<u64, PolicyError> {
        let loaded = self.inner.state.read().modules.contains_key(file_name);
        let previous = {
            let history = self.inner.history.lock();
            let versions = history
                .get(file_name)
                .ok_or_else(|| PolicyError::UnknownFile(file_name.to_string()))?;
            let back = if loaded { 2 } else { 1 };
            versions
                .len()
                .checked_sub(back)
                .map(|i| versions[i].source.clone())
                .ok_or_else(|| PolicyError::NoPreviousVersion(file_name.to_string()))?
        };
        self.replace(file_name, &previous)
    }

    /// Swaps in a built set of sources; `changed` is the file that was added, replaced or removed.
    fn commit(
        &self,
        cur: &Snapshot,
        sources: BTreeMap<String, Arc<str>>,
        built: Built,
        changed: &str,
    ) -> u64 {
        let mut package_versions = cur.package_versions.clone();
        let old_package = cur.modules.get(changed).map(|m| m.package.clone());
        let new_package = built.packages.get(changed).cloned();
        let affected: BTreeSet<&String> = old_package.iter().chain(new_package.iter()).collect();
        for p in affected {
            let v = package_versions.entry(p.clone()).or_insert(0);
            *v += 1;
        }
        let mut modules = BTreeMap::new();
        for (file, source) in sources {
            let package = built.packages[&file].clone();
            let sha256 = cur
                .modules
                .get(&file)
                .filter(|m| file != changed && m.package == package)
                .map(|m| m.sha256.clone())
                .unwrap_or_else(|| sha256_hex(&source));
            modules.insert(
                file,
                ModuleEntry {
                    package,
                    source,
                    sha256,
                },
            );
        }
        let version = new_package
            .as_ref()
            .or(old_package.as_ref())
            .and_then(|p| package_versions.get(p).copied())
            .unwrap_or(1);
        if let (Some(package), Some(m)) = (&new_package, modules.get(changed)) {
            self.inner
                .history
                .lock()
                .entry(changed.to_string())
                .or_default()
                .push(PolicyVersion {
                    version,
                    file: changed.to_string(),
                    package: package.clone(),
                    source: m.source.to_string(),
                    sha256: m.sha256.clone(),
                    at_ms: now_ms(),
                });
        }
        let generation = self.inner.generation.load(Ordering::Acquire) + 1;
        let serving_packages = serving_packages(&modules);
        let compiled = CompiledDecisions::compile(&built.serving, &serving_packages);
        let snapshot = Snapshot {
            generation,
            modules,
            package_versions,
            serving_packages,
            serving: built.serving,
            compiled,
        };
        *self.inner.state.write() = Arc::new(snapshot);
        self.inner.generation.store(generation, Ordering::Release);
        self.notify(generation);
        version
    }

    fn notify(&self, generation: u64) {
        self.inner
            .subscribers
            .lock()
            .retain(|tx| tx.send(generation).is_ok());
    }

    /// Runs `f` with this thread's clone of the serving engine (re-cloned after a swap).
    fn with_serving<R>(&self, f: impl FnOnce(&mut regorus::Engine, &Snapshot) -> R) -> R {
        let snap = self.inner.state.read().clone();
        THREAD_ENGINES.with(|cell| {
            let mut cache = cell.borrow_mut();
            let id = self.inner.id;
            let i = match cache.iter().position(|c| c.engine_id == id) {
                Some(i) => {
                    if cache[i].generation != snap.generation {
                        cache[i].engine = snap.serving.clone();
                        cache[i].generation = snap.generation;
                    }
                    i
                }
                None => {
                    if cache.len() >= THREAD_CACHE_ENGINES {
                        cache.remove(0);
                    }
                    cache.push(CachedEngine {
                        engine_id: id,
                        generation: snap.generation,
                        engine: snap.serving.clone(),
                    });
                    cache.len() - 1
                }
            };
            f(&mut cache[i].engine, &snap)
        })
    }

    /// How `package`'s decisions are made now: `"bytecode"` (regorus' VM, checked against the
    /// interpreter on a sample; `"bytecode (one pass)"` when `allow` and `reason` are answered
    /// by one run), `"interpreter"`, `"wasm"` (an OPA bundle), or `None` when no
    /// such package is loaded.
    pub fn served_by(&self, package: &str) -> Option<&'static str> {
        if self.inner.wasm.read().contains_key(package) {
            return Some("wasm");
        }
        let snap = self.inner.state.read().clone();
        if !snap.serving_packages.contains(package) {
            return None;
        }
        Some(match snap.compiled.get(package) {
            Some(compiled) if compiled.one_pass() => "bytecode (one pass)",
            Some(_) => "bytecode",
            None => "interpreter",
        })
    }

    /// Evaluates a rule, e.g. `data.lotus.api.allow`, with `input`. Undefined is `Null`.
    pub fn eval(&self, rule_path: &str, input: &Value) -> Result<Value, PolicyError> {
        let input = to_regorus(input);
        self.with_serving(|engine, _| {
            engine.set_input(input);
            engine
                .eval_rule(rule_path.to_string())
                .map(to_json)
                .map_err(|e| PolicyError::Eval {
                    path: rule_path.to_string(),
                    message: format!("{e:#}"),
                })
        })
    }

    /// Evaluates `data.<package>.allow` (undefined = false) and, when denied,
    /// `data.<package>.reason`. A package mounted from an OPA Wasm bundle is evaluated there.
    ///
    /// When a decision log is attached, the decision is recorded with, by convention,
    /// `principal` = `input.principal` (or `input.plugin`), `resource` = `input.resource` (or
    /// `input.topic`, `input.request`, `input.model`), `action` = `input.action` (or
    /// `input.capability`). Use [`decide_logged`](Self::decide_logged) to pass them explicitly.
    pub fn decide(&self, package: &str, input: &Value) -> Result<Decision, PolicyError> {
        let decision = self.decide_unlogged(package, input)?;
        if let Some(log) = self.inner.log.read().as_ref() {
            let pick = |keys: &[&str]| {
                keys.iter()
                    .find_map(|k| input.get(*k).filter(|v| !v.is_null()).cloned())
                    .unwrap_or(Value::Null)
            };
            let action = match pick(&["action", "capability"]) {
                Value::String(s) => s,
                Value::Null => String::new(),
                other => other.to_string(),
            };
            log.record(record(
                package,
                pick(&["principal", "plugin"]),
                pick(&["resource", "topic", "request", "model"]),
                action,
                &decision,
            ));
        }
        Ok(decision)
    }

    /// [`decide`](Self::decide) with the logged principal, resource and action given explicitly.
    pub fn decide_logged(
        &self,
        package: &str,
        input: &Value,
        principal: Value,
        resource: Value,
        action: &str,
    ) -> Result<Decision, PolicyError> {
        let decision = self.decide_unlogged(package, input)?;
        if let Some(log) = self.inner.log.read().as_ref() {
            log.record(record(
                package,
                principal,
                resource,
                action.to_string(),
                &decision,
            ));
        }
        Ok(decision)
    }

    /// [`decide`](Self::decide) without recording anything.
    pub fn decide_unlogged(&self, package: &str, input: &Value) -> Result<Decision, PolicyError> {
        let started = Instant::now();
        let mount = self.inner.wasm.read().get(package).cloned();
        if let Some(m) = mount {
            return Self::decide_wasm(&m, input, started);
        }
        self.decide_rego(package, to_regorus(input), started)
    }

    /// [`decide_logged`](Self::decide_logged) with an input already built as a regorus value.
    /// Converting JSON into regorus values cost as much as the decision itself for inputs with
    /// many small objects (a product's topic classes), so a hot caller builds the value once
    /// from parts it keeps.
    pub(crate) fn decide_value_logged(
        &self,
        package: &str,
        input: regorus::Value,
        principal: Value,
        resource: Value,
        action: &str,
    ) -> Result<Decision, PolicyError> {
        let started = Instant::now();
        let mount = self.inner.wasm.read().get(package).cloned();
        let decision = match mount {
            Some(m) => Self::decide_wasm(&m, &to_json(input), started)?,
            None => self.decide_rego(package, input, started)?,
        };
        if let Some(log) = self.inner.log.read().as_ref() {
            log.record(record(
                package,
                principal,
                resource,
                action.to_string(),
                &decision,
            ));
        }
        Ok(decision)
    }

    fn decide_wasm(
        m: &WasmMount,
        input: &Value,
        started: Instant,
    ) -> Result<Decision, PolicyError> {
        let out = m.policy.evaluate(input)?;
        let result = out.get(0).and_then(|r| r.get("result"));
        let allow = match result {
            Some(Value::Bool(b)) => *b,
            Some(r) => r.get("allow") == Some(&Value::Bool(true)),
            None => false,
        };
        let reason = if allow {
            None
        } else {
            result
                .and_then(|r| r.get("reason"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        Ok(Decision {
            allow,
            reason,
            version: m.version,
            elapsed: started.elapsed(),
        })
    }

    /// Decides from the Rego sources: bytecode when the package compiled, checked against the
    /// interpreter on a sample, else the interpreter.
    fn decide_rego(
        &self,
        package: &str,
        input: regorus::Value,
        started: Instant,
    ) -> Result<Decision, PolicyError> {
        let snap = self.inner.state.read().clone();
        if let Some(compiled) = snap.compiled.get(package) {
            let check = compiled.check_next();
            match bytecode::decide(
                self.inner.id,
                snap.generation,
                package,
                compiled,
                input.clone(),
            ) {
                Ok(answer) => {
                    let version = snap.package_versions.get(package).copied().unwrap_or(1);
                    let decision = Decision {
                        allow: answer.allow,
                        reason: answer.reason,
                        version,
                        elapsed: started.elapsed(),
                    };
                    if !check {
                        return Ok(decision);
                    }
                    let reference = self.interpret(package, input, started)?;
                    if reference.version == version
                        && (reference.allow, &reference.reason)
                            != (decision.allow, &decision.reason)
                    {
                        compiled.disable(
                            package,
                            &format!(
                                "bytecode allow={} reason={:?}, interpreter allow={} reason={:?}",
                                decision.allow, decision.reason, reference.allow, reference.reason
                            ),
                        );
                        return Ok(reference);
                    }
                    return Ok(decision);
                }
                Err(e) => compiled.disable(package, &format!("{e:#}")),
            }
        }
        self.interpret(package, input, started)
    }

    /// Decides with the tree-walking interpreter, the reference the bytecode is checked against.
    fn interpret(
        &self,
        package: &str,
        input: regorus::Value,
        started: Instant,
    ) -> Result<Decision, PolicyError> {
        self.with_serving(|engine, snap| {
            if !snap.serving_packages.contains(package) {
                return Err(PolicyError::Eval {
                    path: format!("data.{package}"),
                    message: format!(
                        "no policy package {package} is loaded (packages: {})",
                        snap.serving_packages
                            .iter()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
            engine.set_input(input);
            let eval = |engine: &mut regorus::Engine, rule: &str| {
                let path = format!("data.{package}.{rule}");
                engine
                    .eval_rule(path.clone())
                    .map_err(|e| PolicyError::Eval {
                        path,
                        message: format!("{e:#}"),
                    })
            };
            let allow = matches!(eval(engine, "allow")?, regorus::Value::Bool(true));
            let reason = if allow {
                None
            } else {
                match eval(engine, "reason") {
                    Ok(regorus::Value::String(s)) => Some(s.to_string()),
                    _ => None,
                }
            };
            Ok(Decision {
                allow,
                reason,
                version: snap.package_versions.get(package).copied().unwrap_or(1),
                elapsed: started.elapsed(),
            })
        })
    }

    /// Serves decision point `package` from a prebuilt OPA Wasm module (`opa build -t wasm`):
    /// [`decide`](Self::decide) then evaluates `entrypoint` and reads `allow` (and `reason`) from
    /// the result set `[{"result": {"allow": …}}]` (a boolean result is taken as `allow`).
    /// Replaces an earlier mount; returns the mount's version.
    pub fn mount_wasm(
        &self,
        package: &str,
        path: &Path,
        entrypoint: &str,
    ) -> Result<u64, PolicyError> {
        let policy = OpaWasmPolicy::load(path, entrypoint)?;
        let _w = self.inner.write.lock();
        let version = {
            let mut versions = self.inner.wasm_versions.lock();
            let v = versions.entry(package.to_string()).or_insert(0);
            *v += 1;
            *v
        };
        self.inner
            .wasm
            .write()
            .insert(package.to_string(), Arc::new(WasmMount { policy, version }));
        let generation = self.inner.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.notify(generation);
        Ok(version)
    }

    /// Stops serving `package` from a wasm bundle. Returns whether one was mounted.
    pub fn unmount_wasm(&self, package: &str) -> bool {
        let _w = self.inner.write.lock();
        let removed = self.inner.wasm.write().remove(package).is_some();
        if removed {
            let generation = self.inner.generation.fetch_add(1, Ordering::AcqRel) + 1;
            self.notify(generation);
        }
        removed
    }

    /// [`replace`](Self::replace), then writes the source to `dir/file` atomically (a temporary
    /// file renamed over it) so a restart loads it. A watcher on `dir` sees the same SHA-256 and
    /// does not apply it again. If writing fails the new version keeps serving and the error is
    /// returned.
    pub fn write_file(&self, dir: &Path, file: &str, source: &str) -> Result<u64, PolicyError> {
        let version = self.replace(file, source)?;
        persist(dir, file, source)?;
        Ok(version)
    }

    /// [`remove`](Self::remove), then deletes `dir/file`.
    pub fn delete_file(&self, dir: &Path, file: &str) -> Result<u64, PolicyError> {
        let generation = self.remove(file)?;
        let path = dir.join(file);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(generation),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(generation),
            Err(e) => Err(PolicyError::io(path, e)),
        }
    }

    /// SHA-256 of the current source of `file`, if loaded.
    pub(crate) fn sha256_of(&self, file: &str) -> Option<String> {
        self.inner
            .state
            .read()
            .modules
            .get(file)
            .map(|m| m.sha256.clone())
    }
}

fn serving_packages(modules: &BTreeMap<String, ModuleEntry>) -> BTreeSet<String> {
    modules
        .iter()
        .filter(|(f, _)| !is_test_file(f))
        .map(|(_, m)| m.package.clone())
        .collect()
}

fn record(
    package: &str,
    principal: Value,
    resource: Value,
    action: String,
    d: &Decision,
) -> DecisionRecord {
    DecisionRecord {
        at_ms: now_ms(),
        point: package.to_string(),
        principal,
        resource,
        action,
        allow: d.allow,
        reason: d.reason.clone(),
        version: d.version,
        latency_us: d.elapsed.as_micros() as u64,
    }
}

fn to_regorus(input: &Value) -> regorus::Value {
    use serde::Deserialize as _;
    regorus::Value::deserialize(input).unwrap_or_else(|_| regorus::Value::from(input.clone()))
}

/// Writes `dir/file` atomically: a temporary file in the same directory, then a rename.
pub(crate) fn persist(dir: &Path, file: &str, source: &str) -> Result<(), PolicyError> {
    use std::io::Write;
    check_file_name(file)?;
    let path: PathBuf = dir.join(file);
    let parent = path.parent().unwrap_or(dir).to_path_buf();
    std::fs::create_dir_all(&parent).map_err(|e| PolicyError::io(&parent, e))?;
    static TMP: AtomicU64 = AtomicU64::new(0);
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(
        ".{base}.tmp-{}-{}",
        std::process::id(),
        TMP.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(source.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(PolicyError::io(path, e));
    }
    Ok(())
}
