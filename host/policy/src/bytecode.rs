//! Decision points compiled to regorus' bytecode VM (RVM).
//!
//! The tree-walking interpreter re-prepares its evaluation state on every call, which put an
//! uncached decision at 20–120 µs; the same rules run as RVM bytecode in 3–17 µs. The policy tests
//! (`with input as …`) can only run in the interpreter — the RVM compiler does not support
//! `with` — so the interpreter stays the reference: a package whose rules the compiler refuses is
//! served by the interpreter, and every compiled package's first decisions, then a sample, are
//! checked against the interpreter. On any disagreement the package goes back to the interpreter
//! for the rest of that policy version and the disagreement is logged as an error.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::program::Program;
use regorus::rvm::vm::RegoVM;

/// Decisions checked against the interpreter after a package is compiled, then one in
/// [`CHECK_EVERY`].
const CHECK_FIRST: u64 = 32;
const CHECK_EVERY: u64 = 1024;

/// A rule the host adds, for compilation only, to a package that has both `allow` and
/// `reason`: it answers both in one run of the VM. The VM forgets rule results between entry
/// points, so asking `allow` and then `reason` (which itself asks `not allow`) evaluated `allow`
/// twice on every deny; here `allow` is evaluated once and `reason` reads it. The name cannot
/// clash with an author's rule in practice, and authors never see it.
const DECISION_RULE: &str = "lotus_host_decision_v1";

fn decision_module(package: &str) -> String {
    format!(
        "package {package}\n\n\
         {DECISION_RULE} := {{\"allow\": true}} if {{\n\tallow\n}} \
         else := {{\"allow\": false, \"reason\": reason}} if {{\n\tis_string(reason)\n}} \
         else := {{\"allow\": false}}\n"
    )
}

/// How a compiled package is asked.
enum EntryPoints {
    /// `allow` then, when denied, `reason` (a package without `reason`, or one the combined
    /// rule could not be compiled for).
    Separate {
        allow: String,
        reason: Option<String>,
    },
    /// [`DECISION_RULE`]: `{"allow": bool, "reason"?: string}` in one run.
    Combined(String),
}

/// One package's `allow` (and `reason`, when defined) as bytecode.
pub(crate) struct CompiledDecision {
    policy: regorus::CompiledPolicy,
    program: Arc<Program>,
    entry: EntryPoints,
    decisions: AtomicU64,
    disabled: AtomicBool,
}

/// What a compiled decision answered: `allow`, and `reason` when denied.
pub(crate) struct Answer {
    pub allow: bool,
    pub reason: Option<String>,
}

impl CompiledDecision {
    /// Compiles `data.<package>.allow` and `data.<package>.reason` (in one entry point when
    /// the package has both); `None` when the package has no `allow` rule or uses what the RVM
    /// compiler does not support.
    fn compile(serving: &regorus::Engine, package: &str) -> Option<CompiledDecision> {
        let allow = format!("data.{package}.allow");
        let reason = format!("data.{package}.reason");
        let has_reason = serving
            .clone()
            .compile_with_entrypoint(&allow.as_str().into())
            .ok()?
            .get_rules()
            .contains_key(&reason);
        if has_reason && let Some(combined) = Self::compile_combined(serving, package) {
            return Some(combined);
        }
        let mut engine = serving.clone();
        let policy = match engine.compile_with_entrypoint(&allow.as_str().into()) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(package, error = %e, "policy package served by the interpreter");
                return None;
            }
        };
        let entry_points: Vec<&str> = if has_reason {
            vec![&allow, &reason]
        } else {
            vec![&allow]
        };
        match Compiler::compile_from_policy(&policy, &entry_points) {
            Ok(program) => Some(CompiledDecision {
                policy,
                program,
                entry: EntryPoints::Separate {
                    allow,
                    reason: has_reason.then_some(reason),
                },
                decisions: AtomicU64::new(0),
                disabled: AtomicBool::new(false),
            }),
            Err(e) => {
                tracing::info!(
                    package,
                    error = %e,
                    "policy package served by the interpreter: the bytecode compiler refused it"
                );
                None
            }
        }
    }

    /// The package with [`DECISION_RULE`] added, compiled to that one entry point.
    fn compile_combined(serving: &regorus::Engine, package: &str) -> Option<CompiledDecision> {
        let rule = format!("data.{package}.{DECISION_RULE}");
        let mut engine = serving.clone();
        let added = engine.add_policy(
            format!("lotus-host/{package}/decision.rego"),
            decision_module(package),
        );
        let compiled = added
            .and_then(|_| engine.compile_with_entrypoint(&rule.as_str().into()))
            .and_then(|policy| {
                let program = Compiler::compile_from_policy(&policy, &[rule.as_str()])?;
                Ok((policy, program))
            });
        match compiled {
            Ok((policy, program)) => Some(CompiledDecision {
                policy,
                program,
                entry: EntryPoints::Combined(rule),
                decisions: AtomicU64::new(0),
                disabled: AtomicBool::new(false),
            }),
            Err(e) => {
                tracing::debug!(package, error = %e, "allow and reason compiled separately");
                None
            }
        }
    }

    /// Whether `allow` and `reason` are answered by one run of the VM.
    pub fn one_pass(&self) -> bool {
        matches!(self.entry, EntryPoints::Combined(_))
    }

    /// Should this decision also be made by the interpreter and compared?
    pub fn check_next(&self) -> bool {
        let n = self.decisions.fetch_add(1, Ordering::Relaxed);
        n < CHECK_FIRST || n.is_multiple_of(CHECK_EVERY)
    }

    /// Stops serving from bytecode after it disagreed with the interpreter.
    pub fn disable(&self, package: &str, detail: &str) {
        if !self.disabled.swap(true, Ordering::Relaxed) {
            tracing::error!(
                package,
                detail,
                "compiled policy disagreed with the interpreter; the interpreter serves this package from now on"
            );
        }
    }

    fn vm(&self) -> RegoVM {
        let mut vm = RegoVM::new_with_policy(self.policy.clone());
        vm.load_program(self.program.clone());
        vm
    }
}

