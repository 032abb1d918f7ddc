//! The FHIR RESTful interactions, one module each (<https://hl7.org/fhir/R4/http.html>).
//!
//! `system`, `type_level` and `instance` only dispatch: FHIR paths put `_history`, `_search` and
//! `$operation` where an id could be, so the router hands those segments here to pick the
//! interaction. Every interaction module reads like the spec section it cites.

pub(crate) mod bundle;
pub(crate) mod capabilities;
pub(crate) mod create;
pub(crate) mod delete;
pub(crate) mod everything;
pub(crate) mod export;
pub(crate) mod fallback;
pub(crate) mod history;
pub(crate) mod import;
pub(crate) mod instance;
pub(crate) mod patch;
pub(crate) mod read;
pub(crate) mod reindex;
pub(crate) mod search;
pub(crate) mod system;
pub(crate) mod type_level;
pub(crate) mod update;
pub(crate) mod validate;
pub(crate) mod vread;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap};
use serde_json::{Map, Value};

use crate::auth::{self, DataAction, Principal};
use crate::error::FhirError;
use crate::negotiate::{self, Format, Prefer};
use crate::params::Params;
use crate::smart::{Interaction, SmartAccess};

/// The parts of a request every interaction uses.
pub(crate) struct Call {
    pub headers: HeaderMap,
    pub params: Params,
    pub path: String,
    pub body: Body,
    principal: Option<Principal>,
}

impl Call {
    pub fn new(request: Request) -> Call {
        let (mut parts, body) = request.into_parts();
        Call {
            params: Params::parse(parts.uri.query()),
            path: parts.uri.path().to_owned(),
            principal: parts.extensions.remove::<Principal>(),
            headers: parts.headers,
            body,
        }
    }

    /// Fails with `403` unless the caller holds `action`.
    pub fn authorize(&self, action: DataAction) -> Result<(), FhirError> {
        match &self.principal {
            Some(principal) => auth::authorize(principal, action),
            None => Err(FhirError::Forbidden),
        }
    }

    /// Fails with `403` unless the caller holds all the actions of at least one of `alternatives`
    /// (see [`needs`]).
    pub fn authorize_any_of(&self, alternatives: &[&[DataAction]]) -> Result<(), FhirError> {
        match &self.principal {
            Some(principal) if needs::met(principal, alternatives) => Ok(()),
            _ => Err(FhirError::Forbidden),
        }
    }

    /// The caller's object id (`oid`); empty when authentication is off.
    pub fn caller(&self) -> &str {
        self.principal.as_ref().map_or("", |p| p.object_id.as_str())
    }

    /// The caller's SMART limits, shared, for work that outlives the call (a store transaction).
    pub fn smart_shared(&self) -> Option<std::sync::Arc<SmartAccess>> {
        self.principal.as_ref().and_then(|p| p.smart.clone())
    }

    /// Adds a SMART caller's reach to the query of a conditional interaction, so that it can neither
    /// match nor reveal what the caller may not search.
    pub fn restrict_conditional(&self, query: &mut fhirside_store::SearchQuery) -> Result<(), FhirError> {
        if let Some(smart) = self.smart() {
            smart.restrict_clauses(&mut query.clauses)?;
            query.clauses.extend(smart.search_clause(&query.types, Interaction::Search)?);
        }
        Ok(())
    }

    /// The caller's SMART limits, when it is a SMART caller.
    pub fn smart(&self) -> Option<&SmartAccess> {
        self.principal.as_ref().and_then(|p| p.smart.as_deref())
    }

    /// Whether a SMART caller's scopes reach this stored version (always, for other callers).
    pub fn may_see(&self, version: &fhirside_store::StoredVersion, interaction: Interaction) -> bool {
        self.smart().is_none_or(|smart| smart.permits_version(version, interaction))
    }

    /// Fails with `403` unless a SMART caller's scopes grant `interaction` on `resource_type`.
    pub fn require_scope(&self, resource_type: &str, interaction: Interaction) -> Result<(), FhirError> {
        match self.smart() {
            Some(smart) => smart.require(resource_type, interaction),
            None => Ok(()),
        }
    }

