//! Tokens of a rule statement, each with the line and column where it starts.

use super::ParseError;

/// What a token is; keywords stay [`TokenKind::Word`] so that field names may reuse them after a dot.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TokenKind {
    /// A bare word: keyword, function name, field name or alias.
    Word(String),
    /// A `"double"` or `` `back` `` quoted field name.
    QuotedName(String),
    /// A `'single-quoted'` string literal.
    Str(String),
    Int(i64),
    Float(f64),
    LParen,
    RParen,
    Comma,
    Dot,
    LBracket,
    RBracket,
    Star,
    Plus,
    Minus,
    Slash,
    Percent,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Eof,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub kind: TokenKind,
    pub line: usize,
    pub column: usize,
}

impl Token {
    /// Whether this token is the keyword `word` (keywords are case-insensitive).
    pub fn is_keyword(&self, word: &str) -> bool {
        matches!(&self.kind, TokenKind::Word(w) if w.eq_ignore_ascii_case(word))
    }

    /// How the token reads in an error message.
    pub fn describe(&self) -> String {
        match &self.kind {
            TokenKind::Word(w) => format!("'{w}'"),
            TokenKind::QuotedName(n) => format!("\"{n}\""),
            TokenKind::Str(s) => format!("string '{s}'"),
            TokenKind::Int(i) => format!("number {i}"),
            TokenKind::Float(f) => format!("number {f}"),
            TokenKind::LParen => "'('".into(),
            TokenKind::RParen => "')'".into(),
            TokenKind::Comma => "','".into(),
            TokenKind::Dot => "'.'".into(),
            TokenKind::LBracket => "'['".into(),
            TokenKind::RBracket => "']'".into(),
            TokenKind::Star => "'*'".into(),
            TokenKind::Plus => "'+'".into(),
            TokenKind::Minus => "'-'".into(),
            TokenKind::Slash => "'/'".into(),
            TokenKind::Percent => "'%'".into(),
            TokenKind::Eq => "'='".into(),
            TokenKind::Ne => "'!='".into(),
            TokenKind::Lt => "'<'".into(),
            TokenKind::Le => "'<='".into(),
            TokenKind::Gt => "'>'".into(),
            TokenKind::Ge => "'>='".into(),
            TokenKind::Eof => "the end of the statement".into(),
        }
    }
}

struct Cursor<'s> {
    chars: std::iter::Peekable<std::str::Chars<'s>>,
    line: usize,
    column: usize,
}

impl Cursor<'_> {
    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn bump_if(&mut self, expected: char) -> bool {
        if self.peek() == Some(expected) {
            self.bump();
            true
        } else {
            false
        }
    }
}

