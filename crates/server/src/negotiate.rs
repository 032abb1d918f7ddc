//! Content negotiation and the `Prefer` header.
//!
//! Fhirside speaks FHIR JSON. `_format` overrides `Accept`; XML is recognised and refused with a
//! clear `406` (responses) or `415` (request bodies) rather than being misread as JSON.

use axum::http::{header, HeaderMap};

use crate::error::FhirError;
use crate::params::Params;

/// How to write the response body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Format {
    pub content_type: &'static str,
    pub pretty: bool,
}

pub(crate) const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";
const PLAIN_JSON: &str = "application/json; charset=utf-8";

/// The response format asked for by `_format`, `Accept` and `_pretty`.
pub(crate) fn response_format(headers: &HeaderMap, params: &Params) -> Result<Format, FhirError> {
    let pretty = match params.get("_pretty") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(FhirError::bad_request(format!("_pretty must be true or false, not '{other}'."))),
    };
    let content_type = match params.get("_format") {
        Some(format) => match media_kind(format) {
            Kind::FhirJson | Kind::Any => FHIR_JSON,
            Kind::Json => PLAIN_JSON,
            Kind::Xml => return Err(xml_not_acceptable()),
            Kind::Other => return Err(FhirError::NotAcceptable(format!("The _format '{format}' is not supported."))),
        },
        None => match headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) {
            None => FHIR_JSON,
            Some(accept) => from_accept(accept)?,
        },
    };
    Ok(Format { content_type, pretty })
}

fn from_accept(accept: &str) -> Result<&'static str, FhirError> {
    let mut saw_json = false;
    let mut saw_xml = false;
    for range in accept.split(',') {
        match media_kind(range) {
            Kind::FhirJson | Kind::Any => return Ok(FHIR_JSON),
            Kind::Json => saw_json = true,
            Kind::Xml => saw_xml = true,
            Kind::Other => {}
        }
    }
    match (saw_json, saw_xml) {
        (true, _) => Ok(PLAIN_JSON),
        (false, true) => Err(xml_not_acceptable()),
        (false, false) => Err(FhirError::NotAcceptable(format!(
            "None of the media types in Accept ('{accept}') can be produced; use application/fhir+json."
        ))),
    }
}

fn xml_not_acceptable() -> FhirError {
    FhirError::NotAcceptable("XML is not supported; request application/fhir+json.".into())
}

/// Checks that a request body is FHIR JSON.
pub(crate) fn require_json_body(headers: &HeaderMap) -> Result<(), FhirError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(()); // Lenient: a body without a Content-Type is read as JSON.
    };
    let value = value.to_str().unwrap_or("");
    match media_kind(value) {
        Kind::FhirJson | Kind::Json => Ok(()),
        Kind::Xml => Err(FhirError::UnsupportedMediaType(
            "XML request bodies are not supported; send application/fhir+json.".into(),
        )),
        Kind::Any | Kind::Other => Err(FhirError::UnsupportedMediaType(format!(
            "The Content-Type '{value}' is not supported; send application/fhir+json."
        ))),
    }
}

enum Kind {
    FhirJson,
    Json,
    Xml,
    Any,
    Other,
}

fn media_kind(range: &str) -> Kind {
    let essence = range.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/fhir+json" | "application/json+fhir" => Kind::FhirJson,
        "json" | "application/json" | "text/json" => Kind::Json,
        "xml" | "application/fhir+xml" | "application/xml+fhir" | "application/xml" | "text/xml" => Kind::Xml,
        "*/*" | "application/*" => Kind::Any,
        _ => Kind::Other,
    }
}

/// `Prefer: return=…`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Return {
    Minimal,
    Representation,
    OperationOutcome,
}

/// `Prefer: handling=…`: whether unknown search parameters are an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handling {
    Strict,
    Lenient,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Prefer {
    pub return_: Return,
    pub handling: Handling,
}

/// Parses every `Prefer` header; unknown `return`/`handling` values are refused as Azure does.
pub(crate) fn prefer(headers: &HeaderMap) -> Result<Prefer, FhirError> {
    let mut prefer = Prefer { return_: Return::Representation, handling: Handling::Lenient };
    for value in headers.get_all("prefer") {
        let value = value.to_str().map_err(|_| FhirError::bad_request("The Prefer header is not valid."))?;
        for token in value.split([',', ';']) {
            let token = token.trim();
            let (name, v) = token.split_once('=').unwrap_or((token, ""));
            let v = v.trim().trim_matches('"');
            match name.trim() {
                "return" => {
                    prefer.return_ = match v {
                        "minimal" => Return::Minimal,
                        "representation" => Return::Representation,
                        "OperationOutcome" => Return::OperationOutcome,
                        _ => return Err(unsupported_prefer(value)),
                    }
                }
                "handling" => {
                    prefer.handling = match v {
                        "strict" => Handling::Strict,
                        "lenient" => Handling::Lenient,
                        _ => return Err(unsupported_prefer(value)),
                    }
                }
                _ => {} // respond-async and others belong to the operations that read them.
            }
        }
    }
    Ok(prefer)
}

fn unsupported_prefer(value: &str) -> FhirError {
    FhirError::bad_request(format!("Value supplied, {value},  for the \"Prefer\" header is not supported."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn accept_picks_json_and_refuses_xml() {
        let none = Params::default();
        assert_eq!(response_format(&headers(&[]), &none).unwrap().content_type, FHIR_JSON);
        assert_eq!(
            response_format(&headers(&[("accept", "application/json")]), &none).unwrap().content_type,
            PLAIN_JSON
        );
        assert_eq!(
            response_format(&headers(&[("accept", "text/html, */*;q=0.8")]), &none).unwrap().content_type,
            FHIR_JSON
        );
        assert!(matches!(
            response_format(&headers(&[("accept", "application/fhir+xml")]), &none),
            Err(FhirError::NotAcceptable(_))
        ));
        let xml = Params(vec![("_format".into(), "xml".into())]);
        assert!(matches!(response_format(&headers(&[]), &xml), Err(FhirError::NotAcceptable(_))));
    }

    #[test]
    fn prefer_values() {
        let p = prefer(&headers(&[("prefer", "return=minimal"), ("prefer", "handling=strict")])).unwrap();
        assert_eq!(p.return_, Return::Minimal);
        assert_eq!(p.handling, Handling::Strict);
        assert!(prefer(&headers(&[("prefer", "return=everything")])).is_err());
    }

    #[test]
    fn body_content_types() {
        assert!(require_json_body(&headers(&[("content-type", "application/fhir+json; charset=utf-8")])).is_ok());
        assert!(matches!(
            require_json_body(&headers(&[("content-type", "application/fhir+xml")])),
            Err(FhirError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            require_json_body(&headers(&[("content-type", "application/x-www-form-urlencoded")])),
            Err(FhirError::UnsupportedMediaType(_))
        ));
    }
}
