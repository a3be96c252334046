//! The compiled form of expressions and how they evaluate against one message.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::Value;

use super::RuleInput;
use super::function::Function;
use super::like::LikePattern;
use super::value::Scalar;

/// One step of a field path: an object key or an array index.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Segment {
    Key(Box<str>),
    Index(usize),
}

/// A literal, converted once at parse time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Box<str>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A LIKE pattern: compiled at parse time when it is a literal, otherwise at each evaluation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Pattern {
    Fixed(LikePattern),
    Computed(Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Literal(Literal),
    Field(Vec<Segment>),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    Compare(CmpOp, Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    In {
        value: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Between {
        value: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
    Like {
        value: Box<Expr>,
        pattern: Pattern,
        negated: bool,
    },
    IsNull {
        value: Box<Expr>,
        negated: bool,
    },
    Case {
        operand: Option<Box<Expr>>,
        branches: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
    },
    Call(Function, Vec<Expr>),
}

/// Follows `path` from `root`; `None` when any step is missing or of the wrong kind.
pub(crate) fn lookup<'a>(root: &'a Value, path: &[Segment]) -> Option<&'a Value> {
    path.iter().try_fold(root, |value, segment| match segment {
        Segment::Key(key) => value.as_object()?.get(key.as_ref()),
        Segment::Index(index) => value.as_array()?.get(*index),
    })
}

impl Expr {
    pub fn eval<'a>(&'a self, input: &RuleInput<'a>) -> Scalar<'a> {
        match self {
            Expr::Literal(literal) => match literal {
                Literal::Null => Scalar::Null,
                Literal::Bool(b) => Scalar::Bool(*b),
                Literal::Int(i) => Scalar::Int(*i),
                Literal::Float(f) => Scalar::Float(*f),
                Literal::Str(s) => Scalar::Str(Cow::Borrowed(s)),
            },
            Expr::Field(path) => {
                lookup(input.payload, path).map_or(Scalar::Null, Scalar::from_json)
            }
            Expr::Neg(operand) => match operand.eval(input) {
                Scalar::Int(i) => i
                    .checked_neg()
                    .map_or(Scalar::float(-(i as f64)), Scalar::Int),
                Scalar::Float(f) => Scalar::Float(-f),
                _ => Scalar::Null,
            },
            Expr::Not(operand) => Scalar::Bool(!operand.eval(input).is_true()),
            Expr::Arith(op, left, right) => arith(*op, left.eval(input), right.eval(input)),
            Expr::Compare(op, left, right) => {
                Scalar::Bool(compare(*op, &left.eval(input), &right.eval(input)))
            }
            Expr::And(left, right) => {
                Scalar::Bool(left.eval(input).is_true() && right.eval(input).is_true())
            }
            Expr::Or(left, right) => {
                Scalar::Bool(left.eval(input).is_true() || right.eval(input).is_true())
            }
            Expr::In {
                value,
                list,
                negated,
            } => {
                let value = value.eval(input);
                if value.is_null() {
                    return Scalar::Bool(false);
                }
                let found = list
                    .iter()
                    .any(|item| value.sql_eq(&item.eval(input)) == Some(true));
                Scalar::Bool(found != *negated)
            }
            Expr::Between {
                value,
                low,
                high,
                negated,
            } => {
                let value = value.eval(input);
                let above = value.sql_cmp(&low.eval(input)).map(Ordering::is_ge);
                let below = value.sql_cmp(&high.eval(input)).map(Ordering::is_le);
                Scalar::Bool(match (above, below) {
                    (Some(above), Some(below)) => (above && below) != *negated,
                    _ => false,
                })
            }
            Expr::Like {
                value,
                pattern,
                negated,
            } => {
                let value = value.eval(input);
                let Some(text) = value.as_str() else {
                    return Scalar::Bool(false);
                };
                let matched = match pattern {
                    Pattern::Fixed(pattern) => pattern.matches(text),
                    Pattern::Computed(expr) => match expr.eval(input).as_str() {
                        Some(pattern) => LikePattern::new(pattern).matches(text),
                        None => return Scalar::Bool(false),
                    },
                };
                Scalar::Bool(matched != *negated)
            }
            Expr::IsNull { value, negated } => {
                Scalar::Bool(value.eval(input).is_null() != *negated)
            }
            Expr::Case {
                operand,
                branches,
                otherwise,
            } => {
                let operand = operand.as_ref().map(|o| o.eval(input));
                for (when, then) in branches {
                    let hit = match &operand {
                        Some(operand) => operand.sql_eq(&when.eval(input)) == Some(true),
                        None => when.eval(input).is_true(),
                    };
                    if hit {
                        return then.eval(input);
                    }
                }
                otherwise.as_ref().map_or(Scalar::Null, |o| o.eval(input))
            }
            Expr::Call(function, args) => function.call(args, input),
        }
    }
}

fn compare(op: CmpOp, left: &Scalar<'_>, right: &Scalar<'_>) -> bool {
    match op {
        CmpOp::Eq => left.sql_eq(right) == Some(true),
        CmpOp::Ne => left.sql_eq(right) == Some(false),
        CmpOp::Lt => left.sql_cmp(right).is_some_and(Ordering::is_lt),
        CmpOp::Le => left.sql_cmp(right).is_some_and(Ordering::is_le),
        CmpOp::Gt => left.sql_cmp(right).is_some_and(Ordering::is_gt),
        CmpOp::Ge => left.sql_cmp(right).is_some_and(Ordering::is_ge),
    }
}

fn arith<'a>(op: ArithOp, left: Scalar<'a>, right: Scalar<'a>) -> Scalar<'a> {
    if let (Scalar::Int(x), Scalar::Int(y)) = (&left, &right) {
        let (x, y) = (*x, *y);
        // Integer overflow falls back to a decimal result rather than wrapping.
        let exact = match op {
            ArithOp::Add => x.checked_add(y),
            ArithOp::Sub => x.checked_sub(y),
            ArithOp::Mul => x.checked_mul(y),
            ArithOp::Div if y == 0 => return Scalar::Null,
            // Integers stay integers only when the division is exact: 7 / 2 is 3.5, not 3.
            ArithOp::Div if x.wrapping_rem(y) == 0 => x.checked_div(y),
            ArithOp::Div => None,
            ArithOp::Rem if y == 0 => return Scalar::Null,
            ArithOp::Rem => Some(x.wrapping_rem(y)),
        };
        if let Some(result) = exact {
            return Scalar::Int(result);
        }
    }
    let (Some(x), Some(y)) = (left.as_f64(), right.as_f64()) else {
        return Scalar::Null;
    };
    Scalar::float(match op {
        ArithOp::Add => x + y,
        ArithOp::Sub => x - y,
        ArithOp::Mul => x * y,
        ArithOp::Div | ArithOp::Rem if y == 0.0 => return Scalar::Null,
        ArithOp::Div => x / y,
        ArithOp::Rem => x % y,
    })
}
