//! JSONPath as Newtonsoft.Json's `SelectToken`/`SelectTokens` evaluate it, which is what Azure's
//! MedTech service uses.
//!
//! Supported: `$` (optional at the start), `.name`, `['name']`/`["name"]` (several, comma-separated),
//! `.*`, `[*]`, `[n]` and `[n,m]`, slices `[start:end:step]`, `..name`, `..*`, `..[…]`, and filters
//! `[?(…)]` with existence tests (`@heartRate`, `@.a.b`), comparisons (`==`, `!=`, `<`, `<=`, `>`,
//! `>=`, `===`, `!==`) against strings, numbers, `true`, `false`, `null` or other paths (`@…`, `$…`),
//! combined with `&&` and `||` and parentheses.
//!
//! Newtonsoft's quirks that matter for mappings and are kept on purpose:
//! - `@heartRate` (no dot) means `@.heartRate`.
//! - An existence test is true when the path selects anything, even `null`, `false` or `""`.
//! - `==` does not coerce between strings and numbers (`'78'` ≠ `78`); integers and decimals compare
//!   numerically.
//! - `[?(…)]` and `[*]` apply to array elements only; `.*` to object values only.
//! - `..[?(…)]` tests the current token itself and then every descendant in document order, so
//!   `$..[?(@Body.HeartRate)]` selects the whole message.
//! - Field names are case-sensitive.
//!
//! Not supported (refused when the mapping is parsed): regular-expression matches (`=~`), which would
//! need a regex engine whose syntax differs from .NET's anyway.

use serde_json::Value;
use std::fmt;

/// A compiled JSONPath expression.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath {
    source: String,
    filters: Vec<Filter>,
}

/// Why an expression is not JSONPath this evaluator reads, with the byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPathError {
    pub message: String,
    pub position: usize,
}

impl fmt::Display for JsonPathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at position {}", self.message, self.position)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Filter {
    /// `.name`; `None` is `.*`.
    Field(Option<String>),
    /// `['a','b']`.
    Fields(Vec<String>),
    /// `[1]`, `[0,2]`; `None` is `[*]`.
    Index(Option<Vec<i64>>),
    Slice(Option<i64>, Option<i64>, i64),
    /// `..name`; `None` is `..*`.
    Scan(Option<String>),
    Query(Box<Expr>),
    QueryScan(Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Exists(Operand),
    Compare(Operand, Op, Operand),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    /// `@…` (relative to the tested token) or `$…` (from the root).
    Path {
        root: bool,
        filters: Vec<Filter>,
    },
    Value(Value),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    StrictEq,
    StrictNe,
    Lt,
    Le,
    Gt,
    Ge,
}

impl JsonPath {
    /// Compiles `source`.
    pub fn parse(source: &str) -> Result<JsonPath, JsonPathError> {
        let mut p = Parser { s: source.as_bytes(), pos: 0, depth: 0 };
        p.skip_ws();
        if p.peek() == Some(b'$') {
            p.pos += 1;
        }
        let filters = p.path(false)?;
        p.skip_ws();
        if p.pos < p.s.len() {
            return Err(p.error("unexpected character"));
        }
        Ok(JsonPath { source: source.to_owned(), filters })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every token the path selects from `root` (`SelectTokens`), in document order.
    pub fn select<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        evaluate(&self.filters, root, vec![root])
    }
}

fn evaluate<'a>(filters: &[Filter], root: &'a Value, mut current: Vec<&'a Value>) -> Vec<&'a Value> {
    for filter in filters {
        let mut next = Vec::new();
        for t in current {
            apply(filter, root, t, &mut next);
        }
        current = next;
    }
    current
}

fn apply<'a>(filter: &Filter, root: &'a Value, t: &'a Value, out: &mut Vec<&'a Value>) {
    match filter {
        Filter::Field(Some(name)) => {
            if let Some(v) = t.as_object().and_then(|o| o.get(name)) {
                out.push(v);
            }
        }
        Filter::Field(None) => {
            if let Some(o) = t.as_object() {
                out.extend(o.values());
            }
        }
        Filter::Fields(names) => {
            if let Some(o) = t.as_object() {
                out.extend(names.iter().filter_map(|n| o.get(n)));
            }
        }
        Filter::Index(None) => {
            if let Some(a) = t.as_array() {
                out.extend(a.iter());
            }
        }
        Filter::Index(Some(indexes)) => {
            if let Some(a) = t.as_array() {
                // Newtonsoft fails on negative indexes; selecting nothing is the safe reading.
                out.extend(indexes.iter().filter_map(|&i| usize::try_from(i).ok().and_then(|i| a.get(i))));
            }
        }
        Filter::Slice(start, end, step) => {
            if let Some(a) = t.as_array() {
                slice(a, *start, *end, *step, out);
            }
        }
        Filter::Scan(name) => {
            if name.is_none() {
                out.push(t);
            }
            scan(t, name.as_deref(), out);
        }
        Filter::Query(expr) => {
            if let Some(a) = t.as_array() {
                out.extend(a.iter().filter(|v| matches(expr, root, v)));
            }
        }
        Filter::QueryScan(expr) => {
            let mut all = vec![t];
            descendants(t, &mut all);
            out.extend(all.into_iter().filter(|v| matches(expr, root, v)));
        }
    }
}

