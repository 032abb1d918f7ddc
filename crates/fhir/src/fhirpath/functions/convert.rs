//! Conversion functions (`toX()` / `convertsToX()`), math functions, and the precision helpers
//! (`precision()`, `lowBoundary()`, `highBoundary()`, `comparable()`).
//!
//! Every `convertsToX()` is `toX()` followed by "did it produce something", so the two can never disagree.

use super::super::ast::{Expr, Func};
use super::super::decimal::Decimal;
use super::super::eval::{singleton, Collection, Eval, Frame};
use super::super::item::Item;
use super::super::quantity::{calendar_unit, Quantity};
use super::super::temporal::{Precision, Temporal};
use super::super::EvalError;

pub(super) fn call<'a>(
    ev: &Eval<'_, 'a>,
    func: Func,
    input: &[Item<'a>],
    args: &[Expr],
    f: &Frame<'_, 'a>,
) -> Result<Collection<'a>, EvalError> {
    let Some(item) = singleton(input)? else { return Ok(Vec::new()) };
    let item = item.to_system_item();
    let one = |i: Option<Item<'a>>| Ok(i.into_iter().collect());
    let converts = |i: Option<Item<'a>>| Ok(vec![Item::Boolean(i.is_some())]);
    let int_arg = |i: usize| -> Result<Option<i64>, EvalError> {
        match args.get(i) {
            Some(a) => ev.single_integer(&ev.eval(a, f)?),
            None => Ok(None),
        }
    };
    match func {
        Func::ToBoolean => one(to_boolean(&item)),
        Func::ConvertsToBoolean => converts(to_boolean(&item)),
        Func::ToInteger => one(to_integer(&item)),
        Func::ConvertsToInteger => converts(to_integer(&item)),
        Func::ToDecimal => one(to_decimal(&item)),
        Func::ConvertsToDecimal => converts(to_decimal(&item)),
        Func::ToString => one(to_string(&item)),
        Func::ConvertsToString => converts(to_string(&item)),
        Func::ToDate => one(to_date(&item)),
        Func::ConvertsToDate => converts(to_date(&item)),
        Func::ToDateTime => one(to_datetime(&item)),
        Func::ConvertsToDateTime => converts(to_datetime(&item)),
        Func::ToTime => one(to_time(&item)),
        Func::ConvertsToTime => converts(to_time(&item)),
        Func::ToQuantity | Func::ConvertsToQuantity => {
            let unit = match args.first() {
                Some(a) => {
                    let v = ev.eval(a, f)?;
                    singleton(&v)?.and_then(|u| u.as_str().map(str::to_string))
                }
                None => None,
            };
            let q = to_quantity(&item).and_then(|q| match &unit {
                None => Some(q),
                Some(u) if **u == *q.unit => Some(q),
                Some(u) => Quantity::new(Decimal::from_i64(0), u).add(&q, false),
            });
            let q = q.map(Item::Quantity);
            if func == Func::ToQuantity {
                one(q)
            } else {
                converts(q)
            }
        }
        Func::Abs => one(match item {
            Item::Integer(i) => Some(Item::Integer(i.abs())),
            Item::Decimal(d) => Some(Item::Decimal(d.abs())),
            Item::Quantity(q) => Some(Item::Quantity(Quantity { value: q.value.abs(), unit: q.unit })),
            other => return Err(not_a_number(&other)),
        }),
        Func::Ceiling | Func::Floor | Func::Truncate => {
            let d = number(&item)?;
            let scaled = match func {
                Func::Ceiling => d.ceil_to(0),
                Func::Floor => d.floor_to(0),
                _ => Decimal::new(d.trunc(), 0),
            };
            one(Some(Item::Integer(scaled.trunc() as i64)))
        }
        Func::Round => {
            let digits = int_arg(0)?.unwrap_or(0);
            if digits < 0 {
                return Err(EvalError::execution("round() precision must not be negative"));
            }
            one(Some(Item::Decimal(number(&item)?.round(digits as u32))))
        }
        Func::Sqrt | Func::Exp | Func::Ln => {
            let x = number(&item)?.to_f64();
            let y = match func {
                Func::Sqrt => x.sqrt(),
                Func::Exp => x.exp(),
                _ => x.ln(),
            };
            one(Decimal::from_f64(y).map(Item::Decimal))
        }
        Func::Log | Func::Power => {
            let arg = match args.first() {
                Some(a) => ev.eval(a, f)?,
                None => Vec::new(),
            };
            let Some(base) = singleton(&arg)?.map(Item::to_system_item) else { return Ok(Vec::new()) };
            if let (Func::Power, Item::Integer(b), Item::Integer(e)) = (func, &item, &base) {
                if *e >= 0 {
                    return one(u32::try_from(*e).ok().and_then(|e| b.checked_pow(e)).map(Item::Integer));
                }
            }
            let (x, y) = (number(&item)?.to_f64(), number(&base)?.to_f64());
            let r = if func == Func::Log { x.ln() / y.ln() } else { x.powf(y) };
            one(Decimal::from_f64(r).map(Item::Decimal))
        }
        Func::Precision => one(match &item {
            Item::Decimal(d) => Some(Item::Integer(d.scale() as i64)),
            Item::Integer(_) => Some(Item::Integer(0)),
            Item::Date(t) | Item::DateTime(t) => Some(Item::Integer(t.precision_digits(false))),
            Item::Time(t) => Some(Item::Integer(t.precision_digits(true))),
            _ => None,
        }),
        Func::LowBoundary | Func::HighBoundary => {
            let high = func == Func::HighBoundary;
            let precision = int_arg(0)?;
            one(boundary(&item, precision, high))
        }
        Func::Comparable => {
            let other = ev.eval(&args[0], f)?;
            let Some(other) = singleton(&other)?.map(Item::to_system_item) else { return Ok(Vec::new()) };
            match (&item, &other) {
                (Item::Quantity(a), Item::Quantity(b)) => one(Some(Item::Boolean(a.comparable(b)))),
                _ => Err(EvalError::execution("comparable() needs two quantities")),
            }
        }
        other => Err(EvalError::semantic(format!("{other:?}() is not supported"))),
    }
}

