//! TSL document → [`ThingModel`], refusing anything Alibaba would refuse, with the path of the
//! first bad element. Written by hand rather than with serde derive because vendors need the
//! exact element (`events[0].outputData[1].identifier`), and because Alibaba writes numbers as
//! strings, which needs lenient coercion in a few places only.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use super::{
    ARRAY_MAX_SIZE, AccessMode, CallType, DataType, Event, EventType, IDENTIFIER_MAX_LENGTH, Param,
    Property, RESERVED_IDENTIFIERS, Sensitivity, Service, TEXT_MAX_LENGTH, ThingModel,
    ThingModelError,
};

type Result<T> = std::result::Result<T, ThingModelError>;
type Object = Map<String, Value>;

const POST_METHOD: &str = "thing.event.property.post";
const SET_METHOD: &str = "thing.service.property.set";
const GET_METHOD: &str = "thing.service.property.get";

pub(super) fn parse_model(doc: &Value) -> Result<ThingModel> {
    let doc = doc.as_object().ok_or_else(|| {
        error(
            "document",
            format!("expected a JSON object, got {}", kind(doc)),
        )
    })?;

    let mut properties = Vec::new();
    let mut seen = Identifiers::default();
    for (i, v) in list(doc, "properties", "")?.iter().enumerate() {
        let path = index("properties", i);
        let property = parse_property(v, &path)?;
        seen.insert(&property.identifier, &path)?;
        properties.push(property);
    }

    let mut events = Vec::new();
    let mut seen = Identifiers::default();
    for (i, v) in list(doc, "events", "")?.iter().enumerate() {
        let path = index("events", i);
        if is_generated(v, &[("post", POST_METHOD)]) {
            continue;
        }
        let event = parse_event(v, &path)?;
        seen.insert(&event.identifier, &path)?;
        events.push(event);
    }

    let mut services = Vec::new();
    let mut seen = Identifiers::default();
    for (i, v) in list(doc, "services", "")?.iter().enumerate() {
        let path = index("services", i);
        if is_generated(v, &[("set", SET_METHOD), ("get", GET_METHOD)]) {
            continue;
        }
        let service = parse_service(v, &path)?;
        seen.insert(&service.identifier, &path)?;
        services.push(service);
    }

    Ok(ThingModel {
        properties,
        events,
        services,
    })
}

/// The generated elements of a full export are rebuilt from the properties on export, so they
/// are dropped here; both identifier and method must match so a user element called `post` is
/// still reported as reserved rather than silently vanishing.
fn is_generated(v: &Value, generated: &[(&str, &str)]) -> bool {
    let identifier = v.get("identifier").and_then(Value::as_str);
    let method = v.get("method").and_then(Value::as_str);
    generated
        .iter()
        .any(|&(id, m)| identifier == Some(id) && method == Some(m))
}

fn parse_property(v: &Value, path: &str) -> Result<Property> {
    let o = object(v, path)?;
    let identifier = identifier(o, path, true)?;
    let name = name(o, path)?;
    let access_path = field(path, "accessMode");
    let access = required_str(o, "accessMode", path)?;
    let access_mode = AccessMode::parse(access).ok_or_else(|| {
        error(
            &access_path,
            format!("expected \"r\" or \"rw\", got \"{access}\""),
        )
    })?;
    let required = optional_bool(o, "required", path)?;
    let description = optional_str(o, "desc", path)?;
    let data_type = data_type(
        required_value(o, "dataType", path)?,
        &field(path, "dataType"),
        Nesting::Top,
    )?;
    let sensitivity = match optional_str(o, "sensitivity", path)? {
        None => Sensitivity::Public,
        Some(s) => Sensitivity::parse(&s).ok_or_else(|| {
            error(
                field(path, "sensitivity"),
                format!(
                    "expected \"public\", \"internal\", \"personal\" or \"secret\", got \"{s}\""
                ),
            )
        })?,
    };
    Ok(Property {
        identifier,
        name,
        access_mode,
        required,
        data_type,
        description,
        sensitivity,
    })
}

fn parse_event(v: &Value, path: &str) -> Result<Event> {
    let o = object(v, path)?;
    let identifier = identifier(o, path, true)?;
    let name = name(o, path)?;
    let kind = required_str(o, "type", path)?;
    let event_type = EventType::parse(kind).ok_or_else(|| {
        error(
            field(path, "type"),
            format!("expected \"info\", \"alert\" or \"error\", got \"{kind}\""),
        )
    })?;
    Ok(Event {
        output_data: params(o, "outputData", path)?,
        description: optional_str(o, "desc", path)?,
        required: optional_bool(o, "required", path)?,
        identifier,
        name,
        event_type,
    })
}