fn slice<'a>(a: &'a [Value], start: Option<i64>, end: Option<i64>, step: i64, out: &mut Vec<&'a Value>) {
    let len = a.len() as i64;
    let norm = |i: i64| if i < 0 { (len + i).max(0) } else { i.min(len) };
    if step > 0 {
        let (mut i, end) = (start.map_or(0, norm), end.map_or(len, norm));
        while i < end {
            out.extend(a.get(i as usize));
            i = i.saturating_add(step);
        }
    } else {
        let mut i = start.map_or(len - 1, |s| norm(s).min(len - 1));
        let end = end.map_or(-1, norm);
        while i > end && i >= 0 {
            out.extend(a.get(i as usize));
            i = i.saturating_add(step);
        }
    }
}

/// Newtonsoft's `ScanFilter`: property values named `name` anywhere below `t` (every descendant value
/// when `name` is `None`), in document order.
fn scan<'a>(t: &'a Value, name: Option<&str>, out: &mut Vec<&'a Value>) {
    match t {
        Value::Object(o) => {
            for (k, v) in o {
                if name.is_none_or(|n| n == k) {
                    out.push(v);
                }
                scan(v, name, out);
            }
        }
        Value::Array(a) => {
            for v in a {
                if name.is_none() {
                    out.push(v);
                }
                scan(v, name, out);
            }
        }
        _ => {}
    }
}

fn descendants<'a>(t: &'a Value, out: &mut Vec<&'a Value>) {
    let children: Box<dyn Iterator<Item = &'a Value>> = match t {
        Value::Object(o) => Box::new(o.values()),
        Value::Array(a) => Box::new(a.iter()),
        _ => return,
    };
    for c in children {
        out.push(c);
        descendants(c, out);
    }
}

fn matches(expr: &Expr, root: &Value, t: &Value) -> bool {
    match expr {
        Expr::And(a, b) => matches(a, root, t) && matches(b, root, t),
        Expr::Or(a, b) => matches(a, root, t) || matches(b, root, t),
        Expr::Exists(operand) => !operand_values(operand, root, t).is_empty(),
        Expr::Compare(left, op, right) => {
            let lefts = operand_values(left, root, t);
            let rights = operand_values(right, root, t);
            lefts.iter().any(|l| rights.iter().any(|r| compare(l, *op, r)))
        }
    }
}

fn operand_values<'a>(operand: &'a Operand, root: &'a Value, t: &'a Value) -> Vec<&'a Value> {
    match operand {
        Operand::Value(v) => vec![v],
        Operand::Path { root: true, filters } => evaluate(filters, root, vec![root]),
        Operand::Path { root: false, filters } => evaluate(filters, root, vec![t]),
    }
}

fn compare(left: &Value, op: Op, right: &Value) -> bool {
    let scalar = |v: &Value| !matches!(v, Value::Object(_) | Value::Array(_));
    if !scalar(left) || !scalar(right) {
        // Newtonsoft only compares values; a container is "not equal" to anything.
        return matches!(op, Op::Ne | Op::StrictNe);
    }
    match op {
        Op::Eq | Op::StrictEq => scalar_eq(left, right),
        Op::Ne | Op::StrictNe => !scalar_eq(left, right),
        Op::Lt | Op::Le | Op::Gt | Op::Ge => {
            let ordering = match (left, right) {
                (Value::Number(a), Value::Number(b)) => a.as_f64().zip(b.as_f64()).and_then(|(a, b)| a.partial_cmp(&b)),
                (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
                _ => None,
            };
            ordering.is_some_and(|o| match op {
                Op::Lt => o.is_lt(),
                Op::Le => o.is_le(),
                Op::Gt => o.is_gt(),
                _ => o.is_ge(),
            })
        }
    }
}

fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    /// Parenthesis and filter nesting, bounded so a hostile mapping cannot exhaust the stack.
    depth: usize,
}

const MAX_DEPTH: usize = 64;

