//! Integration tests against the real `policies/` directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lotus_policy::{
    DecisionFilter, DecisionLog, DecisionLogConfig, PolicyEngine, PolicyError, eval_file_input,
    run_tests,
};
use serde_json::{Value, json};

fn policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn api_input(region: &str, action: &str) -> Value {
    json!({
        "principal": {"kind": "user", "id": "7", "username": "ops", "org": "city", "region": "/hz/xihu", "roles": ["operator"]},
        "action": action,
        "resource": {"kind": "device", "id": "pk/dn", "org": "city", "region": region}
    })
}

/// A device's topic decision as the host asks it: `matches` says whether the topic (or filter)
/// falls in the one class.
fn topic_input(matches: bool, action: &str) -> Value {
    json!({
        "principal": {"kind": "device", "product_key": "a1"},
        "action": action, "relation": "self", "product_key": "a1",
        "classes": [{"id": "sys.property.post", "template": "/sys/${productKey}/${deviceName}/thing/event/property/post", "operation": "pub", "system": true, "matches": matches}]
    })
}

#[test]
fn loads_and_decides() {
    let engine = PolicyEngine::from_dir(&policies()).unwrap();
    let d = engine
        .decide("lotus.api", &api_input("/hz/xihu/lingyin", "device.write"))
        .unwrap();
    assert!(d.allow);
    assert_eq!(d.reason, None);
    assert_eq!(d.version, 1);
    let d = engine
        .decide("lotus.api", &api_input("/hz/binjiang", "device.read"))
        .unwrap();
    assert!(!d.allow);
    assert_eq!(
        d.reason.as_deref(),
        Some("device pk/dn is in region /hz/binjiang, outside your region /hz/xihu")
    );
    let d = engine
        .decide("lotus.device.topic", &topic_input(true, "publish"))
        .unwrap();
    assert!(d.allow);
    let d = engine
        .decide("lotus.device.topic", &topic_input(false, "subscribe"))
        .unwrap();
    assert!(!d.allow);
    // eval: a rule value; undefined is null.
    assert_eq!(
        engine
            .eval(
                "data.lotus.api.allow",
                &api_input("/hz/xihu", "device.read")
            )
            .unwrap(),
        json!(true)
    );
    assert_eq!(
        engine
            .eval(
                "data.lotus.api.reason",
                &api_input("/hz/xihu", "device.read")
            )
            .unwrap(),
        Value::Null
    );
    // Test modules are not served.
    assert!(
        engine
            .eval("data.lotus.api.test_admin_does_everything", &json!({}))
            .is_err()
    );
    // Unknown packages are an error, not a silent deny.
    assert!(matches!(
        engine.decide("lotus.nope", &json!({})),
        Err(PolicyError::Eval { .. })
    ));
    let modules = engine.modules();
    assert!(
        modules
            .iter()
            .any(|m| m.file == "device/topic.rego" && m.package == "lotus.device.topic")
    );
    assert!(modules.iter().all(|m| m.version == 1));
}

