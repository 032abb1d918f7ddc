//! String functions: searching, slicing, case, regular expressions, splitting and joining, and the
//! `encode`/`decode`/`escape`/`unescape` helpers. Positions count characters, not bytes.
//!
//! They take one string as input and return empty for empty input or an empty argument; applying one to a
//! non-string (`identifier.startsWith('x')`) is an error rather than an empty result, so a mistyped search
//! expression fails loudly.

use super::super::ast::{Expr, Func};
use super::super::eval::{singleton, Collection, Eval, Frame};
use super::super::item::Item;
use super::super::regex::Regex;
use super::super::EvalError;

pub(super) fn call<'a>(
    ev: &Eval<'_, 'a>,
    func: Func,
    input: &[Item<'a>],
    args: &[Expr],
    f: &Frame<'_, 'a>,
) -> Result<Option<Collection<'a>>, EvalError> {
    let is_text = matches!(
        func,
        Func::IndexOf
            | Func::Substring
            | Func::StartsWith
            | Func::EndsWith
            | Func::Contains
            | Func::Upper
            | Func::Lower
            | Func::Replace
            | Func::Matches
            | Func::MatchesFull
            | Func::ReplaceMatches
            | Func::Length
            | Func::ToChars
            | Func::Split
            | Func::Join
            | Func::Trim
            | Func::Encode
            | Func::Decode
            | Func::Escape
            | Func::Unescape
    );
    if !is_text {
        return Ok(None);
    }
    if func == Func::Join {
        let separator = match args.first() {
            Some(a) => string_arg(ev, a, f)?.unwrap_or_default(),
            None => String::new(),
        };
        let parts: Vec<String> = input.iter().map(|i| i.to_string()).collect();
        return Ok(Some(vec![Item::String(parts.join(&separator).into())]));
    }
    let Some(s) = input_string(input)? else { return Ok(Some(Vec::new())) };
    let mut strings = Vec::with_capacity(args.len());
    for a in args {
        match string_arg_or_int(ev, a, f)? {
            Some(v) => strings.push(v),
            None => return Ok(Some(Vec::new())),
        }
    }
    let text = |i: usize| -> Result<&str, EvalError> {
        match &strings[i] {
            Arg::Text(t) => Ok(t),
            Arg::Integer(_) => Err(EvalError::execution(format!("{func:?} expects a string argument"))),
        }
    };
    let integer = |i: usize| -> Result<i64, EvalError> {
        match &strings[i] {
            Arg::Integer(n) => Ok(*n),
            Arg::Text(_) => Err(EvalError::execution(format!("{func:?} expects an integer argument"))),
        }
    };
    let string = |v: String| Ok(Some(vec![Item::String(v.into())]));
    let boolean = |b: bool| Ok(Some(vec![Item::Boolean(b)]));
    let regex = |p: &str| Regex::new(p).map_err(|e| EvalError::execution(format!("invalid regular expression: {e}")));
    match func {
        Func::IndexOf => {
            let needle = text(0)?;
            let index = s.find(needle).map_or(-1, |byte| s[..byte].chars().count() as i64);
            Ok(Some(vec![Item::Integer(index)]))
        }
        Func::Substring => {
            let chars: Vec<char> = s.chars().collect();
            let start = integer(0)?;
            if start < 0 || start as usize >= chars.len() {
                return Ok(Some(Vec::new()));
            }
            let len = if strings.len() > 1 { integer(1)?.max(0) as usize } else { chars.len() };
            let end = (start as usize).saturating_add(len).min(chars.len());
            string(chars[start as usize..end].iter().collect())
        }
        Func::StartsWith => boolean(s.starts_with(text(0)?)),
        Func::EndsWith => boolean(s.ends_with(text(0)?)),
        Func::Contains => boolean(s.contains(text(0)?)),
        Func::Upper => string(s.to_uppercase()),
        Func::Lower => string(s.to_lowercase()),
        Func::Replace => string(s.replace(text(0)?, text(1)?)),
        Func::Matches => boolean(regex(text(0)?)?.is_match(s)),
        Func::MatchesFull => boolean(regex(text(0)?)?.is_full_match(s)),
        Func::ReplaceMatches => {
            let pattern = text(0)?;
            if pattern.is_empty() {
                return string(s.to_string());
            }
            string(regex(pattern)?.replace_all(s, text(1)?))
        }
        Func::Length => Ok(Some(vec![Item::Integer(s.chars().count() as i64)])),
        Func::ToChars => Ok(Some(s.chars().map(|c| Item::String(c.to_string().into())).collect())),
        Func::Split => Ok(Some(s.split(text(0)?).map(|p| Item::String(p.into())).collect())),
        Func::Trim => string(s.trim().to_string()),
        Func::Encode | Func::Decode => {
            let out = match (func, text(0)?) {
                (Func::Encode, "base64") => Some(base64_encode(s.as_bytes(), false)),
                (Func::Encode, "urlbase64") => Some(base64_encode(s.as_bytes(), true)),
                (Func::Encode, "hex") => Some(s.bytes().map(|b| format!("{b:02x}")).collect()),
                (Func::Decode, "base64" | "urlbase64") => base64_decode(s).and_then(|b| String::from_utf8(b).ok()),
                (Func::Decode, "hex") => hex_decode(s).and_then(|b| String::from_utf8(b).ok()),
                (_, other) => return Err(EvalError::execution(format!("unknown encoding {other}"))),
            };
            Ok(Some(out.map(|o| vec![Item::String(o.into())]).unwrap_or_default()))
        }
        Func::Escape | Func::Unescape => {
            let out = match (func, text(0)?) {
                (Func::Escape, "html") => s
                    .replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
                    .replace('"', "&quot;")
                    .replace('\'', "&#39;"),
                (Func::Unescape, "html") => s
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&quot;", "\"")
                    .replace("&#39;", "'")
                    .replace("&amp;", "&"),
                (Func::Escape, "json") => {
                    let quoted = serde_json::to_string(s).map_err(|e| EvalError::execution(e.to_string()))?;
                    quoted[1..quoted.len() - 1].to_string()
                }
                (Func::Unescape, "json") => json_unescape(s),
                (_, other) => return Err(EvalError::execution(format!("unknown escape target {other}"))),
            };
            string(out)
        }
        _ => unreachable!("is_text covers exactly these functions"),
    }
}

