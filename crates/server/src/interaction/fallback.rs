//! Answers for requests no interaction takes.

use crate::error::FhirError;

pub(crate) async fn route_not_found() -> FhirError {
    FhirError::RouteNotFound
}

pub(crate) async fn method_not_allowed() -> FhirError {
    FhirError::MethodNotAllowed
}
