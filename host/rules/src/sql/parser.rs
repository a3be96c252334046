//! Recursive-descent parser from tokens to the compiled statement.

use super::ParseError;
use super::expr::{ArithOp, CmpOp, Expr, Literal, Pattern, Segment};
use super::function::Function;
use super::lexer::{Token, TokenKind, tokenize};
use super::like::LikePattern;
use super::topic::TopicFilter;

/// Words that cannot start a bare field name; quoting (`"from"`) makes them field names.
const RESERVED: [&str; 19] = [
    "SELECT", "FROM", "WHERE", "AS", "AND", "OR", "NOT", "IN", "BETWEEN", "LIKE", "IS", "NULL",
    "TRUE", "FALSE", "CASE", "WHEN", "THEN", "ELSE", "END",
];

/// One item of the select list.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Column {
    /// `*`: every top-level field of the payload object.
    All,
    Named {
        name: String,
        expr: Expr,
    },
}

pub(crate) struct Parsed {
    pub columns: Vec<Column>,
    pub filter: TopicFilter,
    pub condition: Option<Expr>,
}

pub(crate) fn parse(source: &str) -> Result<Parsed, ParseError> {
    let mut parser = Parser {
        tokens: tokenize(source)?,
        pos: 0,
    };
    parser.statement()
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

fn error_at(token: &Token, message: impl Into<String>) -> ParseError {
    ParseError::new(token.line, token.column, message.into())
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.pos]
    }

    fn peek_next(&self) -> &Token {
        &self.tokens[(self.pos + 1).min(self.tokens.len() - 1)]
    }

    fn advance(&mut self) -> Token {
        let token = self.tokens[self.pos].clone();
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
        token
    }

    fn eat_keyword(&mut self, word: &str) -> bool {
        if self.peek().is_keyword(word) {
            self.advance();
            true
        } else {
            false
        }
    }

    fn eat(&mut self, kind: &TokenKind) -> bool {
        if &self.peek().kind == kind {
            self.advance();
            true
        } else {
            false
        }
    }

    fn statement(&mut self) -> Result<Parsed, ParseError> {
        if !self.eat_keyword("SELECT") {
            return Err(error_at(
                self.peek(),
                format!(
                    "a rule statement starts with SELECT, found {}; e.g. SELECT * FROM '/sys/+/+/thing/event/property/post'",
                    self.peek().describe()
                ),
            ));
        }
        let columns = self.select_list()?;
        if !self.eat_keyword("FROM") {
            return Err(error_at(self.peek(), "expected FROM after the select list"));
        }
        let filter = self.topic_filter()?;
        let condition = if self.eat_keyword("WHERE") {
            Some(self.expr()?)
        } else {
            None
        };
        let rest = self.peek();
        if rest.kind != TokenKind::Eof {
            let after = if condition.is_some() {
                "the WHERE condition"
            } else {
                "the topic filter; expected WHERE or the end of the statement"
            };
            return Err(error_at(
                rest,
                format!("unexpected {} after {after}", rest.describe()),
            ));
        }
        Ok(Parsed {
            columns,
            filter,
            condition,
        })
    }

    fn select_list(&mut self) -> Result<Vec<Column>, ParseError> {
        let mut columns = Vec::new();
        loop {
            let start = self.peek().clone();
            if start.kind == TokenKind::Star {
                self.advance();
                columns.push(Column::All);
            } else {
                if start.is_keyword("FROM") {
                    return Err(error_at(
                        &start,
                        "expected a column before FROM, e.g. SELECT * or SELECT params.Power AS power",
                    ));
                }
                let expr = self.expr()?;
                let name = if self.eat_keyword("AS") {
                    let alias = self.advance();
                    match alias.kind {
                        TokenKind::Word(name) | TokenKind::QuotedName(name) => name,
                        _ => {
                            return Err(error_at(
                                &alias,
                                format!(
                                    "expected a column name after AS, found {}",
                                    alias.describe()
                                ),
                            ));
                        }
                    }
                } else {
                    implicit_name(&expr, &start)?
                };
                let taken = columns
                    .iter()
                    .any(|c| matches!(c, Column::Named { name: n, .. } if *n == name));
                if taken {
                    return Err(error_at(
                        &start,
                        format!(
                            "the column name '{name}' is used twice; give one of them another name with AS"
                        ),
                    ));
                }
                columns.push(Column::Named { name, expr });
            }
            if !self.eat(&TokenKind::Comma) {
                return Ok(columns);
            }
        }
    }

    fn topic_filter(&mut self) -> Result<TopicFilter, ParseError> {
        let token = self.advance();
        match &token.kind {
            // Double quotes are accepted too, as EMQX writes FROM "t/#".
            TokenKind::Str(text) | TokenKind::QuotedName(text) => TopicFilter::parse(text)
                .map_err(|e| ParseError::new(token.line, token.column + 1 + e.offset, e.message)),
            _ => Err(error_at(
                &token,
                format!(
                    "expected a quoted topic filter after FROM, e.g. FROM '/sys/+/+/thing/event/property/post', found {}",
                    token.describe()
                ),
            )),
        }
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.and()?;
        while self.eat_keyword("OR") {
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.not()?;
        while self.eat_keyword("AND") {
            let right = self.not()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, ParseError> {
        if self.eat_keyword("NOT") {
            Ok(Expr::Not(Box::new(self.not()?)))
        } else {
            self.predicate()
        }
    }

    fn predicate(&mut self) -> Result<Expr, ParseError> {
        let left = self.additive()?;
        let op = match self.peek().kind {
            TokenKind::Eq => Some(CmpOp::Eq),
            TokenKind::Ne => Some(CmpOp::Ne),
            TokenKind::Lt => Some(CmpOp::Lt),
            TokenKind::Le => Some(CmpOp::Le),
            TokenKind::Gt => Some(CmpOp::Gt),
            TokenKind::Ge => Some(CmpOp::Ge),
            _ => None,
        };
        if let Some(op) = op {
            self.advance();
            let right = self.additive()?;
            return Ok(Expr::Compare(op, Box::new(left), Box::new(right)));
        }
        let value = Box::new(left);
        if self.eat_keyword("IS") {
            let negated = self.eat_keyword("NOT");
            if !self.eat_keyword("NULL") {
                return Err(error_at(
                    self.peek(),
                    format!(
                        "expected NULL after IS{}, found {}",
                        if negated { " NOT" } else { "" },
                        self.peek().describe()
                    ),
                ));
            }
            return Ok(Expr::IsNull { value, negated });
        }
        let negated = self.peek().is_keyword("NOT")
            && ["IN", "BETWEEN", "LIKE"]
                .iter()
                .any(|w| self.peek_next().is_keyword(w));
        if negated {
            self.advance();
        }
        if self.eat_keyword("IN") {
            let open = self.peek().clone();
            if !self.eat(&TokenKind::LParen) {
                return Err(error_at(
                    &open,
                    "expected '(' after IN, e.g. x IN (1, 2, 3)",
                ));
            }
            let mut list = vec![self.expr()?];
            while self.eat(&TokenKind::Comma) {
                list.push(self.expr()?);
            }
            self.close_paren(&open, "the IN list")?;
            return Ok(Expr::In {
                value,
                list,
                negated,
            });
        }
        if self.eat_keyword("BETWEEN") {
            let low = Box::new(self.additive()?);
            if !self.eat_keyword("AND") {
                return Err(error_at(
                    self.peek(),
                    format!(
                        "expected AND in BETWEEN low AND high, found {}",
                        self.peek().describe()
                    ),
                ));
            }
            let high = Box::new(self.additive()?);
            return Ok(Expr::Between {
                value,
                low,
                high,
                negated,
            });
        }
        if self.eat_keyword("LIKE") {
            let pattern = match self.additive()? {
                Expr::Literal(Literal::Str(text)) => Pattern::Fixed(LikePattern::new(&text)),
                other => Pattern::Computed(Box::new(other)),
            };
            return Ok(Expr::Like {
                value,
                pattern,
                negated,
            });
        }
        Ok(*value)
    }

    fn additive(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.multiplicative()?;
        loop {
            let op = match self.peek().kind {
                TokenKind::Plus => ArithOp::Add,
                TokenKind::Minus => ArithOp::Sub,
                _ => return Ok(left),
            };
            self.advance();
            let right = self.multiplicative()?;
            left = Expr::Arith(op, Box::new(left), Box::new(right));
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek().kind {
                TokenKind::Star => ArithOp::Mul,
                TokenKind::Slash => ArithOp::Div,
                TokenKind::Percent => ArithOp::Rem,
                _ => return Ok(left),
            };
            self.advance();
            let right = self.unary()?;
            left = Expr::Arith(op, Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.eat(&TokenKind::Minus) {
            // Negative literals are folded so that `-5` costs nothing at evaluation time.
            return Ok(match self.unary()? {
                Expr::Literal(Literal::Int(i)) => match i.checked_neg() {
                    Some(n) => Expr::Literal(Literal::Int(n)),
                    None => Expr::Literal(Literal::Float(-(i as f64))),
                },
                Expr::Literal(Literal::Float(f)) => Expr::Literal(Literal::Float(-f)),
                other => Expr::Neg(Box::new(other)),
            });
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let token = self.advance();
        let literal = |l| Ok(Expr::Literal(l));
        match &token.kind {
            TokenKind::Int(i) => literal(Literal::Int(*i)),
            TokenKind::Float(f) => literal(Literal::Float(*f)),
            TokenKind::Str(s) => literal(Literal::Str(s.as_str().into())),
            TokenKind::LParen => {
                let inner = self.expr()?;
                self.close_paren(&token, "the parenthesis")?;
                Ok(inner)
            }
            TokenKind::QuotedName(name) => self.path(name),
            TokenKind::Word(word) => {
                if word.eq_ignore_ascii_case("TRUE") {
                    literal(Literal::Bool(true))
                } else if word.eq_ignore_ascii_case("FALSE") {
                    literal(Literal::Bool(false))
                } else if word.eq_ignore_ascii_case("NULL") {
                    literal(Literal::Null)
                } else if word.eq_ignore_ascii_case("CASE") {
                    self.case(&token)
                } else if self.peek().kind == TokenKind::LParen {
                    self.call(&token, word)
                } else if let Some(keyword) = RESERVED.iter().find(|k| k.eq_ignore_ascii_case(word))
                {
                    Err(error_at(
                        &token,
                        format!(
                            "expected a value, found the keyword {keyword}; write \"{word}\" if it is a field name"
                        ),
                    ))
                } else {
                    self.path(word)
                }
            }
            _ => Err(error_at(
                &token,
                format!("expected a value, found {}", token.describe()),
            )),
        }
    }

    fn close_paren(&mut self, open: &Token, what: &str) -> Result<(), ParseError> {
        if self.eat(&TokenKind::RParen) {
            return Ok(());
        }
        Err(error_at(
            self.peek(),
            format!(
                "expected ')' to close {what} opened at line {}, column {}, found {}",
                open.line,
                open.column,
                self.peek().describe()
            ),
        ))
    }

    fn path(&mut self, first: &str) -> Result<Expr, ParseError> {
        let mut segments = vec![Segment::Key(first.into())];
        loop {
            if self.eat(&TokenKind::Dot) {
                let name = self.advance();
                match name.kind {
                    TokenKind::Word(key) | TokenKind::QuotedName(key) => {
                        segments.push(Segment::Key(key.into()));
                    }
                    _ => {
                        return Err(error_at(
                            &name,
                            format!(
                                "expected a field name after '.', found {}; quote names that are not plain words, e.g. params.\"a b\"",
                                name.describe()
                            ),
                        ));
                    }
                }
            } else if self.peek().kind == TokenKind::LBracket {
                let open = self.advance();
                let index = self.advance();
                let TokenKind::Int(i) = index.kind else {
                    return Err(error_at(
                        &index,
                        format!(
                            "expected an array index such as [0], found {}",
                            index.describe()
                        ),
                    ));
                };
                let Ok(i) = usize::try_from(i) else {
                    return Err(error_at(
                        &index,
                        "array indexes start at 0 and cannot be negative",
                    ));
                };
                if !self.eat(&TokenKind::RBracket) {
                    return Err(error_at(
                        self.peek(),
                        format!(
                            "expected ']' to close the index opened at line {}, column {}",
                            open.line, open.column
                        ),
                    ));
                }
                segments.push(Segment::Index(i));
            } else {
                return Ok(Expr::Field(segments));
            }
        }
    }

    fn call(&mut self, name_token: &Token, name: &str) -> Result<Expr, ParseError> {
        let open = self.advance();
        let mut args = Vec::new();
        if !self.eat(&TokenKind::RParen) {
            args.push(self.expr()?);
            while self.eat(&TokenKind::Comma) {
                args.push(self.expr()?);
            }
            self.close_paren(&open, &format!("the arguments of {name}"))?;
        }
        let Some(function) = Function::lookup(name) else {
            let known: Vec<_> = Function::names().collect();
            return Err(error_at(
                name_token,
                format!(
                    "unknown function '{name}'; available functions: {}",
                    known.join(", ")
                ),
            ));
        };
        let (min, max) = function.arity();
        if args.len() < min || max.is_some_and(|max| args.len() > max) {
            return Err(error_at(
                name_token,
                format!(
                    "function {} takes {}, got {}",
                    function.name(),
                    function.arity_text(),
                    args.len()
                ),
            ));
        }
        Ok(Expr::Call(function, args))
    }

    fn case(&mut self, case: &Token) -> Result<Expr, ParseError> {
        let operand = if ["WHEN", "ELSE", "END"]
            .iter()
            .any(|w| self.peek().is_keyword(w))
        {
            None
        } else {
            Some(Box::new(self.expr()?))
        };
        let mut branches = Vec::new();
        while self.eat_keyword("WHEN") {
            let when = self.expr()?;
            if !self.eat_keyword("THEN") {
                return Err(error_at(
                    self.peek(),
                    format!(
                        "expected THEN after the WHEN condition, found {}",
                        self.peek().describe()
                    ),
                ));
            }
            branches.push((when, self.expr()?));
        }
        if branches.is_empty() {
            return Err(error_at(
                self.peek(),
                format!(
                    "expected WHEN after CASE, found {}; write CASE WHEN condition THEN value [ELSE value] END",
                    self.peek().describe()
                ),
            ));
        }
        let otherwise = if self.eat_keyword("ELSE") {
            Some(Box::new(self.expr()?))
        } else {
            None
        };
        if !self.eat_keyword("END") {
            return Err(error_at(
                self.peek(),
                format!(
                    "expected END to close the CASE at line {}, column {}, found {}",
                    case.line,
                    case.column,
                    self.peek().describe()
                ),
            ));
        }
        Ok(Expr::Case {
            operand,
            branches,
            otherwise,
        })
    }
}

/// The column name of an item written without AS: a plain field path is named by its last
/// field name; anything else must be named explicitly.
fn implicit_name(expr: &Expr, start: &Token) -> Result<String, ParseError> {
    let what = match expr {
        Expr::Field(path) => match path.last() {
            Some(Segment::Key(key)) => return Ok(key.to_string()),
            _ => "an array element".to_string(),
        },
        Expr::Call(function, _) => format!("{}()", function.name()),
        _ => "this expression".to_string(),
    };
    Err(error_at(
        start,
        format!("{what} needs a column name: add AS <name> after it, e.g. ... AS value"),
    ))
}
