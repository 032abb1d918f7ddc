//! FHIRPath `Quantity` and the slice of UCUM needed to compare and multiply quantities.
//!
//! Search and invariants compare quantities across units (`4 'g' = 4000 'mg'`, `7 days = 1 'wk'`), so units
//! are reduced to a factor and a vector of base dimensions. A full UCUM implementation (the essence file has
//! some 300 units and a grammar with annotations and parentheses) is more than that needs; the table below
//! holds the metric base units with SI prefixes, time, the common customary units and a few derived ones.
//! A unit outside it is still a valid quantity: it just only compares equal to the very same unit code.

use super::decimal::Decimal;
use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

/// A value with a UCUM unit code, or a calendar duration keyword (`year`, `days`, ...) as written.
#[derive(Clone, Debug)]
pub struct Quantity {
    pub value: Decimal,
    pub unit: Arc<str>,
}

/// The calendar duration keywords of FHIRPath, singular and plural, with their UCUM counterparts.
const CALENDAR: [(&str, &str, &str); 8] = [
    ("year", "years", "a"),
    ("month", "months", "mo"),
    ("week", "weeks", "wk"),
    ("day", "days", "d"),
    ("hour", "hours", "h"),
    ("minute", "minutes", "min"),
    ("second", "seconds", "s"),
    ("millisecond", "milliseconds", "ms"),
];

/// The UCUM code a calendar keyword stands for (`days` → `d`); `None` for anything else.
pub fn calendar_unit(word: &str) -> Option<&'static str> {
    CALENDAR.iter().find(|(one, many, _)| *one == word || *many == word).map(|c| c.2)
}

/// Exponents of m, g, s, rad, K, C, cd, mol.
type Dims = [i8; 8];

struct Canonical {
    factor: Decimal,
    dims: Dims,
}

/// `(code, factor to base units, dims, takes SI prefixes)`.
const UNITS: &[(&str, &str, Dims, bool)] = &[
    ("m", "1", [1, 0, 0, 0, 0, 0, 0, 0], true),
    ("g", "1", [0, 1, 0, 0, 0, 0, 0, 0], true),
    ("s", "1", [0, 0, 1, 0, 0, 0, 0, 0], true),
    ("rad", "1", [0, 0, 0, 1, 0, 0, 0, 0], true),
    ("K", "1", [0, 0, 0, 0, 1, 0, 0, 0], true),
    ("C", "1", [0, 0, 0, 0, 0, 1, 0, 0], true),
    ("cd", "1", [0, 0, 0, 0, 0, 0, 1, 0], true),
    ("mol", "1", [0, 0, 0, 0, 0, 0, 0, 1], true),
    ("L", "0.001", [3, 0, 0, 0, 0, 0, 0, 0], true),
    ("l", "0.001", [3, 0, 0, 0, 0, 0, 0, 0], true),
    ("Hz", "1", [0, 0, -1, 0, 0, 0, 0, 0], true),
    ("N", "1000", [1, 1, -2, 0, 0, 0, 0, 0], true),
    ("Pa", "1000", [-1, 1, -2, 0, 0, 0, 0, 0], true),
    ("J", "1000", [2, 1, -2, 0, 0, 0, 0, 0], true),
    ("W", "1000", [2, 1, -3, 0, 0, 0, 0, 0], true),
    ("bar", "100000000", [-1, 1, -2, 0, 0, 0, 0, 0], true),
    ("min", "60", [0, 0, 1, 0, 0, 0, 0, 0], false),
    ("h", "3600", [0, 0, 1, 0, 0, 0, 0, 0], false),
    ("d", "86400", [0, 0, 1, 0, 0, 0, 0, 0], false),
    ("wk", "604800", [0, 0, 1, 0, 0, 0, 0, 0], false),
    ("mo", "2629800", [0, 0, 1, 0, 0, 0, 0, 0], false),
    ("a", "31557600", [0, 0, 1, 0, 0, 0, 0, 0], false),
    ("[lb_av]", "453.59237", [0, 1, 0, 0, 0, 0, 0, 0], false),
    ("[oz_av]", "28.349523125", [0, 1, 0, 0, 0, 0, 0, 0], false),
    ("[in_i]", "0.0254", [1, 0, 0, 0, 0, 0, 0, 0], false),
    ("[ft_i]", "0.3048", [1, 0, 0, 0, 0, 0, 0, 0], false),
    ("[yd_i]", "0.9144", [1, 0, 0, 0, 0, 0, 0, 0], false),
    ("[mi_i]", "1609.344", [1, 0, 0, 0, 0, 0, 0, 0], false),
    ("mm[Hg]", "133322", [-1, 1, -2, 0, 0, 0, 0, 0], false),
    ("%", "0.01", [0; 8], false),
    ("1", "1", [0; 8], false),
    ("deg", "0.017453292519943", [0, 0, 0, 1, 0, 0, 0, 0], false),
];

