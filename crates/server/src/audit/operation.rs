//! Which interaction a request is, for the audit record: its `OperationName` and `FhirResourceType`.
//!
//! Decided from the method, the path and a few headers before the interaction runs, so that the
//! `Started` record already names it; the names are Azure's audit sub-types (AZURE-COMPAT §4).
//! Only a Bundle posted to the base needs its body to tell a `batch` from a `transaction`: the
//! record starts as `bundle-post` and the bundle handler refines it
//! ([`crate::context::refine_operation`]).
//!
//! | request | OperationName |
//! | --- | --- |
//! | `GET /metadata` | `capabilities` |
//! | `GET /`, `POST /_search` | `search-system` |
//! | `POST /` | `bundle-post`, then `batch` or `transaction` |
//! | `GET /_history` | `history-system` |
//! | `GET /{type}`, `POST /{type}/_search` | `search-type` |
//! | `POST /{type}` | `create`, or `conditional-create` with `If-None-Exist` |
//! | `PUT`, `DELETE`, `PATCH /{type}?…` | `conditional-update`, `conditional-delete`, `conditional-patch` |
//! | `GET /{type}/_history` | `history-type` |
//! | `GET /{type}/{id}` | `read` |
//! | `PUT`, `DELETE`, `PATCH /{type}/{id}` | `update`, `delete`, `patch` |
//! | `GET /{type}/{id}/_history` | `history-instance` |
//! | `GET /{type}/{id}/_history/{vid}` | `vread` |
//! | `GET /{type}/{id}/{type}`, `POST …/_search` | `search` (compartment search) |
//! | `…/$everything`, `$validate`, `$reindex`, `$export`, `$import` | `everything`, `validate`, … |
//! | `$convert-data`, `$member-match`, `$purge-history`, `$bulk-delete`, `$bulk-update`, `$expand` | without `$` |
//! | `/_operations/{reindex,export,import,…}/{id}` | `reindex`, `export`, `import`, … |
//! | `/_admin/…` | `admin` |
//! | `/_audit` | `audit` |
//! | anything else (no route) | `unknown` |
//!
//! `HEAD` is named as `GET`. `FhirResourceType` is the type the path names when it is an R4
//! resource type (the searched type for a compartment search); system-level requests have none.

use std::borrow::Cow;

use axum::http::{HeaderMap, Method};

/// A request's audit identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Operation {
    pub name: &'static str,
    pub resource_type: Option<String>,
}

/// The name for requests no interaction takes.
pub(crate) const UNKNOWN: &str = "unknown";

/// Names a request from its method, path (without the query) and headers.
pub(crate) fn classify(method: &Method, path: &str, headers: &HeaderMap) -> Operation {
    let segments: Vec<Cow<str>> = path.split('/').filter(|s| !s.is_empty()).map(percent_decode).collect();
    let segments: Vec<&str> = segments.iter().map(|s| s.as_ref()).collect();
    let method = if method == Method::HEAD { &Method::GET } else { method };
    let typed = |t: &str| fhir::definitions().is_resource_type(t).then(|| t.to_owned());
    let op = |name: &'static str, resource_type: Option<String>| Operation { name, resource_type };
    let is_get = method == Method::GET;
    let is_post = method == Method::POST;
    match segments.as_slice() {
        [] if is_get => op("search-system", None),
        [] if is_post => op("bundle-post", None),
        [] => op(UNKNOWN, None),
        ["metadata"] => op("capabilities", None),
        ["_history"] => op("history-system", None),
        ["_search"] => op("search-system", None),
        ["_admin", ..] => op("admin", None),
        ["_audit", ..] => op("audit", None),
        ["medtech", ..] if is_post => op("medtech-ingest", Some("Observation".to_owned())),
        ["medtech", ..] => op("medtech", None),
        ["_operations", kind, ..] => op(operation_name(&format!("${kind}")), None),
        [name] if name.starts_with('$') => op(operation_name(name), None),
        [t] if t.starts_with('_') => op(UNKNOWN, None),
        [t] => {
            let name = match *method {
                Method::GET => "search-type",
                Method::POST if headers.contains_key("if-none-exist") => "conditional-create",
                Method::POST => "create",
                // A type-level write is conditional by route, with or without its query (a missing
                // query is refused by the interaction, and audited under the same name).
                Method::PUT => "conditional-update",
                Method::DELETE => "conditional-delete",
                Method::PATCH => "conditional-patch",
                _ => UNKNOWN,
            };
            op(name, typed(t))
        }
        [t, "_history"] => op("history-type", typed(t)),
        [t, "_search"] => op("search-type", typed(t)),
        [t, name] if name.starts_with('$') => op(operation_name(name), typed(t)),
        [t, id] if id.starts_with('_') => op(UNKNOWN, typed(t)),
        [t, _id] => {
            let name = match *method {
                Method::GET => "read",
                Method::PUT => "update",
                Method::DELETE => "delete",
                Method::PATCH => "patch",
                _ => UNKNOWN,
            };
            op(name, typed(t))
        }
        [t, _id, "_history"] => op("history-instance", typed(t)),
        [t, _id, name] if name.starts_with('$') => op(operation_name(name), typed(t)),
        [t, _id, "_history", _vid] => op("vread", typed(t)),
        [_compartment, _id, target] | [_compartment, _id, target, "_search"] if typed(target).is_some() => {
            op("search", typed(target))
        }
        [t, ..] => op(UNKNOWN, typed(t)),
    }
}

