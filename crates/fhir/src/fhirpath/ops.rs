//! FHIRPath operators on single values: equality, equivalence, ordering and arithmetic.
//!
//! Equality (`=`) is three-valued: date/times of different precision and quantities of incomparable units
//! give "unknown" (an empty result), which is why these functions return `Option`. Equivalence (`~`) never
//! does: unknown becomes `false`, strings compare case- and whitespace-insensitively, and decimals compare at
//! the precision of the less precise side. Integers meet decimals as decimals, dates meet date-times as
//! date-times; a string compared with a date/time is read as one (untyped JSON has only strings).

use super::decimal::Decimal;
use super::item::{Item, SystemValue};
use super::quantity::{calendar_unit, Quantity};
use super::temporal::{Precision, Temporal};
use super::EvalError;
use serde_json::Value;
use std::cmp::Ordering;

/// A string value read as the temporal type of `like`, for comparing untyped strings with dates.
fn parse_like(s: &str, like: &SystemValue<'_>) -> Option<SystemValue<'static>> {
    match like {
        SystemValue::Date(_) | SystemValue::DateTime(_) => {
            let t = Temporal::parse_datetime(s)?;
            Some(if t.has_time() { SystemValue::DateTime(t) } else { SystemValue::Date(t) })
        }
        SystemValue::Time(_) => Temporal::parse_time(s).map(SystemValue::Time),
        _ => None,
    }
}

/// `=` on two items: `None` when the answer is unknown.
pub(crate) fn equals(a: &Item<'_>, b: &Item<'_>) -> Option<bool> {
    if let (Item::Node(x), Item::Node(y)) = (a, b) {
        if !x.is_primitive() || !y.is_primitive() {
            return Some(x.value == y.value);
        }
    }
    let (x, y) = (a.system()?, b.system()?);
    values_equal(&x, &y)
}

fn values_equal(x: &SystemValue<'_>, y: &SystemValue<'_>) -> Option<bool> {
    use SystemValue as S;
    match (x, y) {
        (S::Boolean(a), S::Boolean(b)) => Some(a == b),
        (S::Integer(a), S::Integer(b)) => Some(a == b),
        (S::Integer(a), S::Decimal(b)) | (S::Decimal(b), S::Integer(a)) => Some(Decimal::from_i64(*a) == *b),
        (S::Decimal(a), S::Decimal(b)) => Some(a == b),
        (S::String(a), S::String(b)) => Some(a == b),
        (S::Date(a) | S::DateTime(a), S::Date(b) | S::DateTime(b)) | (S::Time(a), S::Time(b)) => {
            a.compare(b).map(|o| o == Ordering::Equal)
        }
        (S::Quantity(a), S::Quantity(b)) => a.equals(b),
        (S::String(s), other @ (S::Date(_) | S::DateTime(_) | S::Time(_)))
        | (other @ (S::Date(_) | S::DateTime(_) | S::Time(_)), S::String(s)) => match parse_like(s, other) {
            Some(parsed) => values_equal(&parsed, other),
            None => Some(false),
        },
        _ => Some(false),
    }
}

/// `~` on two items.
pub(crate) fn equivalent(a: &Item<'_>, b: &Item<'_>) -> bool {
    if let (Item::Node(x), Item::Node(y)) = (a, b) {
        if !x.is_primitive() || !y.is_primitive() {
            return json_equivalent(x.value, y.value);
        }
    }
    let (Some(x), Some(y)) = (a.system(), b.system()) else { return false };
    use SystemValue as S;
    match (&x, &y) {
        (S::String(a), S::String(b)) => normalize(a) == normalize(b),
        (S::Integer(_) | S::Decimal(_), S::Integer(_) | S::Decimal(_)) => {
            let (a, b) = (to_decimal(&x).unwrap(), to_decimal(&y).unwrap());
            let scale = a.scale().min(b.scale());
            a.round(scale) == b.round(scale)
        }
        (S::Date(a) | S::DateTime(a), S::Date(b) | S::DateTime(b)) | (S::Time(a), S::Time(b)) => {
            a.compare(b) == Some(Ordering::Equal)
                && a.precision.min(Precision::Second) == b.precision.min(Precision::Second)
        }
        (S::Quantity(a), S::Quantity(b)) => a.equivalent(b),
        _ => values_equal(&x, &y) == Some(true),
    }
}

fn json_equivalent(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys = |o: &serde_json::Map<String, Value>| o.keys().filter(|k| *k != "id").count();
            keys(x) == keys(y)
                && x.iter().filter(|(k, _)| *k != "id").all(|(k, v)| y.get(k).is_some_and(|w| json_equivalent(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(v, w)| json_equivalent(v, w)),
        (Value::String(x), Value::String(y)) => normalize(x) == normalize(y),
        _ => a == b,
    }
}

fn normalize(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

fn to_decimal(v: &SystemValue<'_>) -> Option<Decimal> {
    match v {
        SystemValue::Integer(i) => Some(Decimal::from_i64(*i)),
        SystemValue::Decimal(d) => Some(*d),
        _ => None,
    }
}

/// `<`, `>`, ... ordering: `Ok(None)` when unknown (date precision), an error for types that do not order
/// against each other.
pub(crate) fn compare(a: &Item<'_>, b: &Item<'_>) -> Result<Option<Ordering>, EvalError> {
    let (Some(x), Some(y)) = (a.system(), b.system()) else { return Ok(None) };
    use SystemValue as S;
    Ok(match (&x, &y) {
        (S::Integer(a), S::Integer(b)) => Some(a.cmp(b)),
        (S::Integer(_) | S::Decimal(_), S::Integer(_) | S::Decimal(_)) => {
            Some(to_decimal(&x).unwrap().cmp_value(&to_decimal(&y).unwrap()))
        }
        (S::String(a), S::String(b)) => Some(a.cmp(b)),
        (S::Date(a) | S::DateTime(a), S::Date(b) | S::DateTime(b)) | (S::Time(a), S::Time(b)) => a.compare(b),
        (S::Quantity(a), S::Quantity(b)) => a.compare(b),
        (S::String(s), other @ (S::Date(_) | S::DateTime(_) | S::Time(_))) => match parse_like(s, other) {
            Some(p) => return compare_values(&p, other),
            None => return Err(EvalError::execution(format!("cannot compare '{s}' with a date/time"))),
        },
        (other @ (S::Date(_) | S::DateTime(_) | S::Time(_)), S::String(s)) => match parse_like(s, other) {
            Some(p) => return compare_values(other, &p),
            None => return Err(EvalError::execution(format!("cannot compare '{s}' with a date/time"))),
        },
        _ => return Err(EvalError::execution(format!("cannot compare {a} with {b}"))),
    })
}

fn compare_values(x: &SystemValue<'_>, y: &SystemValue<'_>) -> Result<Option<Ordering>, EvalError> {
    match (x, y) {
        (
            SystemValue::Date(a) | SystemValue::DateTime(a) | SystemValue::Time(a),
            SystemValue::Date(b) | SystemValue::DateTime(b) | SystemValue::Time(b),
        ) => Ok(a.compare(b)),
        _ => Ok(None),
    }
}

/// Arithmetic operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    IntDiv,
    Mod,
}

/// `a op b` on single values; `Ok(None)` for results the spec defines as empty (division by zero).
pub(crate) fn arithmetic<'a>(op: Arith, a: &Item<'a>, b: &Item<'a>) -> Result<Option<Item<'a>>, EvalError> {
    let (Some(x), Some(y)) = (a.system(), b.system()) else { return Ok(None) };
    use SystemValue as S;
    let mismatch = || EvalError::execution(format!("cannot apply {op:?} to {a} and {b}"));
    Ok(match (&x, &y) {
        (S::Integer(p), S::Integer(q)) => match op {
            Arith::Add => p.checked_add(*q).map(Item::Integer),
            Arith::Sub => p.checked_sub(*q).map(Item::Integer),
            Arith::Mul => p.checked_mul(*q).map(Item::Integer),
            Arith::Div => Decimal::from_i64(*p).checked_div(&Decimal::from_i64(*q)).map(Item::Decimal),
            Arith::IntDiv => p.checked_div(*q).map(Item::Integer),
            Arith::Mod => p.checked_rem(*q).map(Item::Integer),
        },
        (S::Integer(_) | S::Decimal(_), S::Integer(_) | S::Decimal(_)) => {
            let (p, q) = (to_decimal(&x).unwrap(), to_decimal(&y).unwrap());
            match op {
                Arith::Add => p.checked_add(&q).map(Item::Decimal),
                Arith::Sub => p.checked_sub(&q).map(Item::Decimal),
                Arith::Mul => p.checked_mul(&q).map(Item::Decimal),
                Arith::Div => p.checked_div(&q).map(Item::Decimal),
                Arith::IntDiv => p.div_trunc(&q).map(|i| Item::Integer(i as i64)),
                Arith::Mod => p.rem(&q).map(Item::Decimal),
            }
        }
        (S::String(p), S::String(q)) if op == Arith::Add => Some(Item::String(format!("{p}{q}").into())),
        (S::Quantity(p), S::Quantity(q)) => match op {
            Arith::Add | Arith::Sub => Some(Item::Quantity(p.add(q, op == Arith::Sub).ok_or_else(mismatch)?)),
            Arith::Mul | Arith::Div => {
                if op == Arith::Div && q.value.is_zero() {
                    None
                } else {
                    Some(Item::Quantity(p.mul(q, op == Arith::Div).ok_or_else(mismatch)?))
                }
            }
            _ => return Err(mismatch()),
        },
        (S::Quantity(p), S::Integer(_) | S::Decimal(_)) | (S::Integer(_) | S::Decimal(_), S::Quantity(p))
            if matches!(op, Arith::Mul | Arith::Div) =>
        {
            let n = to_decimal(&x).or(to_decimal(&y)).unwrap();
            let value = if op == Arith::Mul { p.value.checked_mul(&n) } else { p.value.checked_div(&n) };
            value.map(|v| Item::Quantity(Quantity { value: v, unit: p.unit.clone() }))
        }
        (S::Date(t), S::Quantity(q)) | (S::DateTime(t), S::Quantity(q)) if matches!(op, Arith::Add | Arith::Sub) => {
            let shifted = shift(t, q, op == Arith::Sub)?;
            Some(if matches!(x, S::Date(_)) { Item::Date(shifted) } else { Item::DateTime(shifted) })
        }
        (S::Time(t), S::Quantity(q)) if matches!(op, Arith::Add | Arith::Sub) => {
            Some(Item::Time(shift(t, q, op == Arith::Sub)?))
        }
        _ => return Err(mismatch()),
    })
}

/// Date/time plus a duration: calendar keywords or the UCUM time units from `d` down; the value is truncated to
/// a whole number of its unit, and units finer than the value's precision do nothing.
fn shift(t: &Temporal, q: &Quantity, subtract: bool) -> Result<Temporal, EvalError> {
    let unit = match calendar_unit(&q.unit) {
        Some(u) => u,
        None => match &*q.unit {
            "a" | "mo" => {
                return Err(EvalError::execution(format!("'{}' has no fixed length: use a calendar duration", q.unit)))
            }
            u @ ("wk" | "d" | "h" | "min" | "s" | "ms") => u,
            other => return Err(EvalError::execution(format!("cannot add '{other}' to a date/time"))),
        },
    };
    let mut n = q.value.trunc() as i64;
    if subtract {
        n = -n;
    }
    let p = t.precision;
    Ok(match unit {
        "a" => t.add_months(n * 12),
        "mo" => t.add_months(n),
        "wk" if p >= Precision::Day => t.add_millis(n * 7 * 86_400_000),
        "d" if p >= Precision::Day => t.add_millis(n * 86_400_000),
        "h" if p >= Precision::Hour => t.add_millis(n * 3_600_000),
        "min" if p >= Precision::Minute => t.add_millis(n * 60_000),
        "s" if p >= Precision::Second => t.add_millis(n * 1000),
        "ms" if p >= Precision::Millisecond => t.add_millis(n),
        _ => *t,
    })
}
