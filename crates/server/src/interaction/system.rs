//! `GET /` and `POST /`: the system-level endpoint.
//!
//! `POST /` takes batch and transaction Bundles ([`super::bundle`]). System-level search
//! (`GET /?_type=…`) is not implemented yet and answers a clear `OperationOutcome`.

use axum::extract::{Request, State};
use axum::response::Response;

use crate::error::FhirError;
use crate::AppState;

use super::Call;

pub(crate) async fn get(_request: Request) -> FhirError {
    FhirError::BadRequest {
        code: "not-supported",
        diagnostics: "System-level search is not supported yet; search one resource type at a time.".into(),
        expression: None,
    }
}

pub(crate) async fn post(State(state): State<AppState>, request: Request) -> Result<Response, FhirError> {
    super::bundle::handle(&state, Call::new(request)).await
}
