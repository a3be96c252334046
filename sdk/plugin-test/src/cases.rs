//! Case files: TOML tables of inputs and what the plugin must answer, run through a [`Harness`].
//! The format is documented in `sdk/plugin-test/README.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use lotus_plugin::CallError;
use serde::Deserialize;
use serde_json::Value;

use crate::convert;
use crate::matching::subset_diff;
use crate::{Harness, HarnessError, MessageContext};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    /// Defaults for every case.
    product_key: Option<String>,
    device_name: Option<String>,
    at_ms: Option<i64>,
    #[serde(default)]
    kv: BTreeMap<String, Value>,
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    #[serde(default)]
    devices: BTreeMap<String, Value>,
    #[serde(default, rename = "case")]
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    call: String,
    /// Not run; the reason is printed (like `#[ignore = "…"]`).
    ignore: Option<String>,
    topic: Option<String>,
    product_key: Option<String>,
    device_name: Option<String>,
    at_ms: Option<i64>,

    input: Option<Value>,
    input_hex: Option<String>,
    input_base64: Option<String>,
    input_file: Option<String>,

    expect: Option<Value>,
    expect_hex: Option<String>,
    expect_text: Option<String>,
    expect_error: Option<String>,
    expect_error_field: Option<String>,
    expect_error_offset: Option<u32>,
    expect_kv: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    expect_kv_absent: Vec<String>,
    #[serde(default)]
    expect_logs: Vec<String>,
    expect_effects: Option<Value>,

    #[serde(default)]
    kv: BTreeMap<String, Value>,
    /// Keys of the file's `[kv]` this case starts without.
    #[serde(default)]
    kv_absent: Vec<String>,
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    #[serde(default)]
    devices: BTreeMap<String, Value>,
}

/// The result of one case.
#[derive(Debug, Clone)]
pub struct CaseOutcome {
    pub name: String,
    pub passed: bool,
    /// `Some(reason)` when the case was not run (`ignore = "…"`); it counts as neither.
    pub ignored: Option<String>,
    /// Why it failed, one line per difference (empty when it passed).
    pub failures: Vec<String>,
    /// What the plugin answered, for the failure report.
    pub output: String,
    pub duration: Duration,
}

/// The results of a case file, printed like `cargo test` output by its `Display`.
#[derive(Debug, Clone)]
pub struct CaseReport {
    pub source: String,
    pub plugin: String,
    pub notes: Vec<String>,
    pub cases: Vec<CaseOutcome>,
    pub duration: Duration,
}

impl CaseReport {
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.passed).count()
    }

    pub fn ignored(&self) -> usize {
        self.cases.iter().filter(|c| c.ignored.is_some()).count()
    }

    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed() - self.ignored()
    }

    /// No case failed and at least one passed.
    pub fn is_success(&self) -> bool {
        self.passed() > 0 && self.failed() == 0
    }

    pub fn failed_names(&self) -> Vec<&str> {
        self.cases
            .iter()
            .filter(|c| !c.passed && c.ignored.is_none())
            .map(|c| c.name.as_str())
            .collect()
    }

    /// The last line: `test result: ok. 5 passed; 0 failed; finished in 0.10s`.
    pub fn summary(&self) -> String {
        format!(
            "test result: {}. {} passed; {} failed; {} ignored; finished in {:.2}s",
            if self.is_success() { "ok" } else { "FAILED" },
            self.passed(),
            self.failed(),
            self.ignored(),
            self.duration.as_secs_f64()
        )
    }
}

impl fmt::Display for CaseReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "running {} case{} from {} ({})",
            self.cases.len(),
            if self.cases.len() == 1 { "" } else { "s" },
            self.source,
            self.plugin
        )?;
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        for case in &self.cases {
            match (&case.ignored, case.passed) {
                (Some(reason), _) => writeln!(f, "case {} ... ignored, {reason}", case.name)?,
                (None, true) => writeln!(f, "case {} ... ok", case.name)?,
                (None, false) => writeln!(f, "case {} ... FAILED", case.name)?,
            }
        }
        if self.cases.is_empty() {
            writeln!(f, "no cases: add [[case]] tables")?;
        }
        if self.failed() > 0 {
            writeln!(f, "\nfailures:\n")?;
            for case in self
                .cases
                .iter()
                .filter(|c| !c.passed && c.ignored.is_none())
            {
                writeln!(f, "---- {} ----", case.name)?;
                for line in &case.failures {
                    writeln!(f, "  {line}")?;
                }
                if !case.output.is_empty() {
                    writeln!(f, "  plugin answered: {}", case.output)?;
                }
                writeln!(f)?;
            }
            writeln!(f, "failures:")?;
            for name in self.failed_names() {
                writeln!(f, "    {name}")?;
            }
        }
        writeln!(f, "\n{}", self.summary())
    }
}

