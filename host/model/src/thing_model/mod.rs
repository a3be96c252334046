//! Thing models in Alibaba Cloud IoT's Alink TSL (thing specification language).
//!
//! Device vendors already have TSL documents exported from Alibaba's console, so Lotus takes
//! them as they are: [`ThingModel::parse`] accepts both the "simple" form and the full export
//! (recognising the generated `post` event and `set`/`get` services), and
//! [`ThingModel::to_full_tsl`] writes the full form Alibaba's device SDKs load.
//!
//! Every uplink is checked against the model, so [`ThingModel::compile`] turns it into JSON
//! Schemas once and [`CompiledThingModel`] only runs them; errors are translated back into the
//! model's vocabulary (`Location.latitude: must be ≤ 90 (got 91)`) because the device developer
//! reading them thinks in TSL, not in JSON Schema.

mod compile;
mod export;
mod parse;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde_json::Value;

pub use compile::CompiledThingModel;

/// The `schema` URL of Alibaba's TSL documents; SDKs expect it verbatim in exports.
pub const TSL_SCHEMA_URL: &str = "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json";

/// Longest `text` value Alibaba allows, in UTF-8 bytes; also the length of a text without specs.
pub const TEXT_MAX_LENGTH: u32 = 10240;

/// Largest `size` of an `array` data type.
pub const ARRAY_MAX_SIZE: u32 = 512;

/// Longest identifier, in characters.
pub const IDENTIFIER_MAX_LENGTH: usize = 50;

/// Identifiers Alibaba reserves because they name the generated elements or the fields of Alink
/// messages; a user property, event or service using one would be ambiguous on the wire.
pub const RESERVED_IDENTIFIERS: &[&str] =
    &["set", "get", "post", "property", "event", "time", "value"];

/// A product's thing model: parsed and checked, so everything downstream can trust its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ThingModel {
    properties: Vec<Property>,
    events: Vec<Event>,
    services: Vec<Service>,
}

/// Why a TSL document was refused. `path` names the offending element the way a vendor finds it
/// in their file, e.g. `properties[2].dataType.specs.min`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ThingModelError {
    pub path: String,
    pub message: String,
}

/// Why an uplink (or a downlink request) does not fit the thing model. `field` is a dotted path
/// in TSL terms (`Location.latitude`, `Readings[3]`), never a JSON pointer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Property {
    pub identifier: String,
    pub name: String,
    pub access_mode: AccessMode,
    /// Alibaba's "required by the standard category" flag; it does not make posts mandatory.
    pub required: bool,
    pub data_type: DataType,
    pub description: Option<String>,
    /// How sensitive the value is (a Lotus extension of the TSL, key `sensitivity`): the
    /// `lotus.data.fields` policy masks or removes fields by it for callers with a lower data
    /// permission level. `public` when absent.
    pub sensitivity: Sensitivity,
}

/// Classes of data a property may hold, from least to most sensitive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Sensitivity {
    #[default]
    Public,
    Internal,
    /// Personal data (an owner's phone number, a licence plate).
    Personal,
    /// Credentials and keys (a valve's unlock code).
    Secret,
}

impl Sensitivity {
    pub fn as_str(self) -> &'static str {
        match self {
            Sensitivity::Public => "public",
            Sensitivity::Internal => "internal",
            Sensitivity::Personal => "personal",
            Sensitivity::Secret => "secret",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "public" => Some(Sensitivity::Public),
            "internal" => Some(Sensitivity::Internal),
            "personal" => Some(Sensitivity::Personal),
            "secret" => Some(Sensitivity::Secret),
            _ => None,
        }
    }
}

