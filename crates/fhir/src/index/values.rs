//! Conversion of the elements a parameter's expression selected into index values, by the
//! parameter's type and the element's FHIR type.

use serde_json::Value;

use super::{
    normalize, DateValue, NumberValue, QuantityValue, ReferenceValue, ResourceIndex, StringValue, TokenValue, UriValue,
};
use crate::fhirpath::Item;
use crate::search_param::SearchParamType;

/// Adds the values of `item` for parameter `param` of type `kind`.
pub(super) fn add(index: &mut ResourceIndex, param: &str, kind: SearchParamType, item: &Item<'_>) {
    match kind {
        SearchParamType::Token => tokens(index, param, item),
        SearchParamType::Reference => references(index, param, item),
        SearchParamType::Date => dates(index, param, item),
        SearchParamType::String => strings(index, param, item),
        SearchParamType::Number => numbers(index, param, item),
        SearchParamType::Quantity => quantities(index, param, item),
        SearchParamType::Uri => uris(index, param, item),
        SearchParamType::Composite | SearchParamType::Special => {}
    }
}

fn text<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

fn owned(value: &Value, key: &str) -> Option<String> {
    text(value, key).map(str::to_owned)
}

fn string_value(param: &str, written: &str) -> Option<StringValue> {
    (!written.trim().is_empty()).then(|| StringValue {
        param: param.to_owned(),
        normalized: normalize(written),
        exact: written.to_owned(),
    })
}

fn tokens(index: &mut ResourceIndex, param: &str, item: &Item<'_>) {
    let mut push = |system: Option<String>, code: Option<String>| {
        if let Some(code) = code.filter(|c| !c.is_empty()) {
            index.tokens.push(TokenValue { param: param.to_owned(), system, code });
        }
    };
    // `:text` rows for the parameter itself; a composite's components are matched by code only.
    let with_text = !param.contains('$');
    let text_param = || format!("{param}:text");
    match item {
        Item::Node(node) => {
            let value = node.value();
            match node.type_name() {
                "Coding" => {
                    push(owned(value, "system"), owned(value, "code"));
                    if let Some(display) = text(value, "display").filter(|_| with_text) {
                        index.strings.extend(string_value(&text_param(), display));
                    }
                }
                "CodeableConcept" => {
                    for coding in value.get("coding").and_then(Value::as_array).into_iter().flatten() {
                        push(owned(coding, "system"), owned(coding, "code"));
                    }
                    let displays = value.get("coding").and_then(Value::as_array).into_iter().flatten();
                    let texts = displays.filter_map(|c| text(c, "display")).chain(text(value, "text"));
                    for written in texts.filter(|_| with_text) {
                        index.strings.extend(string_value(&text_param(), written));
                    }
                }
                "Identifier" => {
                    push(owned(value, "system"), owned(value, "value"));
                    identifier_type(index, param, value);
                    if let Some(t) = value.get("type").and_then(|t| text(t, "text")).filter(|_| with_text) {
                        index.strings.extend(string_value(&text_param(), t));
                    }
                }
                "ContactPoint" => push(owned(value, "system"), owned(value, "value")),
                _ => match value {
                    Value::String(s) => push(None, Some(s.clone())),
                    Value::Bool(b) => push(None, Some(b.to_string())),
                    Value::Number(n) => push(None, Some(n.to_string())),
                    _ => {}
                },
            }
        }
        Item::String(s) => push(None, Some(s.to_string())),
        Item::Boolean(b) => push(None, Some(b.to_string())),
        Item::Integer(i) => push(None, Some(i.to_string())),
        _ => {}
    }
}

/// `identifier:of-type` rows: the identifier's value under each `system|code` of its type.
fn identifier_type(index: &mut ResourceIndex, param: &str, identifier: &Value) {
    let Some(value) = text(identifier, "value") else { return };
    let codings = identifier.get("type").and_then(|t| t.get("coding")).and_then(Value::as_array);
    for coding in codings.into_iter().flatten() {
        if let (Some(system), Some(code)) = (text(coding, "system"), text(coding, "code")) {
            index.tokens.push(TokenValue {
                param: format!("{param}:of-type"),
                system: Some(format!("{system}|{code}")),
                code: value.to_owned(),
            });
        }
    }
}

fn dates(index: &mut ResourceIndex, param: &str, item: &Item<'_>) {
    let Item::Node(node) = item else { return };
    let value = node.value();
    let range =
        |text: Option<&str>| text.and_then(|t| crate::datetime::parse_datetime(t).ok()).map(|d| d.range_micros());
    let mut push = |low: i64, high: i64| index.dates.push(DateValue { param: param.to_owned(), low, high });
    match node.type_name() {
        "date" | "dateTime" | "instant" => {
            if let Some((low, high)) = range(value.as_str()) {
                push(low, high);
            }
        }
        "Period" => {
            let start = range(text(value, "start"));
            let end = range(text(value, "end"));
            if start.is_some() || end.is_some() {
                push(start.map_or(i64::MIN, |(low, _)| low), end.map_or(i64::MAX, |(_, high)| high));
            }
        }
        "Timing" => {
            for event in value.get("event").and_then(Value::as_array).into_iter().flatten() {
                if let Some((low, high)) = range(event.as_str()) {
                    push(low, high);
                }
            }
        }
        _ => {}
    }
}

