//! JSON Patch (RFC 6902) over `serde_json` values, with JSON Pointer (RFC 6901) paths.
//!
//! Operations apply in order to a working copy; the first failure abandons the whole patch, so the
//! caller's document is untouched unless every operation succeeds.

use serde_json::Value;

/// Why a patch could not be applied.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PatchError {
    /// The patch document itself is malformed (not an array, unknown op, missing member).
    Malformed(String),
    /// A well-formed operation could not be applied to this document (missing path, failed test).
    Unprocessable(String),
}

/// Applies `patch` (a JSON array of operations) to `doc`.
pub(crate) fn apply(doc: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let ops = patch.as_array().ok_or_else(|| PatchError::Malformed("a JSON Patch document is an array".into()))?;
    let mut work = doc.clone();
    for (i, op) in ops.iter().enumerate() {
        apply_one(&mut work, op).map_err(|e| match e {
            PatchError::Malformed(m) => PatchError::Malformed(format!("operation {i}: {m}")),
            PatchError::Unprocessable(m) => PatchError::Unprocessable(format!("operation {i}: {m}")),
        })?;
    }
    *doc = work;
    Ok(())
}

fn apply_one(doc: &mut Value, op: &Value) -> Result<(), PatchError> {
    let member = |name: &str| op.get(name).ok_or_else(|| PatchError::Malformed(format!("missing '{name}'")));
    let text = |name: &str| -> Result<&str, PatchError> {
        member(name)?.as_str().ok_or_else(|| PatchError::Malformed(format!("'{name}' must be a string")))
    };
    let path = pointer(text("path")?)?;
    match text("op")? {
        "add" => add(doc, &path, member("value")?.clone()),
        "remove" => remove(doc, &path).map(drop),
        "replace" => {
            let value = member("value")?.clone();
            *get_mut(doc, &path)? = value;
            Ok(())
        }
        "move" => {
            let from = pointer(text("from")?)?;
            if path.len() > from.len() && path[..from.len()] == from[..] {
                return Err(PatchError::Unprocessable("cannot move a value into one of its own children".into()));
            }
            let value = remove(doc, &from)?;
            add(doc, &path, value)
        }
        "copy" => {
            let from = pointer(text("from")?)?;
            let value = get_mut(doc, &from)?.clone();
            add(doc, &path, value)
        }
        "test" => {
            let expected = member("value")?;
            if get_mut(doc, &path)? == expected {
                Ok(())
            } else {
                Err(PatchError::Unprocessable(format!("test failed at '{}'", text("path")?)))
            }
        }
        other => Err(PatchError::Malformed(format!("unknown op '{other}'"))),
    }
}

/// Splits and unescapes a JSON Pointer.
fn pointer(text: &str) -> Result<Vec<String>, PatchError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let rest = text
        .strip_prefix('/')
        .ok_or_else(|| PatchError::Malformed(format!("'{text}' is not a JSON Pointer (it must start with /)")))?;
    Ok(rest.split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect())
}

fn index(token: &str, len: usize, allow_end: bool) -> Result<usize, PatchError> {
    if token == "-" && allow_end {
        return Ok(len);
    }
    let valid =
        !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) && (token == "0" || !token.starts_with('0'));
    let i: usize = if valid { token.parse().unwrap_or(usize::MAX) } else { usize::MAX };
    let limit = if allow_end { len } else { len.saturating_sub(1) };
    if !valid || (len == 0 && !allow_end) || i > limit {
        return Err(PatchError::Unprocessable(format!("array index '{token}' is out of range")));
    }
    Ok(i)
}

fn get_mut<'v>(doc: &'v mut Value, path: &[String]) -> Result<&'v mut Value, PatchError> {
    let mut current = doc;
    for token in path {
        current = match current {
            Value::Object(map) => map
                .get_mut(token)
                .ok_or_else(|| PatchError::Unprocessable(format!("path '/{token}' does not exist")))?,
            Value::Array(items) => {
                let i = index(token, items.len(), false)?;
                &mut items[i]
            }
            _ => return Err(PatchError::Unprocessable(format!("cannot descend into a scalar at '{token}'"))),
        };
    }
    Ok(current)
}

fn add(doc: &mut Value, path: &[String], value: Value) -> Result<(), PatchError> {
    let Some((last, parent)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    match get_mut(doc, parent)? {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) => {
            let i = index(last, items.len(), true)?;
            items.insert(i, value);
            Ok(())
        }
        _ => Err(PatchError::Unprocessable(format!("the parent of '{last}' is not a container"))),
    }
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value, PatchError> {
    let Some((last, parent)) = path.split_last() else {
        return Err(PatchError::Unprocessable("cannot remove the whole document".into()));
    };
    match get_mut(doc, parent)? {
        Value::Object(map) => {
            map.shift_remove(last).ok_or_else(|| PatchError::Unprocessable(format!("path '/{last}' does not exist")))
        }
        Value::Array(items) => {
            let i = index(last, items.len(), false)?;
            Ok(items.remove(i))
        }
        _ => Err(PatchError::Unprocessable(format!("the parent of '{last}' is not a container"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared JSON Patch cases: each either yields `expected` or fails (`error`).
    #[test]
    fn shared_json_patch_cases() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fhir-test-cases/json-patch-tests.json");
        let cases: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(cases.len(), 16);
        for case in cases {
            if case.get("disabled").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            let mut doc = case["doc"].clone();
            let result = apply(&mut doc, &case["patch"]);
            match case.get("expected") {
                Some(expected) => {
                    assert_eq!(result, Ok(()), "{}", case["comment"]);
                    assert_eq!(&doc, expected, "{}", case["comment"]);
                }
                None => {
                    assert!(result.is_err(), "{} should fail", case["comment"]);
                    assert_eq!(doc, case["doc"], "a failed patch leaves the document alone");
                }
            }
        }
    }

    #[test]
    fn pointers_and_indexes() {
        let mut doc = serde_json::json!({"a/b": {"~c": [1, 2]}});
        apply(&mut doc, &serde_json::json!([{"op": "add", "path": "/a~1b/~0c/-", "value": 3}])).unwrap();
        assert_eq!(doc, serde_json::json!({"a/b": {"~c": [1, 2, 3]}}));
        let bad = apply(&mut doc, &serde_json::json!([{"op": "remove", "path": "/a~1b/~0c/01"}]));
        assert!(matches!(bad, Err(PatchError::Unprocessable(_))));
        assert!(matches!(apply(&mut doc, &serde_json::json!({"op": "add"})), Err(PatchError::Malformed(_))));
        assert!(matches!(
            apply(&mut doc, &serde_json::json!([{"op": "jump", "path": ""}])),
            Err(PatchError::Malformed(_))
        ));
    }
}
