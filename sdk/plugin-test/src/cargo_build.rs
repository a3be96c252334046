//! Building a Rust plugin crate for `wasm32-wasip2` from a test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::HarnessError;

const TARGET: &str = "wasm32-wasip2";

/// Runs `cargo build --release --target wasm32-wasip2 --manifest-path <crate_dir>/Cargo.toml`
/// and returns the `.wasm` it produced. `CARGO_TARGET_DIR` is honoured (cargo reads it);
/// compiler messages go to stderr. Call it from your plugin's own `cargo test`:
/// `build_rust_plugin(Path::new(env!("CARGO_MANIFEST_DIR")))`.
///
/// The host's build flags (`RUSTFLAGS`, `CARGO_BUILD_TARGET`, …, which a surrounding `cargo test`
/// sets for native code) are not passed on. The target must be installed
/// (`rustup target add wasm32-wasip2`).
pub fn build_rust_plugin(crate_dir: &Path) -> Result<PathBuf, HarnessError> {
    let manifest = crate_dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(HarnessError::Build(format!(
            "{} has no Cargo.toml: build_rust_plugin builds a Rust plugin crate",
            crate_dir.display()
        )));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "--message-format=json-render-diagnostics",
        ])
        .arg("--manifest-path")
        .arg(&manifest);
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_MAKEFLAGS",
    ] {
        command.env_remove(var);
    }
    command.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = command
        .spawn()
        .map_err(|e| HarnessError::Build(format!("cannot run cargo: {e}")))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut wasm = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        // Only the crate itself, not a cdylib dependency.
        let own = message["manifest_path"]
            .as_str()
            .is_some_and(|p| same_file(Path::new(p), &manifest));
        let cdylib = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"));
        if !own || !cdylib {
            continue;
        }
        wasm.extend(
            message["filenames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str())
                .filter(|f| f.ends_with(".wasm"))
                .map(PathBuf::from),
        );
    }
    let status = child
        .wait()
        .map_err(|e| HarnessError::Build(format!("cargo did not finish: {e}")))?;
    if !status.success() {
        return Err(HarnessError::Build(format!(
            "cargo build --release --target {TARGET} --manifest-path {} failed ({status}); see the compiler output above \
             (is the target installed? `rustup target add {TARGET}`)",
            manifest.display()
        )));
    }
    match wasm.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(HarnessError::Build(format!(
            "{} built no .wasm: set `crate-type = [\"cdylib\"]` in its [lib]",
            manifest.display()
        ))),
        many => Err(HarnessError::Build(format!(
            "{} built several components: {many:?}",
            manifest.display()
        ))),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