impl Parser<'_> {
    fn error(&self, message: &str) -> JsonPathError {
        JsonPathError { message: message.to_owned(), position: self.pos }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<u8> {
        self.s.get(self.pos + offset).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// A sequence of path segments. Inside a filter (`in_query`) it stops at operators and `)`, and a
    /// bare name right after `@`/`$` is a field (`@heartRate`).
    fn path(&mut self, in_query: bool) -> Result<Vec<Filter>, JsonPathError> {
        let mut filters = Vec::new();
        // A path may start with a bare name (`Body.heartRate`, or `@heartRate` inside a filter).
        if self.peek().is_some_and(|b| is_name_byte(b, in_query)) {
            filters.push(Filter::Field(Some(self.field()?)));
        }
        loop {
            match self.peek() {
                Some(b'.') => {
                    self.pos += 1;
                    let scan = self.eat(b'.');
                    if scan && self.peek() == Some(b'[') {
                        self.pos += 1;
                        filters.push(self.indexer(true)?);
                    } else if self.eat(b'*') {
                        filters.push(if scan { Filter::Scan(None) } else { Filter::Field(None) });
                    } else if self.peek().is_some_and(|b| is_name_byte(b, in_query)) {
                        let name = Some(self.field()?);
                        filters.push(if scan { Filter::Scan(name) } else { Filter::Field(name) });
                    } else {
                        return Err(self.error("expected a property name"));
                    }
                }
                Some(b'[') => {
                    self.pos += 1;
                    filters.push(self.indexer(false)?);
                }
                _ => return Ok(filters),
            }
        }
    }

    fn field(&mut self) -> Result<String, JsonPathError> {
        let start = self.pos;
        while self.peek().is_some_and(|b| is_name_byte(b, true)) {
            self.pos += 1;
        }
        let name = std::str::from_utf8(&self.s[start..self.pos]).map_err(|_| self.error("invalid UTF-8"))?;
        if name.is_empty() {
            return Err(self.error("expected a property name"));
        }
        Ok(name.to_owned())
    }

    /// After `[`: quoted names, indexes, a slice, `*` or a filter, then `]`.
    fn indexer(&mut self, scan: bool) -> Result<Filter, JsonPathError> {
        self.skip_ws();
        let filter = match self.peek() {
            Some(b'\'' | b'"') => {
                let mut names = vec![self.quoted()?];
                self.skip_ws();
                while self.eat(b',') {
                    self.skip_ws();
                    names.push(self.quoted()?);
                    self.skip_ws();
                }
                match (scan, names.len()) {
                    (true, 1) => Filter::Scan(names.pop()),
                    (true, _) => return Err(self.error("a recursive descent takes one name")),
                    (false, 1) => Filter::Field(names.pop()),
                    (false, _) => Filter::Fields(names),
                }
            }
            Some(b'*') => {
                self.pos += 1;
                self.skip_ws();
                if scan {
                    Filter::Scan(None)
                } else {
                    Filter::Index(None)
                }
            }
            Some(b'?') => {
                self.pos += 1;
                self.skip_ws();
                if !self.eat(b'(') {
                    return Err(self.error("expected '(' after '?'"));
                }
                let expr = self.or_expr()?;
                self.skip_ws();
                if !self.eat(b')') {
                    return Err(self.error("expected ')' to close the filter"));
                }
                self.skip_ws();
                if scan {
                    Filter::QueryScan(Box::new(expr))
                } else {
                    Filter::Query(Box::new(expr))
                }
            }
            Some(b'(') => return Err(self.error("script expressions '[(…)]' are not supported")),
            _ if scan => return Err(self.error("expected a name, '*' or a filter after '..['")),
            _ => self.index_or_slice()?,
        };
        if !self.eat(b']') {
            return Err(self.error("expected ']'"));
        }
        Ok(filter)
    }

    fn index_or_slice(&mut self) -> Result<Filter, JsonPathError> {
        let first = self.opt_int()?;
        self.skip_ws();
        if self.peek() == Some(b':') {
            self.pos += 1;
            let end = self.opt_int()?;
            self.skip_ws();
            let step = if self.eat(b':') { self.opt_int()?.unwrap_or(1) } else { 1 };
            if step == 0 {
                return Err(self.error("a slice step cannot be 0"));
            }
            self.skip_ws();
            return Ok(Filter::Slice(first, end, step));
        }
        let mut indexes = vec![first.ok_or_else(|| self.error("expected an index"))?];
        while self.eat(b',') {
            indexes.push(self.opt_int()?.ok_or_else(|| self.error("expected an index"))?);
            self.skip_ws();
        }
        Ok(Filter::Index(Some(indexes)))
    }

    fn opt_int(&mut self) -> Result<Option<i64>, JsonPathError> {
        self.skip_ws();
        let start = self.pos;
        self.eat(b'-');
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("");
        match text {
            "" => Ok(None),
            "-" => Err(self.error("expected digits")),
            _ => text.parse().map(Some).map_err(|_| self.error("index out of range")),
        }
    }

    fn quoted(&mut self) -> Result<String, JsonPathError> {
        let quote = self.peek().ok_or_else(|| self.error("expected a quoted name"))?;
        if quote != b'\'' && quote != b'"' {
            return Err(self.error("expected a quoted name"));
        }
        self.pos += 1;
        let mut bytes = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b) if b == quote => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let escaped = self.peek().ok_or_else(|| self.error("unterminated string"))?;
                    bytes.push(match escaped {
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        other => other,
                    });
                    self.pos += 1;
                }
                Some(b) => {
                    bytes.push(b);
                    self.pos += 1;
                }
            }
        }
        String::from_utf8(bytes).map_err(|_| self.error("invalid UTF-8"))
    }

    fn or_expr(&mut self) -> Result<Expr, JsonPathError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("filters nested too deeply"));
        }
        let result = self.or_expr_inner();
        self.depth -= 1;
        result
    }

    fn or_expr_inner(&mut self) -> Result<Expr, JsonPathError> {
        let mut left = self.and_expr()?;
        loop {
            self.skip_ws();
            if self.peek() == Some(b'|') && self.peek_at(1) == Some(b'|') {
                self.pos += 2;
                left = Expr::Or(Box::new(left), Box::new(self.and_expr()?));
            } else {
                return Ok(left);
            }
        }
    }

    fn and_expr(&mut self) -> Result<Expr, JsonPathError> {
        let mut left = self.comparison()?;
        loop {
            self.skip_ws();
            if self.peek() == Some(b'&') && self.peek_at(1) == Some(b'&') {
                self.pos += 2;
                left = Expr::And(Box::new(left), Box::new(self.comparison()?));
            } else {
                return Ok(left);
            }
        }
    }

    fn comparison(&mut self) -> Result<Expr, JsonPathError> {
        self.skip_ws();
        if self.eat(b'(') {
            let inner = self.or_expr()?;
            self.skip_ws();
            if !self.eat(b')') {
                return Err(self.error("expected ')'"));
            }
            return Ok(inner);
        }
        let left = self.operand()?;
        self.skip_ws();
        let op = match (self.peek(), self.peek_at(1), self.peek_at(2)) {
            (Some(b'='), Some(b'='), Some(b'=')) => Some((Op::StrictEq, 3)),
            (Some(b'!'), Some(b'='), Some(b'=')) => Some((Op::StrictNe, 3)),
            (Some(b'='), Some(b'='), _) => Some((Op::Eq, 2)),
            (Some(b'!'), Some(b'='), _) => Some((Op::Ne, 2)),
            (Some(b'<'), Some(b'='), _) => Some((Op::Le, 2)),
            (Some(b'>'), Some(b'='), _) => Some((Op::Ge, 2)),
            (Some(b'<'), _, _) => Some((Op::Lt, 1)),
            (Some(b'>'), _, _) => Some((Op::Gt, 1)),
            (Some(b'='), Some(b'~'), _) => return Err(self.error("regular-expression matches (=~) are not supported")),
            _ => None,
        };
        let Some((op, len)) = op else {
            return match left {
                Operand::Path { .. } => Ok(Expr::Exists(left)),
                Operand::Value(_) => Err(self.error("expected a comparison operator after a value")),
            };
        };
        self.pos += len;
        let right = self.operand()?;
        Ok(Expr::Compare(left, op, right))
    }

    fn operand(&mut self) -> Result<Operand, JsonPathError> {
        self.skip_ws();
        match self.peek() {
            Some(b @ (b'@' | b'$')) => {
                self.pos += 1;
                Ok(Operand::Path { root: b == b'$', filters: self.path(true)? })
            }
            Some(b'\'' | b'"') => Ok(Operand::Value(Value::String(self.quoted()?))),
            Some(b) if b == b'-' || b.is_ascii_digit() => {
                let start = self.pos;
                self.pos += 1;
                while self.peek().is_some_and(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-')) {
                    self.pos += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("");
                serde_json::from_str::<serde_json::Number>(text)
                    .map(|n| Operand::Value(Value::Number(n)))
                    .map_err(|_| JsonPathError { message: format!("'{text}' is not a number"), position: start })
            }
            _ => {
                for (word, value) in [("true", Value::Bool(true)), ("false", Value::Bool(false)), ("null", Value::Null)]
                {
                    if self.s[self.pos..].starts_with(word.as_bytes()) {
                        self.pos += word.len();
                        return Ok(Operand::Value(value));
                    }
                }
                Err(self.error("expected '@', '$' or a value"))
            }
        }
    }
}

