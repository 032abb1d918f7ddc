//! FHIRPath `Decimal`: an exact base-10 number that remembers how many decimals it was written with.
//!
//! FHIR decimals carry meaning in their trailing zeros (`1.50` says more than `1.5`), and FHIRPath's `~`,
//! `precision()` and `lowBoundary()` depend on that scale. The workspace turns on serde_json's
//! `arbitrary_precision`, so a JSON number keeps its literal text and [`Decimal::parse`] reads it without a
//! trip through `f64`. The representation is a 128-bit mantissa and a scale, which holds the 28-odd
//! significant digits FHIR and FHIRPath need without a big-number dependency; the transcendental functions
//! (`sqrt`, `ln`, `exp`, `power`) go through `f64` and are rounded back to 14 significant digits.

use std::cmp::Ordering;
use std::fmt;

/// `mantissa × 10^-scale`.
#[derive(Clone, Copy, Debug)]
pub struct Decimal {
    mantissa: i128,
    scale: u32,
}

/// The largest scale kept; results with more decimals are rounded to it.
const MAX_SCALE: u32 = 28;
/// Decimals kept by a division that does not terminate earlier.
const DIVISION_SCALE: u32 = 16;

fn pow10(n: u32) -> Option<i128> {
    10i128.checked_pow(n)
}

impl Decimal {
    pub fn new(mantissa: i128, scale: u32) -> Decimal {
        Decimal { mantissa, scale }
    }

    pub fn from_i64(n: i64) -> Decimal {
        Decimal { mantissa: n as i128, scale: 0 }
    }

