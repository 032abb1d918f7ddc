//! capabilities: `GET /metadata` (<https://hl7.org/fhir/R4/http.html#capabilities>).
//!
//! The CapabilityStatement is derived from what the code actually supports — every R4 resource
//! type with the interactions this server implements and the search parameters it indexes (custom
//! SearchParameters included) — and built again only when the parameters in force change. It never
//! requires authentication.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use fhirside_store::Cost;
use serde_json::{json, Value};

use crate::error::FhirError;
use crate::AppState;
use crate::ServerConfig;

use super::Call;

/// The type- and instance-level interactions implemented for every resource type.
const INTERACTIONS: &[&str] =
    &["read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type"];

/// Search parameters every type supports beside its indexed ones: columns of the resource and the
/// parameters the server evaluates itself.
const COMMON_SEARCH: &[(&str, &str, &str)] = &[
    ("_id", "token", "http://hl7.org/fhir/SearchParameter/Resource-id"),
    ("_lastUpdated", "date", "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated"),
    ("_text", "string", "http://hl7.org/fhir/SearchParameter/DomainResource-text"),
    ("_content", "string", "http://hl7.org/fhir/SearchParameter/Resource-content"),
    ("_list", "token", "http://hl7.org/fhir/SearchParameter/Resource-list"),
];

/// The statement and the fingerprint of the search parameters it was built with.
pub(crate) type Cached = std::sync::RwLock<(String, bytes::Bytes)>;

pub(crate) async fn handle(State(state): State<AppState>, request: Request) -> Result<Response, FhirError> {
    let call = Call::new(request);
    let format = call.format()?;
    let indexer = crate::search_params::current();
    let cached = state.capability_statement.read().unwrap_or_else(|e| e.into_inner()).clone();
    let body = if cached.0 == indexer.fingerprint() {
        cached.1
    } else {
        let body = build(&state.config, &indexer);
        *state.capability_statement.write().unwrap_or_else(|e| e.into_inner()) =
            (indexer.fingerprint().to_owned(), body.clone());
        body
    };
    crate::response::document(StatusCode::OK, body, format, Cost::default())
}

pub(crate) fn build(config: &ServerConfig, indexer: &fhir::index::Indexer) -> bytes::Bytes {
    let definitions = fhir::definitions();
    let interactions: Vec<Value> = INTERACTIONS.iter().map(|code| json!({"code": code})).collect();
    let mut references: Vec<(&str, String, Vec<String>)> = Vec::new();
    for source in definitions.resource_types() {
        for p in indexer.search_params(source) {
            if p.kind == fhir::SearchParamType::Reference && indexer.is_indexed(source, &p.code) {
                references.push((source, p.code.clone(), p.target.clone()));
            }
        }
    }
    let resources: Vec<Value> = definitions
        .resource_types()
        .iter()
        .map(|t| {
            let mut search: Vec<Value> = COMMON_SEARCH
                .iter()
                .map(|(name, kind, url)| json!({"name": name, "definition": url, "type": kind}))
                .collect();
            let mut includes = vec![json!("*")];
            let mut revincludes = vec![json!("*")];
            for p in indexer.search_params(t) {
                if indexer.is_indexed(t, &p.code) {
                    search.push(json!({"name": p.code, "definition": p.url, "type": p.kind.as_str()}));
                    if p.kind == fhir::SearchParamType::Reference {
                        includes.push(json!(format!("{t}:{}", p.code)));
                    }
                }
            }
            // Every reference parameter of any type that can point at this one.
            for (source, code, targets) in &references {
                if targets.is_empty() || targets.iter().any(|target| target == t) {
                    revincludes.push(json!(format!("{source}:{code}")));
                }
            }
            let mut operations = vec![json!({"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"})];
            if t == "Patient" {
                operations.push(json!({"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}));
                operations.push(json!({"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"}));
            }
            if t == "Group" {
                operations.push(json!({"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"}));
            }
            json!({
                "type": t,
                "profile": format!("http://hl7.org/fhir/StructureDefinition/{t}"),
                "interaction": interactions,
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "not-supported",
                "conditionalUpdate": true,
                "conditionalDelete": "multiple",
                "searchInclude": includes,
                "searchRevInclude": revincludes,
                "searchParam": search,
                "operation": operations,
            })
        })
        .collect();
    let mut statement = json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": fhir::datetime::format_instant(fhir::datetime::now_micros()),
        "publisher": "Fhirside",
        "kind": "instance",
        "instantiates": ["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"],
        "software": {"name": "Fhirside", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Fhirside FHIR R4 service"},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}, {"code": "search-system"}],
            "searchParam": COMMON_SEARCH.iter().map(|(name, kind, url)| json!({"name": name, "definition": url, "type": kind})).collect::<Vec<_>>(),
            "operation": [
                {"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"},
                {"name": "reindex", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-reindex"},
                {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"},
            ],
        }],
    });
    if let Some(base) = &config.base_url {
        statement["implementation"]["url"] = json!(base);
    }
    // How to get a token, as Azure's service advertises it: the OAuth service and SMART's
    // `oauth-uris` extension naming the authority's endpoints.
    if let Some(uris) = &config.oauth {
        statement["rest"][0]["security"] = json!({
            "cors": config.cors.is_some(),
            "service": [{"coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "OAuth"},
                {"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"},
            ]}],
            "extension": [{
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [
                    {"url": "token", "valueUri": uris.token},
                    {"url": "authorize", "valueUri": uris.authorize},
                ],
            }],
        });
    }
    serde_json::to_vec(&statement).expect("a JSON value always serializes").into()
}
