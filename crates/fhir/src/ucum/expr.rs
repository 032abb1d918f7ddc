//! The case-sensitive UCUM expression grammar, evaluated straight to a factor and base-unit exponents.
//!
//! ```text
//! main-term   := "/" term | term
//! term        := component (("." | "/") component)*     left-associative: a/b.c is (a/b).c
//! component   := "(" term ")" | annotation | factor | simple-unit exponent? annotation?
//! simple-unit := prefix? atom                           a prefix only on a metric atom
//! exponent    := ("+" | "-")? digits
//! factor      := digits
//! annotation  := "{" (ASCII 33-126 except braces)* "}"
//! ```
//!
//! The same parser reads the definitions of the embedded table (while it is being resolved) and user input.

use super::{Quantity, Table, Unit};

/// Deeper nesting than this is not a unit anyone writes; the limit keeps hostile input off the stack.
const MAX_NESTING: usize = 32;

/// `code` reduced to a factor and base units; `None` when it is not valid UCUM or uses a unit that is not a
/// ratio of base units (or, while the table loads, one not resolved yet).
pub(super) fn parse(code: &str, table: &Table) -> Option<Quantity> {
    let mut parser = Parser { s: code.as_bytes(), pos: 0, table };
    let q = parser.main_term()?;
    (parser.pos == parser.s.len()).then_some(q)
}

/// Whether `s` is exactly one annotation, e.g. `{beats}`.
pub(super) fn is_annotation(s: &str) -> bool {
    annotation_len(s.as_bytes()) == Some(s.len())
}

/// Length of the annotation `s` starts with, braces included.
fn annotation_len(s: &[u8]) -> Option<usize> {
    if s.first() != Some(&b'{') {
        return None;
    }
    let close = s.iter().position(|&b| b == b'}')?;
    let body = &s[1..close];
    body.iter().all(|&b| (33..=126).contains(&b) && b != b'{').then_some(close + 1)
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    table: &'a Table,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn main_term(&mut self) -> Option<Quantity> {
        // A leading `/` divides one by the next component and the rest associates left as usual: that is how
        // the table itself must be read, e.g. the oersted, `/[pi].A/m` times 250, is 250/π A/m.
        if self.peek() == Some(b'/') {
            self.pos += 1;
            let first = Quantity::ONE.div(self.component(0)?)?;
            self.rest_of_term(first, 0)
        } else {
            self.term(0)
        }
    }

    fn term(&mut self, depth: usize) -> Option<Quantity> {
        let first = self.component(depth)?;
        self.rest_of_term(first, depth)
    }

    fn rest_of_term(&mut self, mut acc: Quantity, depth: usize) -> Option<Quantity> {
        loop {
            match self.peek() {
                Some(b'.') => {
                    self.pos += 1;
                    acc = acc.mul(self.component(depth)?)?;
                }
                Some(b'/') => {
                    self.pos += 1;
                    acc = acc.div(self.component(depth)?)?;
                }
                _ => return Some(acc),
            }
        }
    }

    fn component(&mut self, depth: usize) -> Option<Quantity> {
        match self.peek()? {
            b'(' => {
                if depth >= MAX_NESTING {
                    return None;
                }
                self.pos += 1;
                let q = self.term(depth + 1)?;
                if self.peek() != Some(b')') {
                    return None;
                }
                self.pos += 1;
                Some(q)
            }
            // An annotation on its own stands for the unit 1: `{rbc}`, or `{beats}/min`.
            b'{' => {
                self.pos += annotation_len(&self.s[self.pos..])?;
                Some(Quantity::ONE)
            }
            _ => {
                let token = self.symbol_token()?;
                if token.iter().all(u8::is_ascii_digit) {
                    // A factor (`2.m`, `10.L`); UCUM does not annotate factors, only units.
                    let factor: f64 = std::str::from_utf8(token).ok()?.parse().ok()?;
                    return Quantity::new(factor, Quantity::ONE.dims);
                }
                let q = self.simple_unit(token)?;
                if self.peek() == Some(b'{') {
                    self.pos += annotation_len(&self.s[self.pos..])?;
                }
                Some(q)
            }
        }
    }

    /// An atom with optional prefix and exponent: everything up to the next operator, parenthesis or brace,
    /// except that a bracketed part (`[in_i]`, `B[10.nV]`, `[m/s2/Hz^(1/2)]`) is taken whole, whatever it holds.
    fn symbol_token(&mut self) -> Option<&'a [u8]> {
        let s = self.s;
        let start = self.pos;
        while let Some(b) = self.peek() {
            match b {
                b'[' => {
                    let close = self.s[self.pos..].iter().position(|&c| c == b']')?;
                    self.pos += close + 1;
                }
                b'.' | b'/' | b'(' | b')' | b'{' | b'}' | b']' => break,
                // Printable ASCII only: no spaces, no non-ASCII look-alikes such as `µ`.
                33..=126 => self.pos += 1,
                _ => return None,
            }
        }
        (self.pos > start).then(|| &s[start..self.pos])
    }

    fn simple_unit(&self, token: &[u8]) -> Option<Quantity> {
        // The exponent is the trailing digits with an optional sign. No UCUM atom ends in a digit, so the split
        // is unambiguous: `10*-3` is the atom `10*` to the power -3, `[in_i]2` is square inches.
        let digits = token.iter().rev().take_while(|b| b.is_ascii_digit()).count();
        let (symbol, exponent) = if digits == 0 {
            (token, 1)
        } else {
            let mut start = token.len() - digits;
            if start > 0 && matches!(token[start - 1], b'+' | b'-') {
                start -= 1;
            }
            let exponent: i32 = std::str::from_utf8(&token[start..]).ok()?.parse().ok()?;
            (&token[..start], exponent)
        };
        let symbol = std::str::from_utf8(symbol).ok()?;
        match self.table.atom(symbol)? {
            (prefix, Unit::Ratio { q, .. }) => q.scale(prefix)?.pow(exponent),
            // Temperature scales are accepted only as the whole code (see `Table::temperature_scale`), never
            // inside an expression; arbitrary and logarithmic units never.
            (_, Unit::Temperature(_) | Unit::Unconvertible) => None,
        }
    }
}
