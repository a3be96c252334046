//! SQL-like rule statements, in the style of the rule engines of Alibaba Cloud IoT and EMQX.
//!
//! ```text
//! SELECT deviceName() AS device, items.temperature.value AS t
//! FROM '/sys/+/+/thing/event/property/post'
//! WHERE items.temperature.value > 30 AND deviceName() LIKE 'light-%'
//! ```
//!
//! A [`Statement`] is parsed once and then evaluated against every message ([`RuleInput`])
//! arriving on a topic that its FROM filter matches.
//!
//! # Grammar
//!
//! `SELECT <items> FROM '<topic filter>' [WHERE <condition>]`; keywords and function names are
//! case-insensitive.
//!
//! - Items: `*` (every top-level field of the payload object, in payload order) and/or
//!   `<expr> [AS name]`, comma-separated. A plain field path without AS is named by its last
//!   field name (`items.temperature.value` → `value`); any other expression needs AS. A later
//!   item with the same name as a payload field selected by `*` replaces that field's value.
//! - Field paths start at the payload root: `items.temperature.value`, `values[0]`,
//!   `params."a b"` or ``params.`a b` ``. Keywords may follow a dot (`params.end`); a field
//!   whose first name is a keyword must be quoted (`"from"`).
//! - Literals: integers, decimals (`1.5`, `2e3`), `'strings'` (`''` is a quote), `true`,
//!   `false`, `null`.
//! - Operators, loosest first: `OR`; `AND`; `NOT`; comparisons `=` (or `==`) `!= <> < <= > >=`,
//!   `[NOT] IN (..)`, `[NOT] BETWEEN a AND b`, `[NOT] LIKE 'p%'`, `IS [NOT] NULL`; `+ -`;
//!   `* / %`; unary `-`. `CASE [x] WHEN .. THEN .. [ELSE ..] END`.
//! - FROM takes an MQTT topic filter in single (or double) quotes; `+` matches one level,
//!   `#` (last level only) the remaining levels including none.
//!
//! # Functions
//!
//! | function | result |
//! |---|---|
//! | `timestamp()` | message time, ms since the Unix epoch |
//! | `now()` | evaluation time given by the caller, ms |
//! | `deviceName()`, `productKey()`, `messageId()` | identity of the message (`messageId()` may be null) |
//! | `topic()` | the whole topic |
//! | `topic(n)` | the n-th level, 1-based; a leading `/` does not count as an empty level, so for `/sys/pk/dn/thing/event/property/post` `topic(1)` is `sys`, `topic(2)` the product key, `topic(3)` the device name |
//! | `abs(x)`, `floor(x)`, `ceil(x)` | `floor`/`ceil` give integers |
//! | `round(x[, digits])` | half away from zero; an integer without `digits` |
//! | `lower(s)`, `upper(s)`, `length(s)` | `length` counts characters, or array elements |
//! | `concat(a, ...)` | text of every non-null argument, joined |
//! | `substring(s, start[, len])` | by character, 0-based `start` |
//! | `coalesce(a, ...)` | first non-null argument |
//! | `to_number(x)` | numeric strings to numbers, otherwise null |
//! | `to_string(x)` | text form; objects and arrays as JSON |
//!
//! # Semantics
//!
//! - A missing field is null; so is a path that walks into a non-object or past an array end.
//! - Arithmetic with null or a non-number (including numeric strings: use `to_number`) is null.
//!   Two integers give an integer unless the result is fractional (`7 / 2` is `3.5`) or
//!   overflows (then a decimal). Division or remainder by zero is null. Results that are
//!   not finite are null.
//! - Comparisons involving null are false, `!=` included; only `IS [NOT] NULL` tests for null.
//!   Numbers compare with numbers (as integers when both are, otherwise as f64), strings with
//!   strings (by code point); values of different types are never equal and never ordered,
//!   so `'30' > 20` is false. Arrays and objects are equal when their JSON is equal.
//! - `x [NOT] IN (...)`, `[NOT] BETWEEN` and `[NOT] LIKE` are false when `x` is null;
//!   LIKE applies to strings only, case-sensitively (`%` any run, `_` one character, no
//!   escape character).
//! - Conditions are two-valued: only boolean `true` holds; null and non-booleans count as
//!   false (so `NOT missing_field` is true). AND and OR short-circuit.
//! - A statement without WHERE, or whose WHERE evaluates to `true`, matches.
//!
//! # Speed
//!
//! Statements are compiled into an expression tree with field paths split and literals and
//! LIKE patterns converted at parse time; looking up fields, comparing and matching LIKE
//! patterns do not allocate. Only the projected output map is built per matching message.

