//! [`ThingModel`] → JSON Schemas (draft 2020-12) compiled once, and the translation of the first
//! schema violation back into TSL terms.
//!
//! Two rules are not plain JSON Schema: text lengths count UTF-8 bytes (JSON Schema's
//! `maxLength` counts code points), handled by the `maxUtf8Bytes` keyword; and a property value
//! may be wrapped as `{"value": v, "time": ms}`, handled by an `if`/`then`/`else` that mirrors
//! [`super::split_timed`].

use std::collections::HashMap;

use jsonschema::error::ValidationErrorKind;
use jsonschema::paths::{Location, LocationSegment};
use jsonschema::{Keyword, Validator};
use serde_json::{Map, Value, json};

use super::{DataType, Param, Property, Service, ThingModel, ValidationError, split_timed};

/// Custom keyword: a string's length in UTF-8 bytes must not exceed the keyword's value.
const MAX_UTF8_BYTES: &str = "maxUtf8Bytes";

/// UTC milliseconds, as Alibaba sends dates: a digit string or a non-negative integer.
/// (`pattern` only applies to strings and `minimum` only to numbers.)
fn millis_schema() -> Value {
    json!({"type": ["string", "integer"], "pattern": "^[0-9]+$", "minimum": 0})
}

/// A thing model's schemas, compiled. Validation allocates nothing on success; the error path
/// re-walks the model to phrase the message, which is rare and cheap.
pub struct CompiledThingModel {
    model: ThingModel,
    property_post: Validator,
    property_set: Validator,
    events: HashMap<String, Validator>,
    services: HashMap<String, ServiceValidators>,
}

struct ServiceValidators {
    input: Validator,
    output: Validator,
}

impl std::fmt::Debug for CompiledThingModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledThingModel")
            .field("properties", &self.model.properties.len())
            .field("events", &self.model.events.len())
            .field("services", &self.model.services.len())
            .finish_non_exhaustive()
    }
}

impl CompiledThingModel {
    pub(super) fn new(model: &ThingModel) -> Self {
        let property_post = build(&property_post_schema(&model.properties));
        let property_set = build(&property_set_schema(&model.properties));
        let events = model
            .events
            .iter()
            .map(|e| (e.identifier.clone(), build(&params_schema(&e.output_data))))
            .collect();
        let services = model
            .services
            .iter()
            .map(|s| {
                let validators = ServiceValidators {
                    input: build(&params_schema(&s.input_data)),
                    output: build(&params_schema(&s.output_data)),
                };
                (s.identifier.clone(), validators)
            })
            .collect();
        CompiledThingModel {
            model: model.clone(),
            property_post,
            property_set,
            events,
            services,
        }
    }

    /// Validates the params of `thing.event.property.post`: any subset of the properties, each
    /// as a bare value or as `{"value": v, "time": ms}`.
    pub fn validate_property_post(&self, params: &Value) -> Result<(), ValidationError> {
        check(
            &self.property_post,
            params,
            Scope::PropertyPost,
            &self.model,
        )
    }

    /// Validates the `value` object of a user event's post.
    pub fn validate_event_post(
        &self,
        identifier: &str,
        params: &Value,
    ) -> Result<(), ValidationError> {
        let (Some(validator), Some(event)) =
            (self.events.get(identifier), self.model.event(identifier))
        else {
            return Err(ValidationError {
                field: identifier.to_owned(),
                message: format!("unknown event '{identifier}' (not in the thing model)"),
            });
        };
        check(
            validator,
            params,
            Scope::Params {
                list: &event.output_data,
                owner: Owner::Event(identifier),
            },
            &self.model,
        )
    }

    /// Validates the params of `thing.service.property.set`: read-write properties only.
    pub fn validate_property_set(&self, params: &Value) -> Result<(), ValidationError> {
        check(&self.property_set, params, Scope::PropertySet, &self.model)
    }

    /// Validates the params the cloud sends when invoking a service.
    pub fn validate_service_input(
        &self,
        identifier: &str,
        params: &Value,
    ) -> Result<(), ValidationError> {
        let (validators, service) = self.service(identifier)?;
        let scope = Scope::Params {
            list: &service.input_data,
            owner: Owner::ServiceInput(identifier),
        };
        check(&validators.input, params, scope, &self.model)
    }

    /// Validates the `data` of a device's reply to a service call.
    pub fn validate_service_output(
        &self,
        identifier: &str,
        data: &Value,
    ) -> Result<(), ValidationError> {
        let (validators, service) = self.service(identifier)?;
        let scope = Scope::Params {
            list: &service.output_data,
            owner: Owner::ServiceReturn(identifier),
        };
        check(&validators.output, data, scope, &self.model)
    }

