//! Alink JSON, the text a codec returns from `decode` and receives in `encode`.

use serde_json::{Map, Value, json};

use crate::CodecError;

/// The method of a property report.
pub const PROPERTY_POST: &str = "thing.event.property.post";
/// The method of a property set sent to a device.
pub const PROPERTY_SET: &str = "thing.service.property.set";
/// The method of a property read sent to a device.
pub const PROPERTY_GET: &str = "thing.service.property.get";

#[derive(Debug, Clone, PartialEq)]
enum RequestKind {
    Property,
    Event,
    Custom(Value),
}

/// An uplink Alink request: a property report or an event report.
///
/// ```
/// use lotus_plugin_sdk::AlinkRequest;
/// let post = AlinkRequest::property_post("123").property("Flow", 1.25).property("Valve", 1);
/// assert_eq!(
///     post.to_json(),
///     r#"{"id":"123","version":"1.0","method":"thing.event.property.post","params":{"Flow":1.25,"Valve":1}}"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct AlinkRequest {
    id: String,
    method: String,
    kind: RequestKind,
    values: Map<String, Value>,
    time_ms: Option<i64>,
}

impl AlinkRequest {
    /// `thing.event.property.post`; add values with [`property`](Self::property).
    pub fn property_post(id: impl Into<String>) -> Self {
        Self::with_kind(id, PROPERTY_POST.to_owned(), RequestKind::Property)
    }

    /// `thing.event.{identifier}.post`; add the event's output with [`property`](Self::property).
    pub fn event_post(id: impl Into<String>, identifier: &str) -> Self {
        Self::with_kind(
            id,
            format!("thing.event.{identifier}.post"),
            RequestKind::Event,
        )
    }

    /// Any other request, with `params` passed through unchanged.
    pub fn custom(id: impl Into<String>, method: impl Into<String>, params: Value) -> Self {
        Self::with_kind(id, method.into(), RequestKind::Custom(params))
    }

    fn with_kind(id: impl Into<String>, method: String, kind: RequestKind) -> Self {
        Self {
            id: id.into(),
            method,
            kind,
            values: Map::new(),
            time_ms: None,
        }
    }

    /// Adds a property value (property post) or an output parameter (event post).
    pub fn property(mut self, identifier: impl Into<String>, value: impl Into<Value>) -> Self {
        self.insert(identifier, value);
        self
    }

    /// Like [`property`](Self::property), for loops and conditionals.
    pub fn insert(&mut self, identifier: impl Into<String>, value: impl Into<Value>) {
        self.values.insert(identifier.into(), value.into());
    }

    /// When the device measured the values (ms since the Unix epoch); without it the platform
    /// uses the time it received the message.
    pub fn time(mut self, time_ms: i64) -> Self {
        self.time_ms = Some(time_ms);
        self
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn method(&self) -> &str {
        &self.method
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && !matches!(self.kind, RequestKind::Custom(_))
    }

    /// The `params` object as Alink defines it for this method.
    pub fn params(&self) -> Value {
        match (&self.kind, self.time_ms) {
            (RequestKind::Custom(params), _) => params.clone(),
            (RequestKind::Property, None) => Value::Object(self.values.clone()),
            // A property with its own timestamp is written as {"value", "time"}.
            (RequestKind::Property, Some(time)) => Value::Object(
                self.values
                    .iter()
                    .map(|(k, v)| (k.clone(), json!({ "value": v, "time": time })))
                    .collect(),
            ),
            (RequestKind::Event, None) => json!({ "value": self.values }),
            (RequestKind::Event, Some(time)) => json!({ "value": self.values, "time": time }),
        }
    }

    pub fn to_value(&self) -> Value {
        json!({
            "id": self.id,
            "version": "1.0",
            "method": self.method,
            "params": self.params(),
        })
    }

    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }
}