    /// Parses `-12.340`, `1e3`, `+0.5E-2`; `None` if `s` is not a decimal number.
    pub fn parse(s: &str) -> Option<Decimal> {
        let (body, exponent) = match s.find(['e', 'E']) {
            Some(i) => (&s[..i], s[i + 1..].parse::<i32>().ok()?),
            None => (s, 0),
        };
        let (negative, digits) = match body.as_bytes().first()? {
            b'-' => (true, &body[1..]),
            b'+' => (false, &body[1..]),
            _ => (false, body),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if digits.contains('.') && frac.is_empty() {
            return None;
        }
        let mut mantissa: i128 = 0;
        let mut scale: i64 = 0;
        for b in int.bytes() {
            mantissa = mantissa.checked_mul(10)?.checked_add((b - b'0') as i128)?;
        }
        for b in frac.bytes() {
            match mantissa.checked_mul(10).and_then(|m| m.checked_add((b - b'0') as i128)) {
                Some(m) if scale < MAX_SCALE as i64 => {
                    mantissa = m;
                    scale += 1;
                }
                _ => break, // digits beyond what we keep are dropped
            }
        }
        scale -= exponent as i64;
        while scale < 0 {
            mantissa = mantissa.checked_mul(10)?;
            scale += 1;
        }
        let mut d = Decimal { mantissa: if negative { -mantissa } else { mantissa }, scale: scale as u32 };
        while d.scale > MAX_SCALE {
            d = d.round(MAX_SCALE);
        }
        Some(d)
    }

    /// Number of decimals as written (`1.50` → 2).
    pub fn scale(&self) -> u32 {
        self.scale
    }

    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    pub fn is_negative(&self) -> bool {
        self.mantissa < 0
    }

    /// The same value with `scale` decimals, if that loses nothing and does not overflow.
    fn rescaled(&self, scale: u32) -> Option<i128> {
        if scale >= self.scale {
            self.mantissa.checked_mul(pow10(scale - self.scale)?)
        } else {
            None
        }
    }

    fn aligned(a: &Decimal, b: &Decimal) -> Option<(i128, i128, u32)> {
        let scale = a.scale.max(b.scale);
        Some((a.rescaled(scale)?, b.rescaled(scale)?, scale))
    }

    /// Numeric comparison, ignoring scale (`1.10` equals `1.1`).
    pub fn cmp_value(&self, other: &Decimal) -> Ordering {
        match Decimal::aligned(self, other) {
            Some((a, b, _)) => a.cmp(&b),
            None => self.to_f64().partial_cmp(&other.to_f64()).unwrap_or(Ordering::Equal),
        }
    }

    pub fn checked_add(&self, other: &Decimal) -> Option<Decimal> {
        let (a, b, scale) = Decimal::aligned(self, other)?;
        Some(Decimal { mantissa: a.checked_add(b)?, scale })
    }

    pub fn checked_sub(&self, other: &Decimal) -> Option<Decimal> {
        self.checked_add(&other.neg())
    }

    pub fn checked_mul(&self, other: &Decimal) -> Option<Decimal> {
        let mut d = Decimal { mantissa: self.mantissa.checked_mul(other.mantissa)?, scale: self.scale + other.scale };
        if d.scale > MAX_SCALE {
            d = d.round(MAX_SCALE);
        }
        Some(d)
    }

    /// Division to [`DIVISION_SCALE`] decimals, rounded half away from zero, trailing zeros removed; `None`
    /// for division by zero.
    pub fn checked_div(&self, other: &Decimal) -> Option<Decimal> {
        if other.is_zero() {
            return None;
        }
        // self / other = (ma / mb) × 10^(sb - sa); computed as ma × 10^(S + 1 + sb - sa) / mb, scale S.
        let shift = DIVISION_SCALE as i64 + 1 + other.scale as i64 - self.scale as i64;
        let (num, den) = if shift >= 0 {
            (self.mantissa.checked_mul(pow10(shift as u32)?)?, other.mantissa)
        } else {
            (self.mantissa, other.mantissa.checked_mul(pow10((-shift) as u32)?)?)
        };
        let q = num / den; // one extra digit for rounding
        let rounded = if q % 10 >= 5 {
            q / 10 + 1
        } else if q % 10 <= -5 {
            q / 10 - 1
        } else {
            q / 10
        };
        Some(Decimal { mantissa: rounded, scale: DIVISION_SCALE }.normalized())
    }

    /// Truncated division (`div`) as an integer.
    pub fn div_trunc(&self, other: &Decimal) -> Option<i128> {
        let (a, b, _) = Decimal::aligned(self, other)?;
        if b == 0 {
            None
        } else {
            Some(a / b)
        }
    }

    /// Remainder of truncated division (`mod`), with the sign of the dividend.
    pub fn rem(&self, other: &Decimal) -> Option<Decimal> {
        let (a, b, scale) = Decimal::aligned(self, other)?;
        if b == 0 {
            None
        } else {
            Some(Decimal { mantissa: a % b, scale })
        }
    }

    pub fn neg(&self) -> Decimal {
        Decimal { mantissa: -self.mantissa, scale: self.scale }
    }

    pub fn abs(&self) -> Decimal {
        Decimal { mantissa: self.mantissa.abs(), scale: self.scale }
    }

    /// Trailing zeros removed (`2.500` → `2.5`, `4.0` → `4`).
    pub fn normalized(&self) -> Decimal {
        let mut d = *self;
        while d.scale > 0 && d.mantissa % 10 == 0 {
            d.mantissa /= 10;
            d.scale -= 1;
        }
        d
    }

    /// Rounded half away from zero to `digits` decimals (never adds decimals).
    pub fn round(&self, digits: u32) -> Decimal {
        if digits >= self.scale {
            return *self;
        }
        let div = pow10(self.scale - digits).unwrap_or(i128::MAX);
        let (q, r) = (self.mantissa / div, self.mantissa % div);
        let half = div / 2;
        let q = if r >= half && r > 0 {
            q + 1
        } else if r <= -half && r < 0 {
            q - 1
        } else {
            q
        };
        Decimal { mantissa: q, scale: digits }
    }

    /// Rounded toward negative infinity to `digits` decimals; adds zero decimals if `digits` is larger.
    pub fn floor_to(&self, digits: u32) -> Decimal {
        self.with_scale(digits, false)
    }

    /// Rounded toward positive infinity to `digits` decimals; adds zero decimals if `digits` is larger.
    pub fn ceil_to(&self, digits: u32) -> Decimal {
        self.with_scale(digits, true)
    }

    fn with_scale(&self, digits: u32, up: bool) -> Decimal {
        if digits >= self.scale {
            return match self.rescaled(digits) {
                Some(m) => Decimal { mantissa: m, scale: digits },
                None => *self,
            };
        }
        let div = pow10(self.scale - digits).unwrap_or(i128::MAX);
        let (mut q, r) = (self.mantissa / div, self.mantissa % div);
        if up && r > 0 {
            q += 1;
        } else if !up && r < 0 {
            q -= 1;
        }
        Decimal { mantissa: q, scale: digits }
    }

    /// Integer part, toward zero.
    pub fn trunc(&self) -> i128 {
        self.mantissa / pow10(self.scale).unwrap_or(i128::MAX)
    }

    /// Whether the value has no fractional part (`2.0` yes).
    pub fn is_integral(&self) -> bool {
        self.mantissa % pow10(self.scale).unwrap_or(i128::MAX) == 0
    }

    pub fn to_f64(&self) -> f64 {
        self.mantissa as f64 / 10f64.powi(self.scale as i32)
    }

    /// `x` rounded to 14 significant digits, trailing zeros removed; `None` for NaN and infinities.
    pub fn from_f64(x: f64) -> Option<Decimal> {
        if !x.is_finite() {
            return None;
        }
        Some(Decimal::parse(&format!("{x:.13e}"))?.normalized())
    }

    /// Half-way between this value and the next one down at its own precision (`1.587` → `1.5865`).
    pub fn low_boundary(&self) -> Decimal {
        Decimal { mantissa: self.mantissa * 10 - 5, scale: self.scale + 1 }
    }

    /// Half-way between this value and the next one up at its own precision (`1.587` → `1.5875`).
    pub fn high_boundary(&self) -> Decimal {
        Decimal { mantissa: self.mantissa * 10 + 5, scale: self.scale + 1 }
    }
}

impl PartialEq for Decimal {
    /// Numeric equality: `1.10 == 1.1`.
    fn eq(&self, other: &Decimal) -> bool {
        self.cmp_value(other) == Ordering::Equal
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.mantissa.unsigned_abs().to_string();
        let sign = if self.mantissa < 0 { "-" } else { "" };
        let scale = self.scale as usize;
        if scale == 0 {
            write!(f, "{sign}{digits}")
        } else if digits.len() > scale {
            let (int, frac) = digits.split_at(digits.len() - scale);
            write!(f, "{sign}{int}.{frac}")
        } else {
            write!(f, "{sign}0.{}{digits}", "0".repeat(scale - digits.len()))
        }
    }
}
