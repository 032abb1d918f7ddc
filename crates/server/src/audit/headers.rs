//! Custom audit headers: `X-MS-AZUREFHIR-AUDIT-<name>: <value>` go into the record's `Properties`,
//! as in Azure's FHIR service (AZURE-COMPAT §4).
//!
//! - The prefix is matched case-insensitively. The `Properties` key is the full header name, as
//!   Azure's documentation shows it (`{"X-MS-AZUREFHIR-AUDIT-USERID": "1234"}`); HTTP header names
//!   are case-insensitive and reach the server in lower case, so the key is written in upper case
//!   (`x-ms-azurefhir-audit-UserLocation` → `X-MS-AZUREFHIR-AUDIT-USERLOCATION`), which is how
//!   Azure's examples spell them. A header that is only the prefix has no name and is ignored.
//! - A header sent several times is one property, its values joined with `", "`.
//! - At most [`MAX_HEADERS`] distinct headers and [`MAX_LENGTH`] characters per (joined) value;
//!   beyond that the request is refused with `431` and Azure's messages
//!   ([`FhirError::AuditHeaderTooLong`], [`FhirError::TooManyAuditHeaders`]). The length is checked
//!   first, header by header, then the count, as Azure's reader does.
//! - Values are HTML-encoded (`<` → `&lt;`, …) before they are recorded, as Azure does, so that a
//!   value cannot inject markup into whatever displays the log.

use axum::http::HeaderMap;
use serde_json::{Map, Value};

use crate::error::FhirError;

/// The prefix, in the lower case header names arrive in.
pub(crate) const PREFIX: &str = "x-ms-azurefhir-audit-";
/// Most distinct custom audit headers on one request.
pub(crate) const MAX_HEADERS: usize = 10;
/// Longest value of one custom audit header, in characters.
pub(crate) const MAX_LENGTH: usize = 2048;

/// The request's custom audit headers as `Properties`, or the `431` refusing them.
pub(crate) fn collect(headers: &HeaderMap) -> Result<Map<String, Value>, FhirError> {
    let mut properties = Map::new();
    for name in headers.keys() {
        let Some(suffix) = name.as_str().strip_prefix(PREFIX).filter(|suffix| !suffix.is_empty()) else { continue };
        let key = name.as_str().to_ascii_uppercase();
        let values: Vec<String> =
            headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
        let value = values.join(", ");
        let length = value.chars().count();
        if length > MAX_LENGTH {
            return Err(FhirError::AuditHeaderTooLong { name: key, length });
        }
        debug_assert!(key.ends_with(&suffix.to_ascii_uppercase()));
        properties.insert(key, Value::String(html_encode(&value)));
    }
    if properties.len() > MAX_HEADERS {
        return Err(FhirError::TooManyAuditHeaders { count: properties.len() });
    }
    Ok(properties)
}

