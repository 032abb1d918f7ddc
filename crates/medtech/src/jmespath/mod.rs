//! JMESPath, for CalculatedContent templates, with the MedTech service's custom functions.
//!
//! The whole JMESPath grammar is parsed (fields, quoted names, sub-expressions, indexes, slices, list
//! and object wildcard projections, flatten, filter projections `[?a == 'x']`, multi-select lists and
//! hashes, pipes, `||`, `&&`, `!`, comparisons, `@`, raw strings, JSON literals, expression references)
//! and evaluated as the specification says. Functions: the specification's built-ins (`abs`, `avg`,
//! `ceil`, `contains`, `ends_with`, `floor`, `join`, `keys`, `length`, `map`, `max`, `max_by`, `merge`,
//! `min`, `min_by`, `not_null`, `reverse`, `sort`, `sort_by`, `starts_with`, `sum`, `to_array`,
//! `to_number`, `to_string`, `type`, `values`) and Azure's (`add`, `subtract`, `multiply`, `divide`,
//! `pow`, `insertString`, `fromUnixTimestamp`, `fromUnixTimestampMs`; see `functions.rs`).
//!
//! Numbers are computed as `f64`, as JMESPath.Net (which Azure uses) does; turning a result into a
//! measurement value formats it the .NET way (see `json.rs`).

mod functions;
mod parser;

use serde_json::{Map, Value};
use std::fmt;

/// A compiled JMESPath expression.
#[derive(Debug, Clone, PartialEq)]
pub struct JmesPath {
    source: String,
    ast: Ast,
}

/// A JMESPath syntax or evaluation error (wrong argument types, division by zero, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JmesError(pub String);

impl fmt::Display for JmesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ast {
    Current,
    Field(String),
    Index(i64),
    Slice(Option<i64>, Option<i64>, i64),
    Sub(Box<Ast>, Box<Ast>),
    /// List projection: evaluate the right side on each element of the left side's array.
    Projection(Box<Ast>, Box<Ast>),
    /// `*` on an object: project over its values.
    ValueProjection(Box<Ast>, Box<Ast>),
    /// `[?cond]`: (left, condition, right).
    FilterProjection(Box<Ast>, Box<Ast>, Box<Ast>),
    Flatten(Box<Ast>),
    MultiList(Vec<Ast>),
    MultiHash(Vec<(String, Ast)>),
    Literal(Value),
    Pipe(Box<Ast>, Box<Ast>),
    Or(Box<Ast>, Box<Ast>),
    And(Box<Ast>, Box<Ast>),
    Not(Box<Ast>),
    Compare(Cmp, Box<Ast>, Box<Ast>),
    Function(String, Vec<Ast>),
    Expref(Box<Ast>),
}