    fn service(&self, identifier: &str) -> Result<(&ServiceValidators, &Service), ValidationError> {
        match (
            self.services.get(identifier),
            self.model.service(identifier),
        ) {
            (Some(validators), Some(service)) => Ok((validators, service)),
            _ => Err(ValidationError {
                field: identifier.to_owned(),
                message: format!("unknown service '{identifier}' (not in the thing model)"),
            }),
        }
    }
}

fn check(
    validator: &Validator,
    instance: &Value,
    scope: Scope<'_>,
    model: &ThingModel,
) -> Result<(), ValidationError> {
    // `is_valid` short-circuits without building error paths: the common case stays cheap.
    if validator.is_valid(instance) {
        return Ok(());
    }
    match validator.validate(instance) {
        Ok(()) => Ok(()),
        Err(error) => Err(explain(&error, instance, scope, model)),
    }
}

fn build(schema: &Value) -> Validator {
    jsonschema::draft202012::options()
        .with_keyword(MAX_UTF8_BYTES, max_utf8_bytes)
        .build(schema)
        // The schema is generated from a model `parse` accepted (identifiers are plain words,
        // bounds are finite numbers), so failing here is a bug in this module, not bad input.
        .expect("schemas generated from a parsed thing model compile")
}

// ---------------------------------------------------------------------------------------------
// Schema generation
// ---------------------------------------------------------------------------------------------

fn property_post_schema(properties: &[Property]) -> Value {
    let members = properties.iter().map(|p| {
        let bare = value_schema(&p.data_type);
        let timed = json!({
            "if": {"type": "object", "required": ["value"], "propertyNames": {"enum": ["value", "time"]}},
            "then": {"properties": {"value": bare, "time": millis_schema()}},
            "else": bare,
        });
        (p.identifier.clone(), timed)
    });
    object_schema(members)
}

/// Read-only properties get the `false` schema rather than being left out, so the error says
/// "read-only" instead of "unknown".
fn property_set_schema(properties: &[Property]) -> Value {
    let members = properties.iter().map(|p| {
        let schema = if p.is_writable() {
            value_schema(&p.data_type)
        } else {
            Value::Bool(false)
        };
        (p.identifier.clone(), schema)
    });
    object_schema(members)
}

fn params_schema(params: &[Param]) -> Value {
    object_schema(
        params
            .iter()
            .map(|p| (p.identifier.clone(), value_schema(&p.data_type))),
    )
}

/// An object whose members are all optional (Alink posts carry any subset) but never unknown.
fn object_schema(members: impl Iterator<Item = (String, Value)>) -> Value {
    json!({
        "type": "object",
        "properties": members.collect::<Map<_, _>>(),
        "additionalProperties": false,
    })
}

fn value_schema(t: &DataType) -> Value {
    match t {
        DataType::Int { min, max, .. } => json!({
            "type": "integer",
            "minimum": min.unwrap_or(i32::MIN.into()),
            "maximum": max.unwrap_or(i32::MAX.into()),
        }),
        DataType::Float { min, max, .. } | DataType::Double { min, max, .. } => {
            let mut o = Map::new();
            o.insert("type".into(), "number".into());
            if let Some(min) = min {
                o.insert("minimum".into(), json!(min));
            }
            if let Some(max) = max {
                o.insert("maximum".into(), json!(max));
            }
            Value::Object(o)
        }
        DataType::Bool { .. } => {
            json!({"type": ["integer", "boolean"], "enum": [0, 1, false, true]})
        }
        DataType::Enum { values } => {
            json!({"type": "integer", "enum": values.keys().collect::<Vec<_>>()})
        }
        DataType::Text { length } => json!({"type": "string", MAX_UTF8_BYTES: length}),
        DataType::Date => millis_schema(),
        DataType::Struct(members) => params_schema(members),
        DataType::Array { size, item } => {
            json!({"type": "array", "maxItems": size, "items": value_schema(item)})
        }
    }
}

struct MaxUtf8Bytes(usize);

impl<'i> Keyword<'i> for MaxUtf8Bytes {
    fn validate(&self, instance: &'i Value) -> Result<(), jsonschema::ValidationError<'i>> {
        if Keyword::is_valid(self, instance) {
            Ok(())
        } else {
            Err(jsonschema::ValidationError::custom(format!(
                "longer than {} bytes",
                self.0
            )))
        }
    }

    fn is_valid(&self, instance: &'i Value) -> bool {
        instance.as_str().is_none_or(|s| s.len() <= self.0)
    }
}

fn max_utf8_bytes<'a>(
    _parent: &'a Map<String, Value>,
    limit: &'a Value,
    _path: Location,
) -> Result<Box<dyn for<'i> Keyword<'i>>, jsonschema::ValidationError<'a>> {
    let limit = limit
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| {
            jsonschema::ValidationError::schema("maxUtf8Bytes must be a non-negative integer")
        })?;
    Ok(Box::new(MaxUtf8Bytes(limit)))
}

