//! Search values by parameter type: the text after `=` (one of its comma-separated alternatives)
//! to a [`Value`] the store compares index rows with.
//!
//! Every malformed value is a `400` with the parameter named: a search that silently matched
//! nothing, or everything, would be worse than an error.

use fhir::SearchParamType;
use fhirside_store::{
    DateRange, NumberRange, Prefix, QuantityValue, ReferenceValue, StringMatch, TokenSystem, TokenValue, UriMatch,
    Value,
};

use crate::error::FhirError;

const UCUM: &str = "http://unitsofmeasure.org";

fn invalid(name: &str, value: &str, what: &str) -> FhirError {
    FhirError::BadRequest {
        code: "invalid",
        diagnostics: format!("The value '{value}' of '{name}' is not {what}."),
        expression: None,
    }
}

/// Splits on unescaped `separator`, removing the escapes (`\,` `\$` `\|` `\\`) from each part.
pub(super) fn split_escaped(text: &str, separator: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next @ (',' | '$' | '|' | '\\')) if next != separator => {
                    // An escape of another separator stays for the next split to see.
                    parts.last_mut().unwrap().push('\\');
                    parts.last_mut().unwrap().push(next);
                }
                Some(next) => parts.last_mut().unwrap().push(next),
                None => parts.last_mut().unwrap().push('\\'),
            },
            c if c == separator => parts.push(String::new()),
            c => parts.last_mut().unwrap().push(c),
        }
    }
    parts
}

/// Removes the remaining escapes of a value's last part.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next().unwrap_or('\\')),
            c => out.push(c),
        }
    }
    out
}

/// A value of a parameter of type `kind` (composite and special values are parsed by the caller).
pub(super) fn parse(
    name: &str,
    kind: SearchParamType,
    targets: &[String],
    value: &str,
    matching: StringMatch,
) -> Result<Value, FhirError> {
    Ok(match kind {
        SearchParamType::Token => Value::Token(token(value)),
        SearchParamType::Date => Value::Date(date(name, value)?),
        SearchParamType::Reference => Value::Reference(reference(name, value, None, targets)?),
        SearchParamType::String => string(value, matching),
        SearchParamType::Number => Value::Number(number(name, value)?),
        SearchParamType::Quantity => Value::Quantity(quantity(name, value)?),
        SearchParamType::Uri => Value::Uri { value: unescape(value), matching: UriMatch::Exact },
        SearchParamType::Composite | SearchParamType::Special => {
            return Err(invalid(name, value, "a value of a simple parameter type"))
        }
    })
}

pub(super) fn string(value: &str, matching: StringMatch) -> Value {
    let value = unescape(value);
    let value = if matching == StringMatch::Exact { value } else { fhir::index::normalize(&value) };
    Value::String { value, matching }
}

/// `code`, `system|code`, `|code` or `system|`.
pub(super) fn token(value: &str) -> TokenValue {
    let parts = split_escaped(value, '|');
    match parts.as_slice() {
        [code] => TokenValue { system: TokenSystem::Any, code: Some(unescape(code)) },
        [system, code @ ..] => {
            let code = unescape(&code.join("|"));
            let system = if system.is_empty() { TokenSystem::None } else { TokenSystem::Is(unescape(system)) };
            TokenValue { system, code: (!code.is_empty()).then_some(code) }
        }
        [] => TokenValue { system: TokenSystem::Any, code: None },
    }
}

/// The prefix of a date, number or quantity value, and the rest.
fn prefix(value: &str) -> (Prefix, &str) {
    const PREFIXES: [(&str, Prefix); 9] = [
        ("eq", Prefix::Eq),
        ("ne", Prefix::Ne),
        ("gt", Prefix::Gt),
        ("lt", Prefix::Lt),
        ("ge", Prefix::Ge),
        ("le", Prefix::Le),
        ("sa", Prefix::Sa),
        ("eb", Prefix::Eb),
        ("ap", Prefix::Ap),
    ];
    PREFIXES
        .iter()
        .find_map(|(p, prefix)| value.strip_prefix(p).map(|rest| (*prefix, rest)))
        .unwrap_or((Prefix::Eq, value))
}

/// A date search value with an optional prefix, as the range its precision denotes; `ap` widens
/// the range by a tenth of its distance from now (the spec's suggestion).
pub(crate) fn date(name: &str, value: &str) -> Result<DateRange, FhirError> {
    let (prefix, rest) = prefix(value);
    let (mut low, mut high) = fhir::datetime::parse_search_datetime(rest)
        .map(|dt| dt.range_micros())
        .map_err(|_| invalid(name, value, "a valid date"))?;
    if prefix == Prefix::Ap {
        let gap = (fhir::datetime::now_micros() - low).unsigned_abs() / 10;
        let gap = i64::try_from(gap).unwrap_or(i64::MAX);
        low = low.saturating_sub(gap);
        high = high.saturating_add(gap);
    }
    Ok(DateRange { prefix, low, high })
}

