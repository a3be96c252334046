//! Builds every guest component of the repository for `wasm32-wasip2` (release) and writes one
//! `pub const` per produced `.wasm`, the way wasmtime's `test-programs-artifacts` does, so host
//! tests run against the real components without a separate build step.
//!
//! Guests: `tests/plugin-components/` and `plugins/` (guest workspaces) and each
//! `examples/plugins/*/` (standalone ISV-style crates). Missing directories are skipped.

use std::collections::BTreeMap;
use std::env;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let repo = manifest_dir
        .parent()
        .and_then(Path::parent)
        .expect("tests/plugin-artifacts sits two levels below the repo root");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));

    check_target_installed();

    for watched in [
        "wit",
        "tests/plugin-components",
        "plugins",
        "examples/plugins",
        "sdk/plugin/src",
        "sdk/plugin/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", repo.join(watched).display());
    }

    let mut guests = Vec::new();
    for workspace in ["tests/plugin-components", "plugins"] {
        let manifest = repo.join(workspace).join("Cargo.toml");
        if manifest.is_file() {
            guests.push(manifest);
        }
    }
    if let Ok(entries) = std::fs::read_dir(repo.join("examples/plugins")) {
        let mut examples: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path().join("Cargo.toml"))
            .filter(|m| m.is_file())
            .collect();
        examples.sort();
        guests.extend(examples);
    }

    // One target dir for all guests (shared dependency builds), outside the outer build's
    // target dir lock: nesting a cargo build inside the outer one's directory deadlocks.
    let guest_target = outer_target_dir(&out_dir).join("wasm-guests");

    let mut artifacts: BTreeMap<String, (PathBuf, PathBuf)> = BTreeMap::new();
    for manifest in &guests {
        for wasm in build_guest(manifest, &guest_target) {
            let stem = wasm
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("cargo names artifacts in UTF-8")
                .to_string();
            let name = stem.replace('-', "_").to_uppercase();
            if let Some((_, other)) = artifacts.get(&name)
                && other != manifest
            {
                panic!(
                    "two guest crates produce {stem}.wasm ({} and {}); they share one target dir, so rename one",
                    other.display(),
                    manifest.display()
                );
            }
            artifacts.insert(name, (wasm, manifest.clone()));
        }
    }

    let mut code = String::new();
    for (name, (path, manifest)) in &artifacts {
        writeln!(code, "/// Built from `{}`.", manifest.display()).unwrap();
        writeln!(
            code,
            "pub const {name}: &str = {:?};",
            path.display().to_string()
        )
        .unwrap();
    }
    writeln!(code, "/// Every component built, as (constant name, path).").unwrap();
    writeln!(code, "pub const ALL: &[(&str, &str)] = &[").unwrap();
    for name in artifacts.keys() {
        writeln!(code, "    ({name:?}, {name}),").unwrap();
    }
    writeln!(code, "];").unwrap();
    std::fs::write(out_dir.join("artifacts.rs"), code).expect("write artifacts.rs to OUT_DIR");
}

fn check_target_installed() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .expect("run rustc --print sysroot");
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if !sysroot.join("lib/rustlib").join(TARGET).is_dir() {
        panic!(
            "the {TARGET} target is not installed for {}; run `rustup target add {TARGET}`",
            sysroot.display()
        );
    }
}

/// `OUT_DIR` is `<target dir>[/<triple>]/<profile>/build/<pkg>-<hash>/out`.
fn outer_target_dir(out_dir: &Path) -> PathBuf {
    let build_dir = out_dir
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "build"))
        .expect("OUT_DIR lies under a build/ directory");
    let profile_dir = build_dir
        .parent()
        .expect("build/ has a profile directory above it");
    let above_profile = profile_dir
        .parent()
        .expect("the profile directory has a parent");
    // Cargo marks the target dir root with CACHEDIR.TAG; `--target <triple>` adds a level below it.
    if above_profile.join("CACHEDIR.TAG").exists() {
        above_profile.to_path_buf()
    } else {
        above_profile
            .parent()
            .expect("the triple directory has a parent")
            .to_path_buf()
    }
}

/// Builds one guest workspace or crate and returns the `.wasm` files it produced.
fn build_guest(manifest: &Path, target_dir: &Path) -> Vec<PathBuf> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut command = Command::new(cargo);
    command
        .args([
            "build",
            "--release",
            "--workspace",
            "--target",
            TARGET,
            "--message-format=json-render-diagnostics",
        ])
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir);
    if manifest.with_file_name("Cargo.lock").is_file() {
        command.arg("--locked");
    }
    // The outer build's flags and settings are for the host, not for wasm guests.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        command.env_remove(var);
    }
    command.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run cargo for {}: {e}", manifest.display()));
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut wasm_files = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read cargo's JSON messages");
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let is_cdylib = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"));
        if !is_cdylib {
            continue;
        }
        for file in message["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
        {
            if file.ends_with(".wasm") {
                wasm_files.push(PathBuf::from(file));
            }
        }
    }
    let status = child.wait().expect("wait for the guest cargo build");
    if !status.success() {
        panic!(
            "building guest components in {} for {TARGET} failed ({status}); see the compiler output above",
            manifest.display()
        );
    }
    wasm_files
}