#[test]
fn engine_is_shared_across_threads() {
    let engine = PolicyEngine::from_dir(&policies()).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let region = if i % 2 == 0 { "/hz/xihu" } else { "/hz/xihuan" };
                    let d = engine
                        .decide("lotus.api", &api_input(region, "device.read"))
                        .unwrap();
                    assert_eq!(d.allow, i % 2 == 0);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn broken_file_is_rejected_with_line_and_column_and_old_keeps_serving() {
    let engine = PolicyEngine::from_dir(&policies()).unwrap();
    let before = engine.generation();
    let broken = "package lotus.api\n\ndefault allow := false\n\nallow if {\n\tinput.x ==\n}\n";
    let err = engine.replace("api.rego", broken).unwrap_err();
    let PolicyError::Parse { file, message } = &err else {
        panic!("expected a parse error, got {err}");
    };
    assert_eq!(file, "api.rego");
    assert!(message.contains("api.rego:7:1"), "{message}");
    assert_eq!(engine.generation(), before);
    assert!(
        engine
            .decide("lotus.api", &api_input("/hz/xihu", "device.read"))
            .unwrap()
            .allow
    );
    assert_eq!(engine.history("api.rego").len(), 1);
}

#[test]
fn change_failing_a_test_is_rejected() {
    let engine = PolicyEngine::from_dir(&policies()).unwrap();
    let source = engine.source("api.rego").unwrap();
    // The sibling-prefix bug: "/hz/xihu" would cover "/hz/xihuan".
    let buggy = source.replace(
        r#"region_covers(mine, theirs) if startswith(theirs, concat("", [trim_suffix(mine, "/"), "/"]))"#,
        r#"region_covers(mine, theirs) if startswith(theirs, trim_suffix(mine, "/"))"#,
    );
    assert_ne!(buggy, source);
    let err = engine.replace("api.rego", &buggy).unwrap_err();
    let PolicyError::TestsFailed { failures } = &err else {
        panic!("expected failing tests, got {err}");
    };
    assert!(
        failures
            .iter()
            .any(|(name, _)| name.contains("test_sibling_prefix_trap")),
        "{failures:?}"
    );
    // Still the old behaviour.
    assert!(
        !engine
            .decide("lotus.api", &api_input("/hz/xihuan", "device.read"))
            .unwrap()
            .allow
    );
    // A test file that fails is rejected too.
    let err = engine
        .replace(
            "api_extra_test.rego",
            "package lotus.api\n\ntest_viewer_writes if allow with input as {\"principal\": {\"kind\": \"user\", \"roles\": [\"viewer\"], \"org\": \"city\", \"region\": \"/\"}, \"action\": \"device.write\", \"resource\": {}}\n",
        )
        .unwrap_err();
    assert!(matches!(err, PolicyError::TestsFailed { .. }), "{err}");
}

#[test]
fn replace_versions_history_and_rollback() {
    let engine = PolicyEngine::from_dir(&policies()).unwrap();
    let changes = engine.subscribe();
    let g0 = engine.generation();
    let source = engine.source("approval.rego").unwrap();
    let changed = source.replace(
        "OTA plans change device firmware: an admin approves them before they run",
        "OTA plans change device firmware: an admin signs them off",
    );
    let v = engine.replace("approval.rego", &changed).unwrap();
    assert_eq!(v, 2);
    assert_eq!(engine.generation(), g0 + 1);
    assert_eq!(
        changes.recv_timeout(Duration::from_secs(1)).unwrap(),
        g0 + 1
    );
    let input = json!({"principal": {}, "action": "ota.plan.create", "resource": {}});
    assert_eq!(
        engine.eval("data.lotus.approval.reason", &input).unwrap(),
        json!("OTA plans change device firmware: an admin signs them off")
    );
    // The same source again is not a new version.
    assert_eq!(engine.replace("approval.rego", &changed).unwrap(), 2);
    let history = engine.history("approval.rego");
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].version, 2);
    assert_eq!(history[1].package, "lotus.approval");
    assert_eq!(history[1].sha256.len(), 64);
    // Rollback restores the previous source as version 3.
    assert_eq!(engine.rollback("approval.rego").unwrap(), 3);
    assert_eq!(engine.source("approval.rego").unwrap(), source);
    assert_eq!(
        engine.eval("data.lotus.approval.reason", &input).unwrap(),
        json!("OTA plans change device firmware: an admin approves them before they run")
    );
    assert_eq!(engine.history("approval.rego").len(), 3);
    assert!(matches!(
        engine.rollback("nope.rego"),
        Err(PolicyError::UnknownFile(_))
    ));
    let m = engine
        .modules()
        .into_iter()
        .find(|m| m.file == "approval.rego")
        .unwrap();
    assert_eq!(m.version, 3);
    // Other packages keep their version.
    assert_eq!(engine.package_version("lotus.api"), Some(1));
    // Removing a file that its tests need is refused; a test file with it works.
    assert!(engine.remove("approval.rego").is_err());
    engine.remove("approval_test.rego").unwrap();
    engine.remove("approval.rego").unwrap();
    assert!(engine.decide("lotus.approval", &input).is_err());
    assert!(matches!(
        engine.replace("../evil.rego", "package x"),
        Err(PolicyError::InvalidFileName(_))
    ));
}

#[test]
fn refuses_to_start_on_a_failing_test() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.rego"),
        "package t\n\ndefault allow := false\n\nallow if input.x == 1\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p_test.rego"),
        "package t\n\ntest_ok if allow with input as {\"x\": 1}\n\ntest_wrong if allow with input as {\"x\": 2}\n",
    )
    .unwrap();
    let err = PolicyEngine::from_dir(dir.path()).unwrap_err();
    let PolicyError::TestsFailed { failures } = err else {
        panic!()
    };
    assert_eq!(failures.len(), 1);
    assert!(failures[0].0.contains("t.test_wrong"));
    let report = run_tests(dir.path()).unwrap();
    assert!(!report.passed());
    let mut out = Vec::new();
    report.print(&mut out, true).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("PASS data.t.test_ok ("), "{out}");
    assert!(out.contains("FAIL data.t.test_wrong ("), "{out}");
    assert!(out.contains("FAIL: 1/2"), "{out}");
}