/// Splits `source` into tokens; the last one is always [`TokenKind::Eof`].
pub(crate) fn tokenize(source: &str) -> Result<Vec<Token>, ParseError> {
    let mut cur = Cursor {
        chars: source.chars().peekable(),
        line: 1,
        column: 1,
    };
    let mut tokens = Vec::new();
    loop {
        while cur.peek().is_some_and(char::is_whitespace) {
            cur.bump();
        }
        let (line, column) = (cur.line, cur.column);
        let err = |message: String| ParseError::new(line, column, message);
        let Some(c) = cur.bump() else {
            tokens.push(Token {
                kind: TokenKind::Eof,
                line,
                column,
            });
            return Ok(tokens);
        };
        let kind = match c {
            '(' => TokenKind::LParen,
            ')' => TokenKind::RParen,
            ',' => TokenKind::Comma,
            '.' => TokenKind::Dot,
            '[' => TokenKind::LBracket,
            ']' => TokenKind::RBracket,
            '*' => TokenKind::Star,
            '+' => TokenKind::Plus,
            '-' => TokenKind::Minus,
            '/' => TokenKind::Slash,
            '%' => TokenKind::Percent,
            '=' => {
                // `==` is a common slip for users coming from programming languages.
                cur.bump_if('=');
                TokenKind::Eq
            }
            '!' => {
                if cur.bump_if('=') {
                    TokenKind::Ne
                } else {
                    return Err(err(
                        "'!' must be followed by '=' (use NOT for negation)".into()
                    ));
                }
            }
            '<' => {
                if cur.bump_if('=') {
                    TokenKind::Le
                } else if cur.bump_if('>') {
                    TokenKind::Ne
                } else {
                    TokenKind::Lt
                }
            }
            '>' => {
                if cur.bump_if('=') {
                    TokenKind::Ge
                } else {
                    TokenKind::Gt
                }
            }
            '\'' => TokenKind::Str(quoted(&mut cur, '\'').ok_or_else(|| {
                err("unterminated string: add a closing ' (write '' for a quote inside)".into())
            })?),
            '"' | '`' => {
                let name = quoted(&mut cur, c)
                    .ok_or_else(|| err(format!("unterminated quoted name: add a closing {c}")))?;
                if name.is_empty() {
                    return Err(err("a quoted field name must not be empty".into()));
                }
                TokenKind::QuotedName(name)
            }
            c if c.is_ascii_digit() => number(&mut cur, c).map_err(err)?,
            c if c.is_alphabetic() || c == '_' || c == '$' => {
                let mut word = String::from(c);
                while let Some(n) = cur.peek() {
                    if n.is_alphanumeric() || n == '_' || n == '$' {
                        word.push(n);
                        cur.bump();
                    } else {
                        break;
                    }
                }
                TokenKind::Word(word)
            }
            other => return Err(err(format!("unexpected character '{other}'"))),
        };
        tokens.push(Token { kind, line, column });
    }
}

/// Reads up to the closing `quote`; a doubled quote stands for one quote character.
fn quoted(cur: &mut Cursor<'_>, quote: char) -> Option<String> {
    let mut text = String::new();
    loop {
        let c = cur.bump()?;
        if c == quote {
            if cur.bump_if(quote) {
                text.push(quote);
            } else {
                return Some(text);
            }
        } else {
            text.push(c);
        }
    }
}

fn number(cur: &mut Cursor<'_>, first: char) -> Result<TokenKind, String> {
    let mut text = String::from(first);
    let mut is_float = false;
    while let Some(c) = cur.peek() {
        if c.is_ascii_digit() {
            text.push(c);
            cur.bump();
        } else if c == '.' && !is_float {
            // Look past the dot: `1.5` is a number, `1.` followed by a name is not valid anyway.
            text.push(c);
            cur.bump();
            if !cur.peek().is_some_and(|d| d.is_ascii_digit()) {
                return Err(format!("expected digits after the decimal point in {text}"));
            }
            is_float = true;
        } else if c == 'e' || c == 'E' {
            text.push(c);
            cur.bump();
            if let Some(sign) = cur.peek().filter(|s| *s == '+' || *s == '-') {
                text.push(sign);
                cur.bump();
            }
            if !cur.peek().is_some_and(|d| d.is_ascii_digit()) {
                return Err(format!("expected digits in the exponent of {text}"));
            }
            while let Some(d) = cur.peek().filter(char::is_ascii_digit) {
                text.push(d);
                cur.bump();
            }
            is_float = true;
            break;
        } else {
            break;
        }
    }
    if let Some(c) = cur.peek().filter(|c| c.is_alphabetic() || *c == '_') {
        return Err(format!(
            "unexpected '{c}' after the number {text}; names must not start with a digit (quote them as \"{text}{c}...\")"
        ));
    }
    if !is_float && let Ok(i) = text.parse::<i64>() {
        return Ok(TokenKind::Int(i));
    }
    // Integers beyond i64 become decimals rather than an error: sensor counters can be large.
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok(TokenKind::Float(f)),
        Ok(_) => Err(format!("the number {text} is too large")),
        Err(_) => Err(format!("invalid number {text}")),
    }
}