/// Azure's name for a `$operation`; [`UNKNOWN`] for operations it does not list.
fn operation_name(op: &str) -> &'static str {
    match op {
        "$everything" => "everything",
        "$validate" => "validate",
        "$reindex" => "reindex",
        "$export" => "export",
        "$import" => "import",
        "$convert-data" => "convert-data",
        "$member-match" => "member-match",
        "$purge-history" => "purge-history",
        "$bulk-delete" => "bulk-delete",
        "$bulk-update" => "bulk-update",
        "$expand" => "expand",
        _ => UNKNOWN,
    }
}

/// The resource a request path names, as a relative reference (`Patient/1`,
/// `Patient/1/_history/2`), for `AuditEvent.entity.what`; `None` for type- and system-level paths.
/// Segments before the first resource type (a base URL's path, `/fhir`) are skipped.
pub(crate) fn resource_reference(path: &str) -> Option<String> {
    let segments: Vec<Cow<str>> = path.split('/').filter(|s| !s.is_empty()).map(percent_decode).collect();
    let is_type = |t: &str| fhir::definitions().is_resource_type(t);
    let start = segments.iter().position(|s| is_type(s))?;
    let is_id = |id: &str| fhir::is_valid_id(id);
    match segments[start..].iter().map(|s| s.as_ref()).collect::<Vec<_>>().as_slice() {
        [t, id, "_history", vid] if is_id(id) && is_id(vid) => Some(format!("{t}/{id}/_history/{vid}")),
        [t, id, ..] if is_id(id) => Some(format!("{t}/{id}")),
        _ => None,
    }
}