#[test]
fn run_tests_on_the_real_policies() {
    let report = run_tests(&policies()).unwrap();
    assert!(report.passed());
    assert!(report.results.len() >= 70, "{}", report.results.len());
    for package in [
        "lotus.device.topic",
        "lotus.api",
        "lotus.plugin.capability",
        "lotus.data.fields",
        "lotus.approval",
    ] {
        assert!(
            report
                .results
                .iter()
                .filter(|r| r.package == package)
                .count()
                >= 5,
            "{package}"
        );
    }
    let mut out = Vec::new();
    report.print(&mut out, false).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.ends_with(&format!("PASS: {0}/{0}\n", report.results.len())),
        "{out}"
    );
}

#[test]
fn eval_file_input_for_package_and_rule() {
    let input = api_input("/hz/binjiang", "device.read");
    let pkg = eval_file_input(&policies(), "lotus.api", input.clone()).unwrap();
    assert_eq!(pkg["allow"], json!(false));
    assert!(
        pkg["reason"]
            .as_str()
            .unwrap()
            .contains("outside your region")
    );
    assert!(
        pkg.as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("test_"))
    );
    assert_eq!(
        eval_file_input(&policies(), "data.lotus.api.allow", input).unwrap(),
        json!(false)
    );
}

#[test]
fn fields_policy_and_masking_together() {
    let engine = PolicyEngine::from_dir(&policies()).unwrap();
    let input = json!({
        "principal": {"kind": "user", "id": "7", "roles": [], "data_levels": {"a1": {"level": "read_write", "expires_at": null}}},
        "now": 1700000000000u64, "model": "a1",
        "fields": [{"name": "flow", "sensitivity": "public"}, {"name": "owner_phone", "sensitivity": "personal"}, {"name": "valve_key", "sensitivity": "secret"}]
    });
    let actions = engine
        .eval("data.lotus.data.fields.fields", &input)
        .unwrap();
    let mut record =
        json!({"flow": 3.5, "owner_phone": "13812345678", "valve_key": "k", "extra": 1});
    lotus_policy::mask::apply_field_actions(&mut record, &actions);
    assert_eq!(record["flow"], json!(3.5));
    assert_eq!(record["owner_phone"], json!("138******78"));
    assert!(record["valve_key"].as_str().unwrap().starts_with("sha256:"));
    assert!(record.get("extra").is_none());
}

