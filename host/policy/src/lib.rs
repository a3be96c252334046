//! Permission decisions as OPA/Rego v1 policies.
//!
//! - [`PolicyEngine`] loads `policies/` with [regorus](https://docs.rs/regorus) (Rego v1), runs
//!   every `test_*` rule of the `*_test.rego` files and refuses to start, or to accept a change,
//!   while one fails. It answers `eval` / `decide` from per-thread engine clones, keeps every
//!   file's versions in memory (`replace`, `rollback`, `history`), hot-reloads from the directory
//!   (`watch`) and can serve a decision point from a prebuilt OPA Wasm bundle (`mount_wasm`).
//! - [`DecisionLog`] keeps every deny and a sample of allows.
//! - [`run_tests`] / [`eval_file_input`] back `lotus policy test` and `lotus policy eval`.
//! - [`mask`] applies the field actions of `lotus.data.fields`.
//!
//! See `docs/policies.md` for the packages and their inputs.

mod bytecode;
mod engine;
mod error;
pub mod log;
pub use lotus_model::mask;
mod testing;
pub mod topic;
mod wasm;
mod watch;

pub use engine::{Decision, ModuleInfo, PolicyEngine, PolicyVersion, is_test_file};
pub use error::PolicyError;
pub use log::{DecisionFilter, DecisionLog, DecisionLogConfig, DecisionRecord};
pub use testing::{TestReport, TestResult, eval_file_input, run_tests};
pub use wasm::OpaWasmPolicy;
pub use watch::{DEBOUNCE, PolicyWatcher};
