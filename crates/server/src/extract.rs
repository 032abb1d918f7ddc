//! Request extractors that fail with an `OperationOutcome` instead of axum's plain-text rejections.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::FhirError;

/// Path segments, percent-decoded; a malformed path is a `400` OperationOutcome.
pub(crate) struct Segments<T>(pub T);

impl<S, T> FromRequestParts<S> for Segments<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = FhirError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Segments(value)),
            Err(rejection) => Err(FhirError::bad_request(format!("The request path is not valid: {rejection}"))),
        }
    }
}
