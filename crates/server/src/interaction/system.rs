//! `GET /` and `POST /`: the system-level endpoint.
//!
//! System-level search (`GET /?_type=…`) and batch/transaction Bundles (`POST /`) are not
//! implemented yet; they answer a clear `OperationOutcome` instead of a guess.

use axum::extract::Request;

use crate::error::FhirError;

pub(crate) async fn get(_request: Request) -> FhirError {
    FhirError::BadRequest {
        code: "not-supported",
        diagnostics: "System-level search is not supported yet; search one resource type at a time.".into(),
        expression: None,
    }
}

pub(crate) async fn post(_request: Request) -> FhirError {
    FhirError::BadRequest {
        code: "not-supported",
        diagnostics: "Batch and transaction Bundles are not supported yet.".into(),
        expression: None,
    }
}
