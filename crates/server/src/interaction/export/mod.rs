//! `$export` (HL7 FHIR Bulk Data Access IG 2.0, with Azure's additions): kick-off at system level
//! (`GET|POST /$export`), patient level (`/Patient/$export`) and group level
//! (`/Group/{id}/$export`).
//!
//! The kick-off checks everything it can (the `Prefer` and `Accept` headers, every parameter),
//! queues an export job in the store's job table and answers `202 Accepted` with the status URL in
//! `Content-Location` ([`status`]). The job ([`job`]) writes one NDJSON file per type, split by
//! size, of the resources as they were at the kick-off's instant (`transactionTime`).

pub(crate) mod job;
pub(crate) mod status;

use std::collections::BTreeMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::DataAction;
use crate::error::FhirError;
use crate::negotiate::Handling;
use crate::params::Params;
use crate::smart::Interaction;
use crate::AppState;

use super::{search, Call};

/// The kind of export jobs in the job table.
pub(crate) const EXPORT: &str = "export";

/// The output formats the IG names for NDJSON; all mean the same.
const OUTPUT_FORMATS: [&str; 3] = ["application/fhir+ndjson", "application/ndjson", "ndjson"];

/// Which resources an export covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "level", rename_all = "lowercase")]
pub(crate) enum Level {
    /// Everything.
    System,
    /// The compartments of every patient, or of the `patient` parameter's.
    Patient { patients: Option<Vec<String>> },
    /// The compartments of a Group's member patients (read when the job starts).
    Group { id: String },
}

/// What an export job was asked to do, as queued.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ExportDefinition {
    #[serde(flatten)]
    pub level: Level,
    /// The types to export, in order; every type the level allows when the request named none.
    pub types: Vec<String>,
    /// `_typeFilter`: per type, search queries of which a resource must match one.
    pub type_filters: BTreeMap<String, Vec<String>>,
    /// `_since` and `_until`, in microseconds since the epoch.
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// `_elements`: element names, each for every type or (`Type.element`) for one.
    pub elements: Option<Vec<String>>,
    /// `includeAssociatedData=_history`: every version current at some point before the
    /// transaction time, not only the last.
    pub history: bool,
    /// `includeAssociatedData=_deleted`: also each deleted resource's last version, marked as
    /// Azure marks soft-deleted resources ([`SOFT_DELETED`]).
    #[serde(default)]
    pub deleted: bool,
    /// Where the files go: a container, and a key prefix within it (the job's own).
    pub container: String,
    pub prefix: String,
    /// The kick-off's instant, in microseconds: the snapshot's time and the manifest's
    /// `transactionTime`.
    pub transaction_time: i64,
    /// The kick-off request's URL, for the manifest's `request`.
    pub request: String,
    /// Who asked (`oid`), recorded with the job.
    pub caller: String,
}

pub(crate) async fn kick_off(state: &AppState, call: Call, level: KickOffLevel<'_>) -> Result<Response, FhirError> {
    call.authorize(DataAction::Export)?;
    let mut call = call;
    require_async_and_fhir_json(&call)?;
    let params = match call.headers.get(header::CONTENT_TYPE) {
        Some(_) => {
            let body = super::read_body(std::mem::take(&mut call.body), state.config.max_body_bytes).await?;
            if body.is_empty() {
                call.params.clone()
            } else {
                parameters_body(&body)?
            }
        }
        None => call.params.clone(),
    };
    let request = ExportRequest::parse(&params, &level)?;
    if state.bulk.is_none() {
        return Err(FhirError::BadRequest {
            code: "not-supported",
            diagnostics: "Bulk export is not configured on this server.".into(),
            expression: None,
        });
    }
    let level = match level {
        KickOffLevel::System => Level::System,
        KickOffLevel::Patient => Level::Patient { patients: request.patients.clone() },
        KickOffLevel::Group(id) => {
            // The group must exist now; its members are read when the job starts.
            match state.store.read("Group", id).await?.value {
                Some(v) if !v.deleted => Level::Group { id: id.to_owned() },
                _ => return Err(FhirError::NotFound { resource_type: "Group".into(), id: id.to_owned() }),
            }
        }
    };
    let types = match &request.types {
        Some(types) => types.clone(),
        None => default_types(&level),
    };
    if let Some(smart) = call.smart() {
        // A SMART backend service exports what its scopes let it read.
        for resource_type in &types {
            smart.require(resource_type, Interaction::Read)?;
        }
    }
    let active = state.store.jobs().active(EXPORT).await?;
    if active >= i64::from(state.config.export.max_concurrent) {
        return Err(FhirError::TooManyRequests {
            diagnostics: format!(
                "{active} exports are already running, the most this server runs at once; retry later."
            ),
            retry_after: 30,
        });
    }
    let id = crate::ids::new_id();
    let (container, prefix) = match &request.container {
        // Azure: a folder of the named container, or a new container of the job's own.
        Some(container) => (container.clone(), format!("{id}/")),
        None => (format!("fhirexport-{}", id.replace('-', "")), String::new()),
    };
    let definition = ExportDefinition {
        level,
        types,
        type_filters: request.type_filters,
        since: request.since,
        until: request.until,
        elements: request.elements,
        history: request.history,
        deleted: request.deleted,
        container,
        prefix,
        transaction_time: fhir::datetime::now_micros(),
        request: call.self_link(),
        caller: call.caller().to_owned(),
    };
    let job = fhirside_store::NewJob {
        id: id.clone(),
        kind: EXPORT.into(),
        definition: serde_json::to_string(&definition).map_err(|e| FhirError::Internal(e.to_string()))?,
        singleton: false,
    };
    state.store.jobs().enqueue(&job).await?;
    state.jobs.wake();
    let mut response = StatusCode::ACCEPTED.into_response();
    let location = format!("{}/_operations/export/{id}", crate::context::base_url());
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::CONTENT_LOCATION, value);
    }
    Ok(response)
}