// ---------------------------------------------------------------------------------------------
// Error translation
// ---------------------------------------------------------------------------------------------

/// What the validated object is, to phrase errors about its members.
#[derive(Clone, Copy)]
enum Scope<'a> {
    PropertyPost,
    PropertySet,
    Params { list: &'a [Param], owner: Owner<'a> },
}

#[derive(Clone, Copy)]
enum Owner<'a> {
    Event(&'a str),
    ServiceInput(&'a str),
    ServiceReturn(&'a str),
}

/// What an instance location holds according to the model.
#[derive(Clone, Copy)]
enum Target<'a> {
    /// The params object itself.
    Root,
    Value(&'a DataType),
    /// The `time` of a timestamped property value.
    Time,
    /// Not in the model (only reachable for unknown members).
    Unknown,
}

impl<'a> Scope<'a> {
    fn member(self, model: &'a ThingModel, identifier: &str) -> Option<&'a DataType> {
        match self {
            Scope::PropertyPost | Scope::PropertySet => {
                model.property(identifier).map(|p| &p.data_type)
            }
            Scope::Params { list, .. } => list
                .iter()
                .find(|p| p.identifier == identifier)
                .map(|p| &p.data_type),
        }
    }

    fn what(self) -> String {
        match self {
            Scope::PropertyPost | Scope::PropertySet => "an object of property values".into(),
            Scope::Params {
                owner: Owner::Event(id),
                ..
            } => format!("an object of the parameters of event '{id}'"),
            Scope::Params {
                owner: Owner::ServiceInput(id),
                ..
            } => {
                format!("an object of the input parameters of service '{id}'")
            }
            Scope::Params {
                owner: Owner::ServiceReturn(id),
                ..
            } => {
                format!("an object of the output parameters of service '{id}'")
            }
        }
    }

    fn unknown(self, identifier: &str) -> String {
        match self {
            Scope::PropertyPost | Scope::PropertySet => {
                format!("unknown property '{identifier}' (not in the thing model)")
            }
            Scope::Params {
                owner: Owner::Event(id),
                ..
            } => {
                format!("unknown parameter '{identifier}' (not in the output data of event '{id}')")
            }
            Scope::Params {
                owner: Owner::ServiceInput(id),
                ..
            } => {
                format!(
                    "unknown parameter '{identifier}' (not in the input data of service '{id}')"
                )
            }
            Scope::Params {
                owner: Owner::ServiceReturn(id),
                ..
            } => {
                format!(
                    "unknown parameter '{identifier}' (not in the output data of service '{id}')"
                )
            }
        }
    }
}

fn explain(
    error: &jsonschema::ValidationError<'_>,
    instance: &Value,
    scope: Scope<'_>,
    model: &ThingModel,
) -> ValidationError {
    let (field, target) = resolve(error.instance_path(), instance, scope, model);
    let value = error.instance();
    let message = match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let name = unexpected.first().map_or("", String::as_str);
            let message = match target {
                Target::Root => scope.unknown(name),
                _ => format!("unknown member '{name}' (not in the struct)"),
            };
            let field = if field.is_empty() {
                name.to_owned()
            } else {
                format!("{field}.{name}")
            };
            return ValidationError { field, message };
        }
        ValidationErrorKind::FalseSchema => {
            let name = field.as_str();
            format!("property '{name}' is read-only and cannot be set")
        }
        ValidationErrorKind::Type { .. } => {
            format!(
                "expected {}, got {}",
                expected(target, scope),
                describe(value)
            )
        }
        ValidationErrorKind::Minimum { limit } => format!(
            "must be ≥ {} (got {})",
            limit_text(limit),
            describe_bare(value)
        ),
        ValidationErrorKind::Maximum { limit } => format!(
            "must be ≤ {} (got {})",
            limit_text(limit),
            describe_bare(value)
        ),
        ValidationErrorKind::Enum { .. } => match target {
            Target::Value(DataType::Enum { values }) => {
                let keys: Vec<String> = values
                    .iter()
                    .take(16)
                    .map(|(k, label)| format!("{k} ({label})"))
                    .collect();
                let more = if values.len() > keys.len() {
                    ", …"
                } else {
                    ""
                };
                format!(
                    "must be one of {}{more} (got {})",
                    keys.join(", "),
                    describe_bare(value)
                )
            }
            Target::Value(DataType::Bool { .. }) => {
                format!("must be 0 or 1 (got {})", describe_bare(value))
            }
            _ => error.to_string(),
        },
        ValidationErrorKind::Custom { .. } => match (target, value.as_str()) {
            (Target::Value(DataType::Text { length }), Some(s)) => {
                format!(
                    "must be at most {length} bytes of UTF-8 text (got {} bytes)",
                    s.len()
                )
            }
            _ => error.to_string(),
        },
        ValidationErrorKind::MaxItems { limit } => {
            let len = value.as_array().map_or(0, Vec::len);
            format!("must have at most {limit} items (got {len})")
        }
        ValidationErrorKind::Pattern { .. } => {
            format!(
                "expected {}, got {}",
                expected(target, scope),
                describe(value)
            )
        }
        _ => error.to_string(),
    };
    let field = if field.is_empty() {
        "params".to_owned()
    } else {
        field
    };
    ValidationError { field, message }
}

/// Turns an instance location into a dotted TSL field (`Location.latitude`, `Readings[3]`),
/// dropping the `value` of a timestamped property value, and finds the model's type there.
fn resolve<'m>(
    location: &Location,
    instance: &Value,
    scope: Scope<'m>,
    model: &'m ThingModel,
) -> (String, Target<'m>) {
    let mut field = String::new();
    let mut target = Target::Root;
    let mut node = Some(instance);
    let mut timed_member = false;
    for segment in location.segments() {
        match segment {
            LocationSegment::Property(key) => {
                let key: &str = &key;
                node = node.and_then(|n| n.get(key));
                if timed_member {
                    timed_member = false;
                    if key == "value" {
                        continue;
                    }
                    if key == "time" {
                        field.push_str(".time");
                        target = Target::Time;
                        continue;
                    }
                }
                target = match target {
                    Target::Root => {
                        // Only property posts use the timestamped form.
                        timed_member = matches!(scope, Scope::PropertyPost)
                            && node.and_then(split_timed).is_some();
                        scope
                            .member(model, key)
                            .map_or(Target::Unknown, Target::Value)
                    }
                    Target::Value(DataType::Struct(members)) => members
                        .iter()
                        .find(|m| m.identifier == key)
                        .map_or(Target::Unknown, |m| Target::Value(&m.data_type)),
                    _ => Target::Unknown,
                };
                if !field.is_empty() {
                    field.push('.');
                }
                field.push_str(key);
            }
            LocationSegment::Index(i) => {
                node = node.and_then(|n| n.get(i));
                target = match target {
                    Target::Value(DataType::Array { item, .. }) => Target::Value(item),
                    _ => Target::Unknown,
                };
                field.push_str(&format!("[{i}]"));
            }
        }
    }
    (field, target)
}