fn parse_service(v: &Value, path: &str) -> Result<Service> {
    let o = object(v, path)?;
    let identifier = identifier(o, path, true)?;
    let name = name(o, path)?;
    let call = required_str(o, "callType", path)?;
    let call_type = CallType::parse(call).ok_or_else(|| {
        error(
            field(path, "callType"),
            format!("expected \"sync\" or \"async\", got \"{call}\""),
        )
    })?;
    Ok(Service {
        input_data: params(o, "inputData", path)?,
        output_data: params(o, "outputData", path)?,
        description: optional_str(o, "desc", path)?,
        required: optional_bool(o, "required", path)?,
        identifier,
        name,
        call_type,
    })
}

/// An optional list of parameters (`inputData`, `outputData`).
fn params(o: &Object, key: &str, path: &str) -> Result<Vec<Param>> {
    param_list(list(o, key, path)?, &field(path, key), Nesting::Top)
}

fn param_list(items: &[Value], path: &str, nesting: Nesting) -> Result<Vec<Param>> {
    let mut seen = Identifiers::default();
    let mut params = Vec::with_capacity(items.len());
    for (i, v) in items.iter().enumerate() {
        let path = index(path, i);
        let o = object(v, &path)?;
        let param = Param {
            identifier: identifier(o, &path, false)?,
            name: name(o, &path)?,
            data_type: data_type(
                required_value(o, "dataType", &path)?,
                &field(&path, "dataType"),
                nesting,
            )?,
        };
        seen.insert(&param.identifier, &path)?;
        params.push(param);
    }
    Ok(params)
}

/// Where a data type sits decides which types Alibaba allows there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nesting {
    /// A property or an event/service parameter: anything goes.
    Top,
    /// A struct member: scalars only (int, float, double, bool, enum, text, date).
    StructMember,
    /// An array item: int, float, double, text or struct.
    ArrayItem,
}

fn data_type(v: &Value, path: &str, nesting: Nesting) -> Result<DataType> {
    let o = object(v, path)?;
    let type_path = field(path, "type");
    let type_name = required_str(o, "type", path)?;
    let specs_path = field(path, "specs");
    let specs = o.get("specs").filter(|s| !s.is_null());

    match (nesting, type_name) {
        (Nesting::StructMember, "struct") => {
            return Err(error(type_path, "a struct member cannot be a struct"));
        }
        (Nesting::StructMember, "array") => {
            return Err(error(type_path, "a struct member cannot be an array"));
        }
        (Nesting::ArrayItem, "array") => {
            return Err(error(type_path, "an array cannot hold arrays"));
        }
        (Nesting::ArrayItem, "bool" | "enum" | "date") => {
            return Err(error(
                type_path,
                format!("array items must be int, float, double, text or struct, not {type_name}"),
            ));
        }
        _ => {}
    }

    match type_name {
        "int" => {
            let s = number_specs(specs, &specs_path)?;
            let int = |v: Option<f64>, key: &str| -> Result<Option<i64>> {
                v.map(|v| int32(v, &field(&specs_path, key))).transpose()
            };
            Ok(DataType::Int {
                min: int(s.min, "min")?,
                max: int(s.max, "max")?,
                step: int(s.step, "step")?,
                unit: s.unit,
                unit_name: s.unit_name,
            })
        }
        "float" => {
            let s = number_specs(specs, &specs_path)?;
            Ok(DataType::Float {
                min: s.min,
                max: s.max,
                step: s.step,
                unit: s.unit,
                unit_name: s.unit_name,
            })
        }
        "double" => {
            let s = number_specs(specs, &specs_path)?;
            Ok(DataType::Double {
                min: s.min,
                max: s.max,
                step: s.step,
                unit: s.unit,
                unit_name: s.unit_name,
            })
        }
        "bool" => {
            let specs = object(specs.ok_or_else(|| missing(&specs_path))?, &specs_path)?;
            Ok(DataType::Bool {
                false_label: required_string(specs, "0", &specs_path)?,
                true_label: required_string(specs, "1", &specs_path)?,
            })
        }
        "enum" => enum_specs(specs.ok_or_else(|| missing(&specs_path))?, &specs_path),
        "text" => {
            let length = match specs {
                None => None,
                Some(specs) => integer(object(specs, &specs_path)?, "length", &specs_path)?,
            };
            let length = match length {
                None => TEXT_MAX_LENGTH,
                Some(n) => bounded(n, 1, TEXT_MAX_LENGTH, &field(&specs_path, "length"))?,
            };
            Ok(DataType::Text { length })
        }
        "date" => Ok(DataType::Date),
        "struct" => {
            let members = specs
                .ok_or_else(|| missing(&specs_path))?
                .as_array()
                .ok_or_else(|| error(&specs_path, "expected an array of struct members"))?;
            if members.is_empty() {
                return Err(error(specs_path, "a struct needs at least one member"));
            }
            Ok(DataType::Struct(param_list(
                members,
                &specs_path,
                Nesting::StructMember,
            )?))
        }
        "array" => {
            let specs = object(specs.ok_or_else(|| missing(&specs_path))?, &specs_path)?;
            let size_path = field(&specs_path, "size");
            let size = integer(specs, "size", &specs_path)?.ok_or_else(|| missing(&size_path))?;
            let size = bounded(size, 1, ARRAY_MAX_SIZE, &size_path)?;
            let item = required_value(specs, "item", &specs_path)?;
            let item = data_type(item, &field(&specs_path, "item"), Nesting::ArrayItem)?;
            Ok(DataType::Array {
                size,
                item: Box::new(item),
            })
        }
        other => Err(error(
            type_path,
            format!(
                "unknown data type \"{other}\" (expected int, float, double, bool, enum, text, \
                 date, struct or array)"
            ),
        )),
    }
}