/// A device's answer to a downlink (property set, service call), decoded from its frame.
#[derive(Debug, Clone, PartialEq)]
pub struct AlinkReply {
    pub id: String,
    /// 200 for success; Alink's codes otherwise (e.g. 460 bad parameters, 500 device error).
    pub code: u32,
    /// The method being answered, e.g. `thing.service.property.set`.
    pub method: String,
    pub data: Value,
    pub message: Option<String>,
}

impl AlinkReply {
    pub fn success(id: impl Into<String>, method: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            code: 200,
            method: method.into(),
            data: json!({}),
            message: None,
        }
    }

    pub fn failure(
        id: impl Into<String>,
        method: impl Into<String>,
        code: u32,
        message: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            code,
            method: method.into(),
            data: json!({}),
            message: Some(message.into()),
        }
    }

    pub fn data(mut self, data: Value) -> Self {
        self.data = data;
        self
    }

    pub fn to_value(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "version": "1.0",
            "code": self.code,
            "method": self.method,
            "data": self.data,
        });
        if let Some(message) = &self.message {
            v["message"] = Value::String(message.clone());
        }
        v
    }

    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }
}

/// What a codec's `decode` produces.
#[derive(Debug, Clone, PartialEq)]
pub enum AlinkMessage {
    Request(AlinkRequest),
    Reply(AlinkReply),
}

impl AlinkMessage {
    pub fn to_json(&self) -> String {
        match self {
            Self::Request(r) => r.to_json(),
            Self::Reply(r) => r.to_json(),
        }
    }
}

impl From<AlinkRequest> for AlinkMessage {
    fn from(r: AlinkRequest) -> Self {
        Self::Request(r)
    }
}

impl From<AlinkReply> for AlinkMessage {
    fn from(r: AlinkReply) -> Self {
        Self::Reply(r)
    }
}

/// A message the platform sends towards a device, as a codec's `encode` receives it.
#[derive(Debug, Clone, PartialEq)]
pub enum Downlink {
    /// `thing.service.property.set`: identifier → value.
    PropertySet {
        id: String,
        params: Map<String, Value>,
    },
    /// `thing.service.property.get`: the identifiers to read.
    PropertyGet {
        id: String,
        identifiers: Vec<String>,
    },
    /// `thing.service.{identifier}`: a service call with its input parameters.
    ServiceCall {
        id: String,
        identifier: String,
        params: Map<String, Value>,
    },
    /// The platform's answer to a device request (`{"id","code","data"}`).
    Reply {
        id: String,
        code: i64,
        method: Option<String>,
        data: Value,
    },
    /// Any other method, unparsed.
    Other {
        id: String,
        method: String,
        params: Value,
    },
}