mod expr;
mod function;
mod lexer;
mod like;
mod parser;
mod topic;
mod value;

#[cfg(test)]
mod tests;

use std::fmt;

use serde_json::{Map, Value};

use parser::Column;
use topic::TopicFilter;

/// A syntax or validation error in a statement, with the 1-based position it refers to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(line: usize, column: usize, message: String) -> Self {
        ParseError {
            line,
            column,
            message,
        }
    }
}

/// One message as a statement sees it.
#[derive(Debug, Clone, Copy)]
pub struct RuleInput<'a> {
    /// The topic the message was published on.
    pub topic: &'a str,
    /// Product of the sending device.
    pub product_key: &'a str,
    /// Name of the sending device.
    pub device_name: &'a str,
    /// The message id, when the protocol carries one.
    pub message_id: Option<&'a str>,
    /// The decoded payload; field paths start here.
    pub payload: &'a Value,
    /// When the message was produced, ms since the Unix epoch (`timestamp()`).
    pub timestamp_ms: i64,
    /// When the rule is evaluated, ms since the Unix epoch (`now()`); passed in so that
    /// evaluation is deterministic and testable.
    pub now_ms: i64,
}

/// A parsed rule statement, ready to evaluate against many messages.
#[derive(Debug, Clone)]
pub struct Statement {
    source: String,
    columns: Vec<Column>,
    filter: TopicFilter,
    condition: Option<expr::Expr>,
}

impl Statement {
    /// Parses and validates `text`; errors carry the line and column of the problem.
    pub fn parse(text: &str) -> Result<Statement, ParseError> {
        let parsed = parser::parse(text)?;
        Ok(Statement {
            source: text.to_owned(),
            columns: parsed.columns,
            filter: parsed.filter,
            condition: parsed.condition,
        })
    }

    /// The text the statement was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The MQTT topic filter of the FROM clause.
    pub fn topic_filter(&self) -> &str {
        self.filter.as_str()
    }

    /// Whether `topic` matches the FROM filter (MQTT semantics: `+` one level, `#` the rest
    /// including the parent level, wildcards at the first level skip `$` topics).
    pub fn matches_topic(&self, topic: &str) -> bool {
        self.filter.matches(topic)
    }

    /// Whether the statement has a `*` item.
    pub fn selects_all(&self) -> bool {
        self.columns.iter().any(|c| matches!(c, Column::All))
    }

    /// Names of the explicitly named output columns, in select order (without `*`).
    pub fn column_names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().filter_map(|c| match c {
            Column::Named { name, .. } => Some(name.as_str()),
            Column::All => None,
        })
    }

    /// The WHERE condition alone, ignoring the topic; true when there is no WHERE.
    pub fn evaluate_where(&self, input: &RuleInput<'_>) -> bool {
        self.condition
            .as_ref()
            .is_none_or(|condition| condition.eval(input).is_true())
    }

    /// Whether the topic matches and the WHERE condition holds, without building output.
    pub fn matches(&self, input: &RuleInput<'_>) -> bool {
        self.matches_topic(input.topic) && self.evaluate_where(input)
    }

    /// The select list applied to the message, regardless of topic and WHERE.
    pub fn project(&self, input: &RuleInput<'_>) -> Map<String, Value> {
        let mut output = Map::new();
        for column in &self.columns {
            match column {
                Column::All => {
                    if let Some(fields) = input.payload.as_object() {
                        for (key, value) in fields {
                            output.insert(key.clone(), value.clone());
                        }
                    }
                }
                Column::Named { name, expr } => {
                    output.insert(name.clone(), expr.eval(input).into_json());
                }
            }
        }
        output
    }

    /// The select result when the topic matches and the WHERE condition holds.
    pub fn evaluate(&self, input: &RuleInput<'_>) -> Option<Map<String, Value>> {
        self.matches(input).then(|| self.project(input))
    }
}

impl fmt::Display for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for Statement {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Statement::parse(text)
    }
}
