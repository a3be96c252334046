//! The JavaScript and Python examples' `tests/cases.toml`, run through the harness on the
//! components `sdk/plugin-js/build-all.sh` builds (Node >= 20 and Python >= 3.10 needed; the
//! first build installs componentize-js and componentize-py and takes minutes). The output
//! directory and compile cache are those of `host/plugin/tests/script_codecs.rs`, so the two
//! suites share one build.

use std::path::{Path, PathBuf};

use lotus_plugin_test::{Harness, HarnessOptions, run_cases};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn javascript_and_python_codec_cases() {
    let out = lotus_plugin_artifacts::script_components();
    let options = HarnessOptions {
        cache_dir: Some(out.join("compiled")),
    };
    for (dir, wasm) in [
        ("examples/plugins/codec-js", "codec_js.wasm"),
        ("examples/plugins/codec-python", "codec_python.wasm"),
    ] {
        let dir = repo().join(dir);
        let harness = Harness::load_with(&dir.join("lotus-plugin.toml"), &out.join(wasm), &options)
            .unwrap_or_else(|e| panic!("load {wasm}: {e}"));
        let report = run_cases(&harness, &dir.join("tests/cases.toml")).unwrap();
        eprintln!("{report}");
        assert!(report.is_success(), "{wasm}:\n{report}");
        assert_eq!(report.passed(), 6, "{report}");
    }
}