impl JmesPath {
    /// Compiles `source`; unknown function names and wrong argument counts are errors here, not at
    /// evaluation, so a mapping with a misspelt function is refused when it is loaded.
    pub fn parse(source: &str) -> Result<JmesPath, JmesError> {
        let ast = parser::parse(source)?;
        functions::check(&ast)?;
        Ok(JmesPath { source: source.to_owned(), ast })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the expression against `data`.
    pub fn search(&self, data: &Value) -> Result<Value, JmesError> {
        eval(&self.ast, data)
    }

    /// Whether the result is a projection (JMESPath.Net's `IsProjection`): Azure then treats its
    /// elements as separate matches, and refuses more than one where a single value is wanted.
    pub fn is_projection(&self) -> bool {
        fn projection(ast: &Ast) -> bool {
            match ast {
                Ast::Projection(..) | Ast::ValueProjection(..) | Ast::FilterProjection(..) | Ast::Flatten(_) => true,
                Ast::Pipe(_, rhs) => projection(rhs),
                _ => false,
            }
        }
        projection(&self.ast)
    }
}

pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

/// JMESPath equality: structural, with numbers compared by value (`1` equals `1.0`).
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn eval(ast: &Ast, data: &Value) -> Result<Value, JmesError> {
    Ok(match ast {
        Ast::Current => data.clone(),
        Ast::Field(name) => data.as_object().and_then(|o| o.get(name)).cloned().unwrap_or(Value::Null),
        Ast::Index(i) => match data.as_array() {
            Some(a) => {
                let index = if *i < 0 { a.len() as i64 + i } else { *i };
                usize::try_from(index).ok().and_then(|i| a.get(i)).cloned().unwrap_or(Value::Null)
            }
            None => Value::Null,
        },
        Ast::Slice(start, end, step) => match data.as_array() {
            Some(a) => Value::Array(slice(a, *start, *end, *step)),
            None => Value::Null,
        },
        Ast::Sub(lhs, rhs) => {
            let left = eval(lhs, data)?;
            if left.is_null() {
                Value::Null
            } else {
                eval(rhs, &left)?
            }
        }
        Ast::Projection(lhs, rhs) => match eval(lhs, data)? {
            Value::Array(items) => project(items.iter(), rhs)?,
            _ => Value::Null,
        },
        Ast::ValueProjection(lhs, rhs) => match eval(lhs, data)? {
            Value::Object(o) => project(o.values(), rhs)?,
            _ => Value::Null,
        },
        Ast::FilterProjection(lhs, condition, rhs) => match eval(lhs, data)? {
            Value::Array(items) => {
                let mut kept = Vec::new();
                for item in &items {
                    if truthy(&eval(condition, item)?) {
                        kept.push(item);
                    }
                }
                project(kept.into_iter(), rhs)?
            }
            _ => Value::Null,
        },
        Ast::Flatten(inner) => match eval(inner, data)? {
            Value::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    match item {
                        Value::Array(nested) => out.extend(nested),
                        other => out.push(other),
                    }
                }
                Value::Array(out)
            }
            _ => Value::Null,
        },
        Ast::MultiList(items) => {
            if data.is_null() {
                return Ok(Value::Null);
            }
            Value::Array(items.iter().map(|i| eval(i, data)).collect::<Result<_, _>>()?)
        }
        Ast::MultiHash(items) => {
            if data.is_null() {
                return Ok(Value::Null);
            }
            let mut out = Map::new();
            for (key, item) in items {
                out.insert(key.clone(), eval(item, data)?);
            }
            Value::Object(out)
        }
        Ast::Literal(v) => v.clone(),
        Ast::Pipe(lhs, rhs) => eval(rhs, &eval(lhs, data)?)?,
        Ast::Or(lhs, rhs) => {
            let left = eval(lhs, data)?;
            if truthy(&left) {
                left
            } else {
                eval(rhs, data)?
            }
        }
        Ast::And(lhs, rhs) => {
            let left = eval(lhs, data)?;
            if truthy(&left) {
                eval(rhs, data)?
            } else {
                left
            }
        }
        Ast::Not(inner) => Value::Bool(!truthy(&eval(inner, data)?)),
        Ast::Compare(op, lhs, rhs) => {
            let (left, right) = (eval(lhs, data)?, eval(rhs, data)?);
            match op {
                Cmp::Eq => Value::Bool(json_eq(&left, &right)),
                Cmp::Ne => Value::Bool(!json_eq(&left, &right)),
                _ => match (left.as_f64(), right.as_f64()) {
                    (Some(a), Some(b)) => Value::Bool(match op {
                        Cmp::Lt => a < b,
                        Cmp::Le => a <= b,
                        Cmp::Gt => a > b,
                        _ => a >= b,
                    }),
                    _ => Value::Null,
                },
            }
        }
        Ast::Function(name, args) => functions::call(name, args, data)?,
        Ast::Expref(_) => {
            return Err(JmesError("an expression reference (&…) is only valid as a function argument".into()))
        }
    })
}