/// Runs every case of the TOML file at `cases_path` against the plugin. Each case starts from a
/// clean platform: kv, secrets and devices are the file's tables plus the case's own, and
/// nothing recorded. `Err` only when the file cannot be read or parsed; failing cases are in the
/// report.
pub fn run_cases(harness: &Harness, cases_path: &Path) -> Result<CaseReport, HarnessError> {
    let text = std::fs::read_to_string(cases_path).map_err(|source| HarnessError::Io {
        path: cases_path.to_path_buf(),
        source,
    })?;
    let base = cases_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    run_cases_str(harness, &text, &base, &cases_path.display().to_string())
}

/// [`run_cases`] on the text of a case file; `base_dir` resolves `input_file`, `source` names the
/// file in the report.
pub fn run_cases_str(
    harness: &Harness,
    text: &str,
    base_dir: &Path,
    source: &str,
) -> Result<CaseReport, HarnessError> {
    let file: CaseFile = toml::from_str(text)
        .map_err(|e| HarnessError::Input(format!("{source} is not a valid case file: {e}")))?;
    let started = Instant::now();
    let mut cases = Vec::with_capacity(file.cases.len());
    for case in &file.cases {
        if let Some(reason) = &case.ignore {
            cases.push(CaseOutcome {
                name: case.name.clone(),
                passed: false,
                ignored: Some(reason.clone()),
                failures: Vec::new(),
                output: String::new(),
                duration: Duration::ZERO,
            });
            continue;
        }
        let case_started = Instant::now();
        let mut run = Run::default();
        if let Err(message) = run_case(harness, &file, case, base_dir, &mut run) {
            run.failures.push(message);
        }
        cases.push(CaseOutcome {
            name: case.name.clone(),
            passed: run.failures.is_empty(),
            ignored: None,
            failures: run.failures,
            output: run.output,
            duration: case_started.elapsed(),
        });
    }
    harness.reset();
    let manifest = harness.manifest();
    Ok(CaseReport {
        source: source.to_owned(),
        plugin: format!(
            "plugin {} {}, world {}",
            manifest.id, manifest.version, manifest.world
        ),
        notes: harness.notes().to_vec(),
        cases,
        duration: started.elapsed(),
    })
}

#[derive(Default)]
struct Run {
    failures: Vec<String>,
    output: String,
}

/// What a call returned.
enum Output {
    /// JSON (decode, rule, event, channel) with the exact text for decode.
    Json(Value, Option<String>),
    Bytes(Vec<u8>),
    Unit,
}

impl Output {
    fn describe(&self) -> String {
        match self {
            Output::Json(_, Some(text)) => text.clone(),
            Output::Json(value, None) => value.to_string(),
            Output::Bytes(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) if !text.is_empty() && !text.contains('\0') => {
                    format!("{} (hex {})", text, spaced_hex(bytes))
                }
                _ => format!("hex {}", spaced_hex(bytes)),
            },
            Output::Unit => "ok (no result)".to_owned(),
        }
    }
}

fn spaced_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Hex as people write it: spaces, `:`, `-`, `,` and `0x` prefixes allowed.
fn parse_hex(text: &str, what: &str) -> Result<Vec<u8>, String> {
    let cleaned: String = text
        .split(|c: char| c.is_whitespace() || matches!(c, ':' | '-' | ','))
        .map(|token| {
            token
                .strip_prefix("0x")
                .or_else(|| token.strip_prefix("0X"))
                .unwrap_or(token)
        })
        .collect();
    hex::decode(&cleaned).map_err(|e| format!("{what} is not hex ({e}): {text:?}"))
}

/// A kv value from a case file: a string is stored as its UTF-8 bytes, anything else as JSON.
fn kv_bytes(value: &Value) -> Vec<u8> {
    match value {
        Value::String(s) => s.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    }
}

