//! Upgrades under load, the compiled-component cache, and manifest errors.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lotus_plugin::{Limits, Manifest, ManifestError, RuntimeConfig, World};
use lotus_plugin_artifacts as artifacts;
use support::{codec_manifest, context, install, runtime, wasm};

const FRAME: [u8; 4] = [0x01, 0x00, 0xD7, 40];

#[test]
fn upgrade_while_calls_run_answers_every_call_once() {
    let (runtime, _host) = runtime(RuntimeConfig::default());
    install(
        &runtime,
        codec_manifest("meter", "capabilities = [\"log\"]"),
        artifacts::GOOD_CODEC,
    );
    let v2 = runtime
        .prepare(
            Manifest::from_toml("id = \"meter\"\nversion = \"2.0.0\"\nworld = \"codec\"\nproducts = [\"pk1\"]\ncapabilities = [\"log\"]").unwrap(),
            &wasm(artifacts::GOOD_CODEC_V2),
        )
        .unwrap();

    let codec = runtime.codec("meter").unwrap();
    let upgraded = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let (codec, upgraded, stop) = (codec.clone(), upgraded.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let upgraded_before = upgraded.load(Ordering::Acquire);
                    let json = codec
                        .decode("t", &FRAME, &context())
                        .expect("no call fails across the upgrade");
                    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
                    let version = value["id"].as_str().unwrap().to_string();
                    if upgraded_before {
                        assert_eq!(
                            version, "2",
                            "a call that started after activate ran on the old version"
                        );
                    }
                    answers.push(version);
                }
                answers
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(100));
    runtime.activate(v2);
    upgraded.store(true, Ordering::Release);
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);

    for caller in callers {
        let answers = caller.join().expect("caller thread saw only good answers");
        let first_v2 = answers
            .iter()
            .position(|v| v == "2")
            .expect("the new version served");
        assert!(first_v2 > 0, "the old version served before the upgrade");
        assert!(
            answers[first_v2..].iter().all(|v| v == "2"),
            "once on v2, never back on v1"
        );
    }
    let status = runtime.status("meter").unwrap();
    assert_eq!(status.version, "2.0.0");
    assert!(
        runtime
            .logs("meter", 10)
            .iter()
            .any(|l| l.message == "activated, replacing version 1.0.0")
    );
}

#[test]
fn second_prepare_loads_from_the_disk_cache() {
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    };
    let bytes = wasm(artifacts::GOOD_CODEC);
    let manifest = || codec_manifest("meter", "capabilities = [\"log\"]");

    let (first_runtime, _host) = runtime(config.clone());
    let started = Instant::now();
    let first = first_runtime.prepare(manifest(), &bytes).unwrap();
    let compile_time = started.elapsed();
    assert!(!first.from_cache());
    let cached: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(cached.len(), 1, "one compiled component cached: {cached:?}");
    assert!(
        cached[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(first.sha256())
    );

    // A new runtime (a restarted host) finds it.
    let (second_runtime, _host) = runtime(config);
    let started = Instant::now();
    let second = second_runtime.prepare(manifest(), &bytes).unwrap();
    let load_time = started.elapsed();
    assert!(second.from_cache());
    assert!(
        load_time < compile_time,
        "cache load {load_time:?} vs compile {compile_time:?}"
    );
    second_runtime.activate(second);
    second_runtime
        .codec("meter")
        .unwrap()
        .decode("t", &FRAME, &context())
        .expect("cached code runs");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn manifest_parses_with_defaults_per_world() {
    let codec =
        Manifest::from_toml("id = \"wm\"\nversion = \"1\"\nworld = \"codec\"\nproducts = [\"pk\"]")
            .unwrap();
    assert_eq!(codec.world, World::Codec);
    assert_eq!(codec.limits, Limits::for_world(World::Codec));
    assert_eq!(codec.limits.call_timeout, Duration::from_millis(50));
    assert_eq!(codec.limits.memory_bytes, 64 << 20);
    assert_eq!(codec.limits.max_output_bytes, 1 << 20);

    let app = Manifest::from_toml(
        "id = \"crm\"\nversion = \"1\"\nworld = \"app\"\ncapabilities = [\"http\", \"secrets\"]\nhttp_allow = [\"crm.example.com:443\"]\nsecrets = [\"crm-token\"]\n[limits]\nmemory_mib = 32\ncall_timeout_ms = 2000",
    )
    .unwrap();
    assert_eq!(app.limits.call_timeout, Duration::from_secs(2));
    assert_eq!(app.limits.memory_bytes, 32 << 20);
    assert_eq!(World::EventHandler.name(), "event-handler");
    assert_eq!(
        serde_json::to_string(&World::EventHandler).unwrap(),
        "\"event-handler\""
    );
}

#[test]
fn manifest_errors_name_the_field_and_the_fix() {
    let cases = [
        ("version = \"1\"\nworld = \"codec\"", "`id` is missing"),
        (
            "id = \"Bad Id\"\nversion = \"1\"\nworld = \"codec\"\nproducts = [\"p\"]",
            "`id` contains 'B'; use lower-case",
        ),
        (
            "id = \"x\"\nversion = \"1\"\nworld = \"codex\"",
            "`world` is \"codex\"; use one of codec",
        ),
        (
            "id = \"x\"\nversion = \"1\"\nworld = \"codec\"\nproducts = [\"p\"]\ncapabilities = [\"http\"]",
            "the codec world does not offer",
        ),
        (
            "id = \"x\"\nversion = \"1\"\nworld = \"app\"\ncapabilities = [\"telepathy\"]",
            "unknown capability \"telepathy\"",
        ),
        (
            "id = \"x\"\nversion = \"1\"\nworld = \"app\"\nhttp_allow = [\"a.example\"]",
            "`http_allow` is set but `capabilities` does not request \"http\"",
        ),
        (
            "id = \"x\"\nversion = \"1\"\nworld = \"app\"\ncapabilities = [\"http\"]\nhttp_allow = [\"https://a.example/x\"]",
            "without scheme or path",
        ),
        (
            "id = \"x\"\nversion = \"1\"\nworld = \"codec\"",
            "`products` is empty",
        ),
        (
            "id = \"x\"\nversion = \"1\"\nworld = \"codec\"\nproducts = [\"p\"]\n[limits]\nmemory_mib = 0",
            "`limits.memory_mib` is 0",
        ),
        (
            "id = \"x\"\nversion = \"1\"\nworld = \"app\"\ntopics = [\"a/#/b\"]",
            "`topics`",
        ),
        (
            "id = \"x\"\nversion = \"1\"\nworld = \"app\"\ncolour = \"red\"",
            "unknown field `colour`",
        ),
    ];
    for (text, expected) in cases {
        let error = Manifest::from_toml(text).expect_err(text);
        let message = error.to_string();
        assert!(message.contains(expected), "{text:?}: {message}");
        if !expected.contains("unknown field") {
            assert!(
                matches!(error, ManifestError::Field { .. }),
                "{text:?}: {error:?}"
            );
        }
    }
}