/// A number with an optional prefix: its value and the range its precision implies (`100` is
/// `[99.5, 100.5)`, `1e2` is `[50, 150)`); `ap` widens that to at least 10 % either side.
pub(super) fn number(name: &str, value: &str) -> Result<NumberRange, FhirError> {
    let (prefix, rest) = prefix(value);
    number_with(prefix, rest).ok_or_else(|| invalid(name, value, "a valid number"))
}

fn number_with(prefix: Prefix, text: &str) -> Option<NumberRange> {
    let valid = !text.is_empty()
        && text.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
        && text.chars().any(|c| c.is_ascii_digit());
    if !valid {
        return None;
    }
    let value: f64 = text.parse().ok().filter(|v: &f64| v.is_finite())?;
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (text, 0),
    };
    let decimals = mantissa.split_once('.').map_or(0, |(_, fraction)| fraction.len() as i32);
    let half = 0.5 * 10f64.powi(exponent - decimals);
    let (low, high) = if prefix == Prefix::Ap {
        let spread = (value.abs() * 0.1).max(half);
        (value - spread, value + spread)
    } else {
        (value - half, value + half)
    };
    Some(NumberRange { prefix, value, low, high })
}

/// `[prefix]number|system|code`, `[prefix]number||code` or `[prefix]number`.
pub(super) fn quantity(name: &str, value: &str) -> Result<QuantityValue, FhirError> {
    let parts = split_escaped(value, '|');
    let (number_text, system, code) = match parts.as_slice() {
        [n] => (n.as_str(), None, None),
        [n, s, c] => {
            (n.as_str(), Some(s.as_str()).filter(|s| !s.is_empty()), Some(c.as_str()).filter(|c| !c.is_empty()))
        }
        _ => return Err(invalid(name, value, "a quantity (number|system|code)")),
    };
    let number = self::number(name, number_text)?;
    let canonical = match (system, code) {
        (Some(UCUM), Some(code)) => {
            let convert = |v: f64| fhir::ucum::canonical(v, code).map(|c| (c.unit, c.value));
            match (convert(number.value), convert(number.low), convert(number.high)) {
                (Some((unit, value)), Some((_, low)), Some((_, high))) => {
                    Some((unit, NumberRange { prefix: number.prefix, value, low, high }))
                }
                _ => None,
            }
        }
        _ => None,
    };
    Ok(QuantityValue { number, system: system.map(unescape), code: code.map(unescape), canonical })
}

/// A reference search value: `Type/id`, `id` (typed by the modifier, or by the parameter when it has
/// a single target type), or an absolute URL (local when it is on this server's base).
pub(super) fn reference(
    name: &str,
    value: &str,
    typed: Option<&str>,
    targets: &[String],
) -> Result<ReferenceValue, FhirError> {
    let value = unescape(value);
    let base = crate::context::base_url();
    let local = value.strip_prefix(&base).map(|rest| rest.trim_start_matches('/')).unwrap_or(&value);
    if local.contains("://") || local.starts_with("urn:") {
        return Ok(ReferenceValue::Url(value.clone()));
    }
    let segments: Vec<&str> = local.split('/').collect();
    let (target_type, id) = match segments.as_slice() {
        [t, id] | [t, id, "_history", _] => (Some((*t).to_owned()), *id),
        [id] => (typed.map(str::to_owned).or_else(|| (targets.len() == 1).then(|| targets[0].clone())), *id),
        _ => (None, ""),
    };
    if id.is_empty() || !fhir::is_valid_id(id) || typed.is_some_and(|t| target_type.as_deref() != Some(t)) {
        return Err(invalid(name, &value, "a valid reference (Type/id, id or URL)"));
    }
    if target_type.as_deref().is_some_and(|t| !fhir::definitions().is_resource_type(t)) {
        return Err(invalid(name, &value, "a reference to a known resource type"));
    }
    Ok(ReferenceValue::Local { target_type, id: id.to_owned() })
}