    pub fn format(&self) -> Result<Format, FhirError> {
        negotiate::response_format(&self.headers, &self.params)
    }

    pub fn prefer(&self) -> Result<Prefer, FhirError> {
        negotiate::prefer(&self.headers)
    }

    /// The request URL, for `self` links.
    pub fn self_link(&self) -> String {
        let query = self.params.encode_without(&[]);
        let base = crate::context::base_url();
        if query.is_empty() {
            format!("{base}{}", self.path)
        } else {
            format!("{base}{}?{query}", self.path)
        }
    }

    /// The link to the next page: this request's URL with its continuation token replaced by
    /// `token` (a `POST …/_search` continues as a GET on the type).
    pub fn next_link(&self, token: &str) -> String {
        let rest = self.params.encode_without(&["ct"]);
        let sep = if rest.is_empty() { "" } else { "&" };
        let path = self.path.strip_suffix("/_search").unwrap_or(&self.path);
        format!("{}{path}?{rest}{sep}ct={token}", crate::context::base_url())
    }

    /// `If-Match: W/"3"` as a version number.
    pub fn if_match(&self) -> Result<Option<u64>, FhirError> {
        let Some(value) = self.headers.get(header::IF_MATCH) else { return Ok(None) };
        let text = value.to_str().unwrap_or("");
        parse_etag(text).map(Some).ok_or_else(|| {
            FhirError::bad_request(format!("The If-Match header '{text}' is not a valid ETag such as W/\"1\"."))
        })
    }

    /// Reads the body (up to the configured limit) and parses it as a valid resource of `resource_type`.
    pub async fn resource(self, resource_type: &str, limit: usize) -> Result<Map<String, Value>, FhirError> {
        negotiate::require_json_body(&self.headers)?;
        let bytes = read_body(self.body, limit).await?;
        parse_resource(&bytes, resource_type)
    }
}

/// What the interactions that need more than one data action require, as Azure's FHIR service
/// decides it (its `AuthorizationServiceExtensions`): any one alternative suffices, and an
/// alternative needs all of its actions. The second alternative of each is made of SMART v2's
/// granular actions (`search`, `create`, `update`).
pub(crate) mod needs {
    use crate::auth::{DataAction as A, Principal};

    pub type Requirement = &'static [&'static [A]];

    /// Conditional create (`If-None-Exist`): it searches, then writes.
    pub const CONDITIONAL_CREATE: Requirement = &[&[A::Read, A::Write], &[A::Search, A::Create]];
    /// Conditional update and conditional patch.
    pub const CONDITIONAL_UPDATE: Requirement = &[&[A::Read, A::Write], &[A::Search, A::Update]];
    /// Patch: it reads the current version, then writes.
    pub const PATCH: Requirement = &[&[A::Read, A::Write], &[A::Update]];
    pub const CONDITIONAL_DELETE: Requirement = &[&[A::Read, A::Delete], &[A::Search, A::Delete]];

    pub(crate) fn met(principal: &Principal, alternatives: &[&[A]]) -> bool {
        alternatives.iter().any(|all| all.iter().all(|a| crate::auth::authorize(principal, *a).is_ok()))
    }
}

/// Refuses an instance-level write whose "id" is a keyword (`_history`, `$validate`, …): those paths
/// name no resource to update, patch or delete.
pub(crate) fn writable_id(id: &str) -> Result<(), FhirError> {
    if id.starts_with('$') || id.starts_with('_') {
        Err(FhirError::MethodNotAllowed)
    } else {
        Ok(())
    }
}

/// `W/"3"`, `"3"` or `3`.
pub(crate) fn parse_etag(text: &str) -> Option<u64> {
    let text = text.trim();
    let text = text.strip_prefix("W/").unwrap_or(text);
    text.trim_matches('"').parse().ok()
}

pub(crate) async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, FhirError> {
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(FhirError::PayloadTooLarge { limit }),
        Err(error) => Err(FhirError::bad_request(format!("The request body could not be read: {error}"))),
    }
}

