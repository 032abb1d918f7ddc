//! Tokens of the FHIRPath grammar.
//!
//! Keywords (`and`, `div`, `is`, `contains`...) come out as identifiers: whether `contains` is an operator or
//! a function name depends on where it stands, which only the parser knows. Date/time literals are cut
//! here, since `@2015-02-04T14:34:28.123.is(DateTime)` needs character-level care to tell the fraction's dot
//! from the invocation's.

use super::ParseError;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    /// An identifier or keyword; `true` if it was written in backticks (never a keyword then).
    Ident(String, bool),
    Str(String),
    Number(String),
    /// `@2015-02-04` (text after the `@`).
    Date(String),
    /// `@2015-02-04T14:34` or `@2015T`.
    DateTime(String),
    /// `@T14:34` (text after the `@T`).
    Time(String),
    /// `%name`, ``%`vs-name` ``, `%'x'`.
    Var(String),
    /// `$this`, `$index`, `$total`.
    Special(String),
    Sym(&'static str),
    Eof,
}

#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub tok: Tok,
    pub pos: usize,
}

const SYMBOLS: [&str; 22] =
    ["<=", ">=", "!=", "!~", ".", "[", "]", "(", ")", "{", "}", ",", "+", "-", "*", "/", "&", "|", "=", "~", "<", ">"];

pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, ParseError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |pos: usize, msg: &str| ParseError { position: pos, message: msg.to_string() };
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if src[i..].starts_with("//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if src[i..].starts_with("/*") {
            let end = src[i + 2..].find("*/").ok_or_else(|| err(i, "unterminated comment"))?;
            i += 2 + end + 2;
            continue;
        }
        let start = i;
        let tok = if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            Tok::Ident(src[start..i].to_string(), false)
        } else if c == b'`' {
            let (s, next) = quoted(src, i, b'`')?;
            i = next;
            Tok::Ident(s, true)
        } else if c == b'\'' {
            let (s, next) = quoted(src, i, b'\'')?;
            i = next;
            Tok::Str(s)
        } else if c.is_ascii_digit() {
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            Tok::Number(src[start..i].to_string())
        } else if c == b'@' {
            let (tok, next) = date_literal(src, i + 1).ok_or_else(|| err(i, "malformed date/time literal"))?;
            i = next;
            tok
        } else if c == b'%' {
            i += 1;
            match b.get(i) {
                Some(b'`') | Some(b'\'') => {
                    let (s, next) = quoted(src, i, b[i])?;
                    i = next;
                    Tok::Var(s)
                }
                _ => {
                    let s = i;
                    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'-') {
                        i += 1;
                    }
                    if s == i {
                        return Err(err(start, "expected a variable name after %"));
                    }
                    Tok::Var(src[s..i].to_string())
                }
            }
        } else if c == b'$' {
            i += 1;
            while i < b.len() && b[i].is_ascii_alphabetic() {
                i += 1;
            }
            match &src[start + 1..i] {
                name @ ("this" | "index" | "total") => Tok::Special(name.to_string()),
                _ => return Err(err(start, "unknown $ variable")),
            }
        } else if let Some(sym) = SYMBOLS.iter().find(|s| src[i..].starts_with(**s)) {
            i += sym.len();
            Tok::Sym(sym)
        } else {
            return Err(err(i, &format!("unexpected character {:?}", src[i..].chars().next().unwrap_or(' '))));
        };
        out.push(Token { tok, pos: start });
    }
    out.push(Token { tok: Tok::Eof, pos: src.len() });
    Ok(out)
}

/// Reads a `'...'` or `` `...` `` literal with FHIRPath escapes; returns the text and the index after it.
fn quoted(src: &str, start: usize, quote: u8) -> Result<(String, usize), ParseError> {
    let err = |msg: &str| ParseError { position: start, message: msg.to_string() };
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((offset, c)) = chars.next() {
        if c as u32 == quote as u32 {
            return Ok((out, start + 1 + offset + 1));
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        let (_, e) = chars.next().ok_or_else(|| err("unterminated escape"))?;
        out.push(match e {
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'f' => '\u{c}',
            'u' => {
                let hex: String = (0..4).filter_map(|_| chars.next().map(|(_, h)| h)).collect();
                let code = u32::from_str_radix(&hex, 16).map_err(|_| err("bad \\u escape"))?;
                char::from_u32(code).ok_or_else(|| err("bad \\u escape"))?
            }
            '\\' | '/' | '\'' | '"' | '`' => e,
            _ => return Err(err("unknown escape")),
        });
    }
    Err(err("unterminated string"))
}

fn run(b: &[u8], i: usize, pred: impl Fn(u8) -> bool) -> usize {
    let mut j = i;
    while j < b.len() && pred(b[j]) {
        j += 1;
    }
    j
}

/// Cuts a time `hh[:mm[:ss[.fff]]]` starting at `i`; returns the end.
fn time_part(b: &[u8], i: usize) -> Option<usize> {
    let digits2 = |i: usize| (i + 2 <= b.len() && b[i..i + 2].iter().all(u8::is_ascii_digit)).then_some(i + 2);
    let mut j = digits2(i)?;
    for _ in 0..2 {
        if b.get(j) == Some(&b':') {
            j = digits2(j + 1)?;
        } else {
            return Some(j);
        }
    }
    if b.get(j) == Some(&b'.') && b.get(j + 1).is_some_and(u8::is_ascii_digit) {
        j = run(b, j + 1, |c| c.is_ascii_digit());
    }
    Some(j)
}

fn zone_part(b: &[u8], i: usize) -> usize {
    match b.get(i) {
        Some(b'Z') => i + 1,
        Some(b'+') | Some(b'-')
            if b.len() >= i + 6 && b[i + 3] == b':' && b[i + 1..i + 3].iter().all(u8::is_ascii_digit) =>
        {
            i + 6
        }
        _ => i,
    }
}

fn date_literal(src: &str, i: usize) -> Option<(Tok, usize)> {
    let b = src.as_bytes();
    if b.get(i) == Some(&b'T') {
        let end = time_part(b, i + 1)?;
        if zone_part(b, end) != end {
            return None; // a Time has no time zone
        }
        return Some((Tok::Time(src[i + 1..end].to_string()), end));
    }
    let mut j = run(b, i, |c| c.is_ascii_digit());
    if j - i != 4 {
        return None;
    }
    for _ in 0..2 {
        if b.get(j) == Some(&b'-') && b.get(j + 1).is_some_and(u8::is_ascii_digit) {
            j = run(b, j + 1, |c| c.is_ascii_digit());
        }
    }
    if b.get(j) != Some(&b'T') {
        return Some((Tok::Date(src[i..j].to_string()), j));
    }
    j += 1;
    if let Some(end) = time_part(b, j) {
        j = zone_part(b, end);
    }
    Some((Tok::DateTime(src[i..j].to_string()), j))
}
