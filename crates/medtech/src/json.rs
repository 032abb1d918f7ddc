//! JSON helpers that reproduce how Azure's .NET code (Newtonsoft.Json) reads values.
//!
//! - Mapping property names match case-insensitively, as Newtonsoft binds them to C# properties.
//! - A value extracted from a device message becomes a string the way `JToken.Value<string>()` makes
//!   it: strings as they are, integers as written, floating-point numbers as .NET doubles formatted
//!   with 15 significant digits (Azure's sample turns `30.6 / 1.0936` into `"27.9809802487198"`), and
//!   booleans as `True`/`False`.

use serde_json::{Map, Value};

/// The property `name` of `object`, matching the exact spelling first and then ignoring ASCII case.
pub(crate) fn get_ci<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).or_else(|| object.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

/// Why a token could not become a string value.
pub(crate) enum ScalarError {
    Container(&'static str),
}

/// The string Azure makes of a JSON token; `None` for JSON `null`.
pub(crate) fn token_to_string(value: &Value) -> Result<Option<String>, ScalarError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Bool(true) => Ok(Some("True".to_owned())),
        Value::Bool(false) => Ok(Some("False".to_owned())),
        Value::Number(n) => Ok(Some(number_to_string(n))),
        Value::Array(_) => Err(ScalarError::Container("an array")),
        Value::Object(_) => Err(ScalarError::Container("an object")),
    }
}

/// Integers keep their digits (Newtonsoft reads them as `long` or `BigInteger`); other numbers are
/// doubles, which .NET formats with up to 15 significant digits.
pub(crate) fn number_to_string(n: &serde_json::Number) -> String {
    let text = n.to_string();
    if !text.contains(['.', 'e', 'E']) {
        return text;
    }
    match text.parse::<f64>() {
        Ok(x) => format_g15(x),
        Err(_) => text,
    }
}

/// .NET's `double.ToString("G15")`: at most 15 significant digits, no trailing zeros, scientific
/// notation (`1E+15`, `1.5E-06`) when the exponent is 15 or more or below -5.
pub(crate) fn format_g15(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return if x.is_nan() {
            "NaN".to_owned()
        } else if x.is_infinite() {
            if x > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
        } else {
            "0".to_owned()
        };
    }
    let sci = format!("{:.14e}", x.abs());
    let Some((mantissa, exponent)) = sci.split_once('e') else { return x.to_string() };
    let Ok(exponent) = exponent.parse::<i32>() else { return x.to_string() };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let sign = if x < 0.0 { "-" } else { "" };
    if !(-5..15).contains(&exponent) {
        let (first, rest) = digits.split_at(1);
        let fraction = if rest.is_empty() { String::new() } else { format!(".{rest}") };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        return format!("{sign}{first}{fraction}E{exp_sign}{:02}", exponent.abs());
    }
    let point = exponent + 1; // digits before the decimal point
    let body = if point <= 0 {
        format!("0.{}{}", "0".repeat(point.unsigned_abs() as usize), digits)
    } else if point as usize >= digits.len() {
        format!("{}{}", digits, "0".repeat(point as usize - digits.len()))
    } else {
        let (int, frac) = digits.split_at(point as usize);
        format!("{int}.{frac}")
    };
    format!("{sign}{body}")
}

/// Whether `text` is a decimal as .NET's `decimal.Parse` (invariant culture) and FHIR's `decimal`
/// both read it: optional sign, digits, optional fraction; no exponent, no thousands separators.
/// Returns the text FHIR will hold (trimmed, without a leading `+`).
pub(crate) fn as_decimal(text: &str) -> Option<&str> {
    let t = text.trim();
    let unsigned = t.strip_prefix('+').unwrap_or(t);
    let body = unsigned.strip_prefix('-').unwrap_or(unsigned);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let ok = !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && (!body.contains('.') || (!frac.is_empty() && frac.bytes().all(|b| b.is_ascii_digit())));
    ok.then_some(unsigned)
}

/// A JSON number holding exactly the decimal text given (the workspace enables `arbitrary_precision`,
/// so `98.60` stays `98.60`, as a .NET `decimal` keeps it).
pub(crate) fn decimal_number(text: &str) -> Option<Value> {
    let text = as_decimal(text)?;
    // FHIR forbids leading zeros other than a single `0` before the point; normalize `007` to `7`.
    let (sign, digits) = text.strip_prefix('-').map_or(("", text), |d| ("-", d));
    let (int, frac) = digits.split_once('.').map_or((digits, None), |(i, f)| (i, Some(f)));
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let normalized = match frac {
        Some(f) => format!("{sign}{int}.{f}"),
        None => format!("{sign}{int}"),
    };
    serde_json::from_str::<serde_json::Number>(&normalized).ok().map(Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn doubles_get_fifteen_significant_digits_as_in_azures_sample() {
        assert_eq!(format_g15(30.6 / 1.0936), "27.9809802487198");
        assert_eq!(format_g15(32.1 / 1.0936), "29.3525969275786");
        assert_eq!(format_g15(72.0 * 0.0254), "1.8288");
        assert_eq!(format_g15(0.6214 * 1609.344), "1000.0463616");
        assert_eq!(format_g15(20.0), "20");
        assert_eq!(format_g15(-0.5), "-0.5");
        assert_eq!(format_g15(1e15), "1E+15");
        assert_eq!(format_g15(0.0000015), "1.5E-06");
        assert_eq!(format_g15(0.0001), "0.0001");
    }

    #[test]
    fn tokens_become_strings_as_newtonsoft_makes_them() {
        let s = |v: Value| token_to_string(&v).ok().flatten();
        assert_eq!(s(json!("78")), Some("78".to_owned()));
        assert_eq!(s(json!(78)), Some("78".to_owned()));
        assert_eq!(s(serde_json::from_str("98.60").unwrap()), Some("98.6".to_owned()));
        assert_eq!(s(json!(true)), Some("True".to_owned()));
        assert_eq!(s(json!(null)), None);
        assert!(token_to_string(&json!({"a": 1})).is_err());
    }

    #[test]
    fn decimals_keep_their_text() {
        assert_eq!(decimal_number("98.60").unwrap().to_string(), "98.60");
        assert_eq!(decimal_number(" +007 ").unwrap().to_string(), "7");
        assert!(decimal_number("1e3").is_none());
        assert!(decimal_number("12.").is_none());
        assert!(decimal_number("abc").is_none());
    }
}
