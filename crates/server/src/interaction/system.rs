//! `GET /` and `POST /`: the system-level endpoint.
//!
//! `GET /?…` is system-level search ([`super::search::system`]); `POST /` takes batch and
//! transaction Bundles ([`super::bundle`]).

use axum::extract::{Request, State};
use axum::response::Response;

use crate::error::FhirError;
use crate::AppState;

use super::Call;

pub(crate) async fn get(State(state): State<AppState>, request: Request) -> Result<Response, FhirError> {
    super::search::system(&state, Call::new(request)).await
}

pub(crate) async fn post(State(state): State<AppState>, request: Request) -> Result<Response, FhirError> {
    super::bundle::handle(&state, Call::new(request)).await
}