fn prepare_platform(harness: &Harness, file: &CaseFile, case: &Case) -> Result<(), String> {
    harness.reset();
    for (key, value) in file.kv.iter().chain(&case.kv) {
        if !case.kv_absent.contains(key) {
            harness.set_kv(key, kv_bytes(value));
        }
    }
    for (name, value) in file.secrets.iter().chain(&case.secrets) {
        harness.set_secret(name, value);
    }
    for (device, properties) in file.devices.iter().chain(&case.devices) {
        let (pk, dn) = device
            .split_once('/')
            .ok_or_else(|| format!("devices key {device:?} must be \"productKey/deviceName\""))?;
        if !properties.is_object() {
            return Err(format!("devices.{device:?} must be a table of properties"));
        }
        harness.set_device_properties(pk, dn, properties);
    }
    Ok(())
}

fn context(harness: &Harness, file: &CaseFile, case: &Case, call: Call) -> MessageContext {
    let pk = case
        .product_key
        .clone()
        .or_else(|| file.product_key.clone());
    let dn = case
        .device_name
        .clone()
        .or_else(|| file.device_name.clone());
    let mut ctx = match &case.topic {
        Some(topic) => harness.context(topic),
        None => harness.context(""),
    };
    if let Some(pk) = pk {
        ctx.product_key = pk;
    }
    if let Some(dn) = dn {
        ctx.device_name = dn;
    }
    ctx.at_ms = case.at_ms.or(file.at_ms).unwrap_or(ctx.at_ms);
    if case.topic.is_none() {
        let suffix = match call {
            Call::Decode => "thing/model/up_raw",
            Call::Encode => "thing/model/down_raw",
            _ => "thing/event/property/post",
        };
        ctx.topic = format!("/sys/{}/{}/{suffix}", ctx.product_key, ctx.device_name);
    }
    ctx
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Decode,
    Encode,
    Rule,
    Event,
    AppMessage,
    AppStatus,
    AppEvent,
    Channel,
}

impl Call {
    fn parse(name: &str) -> Result<Call, String> {
        Ok(match name {
            "decode" => Call::Decode,
            "encode" => Call::Encode,
            "rule" | "evaluate" => Call::Rule,
            "event" | "handle" => Call::Event,
            "app-message" | "on-message" => Call::AppMessage,
            "app-status" | "on-status" => Call::AppStatus,
            "app-event" | "on-event" => Call::AppEvent,
            "channel" | "deliver" => Call::Channel,
            other => {
                return Err(format!(
                    "call {other:?} is not one of decode, encode, rule, event, app-message, app-status, app-event, channel"
                ));
            }
        })
    }
}

/// The case's input as bytes (decode) or JSON (everything else).
fn input_bytes(case: &Case, base_dir: &Path) -> Result<Vec<u8>, String> {
    let given = [
        case.input.is_some(),
        case.input_hex.is_some(),
        case.input_base64.is_some(),
        case.input_file.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given > 1 {
        return Err("give only one of input, input_hex, input_base64, input_file".to_owned());
    }
    if let Some(hex) = &case.input_hex {
        return parse_hex(hex, "input_hex");
    }
    if let Some(b64) = &case.input_base64 {
        return base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| format!("input_base64 is not base64: {e}"));
    }
    if let Some(file) = &case.input_file {
        let path: PathBuf = base_dir.join(file);
        return std::fs::read(&path).map_err(|e| format!("input_file {}: {e}", path.display()));
    }
    match &case.input {
        Some(Value::String(s)) => Ok(s.clone().into_bytes()),
        Some(other) => Ok(other.to_string().into_bytes()),
        None => {
            Err("the case has no input (input, input_hex, input_base64 or input_file)".to_owned())
        }
    }
}

fn input_json(case: &Case, base_dir: &Path) -> Result<Value, String> {
    if case.input_hex.is_some() || case.input_base64.is_some() {
        return Err("this call takes JSON: give `input` (a table) or `input_file`".to_owned());
    }
    if let Some(file) = &case.input_file {
        let path = base_dir.join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("input_file {}: {e}", path.display()))?;
        return serde_json::from_str(&text)
            .map_err(|e| format!("input_file {} is not JSON: {e}", path.display()));
    }
    match &case.input {
        Some(Value::String(s)) => {
            serde_json::from_str(s).map_err(|e| format!("input is not JSON: {e}"))
        }
        Some(other) => Ok(other.clone()),
        None => Err("the case has no input".to_owned()),
    }
}

