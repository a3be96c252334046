//! Hostile components are each stopped by their bound, with the right reason, while a good codec
//! on the same runtime keeps serving.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lotus_plugin::{CallError, LogSource, RuntimeConfig};
use lotus_plugin_artifacts as artifacts;
use support::{codec_manifest, context, install, runtime};

const GOOD_FRAME: [u8; 4] = [0x01, 0x00, 0xD7, 40]; // 21.5 °C, 40 %

fn quiet_config() -> RuntimeConfig {
    // Containment tests hit many failures on purpose; suspension has its own test.
    RuntimeConfig {
        suspend_after_failures: 1000,
        ..RuntimeConfig::default()
    }
}

#[test]
fn good_codec_decodes_encodes_and_reports_where_input_is_bad() {
    let (runtime, _host) = runtime(quiet_config());
    install(
        &runtime,
        codec_manifest("good", "capabilities = [\"log\"]"),
        artifacts::GOOD_CODEC,
    );
    let codec = runtime.codec("good").expect("active codec");

    let json = codec
        .decode("/pk1/dev1/user/raw", &GOOD_FRAME, &context())
        .unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["method"], "thing.event.property.post");
    assert_eq!(value["params"]["temperature"], 21.5);
    assert_eq!(value["params"]["humidity"], 40);

    let bytes = codec
        .encode(
            r#"{"method":"thing.service.property.set","params":{"interval":300}}"#,
            &context(),
        )
        .unwrap();
    assert_eq!(bytes, vec![0x02, 0x01, 0x2C]);

    match codec.decode("t", &[0x01, 0x00], &context()) {
        Err(CallError::Codec {
            offset: Some(2),
            field: Some(field),
            ..
        }) => assert_eq!(field, "temperature"),
        other => panic!("expected a codec error at byte 2, got {other:?}"),
    }
    let error = codec
        .decode("t", &[0x01, 0x00, 0x10, 200], &context())
        .unwrap_err();
    assert_eq!(error.reason(), "codec_error");
    assert!(error.to_string().contains("at byte 3"), "{error}");
    // The codec logged a warning through the log capability; codec errors are not failures.
    assert!(
        runtime
            .logs("good", 10)
            .iter()
            .any(|l| l.source == LogSource::Guest && l.message.contains("humidity 200"))
    );
    assert_eq!(runtime.status("good").unwrap().consecutive_failures, 0);
}