#[test]
fn decision_log_keeps_denies_and_samples_allows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.jsonl");
    let log = Arc::new(
        DecisionLog::new(DecisionLogConfig {
            sample_allows: 0.25,
            capacity: 100,
            jsonl_path: Some(path.clone()),
        })
        .unwrap(),
    );
    let engine = PolicyEngine::from_dir(&policies()).unwrap();
    engine.set_decision_log(Some(log.clone()));
    for _ in 0..8 {
        assert!(
            engine
                .decide("lotus.api", &api_input("/hz/xihu", "device.read"))
                .unwrap()
                .allow
        );
    }
    for _ in 0..3 {
        assert!(
            !engine
                .decide("lotus.api", &api_input("/hz/binjiang", "device.read"))
                .unwrap()
                .allow
        );
    }
    assert_eq!(log.len(), 2 + 3);
    let denies = log.query(&DecisionFilter {
        allow: Some(false),
        ..Default::default()
    });
    assert_eq!(denies.len(), 3);
    assert_eq!(denies[0].point, "lotus.api");
    assert_eq!(denies[0].action, "device.read");
    assert_eq!(denies[0].resource["region"], json!("/hz/binjiang"));
    assert!(
        denies[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("outside your region")
    );
    let all = log.query(&DecisionFilter {
        principal_contains: Some("\"ops\"".into()),
        limit: Some(4),
        ..Default::default()
    });
    assert_eq!(all.len(), 4);
    assert!(!all[0].allow, "newest first");
    assert!(all.windows(2).all(|w| w[0].at_ms >= w[1].at_ms));
    assert!(
        log.query(&DecisionFilter {
            point: Some("lotus.device.topic".into()),
            ..Default::default()
        })
        .is_empty()
    );
    assert!(
        log.query(&DecisionFilter {
            since_ms: Some(u64::MAX),
            ..Default::default()
        })
        .is_empty()
    );
    let mut out = Vec::new();
    assert_eq!(
        log.export_jsonl(&DecisionFilter::default(), &mut out)
            .unwrap(),
        5
    );
    assert_eq!(String::from_utf8(out).unwrap().lines().count(), 5);
    let file = std::fs::read_to_string(&path).unwrap();
    assert_eq!(file.lines().count(), 5);
    let first: lotus_policy::DecisionRecord =
        serde_json::from_str(file.lines().next().unwrap()).unwrap();
    assert!(first.allow);
    // Ring buffer bound.
    let small = DecisionLog::new(DecisionLogConfig {
        sample_allows: 1.0,
        capacity: 3,
        jsonl_path: None,
    })
    .unwrap();
    for i in 0..10u64 {
        small.record(lotus_policy::DecisionRecord {
            at_ms: i,
            point: "p".into(),
            principal: json!({}),
            resource: json!(null),
            action: "a".into(),
            allow: true,
            reason: None,
            version: 1,
            latency_us: 1,
        });
    }
    let kept = small.query(&DecisionFilter::default());
    assert_eq!(
        kept.iter().map(|r| r.at_ms).collect::<Vec<_>>(),
        vec![9, 8, 7]
    );
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn watcher_hot_reloads_and_ignores_own_writes() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&policies(), dir.path());
    let engine = PolicyEngine::from_dir(dir.path()).unwrap();
    let _watcher = engine.watch(dir.path()).unwrap();
    let input = json!({"principal": {}, "action": "ota.plan.create", "resource": {}});
    let file = dir.path().join("approval.rego");
    let source = std::fs::read_to_string(&file).unwrap();
    // An edit on disk is applied.
    std::fs::write(
        &file,
        source.replace("an admin approves them", "an admin okays them"),
    )
    .unwrap();
    wait_for("the edited file", || {
        engine.package_version("lotus.approval") == Some(2)
    });
    assert!(
        engine
            .eval("data.lotus.approval.reason", &input)
            .unwrap()
            .as_str()
            .unwrap()
            .contains("okays")
    );
    // A broken edit is rejected; the previous version keeps serving.
    let g = engine.generation();
    std::fs::write(&file, "package lotus.approval\nrequired if {\n").unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(engine.generation(), g);
    assert!(
        engine
            .eval("data.lotus.approval.reason", &input)
            .unwrap()
            .as_str()
            .unwrap()
            .contains("okays")
    );
    // write_file: one version, persisted, not applied twice by the watcher.
    let v = engine
        .write_file(
            dir.path(),
            "approval.rego",
            &source.replace("an admin approves them", "an admin blesses them"),
        )
        .unwrap();
    assert_eq!(v, 3);
    assert!(std::fs::read_to_string(&file).unwrap().contains("blesses"));
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(engine.package_version("lotus.approval"), Some(3));
    assert_eq!(engine.history("approval.rego").len(), 3);
    // A new file is added.
    std::fs::write(
        dir.path().join("extra.rego"),
        "package lotus.extra\n\nallow := true\n",
    )
    .unwrap();
    wait_for("the new file", || {
        engine.package_version("lotus.extra").is_some()
    });
    assert!(engine.decide("lotus.extra", &json!({})).unwrap().allow);
    // A deleted file is removed.
    std::fs::remove_file(dir.path().join("extra.rego")).unwrap();
    wait_for("the deletion", || {
        engine.decide("lotus.extra", &json!({})).is_err()
    });
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/opa-wasm")
}

#[test]
fn opa_wasm_bundle() {
    let input: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("input.json")).unwrap())
            .unwrap();
    let policy =
        lotus_policy::OpaWasmPolicy::load(&fixture().join("policy.wasm"), "example").unwrap();
    assert_eq!(
        policy.evaluate(&input).unwrap(),
        json!([{"result": {"allow": true}}])
    );
    let mut post = input.clone();
    post["attributes"]["request"]["http"]["method"] = json!("POST");
    assert_eq!(
        policy.evaluate(&post).unwrap()[0]["result"]["allow"],
        json!(false)
    );
    assert!(matches!(
        lotus_policy::OpaWasmPolicy::load(&fixture().join("policy.wasm"), "nope"),
        Err(PolicyError::Wasm { .. })
    ));

    let engine = PolicyEngine::from_dir(&policies()).unwrap();
    let g = engine.generation();
    assert_eq!(
        engine
            .mount_wasm("example", &fixture().join("policy.wasm"), "example")
            .unwrap(),
        1
    );
    assert_eq!(engine.generation(), g + 1);
    let d = engine.decide("example", &input).unwrap();
    assert!(d.allow);
    assert_eq!(d.version, 1);
    assert!(!engine.decide("example", &post).unwrap().allow);
    assert!(engine.unmount_wasm("example"));
    assert!(engine.decide("example", &input).is_err());
}