enum Arg {
    Text(String),
    Integer(i64),
}

/// The string of a one-item input; `None` when empty; an error for several items or a non-string.
fn input_string<'x>(input: &'x [Item<'_>]) -> Result<Option<&'x str>, EvalError> {
    match singleton(input)? {
        None => Ok(None),
        Some(item) => match item.as_str() {
            Some(s) => Ok(Some(s)),
            None => Err(EvalError::semantic(format!(
                "expected a string, found {}",
                super::super::eval::system_type_name(item)
            ))),
        },
    }
}

fn string_arg<'a>(ev: &Eval<'_, 'a>, arg: &Expr, f: &Frame<'_, 'a>) -> Result<Option<String>, EvalError> {
    let v = ev.eval(arg, f)?;
    Ok(input_string(&v)?.map(str::to_string))
}

fn string_arg_or_int<'a>(ev: &Eval<'_, 'a>, arg: &Expr, f: &Frame<'_, 'a>) -> Result<Option<Arg>, EvalError> {
    let v = ev.eval(arg, f)?;
    Ok(match singleton(&v)? {
        None => None,
        Some(item) => match item.to_system_item() {
            Item::Integer(i) => Some(Arg::Integer(i)),
            other => Some(Arg::Text(other.as_str().map(str::to_string).unwrap_or_else(|| other.to_string()))),
        },
    })
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8], url: bool) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                let c = B64[(n >> (18 - 6 * i) & 63) as usize];
                out.push(match (url, c) {
                    (true, b'+') => '-',
                    (true, b'/') => '_',
                    _ => c as char,
                });
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()) {
        let v = match c {
            b'-' => 62,
            b'_' => 63,
            c => B64.iter().position(|b| *b == c)? as u32,
        };
        bits = bits << 6 | v;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count & 0xff) as u8);
        }
    }
    Some(out)
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Undoes JSON string escapes (`\"`, `\\`, `\n`, `\u00e9`...); unknown escapes are kept as written.
fn json_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(c) => out.push(c),
                    None => {
                        out.push_str("\\u");
                        out.push_str(&hex);
                    }
                }
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}
