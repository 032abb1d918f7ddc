//! JMESPath functions: the specification's built-ins and the MedTech service's custom functions.
//!
//! Azure's custom functions (documented in "How to use custom functions with the MedTech service
//! device mappings"): `add`, `subtract`, `multiply`, `divide`, `pow` on numbers (a result that is not
//! a finite number, or a division by zero, is an error, as Azure's "mathematic error");
//! `insertString(original, toInsert, pos)` (a position outside `0..=length` is an error);
//! `fromUnixTimestamp(seconds)` and `fromUnixTimestampMs(ms)` returning `yyyy-MM-ddTHH:mm:ss+0`.

use super::{eval, json_eq, Ast, JmesError};
use crate::time::Timestamp;
use serde_json::{Map, Number, Value};
use std::cmp::Ordering;

/// (name, fewest arguments, most arguments; `None` for variadic)
const SIGNATURES: &[(&str, usize, Option<usize>)] = &[
    ("abs", 1, Some(1)),
    ("avg", 1, Some(1)),
    ("ceil", 1, Some(1)),
    ("contains", 2, Some(2)),
    ("ends_with", 2, Some(2)),
    ("floor", 1, Some(1)),
    ("join", 2, Some(2)),
    ("keys", 1, Some(1)),
    ("length", 1, Some(1)),
    ("map", 2, Some(2)),
    ("max", 1, Some(1)),
    ("max_by", 2, Some(2)),
    ("merge", 1, None),
    ("min", 1, Some(1)),
    ("min_by", 2, Some(2)),
    ("not_null", 1, None),
    ("reverse", 1, Some(1)),
    ("sort", 1, Some(1)),
    ("sort_by", 2, Some(2)),
    ("starts_with", 2, Some(2)),
    ("sum", 1, Some(1)),
    ("to_array", 1, Some(1)),
    ("to_number", 1, Some(1)),
    ("to_string", 1, Some(1)),
    ("type", 1, Some(1)),
    ("values", 1, Some(1)),
    // The MedTech service's custom functions.
    ("add", 2, Some(2)),
    ("subtract", 2, Some(2)),
    ("multiply", 2, Some(2)),
    ("divide", 2, Some(2)),
    ("pow", 2, Some(2)),
    ("insertString", 3, Some(3)),
    ("fromUnixTimestamp", 1, Some(1)),
    ("fromUnixTimestampMs", 1, Some(1)),
];