#[test]
fn infinite_loop_is_stopped_by_the_deadline() {
    let (runtime, _host) = runtime(quiet_config());
    // Fuel far above what 100 ms can burn, so the epoch deadline is what stops it.
    install(
        &runtime,
        codec_manifest(
            "loop",
            "[limits]\ncall_timeout_ms = 100\nfuel_per_call = 1000000000000",
        ),
        artifacts::LOOP_CODEC,
    );
    let started = Instant::now();
    let error = runtime
        .codec("loop")
        .unwrap()
        .decode("t", b"x", &context())
        .unwrap_err();
    assert_eq!(error, CallError::Timeout);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn infinite_loop_is_stopped_by_fuel() {
    let (runtime, _host) = runtime(quiet_config());
    install(
        &runtime,
        codec_manifest(
            "loop",
            "[limits]\ncall_timeout_ms = 60000\nfuel_per_call = 1000000",
        ),
        artifacts::LOOP_CODEC,
    );
    let error = runtime
        .codec("loop")
        .unwrap()
        .decode("t", b"x", &context())
        .unwrap_err();
    assert_eq!(error, CallError::OutOfFuel);
}

#[test]
fn memory_bomb_hits_the_memory_limit() {
    let (runtime, _host) = runtime(quiet_config());
    install(
        &runtime,
        codec_manifest("bomb", "[limits]\nmemory_mib = 16\ncall_timeout_ms = 5000"),
        artifacts::MEMORY_BOMB_CODEC,
    );
    let error = runtime
        .codec("bomb")
        .unwrap()
        .decode("t", b"x", &context())
        .unwrap_err();
    assert_eq!(error, CallError::MemoryLimit);
}

#[test]
fn an_instance_near_its_memory_limit_is_retired_before_it_fails() {
    let (runtime, _host) = runtime(quiet_config());
    install(
        &runtime,
        codec_manifest("leaky", "[limits]\nmemory_mib = 16\ncall_timeout_ms = 5000"),
        artifacts::LEAKY_CODEC,
    );
    let codec = runtime.codec("leaky").unwrap();
    // 1 MiB more per call: one instance would hit 16 MiB within about 15 calls.
    for i in 0..100 {
        codec
            .decode("t", b"abc", &context())
            .unwrap_or_else(|e| panic!("call {i}: {e:?}"));
    }
    let status = runtime.status("leaky").unwrap();
    assert_eq!(status.suspended, None);
}

#[test]
fn deep_recursion_traps_on_the_stack_limit() {
    let (runtime, _host) = runtime(quiet_config());
    install(
        &runtime,
        codec_manifest("recursion", "[limits]\ncall_timeout_ms = 5000"),
        artifacts::RECURSION_CODEC,
    );
    match runtime
        .codec("recursion")
        .unwrap()
        .decode("t", b"x", &context())
    {
        Err(CallError::Trap(message)) => assert!(
            message.contains("stack") || message.contains("out of bounds"),
            "{message}"
        ),
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[test]
fn a_trapped_instance_is_discarded_and_the_plugin_serves_on() {
    let (runtime, _host) = runtime(quiet_config());
    install(
        &runtime,
        codec_manifest("panic", ""),
        artifacts::PANIC_CODEC,
    );
    let codec = runtime.codec("panic").unwrap();
    for _ in 0..3 {
        match codec.decode("t", b"abc", &context()) {
            Err(CallError::Trap(message)) => assert!(message.contains("unreachable"), "{message}"),
            other => panic!("expected a trap, got {other:?}"),
        }
        // A fresh instance answers encode normally.
        assert_eq!(codec.encode("{}", &context()).unwrap(), vec![0x02]);
    }
    let logs = runtime.logs("panic", 100);
    assert!(
        logs.iter()
            .any(|l| l.source == LogSource::Host && l.message.contains("decode failed")),
        "{logs:?}"
    );
}

#[test]
fn huge_output_is_refused() {
    let (runtime, _host) = runtime(quiet_config());
    install(
        &runtime,
        codec_manifest("huge", "[limits]\ncall_timeout_ms = 5000"),
        artifacts::HUGE_OUTPUT_CODEC,
    );
    let codec = runtime.codec("huge").unwrap();
    match codec.decode("t", b"x", &context()) {
        Err(CallError::OutputTooLarge { bytes, limit }) => {
            assert!(bytes > 8 << 20);
            assert_eq!(limit, 1 << 20);
        }
        other => panic!("expected output too large, got {other:?}"),
    }
    assert!(matches!(
        codec.encode("{}", &context()),
        Err(CallError::OutputTooLarge {
            bytes: 8388608,
            limit: 1048576
        })
    ));
}

#[test]
fn garbage_output_is_refused_with_the_reason() {
    let (runtime, _host) = runtime(quiet_config());
    install(
        &runtime,
        codec_manifest("garbage", ""),
        artifacts::GARBAGE_CODEC,
    );
    let codec = runtime.codec("garbage").unwrap();
    for (kind, expected) in [
        (0u8, "Alink JSON request object"),
        (1, "Alink JSON request object"),
        (2, "method"),
        (3, "params"),
    ] {
        match codec.decode("t", &[kind], &context()) {
            Err(CallError::InvalidOutput(message)) => {
                assert!(message.contains(expected), "kind {kind}: {message}")
            }
            other => panic!("kind {kind}: expected invalid output, got {other:?}"),
        }
    }
}

/// All hostile codecs run at once on one runtime while a good codec decodes in a loop: every
/// good call succeeds, during and after.
#[test]
fn good_codec_keeps_serving_while_hostile_ones_fail() {
    let (runtime, _host) = runtime(quiet_config());
    install(
        &runtime,
        codec_manifest("good", "capabilities = [\"log\"]"),
        artifacts::GOOD_CODEC,
    );
    // Each bound is set so that it, and not another one, stops its component even on a busy
    // machine: generous time where the memory or output bound must act, no fuel cap on the loop.
    let hostile = [
        (
            "loop",
            artifacts::LOOP_CODEC,
            "timeout",
            "call_timeout_ms = 200\nfuel_per_call = 100000000000",
        ),
        (
            "bomb",
            artifacts::MEMORY_BOMB_CODEC,
            "memory_limit",
            "memory_mib = 16\ncall_timeout_ms = 10000",
        ),
        (
            "recursion",
            artifacts::RECURSION_CODEC,
            "trap",
            "call_timeout_ms = 10000",
        ),
        (
            "panic",
            artifacts::PANIC_CODEC,
            "trap",
            "call_timeout_ms = 10000",
        ),
        (
            "huge",
            artifacts::HUGE_OUTPUT_CODEC,
            "output_too_large",
            "memory_mib = 128\ncall_timeout_ms = 10000",
        ),
        (
            "garbage",
            artifacts::GARBAGE_CODEC,
            "invalid_output",
            "call_timeout_ms = 10000",
        ),
    ];
    for (id, path, _, limits) in hostile {
        install(
            &runtime,
            codec_manifest(id, &format!("[limits]\n{limits}")),
            path,
        );
    }

    let stop = Arc::new(AtomicBool::new(false));
    let good_calls = Arc::new(AtomicUsize::new(0));
    let good = {
        let codec = runtime.codec("good").unwrap();
        let (stop, good_calls) = (stop.clone(), good_calls.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                codec
                    .decode("t", &GOOD_FRAME, &context())
                    .expect("good codec keeps serving");
                good_calls.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let attackers: Vec<_> = hostile
        .iter()
        .map(|&(id, _, reason, _)| {
            let codec = runtime.codec(id).unwrap();
            std::thread::spawn(move || {
                for _ in 0..3 {
                    let error = codec.decode("t", b"x", &context()).unwrap_err();
                    assert_eq!(error.reason(), reason, "{id}: {error}");
                }
            })
        })
        .collect();
    for attacker in attackers {
        attacker
            .join()
            .expect("hostile call returned the expected reason");
    }
    let during = good_calls.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    good.join().expect("good codec never failed");
    assert!(during > 0, "good codec answered while hostile ones ran");
    runtime
        .codec("good")
        .unwrap()
        .decode("t", &GOOD_FRAME, &context())
        .expect("good codec serves after");
}

#[test]
fn repeated_failures_suspend_the_plugin_once() {
    let (runtime, host) = runtime(RuntimeConfig {
        suspend_after_failures: 3,
        ..RuntimeConfig::default()
    });
    install(
        &runtime,
        codec_manifest("panic", ""),
        artifacts::PANIC_CODEC,
    );
    let codec = runtime.codec("panic").unwrap();
    for _ in 0..3 {
        assert_eq!(
            codec.decode("t", b"x", &context()).unwrap_err().reason(),
            "trap"
        );
    }
    for _ in 0..2 {
        assert!(
            matches!(codec.decode("t", b"x", &context()), Err(CallError::Suspended(reason)) if reason.contains("3 consecutive"))
        );
    }
    let suspended = host.suspended.lock().clone();
    assert_eq!(
        suspended.len(),
        1,
        "platform told exactly once: {suspended:?}"
    );
    assert_eq!(suspended[0].0, "panic");
    let status = runtime.status("panic").unwrap();
    assert!(!status.is_active());
    assert_eq!(status.consecutive_failures, 3);

    assert!(runtime.resume("panic"));
    assert!(runtime.status("panic").unwrap().is_active());
    assert_eq!(
        codec.decode("t", b"x", &context()).unwrap_err().reason(),
        "trap"
    );
}

#[test]
fn codec_errors_do_not_count_towards_suspension() {
    let (runtime, host) = runtime(RuntimeConfig {
        suspend_after_failures: 2,
        ..RuntimeConfig::default()
    });
    install(
        &runtime,
        codec_manifest("good", "capabilities = [\"log\"]"),
        artifacts::GOOD_CODEC,
    );
    let codec = runtime.codec("good").unwrap();
    for _ in 0..5 {
        assert_eq!(
            codec.decode("t", &[0x09], &context()).unwrap_err().reason(),
            "codec_error"
        );
    }
    assert!(runtime.status("good").unwrap().is_active());
    assert!(host.suspended.lock().is_empty());
}
