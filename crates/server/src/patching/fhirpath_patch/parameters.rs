//! Reading a FHIRPath Patch `Parameters` resource into checked [`Operation`]s: each operation's
//! type, its FHIRPath path (parsed once), and its value (a `value[x]` or nested `part`s), so that a
//! malformed patch is refused before anything changes.

use fhir::fhirpath::{self, Expression};
use serde_json::{Map, Value};

use fhir::{definitions, StructureKind};

use super::{json_kind_fits, malformed, PatchError};

/// One `operation` parameter, read and checked.
pub(super) enum Operation {
    Add { path: Expression, name: String, value: PatchValue },
    Insert { path: Expression, index: i64, value: PatchValue },
    Delete { path: Expression },
    Replace { path: Expression, value: PatchValue },
    Move { path: Expression, source: i64, destination: i64 },
}

/// The `value` of an operation (or of one of its parts).
pub(super) enum PatchValue {
    /// A `value[x]`: the FHIR type its suffix names, the JSON value (absent when the `_value[x]` object
    /// carries only extensions) and the `_value[x]` object.
    Typed { type_code: &'static str, value: Option<Value>, extension: Option<Value> },
    /// A `resource` (for `contained`, `Bundle.entry.resource`).
    Resource(Value),
    /// Nested `part`s that build an element part by part: the way to give an anonymous (BackboneElement)
    /// type, which has no `value[x]`.
    Parts(Vec<(String, PatchValue)>),
}

pub(super) fn read_parameters(parameters: &Value) -> Result<Vec<Operation>, PatchError> {
    if parameters.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(malformed("a FHIRPath Patch document is a Parameters resource"));
    }
    let Some(list) = parameters.get("parameter") else { return Ok(Vec::new()) };
    let list = list.as_array().ok_or_else(|| malformed("Parameters.parameter must be an array"))?;
    list.iter()
        .enumerate()
        .map(|(i, p)| read_operation(p).map_err(|e| malformed(format!("operation {i}: {}", message(e)))))
        .collect()
}

fn message(error: PatchError) -> String {
    match error {
        PatchError::Malformed(m) | PatchError::Unprocessable(m) => m,
    }
}

fn read_operation(parameter: &Value) -> Result<Operation, PatchError> {
    match parameter.get("name").and_then(Value::as_str) {
        Some("operation") => {}
        other => return Err(malformed(format!("parameter {other:?} is not an 'operation'"))),
    }
    let parts = parameter.get("part").and_then(Value::as_array).ok_or_else(|| malformed("an operation has parts"))?;
    let mut found: Vec<(&str, &Map<String, Value>)> = Vec::new();
    for part in parts {
        let part = part.as_object().ok_or_else(|| malformed("a part is an object"))?;
        let name = part.get("name").and_then(Value::as_str).ok_or_else(|| malformed("a part has a name"))?;
        if !matches!(name, "type" | "path" | "name" | "value" | "index" | "source" | "destination") {
            return Err(malformed(format!("unknown part '{name}'")));
        }
        if found.iter().any(|(n, _)| *n == name) {
            return Err(malformed(format!("part '{name}' is repeated")));
        }
        found.push((name, part));
    }
    let part = |name: &str| {
        found
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| *p)
            .ok_or_else(|| malformed(format!("missing part '{name}'")))
    };
    let text = |name: &str| -> Result<String, PatchError> {
        match primitive_of(part(name)?)? {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => Err(malformed(format!("part '{name}' must have a string value"))),
        }
    };
    let integer = |name: &str| -> Result<i64, PatchError> {
        primitive_of(part(name)?)?
            .and_then(Value::as_i64)
            .ok_or_else(|| malformed(format!("part '{name}' must have an integer value")))
    };
    let source = text("path")?;
    let path = fhirpath::parse(&source).map_err(|e| malformed(format!("path '{source}': {e}")))?;
    let value = || read_value(part("value")?);
    Ok(match text("type")?.as_str() {
        "add" => Operation::Add { path, name: text("name")?, value: value()? },
        "insert" => Operation::Insert { path, index: integer("index")?, value: value()? },
        "delete" => Operation::Delete { path },
        "replace" => Operation::Replace { path, value: value()? },
        "move" => Operation::Move { path, source: integer("source")?, destination: integer("destination")? },
        other => return Err(malformed(format!("unknown operation type '{other}'"))),
    })
}

/// The JSON value of a part's `value[x]`, if it has one.
fn primitive_of(part: &Map<String, Value>) -> Result<Option<&Value>, PatchError> {
    Ok(value_key(part)?.and_then(|key| part.get(key)))
}

/// The part's `value[x]` property name (`valueDate`), also when only `_valueDate` is present.
fn value_key(part: &Map<String, Value>) -> Result<Option<&str>, PatchError> {
    let mut keys = part.keys().filter_map(|k| {
        let plain = k.strip_prefix('_').unwrap_or(k);
        (plain.len() > "value".len() && plain.starts_with("value")).then_some(plain)
    });
    let first = keys.next();
    if keys.any(|k| Some(k) != first) {
        return Err(malformed("a part has more than one value[x]"));
    }
    Ok(first)
}

fn read_value(part: &Map<String, Value>) -> Result<PatchValue, PatchError> {
    if let Some(key) = value_key(part)? {
        let type_code = value_type(&key["value".len()..])?;
        let value = part.get(key).cloned();
        let extension = part.get(&format!("_{key}")).cloned();
        if let Some(v) = &value {
            if !json_kind_fits(type_code, v) {
                return Err(malformed(format!("{key} is not a FHIR JSON {type_code}")));
            }
        }
        if extension.as_ref().is_some_and(|e| !e.is_object()) {
            return Err(malformed(format!("_{key} must be an object")));
        }
        return Ok(PatchValue::Typed { type_code, value, extension });
    }
    if let Some(resource) = part.get("resource") {
        if resource.get("resourceType").and_then(Value::as_str).is_none() {
            return Err(malformed("a part's resource has no resourceType"));
        }
        return Ok(PatchValue::Resource(resource.clone()));
    }
    if let Some(parts) = part.get("part") {
        let parts = parts.as_array().ok_or_else(|| malformed("part.part must be an array"))?;
        let mut values = Vec::with_capacity(parts.len());
        for p in parts {
            let p = p.as_object().ok_or_else(|| malformed("a part is an object"))?;
            let name = p.get("name").and_then(Value::as_str).ok_or_else(|| malformed("a part has a name"))?;
            values.push((name.to_string(), read_value(p)?));
        }
        return Ok(PatchValue::Parts(values));
    }
    let name = part.get("name").and_then(Value::as_str).unwrap_or_default();
    Err(malformed(format!("part '{name}' has no value[x], resource or part")))
}

/// The type a `value[x]` suffix names: `CodeableConcept` as is, `Date` → `date`.
fn value_type(suffix: &str) -> Result<&'static str, PatchError> {
    let defs = definitions();
    if let Some(t) = defs.type_def(suffix).filter(|t| t.kind == StructureKind::ComplexType) {
        return Ok(&t.name);
    }
    let mut chars = suffix.chars();
    let lowered: String = chars.next().map(|c| c.to_ascii_lowercase()).into_iter().chain(chars).collect();
    match defs.type_def(&lowered) {
        Some(t) if t.kind == StructureKind::PrimitiveType => Ok(&t.name),
        _ => Err(malformed(format!("value{suffix} names no FHIR type"))),
    }
}