/// The shared specs of int/float/double, checked in `f64` (exact for every 32-bit int).
struct NumberSpecs {
    min: Option<f64>,
    max: Option<f64>,
    step: Option<f64>,
    unit: Option<String>,
    unit_name: Option<String>,
}

fn number_specs(specs: Option<&Value>, path: &str) -> Result<NumberSpecs> {
    let Some(specs) = specs else {
        return Ok(NumberSpecs {
            min: None,
            max: None,
            step: None,
            unit: None,
            unit_name: None,
        });
    };
    let o = object(specs, path)?;
    let s = NumberSpecs {
        min: number(o, "min", path)?,
        max: number(o, "max", path)?,
        step: number(o, "step", path)?,
        unit: optional_str(o, "unit", path)?,
        unit_name: optional_str(o, "unitName", path)?,
    };
    if let (Some(min), Some(max)) = (s.min, s.max)
        && min > max
    {
        return Err(error(
            field(path, "min"),
            format!("min ({min}) must be ≤ max ({max})"),
        ));
    }
    if let Some(step) = s.step {
        if step <= 0.0 {
            return Err(error(
                field(path, "step"),
                format!("step must be > 0 (got {step})"),
            ));
        }
        if let (Some(min), Some(max)) = (s.min, s.max) {
            let span = max - min;
            // Decimal specs ("0.1", "0.3") are not exact in binary; allow for the rounding.
            let slack = 4.0 * f64::EPSILON * max.abs().max(min.abs()).max(1.0);
            if step - span > slack {
                return Err(error(
                    field(path, "step"),
                    format!("step ({step}) must be ≤ max − min ({span})"),
                ));
            }
        }
    }
    Ok(s)
}

fn enum_specs(specs: &Value, path: &str) -> Result<DataType> {
    let o = object(specs, path)?;
    if o.is_empty() {
        return Err(error(path, "an enum needs at least one value"));
    }
    let mut values = BTreeMap::new();
    for (key, label) in o {
        let key_path = field(path, key);
        let value = key
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|v| i32::try_from(*v).is_ok())
            .ok_or_else(|| {
                error(
                    &key_path,
                    format!("enum key \"{key}\" is not a 32-bit integer"),
                )
            })?;
        let label = label.as_str().ok_or_else(|| {
            error(
                &key_path,
                format!("expected a label string, got {}", kind(label)),
            )
        })?;
        if values.insert(value, label.to_owned()).is_some() {
            return Err(error(key_path, format!("duplicate enum value {value}")));
        }
    }
    Ok(DataType::Enum { values })
}

/// Identifiers already used in one list, to name the earlier element on a duplicate.
#[derive(Default)]
struct Identifiers(HashMap<String, String>);

impl Identifiers {
    fn insert(&mut self, identifier: &str, path: &str) -> Result<()> {
        if let Some(first) = self.0.get(identifier) {
            return Err(error(
                field(path, "identifier"),
                format!("duplicate identifier \"{identifier}\" (already used by {first})"),
            ));
        }
        self.0.insert(identifier.to_owned(), path.to_owned());
        Ok(())
    }
}

