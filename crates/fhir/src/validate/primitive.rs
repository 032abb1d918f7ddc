//! Checks of primitive values: the JSON kind each primitive must have and the lexical rules of its type.
//!
//! The spec gives each primitive a regex; these are hand-written equivalents (plus the calendar and range
//! checks a regex cannot express) so the hot path needs no regex engine and allocates nothing. A failure
//! returns the issue code and a message; building the message is the only allocation.

use super::schema::Primitive;
use crate::datetime::{parse_date, parse_datetime, parse_instant, parse_time};
use crate::IssueType;
use serde_json::Value;

/// FHIR strings SHALL NOT exceed 1 MB.
const MAX_STRING_BYTES: usize = 1024 * 1024;

pub(crate) fn check(p: Primitive, v: &Value) -> Result<(), (IssueType, String)> {
    match (p, v) {
        (Primitive::Boolean, Value::Bool(_)) => Ok(()),
        (Primitive::Decimal, Value::Number(_)) => Ok(()),
        (Primitive::Integer | Primitive::UnsignedInt | Primitive::PositiveInt, Value::Number(n)) => {
            let min = match p {
                Primitive::Integer => i32::MIN as i64,
                Primitive::UnsignedInt => 0,
                _ => 1,
            };
            match n.as_i64() {
                Some(i) if (min..=i32::MAX as i64).contains(&i) => Ok(()),
                Some(_) => Err(value_error(v, p, &format!("must be between {min} and {}", i32::MAX))),
                None if n.is_u64() => Err(value_error(v, p, &format!("must be between {min} and {}", i32::MAX))),
                None => Err(value_error(v, p, "must be a whole number without a decimal point")),
            }
        }
        (
            Primitive::Boolean
            | Primitive::Decimal
            | Primitive::Integer
            | Primitive::UnsignedInt
            | Primitive::PositiveInt,
            _,
        ) => {
            let expected = if p == Primitive::Boolean { "a JSON boolean" } else { "a JSON number" };
            Err((IssueType::Structure, format!("a {} must be {expected}, found {}", p.name(), json_kind(v))))
        }
        (_, Value::String(s)) => check_string(p, s).map_err(|reason| value_error(v, p, &reason)),
        (_, _) => Err((IssueType::Structure, format!("a {} must be a JSON string, found {}", p.name(), json_kind(v)))),
    }
}

fn check_string(p: Primitive, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty (omit the element instead)".into());
    }
    if s.len() > MAX_STRING_BYTES {
        return Err("is longer than 1 MB".into());
    }
    let ok = match p {
        Primitive::String | Primitive::Markdown => true,
        Primitive::Code => is_code(s),
        Primitive::Id => crate::is_valid_id(s),
        Primitive::Uri | Primitive::Url | Primitive::Canonical => !s.bytes().any(|b| b.is_ascii_whitespace()),
        Primitive::Oid => is_oid(s),
        Primitive::Uuid => is_uuid(s),
        Primitive::Base64Binary => is_base64(s),
        Primitive::Date => return parse_date(s).map(drop).map_err(|e| e.to_string()),
        Primitive::DateTime => return parse_datetime(s).map(drop).map_err(|e| e.to_string()),
        Primitive::Instant => return parse_instant(s).map(drop).map_err(|e| e.to_string()),
        Primitive::Time => return parse_time(s).map(drop).map_err(|e| e.to_string()),
        Primitive::Xhtml => return check_xhtml(s),
        Primitive::Boolean
        | Primitive::Decimal
        | Primitive::Integer
        | Primitive::UnsignedInt
        | Primitive::PositiveInt => {
            unreachable!("numbers and booleans are matched before strings")
        }
    };
    if ok {
        Ok(())
    } else {
        Err(match p {
            Primitive::Code => "must not have leading, trailing or repeated whitespace".into(),
            Primitive::Id => "must be 1 to 64 characters from A-Z, a-z, 0-9, '-' and '.'".into(),
            Primitive::Oid => "must look like urn:oid:1.2.3".into(),
            Primitive::Uuid => "must look like urn:uuid:<lower-case uuid>".into(),
            Primitive::Base64Binary => "is not valid base64".into(),
            _ => "must not contain whitespace".into(),
        })
    }
}

/// `[^\s]+(\s[^\s]+)*`: no whitespace at either end, never two whitespace characters in a row.
pub(crate) fn is_code(s: &str) -> bool {
    let mut previous_space = true; // rejects leading whitespace
    for c in s.chars() {
        let space = c.is_whitespace();
        if space && previous_space {
            return false;
        }
        previous_space = space;
    }
    !previous_space
}

/// `urn:oid:[0-2](\.(0|[1-9][0-9]*))+`
pub(crate) fn is_oid(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("urn:oid:") else { return false };
    let mut arcs = rest.split('.');
    let first_ok = matches!(arcs.next(), Some("0" | "1" | "2"));
    let mut count = 0;
    let rest_ok = arcs.all(|arc| {
        count += 1;
        !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit()) && (arc == "0" || !arc.starts_with('0'))
    });
    first_ok && rest_ok && count > 0
}