fn not_a_number(item: &Item<'_>) -> EvalError {
    EvalError::execution(format!("expected a number, found {item}"))
}

fn number(item: &Item<'_>) -> Result<Decimal, EvalError> {
    match item {
        Item::Integer(i) => Ok(Decimal::from_i64(*i)),
        Item::Decimal(d) => Ok(*d),
        other => Err(not_a_number(other)),
    }
}

fn to_boolean<'a>(item: &Item<'a>) -> Option<Item<'a>> {
    let b = match item {
        Item::Boolean(b) => *b,
        Item::Integer(1) => true,
        Item::Integer(0) => false,
        Item::Decimal(d) if *d == Decimal::from_i64(1) => true,
        Item::Decimal(d) if d.is_zero() => false,
        Item::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "1" | "1.0" => true,
            "false" | "f" | "no" | "n" | "0" | "0.0" => false,
            _ => return None,
        },
        _ => return None,
    };
    Some(Item::Boolean(b))
}

fn to_integer<'a>(item: &Item<'a>) -> Option<Item<'a>> {
    match item {
        Item::Integer(i) => Some(Item::Integer(*i)),
        Item::Boolean(b) => Some(Item::Integer(*b as i64)),
        Item::String(s) => {
            let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok().map(Item::Integer)
        }
        _ => None,
    }
}

fn to_decimal<'a>(item: &Item<'a>) -> Option<Item<'a>> {
    match item {
        Item::Integer(i) => Some(Item::Decimal(Decimal::from_i64(*i))),
        Item::Decimal(d) => Some(Item::Decimal(*d)),
        Item::Boolean(b) => Some(Item::Decimal(Decimal::new(*b as i128 * 10, 1))),
        Item::String(s) if !s.contains(['e', 'E']) => Decimal::parse(s).map(Item::Decimal),
        _ => None,
    }
}

fn to_string<'a>(item: &Item<'a>) -> Option<Item<'a>> {
    match item {
        Item::Node(_) | Item::Type { .. } => None,
        other => Some(Item::String(other.to_string().into())),
    }
}

fn to_date<'a>(item: &Item<'a>) -> Option<Item<'a>> {
    match item {
        Item::Date(t) => Some(Item::Date(*t)),
        Item::DateTime(t) => {
            let mut d = *t;
            d.precision = d.precision.min(Precision::Day);
            d.hour = 0;
            d.minute = 0;
            d.second = 0;
            d.millisecond = 0;
            d.offset_minutes = None;
            Some(Item::Date(d))
        }
        Item::String(s) => Temporal::parse_datetime(s).map(|t| {
            let mut d = t;
            d.precision = d.precision.min(Precision::Day);
            Item::Date(Temporal { hour: 0, minute: 0, second: 0, millisecond: 0, offset_minutes: None, ..d })
        }),
        _ => None,
    }
}

