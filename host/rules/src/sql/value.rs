//! Values produced while evaluating a statement, borrowing from the payload and the statement
//! wherever possible so that field look-ups and literals never allocate.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Number, Value};

/// An intermediate value. Numbers are split into integers and decimals so that integer
/// arithmetic stays exact and integer results stay integers in the output.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    /// Always finite: operations that would produce NaN or infinity produce `Null` instead.
    Float(f64),
    Str(Cow<'a, str>),
    /// An array or object from the payload.
    Json(&'a Value),
}

impl<'a> Scalar<'a> {
    pub fn from_json(value: &'a Value) -> Self {
        match value {
            Value::Null => Scalar::Null,
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Number(n) => number(n),
            Value::String(s) => Scalar::Str(Cow::Borrowed(s)),
            Value::Array(_) | Value::Object(_) => Scalar::Json(value),
        }
    }

    /// A decimal result; NaN and infinities have no JSON form and become null.
    pub fn float(f: f64) -> Self {
        if f.is_finite() {
            Scalar::Float(f)
        } else {
            Scalar::Null
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Scalar::Null)
    }

    /// Conditions are two-valued: only boolean `true` holds.
    pub fn is_true(&self) -> bool {
        matches!(self, Scalar::Bool(true))
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Scalar::Int(i) => Some(*i as f64),
            Scalar::Float(f) => Some(*f),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Scalar::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn into_json(self) -> Value {
        match self {
            Scalar::Null => Value::Null,
            Scalar::Bool(b) => Value::Bool(b),
            Scalar::Int(i) => Value::from(i),
            Scalar::Float(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
            Scalar::Str(s) => Value::String(s.into_owned()),
            Scalar::Json(v) => v.clone(),
        }
    }

    /// Text form used by `concat` and `to_string`; `None` for null.
    pub fn to_text(&self) -> Option<Cow<'_, str>> {
        Some(match self {
            Scalar::Null => return None,
            Scalar::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Scalar::Int(i) => Cow::Owned(i.to_string()),
            Scalar::Float(f) => Cow::Owned(f.to_string()),
            Scalar::Str(s) => Cow::Borrowed(s.as_ref()),
            Scalar::Json(v) => Cow::Owned(v.to_string()),
        })
    }

    /// Equality as `=` sees it; `None` when either side is null (the comparison is false).
    /// Values of different types are unequal, without conversion: `'1' = 1` is false.
    pub fn sql_eq(&self, other: &Scalar<'_>) -> Option<bool> {
        Some(match (self, other) {
            (Scalar::Null, _) | (_, Scalar::Null) => return None,
            (Scalar::Int(a), Scalar::Int(b)) => a == b,
            (Scalar::Bool(a), Scalar::Bool(b)) => a == b,
            (Scalar::Str(a), Scalar::Str(b)) => a == b,
            (a, b) => match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => x == y,
                _ => match (a, b) {
                    (Scalar::Json(x), Scalar::Json(y)) => x == y,
                    _ => false,
                },
            },
        })
    }

    /// Ordering for `<`, `<=`, `>`, `>=` and BETWEEN: numbers with numbers, strings with
    /// strings (by code point); anything else, null included, is not ordered.
    pub fn sql_cmp(&self, other: &Scalar<'_>) -> Option<Ordering> {
        match (self, other) {
            (Scalar::Int(a), Scalar::Int(b)) => Some(a.cmp(b)),
            (Scalar::Str(a), Scalar::Str(b)) => Some(a.as_ref().cmp(b.as_ref())),
            (a, b) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        }
    }
}

fn number(n: &Number) -> Scalar<'static> {
    match n.as_i64() {
        Some(i) => Scalar::Int(i),
        // u64 beyond i64::MAX and decimals.
        None => Scalar::float(n.as_f64().unwrap_or(f64::NAN)),
    }
}
