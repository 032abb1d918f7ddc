//! Carrying out Bundle entries inside a store transaction.
//!
//! Runs on the store's writer (see `ResourceStore::transaction`), so it does only what must be
//! atomic: conditional matching, reference resolution and the writes. An entry goes through two
//! steps so that a transaction can learn every entry's id before rewriting any reference:
//! [`resolve`] fixes the target id (conditional create and update search here), then [`apply`]
//! rewrites references and writes.

use fhirside_store::{SearchQuery, StoredVersion, Transaction, Unstamped, WriteOp, WriteResult};
use serde_json::Value;

use super::entry::{Entry, Method, Target};
use super::references::References;
use crate::error::FhirError;
use crate::indexing;
use crate::interaction::{patch, search};
use crate::negotiate::Handling;
use crate::smart::{Interaction, SmartAccess};

/// An entry whose target is fixed.
pub(crate) struct Resolved {
    pub entry: Entry,
    /// The id a POST or PUT will write (assigned, matched, or from the URL).
    pub id: Option<String>,
    /// A conditional create's existing match: nothing is written.
    pub existing: Option<StoredVersion>,
}

/// What an entry produced.
pub(crate) enum Produced {
    /// A status and, if any, the version it concerns (written, read or deleted).
    Version { status: u16, version: Option<StoredVersion>, location: bool },
    /// A search's matches.
    Search(Vec<StoredVersion>),
}

pub(crate) fn resolve(tx: &mut dyn Transaction, mut entry: Entry, new_id: String) -> Result<Resolved, FhirError> {
    if let Some(query) = entry.if_none_exist.as_mut() {
        restrict(entry.smart.as_deref(), query)?;
    }
    let (id, existing) = match (&entry.method, &entry.target) {
        (Method::Post, Target::Type(t)) => match &entry.if_none_exist {
            None => (Some(new_id), None),
            Some(query) => match tx.search(query, 2)?.as_slice() {
                [] => (Some(new_id), None),
                [one] => (Some(one.id.clone()), Some(one.clone())),
                _ => return Err(FhirError::NotSelective { resource_type: t.clone() }),
            },
        },
        (Method::Post, _) => return Err(FhirError::bad_request("A POST entry's url must name a resource type.")),
        (Method::Put, Target::Instance(_, id)) => (Some(id.clone()), None),
        (Method::Put, Target::Search(t, params)) => {
            let mut query = search::conditional(t, params)?;
            restrict(entry.smart.as_deref(), &mut query)?;
            let body_id = entry.body_id.as_deref();
            match tx.search(&query, 2)?.as_slice() {
                [] => (Some(body_id.map_or(new_id, str::to_owned)), None),
                [one] => {
                    if body_id.is_some_and(|b| b != one.id) {
                        return Err(FhirError::bad_request(
                            "The resource's id does not match the conditional update's match.",
                        ));
                    }
                    (Some(one.id.clone()), None)
                }
                _ => return Err(FhirError::NotSelective { resource_type: t.clone() }),
            }
        }
        (Method::Put, _) => return Err(FhirError::bad_request("A PUT entry's url must be Type/id or Type?criteria.")),
        (Method::Patch, Target::Instance(..) | Target::Search(..)) => (None, None),
        (Method::Patch, _) => {
            return Err(FhirError::bad_request("A PATCH entry's url must be Type/id or Type?criteria."))
        }
        _ => (None, None),
    };
    Ok(Resolved { entry, id, existing })
}