fn project<'a>(items: impl Iterator<Item = &'a Value>, rhs: &Ast) -> Result<Value, JmesError> {
    let mut out = Vec::new();
    for item in items {
        let v = eval(rhs, item)?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(Value::Array(out))
}

fn slice(a: &[Value], start: Option<i64>, end: Option<i64>, step: i64) -> Vec<Value> {
    let len = a.len() as i64;
    let clamp = |i: i64, low: i64, high: i64| {
        let i = if i < 0 { i + len } else { i };
        i.clamp(low, high)
    };
    let mut out = Vec::new();
    if step > 0 {
        let (mut i, stop) = (start.map_or(0, |s| clamp(s, 0, len)), end.map_or(len, |e| clamp(e, 0, len)));
        while i < stop {
            out.extend(a.get(i as usize).cloned());
            i = i.saturating_add(step);
        }
    } else {
        let mut i = start.map_or(len - 1, |s| clamp(s, -1, len - 1));
        let stop = end.map_or(-1, |e| clamp(e, -1, len - 1));
        while i > stop {
            out.extend(a.get(i as usize).cloned());
            i = i.saturating_add(step);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn search(expr: &str, data: Value) -> Value {
        JmesPath::parse(expr).unwrap().search(&data).unwrap()
    }

    #[test]
    fn core_grammar() {
        let data = json!({"a": {"b": [{"c": 1, "t": "x"}, {"c": 2, "t": "y"}, {"c": 3, "t": "x"}]}, "o": {"p": {"v": 1}, "q": {"v": 2}}});
        assert_eq!(search("a.b[0].c", data.clone()), json!(1));
        assert_eq!(search("a.b[-1].c", data.clone()), json!(3));
        assert_eq!(search("a.b[*].c", data.clone()), json!([1, 2, 3]));
        assert_eq!(search("a.b[?t == 'x'].c", data.clone()), json!([1, 3]));
        assert_eq!(search("a.b[?c > `1`] | [0].t", data.clone()), json!("y"));
        assert_eq!(search("a.b[1:].c", data.clone()), json!([2, 3]));
        assert_eq!(search("a.b[::-1].c", data.clone()), json!([3, 2, 1]));
        assert_eq!(search("o.*.v", data.clone()), json!([1, 2]));
        assert_eq!(search("[a.b[0].c, `5`]", data.clone()), json!([1, 5]));
        assert_eq!(search("{first: a.b[0].t, n: length(a.b)}", data.clone()), json!({"first": "x", "n": 3}));
        assert_eq!(search("a.missing.deeper", data.clone()), json!(null));
        assert_eq!(search("a.b[?t == 'x' && c > `1`].c | [0]", data.clone()), json!(3));
        assert_eq!(search("!(a.missing)", data.clone()), json!(true));
        assert_eq!(search("`unquoted`", data.clone()), json!("unquoted"));
        assert_eq!(search("a.missing || 'default'", data.clone()), json!("default"));
        assert_eq!(search("\"a\".\"b\"[0].c", data), json!(1));
    }

    #[test]
    fn flatten_and_projection_flags() {
        let data = json!({"Body": [[1, 2], [3], 4]});
        assert_eq!(search("Body[]", data), json!([1, 2, 3, 4]));
        assert!(JmesPath::parse("a[].b").unwrap().is_projection());
        assert!(JmesPath::parse("to_array(@) | [?x].data[]").unwrap().is_projection());
        assert!(!JmesPath::parse("a[].b | [0]").unwrap().is_projection());
        assert!(!JmesPath::parse("a.b").unwrap().is_projection());
    }

    #[test]
    fn azure_sample_type_match_selects_each_data_element() {
        let msg = json!({"Body": {"deviceId": "deviceTypeB_456", "data": [{"n": 1}, {"n": 2}]}});
        let expr =
            JmesPath::parse("to_array(@.Body) | [? deviceId && starts_with(deviceId, 'deviceTypeB')].data[] ").unwrap();
        assert_eq!(expr.search(&msg).unwrap(), json!([{"n": 1}, {"n": 2}]));
        let azure_doc = JmesPath::parse("[Body][?contains(keys(@), `heartRate`)] | @[0]").unwrap();
        assert_eq!(azure_doc.search(&json!({"Body": {"heartRate": 78}})).unwrap(), json!({"heartRate": 78}));
    }

    #[test]
    fn hostile_expressions_are_errors_not_crashes() {
        let deep = format!("{}a{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(JmesPath::parse(&deep).unwrap_err().0.contains("nested too deeply"));
        assert_eq!(search("`[0,1,2]`[::9223372036854775807]", json!(null)), json!([0]));
        assert_eq!(search("`[0,1,2]`[::-9223372036854775807]", json!(null)), json!([2]));
        assert!(JmesPath::parse("a[99999999999999999999]").is_err());
    }

    #[test]
    fn syntax_errors_are_reported() {
        for bad in ["a.", "a[?b", "foo(", "a || ", "[1", "'open", "nosuch(@)", "length(@, @)"] {
            assert!(JmesPath::parse(bad).is_err(), "{bad}");
        }
    }
}
