//! Applying the field actions a data policy (`lotus.data.fields`) returns to a record.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// What may happen to one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldAction {
    Keep,
    Mask,
    Hash,
    Remove,
}

impl FieldAction {
    /// `"keep" | "mask" | "hash" | "remove"`; anything else is `None` (and treated as remove).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "keep" => Some(FieldAction::Keep),
            "mask" => Some(FieldAction::Mask),
            "hash" => Some(FieldAction::Hash),
            "remove" => Some(FieldAction::Remove),
            _ => None,
        }
    }
}

/// Applies `actions` (an object field → `"keep"|"mask"|"hash"|"remove"`) to `value` (an object
/// field → value). Deny by default: fields without an action, or with an unknown one, are
/// removed. A `value` that is not an object is left untouched (it has no fields to filter).
pub fn apply_field_actions(value: &mut Value, actions: &Value) {
    let Value::Object(fields) = value else {
        return;
    };
    let empty = serde_json::Map::new();
    let actions = actions.as_object().unwrap_or(&empty);
    fields.retain(|name, field| {
        let action = actions
            .get(name)
            .and_then(Value::as_str)
            .and_then(FieldAction::parse)
            .unwrap_or(FieldAction::Remove);
        match action {
            FieldAction::Keep => true,
            FieldAction::Remove => false,
            FieldAction::Mask => {
                *field = mask_value(field);
                true
            }
            FieldAction::Hash => {
                *field = Value::String(hash_value(field));
                true
            }
        }
    });
}

/// Partial masking: a string of 7 or more characters keeps its first 3 and last 2 characters
/// (`13812345678` → `138******78`), a shorter one becomes all `*`; any other value (numbers,
/// booleans, objects, arrays) becomes `"***"`; `null` stays `null`.
pub fn mask_value(value: &Value) -> Value {
    match value {
        Value::Null => Value::Null,
        Value::String(s) => {
            let chars: Vec<char> = s.chars().collect();
            let n = chars.len();
            let masked: String = if n >= 7 {
                chars
                    .iter()
                    .enumerate()
                    .map(|(i, c)| if i < 3 || i >= n - 2 { *c } else { '*' })
                    .collect()
            } else {
                "*".repeat(n)
            };
            Value::String(masked)
        }
        _ => Value::String("***".into()),
    }
}

/// `"sha256:" + the first 16 hex digits of the SHA-256 of the value's JSON text`.
pub fn hash_value(value: &Value) -> String {
    let text = serde_json::to_string(value).unwrap_or_default();
    let digest = Sha256::digest(text.as_bytes());
    format!("sha256:{}", &hex::encode(digest)[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn actions_apply_and_unlisted_fields_are_removed() {
        let mut v = json!({
            "flow": 12.5,
            "owner_phone": "13812345678",
            "owner_name": "Li Lei",
            "valve_key": "k-123",
            "meter_no": 4711,
            "secret_note": "x",
            "unlisted": true
        });
        let actions = json!({
            "flow": "keep",
            "owner_phone": "mask",
            "owner_name": "mask",
            "valve_key": "hash",
            "meter_no": "mask",
            "secret_note": "remove",
            "bogus": "keep"
        });
        apply_field_actions(&mut v, &actions);
        let o = v.as_object().unwrap();
        assert_eq!(o["flow"], json!(12.5));
        assert_eq!(o["owner_phone"], json!("138******78"));
        assert_eq!(o["owner_name"], json!("******"));
        assert_eq!(o["meter_no"], json!("***"));
        let h = o["valve_key"].as_str().unwrap();
        assert!(h.starts_with("sha256:") && h.len() == 7 + 16, "{h}");
        // sha256("\"k-123\"") — the JSON text, quotes included.
        let expected = hex::encode(Sha256::digest(b"\"k-123\""));
        assert_eq!(h, format!("sha256:{}", &expected[..16]));
        assert!(!o.contains_key("secret_note"));
        assert!(!o.contains_key("unlisted"));
        assert!(!o.contains_key("bogus"));
        assert_eq!(o.len(), 5);
    }

    #[test]
    fn unknown_action_or_non_object_actions_remove_everything() {
        let mut v = json!({"a": 1, "b": "x"});
        apply_field_actions(&mut v, &json!({"a": "show", "b": 1}));
        assert_eq!(v, json!({}));
        let mut v = json!({"a": 1});
        apply_field_actions(&mut v, &json!(null));
        assert_eq!(v, json!({}));
    }

    #[test]
    fn mask_boundaries() {
        assert_eq!(mask_value(&json!("abcdefg")), json!("abc**fg"));
        assert_eq!(mask_value(&json!("abcdef")), json!("******"));
        assert_eq!(mask_value(&json!("")), json!(""));
        assert_eq!(mask_value(&json!("北京市西湖区")), json!("******"));
        assert_eq!(
            mask_value(&json!("浙江省杭州市西湖区")),
            json!("浙江省****湖区")
        );
        assert_eq!(mask_value(&json!(-3)), json!("***"));
        assert_eq!(mask_value(&json!(null)), json!(null));
    }

    #[test]
    fn hash_is_stable_and_type_sensitive() {
        assert_eq!(hash_value(&json!(1)), hash_value(&json!(1)));
        assert_ne!(hash_value(&json!(1)), hash_value(&json!("1")));
    }
}
