//! patch: `PATCH /{type}/{id}` and conditional `PATCH /{type}?…`
//! (<https://hl7.org/fhir/R4/http.html#patch>).
//!
//! Accepts JSON Patch (`application/json-patch+json`) and FHIRPath Patch (a `Parameters` resource
//! as `application/fhir+json`). The read of the current version, the patch, the validation of the
//! result and the write happen in one store transaction, so a concurrent update cannot slip in
//! between (and `If-Match` is checked against the version patched). A patch that does not apply, or
//! whose result is not a valid resource or changes its type or id, answers `422`; a malformed patch
//! document `400`. Bundle entries use the same code ([`patch_in`]).

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use fhirside_store::{StoredVersion, Transaction, Unstamped, WriteOp, WriteResult};
use serde_json::{json, Value};

use crate::error::FhirError;
use crate::extract::Segments;
use crate::patching::fhirpath_patch;
use crate::patching::json_patch::{self, PatchError};
use crate::response::{self, ResourceResponse};
use crate::smart::{Interaction, SmartAccess};
use crate::{indexing, AppState};

use super::{needs, search, Call};

/// Which resource to patch.
pub(crate) enum Target {
    Instance(String),
    Search(fhirside_store::SearchQuery),
}

/// A patch in one of the two formats FHIR R4 allows.
pub(crate) enum PatchDocument {
    /// RFC 6902 operations.
    Json(Value),
    /// A `Parameters` resource of FHIRPath Patch operations.
    FhirPath(Value),
}

impl PatchDocument {
    fn apply(&self, resource: &mut Value) -> Result<(), PatchError> {
        match self {
            PatchDocument::Json(patch) => json_patch::apply(resource, patch),
            PatchDocument::FhirPath(parameters) => fhirpath_patch::apply(resource, parameters),
        }
    }
}

pub(crate) async fn handle(
    State(state): State<AppState>,
    Segments((segment, id)): Segments<(String, String)>,
    request: Request,
) -> Result<Response, FhirError> {
    let call = Call::new(request);
    let resource_type = super::resource_type(&segment)?.to_owned();
    super::writable_id(&id)?;
    run(&state, call, resource_type, Target::Instance(id)).await
}

pub(crate) async fn conditional(
    State(state): State<AppState>,
    Segments(segment): Segments<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let call = Call::new(request);
    let resource_type = super::resource_type(&segment)?.to_owned();
    let mut query = search::conditional(&resource_type, &call.params)?;
    call.restrict_conditional(&mut query)?;
    run(&state, call, resource_type, Target::Search(query)).await
}

async fn run(state: &AppState, mut call: Call, resource_type: String, target: Target) -> Result<Response, FhirError> {
    call.authorize_any_of(match &target {
        Target::Instance(_) => needs::PATCH,
        Target::Search(_) => needs::CONDITIONAL_UPDATE,
    })?;
    let format = call.format()?;
    let prefer = call.prefer()?;
    let if_match = call.if_match()?;
    let content_type = call.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let json_patch = match essence.as_str() {
        "application/json-patch+json" => true,
        "application/fhir+json" | "application/json" => false,
        _ => {
            return Err(FhirError::UnsupportedMediaType(format!(
                "PATCH takes application/json-patch+json (JSON Patch) or application/fhir+json (FHIRPath Patch \
                 Parameters), not '{content_type}'."
            )))
        }
    };
    let bytes = super::read_body(std::mem::take(&mut call.body), state.config.max_body_bytes).await?;
    let body: Value = serde_json::from_slice(&bytes)
        .map_err(|e| FhirError::bad_request(format!("The patch document is not valid JSON: {e}.")))?;
    let patch = if json_patch {
        PatchDocument::Json(body)
    } else if body.get("resourceType").and_then(Value::as_str) == Some("Parameters") {
        PatchDocument::FhirPath(body)
    } else {
        return Err(FhirError::bad_request("A FHIRPath Patch must be a Parameters resource."));
    };

    call.require_scope(&resource_type, Interaction::Update)?;
    let smart = call.smart_shared();
    let (version, cost) = super::in_transaction(state, move |tx| {
        patch_in(tx, &resource_type, target, &patch, if_match, smart.as_deref())
    })
    .await?;
    response::resource(ResourceResponse {
        status: StatusCode::OK,
        version: &version,
        format,
        return_: prefer.return_,
        cost,
        location: false,
    })
}

/// Reads the target's current version, patches it, validates the result and writes it, inside `tx`.
pub(crate) fn patch_in(
    tx: &mut dyn Transaction,
    resource_type: &str,
    target: Target,
    patch: &PatchDocument,
    if_match: Option<u64>,
    smart: Option<&SmartAccess>,
) -> Result<StoredVersion, FhirError> {
    let current = match target {
        Target::Instance(id) => tx
            .read(resource_type, &id)?
            .ok_or_else(|| FhirError::NotFound { resource_type: resource_type.to_owned(), id: id.clone() })?,
        Target::Search(query) => match tx.search(&query, 2)?.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(FhirError::NoMatch(format!("No {resource_type} matches the conditional patch's criteria.")))
            }
            _ => return Err(FhirError::NotSelective { resource_type: resource_type.to_owned() }),
        },
    };
    if current.deleted {
        return Err(FhirError::Gone { resource_type: current.resource_type, id: current.id, version: current.version });
    }
    if let Some(smart) = smart {
        smart.check_existing(&current, Interaction::Update)?;
    }
    if let Some(expected) = if_match {
        if expected != current.version {
            return Err(FhirError::VersionMismatch { supplied: expected.to_string() });
        }
    }
    let mut resource: Value =
        serde_json::from_slice(&current.body).map_err(|e| FhirError::Internal(format!("stored JSON: {e}")))?;
    patch.apply(&mut resource).map_err(|error| match error {
        PatchError::Malformed(m) => FhirError::bad_request(format!("The patch document is malformed: {m}.")),
        PatchError::Unprocessable(m) => unprocessable("processing", format!("The patch could not be applied: {m}.")),
    })?;
    if resource.get("resourceType").and_then(Value::as_str) != Some(resource_type)
        || resource.get("id").and_then(Value::as_str) != Some(current.id.as_str())
    {
        return Err(unprocessable("invalid", "A patch may not change the resource's type or id.".into()));
    }
    let issues = fhir::validate::validate_resource(&resource);
    if fhir::validate::has_errors(&issues) {
        return Err(FhirError::Unprocessable(issues.iter().map(fhir::Issue::to_json).collect()));
    }
    let Value::Object(mut resource) = resource else { unreachable!("resourceType was checked") };
    let index = indexing::extract(resource_type, &mut resource);
    if let Some(smart) = smart {
        smart.check_write(resource_type, Interaction::Update, Some(&current.id), &index)?;
    }
    let op = WriteOp::Update {
        resource_type: resource_type.to_owned(),
        id: current.id.clone(),
        resource: Unstamped::new(resource),
        index,
        if_match: Some(current.version),
    };
    match tx.write(op)? {
        WriteResult::Updated(v) | WriteResult::Created(v) => Ok(v),
        other => Err(FhirError::Internal(format!("patch produced {other:?}"))),
    }
}

fn unprocessable(code: &str, diagnostics: String) -> FhirError {
    FhirError::Unprocessable(vec![json!({"severity": "error", "code": code, "diagnostics": diagnostics})])
}