/// The compiled decisions of one policy version, by package.
#[derive(Default)]
pub(crate) struct CompiledDecisions {
    packages: HashMap<String, Arc<CompiledDecision>>,
}

impl CompiledDecisions {
    pub fn compile(serving: &regorus::Engine, packages: &BTreeSet<String>) -> CompiledDecisions {
        let packages = packages
            .iter()
            .filter_map(|p| Some((p.clone(), Arc::new(CompiledDecision::compile(serving, p)?))))
            .collect();
        CompiledDecisions { packages }
    }

    pub fn get(&self, package: &str) -> Option<&Arc<CompiledDecision>> {
        self.packages
            .get(package)
            .filter(|d| !d.disabled.load(Ordering::Relaxed))
    }
}

struct CachedVm {
    /// The policy engine's identity and generation, and the package.
    key: (u64, u64, Arc<str>),
    vm: RegoVM,
}

thread_local! {
    static THREAD_VMS: RefCell<Vec<CachedVm>> = const { RefCell::new(Vec::new()) };
}

/// Per-thread VMs kept (a node has five decision points; a test process may hold a few engines).
const THREAD_CACHE_VMS: usize = 16;

/// Runs `decision` with `input` on this thread's VM for it (made on first use per version).
pub(crate) fn decide(
    engine_id: u64,
    generation: u64,
    package: &str,
    decision: &CompiledDecision,
    input: regorus::Value,
) -> anyhow::Result<Answer> {
    THREAD_VMS.with(|cell| {
        let mut vms = cell.borrow_mut();
        let i = match vms
            .iter()
            .position(|c| c.key.0 == engine_id && c.key.1 == generation && &*c.key.2 == package)
        {
            Some(i) => i,
            None => {
                vms.retain(|c| c.key.0 != engine_id || &*c.key.2 != package);
                if vms.len() >= THREAD_CACHE_VMS {
                    vms.remove(0);
                }
                let mut vm = decision.vm();
                vm.set_data(regorus::Value::new_object())?;
                vms.push(CachedVm {
                    key: (engine_id, generation, package.into()),
                    vm,
                });
                vms.len() - 1
            }
        };
        let vm = &mut vms[i].vm;
        vm.set_input(input);
        match &decision.entry {
            EntryPoints::Combined(rule) => {
                let answer = vm.execute_entry_point_by_name(rule)?;
                let allow = matches!(answer["allow"], regorus::Value::Bool(true));
                let reason = match &answer["reason"] {
                    regorus::Value::String(s) if !allow => Some(s.to_string()),
                    _ => None,
                };
                Ok(Answer { allow, reason })
            }
            EntryPoints::Separate { allow, reason } => {
                let allow = matches!(
                    vm.execute_entry_point_by_name(allow)?,
                    regorus::Value::Bool(true)
                );
                let reason = match (reason, allow) {
                    (Some(rule), false) => match vm.execute_entry_point_by_name(rule)? {
                        regorus::Value::String(s) => Some(s.to_string()),
                        _ => None,
                    },
                    _ => None,
                };
                Ok(Answer { allow, reason })
            }
        }
    })
}
