//! JMESPath lexer and Pratt parser, following the specification's grammar and binding powers.

use super::{Ast, Cmp, JmesError};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    QuotedIdent(String),
    Number(i64),
    Literal(Value),
    RawString(String),
    Dot,
    Star,
    /// `[]`
    Flatten,
    /// `[?`
    Filter,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    LParen,
    RParen,
    Comma,
    Colon,
    Pipe,
    Or,
    And,
    Not,
    Cmp(Cmp),
    At,
    Ampersand,
    Eof,
}

impl Tok {
    /// Left binding power, from the JMESPath reference implementation.
    fn bp(&self) -> u8 {
        match self {
            Tok::Pipe => 1,
            Tok::Or => 2,
            Tok::And => 3,
            Tok::Cmp(_) => 5,
            Tok::Flatten => 9,
            Tok::Star => 20,
            Tok::Filter => 21,
            Tok::Dot => 40,
            Tok::Not => 45,
            Tok::LBrace => 50,
            Tok::LBracket => 55,
            Tok::LParen => 60,
            _ => 0,
        }
    }
}

/// Below this binding power a token ends a projection's right-hand side.
const PROJECTION_STOP: u8 = 10;

pub(super) fn parse(source: &str) -> Result<Ast, JmesError> {
    let tokens = lex(source)?;
    let mut p = Parser { tokens, pos: 0, depth: 0 };
    let ast = p.expr(0)?;
    match p.peek() {
        (Tok::Eof, _) => Ok(ast),
        (t, at) => Err(JmesError(format!("unexpected {t:?} at position {at}"))),
    }
}

fn lex(source: &str) -> Result<Vec<(Tok, usize)>, JmesError> {
    let s: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |msg: &str, at: usize| JmesError(format!("{msg} at position {at}"));
    while i < s.len() {
        let c = s[i];
        let start = i;
        let tok = match c {
            ' ' | '\t' | '\n' | '\r' => {
                i += 1;
                continue;
            }
            '.' => {
                i += 1;
                Tok::Dot
            }
            '*' => {
                i += 1;
                Tok::Star
            }
            '@' => {
                i += 1;
                Tok::At
            }
            ']' => {
                i += 1;
                Tok::RBracket
            }
            '{' => {
                i += 1;
                Tok::LBrace
            }
            '}' => {
                i += 1;
                Tok::RBrace
            }
            '(' => {
                i += 1;
                Tok::LParen
            }
            ')' => {
                i += 1;
                Tok::RParen
            }
            ',' => {
                i += 1;
                Tok::Comma
            }
            ':' => {
                i += 1;
                Tok::Colon
            }
            '[' => match s.get(i + 1) {
                Some(']') => {
                    i += 2;
                    Tok::Flatten
                }
                Some('?') => {
                    i += 2;
                    Tok::Filter
                }
                _ => {
                    i += 1;
                    Tok::LBracket
                }
            },
            '|' if s.get(i + 1) == Some(&'|') => {
                i += 2;
                Tok::Or
            }
            '|' => {
                i += 1;
                Tok::Pipe
            }
            '&' if s.get(i + 1) == Some(&'&') => {
                i += 2;
                Tok::And
            }
            '&' => {
                i += 1;
                Tok::Ampersand
            }
            '!' if s.get(i + 1) == Some(&'=') => {
                i += 2;
                Tok::Cmp(Cmp::Ne)
            }
            '!' => {
                i += 1;
                Tok::Not
            }
            '=' if s.get(i + 1) == Some(&'=') => {
                i += 2;
                Tok::Cmp(Cmp::Eq)
            }
            '<' | '>' => {
                let eq = s.get(i + 1) == Some(&'=');
                i += if eq { 2 } else { 1 };
                Tok::Cmp(match (c, eq) {
                    ('<', true) => Cmp::Le,
                    ('<', false) => Cmp::Lt,
                    ('>', true) => Cmp::Ge,
                    _ => Cmp::Gt,
                })
            }
            '-' | '0'..='9' => {
                i += 1;
                while s.get(i).is_some_and(char::is_ascii_digit) {
                    i += 1;
                }
                let text: String = s[start..i].iter().collect();
                Tok::Number(text.parse().map_err(|_| err("expected digits", start))?)
            }
            'a'..='z' | 'A'..='Z' | '_' => {
                while s.get(i).is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_') {
                    i += 1;
                }
                Tok::Ident(s[start..i].iter().collect())
            }
            '"' => {
                let end = closing(&s, i, '"').ok_or_else(|| err("unterminated quoted identifier", start))?;
                let text: String = s[start..=end].iter().collect();
                i = end + 1;
                Tok::QuotedIdent(
                    serde_json::from_str(&text).map_err(|e| err(&format!("bad quoted identifier ({e})"), start))?,
                )
            }
            '\'' => {
                let end = closing(&s, i, '\'').ok_or_else(|| err("unterminated raw string", start))?;
                let text: String = s[start + 1..end].iter().collect();
                i = end + 1;
                Tok::RawString(text.replace("\\'", "'"))
            }
            '`' => {
                let end = closing(&s, i, '`').ok_or_else(|| err("unterminated literal", start))?;
                let text: String = s[start + 1..end].iter().collect::<String>().replace("\\`", "`");
                i = end + 1;
                // Azure's own example writes `heartRate` unquoted: JMESPath's legacy literal form, where
                // text that is not JSON is a string.
                Tok::Literal(serde_json::from_str(text.trim()).unwrap_or(Value::String(text)))
            }
            other => return Err(err(&format!("unexpected character '{other}'"), start)),
        };
        out.push((tok, start));
    }
    out.push((Tok::Eof, s.len()));
    Ok(out)
}

