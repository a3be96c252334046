//! `lotus plugin test` as an ISV runs it: the real `lotus` binary, offline, on an example plugin.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use lotus_plugin_artifacts as artifacts;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `LOTUS_BIN`, else the `lotus` binary of this workspace, built (or found up to date) by cargo.
fn lotus() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("LOTUS_BIN") {
            return PathBuf::from(bin);
        }
        // target/<profile>/deps/<test exe> → target/<profile>/lotus
        let exe = std::env::current_exe().expect("the test knows its path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("tests run from target/<profile>/deps");
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "-p", "lotus", "--bin", "lotus"])
            .current_dir(repo());
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build -p lotus");
        assert!(status.success(), "building the lotus binary failed");
        profile_dir.join("lotus")
    })
}

fn plugin_test(args: &[&str]) -> (Output, String) {
    let output = Command::new(lotus())
        .args(["plugin", "test"])
        .args(args)
        // Offline: no node, and nothing it could reach.
        .env("LOTUS_URL", "http://127.0.0.1:9")
        .env(
            "XDG_CACHE_HOME",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("lotus-cli-cache"),
        )
        .output()
        .expect("run lotus plugin test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, text)
}

#[test]
fn lotus_plugin_test_passes_and_fails_like_cargo_test() {
    let dir = repo().join("examples/plugins/rule-threshold");
    let manifest = dir.join("lotus-plugin.toml");
    let manifest = manifest.to_str().unwrap();

    // The default case file, tests/cases.toml next to the manifest.
    let (output, text) =
        plugin_test(&["--manifest", manifest, "--wasm", artifacts::RULE_THRESHOLD]);
    eprintln!("{text}");
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("case crossing the threshold raises the alarm once ... ok"),
        "{text}"
    );
    assert!(
        text.contains("test result: ok. 7 passed; 0 failed"),
        "{text}"
    );

    // A case file with a wrong expectation: non-zero exit, the case named, the difference shown.
    let temp = tempfile::tempdir().unwrap();
    let bad = temp.path().join("bad.toml");
    std::fs::write(
        &bad,
        r#"
[kv]
thresholds = '[{"property": "BatteryLevel", "below": 10, "alarm": "low-battery"}]'

[[case]]
name = "battery at 7 raises"
call = "rule"
input = { message = { params = { BatteryLevel = 7 } } }
expect = [{ raise-alarm = { alarm-type = "low-battery" } }]

[[case]]
name = "battery at 7 is fine (wrong on purpose)"
call = "rule"
input = { message = { params = { BatteryLevel = 7 } } }
expect = []
"#,
    )
    .unwrap();
    let (output, text) = plugin_test(&[
        "--manifest",
        manifest,
        "--wasm",
        artifacts::RULE_THRESHOLD,
        bad.to_str().unwrap(),
    ]);
    eprintln!("{text}");
    assert!(!output.status.success(), "{text}");
    assert_eq!(output.status.code(), Some(1), "{text}");
    for line in [
        "case battery at 7 raises ... ok",
        "case battery at 7 is fine (wrong on purpose) ... FAILED",
        "---- battery at 7 is fine (wrong on purpose) ----",
        "$: expected 0 element(s), got 1",
        "test result: FAILED. 1 passed; 1 failed",
        "1 case(s) failed",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }

    // A component that is not one is refused as a node would refuse it.
    let garbage = temp.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not wasm").unwrap();
    let (output, text) =
        plugin_test(&["--manifest", manifest, "--wasm", garbage.to_str().unwrap()]);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("not a valid WebAssembly component"), "{text}");
}
