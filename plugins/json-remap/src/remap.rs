//! Mapping vendor JSON to thing-model properties and back, without host calls.

use lotus_plugin_sdk::serde_json::{self, Map, Value};
use lotus_plugin_sdk::{AlinkRequest, CodecError, Downlink, scaled};

use crate::path::Path;

/// A mapping key naming where the vendor puts its message id instead of a property.
pub const ID_KEY: &str = "$id";
/// A mapping key naming where the vendor puts the measurement time (ms since the epoch).
pub const TIME_KEY: &str = "$time";

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub path: Path,
    /// Property = vendor value × scale; encoding divides.
    pub scale: Option<f64>,
}

/// Identifier → where its value is in the vendor's JSON. `None` is the default pass-through.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Mapping {
    pub rules: Vec<(String, Rule)>,
}

impl Mapping {
    /// Parses the kv value `{"Temperature": "$.data.temp", "Humidity": {"path": "$.data.hum", "scale": 0.1}}`.
    pub fn parse(text: &str) -> Result<Mapping, CodecError> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            CodecError::new(format!(
                "kv `mapping` is not JSON (line {}, column {}): {e}",
                e.line(),
                e.column()
            ))
            .field("mapping")
        })?;
        let Value::Object(entries) = value else {
            return Err(
                CodecError::new("kv `mapping` must be a JSON object of identifier → path")
                    .field("mapping"),
            );
        };
        let mut rules = Vec::with_capacity(entries.len());
        for (identifier, spec) in entries {
            let (path, scale) = match &spec {
                Value::String(path) => (path.as_str(), None),
                Value::Object(o) => {
                    let path = o.get("path").and_then(Value::as_str).ok_or_else(|| {
                        CodecError::new("needs a \"path\" string")
                            .field(format!("mapping.{identifier}"))
                    })?;
                    let scale = match o.get("scale") {
                        None => None,
                        Some(s) => Some(
                            s.as_f64()
                                .filter(|s| *s != 0.0 && s.is_finite())
                                .ok_or_else(|| {
                                    CodecError::new("scale must be a non-zero number")
                                        .field(format!("mapping.{identifier}"))
                                })?,
                        ),
                    };
                    (path, scale)
                }
                _ => {
                    return Err(
                        CodecError::new("must be a path string or {\"path\", \"scale\"}")
                            .field(format!("mapping.{identifier}")),
                    );
                }
            };
            let path = Path::parse(path).map_err(|e| {
                CodecError::new(format!("path {path:?} {e}")).field(format!("mapping.{identifier}"))
            })?;
            rules.push((identifier, Rule { path, scale }));
        }
        Ok(Mapping { rules })
    }

    fn rule(&self, key: &str) -> Option<&Rule> {
        self.rules.iter().find(|(k, _)| k == key).map(|(_, r)| r)
    }
}

/// Vendor JSON → property post. `default_id` is used when the mapping has no `$id`.
pub fn decode(
    payload: &[u8],
    mapping: &Mapping,
    default_id: String,
) -> Result<AlinkRequest, CodecError> {
    let doc: Value = serde_json::from_slice(payload).map_err(|e| {
        CodecError::new(format!("payload is not JSON: {e}"))
            .at(byte_offset(payload, e.line(), e.column()))
            .field("payload")
    })?;
    if mapping.rules.is_empty() {
        return pass_through(&doc, default_id);
    }
    let id = match mapping.rule(ID_KEY).and_then(|r| r.path.get(&doc)) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => default_id,
    };
    let mut post = AlinkRequest::property_post(id);
    if let Some(time) = mapping.rule(TIME_KEY).and_then(|r| r.path.get(&doc)) {
        let time = time.as_i64().ok_or_else(|| {
            CodecError::new(format!("{time} is not ms since the epoch")).field(TIME_KEY)
        })?;
        post = post.time(time);
    }
    for (identifier, rule) in &mapping.rules {
        if identifier == ID_KEY || identifier == TIME_KEY {
            continue;
        }
        // Devices often report a subset each time; a missing path is not an error.
        let Some(value) = rule.path.get(&doc) else {
            continue;
        };
        let value = match (rule.scale, value.as_f64()) {
            (Some(scale), Some(n)) => Value::from(scaled(n, scale)),
            (Some(_), None) => {
                return Err(CodecError::new(format!(
                    "{value} is not a number, so it cannot be scaled"
                ))
                .field(identifier.as_str()));
            }
            (None, _) => value.clone(),
        };
        post.insert(identifier.clone(), value);
    }
    if post.is_empty() {
        return Err(CodecError::new("none of the mapped paths is in the payload").field("mapping"));
    }
    Ok(post)
}

/// The default without a mapping: the payload's top-level numbers, strings and booleans become
/// the properties of the same names, for vendors whose field names already match the thing model.
fn pass_through(doc: &Value, id: String) -> Result<AlinkRequest, CodecError> {
    let Value::Object(fields) = doc else {
        return Err(
            CodecError::new("without a mapping the payload must be a JSON object")
                .at(0)
                .field("payload"),
        );
    };
    let mut post = AlinkRequest::property_post(id);
    for (name, value) in fields {
        if matches!(value, Value::Number(_) | Value::String(_) | Value::Bool(_)) {
            post.insert(name.clone(), value.clone());
        }
    }
    if post.is_empty() {
        return Err(CodecError::new(
            "the payload has no top-level values to pass through; configure kv `mapping`",
        )
        .field("payload"));
    }
    Ok(post)
}

/// Property set → vendor JSON, written at each identifier's path.
pub fn encode(message: &Downlink, mapping: &Mapping) -> Result<Vec<u8>, CodecError> {
    let Downlink::PropertySet { id, params } = message else {
        return Err(
            CodecError::new("only property sets can be remapped to vendor JSON").field("method"),
        );
    };
    if mapping.rules.is_empty() {
        // Pass-through in the other direction too.
        return Ok(Value::Object(params.clone()).to_string().into_bytes());
    }
    let mut out = Value::Object(Map::new());
    if let Some(rule) = mapping.rule(ID_KEY) {
        set(&rule.path, &mut out, Value::String(id.clone()), ID_KEY)?;
    }
    for (identifier, value) in params {
        let rule = mapping.rule(identifier).ok_or_else(|| {
            CodecError::new("has no path in kv `mapping`").field(identifier.as_str())
        })?;
        let value = match (rule.scale, value.as_f64()) {
            (Some(scale), Some(n)) => Value::from(n / scale),
            (Some(_), None) => {
                return Err(CodecError::new(format!(
                    "{value} is not a number, so it cannot be scaled"
                ))
                .field(identifier.as_str()));
            }
            (None, _) => value.clone(),
        };
        set(&rule.path, &mut out, value, identifier)?;
    }
    Ok(out.to_string().into_bytes())
}

fn set(path: &Path, out: &mut Value, value: Value, identifier: &str) -> Result<(), CodecError> {
    path.set(out, value).map_err(|depth| {
        CodecError::new(format!(
            "its path crosses another identifier's value at segment {depth}"
        ))
        .field(identifier)
    })
}

fn byte_offset(payload: &[u8], line: usize, column: usize) -> usize {
    let line_start: usize = payload
        .split_inclusive(|&b| b == b'\n')
        .take(line.saturating_sub(1))
        .map(<[u8]>::len)
        .sum();
    line_start + column.saturating_sub(1)
}