/// The index of the `quote` closing the string that opens at `open`, skipping backslash escapes.
fn closing(s: &[char], open: usize, quote: char) -> Option<usize> {
    let mut i = open + 1;
    while i < s.len() {
        match s[i] {
            '\\' => i += 2,
            c if c == quote => return Some(i),
            _ => i += 1,
        }
    }
    None
}

struct Parser {
    tokens: Vec<(Tok, usize)>,
    pos: usize,
    /// Expression nesting, bounded so a hostile mapping cannot exhaust the stack.
    depth: usize,
}

const MAX_DEPTH: usize = 64;

impl Parser {
    fn peek(&self) -> (&Tok, usize) {
        let (t, at) = &self.tokens[self.pos.min(self.tokens.len() - 1)];
        (t, *at)
    }

    fn peek2(&self) -> &Tok {
        &self.tokens[(self.pos + 1).min(self.tokens.len() - 1)].0
    }

    fn next(&mut self) -> Tok {
        let t = self.peek().0.clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn expect(&mut self, want: &Tok, what: &str) -> Result<(), JmesError> {
        let (t, at) = self.peek();
        if t == want {
            self.next();
            Ok(())
        } else {
            Err(JmesError(format!("expected {what} at position {at}, found {t:?}")))
        }
    }

    fn expr(&mut self, rbp: u8) -> Result<Ast, JmesError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(JmesError(format!("expression nested too deeply at position {}", self.peek().1)));
        }
        let result = self.expr_inner(rbp);
        self.depth -= 1;
        result
    }

    fn expr_inner(&mut self, rbp: u8) -> Result<Ast, JmesError> {
        let mut left = self.nud()?;
        while rbp < self.peek().0.bp() {
            left = self.led(left)?;
        }
        Ok(left)
    }

    fn nud(&mut self) -> Result<Ast, JmesError> {
        let at = self.peek().1;
        match self.next() {
            Tok::At => Ok(Ast::Current),
            Tok::Ident(name) => Ok(Ast::Field(name)),
            Tok::QuotedIdent(name) => {
                if self.peek().0 == &Tok::LParen {
                    return Err(JmesError(format!("a quoted identifier cannot name a function at position {at}")));
                }
                Ok(Ast::Field(name))
            }
            Tok::Literal(v) => Ok(Ast::Literal(v)),
            Tok::RawString(s) => Ok(Ast::Literal(Value::String(s))),
            Tok::Star => Ok(Ast::ValueProjection(Box::new(Ast::Current), Box::new(self.projection_rhs(20)?))),
            Tok::Flatten => {
                Ok(Ast::Projection(Box::new(Ast::Flatten(Box::new(Ast::Current))), Box::new(self.projection_rhs(9)?)))
            }
            Tok::Filter => self.filter(Ast::Current),
            Tok::LBracket => match (self.peek().0, self.peek2()) {
                (Tok::Number(_) | Tok::Colon, _) => self.index_or_slice(Ast::Current),
                (Tok::Star, Tok::RBracket) => {
                    self.next();
                    self.next();
                    Ok(Ast::Projection(Box::new(Ast::Current), Box::new(self.projection_rhs(20)?)))
                }
                _ => self.multi_list(),
            },
            Tok::LBrace => self.multi_hash(),
            Tok::Not => Ok(Ast::Not(Box::new(self.expr(45)?))),
            Tok::LParen => {
                let inner = self.expr(0)?;
                self.expect(&Tok::RParen, "')'")?;
                Ok(inner)
            }
            Tok::Ampersand => Ok(Ast::Expref(Box::new(self.expr(0)?))),
            t => Err(JmesError(format!("unexpected {t:?} at position {at}"))),
        }
    }

    fn led(&mut self, left: Ast) -> Result<Ast, JmesError> {
        let at = self.peek().1;
        match self.next() {
            Tok::Dot => {
                if self.peek().0 == &Tok::Star {
                    self.next();
                    return Ok(Ast::ValueProjection(Box::new(left), Box::new(self.projection_rhs(20)?)));
                }
                Ok(Ast::Sub(Box::new(left), Box::new(self.dot_rhs()?)))
            }
            Tok::LBracket => match (self.peek().0, self.peek2()) {
                (Tok::Number(_) | Tok::Colon, _) => self.index_or_slice(left),
                (Tok::Star, Tok::RBracket) => {
                    self.next();
                    self.next();
                    Ok(Ast::Projection(Box::new(left), Box::new(self.projection_rhs(20)?)))
                }
                (t, at) => Err(JmesError(format!("expected an index, a slice or '*' at position {at:?}, found {t:?}"))),
            },
            Tok::Flatten => {
                Ok(Ast::Projection(Box::new(Ast::Flatten(Box::new(left))), Box::new(self.projection_rhs(9)?)))
            }
            Tok::Filter => self.filter(left),
            Tok::Pipe => Ok(Ast::Pipe(Box::new(left), Box::new(self.expr(1)?))),
            Tok::Or => Ok(Ast::Or(Box::new(left), Box::new(self.expr(2)?))),
            Tok::And => Ok(Ast::And(Box::new(left), Box::new(self.expr(3)?))),
            Tok::Cmp(op) => Ok(Ast::Compare(op, Box::new(left), Box::new(self.expr(5)?))),
            Tok::LParen => {
                let Ast::Field(name) = left else {
                    return Err(JmesError(format!("'(' must follow a function name at position {at}")));
                };
                let mut args = Vec::new();
                while self.peek().0 != &Tok::RParen {
                    args.push(self.expr(0)?);
                    if self.peek().0 == &Tok::Comma {
                        self.next();
                    } else if self.peek().0 != &Tok::RParen {
                        return Err(JmesError(format!("expected ',' or ')' at position {}", self.peek().1)));
                    }
                }
                self.next();
                Ok(Ast::Function(name, args))
            }
            t => Err(JmesError(format!("unexpected {t:?} at position {at}"))),
        }
    }

    fn dot_rhs(&mut self) -> Result<Ast, JmesError> {
        let at = self.peek().1;
        match self.next() {
            Tok::Ident(name) => {
                // `a.length(@)` is not JMESPath, but `a.b` followed by a call is caught by led.
                Ok(Ast::Field(name))
            }
            Tok::QuotedIdent(name) => Ok(Ast::Field(name)),
            Tok::LBracket => self.multi_list(),
            Tok::LBrace => self.multi_hash(),
            t => Err(JmesError(format!("expected a name, '[' or '{{' after '.' at position {at}, found {t:?}"))),
        }
    }

    fn projection_rhs(&mut self, rbp: u8) -> Result<Ast, JmesError> {
        let (t, at) = self.peek();
        if t.bp() < PROJECTION_STOP {
            return Ok(Ast::Current);
        }
        match t {
            Tok::Dot => {
                self.next();
                if self.peek().0 == &Tok::Star {
                    self.next();
                    return Ok(Ast::ValueProjection(Box::new(Ast::Current), Box::new(self.projection_rhs(20)?)));
                }
                let first = self.dot_rhs()?;
                let mut left = first;
                while rbp < self.peek().0.bp() {
                    left = self.led(left)?;
                }
                Ok(left)
            }
            Tok::LBracket | Tok::Filter => self.expr(rbp),
            t => Err(JmesError(format!("expected '.', '[' or '[?' after a projection at position {at}, found {t:?}"))),
        }
    }

    fn filter(&mut self, left: Ast) -> Result<Ast, JmesError> {
        let condition = self.expr(0)?;
        self.expect(&Tok::RBracket, "']' closing the filter")?;
        let rhs = self.projection_rhs(21)?;
        Ok(Ast::FilterProjection(Box::new(left), Box::new(condition), Box::new(rhs)))
    }

    /// After `[` with a number or `:` next.
    fn index_or_slice(&mut self, left: Ast) -> Result<Ast, JmesError> {
        let mut parts: [Option<i64>; 3] = [None; 3];
        let mut colons = 0;
        loop {
            let at = self.peek().1;
            match self.next() {
                Tok::Number(n) => parts[colons] = Some(n),
                Tok::Colon if colons < 2 => colons += 1,
                Tok::RBracket => break,
                t => return Err(JmesError(format!("unexpected {t:?} in an index or slice at position {at}"))),
            }
        }
        if colons == 0 {
            let index = parts[0].ok_or_else(|| JmesError("expected an index".into()))?;
            return Ok(Ast::Sub(Box::new(left), Box::new(Ast::Index(index))));
        }
        if parts[2] == Some(0) {
            return Err(JmesError("a slice step cannot be 0".into()));
        }
        let slice = Ast::Slice(parts[0], parts[1], parts[2].unwrap_or(1));
        Ok(Ast::Projection(Box::new(Ast::Sub(Box::new(left), Box::new(slice))), Box::new(self.projection_rhs(20)?)))
    }

    fn multi_list(&mut self) -> Result<Ast, JmesError> {
        let mut items = Vec::new();
        loop {
            items.push(self.expr(0)?);
            match self.next() {
                Tok::Comma => continue,
                Tok::RBracket => return Ok(Ast::MultiList(items)),
                t => return Err(JmesError(format!("expected ',' or ']' in a multi-select list, found {t:?}"))),
            }
        }
    }

    fn multi_hash(&mut self) -> Result<Ast, JmesError> {
        let mut items = Vec::new();
        loop {
            let key = match self.next() {
                Tok::Ident(k) | Tok::QuotedIdent(k) => k,
                t => return Err(JmesError(format!("expected a key in a multi-select hash, found {t:?}"))),
            };
            self.expect(&Tok::Colon, "':'")?;
            items.push((key, self.expr(0)?));
            match self.next() {
                Tok::Comma => continue,
                Tok::RBrace => return Ok(Ast::MultiHash(items)),
                t => return Err(JmesError(format!("expected ',' or '}}' in a multi-select hash, found {t:?}"))),
            }
        }
    }
}
