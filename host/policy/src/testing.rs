//! `lotus policy test` and `lotus policy eval`: the runner and the one-shot evaluator.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::PolicyError;
use crate::engine::{build, is_test_file, read_dir_sources};

/// One `test_*` rule's outcome. A test passes when it evaluates to `true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestResult {
    /// Package without `data.`, e.g. `lotus.api`.
    pub package: String,
    pub name: String,
    pub file: String,
    pub passed: bool,
    /// Why it failed: undefined, another value, or an evaluation error.
    pub error: Option<String>,
    pub duration: Duration,
}

/// The outcome of every test.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TestReport {
    pub results: Vec<TestResult>,
}

impl TestReport {
    /// Did every test pass?
    pub fn passed(&self) -> bool {
        self.results.iter().all(|r| r.passed)
    }

    pub fn failures(&self) -> impl Iterator<Item = &TestResult> {
        self.results.iter().filter(|r| !r.passed)
    }

    /// Prints like `opa test`: failures always (with their error), passes when `verbose`, then
    /// `PASS: n/n` or `FAIL: failed/n`.
    pub fn print(&self, out: &mut impl Write, verbose: bool) -> std::io::Result<()> {
        let mut current_file: Option<&str> = None;
        for r in &self.results {
            if !r.passed || verbose {
                if verbose && current_file != Some(r.file.as_str()) {
                    writeln!(out, "{}:", r.file)?;
                    current_file = Some(r.file.as_str());
                }
                let ms = r.duration.as_secs_f64() * 1000.0;
                let status = if r.passed { "PASS" } else { "FAIL" };
                writeln!(out, "{status} data.{}.{} ({ms:.1}ms)", r.package, r.name)?;
                if let Some(e) = &r.error {
                    writeln!(out, "  {e}")?;
                }
            }
        }
        let total = self.results.len();
        let failed = self.failures().count();
        writeln!(out, "{}", "-".repeat(80))?;
        if failed == 0 {
            writeln!(out, "PASS: {total}/{total}")?;
        } else {
            if total > failed {
                writeln!(out, "PASS: {}/{total}", total - failed)?;
            }
            writeln!(out, "FAIL: {failed}/{total}")?;
        }
        Ok(())
    }
}

/// Loads every `*.rego` under `dir` and runs every `test_*` rule. Parse and compile errors are
/// `Err`; failing tests are in the report (`report.passed()` is false).
pub fn run_tests(dir: &Path) -> Result<TestReport, PolicyError> {
    let sources = read_dir_sources(dir)?;
    Ok(build(&sources)?.report)
}

/// Evaluates against the policies in `dir` (test files excluded) with `input`:
/// `rule_or_package` is either a package (`lotus.api` or `data.lotus.api`: the result is an
/// object of the package's rules, `test_*` rules left out) or a rule path (`lotus.api.allow` or
/// `data.lotus.api.allow`). Undefined is `null`.
pub fn eval_file_input(
    dir: &Path,
    rule_or_package: &str,
    input: Value,
) -> Result<Value, PolicyError> {
    let sources = read_dir_sources(dir)?;
    let mut engine = regorus::Engine::new();
    let mut packages = Vec::new();
    for (file, source) in sources.iter().filter(|(f, _)| !is_test_file(f)) {
        let package = engine
            .add_policy(file.clone(), source.to_string())
            .map_err(|e| PolicyError::Parse {
                file: file.clone(),
                message: format!("{e:#}"),
            })?;
        packages.push(package);
    }
    let path = if rule_or_package.starts_with("data.") || rule_or_package == "data" {
        rule_or_package.to_string()
    } else {
        format!("data.{rule_or_package}")
    };
    engine.set_input(regorus::Value::from(input));
    let eval_err = |e: anyhow::Error| PolicyError::Eval {
        path: path.clone(),
        message: format!("{e:#}"),
    };
    if packages.contains(&path) {
        let results = engine.eval_query(path.clone(), false).map_err(eval_err)?;
        let value = results
            .result
            .first()
            .and_then(|r| r.expressions.first())
            .map(|e| e.value.clone())
            .unwrap_or(regorus::Value::Undefined);
        let mut json = match value {
            regorus::Value::Undefined => Value::Null,
            v => serde_json::to_value(&v).unwrap_or(Value::Null),
        };
        if let Value::Object(map) = &mut json {
            map.retain(|k, _| !k.starts_with("test_"));
        }
        Ok(json)
    } else {
        let v = engine.eval_rule(path.clone()).map_err(eval_err)?;
        Ok(match v {
            regorus::Value::Undefined => Value::Null,
            v => serde_json::to_value(&v).unwrap_or(Value::Null),
        })
    }
}
