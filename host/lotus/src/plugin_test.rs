//! `lotus plugin test`: runs a plugin's case files in the real plugin runtime on an in-memory
//! platform (the `lotus-plugin-test` harness), offline, without a node.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use lotus_plugin_test::{Harness, HarnessOptions, find_wasm, run_cases};

/// Run a plugin's test cases locally, in the same runtime a node uses (no node needed).
#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// The plugin's manifest.
    #[arg(long, default_value = "lotus-plugin.toml")]
    manifest: PathBuf,
    /// The component [default: found next to the manifest: a Rust crate's
    /// target/wasm32-wasip2/release/<crate>.wasm, else <dir>.wasm or the only .wasm there].
    #[arg(long)]
    wasm: Option<PathBuf>,
    /// Where compiled components are cached [default: ~/.cache/lotus/plugin-test].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Case files (TOML) [default: tests/cases.toml next to the manifest].
    cases: Vec<PathBuf>,
}

pub async fn run(args: TestArgs) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || run_blocking(args))
        .await
        .context("the test run panicked")?
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
    Some(base.join("lotus/plugin-test"))
}

fn run_blocking(args: TestArgs) -> anyhow::Result<()> {
    let dir = match args.manifest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let wasm = match args.wasm {
        Some(path) => path,
        None => find_wasm(&dir)?,
    };
    let cases = if args.cases.is_empty() {
        vec![dir.join("tests/cases.toml")]
    } else {
        args.cases
    };
    let options = HarnessOptions {
        cache_dir: args.cache_dir.or_else(default_cache_dir),
    };
    let harness = Harness::load_with(&args.manifest, &wasm, &options).with_context(|| {
        format!(
            "cannot load {} with {}",
            args.manifest.display(),
            wasm.display()
        )
    })?;

    let (mut passed, mut failed, mut ignored) = (0, 0, 0);
    let mut failed_cases = Vec::new();
    for file in &cases {
        let report = run_cases(&harness, file)?;
        println!("{report}");
        passed += report.passed();
        failed += report.failed();
        ignored += report.ignored();
        failed_cases.extend(
            report
                .failed_names()
                .into_iter()
                .map(|name| format!("{}: {name}", file.display())),
        );
    }
    if failed > 0 {
        bail!(
            "{failed} case(s) failed ({passed} passed, {ignored} ignored): {}",
            failed_cases.join("; ")
        );
    }
    if passed == 0 {
        bail!("no case ran: add [[case]] tables to {}", cases[0].display());
    }
    Ok(())
}
