//! Paths of the guest components built by `build.rs` for `wasm32-wasip2`: one constant per
//! `<crate>.wasm` (crate name upper-cased, `-` → `_`) and [`ALL`]. For tests and benches only.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));

/// The JavaScript and Python components (`codec_js.wasm`, `alibaba_script.wasm`,
/// `chirpstack_script.wasm`, `script_runner.wasm`, `codec_python.wasm`), built on first use by
/// `sdk/plugin-js/build-all.sh` into `$CARGO_TARGET_DIR/script-codecs` and reused while their
/// inputs are unchanged. Needs Node ≥ 20 and Python ≥ 3.10; the script takes a file lock, so
/// test processes running in parallel build once. Panics with the script's output on failure.
pub fn script_components() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| repo.join("target"));
        let out = target.join("script-codecs");
        let result = std::process::Command::new("bash")
            .arg(repo.join("sdk/plugin-js/build-all.sh"))
            .arg(&out)
            .output()
            .expect("run sdk/plugin-js/build-all.sh (needs bash)");
        assert!(
            result.status.success(),
            "sdk/plugin-js/build-all.sh failed ({}); it needs node >= 20 and python3 >= 3.10\nstdout:\n{}\nstderr:\n{}",
            result.status,
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr)
        );
        out
    })
}