/// The decision points run as regorus bytecode; the engine checks its first decisions against
/// the interpreter and falls back on any disagreement, so after a spread of allows and denies
/// (with their reasons) each point must still be served by bytecode.
#[test]
fn decision_points_run_as_bytecode_and_agree_with_the_interpreter() {
    let engine = PolicyEngine::from_dir(&policies()).unwrap();
    for package in ["lotus.api", "lotus.device.topic", "lotus.plugin.capability"] {
        assert_eq!(
            engine.served_by(package),
            Some("bytecode (one pass)"),
            "{package}"
        );
    }
    let mut inputs: Vec<(&str, Value)> = Vec::new();
    for region in ["/hz/xihu", "/hz/xihu/lingyin", "/hz/binjiang", "/"] {
        for action in [
            "device.read",
            "device.write",
            "product.delete",
            "policy.write",
        ] {
            inputs.push(("lotus.api", api_input(region, action)));
        }
    }
    for matches in [true, false] {
        for action in ["publish", "subscribe"] {
            inputs.push(("lotus.device.topic", topic_input(matches, action)));
        }
    }
    for capability in ["log", "kv", "clock", "shell", "http"] {
        inputs.push((
            "lotus.plugin.capability",
            json!({"plugin": {"id": "water-meter", "world": "codec", "capabilities": ["log", "kv", "http"],
                              "http_allow": ["api.example.org"], "products": ["a1"], "topics": [], "secrets": []},
                   "capability": capability, "request": {"host": "evil.example.org", "port": 443, "method": "POST"}}),
        ));
    }
    let mut allowed = 0;
    for _ in 0..3 {
        for (package, input) in &inputs {
            let d = engine.decide(package, input).unwrap();
            allowed += d.allow as usize;
            if !d.allow {
                assert!(
                    d.reason.is_some(),
                    "{package} denied without a reason: {input}"
                );
            }
        }
    }
    assert!(allowed > 0 && allowed < inputs.len() * 3);
    for package in ["lotus.api", "lotus.device.topic", "lotus.plugin.capability"] {
        assert_eq!(
            engine.served_by(package),
            Some("bytecode (one pass)"),
            "{package} fell back to the interpreter: the bytecode disagreed"
        );
    }
    assert_eq!(engine.served_by("lotus.nope"), None);
}

/// A package with `allow` and `reason` is answered in one run of the VM; one without `reason`
/// still runs as bytecode, and both answer what the interpreter answers, including a reason
/// that is not a string (ignored) and an `allow` that is undefined (a deny).
#[test]
fn allow_and_reason_in_one_pass_agree_with_separate_rules() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("both.rego"),
        "package both\n\nallow if input.x == 1\n\nreason := \"x must be 1\" if {\n\tnot allow\n\tinput.x != 0\n}\n\nreason := 7 if input.x == 0\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("only.rego"),
        "package only\n\ndefault allow := false\n\nallow if input.x == 1\n",
    )
    .unwrap();
    let engine = PolicyEngine::from_dir(dir.path()).unwrap();
    assert_eq!(engine.served_by("both"), Some("bytecode (one pass)"));
    assert_eq!(engine.served_by("only"), Some("bytecode"));
    for _ in 0..40 {
        let d = engine.decide("both", &json!({"x": 1})).unwrap();
        assert!(d.allow && d.reason.is_none());
        let d = engine.decide("both", &json!({"x": 2})).unwrap();
        assert!(!d.allow);
        assert_eq!(d.reason.as_deref(), Some("x must be 1"));
        let d = engine.decide("both", &json!({"x": 0})).unwrap();
        assert!(!d.allow && d.reason.is_none());
        assert!(engine.decide("only", &json!({"x": 1})).unwrap().allow);
        assert!(!engine.decide("only", &json!({"x": 3})).unwrap().allow);
    }
    // The first decisions are checked against the interpreter: a disagreement would have
    // moved the package back to it.
    assert_eq!(engine.served_by("both"), Some("bytecode (one pass)"));
    assert_eq!(engine.served_by("only"), Some("bytecode"));
}