/// Where the kick-off was addressed.
pub(crate) enum KickOffLevel<'a> {
    System,
    Patient,
    Group(&'a str),
}

/// The IG requires both: an asynchronous request, answered in FHIR JSON when it fails.
fn require_async_and_fhir_json(call: &Call) -> Result<(), FhirError> {
    let prefer = call.headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
    if !prefer.split(',').any(|p| p.trim().eq_ignore_ascii_case("respond-async")) {
        return Err(FhirError::bad_request("$export is asynchronous: send the header 'Prefer: respond-async'."));
    }
    let accept = call.headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let fhir_json = accept.split(',').any(|a| a.split(';').next().unwrap_or("").trim() == "application/fhir+json");
    if !fhir_json {
        return Err(FhirError::bad_request("$export needs the header 'Accept: application/fhir+json'."));
    }
    Ok(())
}

/// A `POST` kick-off's `Parameters`, as the query parameters they stand for.
fn parameters_body(body: &[u8]) -> Result<Params, FhirError> {
    let resource: Value = serde_json::from_slice(body)
        .map_err(|e| FhirError::bad_request(format!("The request body is not valid JSON: {e}.")))?;
    if resource.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(FhirError::bad_request("A POST $export takes a Parameters resource."));
    }
    let mut pairs: Vec<(String, String)> = Vec::new();
    for parameter in resource.get("parameter").and_then(Value::as_array).into_iter().flatten() {
        let name = parameter.get("name").and_then(Value::as_str).unwrap_or("");
        let value = ["valueString", "valueCode", "valueInstant", "valueDateTime", "valueUri"]
            .iter()
            .find_map(|k| parameter.get(*k).and_then(Value::as_str).map(str::to_owned))
            .or_else(|| {
                parameter
                    .get("valueReference")
                    .and_then(|r| r.get("reference"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        match value {
            Some(value) => pairs.push((name.to_owned(), value)),
            None => {
                return Err(FhirError::bad_request(format!("The parameter '{name}' has no value of a known type.")))
            }
        }
    }
    let query = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
    Ok(Params::parse(Some(&query)))
}

/// The extension Azure's service marks a soft-deleted resource with in exports, and accepts in an
/// `IncrementalLoad` import (AZURE-COMPAT §3): `meta.extension` with this URL and `valueString`
/// `soft-deleted`.
pub(crate) const SOFT_DELETED: &str = "http://azurehealthcareapis.com/data-extensions/deleted-state";

/// The kick-off's parameters, checked.
struct ExportRequest {
    types: Option<Vec<String>>,
    type_filters: BTreeMap<String, Vec<String>>,
    since: Option<i64>,
    until: Option<i64>,
    elements: Option<Vec<String>>,
    patients: Option<Vec<String>>,
    history: bool,
    deleted: bool,
    container: Option<String>,
}

const PARAMETERS: [&str; 11] = [
    "_outputFormat",
    "_since",
    "_until",
    "_till",
    "_type",
    "_typeFilter",
    "_elements",
    "patient",
    "includeAssociatedData",
    "_container",
    "_format",
];

impl ExportRequest {
    fn parse(params: &Params, level: &KickOffLevel<'_>) -> Result<ExportRequest, FhirError> {
        if let Some((name, _)) = params.iter().find(|(name, _)| !PARAMETERS.contains(name)) {
            return Err(FhirError::bad_request(format!("The parameter '{name}' is not supported by $export.")));
        }
        if let Some(format) = params.get("_outputFormat") {
            if !OUTPUT_FORMATS.contains(&format) {
                return Err(FhirError::bad_request(format!(
                    "_outputFormat '{format}' is not supported; use application/fhir+ndjson."
                )));
            }
        }
        let instant = |name: &str| -> Result<Option<i64>, FhirError> {
            match params.get(name) {
                None => Ok(None),
                Some(text) => search::search_date(text)
                    .map(|(low, _)| Some(low))
                    .ok_or_else(|| FhirError::bad_request(format!("{name} must be a FHIR instant, not '{text}'."))),
            }
        };
        let since = instant("_since")?;
        let until = instant("_until")?.or(instant("_till")?);
        let types = match params.get("_type") {
            None => None,
            Some(list) => {
                let types: Vec<String> =
                    list.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect();
                if let Some(unknown) = types.iter().find(|t| !fhir::definitions().is_resource_type(t)) {
                    return Err(FhirError::bad_request(format!(
                        "_type names '{unknown}', which is not a resource type."
                    )));
                }
                if let KickOffLevel::Patient | KickOffLevel::Group(_) = level {
                    if let Some(outside) = types.iter().find(|t| !crate::smart::access::in_patient_compartment(t)) {
                        return Err(FhirError::bad_request(format!(
                            "_type names '{outside}', which is not in the Patient compartment that a patient or group \
                             export covers."
                        )));
                    }
                }
                Some(types)
            }
        };
        let mut type_filters: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in params.iter() {
            if name != "_typeFilter" {
                continue;
            }
            for filter in value.split(',').filter(|f| !f.is_empty()) {
                let (resource_type, query) = filter.split_once('?').ok_or_else(|| {
                    FhirError::bad_request(format!("_typeFilter '{filter}' is not Type?search-parameters."))
                })?;
                if !fhir::definitions().is_resource_type(resource_type) {
                    return Err(FhirError::bad_request(format!(
                        "_typeFilter names an unknown type '{resource_type}'."
                    )));
                }
                if types.as_ref().is_some_and(|t| !t.iter().any(|t| t == resource_type)) {
                    return Err(FhirError::bad_request(format!(
                        "_typeFilter names {resource_type}, which _type does not include."
                    )));
                }
                // Checked now, so that a typo fails the kick-off rather than the job.
                search::parse(resource_type, &Params::parse(Some(query)), Handling::Strict)?;
                type_filters.entry(resource_type.to_owned()).or_default().push(query.to_owned());
            }
        }
        let elements = params.get("_elements").map(|list| {
            list.split(',').map(str::trim).filter(|e| !e.is_empty()).map(str::to_owned).collect::<Vec<_>>()
        });
        if let Some(elements) = &elements {
            for element in elements {
                let (resource_type, name) =
                    element.split_once('.').map_or((None, element.as_str()), |(t, n)| (Some(t), n));
                let valid = name.chars().all(|c| c.is_ascii_alphanumeric())
                    && resource_type.is_none_or(|t| fhir::definitions().is_resource_type(t));
                if !valid || name.is_empty() {
                    return Err(FhirError::bad_request(format!(
                        "_elements names '{element}', which is not an element."
                    )));
                }
            }
        }
        let patients = {
            let references: Vec<&str> = params.iter().filter(|(n, _)| *n == "patient").map(|(_, v)| v).collect();
            if references.is_empty() {
                None
            } else if !matches!(level, KickOffLevel::Patient) {
                return Err(FhirError::bad_request("The patient parameter applies to a patient-level export only."));
            } else {
                let ids = references
                    .iter()
                    .map(|r| {
                        r.strip_prefix("Patient/").filter(|id| fhir::is_valid_id(id)).map(str::to_owned).ok_or_else(
                            || FhirError::bad_request(format!("patient '{r}' is not a reference such as Patient/123.")),
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Some(ids)
            }
        };
        let (mut history, mut deleted) = (false, false);
        if let Some(list) = params.get("includeAssociatedData") {
            for value in list.split(',').map(str::trim) {
                match value {
                    "_history" => history = true,
                    "_deleted" => deleted = true,
                    other => {
                        return Err(FhirError::BadRequest {
                            code: "not-supported",
                            diagnostics: format!(
                                "includeAssociatedData '{other}' is not supported; this server supports _history and \
                                 _deleted."
                            ),
                            expression: None,
                        })
                    }
                }
            }
            // As Azure's service: a filter judges a resource by its current version, which a
            // deleted resource or an old version is not.
            if !type_filters.is_empty() {
                return Err(FhirError::bad_request("includeAssociatedData cannot be combined with _typeFilter."));
            }
        }
        let container = match params.get("_container") {
            None => None,
            Some(name) if valid_container(name) => Some(name.to_owned()),
            Some(name) => {
                return Err(FhirError::bad_request(format!(
                    "_container '{name}' is not a container name: 3 to 63 lower-case letters, digits and hyphens, \
                     starting with a letter or digit."
                )))
            }
        };
        Ok(ExportRequest { types, type_filters, since, until, elements, patients, history, deleted, container })
    }
}

/// Azure Blob Storage's container names (which also suit S3 buckets and directories).
fn valid_container(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// Every type of the level: all resource types, or those in the Patient compartment.
fn default_types(level: &Level) -> Vec<String> {
    fhir::definitions()
        .resource_types()
        .iter()
        .filter(|t| matches!(level, Level::System) || crate::smart::access::in_patient_compartment(t))
        .cloned()
        .collect()
}
