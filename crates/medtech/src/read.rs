//! Reading mapping documents the way Azure's Newtonsoft binding does (property names in any case, a
//! `Template` suffix allowed on template types), while collecting every problem with its path.

use crate::error::Issues;
use crate::json::get_ci;
use serde_json::{Map, Value};

/// `path.name`, or `name` at the root.
pub(crate) fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// Whether `actual` names the template type `expected` (`CollectionContent` or
/// `CollectionContentTemplate`, any case), as Azure's `TemplateContainer.MatchTemplateName` does.
pub(crate) fn is_template_type(actual: &str, expected: &str) -> bool {
    // `get` rather than indexing: a non-ASCII type name must not split a character.
    actual.eq_ignore_ascii_case(expected)
        || actual.len() == expected.len() + "Template".len()
            && actual.get(..expected.len()).is_some_and(|head| head.eq_ignore_ascii_case(expected))
            && actual.get(expected.len()..).is_some_and(|tail| tail.eq_ignore_ascii_case("Template"))
}

/// A property, treating JSON `null` as absent (Newtonsoft leaves the C# property unset).
pub(crate) fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    get_ci(object, name).filter(|v| !v.is_null())
}

/// A required non-blank string property.
pub(crate) fn required_string(
    object: &Map<String, Value>,
    name: &str,
    path: &str,
    issues: &mut Issues,
) -> Option<String> {
    match field(object, name) {
        None => {
            issues.push(path, format!("{name} is required"));
            None
        }
        Some(v) => string_value(v, name, path, issues).filter(|s| {
            let ok = !s.trim().is_empty();
            if !ok {
                issues.push(path, format!("{name} must not be empty"));
            }
            ok
        }),
    }
}

/// An optional string property (numbers are accepted and written out, as Newtonsoft converts them).
pub(crate) fn optional_string(
    object: &Map<String, Value>,
    name: &str,
    path: &str,
    issues: &mut Issues,
) -> Option<String> {
    field(object, name).and_then(|v| string_value(v, name, path, issues))
}

fn string_value(v: &Value, name: &str, path: &str, issues: &mut Issues) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => {
            issues.push(path, format!("{name} must be a string"));
            None
        }
    }
}

/// An optional boolean: `true`/`false`, or the strings `"true"`/`"false"` that Azure's samples use.
pub(crate) fn optional_bool(object: &Map<String, Value>, name: &str, path: &str, issues: &mut Issues) -> bool {
    match field(object, name) {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
        Some(_) => {
            issues.push(path, format!("{name} must be true or false"));
            false
        }
    }
}

/// An optional array property; each element is passed to `each` with its path.
pub(crate) fn array_items<'a>(
    object: &'a Map<String, Value>,
    name: &str,
    path: &str,
    issues: &mut Issues,
) -> Vec<(String, &'a Value)> {
    match field(object, name) {
        None => Vec::new(),
        Some(Value::Array(items)) => {
            items.iter().enumerate().map(|(i, item)| (format!("{}[{i}]", join(path, name)), item)).collect()
        }
        Some(_) => {
            issues.push(path, format!("{name} must be an array"));
            Vec::new()
        }
    }
}

/// The object at `path`, or an issue.
pub(crate) fn as_object<'a>(value: &'a Value, path: &str, issues: &mut Issues) -> Option<&'a Map<String, Value>> {
    let object = value.as_object();
    if object.is_none() {
        issues.push(path, "must be a JSON object");
    }
    object
}

/// Reads a collection document: `{"templateType": <expected>, "template": [ … ]}`, returning the
/// items with their paths (`template[0]`, …).
pub(crate) fn collection<'a>(document: &'a Value, expected: &str, issues: &mut Issues) -> Vec<(String, &'a Value)> {
    let Some(root) = document.as_object() else {
        issues.push("", format!("the mapping must be a JSON object with templateType {expected}"));
        return Vec::new();
    };
    match field(root, "templateType") {
        Some(Value::String(t)) if is_template_type(t, expected) => {}
        Some(Value::String(t)) => issues.push("templateType", format!("expected {expected}, found '{t}'")),
        Some(_) => issues.push("templateType", format!("must be the string {expected}")),
        None => issues.push("", format!("templateType is required (expected {expected})")),
    }
    match field(root, "template") {
        Some(Value::Array(items)) => {
            items.iter().enumerate().map(|(i, item)| (format!("template[{i}]"), item)).collect()
        }
        Some(_) => {
            issues.push("template", format!("must be an array of templates for {expected}"));
            Vec::new()
        }
        None => {
            issues.push("", "template is required (an array of templates)");
            Vec::new()
        }
    }
}

/// Reads one collection item `{"templateType": …, "template": {…}}`: its type name and body.
pub(crate) fn container<'a>(
    item: &'a Value,
    path: &str,
    issues: &mut Issues,
) -> Option<(String, &'a Map<String, Value>)> {
    let object = as_object(item, path, issues)?;
    let template_type = required_string(object, "templateType", path, issues);
    let body_path = join(path, "template");
    let body = match field(object, "template") {
        Some(Value::Object(body)) => Some(body),
        Some(_) => {
            issues.push(&body_path, "must be a JSON object");
            None
        }
        None => {
            issues.push(path, "template is required");
            None
        }
    };
    Some((template_type?, body?))
}

#[cfg(test)]
mod tests {
    use super::is_template_type;

    #[test]
    fn template_types_match_in_any_case_with_or_without_suffix() {
        assert!(is_template_type("CollectionContent", "CollectionContent"));
        assert!(is_template_type("collectioncontenttemplate", "CollectionContent"));
        assert!(!is_template_type("CollectionContentX", "CollectionContent"));
        assert!(!is_template_type("Collection", "CollectionContent"));
        assert!(!is_template_type("CollectionContenté", "CollectionContentTemplat"));
    }
}