fn identifier(o: &Object, path: &str, top_level: bool) -> Result<String> {
    let id = required_str(o, "identifier", path)?;
    let fail = |message: String| Err(error(field(path, "identifier"), message));
    let len = id.chars().count();
    if !(1..=IDENTIFIER_MAX_LENGTH).contains(&len) {
        return fail(format!(
            "must be 1 to {IDENTIFIER_MAX_LENGTH} characters long (got {len})"
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return fail(format!(
            "\"{id}\" may contain only letters, digits and _ (found '{c}')"
        ));
    }
    if id.starts_with(|c: char| c.is_ascii_digit()) {
        return fail(format!("\"{id}\" must not start with a digit"));
    }
    if top_level && RESERVED_IDENTIFIERS.contains(&id) {
        return fail(format!(
            "\"{id}\" is reserved (set, get, post, property, event, time and value are)"
        ));
    }
    Ok(id.to_owned())
}

fn name(o: &Object, path: &str) -> Result<String> {
    let name = required_str(o, "name", path)?;
    if name.trim().is_empty() {
        return Err(error(field(path, "name"), "must not be empty"));
    }
    Ok(name.to_owned())
}

/// A 32-bit integer spec value; `path` is the spec's own path.
fn int32(v: f64, path: &str) -> Result<i64> {
    if v.fract() != 0.0 {
        return Err(error(path, format!("must be an integer (got {v})")));
    }
    if v < f64::from(i32::MIN) || v > f64::from(i32::MAX) {
        return Err(error(path, format!("must fit in a 32-bit int (got {v})")));
    }
    // Integral and within i32, so the conversion is exact.
    Ok(v as i64)
}

fn bounded(v: i64, min: u32, max: u32, path: &str) -> Result<u32> {
    u32::try_from(v)
        .ok()
        .filter(|v| (min..=max).contains(v))
        .ok_or_else(|| error(path, format!("must be between {min} and {max} (got {v})")))
}

/// A spec number as Alibaba writes it: a JSON number or a numeric string (`"0.5"`). An empty
/// string means unset, as in exports where the console left the field blank.
fn number(o: &Object, key: &str, path: &str) -> Result<Option<f64>> {
    let path = field(path, key);
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        // serde_json numbers are always finite.
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.is_empty() {
                return Ok(None);
            }
            match s.parse::<f64>() {
                Ok(n) if n.is_finite() => Ok(Some(n)),
                _ => Err(error(path, format!("\"{s}\" is not a number"))),
            }
        }
        Some(other) => Err(error(
            path,
            format!("expected a number or numeric string, got {}", kind(other)),
        )),
    }
}

fn integer(o: &Object, key: &str, path: &str) -> Result<Option<i64>> {
    number(o, key, path)?
        .map(|n| {
            if n.fract() != 0.0 || n.abs() > 9.0e15 {
                Err(error(
                    field(path, key),
                    format!("must be an integer (got {n})"),
                ))
            } else {
                // Integral and far inside i64, so the conversion is exact.
                Ok(n as i64)
            }
        })
        .transpose()
}

fn list<'a>(o: &'a Object, key: &str, path: &str) -> Result<&'a [Value]> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(error(
            field(path, key),
            format!("expected an array, got {}", kind(other)),
        )),
    }
}

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Object> {
    v.as_object()
        .ok_or_else(|| error(path, format!("expected an object, got {}", kind(v))))
}

fn required_value<'a>(o: &'a Object, key: &str, path: &str) -> Result<&'a Value> {
    o.get(key)
        .filter(|v| !v.is_null())
        .ok_or_else(|| missing(&field(path, key)))
}

fn required_str<'a>(o: &'a Object, key: &str, path: &str) -> Result<&'a str> {
    let v = required_value(o, key, path)?;
    v.as_str().ok_or_else(|| {
        error(
            field(path, key),
            format!("expected a string, got {}", kind(v)),
        )
    })
}

fn required_string(o: &Object, key: &str, path: &str) -> Result<String> {
    required_str(o, key, path).map(str::to_owned)
}

fn optional_str(o: &Object, key: &str, path: &str) -> Result<Option<String>> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(error(
            field(path, key),
            format!("expected a string, got {}", kind(other)),
        )),
    }
}

fn optional_bool(o: &Object, key: &str, path: &str) -> Result<bool> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(error(
            field(path, key),
            format!("expected true or false, got {}", kind(other)),
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn field(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn missing(path: &str) -> ThingModelError {
    error(path, "required but missing")
}

fn error(path: impl Into<String>, message: impl Into<String>) -> ThingModelError {
    ThingModelError {
        path: path.into(),
        message: message.into(),
    }
}