/// Checks every function call in `ast` names a known function with an acceptable argument count.
pub(super) fn check(ast: &Ast) -> Result<(), JmesError> {
    let children: Vec<&Ast> = match ast {
        Ast::Function(name, args) => {
            let Some((_, min, max)) = SIGNATURES.iter().find(|(n, _, _)| n == name) else {
                return Err(JmesError(format!("unknown function {name}()")));
            };
            if args.len() < *min || max.is_some_and(|max| args.len() > max) {
                let expected = match max {
                    Some(max) if max == min => format!("{min}"),
                    Some(max) => format!("{min} to {max}"),
                    None => format!("at least {min}"),
                };
                return Err(JmesError(format!("{name}() takes {expected} argument(s), {} given", args.len())));
            }
            args.iter().collect()
        }
        Ast::Sub(a, b)
        | Ast::Projection(a, b)
        | Ast::ValueProjection(a, b)
        | Ast::Pipe(a, b)
        | Ast::Or(a, b)
        | Ast::And(a, b)
        | Ast::Compare(_, a, b) => vec![a, b],
        Ast::FilterProjection(a, b, c) => vec![a, b, c],
        Ast::Flatten(a) | Ast::Not(a) | Ast::Expref(a) => vec![a],
        Ast::MultiList(items) => items.iter().collect(),
        Ast::MultiHash(items) => items.iter().map(|(_, a)| a).collect(),
        Ast::Current | Ast::Field(_) | Ast::Index(_) | Ast::Slice(..) | Ast::Literal(_) => vec![],
    };
    children.into_iter().try_for_each(check)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn wrong(name: &str, position: usize, expected: &str, got: &Value) -> JmesError {
    JmesError(format!("{name}(): argument {} must be {expected}, got {}", position + 1, type_name(got)))
}

fn number(x: f64) -> Value {
    // Whole results print as integers (`add(10, 10)` is `20`), as JMESPath.Net writes them.
    if x.fract() == 0.0 && x.abs() < 9_007_199_254_740_992.0 {
        Value::from(x as i64)
    } else {
        Number::from_f64(x).map_or(Value::Null, Value::Number)
    }
}

pub(super) fn call(name: &str, args: &[Ast], data: &Value) -> Result<Value, JmesError> {
    // Functions taking an expression reference evaluate it per element; they get the unevaluated AST.
    let expref = |i: usize| match args.get(i) {
        Some(Ast::Expref(inner)) => Ok(inner.as_ref()),
        _ => Err(JmesError(format!("{name}(): argument {} must be an expression reference (&…)", i + 1))),
    };
    if matches!(name, "map" | "max_by" | "min_by" | "sort_by") {
        // map(&expr, list), but sort_by(list, &expr) and the like.
        let (expr_at, list_at) = if name == "map" { (0, 1) } else { (1, 0) };
        let body = expref(expr_at)?;
        let list = match args.get(list_at) {
            Some(list) => eval(list, data)?,
            None => return Err(JmesError(format!("{name}() takes 2 arguments"))),
        };
        let Value::Array(items) = list else { return Err(wrong(name, list_at, "an array", &list)) };
        return by_expression(name, body, items);
    }
    let values: Vec<Value> = args.iter().map(|a| eval(a, data)).collect::<Result<_, _>>()?;
    let num = |i: usize| values[i].as_f64().ok_or_else(|| wrong(name, i, "a number", &values[i]));
    let text = |i: usize| values[i].as_str().ok_or_else(|| wrong(name, i, "a string", &values[i]));
    let arithmetic = |x: f64| {
        if x.is_finite() {
            Ok(number(x))
        } else {
            Err(JmesError(format!("{name}(): mathematic error: overflow")))
        }
    };
    match name {
        "abs" => Ok(number(num(0)?.abs())),
        "ceil" => Ok(number(num(0)?.ceil())),
        "floor" => Ok(number(num(0)?.floor())),
        "avg" | "sum" => {
            let Value::Array(items) = &values[0] else { return Err(wrong(name, 0, "an array of numbers", &values[0])) };
            let nums: Vec<f64> = items
                .iter()
                .map(|v| v.as_f64().ok_or_else(|| wrong(name, 0, "an array of numbers", v)))
                .collect::<Result<_, _>>()?;
            let total: f64 = nums.iter().sum();
            Ok(match (name, nums.len()) {
                ("avg", 0) => Value::Null,
                ("avg", n) => number(total / n as f64),
                _ => number(total),
            })
        }
        "contains" => match &values[0] {
            Value::String(s) => Ok(Value::Bool(values[1].as_str().is_some_and(|needle| s.contains(needle)))),
            Value::Array(items) => Ok(Value::Bool(items.iter().any(|v| json_eq(v, &values[1])))),
            other => Err(wrong(name, 0, "a string or an array", other)),
        },
        "starts_with" => Ok(Value::Bool(text(0)?.starts_with(text(1)?))),
        "ends_with" => Ok(Value::Bool(text(0)?.ends_with(text(1)?))),
        "join" => {
            let glue = text(0)?;
            let Value::Array(items) = &values[1] else { return Err(wrong(name, 1, "an array of strings", &values[1])) };
            let parts: Vec<&str> = items
                .iter()
                .map(|v| v.as_str().ok_or_else(|| wrong(name, 1, "an array of strings", v)))
                .collect::<Result<_, _>>()?;
            Ok(Value::String(parts.join(glue)))
        }
        "keys" | "values" => match &values[0] {
            Value::Object(o) if name == "keys" => Ok(Value::Array(o.keys().cloned().map(Value::String).collect())),
            Value::Object(o) => Ok(Value::Array(o.values().cloned().collect())),
            other => Err(wrong(name, 0, "an object", other)),
        },
        "length" => match &values[0] {
            Value::String(s) => Ok(Value::from(s.chars().count())),
            Value::Array(a) => Ok(Value::from(a.len())),
            Value::Object(o) => Ok(Value::from(o.len())),
            other => Err(wrong(name, 0, "a string, an array or an object", other)),
        },
        "max" | "min" => {
            let Value::Array(items) = &values[0] else { return Err(wrong(name, 0, "an array", &values[0])) };
            extreme(name, items.iter().collect(), items.iter().collect())
        }
        "merge" => {
            let mut out = Map::new();
            for (i, v) in values.iter().enumerate() {
                let Value::Object(o) = v else { return Err(wrong(name, i, "an object", v)) };
                out.extend(o.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            Ok(Value::Object(out))
        }
        "not_null" => Ok(values.into_iter().find(|v| !v.is_null()).unwrap_or(Value::Null)),
        "reverse" => match &values[0] {
            Value::String(s) => Ok(Value::String(s.chars().rev().collect())),
            Value::Array(a) => Ok(Value::Array(a.iter().rev().cloned().collect())),
            other => Err(wrong(name, 0, "a string or an array", other)),
        },
        "sort" => {
            let Value::Array(items) = &values[0] else { return Err(wrong(name, 0, "an array", &values[0])) };
            let mut items = items.clone();
            sort_homogeneous(name, &mut items, |v| v)?;
            Ok(Value::Array(items))
        }
        "to_array" => Ok(match &values[0] {
            Value::Array(_) => values[0].clone(),
            other => Value::Array(vec![other.clone()]),
        }),
        "to_number" => Ok(match &values[0] {
            Value::Number(_) => values[0].clone(),
            Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite()).map_or(Value::Null, number),
            _ => Value::Null,
        }),
        "to_string" => Ok(match &values[0] {
            Value::String(_) => values[0].clone(),
            other => Value::String(other.to_string()),
        }),
        "type" => Ok(Value::String(type_name(&values[0]).to_owned())),
        "add" => arithmetic(num(0)? + num(1)?),
        "subtract" => arithmetic(num(0)? - num(1)?),
        "multiply" => arithmetic(num(0)? * num(1)?),
        "divide" => {
            let divisor = num(1)?;
            if divisor == 0.0 {
                return Err(JmesError("divide(): mathematic error: divide by zero".into()));
            }
            arithmetic(num(0)? / divisor)
        }
        "pow" => arithmetic(num(0)?.powf(num(1)?)),
        "insertString" => {
            let (original, insert, pos) = (text(0)?, text(1)?, num(2)?);
            let chars: Vec<char> = original.chars().collect();
            if pos.fract() != 0.0 || pos < 0.0 || pos > chars.len() as f64 {
                return Err(JmesError(format!("insertString(): position {pos} is out of range of '{original}'")));
            }
            let at = pos as usize;
            let mut out: String = chars[..at].iter().collect();
            out.push_str(insert);
            out.extend(&chars[at..]);
            Ok(Value::String(out))
        }
        "fromUnixTimestamp" | "fromUnixTimestampMs" => {
            let n = num(0)?;
            let whole = (n.fract() == 0.0 && n.abs() < 9.2e18).then_some(n as i64);
            let ts = whole.and_then(|w| {
                if name == "fromUnixTimestamp" {
                    Timestamp::from_unix_seconds(w)
                } else {
                    Timestamp::from_unix_millis(w)
                }
            });
            ts.map(|t| Value::String(t.to_unix_function_format()))
                .ok_or_else(|| JmesError(format!("{name}(): {n} is not a whole number of a representable instant")))
        }
        other => Err(JmesError(format!("unknown function {other}()"))),
    }
}

fn by_expression(name: &str, body: &Ast, items: Vec<Value>) -> Result<Value, JmesError> {
    let keys: Vec<Value> = items.iter().map(|item| eval(body, item)).collect::<Result<_, _>>()?;
    match name {
        "map" => Ok(Value::Array(keys)),
        "max_by" | "min_by" => extreme(name, items.iter().collect(), keys.iter().collect()),
        _ => {
            let mut pairs: Vec<(Value, Value)> = keys.into_iter().zip(items).collect();
            sort_homogeneous(name, &mut pairs, |(k, _)| k)?;
            Ok(Value::Array(pairs.into_iter().map(|(_, v)| v).collect()))
        }
    }
}

fn compare_scalars(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// `max`/`min`/`max_by`/`min_by`: the item whose key is greatest or least; keys must be all numbers or
/// all strings.
fn extreme(name: &str, items: Vec<&Value>, keys: Vec<&Value>) -> Result<Value, JmesError> {
    let mut best: Option<usize> = None;
    for (i, key) in keys.iter().enumerate() {
        if !matches!(key, Value::Number(_) | Value::String(_)) {
            return Err(wrong(name, 0, "an array of numbers or of strings", key));
        }
        best = Some(match best {
            None => i,
            Some(b) => {
                let ord = compare_scalars(key, keys[b]).ok_or_else(|| wrong(name, 0, "of one type", key))?;
                let better = if name.starts_with("max") { ord.is_gt() } else { ord.is_lt() };
                if better {
                    i
                } else {
                    b
                }
            }
        });
    }
    Ok(best.map_or(Value::Null, |b| items[b].clone()))
}

fn sort_homogeneous<T>(name: &str, items: &mut [T], key: impl Fn(&T) -> &Value) -> Result<(), JmesError> {
    let mut failed = None;
    for item in items.iter() {
        let k = key(item);
        let first = key(&items[0]);
        if !matches!(k, Value::Number(_) | Value::String(_)) || compare_scalars(k, first).is_none() {
            failed = Some(k.clone());
        }
    }
    if let Some(bad) = failed {
        return Err(wrong(name, 0, "an array of numbers or of strings", &bad));
    }
    items.sort_by(|a, b| compare_scalars(key(a), key(b)).unwrap_or(Ordering::Equal));
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::jmespath::JmesPath;
    use serde_json::{json, Value};

    fn search(expr: &str, data: Value) -> Result<Value, String> {
        JmesPath::parse(expr).map_err(|e| e.0)?.search(&data).map_err(|e| e.0)
    }

    #[test]
    fn azure_custom_functions_as_documented() {
        let lr = json!({"left": 40, "right": 50});
        assert_eq!(search("add(`10`, `10`)", json!(null)), Ok(json!(20)));
        assert_eq!(search("add(left, right)", lr.clone()), Ok(json!(90)));
        assert_eq!(search("divide(left, right)", lr.clone()).map(|v| v.as_f64()), Ok(Some(0.8)));
        assert_eq!(search("multiply(left, right)", lr.clone()), Ok(json!(2000)));
        assert_eq!(search("subtract(left, right)", lr.clone()), Ok(json!(-10)));
        assert_eq!(search("pow(`100`, `0.5`)", json!(null)), Ok(json!(10)));
        assert!(search("divide(`50`, `0`)", json!(null)).unwrap_err().contains("divide by zero"));
        assert!(search("pow(`40`, `500`)", json!(null)).unwrap_err().contains("overflow"));
        assert!(search("add('a', `1`)", json!(null)).unwrap_err().contains("must be a number"));
        let s = |o: &str, i: &str, p: i64| json!({"original": o, "toInsert": i, "pos": p});
        assert_eq!(search("insertString(original, toInsert, pos)", s("mple", "sa", 0)), Ok(json!("sample")));
        assert_eq!(search("insertString(original, toInsert, pos)", s("suess", "cc", 2)), Ok(json!("success")));
        assert_eq!(
            search("insertString(original, toInsert, length(original))", s("myString", "!!", 0)),
            Ok(json!("myString!!"))
        );
        assert!(search("insertString(original, toInsert, pos)", s("myString", "!!", 100)).is_err());
        assert!(search("insertString(original, toInsert, pos)", s("myString", "!!", -1)).is_err());
        assert_eq!(search("fromUnixTimestamp(unix)", json!({"unix": 1625677200})), Ok(json!("2021-07-07T17:00:00+0")));
        assert_eq!(
            search("fromUnixTimestampMs(unix)", json!({"unix": 1626799080000u64})),
            Ok(json!("2021-07-20T16:38:00+0"))
        );
        assert_eq!(search("fromUnixTimestamp(unix)", json!({"unix": 0})), Ok(json!("1970-01-01T00:00:00+0")));
    }

    #[test]
    fn builtins() {
        let d = json!({"a": [3, 1, 2], "s": ["b", "a"], "p": [{"n": "x", "v": 2}, {"n": "y", "v": 1}], "str": "hello"});
        assert_eq!(search("length(a)", d.clone()), Ok(json!(3)));
        assert_eq!(search("length(str)", d.clone()), Ok(json!(5)));
        assert_eq!(search("sort(a)", d.clone()), Ok(json!([1, 2, 3])));
        assert_eq!(search("join(', ', sort(s))", d.clone()), Ok(json!("a, b")));
        assert_eq!(search("max(a)", d.clone()), Ok(json!(3)));
        assert_eq!(search("sum(a)", d.clone()), Ok(json!(6)));
        assert_eq!(search("avg(a)", d.clone()), Ok(json!(2)));
        assert_eq!(search("min_by(p, &v).n", d.clone()), Ok(json!("y")));
        assert_eq!(search("sort_by(p, &v)[*].n", d.clone()), Ok(json!(["y", "x"])));
        assert_eq!(search("map(&n, p)", d.clone()), Ok(json!(["x", "y"])));
        assert_eq!(search("to_number('78')", d.clone()), Ok(json!(78)));
        assert_eq!(search("to_number('x')", d.clone()), Ok(json!(null)));
        assert_eq!(search("to_string(a[0])", d.clone()), Ok(json!("3")));
        assert_eq!(search("type(p)", d.clone()), Ok(json!("array")));
        assert_eq!(search("contains(keys(@), 'str')", d.clone()), Ok(json!(true)));
        assert_eq!(search("not_null(missing, str)", d.clone()), Ok(json!("hello")));
        assert_eq!(search("merge(`{\"a\":1}`, `{\"b\":2}`)", d.clone()), Ok(json!({"a": 1, "b": 2})));
        assert_eq!(search("reverse(str)", d.clone()), Ok(json!("olleh")));
        assert_eq!(search("abs(`-2.5`)", d.clone()).map(|v| v.as_f64()), Ok(Some(2.5)));
        assert!(search("sort(p)", d).is_err());
    }
}
