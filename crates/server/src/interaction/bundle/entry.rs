//! Reading the request entries of a batch or transaction Bundle.
//!
//! Each `entry.request` becomes an [`Entry`] with a parsed [`Target`]. Everything that can be
//! checked without the database is checked here, before any transaction starts: the method and URL
//! shape, the resource type, the conditional headers, and the entry's validation issues (the whole
//! Bundle is validated once and its issues are split by entry).

use fhirside_store::SearchQuery;
use serde_json::{Map, Value};

use crate::error::FhirError;
use crate::interaction::search;
use crate::params::Params;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    /// The order in which a transaction processes entries (R4 http.html#trules).
    pub fn transaction_order(self) -> u8 {
        match self {
            Method::Delete => 0,
            Method::Post => 1,
            Method::Put | Method::Patch => 2,
            Method::Get | Method::Head => 3,
        }
    }
}

/// What an entry's `request.url` names.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// `Patient`
    Type(String),
    /// `Patient/123`
    Instance(String, String),
    /// `Patient/123/_history/2`
    Version(String, String, u64),
    /// `Patient?identifier=x`
    Search(String, Params),
}

impl Target {
    pub fn resource_type(&self) -> &str {
        match self {
            Target::Type(t) | Target::Instance(t, _) | Target::Version(t, _, _) | Target::Search(t, _) => t,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Entry {
    pub index: usize,
    pub full_url: Option<String>,
    pub method: Method,
    pub target: Target,
    pub resource: Option<Map<String, Value>>,
    /// The resource's own `id`, for PUT entries.
    pub body_id: Option<String>,
    pub if_none_exist: Option<SearchQuery>,
    pub if_match: Option<u64>,
    pub if_none_match: Option<u64>,
    pub if_modified_since: Option<i64>,
    /// Set when the resource was rewritten and indexed before the transaction.
    pub prepared: Option<super::prepare::Prepared>,
    /// The SMART limits of the caller, which every step of the entry respects.
    pub smart: Option<std::sync::Arc<crate::smart::SmartAccess>>,
}

/// Parses entry `index` of the Bundle. `issues` are the validator's issues for this entry.
pub(crate) fn parse(index: usize, entry: Value, base: &str, issues: Vec<fhir::Issue>) -> Result<Entry, FhirError> {
    let Value::Object(mut entry) = entry else {
        return Err(FhirError::bad_request("A Bundle entry must be an object."));
    };
    if !issues.is_empty() {
        return Err(FhirError::Invalid(issues));
    }
    let request = match entry.remove("request") {
        Some(Value::Object(request)) => request,
        _ => {
            return Err(FhirError::BadRequest {
                code: "required",
                diagnostics: "The entry has no request (method and url).".into(),
                expression: Some(format!("Bundle.entry[{index}].request")),
            })
        }
    };
    let text = |name: &str| request.get(name).and_then(Value::as_str);
    let method = match text("method") {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some("POST") => Method::Post,
        Some("PUT") => Method::Put,
        Some("PATCH") => Method::Patch,
        Some("DELETE") => Method::Delete,
        other => return Err(FhirError::bad_request(format!("The request method {other:?} is not supported."))),
    };
    let url = text("url").ok_or_else(|| FhirError::bad_request("The entry's request has no url."))?;
    let target = parse_url(url, base)?;
    let resource = match entry.remove("resource") {
        Some(Value::Object(resource)) => Some(resource),
        _ => None,
    };
    if method == Method::Patch {
        let kind = resource.as_ref().and_then(|r| r.get("resourceType")).and_then(Value::as_str);
        if !matches!(kind, Some("Binary" | "Parameters")) {
            return Err(FhirError::bad_request(
                "A PATCH entry's resource is a Binary (JSON Patch) or a Parameters (FHIRPath Patch).",
            ));
        }
    }
    if matches!(method, Method::Post | Method::Put) {
        let Some(resource) = &resource else {
            return Err(FhirError::bad_request(format!("A {method:?} entry needs a resource.")));
        };
        let body_type = resource.get("resourceType").and_then(Value::as_str).unwrap_or_default();
        if body_type != target.resource_type() {
            return Err(FhirError::bad_request(format!(
                "The resource is a {body_type} but request.url names {}.",
                target.resource_type()
            )));
        }
    }
    let body_id = resource.as_ref().and_then(|r| r.get("id")).and_then(Value::as_str).map(str::to_owned);
    if let (Method::Put, Target::Instance(_, id)) = (method, &target) {
        if body_id.as_deref() != Some(id.as_str()) {
            return Err(FhirError::bad_request(format!("The resource's id must be '{id}', as in request.url.")));
        }
    }
    let if_none_exist = match text("ifNoneExist") {
        None => None,
        Some(query) => {
            let query = query.split_once('?').map_or(query, |(_, q)| q);
            Some(search::conditional(target.resource_type(), &Params::parse(Some(query)))?)
        }
    };
    let etag = |name: &str| -> Result<Option<u64>, FhirError> {
        match text(name) {
            None => Ok(None),
            Some(value) => crate::interaction::parse_etag(value)
                .map(Some)
                .ok_or_else(|| FhirError::bad_request(format!("request.{name} '{value}' is not a valid ETag."))),
        }
    };
    let if_modified_since = match text("ifModifiedSince") {
        None => None,
        Some(value) => Some(
            fhir::datetime::parse_instant(value)
                .map_err(|_| FhirError::bad_request(format!("request.ifModifiedSince '{value}' is not an instant.")))?
                .range_micros()
                .0,
        ),
    };
    Ok(Entry {
        index,
        full_url: entry.get("fullUrl").and_then(Value::as_str).map(str::to_owned),
        method,
        target,
        resource,
        body_id,
        if_none_exist,
        if_match: etag("ifMatch")?,
        if_none_match: etag("ifNoneMatch")?,
        if_modified_since,
        prepared: None,
        smart: None,
    })
}

/// `request.url`, relative to the base (an absolute URL on this server's base is accepted too).
fn parse_url(url: &str, base: &str) -> Result<Target, FhirError> {
    let relative = url.strip_prefix(base).map(|rest| rest.trim_start_matches('/')).unwrap_or(url);
    if relative.starts_with("http://") || relative.starts_with("https://") {
        return Err(FhirError::bad_request(format!("request.url '{url}' is not on this server.")));
    }
    let relative = relative.trim_start_matches('/');
    let (path, query) = relative.split_once('?').map_or((relative, None), |(p, q)| (p, Some(q)));
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let unsupported = || FhirError::bad_request(format!("request.url '{url}' is not supported in a Bundle entry."));
    let known = |t: &str| -> Result<String, FhirError> { Ok(crate::interaction::resource_type(t)?.to_owned()) };
    match (segments.as_slice(), query) {
        ([t], Some(q)) if !q.is_empty() => Ok(Target::Search(known(t)?, Params::parse(Some(q)))),
        ([t], _) => Ok(Target::Type(known(t)?)),
        ([t, id], None) if fhir::is_valid_id(id) => Ok(Target::Instance(known(t)?, (*id).to_owned())),
        ([t, id, "_history", v], None) => {
            let version = v.parse().map_err(|_| unsupported())?;
            Ok(Target::Version(known(t)?, (*id).to_owned(), version))
        }
        _ => Err(unsupported()),
    }
}

/// Splits the validator's issues for a Bundle by entry index; issues outside entries come back
/// under `None`.
pub(crate) fn split_issues(
    issues: Vec<fhir::Issue>,
) -> (Vec<fhir::Issue>, std::collections::HashMap<usize, Vec<fhir::Issue>>) {
    let mut bundle_level = Vec::new();
    let mut by_entry: std::collections::HashMap<usize, Vec<fhir::Issue>> = std::collections::HashMap::new();
    for issue in issues {
        if !matches!(issue.severity, fhir::Severity::Error | fhir::Severity::Fatal) {
            continue;
        }
        let index = issue
            .expression
            .strip_prefix("Bundle.entry[")
            .and_then(|rest| rest.split_once(']'))
            .and_then(|(n, _)| n.parse::<usize>().ok());
        match index {
            Some(i) => by_entry.entry(i).or_default().push(issue),
            None => bundle_level.push(issue),
        }
    }
    (bundle_level, by_entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(matches!(parse_url("Patient", "https://x"), Ok(Target::Type(t)) if t == "Patient"));
        assert!(matches!(parse_url("https://x/Patient/1", "https://x"), Ok(Target::Instance(_, id)) if id == "1"));
        assert!(matches!(parse_url("/Patient/1/_history/3", "https://x"), Ok(Target::Version(_, _, 3))));
        assert!(
            matches!(parse_url("Patient?identifier=a|b", "https://x"), Ok(Target::Search(_, p)) if p.get("identifier") == Some("a|b"))
        );
        assert!(parse_url("https://elsewhere/Patient/1", "https://x").is_err());
        assert!(parse_url("Nope/1", "https://x").is_err());
        assert!(parse_url("Patient/1/extra", "https://x").is_err());
    }
}