pub(crate) fn apply(
    tx: &mut dyn Transaction,
    resolved: Resolved,
    refs: &mut References,
) -> Result<Produced, FhirError> {
    let Resolved { entry, id, existing } = resolved;
    let resource_type = entry.target.resource_type().to_owned();
    let smart = entry.smart.clone();
    let smart = smart.as_deref();
    match entry.method {
        Method::Post | Method::Put => {
            if let Some(existing) = existing {
                return Ok(Produced::Version { status: 200, version: Some(existing), location: false });
            }
            let (resource, index) = match entry.prepared {
                Some(prepared) => {
                    // Rewritten, indexed and serialized before the transaction: confirm what it assumed.
                    for (reference, target) in &prepared.assumed {
                        if refs.resolve_conditional(tx, reference)? != *target {
                            return Err(FhirError::Conflict(format!(
                                "The conditional reference '{reference}' changed its match while the transaction \
                                 ran; retry it."
                            )));
                        }
                    }
                    (prepared.body, prepared.index)
                }
                None => {
                    let mut resource = entry.resource.expect("checked when parsed");
                    refs.rewrite(tx, &mut resource)?;
                    let index = indexing::extract(&resource_type, &mut resource);
                    (Unstamped::new(resource), index)
                }
            };
            let id = id.expect("resolved");
            if let Some(smart) = smart {
                // A PUT replaces what is there (within reach, as an update) or creates.
                let interaction = match (entry.method, tx.read(&resource_type, &id)?) {
                    (Method::Put, Some(current)) if !current.deleted => {
                        smart.check_existing(&current, Interaction::Update)?;
                        Interaction::Update
                    }
                    _ => Interaction::Create,
                };
                let id = (entry.method == Method::Put).then_some(id.as_str());
                smart.check_write(&resource_type, interaction, id, &index)?;
            }
            let op = if entry.method == Method::Post {
                WriteOp::Create { resource_type, id, resource, index, if_none_exist: None }
            } else {
                WriteOp::Update { resource_type, id, resource, index, if_match: entry.if_match }
            };
            match tx.write(op)? {
                WriteResult::Created(v) => Ok(Produced::Version { status: 201, version: Some(v), location: true }),
                WriteResult::Updated(v) => Ok(Produced::Version { status: 200, version: Some(v), location: false }),
                other => Err(FhirError::Internal(format!("unexpected write result {other:?}"))),
            }
        }
        Method::Delete => {
            let op = match entry.target {
                Target::Instance(_, id) => {
                    if let (Some(smart), Some(current)) = (smart, tx.read(&resource_type, &id)?) {
                        smart.check_existing(&current, Interaction::Delete)?;
                    }
                    WriteOp::Delete { resource_type, id, if_match: entry.if_match }
                }
                Target::Search(_, params) => {
                    let mut query = search::conditional(&resource_type, &params)?;
                    restrict(smart, &mut query)?;
                    WriteOp::ConditionalDelete { query, resource_type, max: 1 }
                }
                _ => return Err(FhirError::bad_request("A DELETE entry's url must be Type/id or Type?criteria.")),
            };
            match tx.write(op)? {
                WriteResult::Deleted(mut versions) => {
                    Ok(Produced::Version { status: 204, version: versions.pop(), location: false })
                }
                other => Err(FhirError::Internal(format!("unexpected write result {other:?}"))),
            }
        }
        Method::Get | Method::Head => read(tx, entry, smart),
        Method::Patch => {
            let mut resource = entry.resource.expect("checked when parsed");
            refs.rewrite(tx, &mut resource)?;
            let document = patch_document(resource)?;
            let target = match entry.target {
                Target::Instance(_, id) => patch::Target::Instance(id),
                Target::Search(_, params) => {
                    let mut query = search::conditional(&resource_type, &params)?;
                    restrict(smart, &mut query)?;
                    patch::Target::Search(query)
                }
                _ => return Err(FhirError::bad_request("A PATCH entry's url must be Type/id or Type?criteria.")),
            };
            let version = patch::patch_in(tx, &resource_type, target, &document, entry.if_match, smart)?;
            Ok(Produced::Version { status: 200, version: Some(version), location: false })
        }
    }
}

/// The patch an entry carries: a `Binary` holding a JSON Patch, or a FHIRPath Patch `Parameters`.
fn patch_document(resource: serde_json::Map<String, Value>) -> Result<patch::PatchDocument, FhirError> {
    if resource.get("resourceType").and_then(Value::as_str) == Some("Parameters") {
        return Ok(patch::PatchDocument::FhirPath(Value::Object(resource)));
    }
    let content_type = resource.get("contentType").and_then(Value::as_str).unwrap_or("");
    if !content_type.starts_with("application/json-patch+json") {
        return Err(FhirError::bad_request(format!(
            "A Binary patch must have contentType application/json-patch+json, not '{content_type}'."
        )));
    }
    let data = resource.get("data").and_then(Value::as_str).unwrap_or("");
    let bytes = crate::patching::decode_base64(data)
        .ok_or_else(|| FhirError::bad_request("The Binary's data is not valid base64."))?;
    let patch = serde_json::from_slice(&bytes)
        .map_err(|e| FhirError::bad_request(format!("The JSON Patch in the Binary is not valid JSON: {e}.")))?;
    Ok(patch::PatchDocument::Json(patch))
}

/// Adds a SMART caller's reach to a query an entry runs.
fn restrict(smart: Option<&SmartAccess>, query: &mut SearchQuery) -> Result<(), FhirError> {
    if let Some(smart) = smart {
        smart.restrict_clauses(&mut query.clauses)?;
        query.clauses.extend(smart.search_clause(&query.types, Interaction::Search)?);
    }
    Ok(())
}

fn read(tx: &mut dyn Transaction, entry: Entry, smart: Option<&SmartAccess>) -> Result<Produced, FhirError> {
    let found = match &entry.target {
        Target::Instance(t, id) => {
            tx.read(t, id)?.ok_or_else(|| FhirError::NotFound { resource_type: t.clone(), id: id.clone() })?
        }
        Target::Version(t, id, v) => tx.vread(t, id, *v)?.ok_or_else(|| FhirError::VersionNotFound {
            resource_type: t.clone(),
            id: id.clone(),
            version: v.to_string(),
        })?,
        Target::Search(t, params) => {
            let (mut query, _) = search::parse(t, params, Handling::Lenient)?;
            restrict(smart, &mut query)?;
            return Ok(Produced::Search(tx.search(&query, 1000)?));
        }
        Target::Type(t) => {
            let mut query = SearchQuery { types: vec![t.clone()], ..Default::default() };
            restrict(smart, &mut query)?;
            return Ok(Produced::Search(tx.search(&query, 1000)?));
        }
    };
    if smart.is_some_and(|smart| !smart.permits_version(&found, Interaction::Read)) {
        return Err(FhirError::NotFound { resource_type: found.resource_type, id: found.id });
    }
    if found.deleted {
        return Err(FhirError::Gone { resource_type: found.resource_type, id: found.id, version: found.version });
    }
    let not_modified = entry.if_none_match == Some(found.version)
        || entry
            .if_modified_since
            .is_some_and(|since| found.last_updated.div_euclid(1_000_000) <= since.div_euclid(1_000_000));
    Ok(Produced::Version { status: if not_modified { 304 } else { 200 }, version: Some(found), location: false })
}