/// `%24everything` → `$everything`. Invalid escapes are kept as written.
fn percent_decode(segment: &str) -> Cow<'_, str> {
    if !segment.contains('%') {
        return Cow::Borrowed(segment);
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(method: &str, path: &str) -> (&'static str, Option<String>) {
        name_with(method, path, &[])
    }

    fn name_with(method: &str, path: &str, headers: &[(&'static str, &'static str)]) -> (&'static str, Option<String>) {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, v.parse().unwrap());
        }
        let path = path.split_once('?').map_or(path, |(path, _)| path);
        let operation = classify(&method.parse().unwrap(), path, &map);
        (operation.name, operation.resource_type)
    }

    #[test]
    fn the_table() {
        let p = || Some("Patient".to_owned());
        let cases: &[(&str, &str, &str, Option<String>)] = &[
            ("GET", "/metadata", "capabilities", None),
            ("GET", "/", "search-system", None),
            ("GET", "/?_type=Patient", "search-system", None),
            ("HEAD", "/", "search-system", None),
            ("POST", "/_search", "search-system", None),
            ("POST", "/", "bundle-post", None),
            ("GET", "/_history", "history-system", None),
            ("GET", "/Patient", "search-type", p()),
            ("GET", "/Patient?name=x", "search-type", p()),
            ("POST", "/Patient/_search", "search-type", p()),
            ("POST", "/Patient", "create", p()),
            ("PUT", "/Patient?identifier=a|b", "conditional-update", p()),
            ("DELETE", "/Patient?identifier=a|b", "conditional-delete", p()),
            ("PATCH", "/Patient?identifier=a|b", "conditional-patch", p()),
            ("GET", "/Patient/_history", "history-type", p()),
            ("GET", "/Patient/1", "read", p()),
            ("HEAD", "/Patient/1", "read", p()),
            ("PUT", "/Patient/1", "update", p()),
            ("DELETE", "/Patient/1", "delete", p()),
            ("PATCH", "/Patient/1", "patch", p()),
            ("POST", "/Patient/1", UNKNOWN, p()),
            ("GET", "/Patient/1/_history", "history-instance", p()),
            ("GET", "/Patient/1/_history/2", "vread", p()),
            ("GET", "/Patient/1/$everything", "everything", p()),
            ("GET", "/Patient/$everything", "everything", p()),
            ("GET", "/Patient/1/%24everything", "everything", p()),
            ("POST", "/Patient/$validate", "validate", p()),
            ("POST", "/Patient/1/$validate", "validate", p()),
            ("POST", "/$reindex", "reindex", None),
            ("GET", "/_operations/reindex/abc", "reindex", None),
            ("GET", "/$export", "export", None),
            ("GET", "/Patient/$export", "export", p()),
            ("GET", "/Group/1/$export", "export", Some("Group".into())),
            ("GET", "/_operations/export/abc", "export", None),
            ("POST", "/$import", "import", None),
            ("GET", "/Patient/1/Observation", "search", Some("Observation".into())),
            ("POST", "/Patient/1/Observation/_search", "search", Some("Observation".into())),
            ("GET", "/_admin/apps", "admin", None),
            ("DELETE", "/_admin/roleAssignments/x", "admin", None),
            ("GET", "/_audit?operation=read", "audit", None),
            ("GET", "/$frobnicate", UNKNOWN, None),
            ("GET", "/_nothing", UNKNOWN, None),
            ("GET", "/Nothing", "search-type", None),
            ("GET", "/Nothing/1", "read", None),
            ("GET", "/Patient/1/_history/2/more", UNKNOWN, p()),
            ("DELETE", "/", UNKNOWN, None),
        ];
        for (method, path, expected, resource_type) in cases {
            assert_eq!(name(method, path), (*expected, resource_type.clone()), "{method} {path}");
        }
    }

    #[test]
    fn conditional_create_by_header() {
        assert_eq!(
            name_with("POST", "/Patient", &[("if-none-exist", "identifier=a|b")]),
            ("conditional-create", Some("Patient".into()))
        );
        // The header means nothing elsewhere.
        assert_eq!(name_with("PUT", "/Patient/1", &[("if-none-exist", "identifier=a|b")]).0, "update");
    }

    #[test]
    fn references() {
        assert_eq!(resource_reference("/Patient/1").as_deref(), Some("Patient/1"));
        assert_eq!(resource_reference("/Patient/1/_history/2").as_deref(), Some("Patient/1/_history/2"));
        assert_eq!(resource_reference("/Patient/1/$everything").as_deref(), Some("Patient/1"));
        assert_eq!(resource_reference("/Patient/1/Observation").as_deref(), Some("Patient/1"));
        assert_eq!(resource_reference("/Patient"), None);
        assert_eq!(resource_reference("/Patient/$validate"), None);
        assert_eq!(resource_reference("/Patient/_history"), None);
        assert_eq!(resource_reference("/Nothing/1"), None);
        assert_eq!(resource_reference("/"), None);
        assert_eq!(resource_reference("/fhir/Patient/1").as_deref(), Some("Patient/1"));
        assert_eq!(resource_reference("/_operations/reindex/1"), None);
    }
}