/// The TSL type a location expects, in words a device developer recognises.
fn expected(target: Target<'_>, scope: Scope<'_>) -> String {
    match target {
        Target::Root => scope.what(),
        Target::Time => "time as UTC milliseconds (integer or digit string)".into(),
        Target::Unknown => "a value the thing model allows".into(),
        Target::Value(t) => match t {
            DataType::Int { .. } => "int".into(),
            DataType::Float { .. } => "float".into(),
            DataType::Double { .. } => "double".into(),
            DataType::Bool { .. } => "bool (0 or 1)".into(),
            DataType::Enum { .. } => "enum (an integer key)".into(),
            DataType::Text { .. } => "text (a string)".into(),
            DataType::Date => "date as UTC milliseconds (digit string or integer)".into(),
            DataType::Struct(_) => "struct (an object)".into(),
            DataType::Array { item, .. } => format!("array of {}", item.type_name()),
        },
    }
}

/// A bound as the vendor wrote it in the specs (`"90"`, not `90.0`).
fn limit_text(limit: &Value) -> String {
    match limit.as_f64() {
        Some(f) if limit.is_f64() => f.to_string(),
        _ => limit.to_string(),
    }
}

/// A value's JSON type and, for scalars, the value itself: `string "bright"`, `number 1.5`.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {}", quoted(s)),
        Value::Array(items) if items.len() == 1 => "array of 1 item".into(),
        Value::Array(items) => format!("array of {} items", items.len()),
        Value::Object(_) => "object".into(),
    }
}

/// The value alone where its type is not the point (`must be ≤ 100 (got 120)`).
fn describe_bare(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => quoted(s),
        other => describe(other),
    }
}

/// Quotes a string for a message, cut short so a huge payload does not become a huge error.
fn quoted(s: &str) -> String {
    const MAX_CHARS: usize = 40;
    match s.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
        None => format!("{s:?}"),
    }
}