/// `urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`
pub(crate) fn is_uuid(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("urn:uuid:") else { return false };
    rest.len() == 36
        && rest.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

/// `(\s*([0-9a-zA-Z\+/=]){4}\s*)+`: base64 alphabet in groups of four, whitespace allowed between.
fn is_base64(s: &str) -> bool {
    let mut count = 0;
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=' {
            count += 1;
        } else if !b.is_ascii_whitespace() {
            return false;
        }
    }
    count > 0 && count % 4 == 0
}

/// Narrative: the xhtml must be a `div` in the XHTML namespace. (Checking the allowed element and attribute
/// subset needs an XML parser and is left to a later issue.)
fn check_xhtml(s: &str) -> Result<(), String> {
    let trimmed = s.trim_start();
    let start_tag = trimmed.strip_prefix("<div").and_then(|rest| rest.split('>').next());
    match start_tag {
        Some(tag) if tag.is_empty() || tag.starts_with(char::is_whitespace) || tag == "/" => {
            if tag.contains("xmlns=\"http://www.w3.org/1999/xhtml\"")
                || tag.contains("xmlns='http://www.w3.org/1999/xhtml'")
            {
                Ok(())
            } else {
                Err("the div must declare xmlns=\"http://www.w3.org/1999/xhtml\"".into())
            }
        }
        _ => Err("must be an xhtml <div> element".into()),
    }
}

fn value_error(v: &Value, p: Primitive, reason: &str) -> (IssueType, String) {
    let shown = match v {
        Value::String(s) if s.chars().count() > 40 => format!("'{}…'", s.chars().take(40).collect::<String>()),
        Value::String(s) => format!("'{s}'"),
        other => other.to_string(),
    };
    (IssueType::Value, format!("{shown} is not a valid {}: {reason}", p.name()))
}

pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(p: Primitive, v: Value) -> bool {
        check(p, &v).is_ok()
    }

    #[test]
    fn json_kinds() {
        assert!(ok(Primitive::Boolean, json!(true)));
        assert_eq!(check(Primitive::Boolean, &json!("true")).unwrap_err().0, IssueType::Structure);
        assert_eq!(check(Primitive::String, &json!(1)).unwrap_err().0, IssueType::Structure);
        assert_eq!(check(Primitive::Integer, &json!("1")).unwrap_err().0, IssueType::Structure);
        assert!(ok(Primitive::Decimal, json!(1.5)));
    }

    #[test]
    fn integer_ranges() {
        assert!(ok(Primitive::Integer, json!(-2147483648i64)));
        assert!(!ok(Primitive::Integer, json!(2147483648i64)));
        assert!(!ok(Primitive::Integer, json!(1.5)));
        assert!(ok(Primitive::UnsignedInt, json!(0)));
        assert!(!ok(Primitive::UnsignedInt, json!(-1)));
        assert!(!ok(Primitive::PositiveInt, json!(0)));
        assert!(ok(Primitive::PositiveInt, json!(1)));
    }

    #[test]
    fn string_formats() {
        assert!(!ok(Primitive::String, json!("")));
        assert!(ok(Primitive::Code, json!("a b")));
        for bad in [" a", "a ", "a  b", "a\tb\t"] {
            assert!(!ok(Primitive::Code, json!(bad)), "{bad:?}");
        }
        assert!(ok(Primitive::Oid, json!("urn:oid:1.2.840.10008")));
        assert!(!ok(Primitive::Oid, json!("urn:oid:3.1")));
        assert!(!ok(Primitive::Oid, json!("urn:oid:1.02")));
        assert!(ok(Primitive::Uuid, json!("urn:uuid:c757873d-ec9a-4326-a141-556f43239520")));
        assert!(!ok(Primitive::Uuid, json!("urn:uuid:C757873D-EC9A-4326-A141-556F43239520")));
        assert!(!ok(Primitive::Uri, json!("http://a b")));
        assert!(ok(Primitive::Base64Binary, json!("aGVsbG8=\n")));
        assert!(!ok(Primitive::Base64Binary, json!("aGVsbG8")));
        assert!(ok(Primitive::Time, json!("10:00:00")));
        assert!(!ok(Primitive::Instant, json!("2020-01-01")));
    }

    #[test]
    fn xhtml_div() {
        assert!(ok(Primitive::Xhtml, json!("<div xmlns=\"http://www.w3.org/1999/xhtml\">hi</div>")));
        assert!(!ok(Primitive::Xhtml, json!("<div>hi</div>")));
        assert!(!ok(Primitive::Xhtml, json!("<p xmlns=\"http://www.w3.org/1999/xhtml\">hi</p>")));
        assert!(!ok(Primitive::Xhtml, json!("<divx xmlns=\"http://www.w3.org/1999/xhtml\">hi</divx>")));
    }
}
