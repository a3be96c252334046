//! Built-in functions of the statement language.

use std::borrow::Cow;

use super::RuleInput;
use super::expr::Expr;
use super::value::Scalar;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Function {
    Timestamp,
    Now,
    DeviceName,
    ProductKey,
    Topic,
    MessageId,
    Abs,
    Round,
    Floor,
    Ceil,
    Lower,
    Upper,
    Concat,
    Substring,
    Length,
    Coalesce,
    ToNumber,
    ToString,
}

const ALL: [Function; 18] = [
    Function::Timestamp,
    Function::Now,
    Function::DeviceName,
    Function::ProductKey,
    Function::Topic,
    Function::MessageId,
    Function::Abs,
    Function::Round,
    Function::Floor,
    Function::Ceil,
    Function::Lower,
    Function::Upper,
    Function::Concat,
    Function::Substring,
    Function::Length,
    Function::Coalesce,
    Function::ToNumber,
    Function::ToString,
];

impl Function {
    /// Finds a function by name, ignoring case (`deviceName`, `DEVICENAME` and `devicename`
    /// are the same function).
    pub fn lookup(name: &str) -> Option<Function> {
        ALL.into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    }

    /// The documented spelling, used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Function::Timestamp => "timestamp",
            Function::Now => "now",
            Function::DeviceName => "deviceName",
            Function::ProductKey => "productKey",
            Function::Topic => "topic",
            Function::MessageId => "messageId",
            Function::Abs => "abs",
            Function::Round => "round",
            Function::Floor => "floor",
            Function::Ceil => "ceil",
            Function::Lower => "lower",
            Function::Upper => "upper",
            Function::Concat => "concat",
            Function::Substring => "substring",
            Function::Length => "length",
            Function::Coalesce => "coalesce",
            Function::ToNumber => "to_number",
            Function::ToString => "to_string",
        }
    }

    /// Every function name, for "unknown function" messages.
    pub fn names() -> impl Iterator<Item = &'static str> {
        ALL.into_iter().map(Function::name)
    }

    /// Minimum and maximum argument count (`None`: any number from the minimum up).
    pub fn arity(self) -> (usize, Option<usize>) {
        match self {
            Function::Timestamp
            | Function::Now
            | Function::DeviceName
            | Function::ProductKey
            | Function::MessageId => (0, Some(0)),
            Function::Topic => (0, Some(1)),
            Function::Abs
            | Function::Floor
            | Function::Ceil
            | Function::Lower
            | Function::Upper
            | Function::Length
            | Function::ToNumber
            | Function::ToString => (1, Some(1)),
            Function::Round => (1, Some(2)),
            Function::Substring => (2, Some(3)),
            Function::Concat | Function::Coalesce => (1, None),
        }
    }

    /// Describes the accepted argument counts, e.g. "1 or 2 arguments".
    pub fn arity_text(self) -> String {
        let plural = |n: usize| if n == 1 { "argument" } else { "arguments" };
        match self.arity() {
            (0, Some(0)) => "no arguments".into(),
            (min, Some(max)) if min == max => format!("{min} {}", plural(min)),
            (min, Some(max)) if max == min + 1 => format!("{min} or {max} arguments"),
            (min, Some(max)) => format!("{min} to {max} arguments"),
            (min, None) => format!("at least {min} {}", plural(min)),
        }
    }

    pub fn call<'a>(self, args: &'a [Expr], input: &RuleInput<'a>) -> Scalar<'a> {
        let arg = |i: usize| args.get(i).map_or(Scalar::Null, |a| a.eval(input));
        match self {
            Function::Timestamp => Scalar::Int(input.timestamp_ms),
            Function::Now => Scalar::Int(input.now_ms),
            Function::DeviceName => Scalar::Str(Cow::Borrowed(input.device_name)),
            Function::ProductKey => Scalar::Str(Cow::Borrowed(input.product_key)),
            Function::MessageId => input
                .message_id
                .map_or(Scalar::Null, |id| Scalar::Str(Cow::Borrowed(id))),
            Function::Topic if args.is_empty() => Scalar::Str(Cow::Borrowed(input.topic)),
            Function::Topic => match as_count(&arg(0)) {
                Some(n) if n >= 1 => topic_level(input.topic, n)
                    .map_or(Scalar::Null, |level| Scalar::Str(Cow::Borrowed(level))),
                _ => Scalar::Null,
            },
            Function::Abs => match arg(0) {
                Scalar::Int(i) => i
                    .checked_abs()
                    .map_or(Scalar::float((i as f64).abs()), Scalar::Int),
                Scalar::Float(f) => Scalar::Float(f.abs()),
                _ => Scalar::Null,
            },
            Function::Round => round(arg(0), if args.len() > 1 { Some(arg(1)) } else { None }),
            Function::Floor => whole(arg(0), f64::floor),
            Function::Ceil => whole(arg(0), f64::ceil),
            Function::Lower => map_str(arg(0), str::to_lowercase),
            Function::Upper => map_str(arg(0), str::to_uppercase),
            Function::Concat => {
                let mut text = String::new();
                for value in args.iter().map(|a| a.eval(input)) {
                    if let Some(part) = value.to_text() {
                        text.push_str(&part);
                    }
                }
                Scalar::Str(Cow::Owned(text))
            }
            Function::Substring => {
                let length = if args.len() > 2 {
                    match as_count(&arg(2)) {
                        Some(n) => Some(n),
                        None => return Scalar::Null,
                    }
                } else {
                    None
                };
                match (arg(0), as_count(&arg(1))) {
                    (Scalar::Str(text), Some(start)) => substring(text, start, length),
                    _ => Scalar::Null,
                }
            }
            Function::Length => match arg(0) {
                Scalar::Str(s) => Scalar::Int(s.chars().count() as i64),
                Scalar::Json(v) => v
                    .as_array()
                    .map_or(Scalar::Null, |a| Scalar::Int(a.len() as i64)),
                _ => Scalar::Null,
            },
            Function::Coalesce => args
                .iter()
                .map(|a| a.eval(input))
                .find(|v| !v.is_null())
                .unwrap_or(Scalar::Null),
            Function::ToNumber => match arg(0) {
                number @ (Scalar::Int(_) | Scalar::Float(_)) => number,
                Scalar::Str(s) => parse_number(s.trim()),
                _ => Scalar::Null,
            },
            Function::ToString => match arg(0) {
                text @ Scalar::Str(_) => text,
                other => other
                    .to_text()
                    .map_or(Scalar::Null, |t| Scalar::Str(Cow::Owned(t.into_owned()))),
            },
        }
    }
}