/// Bytes that may appear in an unquoted property name. Inside a filter, operator characters end it.
fn is_name_byte(b: u8, in_query: bool) -> bool {
    let ends_anywhere =
        matches!(b, b'.' | b'[' | b']' | b'(' | b')' | b'\'' | b'"' | b'$' | b'@' | b'*') || b.is_ascii_whitespace();
    let ends_in_query = matches!(b, b'=' | b'!' | b'<' | b'>' | b'&' | b'|' | b',');
    !(ends_anywhere || in_query && ends_in_query)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn select(path: &str, doc: &Value) -> Vec<Value> {
        JsonPath::parse(path).unwrap().select(doc).into_iter().cloned().collect()
    }

    #[test]
    fn existence_filter_without_a_dot_scans_every_object() {
        let msg = json!({"Body": [{"heartRate": "78", "n": 1}, {"steps": 2}, {"heartRate": null, "n": 3}]});
        assert_eq!(
            select("$..[?(@heartRate)]", &msg),
            vec![json!({"heartRate": "78", "n": 1}), json!({"heartRate": null, "n": 3})]
        );
    }

    #[test]
    fn recursive_filter_tests_the_root_itself() {
        let msg = json!({"Body": {"HeartRate": "78"}, "SystemProperties": {}});
        assert_eq!(select("$..[?(@Body.HeartRate)]", &msg), vec![msg.clone()]);
    }

    #[test]
    fn comparisons_follow_newtonsoft() {
        let msg = json!({"a": [{"t": "x", "v": 1}, {"t": "y", "v": 2.0}, {"t": "x", "v": "2"}]});
        assert_eq!(select("$.a[?(@.t == 'x')].v", &msg), vec![json!(1), json!("2")]);
        assert_eq!(select("$.a[?(@.v == 2)].t", &msg), vec![json!("y")]);
        assert_eq!(select("$.a[?(@.v >= 1 && @.t != 'y')].v", &msg), vec![json!(1)]);
        assert_eq!(select("$.a[?(@.t == \"y\" || @.v == '2')].t", &msg), vec![json!("y"), json!("x")]);
    }

    #[test]
    fn indexes_slices_wildcards_and_quoted_names() {
        let msg = json!({"d": [10, 20, 30, 40], "o": {"iothub-connection-device-id": "dev", "b c": 1}});
        assert_eq!(select("$.d[1]", &msg), vec![json!(20)]);
        assert_eq!(select("$.d[0,3]", &msg), vec![json!(10), json!(40)]);
        assert_eq!(select("$.d[-2:]", &msg), vec![json!(30), json!(40)]);
        assert_eq!(select("$.d[*]", &msg).len(), 4);
        assert_eq!(select("$.o.iothub-connection-device-id", &msg), vec![json!("dev")]);
        assert_eq!(select("$.o['b c']", &msg), vec![json!(1)]);
        assert_eq!(select("$.o.*", &msg).len(), 2);
        assert_eq!(select("$.o[*]", &msg).len(), 0, "[*] takes array elements only, as in Newtonsoft");
        assert_eq!(select("d[2]", &msg), vec![json!(30)]);
    }

    #[test]
    fn hostile_paths_are_errors_not_crashes() {
        let deep = format!("$[?{}@.a{}]", "(".repeat(5_000), ")".repeat(5_000));
        assert!(JsonPath::parse(&deep).unwrap_err().message.contains("nested too deeply"));
        assert_eq!(select("$[::9223372036854775807]", &json!([1, 2])), vec![json!(1)]);
        assert!(JsonPath::parse("$[99999999999999999999]").is_err());
        assert!(JsonPath::parse("$.é[").is_err());
    }

    #[test]
    fn field_names_are_case_sensitive() {
        assert!(select("$.body", &json!({"Body": 1})).is_empty());
    }

    #[test]
    fn bad_expressions_are_errors_with_a_position() {
        for bad in ["$..[?(@heartRate)", "$.a[?(@.b =~ /x/)]", "$.[", "$.a[1:2:0]", "$.a[?(1)]", "$.o.b c"] {
            let err = JsonPath::parse(bad).unwrap_err();
            assert!(!err.message.is_empty(), "{bad}");
        }
        assert_eq!(JsonPath::parse("$..[?(@heartRate)").unwrap_err().position, 17);
    }
}
