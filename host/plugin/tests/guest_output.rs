//! What a guest writes to stdout and stderr reaches the plugin log once per call, bounded; a
//! Rust guest's panic message reaches the trap the caller and the operator see.

mod support;

use lotus_plugin::{CallError, LogLevel, LogLine, LogSource, RuntimeConfig};
use lotus_plugin_artifacts as artifacts;
use support::{codec_manifest, context, install, runtime};

fn quiet_config() -> RuntimeConfig {
    RuntimeConfig {
        suspend_after_failures: 1000,
        ..RuntimeConfig::default()
    }
}

fn guest_lines(lines: &[LogLine]) -> Vec<&LogLine> {
    lines
        .iter()
        .filter(|l| l.source == LogSource::Guest)
        .collect()
}

#[test]
fn a_panic_message_reaches_the_trap_and_the_log() {
    let (runtime, _host) = runtime(quiet_config());
    install(
        &runtime,
        codec_manifest("panic", "[limits]\ncall_timeout_ms = 10000"),
        artifacts::PANIC_CODEC,
    );
    let codec = runtime.codec("panic").unwrap();

    let error = codec.decode("t", b"abc", &context()).unwrap_err();
    let CallError::Trap(message) = &error else {
        panic!("expected a trap, got {error:?}");
    };
    assert!(
        message.contains("codec bug: cannot handle a 3-byte frame"),
        "{message}"
    );
    // The guest's source location comes first (the path as its build saw it).
    assert!(
        message.starts_with("panicked at ") && message.contains("src/lib.rs:"),
        "{message}"
    );
    assert!(message.contains("unreachable"), "{message}");
    assert!(message.len() < 700, "{message}");

    let logs = runtime.logs("panic", 100);
    let host_failure = logs
        .iter()
        .find(|l| l.source == LogSource::Host && l.message.starts_with("decode failed"))
        .unwrap_or_else(|| panic!("no host failure line in {logs:?}"));
    assert_eq!(host_failure.level, LogLevel::Error);
    assert!(
        host_failure
            .message
            .contains("codec bug: cannot handle a 3-byte frame"),
        "{host_failure:?}"
    );
    // The guest's own stderr lines are there too, as warnings, before the host's line.
    let guest = guest_lines(&logs);
    let panic_line = guest
        .iter()
        .find(|l| {
            l.message
                .contains("codec bug: cannot handle a 3-byte frame")
        })
        .unwrap_or_else(|| panic!("no guest stderr line in {logs:?}"));
    assert_eq!(panic_line.level, LogLevel::Warn);
    assert_eq!(panic_line.version, "1.0.0");

    // The next call runs on a fresh instance and repeats nothing from the trapped one.
    assert_eq!(codec.encode("{}", &context()).unwrap(), vec![0x02]);
    let after = runtime.logs("panic", 100);
    assert_eq!(guest_lines(&after).len(), guest.len(), "{after:?}");
    // A second trap reports its own frame size.
    let error = codec.decode("t", b"abcde", &context()).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("codec bug: cannot handle a 5-byte frame"),
        "{error}"
    );
}

#[test]
fn stdout_and_stderr_lines_appear_once_per_call_with_their_levels() {
    let (runtime, _host) = runtime(quiet_config());
    install(
        &runtime,
        codec_manifest("chatty", "[limits]\ncall_timeout_ms = 10000"),
        artifacts::CHATTY_CODEC,
    );
    let codec = runtime.codec("chatty").unwrap();
    for _ in 0..3 {
        let json = codec.decode("t/raw", &[0x01], &context()).unwrap();
        assert!(json.contains("\"bytes\":1"), "{json}");
    }

    let logs = runtime.logs("chatty", 100);
    let guest = guest_lines(&logs);
    let expected = [
        (LogLevel::Info, "decoding 1 bytes from t/raw"),
        (LogLevel::Warn, "frame [01] has no checksum"),
        (LogLevel::Info, "partial line without newline"),
    ];
    let seen: Vec<(LogLevel, &str)> = guest
        .iter()
        .map(|l| (l.level, l.message.as_str()))
        .collect();
    // Three calls on one pooled instance: each call's lines exactly once, in the order written.
    let want: Vec<(LogLevel, &str)> = expected.iter().copied().cycle().take(9).collect();
    assert_eq!(seen, want, "{logs:?}");
    assert!(guest.iter().all(|l| l.version == "1.0.0"));
}

#[test]
fn a_flood_of_output_is_truncated_and_the_next_call_starts_clean() {
    let (runtime, _host) = runtime(quiet_config());
    install(
        &runtime,
        codec_manifest(
            "chatty",
            "[limits]\ncall_timeout_ms = 30000\nfuel_per_call = 100000000000",
        ),
        artifacts::CHATTY_CODEC,
    );
    let codec = runtime.codec("chatty").unwrap();

    // 1 MiB on each stream; the guest is not failed for it.
    codec.decode("t", &[0x02], &context()).unwrap();
    let logs = runtime.logs("chatty", 10_000);
    let guest = guest_lines(&logs);
    let kept_bytes: usize = guest.iter().map(|l| l.message.len()).sum();
    assert!(
        kept_bytes < 2 * 16 * 1024 + 1024,
        "kept {kept_bytes} bytes of a 2 MiB flood"
    );
    assert!(guest.len() <= 200 + 1 + 2, "{} lines kept", guest.len());
    for (stream, level) in [("stdout", LogLevel::Info), ("stderr", LogLevel::Warn)] {
        let notice = guest
            .iter()
            .find(|l| l.message.starts_with("… (truncated") && l.message.contains(stream))
            .unwrap_or_else(|| panic!("no truncation notice for {stream}"));
        assert_eq!(notice.level, level);
    }
    assert!(
        guest
            .iter()
            .any(|l| l.level == LogLevel::Warn && l.message == "z".repeat(63))
    );

    // The same instance serves the next call, with a fresh budget and none of the flood.
    let before = guest.len();
    codec.decode("t", &[0x01], &context()).unwrap();
    let logs = runtime.logs("chatty", 10_000);
    let new: Vec<&str> = guest_lines(&logs)[before..]
        .iter()
        .map(|l| l.message.as_str())
        .collect();
    assert_eq!(
        new,
        [
            "decoding 1 bytes from t",
            "frame [01] has no checksum",
            "partial line without newline"
        ]
    );
}