const PREFIXES: &[(&str, &str)] = &[
    ("da", "10"),
    ("Y", "1e24"),
    ("Z", "1e21"),
    ("E", "1e18"),
    ("P", "1e15"),
    ("T", "1e12"),
    ("G", "1e9"),
    ("M", "1e6"),
    ("k", "1e3"),
    ("h", "1e2"),
    ("d", "1e-1"),
    ("c", "1e-2"),
    ("m", "1e-3"),
    ("u", "1e-6"),
    ("n", "1e-9"),
    ("p", "1e-12"),
    ("f", "1e-15"),
];

fn atom(code: &str) -> Option<Canonical> {
    if let Some(&(_, factor, dims, _)) = UNITS.iter().find(|u| u.0 == code) {
        return Some(Canonical { factor: Decimal::parse(factor)?, dims });
    }
    for &(prefix, scale) in PREFIXES {
        if let Some(rest) = code.strip_prefix(prefix) {
            if let Some(&(_, factor, dims, true)) = UNITS.iter().find(|u| u.0 == rest) {
                let factor = Decimal::parse(factor)?.checked_mul(&Decimal::parse(scale)?)?;
                return Some(Canonical { factor, dims });
            }
        }
    }
    None
}

/// One component with an optional integer exponent: `cm2`, `s-1`, `10*3`.
fn component(text: &str) -> Option<Canonical> {
    if let Some(exp) = text.strip_prefix("10*").or_else(|| text.strip_prefix("10^")) {
        let e: i32 = exp.parse().ok()?;
        return Some(Canonical { factor: Decimal::parse(&format!("1e{e}"))?, dims: [0; 8] });
    }
    if let Some(c) = atom(text) {
        return Some(c);
    }
    let split = text.rfind(|c: char| !(c.is_ascii_digit() || c == '-' || c == '+')).map(|i| i + 1)?;
    let (base, exp) = text.split_at(split);
    let exp: i32 = exp.parse().ok()?;
    let c = atom(base)?;
    let mut factor = Decimal::from_i64(1);
    for _ in 0..exp.unsigned_abs() {
        factor = if exp > 0 { factor.checked_mul(&c.factor)? } else { factor.checked_div(&c.factor)? };
    }
    Some(Canonical { factor, dims: c.dims.map(|d| d * exp as i8) })
}

/// Parses a UCUM code made of components joined by `.` and `/` (no parentheses, no annotations).
fn canonical(unit: &str) -> Option<Canonical> {
    let unit = calendar_unit(unit).unwrap_or(unit);
    let mut result = Canonical { factor: Decimal::from_i64(1), dims: [0; 8] };
    let mut divide = false;
    let mut start = 0;
    let bytes = unit.as_bytes();
    for i in 0..=bytes.len() {
        let at_sep = i == bytes.len() || ((bytes[i] == b'.' || bytes[i] == b'/') && !unit[..i].ends_with('['));
        if !at_sep {
            continue;
        }
        let c = component(&unit[start..i])?;
        if divide {
            result.factor = result.factor.checked_div(&c.factor)?;
            result.dims.iter_mut().zip(c.dims).for_each(|(a, b)| *a -= b);
        } else {
            result.factor = result.factor.checked_mul(&c.factor)?;
            result.dims.iter_mut().zip(c.dims).for_each(|(a, b)| *a += b);
        }
        if i < bytes.len() {
            divide = bytes[i] == b'/';
        }
        start = i + 1;
    }
    Some(result)
}

fn dims_text(dims: &Dims) -> String {
    const NAMES: [&str; 8] = ["m", "g", "s", "rad", "K", "C", "cd", "mol"];
    let part = |positive: bool| -> Vec<String> {
        dims.iter()
            .zip(NAMES)
            .filter(|(d, _)| if positive { **d > 0 } else { **d < 0 })
            .map(|(d, n)| if d.abs() == 1 { n.to_string() } else { format!("{n}{}", d.abs()) })
            .collect()
    };
    let (num, den) = (part(true), part(false));
    match (num.is_empty(), den.is_empty()) {
        (true, true) => "1".into(),
        (false, true) => num.join("."),
        (true, false) => format!("1/{}", den.join(".")),
        (false, false) => format!("{}/{}", num.join("."), den.join(".")),
    }
}