fn references(index: &mut ResourceIndex, param: &str, item: &Item<'_>) {
    let Item::Node(node) = item else { return };
    let value = node.value();
    let written = match node.type_name() {
        "Reference" => {
            if let Some(identifier) = value.get("identifier") {
                if let Some(v) = text(identifier, "value") {
                    index.tokens.push(TokenValue {
                        param: format!("{param}:identifier"),
                        system: owned(identifier, "system"),
                        code: v.to_owned(),
                    });
                }
            }
            text(value, "reference")
        }
        _ => value.as_str(), // canonical, uri
    };
    let Some(written) = written.filter(|w| !w.starts_with('#') && !w.is_empty()) else { return };
    index.references.push(parse_reference(param, written));
}

/// Splits a literal reference into type and id where it names one (`Patient/1`,
/// `Patient/1/_history/2`, `https://host/fhir/Patient/1`).
pub fn parse_reference(param: &str, written: &str) -> ReferenceValue {
    let absolute = written.contains("://") || written.starts_with("urn:");
    let path = written.split(['?', '|']).next().unwrap_or(written);
    let segments: Vec<&str> = path.split('/').collect();
    let typed = |t: &str, id: &str| crate::definitions().is_resource_type(t) && crate::is_valid_id(id);
    let found = match segments.as_slice() {
        [.., t, id, "_history", _] if typed(t, id) => Some((*t, *id)),
        [.., t, id] if typed(t, id) => Some((*t, *id)),
        _ => None,
    };
    ReferenceValue {
        param: param.to_owned(),
        target_type: found.map(|(t, _)| t.to_owned()),
        target_id: found.map(|(_, id)| id.to_owned()),
        url: absolute.then(|| written.to_owned()),
    }
}

fn strings(index: &mut ResourceIndex, param: &str, item: &Item<'_>) {
    let mut push = |written: &str| index.strings.extend(string_value(param, written));
    match item {
        Item::Node(node) => {
            let value = node.value();
            let parts: &[&str] = match node.type_name() {
                "HumanName" => &["text", "family", "given", "prefix", "suffix"],
                "Address" => &["text", "line", "city", "district", "state", "postalCode", "country"],
                _ => {
                    if let Some(s) = value.as_str() {
                        push(s);
                    }
                    return;
                }
            };
            for part in parts {
                match value.get(part) {
                    Some(Value::String(s)) => push(s),
                    Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).for_each(&mut push),
                    _ => {}
                }
            }
        }
        Item::String(s) => push(s),
        _ => {}
    }
}

fn numbers(index: &mut ResourceIndex, param: &str, item: &Item<'_>) {
    let value = match item {
        Item::Node(node) => node.value().as_f64(),
        Item::Integer(i) => Some(*i as f64),
        Item::Decimal(d) => Some(d.to_f64()),
        _ => None,
    };
    if let Some(value) = value.filter(|v| v.is_finite()) {
        index.numbers.push(NumberValue { param: param.to_owned(), value });
    }
}

fn quantities(index: &mut ResourceIndex, param: &str, item: &Item<'_>) {
    let Item::Node(node) = item else { return };
    let value = node.value();
    match node.type_name() {
        "Range" => {
            let low = value.get("low");
            let high = value.get("high");
            let number = |q: Option<&Value>| q.and_then(|q| q.get("value")).and_then(Value::as_f64);
            let (l, h) = (number(low), number(high));
            if l.is_none() && h.is_none() {
                return;
            }
            let unit = low.or(high).unwrap_or(&Value::Null);
            push_quantity(index, param, unit, l.unwrap_or(f64::NEG_INFINITY), h.unwrap_or(f64::INFINITY));
        }
        "Money" => {
            if let Some(v) = value.get("value").and_then(Value::as_f64) {
                index.quantities.push(QuantityValue {
                    param: param.to_owned(),
                    system: Some("urn:iso:std:iso:4217".to_owned()),
                    code: owned(value, "currency"),
                    low: v,
                    high: v,
                    canonical: None,
                });
            }
        }
        // Quantity and its profiles (Age, Duration, Count, Distance, SimpleQuantity, MoneyQuantity).
        _ => {
            if let Some(v) = value.get("value").and_then(Value::as_f64) {
                push_quantity(index, param, value, v, v);
            }
        }
    }
}

const UCUM: &str = "http://unitsofmeasure.org";

/// A quantity interval with the unit of `quantity` (its code, else its unit).
fn push_quantity(index: &mut ResourceIndex, param: &str, quantity: &Value, low: f64, high: f64) {
    let system = owned(quantity, "system");
    let code = owned(quantity, "code").or_else(|| owned(quantity, "unit"));
    let canonical = match (system.as_deref(), text(quantity, "code")) {
        (Some(UCUM), Some(code)) => canonical_interval(code, low, high),
        _ => None,
    };
    index.quantities.push(QuantityValue { param: param.to_owned(), system, code, low, high, canonical });
}

/// `[low, high]` in the canonical form of UCUM unit `code`; open bounds stay open.
pub(crate) fn canonical_interval(code: &str, low: f64, high: f64) -> Option<(String, f64, f64)> {
    let convert =
        |v: f64| if v.is_finite() { crate::ucum::canonical(v, code).map(|c| (c.unit, c.value)) } else { None };
    let reference = convert(if low.is_finite() { low } else { high })?;
    let low = if low.is_finite() { convert(low)?.1 } else { low };
    let high = if high.is_finite() { convert(high)?.1 } else { high };
    Some((reference.0, low, high))
}

fn uris(index: &mut ResourceIndex, param: &str, item: &Item<'_>) {
    let written = match item {
        Item::Node(node) => node.value().as_str(),
        Item::String(s) => Some(&**s),
        _ => None,
    };
    if let Some(uri) = written.filter(|u| !u.is_empty()) {
        index.uris.push(UriValue { param: param.to_owned(), uri: uri.to_owned() });
    }
}