fn to_datetime<'a>(item: &Item<'a>) -> Option<Item<'a>> {
    match item {
        Item::Date(t) | Item::DateTime(t) => Some(Item::DateTime(*t)),
        Item::String(s) => Temporal::parse_datetime(s).map(Item::DateTime),
        _ => None,
    }
}

fn to_time<'a>(item: &Item<'a>) -> Option<Item<'a>> {
    match item {
        Item::Time(t) => Some(Item::Time(*t)),
        Item::String(s) => Temporal::parse_time(s).map(Item::Time),
        _ => None,
    }
}

/// `toQuantity()`: numbers get the unit `'1'`; strings are read as a quantity literal (`'1 day'`,
/// `'5.5 \'mg\''`); a bare UCUM code without quotes (`'1 wk'`) is not a quantity.
pub(crate) fn to_quantity(item: &Item<'_>) -> Option<Quantity> {
    match item {
        Item::Integer(i) => Some(Quantity::new(Decimal::from_i64(*i), "1")),
        Item::Decimal(d) => Some(Quantity::new(*d, "1")),
        Item::Boolean(b) => Some(Quantity::new(Decimal::new(*b as i128 * 10, 1), "1")),
        Item::Quantity(q) => Some(q.clone()),
        Item::String(s) => {
            let s = s.trim();
            let (number, unit) = match s.find(' ') {
                Some(i) => (&s[..i], s[i + 1..].trim()),
                None => (s, ""),
            };
            let value = Decimal::parse(number).filter(|_| !number.contains(['e', 'E']))?;
            let unit = if unit.is_empty() {
                "1"
            } else if let Some(quoted) = unit.strip_prefix('\'').and_then(|u| u.strip_suffix('\'')) {
                quoted
            } else if calendar_unit(unit).is_some() {
                unit
            } else {
                return None;
            };
            Some(Quantity::new(value, unit))
        }
        _ => None,
    }
}

fn precision_from_digits(digits: i64, is_time: bool) -> Option<Precision> {
    let digits = if is_time { digits + 8 } else { digits };
    Some(match digits {
        4 => Precision::Year,
        6 => Precision::Month,
        8 => Precision::Day,
        10 => Precision::Hour,
        12 => Precision::Minute,
        14 => Precision::Second,
        17 => Precision::Millisecond,
        _ => return None,
    })
}

fn boundary<'a>(item: &Item<'a>, precision: Option<i64>, high: bool) -> Option<Item<'a>> {
    let decimal = |d: Decimal| -> Option<Decimal> {
        let p = precision.unwrap_or(8);
        if !(0..=28).contains(&p) {
            return None;
        }
        // A value smaller than the requested precision's unit has no digit there: its boundary is zero.
        if d.abs().cmp_value(&Decimal::new(1, p as u32)) == std::cmp::Ordering::Less && d.scale() > p as u32 {
            return Some(Decimal::new(0, p as u32));
        }
        Some(if high { d.high_boundary().ceil_to(p as u32) } else { d.low_boundary().floor_to(p as u32) })
    };
    match item {
        Item::Integer(i) => decimal(Decimal::from_i64(*i)).map(Item::Decimal),
        Item::Decimal(d) => decimal(*d).map(Item::Decimal),
        Item::Quantity(q) => decimal(q.value).map(|v| Item::Quantity(Quantity { value: v, unit: q.unit.clone() })),
        Item::Date(t) => {
            let p = precision_from_digits(precision.unwrap_or(8), false).filter(|p| *p <= Precision::Day)?;
            Some(Item::Date(t.boundary(p, high, true)))
        }
        Item::DateTime(t) => {
            let p = precision_from_digits(precision.unwrap_or(17), false)?;
            Some(Item::DateTime(t.boundary(p, high, false)))
        }
        Item::Time(t) => {
            let p = precision_from_digits(precision.unwrap_or(9), true)?;
            Some(Item::Time(t.boundary(p, high, true)))
        }
        _ => None,
    }
}