fn call(
    harness: &Harness,
    case: &Case,
    call: Call,
    ctx: &MessageContext,
    base_dir: &Path,
) -> Result<Result<Output, HarnessError>, String> {
    Ok(match call {
        Call::Decode => {
            let payload = input_bytes(case, base_dir)?;
            harness.decode_text(&ctx.topic, &payload, ctx).map(|text| {
                let value = serde_json::from_str(&text).unwrap_or(Value::Null);
                Output::Json(value, Some(text))
            })
        }
        Call::Encode => {
            let message = input_bytes(case, base_dir)?;
            let message = String::from_utf8(message)
                .map_err(|_| "encode takes an Alink JSON message, not binary input".to_owned())?;
            harness.encode(&message, ctx).map(Output::Bytes)
        }
        Call::Rule => {
            let trigger = convert::trigger(&input_json(case, base_dir)?, ctx)?;
            harness
                .evaluate(&trigger)
                .map(|actions| Output::Json(convert::actions_json(&actions), None))
        }
        Call::Event => {
            let event = convert::platform_event(&input_json(case, base_dir)?, ctx)?;
            harness
                .handle(&event)
                .map(|actions| Output::Json(convert::actions_json(&actions), None))
        }
        Call::AppMessage => {
            let message = convert::device_message(&input_json(case, base_dir)?, ctx)?;
            harness.on_message(&message).map(|()| Output::Unit)
        }
        Call::AppStatus => {
            let change = convert::status_change(&input_json(case, base_dir)?, ctx)?;
            harness.on_status(&change).map(|()| Output::Unit)
        }
        Call::AppEvent => {
            let event = convert::platform_event(&input_json(case, base_dir)?, ctx)?;
            harness.on_event(&event).map(|()| Output::Unit)
        }
        Call::Channel => {
            let notification = convert::notification(&input_json(case, base_dir)?)?;
            harness
                .deliver(&notification)
                .map(|delivery| Output::Json(convert::delivery_json(&delivery), None))
        }
    })
}

fn run_case(
    harness: &Harness,
    file: &CaseFile,
    case: &Case,
    base_dir: &Path,
    run: &mut Run,
) -> Result<(), String> {
    let kind = Call::parse(&case.call)?;
    prepare_platform(harness, file, case)?;
    let ctx = context(harness, file, case, kind);
    let result = call(harness, case, kind, &ctx, base_dir)?;

    let wants_error = case.expect_error.is_some()
        || case.expect_error_field.is_some()
        || case.expect_error_offset.is_some();
    let failures = &mut run.failures;
    match &result {
        Ok(output) => {
            run.output = output.describe();
            if wants_error {
                failures.push(format!(
                    "expected an error{}, but the call succeeded",
                    case.expect_error
                        .as_ref()
                        .map(|e| format!(" containing {e:?}"))
                        .unwrap_or_default()
                ));
            }
            check_output(case, output, failures);
        }
        Err(error) => {
            run.output = format!("error: {error}");
            match error.call_error() {
                Some(call_error) if wants_error => check_error(case, call_error, failures),
                _ if wants_error => failures.push(format!(
                    "expected the plugin to answer with an error, but the harness failed: {error}"
                )),
                _ => failures.push(format!("the call failed: {error}")),
            }
        }
    }
    check_platform(harness, case, failures);
    Ok(())
}

fn check_error(case: &Case, error: &CallError, failures: &mut Vec<String>) {
    let text = error.to_string();
    if let Some(want) = &case.expect_error
        && !text.contains(want.as_str())
    {
        failures.push(format!(
            "expected an error containing {want:?}, got: {text}"
        ));
    }
    let (offset, field) = match error {
        CallError::Codec { offset, field, .. } => (*offset, field.clone()),
        _ => (None, None),
    };
    if let Some(want) = &case.expect_error_field
        && field.as_deref() != Some(want.as_str())
    {
        failures.push(format!(
            "expected the error's field {want:?}, got {}",
            field.map_or("none".to_owned(), |f| format!("{f:?}"))
        ));
    }
    if let Some(want) = case.expect_error_offset
        && offset != Some(want)
    {
        failures.push(format!(
            "expected the error's byte offset {want}, got {}",
            offset.map_or("none".to_owned(), |o| o.to_string())
        ));
    }
}

