//! batch and transaction: `POST /` with a Bundle (<https://hl7.org/fhir/R4/http.html#transaction>).
//!
//! Both read the Bundle the same way ([`entry`]): it is validated once as a whole, and each entry's
//! request is parsed and checked before the store is touched. A `transaction` then runs all its
//! entries in one store transaction ([`transaction`]); a `batch` runs each entry in its own
//! ([`batch`]), queued together so that they share one commit. The entry limit is configurable
//! (Azure's service allows 500).

mod batch;
mod entry;
mod execute;
mod prepare;
mod references;
mod transaction;

use axum::http::StatusCode;
use axum::response::Response;
use fhirside_store::StoredVersion;
use serde_json::Value;

use self::entry::{Entry, Method, Target};
use self::execute::Produced;
use crate::auth::DataAction;
use crate::bundle::BundleWriter;
use crate::error::FhirError;
use crate::negotiate::Return;
use crate::smart::Interaction;
use crate::{context, response, AppState};

use super::{needs, Call};

pub(crate) async fn handle(state: &AppState, call: Call) -> Result<Response, FhirError> {
    let format = call.format()?;
    let prefer = call.prefer()?;
    crate::negotiate::require_json_body(&call.headers)?;
    let mut call = call;
    let bytes = super::read_body(std::mem::take(&mut call.body), state.config.max_body_bytes).await?;
    let mut bundle: Value = serde_json::from_slice(&bytes).map_err(|e| FhirError::BadRequest {
        code: "structure",
        diagnostics: format!("The request body is not valid JSON: {e}."),
        expression: None,
    })?;
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(FhirError::bad_request("POST to the base URL takes a Bundle of type batch or transaction."));
    }
    let kind = match bundle.get("type").and_then(Value::as_str) {
        Some("batch") => Kind::Batch,
        Some("transaction") => Kind::Transaction,
        other => {
            return Err(FhirError::BadRequest {
                code: "invalid",
                diagnostics: format!("Bundle.type must be batch or transaction, not {other:?}."),
                expression: Some("Bundle.type".into()),
            })
        }
    };
    context::refine_operation(match kind {
        Kind::Batch => "batch",
        Kind::Transaction => "transaction",
    });
    let count = bundle.get("entry").and_then(Value::as_array).map_or(0, Vec::len);
    if count > state.config.max_bundle_entries {
        return Err(FhirError::bad_request(format!(
            "The number of entries in the bundle exceeded the configured limit of {}.",
            state.config.max_bundle_entries
        )));
    }
    let (bundle_issues, mut entry_issues) = entry::split_issues(fhir::validate::validate_resource(&bundle));
    if !bundle_issues.is_empty() {
        return Err(FhirError::Invalid(bundle_issues));
    }
    let base = context::base_url();
    let entries: Vec<Result<Entry, FhirError>> = match bundle.get_mut("entry").map(Value::take) {
        Some(Value::Array(entries)) => entries
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let parsed = entry::parse(i, e, &base, entry_issues.remove(&i).unwrap_or_default());
                parsed
                    .and_then(|e| call.authorize_any_of(requirement(&e)).map(|()| e))
                    .and_then(|mut e| {
                        if let Some(smart) = call.smart_shared() {
                            for interaction in interactions(&e) {
                                smart.require(e.target.resource_type(), *interaction)?;
                            }
                            e.smart = Some(smart);
                        }
                        Ok(e)
                    })
                    .map_err(|e| e.in_entry(i))
            })
            .collect(),
        _ => Vec::new(),
    };
    let (results, cost) = match kind {
        Kind::Transaction => transaction::run(state, entries).await?,
        Kind::Batch => batch::run(state, entries).await,
    };
    let body = response_bundle(kind, results, prefer.return_);
    response::document(StatusCode::OK, body, format, cost)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Batch,
    Transaction,
}

/// What an entry needs: what the same request would need outside a Bundle.
fn requirement(entry: &Entry) -> needs::Requirement {
    let conditional = matches!(entry.target, Target::Search(..));
    match entry.method {
        Method::Get | Method::Head => &[&[DataAction::Read]],
        Method::Post if entry.if_none_exist.is_some() => needs::CONDITIONAL_CREATE,
        Method::Put | Method::Patch if conditional => needs::CONDITIONAL_UPDATE,
        Method::Patch => needs::PATCH,
        Method::Post | Method::Put => &[&[DataAction::Write]],
        Method::Delete if conditional => needs::CONDITIONAL_DELETE,
        Method::Delete => &[&[DataAction::Delete]],
    }
}

/// The SMART interactions an entry needs on its resource type (a conditional one also searches;
/// what a PUT or a conditional create turns out to do is checked when it runs).
fn interactions(entry: &Entry) -> &'static [Interaction] {
    use Interaction as I;
    let conditional = matches!(entry.target, Target::Search(..));
    match entry.method {
        Method::Get | Method::Head if matches!(entry.target, Target::Search(..) | Target::Type(_)) => &[I::Search],
        Method::Get | Method::Head => &[I::Read],
        Method::Post if entry.if_none_exist.is_some() => &[I::Search, I::Create],
        Method::Post => &[I::Create],
        Method::Put if conditional => &[I::Search],
        Method::Put => &[],
        Method::Patch if conditional => &[I::Search, I::Update],
        Method::Patch => &[I::Update],
        Method::Delete if conditional => &[I::Search, I::Delete],
        Method::Delete => &[I::Delete],
    }
}

/// The `batch-response`/`transaction-response`, one entry per request entry, in request order.
fn response_bundle(kind: Kind, results: Vec<Result<Produced, FhirError>>, return_: Return) -> bytes::Bytes {
    let mut out = BundleWriter::response(match kind {
        Kind::Batch => "batch-response",
        Kind::Transaction => "transaction-response",
    });
    let with_resource = return_ == Return::Representation;
    for result in results {
        match result {
            Ok(Produced::Version { status, version, location }) => out.response_entry(
                &status_text(status),
                version.as_ref(),
                location,
                with_resource && status != 304,
                None,
            ),
            Ok(Produced::Search(versions)) => out.search_response_entry(&status_text(200), &searchset(&versions)),
            Err(error) => {
                let (status, outcome) = error.status_and_outcome();
                out.response_entry(&status_text(status.as_u16()), None, false, false, Some(&outcome));
            }
        }
    }
    out.finish()
}

fn searchset(versions: &[StoredVersion]) -> bytes::Bytes {
    let base = context::base_url();
    let mut bundle = BundleWriter::new("searchset", &base, None, Some(versions.len() as u64));
    for v in versions {
        bundle.search_entry(v, "match");
    }
    bundle.finish()
}

fn status_text(code: u16) -> String {
    let reason = StatusCode::from_u16(code).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    format!("{code} {reason}").trim_end().to_owned()
}