/// Encodes what HTML would read as markup or an entity, and anything outside printable ASCII, as
/// character references.
fn html_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            ' '..='~' => out.push(c),
            other => out.push_str(&format!("&#x{:X};", other as u32)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(String, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(axum::http::HeaderName::try_from(k.as_str()).unwrap(), v.parse().unwrap());
        }
        map
    }

    fn message(error: FhirError) -> (u16, String, String) {
        let (status, outcome) = error.status_and_outcome();
        let issue = &outcome["issue"][0];
        (status.as_u16(), issue["code"].as_str().unwrap().to_owned(), issue["diagnostics"].as_str().unwrap().to_owned())
    }

    #[test]
    fn collects_prefixed_headers_case_insensitively() {
        let map = headers(&[
            ("X-MS-AZUREFHIR-AUDIT-UserLocation".into(), "Building 7".into()),
            ("x-ms-azurefhir-audit-app".into(), "triage".into()),
            ("X-Ms-AzureFhir-Audit-Repeated".into(), "one".into()),
            ("x-ms-azurefhir-audit-repeated".into(), "two".into()),
            ("X-MS-AZUREFHIR-AUDIT-".into(), "nameless".into()),
            ("X-MS-AZUREFHIR-AUDITX".into(), "not ours".into()),
            ("x-request-id".into(), "abc".into()),
        ]);
        let properties = collect(&map).unwrap();
        assert_eq!(
            Value::Object(properties),
            serde_json::json!({
                "X-MS-AZUREFHIR-AUDIT-USERLOCATION": "Building 7",
                "X-MS-AZUREFHIR-AUDIT-APP": "triage",
                "X-MS-AZUREFHIR-AUDIT-REPEATED": "one, two",
            })
        );
        assert!(collect(&HeaderMap::new()).unwrap().is_empty());
    }

    #[test]
    fn values_are_html_encoded() {
        let map = headers(&[("x-ms-azurefhir-audit-note".into(), "<b>\"Tom\" & 'Jerry'</b>".into())]);
        assert_eq!(
            collect(&map).unwrap()["X-MS-AZUREFHIR-AUDIT-NOTE"],
            "&lt;b&gt;&quot;Tom&quot; &amp; &#39;Jerry&#39;&lt;/b&gt;"
        );
        let mut map = HeaderMap::new();
        map.insert("x-ms-azurefhir-audit-city", axum::http::HeaderValue::from_bytes("Zürich".as_bytes()).unwrap());
        assert_eq!(collect(&map).unwrap()["X-MS-AZUREFHIR-AUDIT-CITY"], "Z&#xFC;rich");
    }

    #[test]
    fn count_limit() {
        let ten: Vec<(String, String)> = (0..10).map(|i| (format!("x-ms-azurefhir-audit-h{i}"), "v".into())).collect();
        assert_eq!(collect(&headers(&ten)).unwrap().len(), 10, "10 is allowed");
        let mut twelve = ten.clone();
        twelve.push(("x-ms-azurefhir-audit-h10".into(), "v".into()));
        twelve.push(("X-MS-AZUREFHIR-AUDIT-H11".into(), "v".into()));
        // Repeating a header does not count twice.
        twelve.push(("x-ms-azurefhir-audit-h0".into(), "again".into()));
        assert_eq!(
            message(collect(&headers(&twelve)).unwrap_err()),
            (
                431,
                "invalid".into(),
                "The maximum number of custom audit headers allowed is 10. The number of custom audit headers \
                 supplied is 12."
                    .into()
            )
        );
    }

    #[test]
    fn length_limit() {
        let at = vec![("x-ms-azurefhir-audit-long".to_owned(), "a".repeat(2048))];
        assert_eq!(
            collect(&headers(&at)).unwrap()["X-MS-AZUREFHIR-AUDIT-LONG"].as_str().unwrap().len(),
            2048,
            "2048 is allowed"
        );
        let past = vec![("X-MS-AZUREFHIR-AUDIT-Long".to_owned(), "a".repeat(2049))];
        assert_eq!(
            message(collect(&headers(&past)).unwrap_err()),
            (
                431,
                "invalid".into(),
                "The maximum length of a custom audit header value is 2048. The supplied custom audit header \
                 'X-MS-AZUREFHIR-AUDIT-LONG' has length of 2049."
                    .into()
            )
        );
        // Repeated values are measured joined: 1000 + ", " + 1047 = 2049.
        let joined = vec![
            ("x-ms-azurefhir-audit-joined".to_owned(), "a".repeat(1000)),
            ("x-ms-azurefhir-audit-joined".to_owned(), "b".repeat(1047)),
        ];
        assert!(message(collect(&headers(&joined)).unwrap_err()).2.ends_with("has length of 2049."));
        // The length is measured before encoding: 2048 `&` are allowed, and recorded as `&amp;`.
        let encoded = vec![("x-ms-azurefhir-audit-amp".to_owned(), "&".repeat(2048))];
        assert_eq!(collect(&headers(&encoded)).unwrap()["X-MS-AZUREFHIR-AUDIT-AMP"].as_str().unwrap().len(), 5 * 2048);
        // A value too long is reported before a count too high.
        let mut both: Vec<(String, String)> =
            (0..11).map(|i| (format!("x-ms-azurefhir-audit-h{i}"), "v".into())).collect();
        both.push(("x-ms-azurefhir-audit-long".into(), "a".repeat(3000)));
        assert!(message(collect(&headers(&both)).unwrap_err()).2.contains("has length of 3000"));
    }
}