/// `near=latitude|longitude|distance|units`: the box around the point that the distance spans, as
/// ranges on the two coordinates (a degree of latitude is 111.2 km; of longitude, that times the
/// cosine of the latitude). Units are km (the default) or `[mi_i]`, `m`.
pub(super) fn near(name: &str, value: &str) -> Result<Vec<Value>, FhirError> {
    let parts: Vec<&str> = value.split('|').collect();
    let bad = || invalid(name, value, "latitude|longitude|distance|units");
    let number = |i: usize| parts.get(i).and_then(|p| p.parse::<f64>().ok()).filter(|v| v.is_finite());
    let (Some(latitude), Some(longitude)) = (number(0), number(1)) else { return Err(bad()) };
    let distance = match parts.get(2) {
        None | Some(&"") => 1.0,
        Some(_) => number(2).ok_or_else(bad)?,
    };
    let km = match parts.get(3).copied().unwrap_or("km") {
        "km" | "" => distance,
        "m" => distance / 1000.0,
        "[mi_i]" | "mi" => distance * 1.609_344,
        _ => return Err(bad()),
    };
    let lat_span = km / 111.2;
    let long_span = km / (111.2 * latitude.to_radians().cos().abs().max(0.01));
    let range = |center: f64, span: f64| NumberRange {
        prefix: Prefix::Ap,
        value: center,
        low: center - span,
        high: center + span,
    };
    Ok(vec![Value::Number(range(latitude, lat_span)), Value::Number(range(longitude, long_span))])
}

/// The search value of a uri parameter with `:below` or `:above`.
pub(super) fn uri(value: &str, matching: UriMatch) -> Value {
    Value::Uri { value: unescape(value), matching }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_escapes() {
        assert_eq!(token("a"), TokenValue { system: TokenSystem::Any, code: Some("a".into()) });
        assert_eq!(token("|a"), TokenValue { system: TokenSystem::None, code: Some("a".into()) });
        assert_eq!(token("s|"), TokenValue { system: TokenSystem::Is("s".into()), code: None });
        assert_eq!(token("s|a|b"), TokenValue { system: TokenSystem::Is("s".into()), code: Some("a|b".into()) });
        assert_eq!(token(r"s|a\|b"), TokenValue { system: TokenSystem::Is("s".into()), code: Some("a|b".into()) });
        assert_eq!(split_escaped(r"a\,b,c", ','), ["a,b", "c"]);
        assert_eq!(split_escaped(r"a\$b$c", '$'), ["a$b", "c"]);
    }

    #[test]
    fn date_ranges_follow_precision() {
        let year = date("_lastUpdated", "ge2020").unwrap();
        assert_eq!(year.prefix, Prefix::Ge);
        assert_eq!(year.high - year.low, 366 * 86_400 * 1_000_000);
        let minute = date("_lastUpdated", "2020-01-01T10:00Z").unwrap();
        assert_eq!(minute.high - minute.low, 60_000_000);
        assert!(date("_lastUpdated", "2020-13").is_err());
        assert!(date("_lastUpdated", "yesterday").is_err());
        let ap = date("birthdate", "ap2000").unwrap();
        assert!(ap.high - ap.low > 366 * 86_400 * 1_000_000);
    }

    #[test]
    fn numbers_carry_their_precision() {
        let n = number("p", "100").unwrap();
        assert_eq!((n.prefix, n.low, n.high), (Prefix::Eq, 99.5, 100.5));
        let n = number("p", "gt0.80").unwrap();
        assert_eq!(n.prefix, Prefix::Gt);
        assert!((n.high - 0.805).abs() < 1e-12);
        let n = number("p", "1e2").unwrap();
        assert_eq!((n.low, n.high), (50.0, 150.0));
        let n = number("p", "ap100").unwrap();
        assert_eq!((n.low, n.high), (90.0, 110.0));
        assert!(number("p", "ten").is_err());
        assert!(number("p", "xx5").is_err());
        assert!(number("p", "").is_err());
    }

    #[test]
    fn quantities_with_units() {
        let q = quantity("value-quantity", "le5.4|http://unitsofmeasure.org|mg/dL").unwrap();
        assert_eq!(q.number.prefix, Prefix::Le);
        assert_eq!((q.system.as_deref(), q.code.as_deref()), (Some(UCUM), Some("mg/dL")));
        let (unit, canonical) = q.canonical.unwrap();
        assert_eq!(unit, fhir::ucum::canonical(1.0, "g/L").unwrap().unit);
        assert!((canonical.value - 54.0).abs() < 1e-9, "5.4 mg/dL is 54 g/m3: {}", canonical.value);
        let q = quantity("value-quantity", "5||mg").unwrap();
        assert_eq!((q.system, q.code.as_deref()), (None, Some("mg")));
        assert!(quantity("value-quantity", "5|mg").is_err());
        assert!(quantity("value-quantity", "five").is_err());
    }
}