/// The `n`-th level (1-based) of `topic`. A leading `/` does not start an empty first level,
/// so that `topic(1)` of the Alink topic `/sys/pk/dn/thing/event/property/post` is `sys`.
pub(crate) fn topic_level(topic: &str, n: usize) -> Option<&str> {
    let topic = topic.strip_prefix('/').unwrap_or(topic);
    topic.split('/').nth(n.checked_sub(1)?)
}

/// A non-negative integer argument (a whole decimal such as `2.0` counts too).
fn as_count(value: &Scalar<'_>) -> Option<usize> {
    match value {
        Scalar::Int(i) => usize::try_from(*i).ok(),
        Scalar::Float(f) if f.fract() == 0.0 && *f >= 0.0 && *f <= u32::MAX as f64 => {
            Some(*f as usize)
        }
        _ => None,
    }
}

/// A decimal that is a whole number becomes an integer when it fits, so `round(21.6)` is `22`.
fn integral(f: f64) -> Scalar<'static> {
    // i64::MAX is not exactly representable; stay below 2^63.
    if f.abs() < 9.223_372_036_854_775e18 {
        Scalar::Int(f as i64)
    } else {
        Scalar::float(f)
    }
}

fn whole(value: Scalar<'_>, op: fn(f64) -> f64) -> Scalar<'static> {
    match value {
        Scalar::Int(i) => Scalar::Int(i),
        Scalar::Float(f) => integral(op(f)),
        _ => Scalar::Null,
    }
}

/// Half away from zero; with `digits` the result keeps that many decimals.
fn round(value: Scalar<'_>, digits: Option<Scalar<'_>>) -> Scalar<'static> {
    let digits = match digits {
        None => return whole(value, f64::round),
        Some(Scalar::Int(d)) => d.clamp(-18, 18) as i32,
        Some(_) => return Scalar::Null,
    };
    match value {
        Scalar::Int(i) if digits >= 0 => Scalar::Int(i),
        Scalar::Int(i) => {
            let scale = 10f64.powi(-digits);
            integral((i as f64 / scale).round() * scale)
        }
        Scalar::Float(f) => {
            let scale = 10f64.powi(digits);
            Scalar::float((f * scale).round() / scale)
        }
        _ => Scalar::Null,
    }
}

fn map_str(value: Scalar<'_>, op: fn(&str) -> String) -> Scalar<'static> {
    match value {
        Scalar::Str(s) => Scalar::Str(Cow::Owned(op(&s))),
        _ => Scalar::Null,
    }
}

/// Characters `start..start+length` (0-based, by character, not byte); a start past the end
/// gives an empty string.
fn substring(text: Cow<'_, str>, start: usize, length: Option<usize>) -> Scalar<'_> {
    let byte_at = |s: &str, chars: usize| s.char_indices().nth(chars).map_or(s.len(), |(b, _)| b);
    let range = |s: &str| {
        let from = byte_at(s, start);
        let to = match length {
            Some(length) => from + byte_at(&s[from..], length),
            None => s.len(),
        };
        from..to
    };
    match text {
        Cow::Borrowed(s) => Scalar::Str(Cow::Borrowed(&s[range(s)])),
        Cow::Owned(s) => Scalar::Str(Cow::Owned(s[range(&s)].to_owned())),
    }
}

fn parse_number(text: &str) -> Scalar<'static> {
    if let Ok(i) = text.parse::<i64>() {
        return Scalar::Int(i);
    }
    // Rust also parses "inf" and "NaN"; those are not readings, so they stay null.
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => Scalar::Float(f),
        _ => Scalar::Null,
    }
}
