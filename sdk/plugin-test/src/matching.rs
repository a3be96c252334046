//! Subset matching of JSON: what a case expects against what the plugin produced.

use serde_json::Value;

/// Every difference between `expected` and `actual`, one line each with its JSON path; empty when
/// `actual` matches.
///
/// - an object matches when every key of `expected` is present in `actual` and matches (extra
///   keys in `actual` are fine);
/// - an array matches an array of the same length whose elements match one by one;
/// - numbers compare by value (`12` matches `12.0`);
/// - anything else must be equal.
pub fn subset_diff(expected: &Value, actual: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk("$", expected, actual, &mut out);
    out
}

/// Whether `actual` contains `expected` in the sense of [`subset_diff`].
pub fn subset_matches(expected: &Value, actual: &Value) -> bool {
    subset_diff(expected, actual).is_empty()
}

fn walk(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(want), Value::Object(have)) => {
            for (key, want_value) in want {
                let child = child_path(path, key);
                match have.get(key) {
                    Some(have_value) => walk(&child, want_value, have_value, out),
                    None => out.push(format!("{child}: missing (expected {})", short(want_value))),
                }
            }
        }
        (Value::Array(want), Value::Array(have)) => {
            if want.len() != have.len() {
                out.push(format!(
                    "{path}: expected {} element(s), got {}: {}",
                    want.len(),
                    have.len(),
                    short(actual)
                ));
                return;
            }
            for (i, (w, h)) in want.iter().zip(have).enumerate() {
                walk(&format!("{path}[{i}]"), w, h, out);
            }
        }
        (Value::Number(w), Value::Number(h)) => {
            let same = match (w.as_i64(), h.as_i64()) {
                (Some(a), Some(b)) => a == b,
                _ => match (w.as_f64(), h.as_f64()) {
                    (Some(a), Some(b)) => {
                        a == b || (a - b).abs() <= f64::EPSILON * a.abs().max(b.abs())
                    }
                    _ => w == h,
                },
            };
            if !same {
                out.push(format!("{path}: expected {w}, got {h}"));
            }
        }
        _ => {
            if expected != actual {
                out.push(format!(
                    "{path}: expected {}, got {}",
                    short(expected),
                    short(actual)
                ));
            }
        }
    }
}

fn child_path(path: &str, key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        format!("{path}.{key}")
    } else {
        format!("{path}[{key:?}]")
    }
}

/// A value for a one-line message, cut when long.
fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 200 {
        let cut: String = text.chars().take(200).collect();
        format!("{cut}…")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_match_by_subset_and_arrays_elementwise() {
        let actual = json!({"method": "m", "params": {"flow": 12.0, "extra": true}, "list": [1, {"a": 1, "b": 2}]});
        assert!(subset_matches(&json!({"params": {"flow": 12}}), &actual));
        assert!(subset_matches(&json!({"list": [1, {"b": 2}]}), &actual));
        assert_eq!(
            subset_diff(
                &json!({"params": {"flow": 13, "gone": 1}, "list": [1]}),
                &actual
            ),
            vec![
                "$.params.flow: expected 13, got 12.0",
                "$.params.gone: missing (expected 1)",
                "$.list: expected 1 element(s), got 2: [1,{\"a\":1,\"b\":2}]",
            ]
        );
        assert_eq!(
            subset_diff(&json!({"a b": "x"}), &json!({"a b": "y"})),
            vec![r#"$["a b"]: expected "x", got "y""#]
        );
    }
}