/// Parses and validates a resource body; `resource_type` is the type the URL names.
pub(crate) fn parse_resource(bytes: &[u8], resource_type: &str) -> Result<Map<String, Value>, FhirError> {
    if bytes.is_empty() {
        return Err(FhirError::bad_request("The request body is empty; a FHIR resource is required."));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| FhirError::BadRequest {
        code: "structure",
        diagnostics: format!("The request body is not valid JSON: {e}."),
        expression: None,
    })?;
    let Value::Object(resource) = value else {
        return Err(FhirError::BadRequest {
            code: "structure",
            diagnostics: "The request body must be a JSON object holding a FHIR resource.".into(),
            expression: None,
        });
    };
    match resource.get("resourceType").and_then(Value::as_str) {
        Some(t) if t == resource_type => {}
        Some(t) => {
            return Err(FhirError::BadRequest {
                code: "invalid",
                diagnostics: format!("Resource type in the body ('{t}') does not match the URL ('{resource_type}')."),
                expression: Some("resourceType".into()),
            })
        }
        None => {
            return Err(FhirError::BadRequest {
                code: "required",
                diagnostics: "The resource has no resourceType.".into(),
                expression: Some("resourceType".into()),
            })
        }
    }
    let object = Value::Object(resource);
    let issues = fhir::validate::validate_resource(&object);
    if issues.iter().any(|i| matches!(i.severity, fhir::Severity::Error | fhir::Severity::Fatal)) {
        return Err(FhirError::Invalid(issues));
    }
    match object {
        Value::Object(resource) => Ok(resource),
        _ => unreachable!("checked above"),
    }
}

/// Checks that `segment` names an R4 resource type.
pub(crate) fn resource_type(segment: &str) -> Result<&str, FhirError> {
    if fhir::definitions().is_resource_type(segment) {
        Ok(segment)
    } else {
        Err(FhirError::UnsupportedResourceType(segment.to_owned()))
    }
}

/// A page size from `_count`: the default when absent, clamped to the maximum as Azure does.
pub(crate) fn page_size(params: &Params, default: u32, max: u32) -> Result<u32, FhirError> {
    match params.get("_count") {
        None => Ok(default),
        Some(text) => {
            let n: u64 = text
                .parse()
                .map_err(|_| FhirError::bad_request(format!("_count must be a non-negative integer, not '{text}'.")))?;
            Ok(n.clamp(1, u64::from(max)) as u32)
        }
    }
}

/// `POST …/_search`: parameters may come in the form body as well as the URL; both apply.
pub(crate) async fn merge_form_body(state: &crate::AppState, call: &mut Call) -> Result<(), FhirError> {
    let form = read_body(std::mem::take(&mut call.body), state.config.max_body_bytes).await?;
    let form = std::str::from_utf8(&form).map_err(|_| FhirError::bad_request("The form body is not UTF-8."))?;
    call.params.0.extend(Params::parse(Some(form)).0);
    Ok(())
}

/// Runs `work` in one store transaction and hands back its result. The work is queued before this
/// returns, so several calls made before awaiting share one commit.
pub(crate) fn in_transaction<T: Send + 'static>(
    state: &crate::AppState,
    work: impl FnOnce(&mut dyn fhirside_store::Transaction) -> Result<T, FhirError> + Send + 'static,
) -> impl std::future::Future<Output = Result<(T, fhirside_store::Cost), FhirError>> + Send + '_ {
    use fhirside_store::StoreError;
    let (send, receive) = tokio::sync::oneshot::channel();
    let stored = state.store.transaction(Box::new(move |tx: &mut dyn fhirside_store::Transaction| {
        let result = work(tx);
        let failed = result.is_err();
        let _ = send.send(result);
        if failed {
            Err(StoreError::RolledBack)
        } else {
            Ok(())
        }
    }));
    async move {
        let cost = match stored.await {
            Ok(outcome) => outcome.cost,
            Err(StoreError::RolledBack) => fhirside_store::Cost::default(),
            Err(error) => return Err(error.into()),
        };
        let value = receive.await.map_err(|_| FhirError::Internal("transaction work vanished".into()))??;
        Ok((value, cost))
    }
}
