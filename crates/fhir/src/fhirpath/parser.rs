//! A Pratt parser for the FHIRPath grammar.
//!
//! Precedence, tightest first, as in the N1 grammar: invocation and indexer, unary `+ -`, `* / div mod`,
//! `+ - &`, `is as`, `|`, `< > <= >=`, `= ~ != !~`, `in contains`, `and`, `or xor`, `implies`. All binary
//! operators associate to the left. Unary minus binds looser than invocation, so `-1.convertsToInteger()`
//! negates a Boolean and fails, as the spec's tests expect.

use super::ast::{BinOp, Expr, Func, TypeSpec};
use super::decimal::Decimal;
use super::eval::check_type;
use super::item::Item;
use super::lexer::{tokenize, Tok, Token};
use super::quantity::{calendar_unit, Quantity};
use super::temporal::Temporal;
use super::ParseError;

pub(crate) fn parse(src: &str) -> Result<Expr, ParseError> {
    let tokens = tokenize(src)?;
    let mut p = Parser { tokens, at: 0 };
    let expr = p.expression(0)?;
    match p.peek() {
        Tok::Eof => Ok(expr),
        other => Err(p.error(&format!("unexpected {other:?} after the expression"))),
    }
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

const UNARY_BP: u8 = 11;

fn binary_op(tok: &Tok) -> Option<(BinOp, u8)> {
    Some(match tok {
        Tok::Sym("*") => (BinOp::Mul, 10),
        Tok::Sym("/") => (BinOp::Div, 10),
        Tok::Ident(k, false) if k == "div" => (BinOp::IntDiv, 10),
        Tok::Ident(k, false) if k == "mod" => (BinOp::Mod, 10),
        Tok::Sym("+") => (BinOp::Add, 9),
        Tok::Sym("-") => (BinOp::Sub, 9),
        Tok::Sym("&") => (BinOp::Concat, 9),
        Tok::Sym("|") => (BinOp::Union, 7),
        Tok::Sym("<") => (BinOp::Lt, 6),
        Tok::Sym(">") => (BinOp::Gt, 6),
        Tok::Sym("<=") => (BinOp::Le, 6),
        Tok::Sym(">=") => (BinOp::Ge, 6),
        Tok::Sym("=") => (BinOp::Eq, 5),
        Tok::Sym("!=") => (BinOp::Ne, 5),
        Tok::Sym("~") => (BinOp::Equiv, 5),
        Tok::Sym("!~") => (BinOp::NotEquiv, 5),
        Tok::Ident(k, false) if k == "in" => (BinOp::In, 4),
        Tok::Ident(k, false) if k == "contains" => (BinOp::Contains, 4),
        Tok::Ident(k, false) if k == "and" => (BinOp::And, 3),
        Tok::Ident(k, false) if k == "or" => (BinOp::Or, 2),
        Tok::Ident(k, false) if k == "xor" => (BinOp::Xor, 2),
        Tok::Ident(k, false) if k == "implies" => (BinOp::Implies, 1),
        _ => return None,
    })
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.tokens[self.at].tok
    }

    fn peek_at(&self, n: usize) -> &Tok {
        &self.tokens[(self.at + n).min(self.tokens.len() - 1)].tok
    }

    fn next(&mut self) -> Tok {
        let t = self.tokens[self.at].tok.clone();
        if self.at < self.tokens.len() - 1 {
            self.at += 1;
        }
        t
    }

    fn error(&self, message: &str) -> ParseError {
        ParseError { position: self.tokens[self.at].pos, message: message.to_string() }
    }

    fn expect(&mut self, sym: &'static str) -> Result<(), ParseError> {
        if *self.peek() == Tok::Sym(sym) {
            self.next();
            Ok(())
        } else {
            Err(self.error(&format!("expected '{sym}'")))
        }
    }

    fn expression(&mut self, min_bp: u8) -> Result<Expr, ParseError> {
        let mut lhs = match self.peek() {
            Tok::Sym("-") => {
                self.next();
                let operand = self.expression(UNARY_BP)?;
                match operand {
                    Expr::Literal(Item::Integer(i)) => Expr::Literal(Item::Integer(-i)),
                    Expr::Literal(Item::Decimal(d)) => Expr::Literal(Item::Decimal(d.neg())),
                    other => Expr::Negate(Box::new(other)),
                }
            }
            Tok::Sym("+") => {
                self.next();
                self.expression(UNARY_BP)?
            }
            _ => self.term()?,
        };
        loop {
            let tok = self.peek().clone();
            match tok {
                Tok::Sym(".") => {
                    self.next();
                    lhs = self.invocation(Some(lhs))?;
                    continue;
                }
                Tok::Sym("[") => {
                    self.next();
                    let index = self.expression(0)?;
                    self.expect("]")?;
                    lhs = Expr::Indexer(Box::new(lhs), Box::new(index));
                    continue;
                }
                Tok::Ident(ref k, false) if k == "is" || k == "as" => {
                    if 8 <= min_bp {
                        break;
                    }
                    self.next();
                    let spec = self.type_spec()?;
                    lhs = if k == "is" { Expr::Is(Box::new(lhs), spec) } else { Expr::As(Box::new(lhs), spec) };
                    continue;
                }
                _ => {}
            }
            let Some((op, bp)) = binary_op(&tok) else { break };
            if bp <= min_bp {
                break;
            }
            self.next();
            let rhs = self.expression(bp)?;
            lhs = Expr::Binary(op, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    /// A type name, checked against the System types and the R4 definitions.
    fn type_spec(&mut self) -> Result<TypeSpec, ParseError> {
        let Tok::Ident(first, _) = self.next() else { return Err(self.error("expected a type name")) };
        let mut spec = TypeSpec { namespace: None, name: first.into() };
        if *self.peek() == Tok::Sym(".") {
            if let Tok::Ident(second, _) = self.peek_at(1).clone() {
                self.next();
                self.next();
                spec = TypeSpec { namespace: Some(spec.name), name: second.into() };
            }
        }
        check_type(&spec).map_err(|e| self.error(&e))?;
        Ok(spec)
    }

    fn term(&mut self) -> Result<Expr, ParseError> {
        let tok = self.next();
        Ok(match tok {
            Tok::Number(text) => {
                let number = if text.contains('.') {
                    Item::Decimal(Decimal::parse(&text).ok_or_else(|| self.error("bad number"))?)
                } else {
                    match text.parse::<i64>() {
                        Ok(i) => Item::Integer(i),
                        Err(_) => Item::Decimal(Decimal::parse(&text).ok_or_else(|| self.error("bad number"))?),
                    }
                };
                let unit = match self.peek() {
                    Tok::Str(unit) => Some(unit.clone()),
                    Tok::Ident(word, false) if calendar_unit(word).is_some() => Some(word.clone()),
                    _ => None,
                };
                match unit {
                    Some(unit) => {
                        self.next();
                        let value = match number {
                            Item::Integer(i) => Decimal::from_i64(i),
                            Item::Decimal(d) => d,
                            _ => unreachable!("numbers are integers or decimals"),
                        };
                        Expr::Literal(Item::Quantity(Quantity::new(value, &unit)))
                    }
                    None => Expr::Literal(number),
                }
            }
            Tok::Str(s) => Expr::Literal(Item::String(s.into())),
            Tok::Date(text) => {
                Expr::Literal(Item::Date(Temporal::parse_date(&text).ok_or_else(|| self.error("invalid date"))?))
            }
            Tok::DateTime(text) => Expr::Literal(Item::DateTime(
                Temporal::parse_datetime(&text).ok_or_else(|| self.error("invalid date-time"))?,
            )),
            Tok::Time(text) => {
                Expr::Literal(Item::Time(Temporal::parse_time(&text).ok_or_else(|| self.error("invalid time"))?))
            }
            Tok::Var(name) => Expr::Variable(name.into()),
            Tok::Special(name) => match name.as_str() {
                "this" => Expr::This,
                "index" => Expr::Index,
                _ => Expr::Total,
            },
            Tok::Sym("(") => {
                let e = self.expression(0)?;
                self.expect(")")?;
                e
            }
            Tok::Sym("{") => {
                self.expect("}")?;
                Expr::Empty
            }
            Tok::Ident(word, delimited) => {
                if !delimited && (word == "true" || word == "false") {
                    Expr::Literal(Item::Boolean(word == "true"))
                } else {
                    self.at -= 1;
                    self.invocation(None)?
                }
            }
            Tok::Eof => return Err(self.error("unexpected end of expression")),
            other => {
                self.at -= 1;
                return Err(self.error(&format!("unexpected {other:?}")));
            }
        })
    }

    /// An identifier or function call, applied to `target` (after a `.`) or to `$this`.
    fn invocation(&mut self, target: Option<Expr>) -> Result<Expr, ParseError> {
        let name = match self.next() {
            Tok::Ident(name, _) => name,
            Tok::Special(name) if target.is_some() => {
                // `x.$this` is not FHIRPath; fail clearly.
                return Err(self.error(&format!("unexpected ${name}")));
            }
            other => {
                if other != Tok::Eof {
                    self.at -= 1;
                }
                return Err(self.error(&format!("expected an identifier, found {other:?}")));
            }
        };
        if *self.peek() != Tok::Sym("(") {
            return Ok(match target {
                Some(t) => Expr::Member(Box::new(t), name.into()),
                None => Expr::Identifier(name.into()),
            });
        }
        self.next();
        let (func, min, max) = Func::lookup(&name).ok_or_else(|| self.error(&format!("unknown function {name}()")))?;
        let mut args = Vec::new();
        if *self.peek() != Tok::Sym(")") {
            loop {
                let arg = if func.takes_type() { Expr::Type(self.type_spec()?) } else { self.expression(0)? };
                args.push(arg);
                if *self.peek() == Tok::Sym(",") {
                    self.next();
                } else {
                    break;
                }
            }
        }
        self.expect(")")?;
        if args.len() < min || args.len() > max {
            return Err(self.error(&format!("{name}() takes {min} to {max} arguments, not {}", args.len())));
        }
        Ok(Expr::Call { target: target.map(Box::new), func, args })
    }
}