impl Quantity {
    pub fn new(value: Decimal, unit: &str) -> Quantity {
        Quantity { value, unit: unit.into() }
    }

    /// Whether the unit is a calendar keyword (`week`) rather than a UCUM code (`'wk'`).
    pub fn is_calendar(&self) -> bool {
        calendar_unit(&self.unit).is_some()
    }

    /// `year`/`month` keywords and the UCUM `a`/`mo` differ in length (calendar vs. mean), so `=` between
    /// them is unknown; everything else converts.
    fn calendar_mismatch(&self, other: &Quantity) -> bool {
        let variable = |q: &Quantity| matches!(calendar_unit(&q.unit), Some("a" | "mo")) && q.is_calendar();
        let ucum = |q: &Quantity| !q.is_calendar() && matches!(&*q.unit, "a" | "mo");
        (variable(self) && ucum(other)) || (ucum(self) && variable(other))
    }

    /// Both values in the same (base) units, if the units are commensurable.
    fn comparable_values(&self, other: &Quantity) -> Option<(Decimal, Decimal)> {
        if self.unit == other.unit || calendar_unit(&self.unit).is_some_and(|u| Some(u) == calendar_unit(&other.unit)) {
            return Some((self.value, other.value));
        }
        let (a, b) = (canonical(&self.unit)?, canonical(&other.unit)?);
        if a.dims != b.dims {
            return None;
        }
        Some((self.value.checked_mul(&a.factor)?, other.value.checked_mul(&b.factor)?))
    }

    /// Whether the two units measure the same dimension (`comparable()`).
    pub fn comparable(&self, other: &Quantity) -> bool {
        self.comparable_values(other).is_some()
    }

    /// `=`: `None` when the units cannot be compared.
    pub fn equals(&self, other: &Quantity) -> Option<bool> {
        if self.calendar_mismatch(other) {
            return None;
        }
        let (a, b) = self.comparable_values(other)?;
        Some(a == b)
    }

    /// `~`: values compared at the precision of the less precise one.
    pub fn equivalent(&self, other: &Quantity) -> bool {
        let Some((a, b)) = self.comparable_values(other) else { return false };
        let scale = a.scale().min(b.scale());
        a.round(scale) == b.round(scale)
    }

    pub fn compare(&self, other: &Quantity) -> Option<Ordering> {
        if self.calendar_mismatch(other) {
            return None;
        }
        let (a, b) = self.comparable_values(other)?;
        Some(a.cmp_value(&b))
    }

    /// `+` / `-`: the result is in this quantity's unit.
    pub fn add(&self, other: &Quantity, subtract: bool) -> Option<Quantity> {
        let other_value = if self.unit == other.unit {
            other.value
        } else {
            let (a, b) = (canonical(&self.unit)?, canonical(&other.unit)?);
            if a.dims != b.dims {
                return None;
            }
            other.value.checked_mul(&b.factor)?.checked_div(&a.factor)?
        };
        let value =
            if subtract { self.value.checked_sub(&other_value)? } else { self.value.checked_add(&other_value)? };
        Some(Quantity { value, unit: self.unit.clone() })
    }

    /// `*` / `/`: the result is in base units (`2 'cm' * 2 'm'` → `0.04 'm2'`).
    pub fn mul(&self, other: &Quantity, divide: bool) -> Option<Quantity> {
        let (a, b) = (canonical(&self.unit)?, canonical(&other.unit)?);
        let (x, y) = (self.value.checked_mul(&a.factor)?, other.value.checked_mul(&b.factor)?);
        let mut dims = a.dims;
        dims.iter_mut().zip(b.dims).for_each(|(d, e)| *d = if divide { *d - e } else { *d + e });
        let value = if divide { x.checked_div(&y)? } else { x.checked_mul(&y)? };
        Some(Quantity { value, unit: dims_text(&dims).into() })
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_calendar() {
            write!(f, "{} {}", self.value, self.unit)
        } else {
            write!(f, "{} '{}'", self.value, self.unit)
        }
    }
}