impl Downlink {
    /// Parses the Alink JSON text the host passes to `encode`.
    pub fn parse(text: &str) -> Result<Self, CodecError> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            CodecError::new(format!("downlink is not JSON: {e}")).at(byte_offset(
                text,
                e.line(),
                e.column(),
            ))
        })?;
        let Value::Object(mut obj) = value else {
            return Err(CodecError::new("downlink is not a JSON object"));
        };
        let id = match obj.remove("id") {
            Some(Value::String(s)) => s,
            Some(Value::Number(n)) => n.to_string(),
            None => String::new(),
            Some(_) => {
                return Err(CodecError::new("must be a string or a number").field("id"));
            }
        };
        let method = match obj.remove("method") {
            Some(Value::String(s)) => Some(s),
            None => None,
            Some(_) => return Err(CodecError::new("must be a string").field("method")),
        };
        if let Some(code) = obj.get("code") {
            let code = code
                .as_i64()
                .ok_or_else(|| CodecError::new("must be an integer").field("code"))?;
            let data = obj.remove("data").unwrap_or(Value::Null);
            return Ok(Self::Reply {
                id,
                code,
                method,
                data,
            });
        }
        let method = method.ok_or_else(|| CodecError::new("missing").field("method"))?;
        let params = obj.remove("params").unwrap_or_else(|| json!({}));
        let object = |params: Value| match params {
            Value::Object(map) => Ok(map),
            _ => Err(CodecError::new("must be a JSON object").field("params")),
        };
        Ok(match method.as_str() {
            PROPERTY_SET => Self::PropertySet {
                id,
                params: object(params)?,
            },
            PROPERTY_GET => {
                let identifiers = match params {
                    Value::Array(items) => items
                        .into_iter()
                        .map(|i| match i {
                            Value::String(s) => Ok(s),
                            _ => {
                                Err(CodecError::new("identifiers must be strings").field("params"))
                            }
                        })
                        .collect::<Result<_, _>>()?,
                    _ => {
                        return Err(
                            CodecError::new("must be an array of identifiers").field("params")
                        );
                    }
                };
                Self::PropertyGet { id, identifiers }
            }
            m => match m.strip_prefix("thing.service.") {
                Some(identifier) if !identifier.is_empty() => Self::ServiceCall {
                    id,
                    identifier: identifier.to_owned(),
                    params: object(params)?,
                },
                _ => Self::Other { id, method, params },
            },
        })
    }

    pub fn id(&self) -> &str {
        match self {
            Self::PropertySet { id, .. }
            | Self::PropertyGet { id, .. }
            | Self::ServiceCall { id, .. }
            | Self::Reply { id, .. }
            | Self::Other { id, .. } => id,
        }
    }
}

fn byte_offset(text: &str, line: usize, column: usize) -> usize {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    line_start + column.saturating_sub(1)
}

/// Typed access to `params` values, with errors that name the identifier.
///
/// Alink sends booleans as `0`/`1` and numbers as JSON numbers; these accessors accept both
/// forms a thing model allows and nothing else.
pub trait ParamsExt {
    fn number(&self, identifier: &str) -> Result<Option<f64>, CodecError>;
    fn integer(&self, identifier: &str) -> Result<Option<i64>, CodecError>;
    fn boolean(&self, identifier: &str) -> Result<Option<bool>, CodecError>;
    fn text(&self, identifier: &str) -> Result<Option<&str>, CodecError>;
}

impl ParamsExt for Map<String, Value> {
    fn number(&self, identifier: &str) -> Result<Option<f64>, CodecError> {
        match self.get(identifier) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| CodecError::new(format!("{v} is not a number")).field(identifier)),
        }
    }

    fn integer(&self, identifier: &str) -> Result<Option<i64>, CodecError> {
        match self.get(identifier) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| CodecError::new(format!("{v} is not an integer")).field(identifier)),
        }
    }

    fn boolean(&self, identifier: &str) -> Result<Option<bool>, CodecError> {
        match self.get(identifier) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => {
                match v.as_i64() {
                    Some(0) => Ok(Some(false)),
                    Some(1) => Ok(Some(true)),
                    _ => Err(CodecError::new(format!("{v} is not 0, 1, true or false"))
                        .field(identifier)),
                }
            }
        }
    }

    fn text(&self, identifier: &str) -> Result<Option<&str>, CodecError> {
        match self.get(identifier) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(CodecError::new(format!("{v} is not a string")).field(identifier)),
        }
    }
}

/// `raw / 10^decimals`, exact to the printed digits: dividing by a power of ten rounds
/// correctly, where multiplying by `0.001` would print `12.345000000000001`.
pub fn fixed_point(raw: i64, decimals: u32) -> f64 {
    raw as f64 / 10f64.powi(decimals as i32)
}