fn check_output(case: &Case, output: &Output, failures: &mut Vec<String>) {
    if let Some(expect) = &case.expect {
        let actual = match output {
            Output::Json(value, _) => Some(value.clone()),
            Output::Bytes(bytes) => match serde_json::from_slice::<Value>(bytes) {
                Ok(value) => Some(value),
                Err(_) => {
                    failures.push(
                        "`expect` compares JSON, but the plugin returned bytes that are not JSON; use expect_hex"
                            .to_owned(),
                    );
                    None
                }
            },
            Output::Unit => {
                failures.push(
                    "`expect` has nothing to compare: this call returns no result; use expect_effects, expect_kv or expect_logs"
                        .to_owned(),
                );
                None
            }
        };
        if let Some(actual) = actual {
            failures.extend(subset_diff(expect, &actual));
        }
    }
    if let Some(want) = &case.expect_hex {
        match (parse_hex(want, "expect_hex"), output) {
            (Err(e), _) => failures.push(e),
            (Ok(want), Output::Bytes(have)) => {
                if &want != have {
                    failures.push(format!(
                        "expected bytes {}, got {}",
                        spaced_hex(&want),
                        spaced_hex(have)
                    ));
                }
            }
            (Ok(_), _) => failures.push("expect_hex applies to encode".to_owned()),
        }
    }
    if let Some(want) = &case.expect_text {
        let have = match output {
            Output::Json(_, Some(text)) => text.clone(),
            Output::Json(value, None) => value.to_string(),
            Output::Bytes(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Output::Unit => String::new(),
        };
        if &have != want {
            failures.push(format!("expected the text {want:?}, got {have:?}"));
        }
    }
}

fn check_platform(harness: &Harness, case: &Case, failures: &mut Vec<String>) {
    if let Some(expect_kv) = &case.expect_kv {
        for (key, want) in expect_kv {
            match harness.kv(key) {
                None => failures.push(format!("kv {key:?}: missing (expected {want})")),
                Some(bytes) => {
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    match want {
                        Value::String(s) => {
                            if *s != text {
                                failures.push(format!("kv {key:?}: expected {s:?}, got {text:?}"));
                            }
                        }
                        other => match serde_json::from_str::<Value>(&text) {
                            Ok(have) => failures.extend(
                                subset_diff(other, &have)
                                    .into_iter()
                                    .map(|d| format!("kv {key:?} {d}")),
                            ),
                            Err(_) => failures
                                .push(format!("kv {key:?}: expected JSON {other}, got {text:?}")),
                        },
                    }
                }
            }
        }
    }
    for key in &case.expect_kv_absent {
        if let Some(bytes) = harness.kv(key) {
            failures.push(format!(
                "kv {key:?}: expected no entry, got {:?}",
                String::from_utf8_lossy(&bytes)
            ));
        }
    }
    if !case.expect_logs.is_empty() {
        let logs = harness.logs();
        for want in &case.expect_logs {
            if !logs.iter().any(|line| line.message.contains(want.as_str())) {
                let seen: Vec<String> = logs
                    .iter()
                    .map(|l| format!("{:?} {}", l.level, l.message))
                    .collect();
                failures.push(format!(
                    "no log line contains {want:?}; the log has: {}",
                    if seen.is_empty() {
                        "nothing".to_owned()
                    } else {
                        seen.join(" | ")
                    }
                ));
            }
        }
    }
    if let Some(want) = &case.expect_effects {
        let have = harness.effects();
        failures.extend(
            subset_diff(want, &have)
                .into_iter()
                .map(|d| format!("effects {d}")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_accepts_the_usual_spellings() {
        assert_eq!(
            parse_hex("68 01 0x02 aa:bb-cc", "x").unwrap(),
            vec![0x68, 0x01, 0x02, 0xaa, 0xbb, 0xcc]
        );
        assert!(parse_hex("6", "x").is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let error = toml::from_str::<CaseFile>(
            "[[case]]\nname = \"a\"\ncall = \"decode\"\nexpected = {}\n",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(error.contains("expected"), "{error}");
    }
}
