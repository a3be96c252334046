//! The shape a decoded message must have before it enters the platform: an Alink request
//! object, or an Alink reply when the frame is the device's answer to a downlink. The thing
//! model validates the content later; this only keeps garbage out.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};

use crate::error::CallError;

/// Checks `text` is at most `limit` bytes and either a request — an object with a `method`
/// string and a `params` object or array (Alink's `thing.deviceinfo.update` sends an array) —
/// or a reply: an object with an `id`, an integer `code` and no `params` (a `method` and `data`
/// may be there).
pub(crate) fn check_request(text: String, limit: usize) -> Result<String, CallError> {
    if text.len() > limit {
        return Err(CallError::OutputTooLarge {
            bytes: text.len(),
            limit,
        });
    }
    let shape: RequestShape = serde_json::from_str(&text).map_err(|e| {
        let preview: String = text.chars().take(60).collect();
        CallError::InvalidOutput(format!(
            "decode must return an Alink JSON request object: {e} (output starts {preview:?})"
        ))
    })?;
    // A reply may name the method it answers (Alink replies to `thing.service.*` do), so what
    // tells it from a request is the integer `code` without `params`.
    if shape.id && shape.code && !shape.params {
        return Ok(text);
    }
    if shape.method.is_none() {
        return Err(CallError::InvalidOutput(
            "decode returned an object without a \"method\" string (a request) or an \"id\" \
             and an integer \"code\" (a reply)"
                .to_string(),
        ));
    }
    if !shape.params {
        return Err(CallError::InvalidOutput(
            "decode returned an object without a \"params\" object or array".to_string(),
        ));
    }
    Ok(text)
}

/// Walks the JSON once without building a tree: the hot path decodes every raw uplink.
struct RequestShape {
    method: Option<()>,
    params: bool,
    id: bool,
    code: bool,
}

impl<'de> Deserialize<'de> for RequestShape {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RequestVisitor)
    }
}

struct RequestVisitor;

impl<'de> Visitor<'de> for RequestVisitor {
    type Value = RequestShape;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RequestShape, A::Error> {
        let mut shape = RequestShape {
            method: None,
            params: false,
            id: false,
            code: false,
        };
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match &*key {
                "method" => {
                    let method: std::borrow::Cow<'de, str> = map.next_value()?;
                    if !method.is_empty() {
                        shape.method = Some(());
                    }
                }
                "params" => shape.params = map.next_value::<Container>()?.0,
                "id" => {
                    map.next_value::<IgnoredAny>()?;
                    shape.id = true;
                }
                "code" => shape.code = map.next_value::<serde_json::Value>()?.is_i64(),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(shape)
    }
}

/// `true` for an object or array, `false` for any scalar.
struct Container(bool);

impl<'de> Deserialize<'de> for Container {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContainerVisitor;
        impl<'de> Visitor<'de> for ContainerVisitor {
            type Value = Container;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Container, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Container(true))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Container, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Container(true))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Container, E> {
                Ok(Container(false))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Container, E> {
                Ok(Container(false))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Container, E> {
                Ok(Container(false))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Container, E> {
                Ok(Container(false))
            }
            fn visit_str<E>(self, _: &str) -> Result<Container, E> {
                Ok(Container(false))
            }
            fn visit_unit<E>(self) -> Result<Container, E> {
                Ok(Container(false))
            }
        }
        deserializer.deserialize_any(ContainerVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_alink_requests_and_refuses_other_shapes() {
        let ok = r#"{"id":"1","version":"1.0","method":"thing.event.property.post","params":{"t":{"value":1}}}"#;
        assert_eq!(check_request(ok.to_string(), 1024).unwrap(), ok);
        assert!(
            check_request(
                r#"{"method":"thing.deviceinfo.update","params":[{"attrKey":"a"}]}"#.into(),
                1024
            )
            .is_ok()
        );
        // A device's answer to a downlink decodes to a reply.
        assert!(check_request(r#"{"id":"42","code":200,"data":{}}"#.into(), 1024).is_ok());
        assert!(
            check_request(
                r#"{"id":"42","code":200,"method":"thing.service.property.set","data":{}}"#.into(),
                1024
            )
            .is_ok()
        );
        for bad in [
            "t=1",
            r#"{"id":"42","code":"200"}"#,
            r#"{"code":200}"#,
            "[1,2]",
            r#"{"params":{}}"#,
            r#"{"method":"m","params":42}"#,
            r#"{"method":"","params":{}}"#,
            r#"{"method":"m"}"#,
        ] {
            assert!(
                matches!(
                    check_request(bad.to_string(), 1024),
                    Err(CallError::InvalidOutput(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            check_request(ok.to_string(), 10),
            Err(CallError::OutputTooLarge {
                bytes: _,
                limit: 10
            })
        ));
    }
}