/// `raw × scale`, rounded to the decimals `scale` has (scale `0.1` → one decimal), so
/// register values print as the device documents them.
pub fn scaled(raw: f64, scale: f64) -> f64 {
    let value = raw * scale;
    if scale == 0.0 || !value.is_finite() {
        return value;
    }
    let decimals = (-scale.abs().log10()).ceil().clamp(0.0, 9.0) as i32;
    let factor = 10f64.powi(decimals);
    (value * factor).round() / factor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_post_matches_alink() {
        let post = AlinkRequest::property_post("123")
            .property("Flow", 1.25)
            .property("Valve", 1);
        assert_eq!(
            post.to_json(),
            r#"{"id":"123","version":"1.0","method":"thing.event.property.post","params":{"Flow":1.25,"Valve":1}}"#
        );
        let timed = AlinkRequest::property_post("1")
            .property("T", 2)
            .time(1700000000000);
        assert_eq!(
            timed.params(),
            json!({"T": {"value": 2, "time": 1700000000000_i64}})
        );
    }

    #[test]
    fn event_post_puts_output_in_value() {
        let event = AlinkRequest::event_post("9", "Leakage")
            .property("InstantFlow", 0.5)
            .time(5);
        assert_eq!(event.method(), "thing.event.Leakage.post");
        assert_eq!(
            event.params(),
            json!({"value": {"InstantFlow": 0.5}, "time": 5})
        );
    }

    #[test]
    fn reply_serialises_code_and_method() {
        let reply = AlinkReply::failure("7", PROPERTY_SET, 500, "valve stuck");
        assert_eq!(
            reply.to_value(),
            json!({"id":"7","version":"1.0","code":500,"method":PROPERTY_SET,"data":{},"message":"valve stuck"})
        );
    }

    #[test]
    fn parses_downlinks() {
        let set = Downlink::parse(
            r#"{"id":"42","version":"1.0","method":"thing.service.property.set","params":{"ValveState":1}}"#,
        )
        .unwrap();
        let Downlink::PropertySet { id, params } = &set else {
            panic!("{set:?}")
        };
        assert_eq!(id, "42");
        assert_eq!(params.integer("ValveState").unwrap(), Some(1));

        let call = Downlink::parse(
            r#"{"id":43,"method":"thing.service.ControlValve","params":{"Open":true}}"#,
        )
        .unwrap();
        assert_eq!(
            call,
            Downlink::ServiceCall {
                id: "43".into(),
                identifier: "ControlValve".into(),
                params: json!({"Open": true}).as_object().unwrap().clone(),
            }
        );

        let reply = Downlink::parse(r#"{"id":"44","code":200,"data":{}}"#).unwrap();
        assert!(matches!(reply, Downlink::Reply { code: 200, .. }));

        let get =
            Downlink::parse(r#"{"id":"45","method":"thing.service.property.get","params":["A"]}"#)
                .unwrap();
        assert_eq!(
            get,
            Downlink::PropertyGet {
                id: "45".into(),
                identifiers: vec!["A".into()]
            }
        );
    }

    #[test]
    fn downlink_errors_say_where() {
        let e = Downlink::parse("{\"id\":\"1\",\n \"method\": x}").unwrap_err();
        assert_eq!(e.offset, Some(22));
        let e = Downlink::parse(r#"{"id":"1"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("method"));
        let e =
            Downlink::parse(r#"{"method":"thing.service.property.set","params":[]}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("params"));
    }

    #[test]
    fn params_accessors_name_the_identifier() {
        let params = json!({"On": 1, "Level": "high", "Off": false});
        let params = params.as_object().unwrap();
        assert_eq!(params.boolean("On").unwrap(), Some(true));
        assert_eq!(params.boolean("Off").unwrap(), Some(false));
        assert_eq!(params.boolean("Missing").unwrap(), None);
        let e = params.number("Level").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("Level"));
        assert_eq!(params.text("Level").unwrap(), Some("high"));
    }

    #[test]
    fn fixed_point_and_scale_print_cleanly() {
        assert_eq!(json!(fixed_point(12345, 3)).to_string(), "12.345");
        assert_eq!(json!(fixed_point(-52, 1)).to_string(), "-5.2");
        assert_eq!(json!(scaled(2305.0, 0.1)).to_string(), "230.5");
        assert_eq!(json!(scaled(7.0, 2.0)).to_string(), "14.0");
    }
}