impl Property {
    /// Whether the cloud may set it (`thing.service.property.set`).
    pub fn is_writable(&self) -> bool {
        self.access_mode == AccessMode::ReadWrite
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub identifier: String,
    pub name: String,
    pub event_type: EventType,
    pub output_data: Vec<Param>,
    pub description: Option<String>,
    /// Alibaba's "required by the standard category" flag, kept so exports round-trip.
    pub required: bool,
}

impl Event {
    /// The Alink method a device posts this event with.
    pub fn method(&self) -> String {
        format!("thing.event.{}.post", self.identifier)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub identifier: String,
    pub name: String,
    pub call_type: CallType,
    pub input_data: Vec<Param>,
    pub output_data: Vec<Param>,
    pub description: Option<String>,
    /// Alibaba's "required by the standard category" flag, kept so exports round-trip.
    pub required: bool,
}

impl Service {
    /// The Alink method the cloud invokes this service with.
    pub fn method(&self) -> String {
        format!("thing.service.{}", self.identifier)
    }
}

/// An input or output parameter of an event or service, or a member of a struct.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub identifier: String,
    pub name: String,
    pub data_type: DataType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessMode {
    /// `"r"`: reported by the device only.
    ReadOnly,
    /// `"rw"`: reported by the device and settable from the cloud.
    ReadWrite,
}

impl AccessMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::ReadOnly => "r",
            AccessMode::ReadWrite => "rw",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "r" => Some(AccessMode::ReadOnly),
            "rw" => Some(AccessMode::ReadWrite),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Info,
    Alert,
    Error,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Info => "info",
            EventType::Alert => "alert",
            EventType::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "info" => Some(EventType::Info),
            "alert" => Some(EventType::Alert),
            "error" => Some(EventType::Error),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallType {
    /// The caller waits for the device's reply.
    Sync,
    /// The reply arrives later on the `_reply` topic.
    Async,
}

impl CallType {
    pub fn as_str(self) -> &'static str {
        match self {
            CallType::Sync => "sync",
            CallType::Async => "async",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sync" => Some(CallType::Sync),
            "async" => Some(CallType::Async),
            _ => None,
        }
    }
}

/// A TSL data type with its specs. Bounds are optional because Alibaba exports leave them out
/// for array items; `int` values are additionally held to the 32-bit signed range.
#[derive(Debug, Clone, PartialEq)]
pub enum DataType {
    Int {
        min: Option<i64>,
        max: Option<i64>,
        step: Option<i64>,
        unit: Option<String>,
        unit_name: Option<String>,
    },
    Float {
        min: Option<f64>,
        max: Option<f64>,
        step: Option<f64>,
        unit: Option<String>,
        unit_name: Option<String>,
    },
    Double {
        min: Option<f64>,
        max: Option<f64>,
        step: Option<f64>,
        unit: Option<String>,
        unit_name: Option<String>,
    },
    /// Sent as `0`/`1` (Alink's convention; `false`/`true` are accepted too).
    Bool {
        false_label: String,
        true_label: String,
    },
    /// Sent as one of the integer keys.
    Enum {
        values: BTreeMap<i64, String>,
    },
    /// A string of at most `length` UTF-8 bytes.
    Text {
        length: u32,
    },
    /// UTC milliseconds, sent as a digit string (Alibaba's form) or an integer.
    Date,
    Struct(Vec<Param>),
    Array {
        size: u32,
        item: Box<DataType>,
    },
}

impl DataType {
    /// The TSL spelling of the type (`"int"`, `"struct"`, …).
    pub fn type_name(&self) -> &'static str {
        match self {
            DataType::Int { .. } => "int",
            DataType::Float { .. } => "float",
            DataType::Double { .. } => "double",
            DataType::Bool { .. } => "bool",
            DataType::Enum { .. } => "enum",
            DataType::Text { .. } => "text",
            DataType::Date => "date",
            DataType::Struct(_) => "struct",
            DataType::Array { .. } => "array",
        }
    }
}

impl ThingModel {
    /// Parses and checks a TSL document (simple form or full export).
    pub fn parse(doc: &Value) -> Result<ThingModel, ThingModelError> {
        parse::parse_model(doc)
    }

    /// The full TSL: the model plus the generated `post` event and `set`/`get` services, in the
    /// shape Alibaba exports and its device SDKs load.
    pub fn to_full_tsl(&self, product_key: &str) -> Value {
        export::full_tsl(self, product_key)
    }

    pub fn property(&self, identifier: &str) -> Option<&Property> {
        self.properties.iter().find(|p| p.identifier == identifier)
    }

    pub fn event(&self, identifier: &str) -> Option<&Event> {
        self.events.iter().find(|e| e.identifier == identifier)
    }

    pub fn service(&self, identifier: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.identifier == identifier)
    }

    pub fn properties(&self) -> &[Property] {
        &self.properties
    }

    /// User-defined events; the generated `post` event is implied, not listed.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// User-defined services; the generated `set`/`get` services are implied, not listed.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// Builds the JSON Schemas for every uplink and downlink shape. Costly compared to a single
    /// validation, so do it once per model version and share the result.
    pub fn compile(&self) -> CompiledThingModel {
        CompiledThingModel::new(self)
    }
}

/// Flattens a property post's params into (identifier, value, device time in ms), unwrapping
/// Alink's `{"value": v, "time": ms}` form. Run it after validation: it skips nothing itself.
pub fn property_post_values(params: &Value) -> Vec<(String, Value, Option<i64>)> {
    let Some(params) = params.as_object() else {
        return Vec::new();
    };
    params
        .iter()
        .map(|(identifier, v)| match split_timed(v) {
            Some((value, time)) => (identifier.clone(), value.clone(), time.and_then(millis)),
            None => (identifier.clone(), v.clone(), None),
        })
        .collect()
}

/// A number to aggregate history on: numbers as they are, booleans as 0/1 and date digit strings
/// as milliseconds. Text, structs and arrays have none. Without the model a text made only of
/// digits is indistinguishable from a date and counts as one.
pub fn numeric_value(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::String(s) if is_digits(s) => s.parse().ok(),
        _ => None,
    }
}

/// Recognises Alink's timestamped property value `{"value": v, "time": ms}` (`time` optional).
/// Any other key means the object is a plain (struct) value; the compiled schemas use the same
/// rule so validation and extraction never disagree.
fn split_timed(v: &Value) -> Option<(&Value, Option<&Value>)> {
    let object = v.as_object()?;
    let value = object.get("value")?;
    object
        .keys()
        .all(|k| k == "value" || k == "time")
        .then(|| (value, object.get("time")))
}

/// Device time in milliseconds: an integer, or a digit string as Alibaba writes dates.
fn millis(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) if is_digits(s) => s.parse().ok(),
        _ => None,
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}
