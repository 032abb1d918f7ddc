//! Errors of the authority's endpoints, shaped as Microsoft Entra ID returns them.
//!
//! Clients (MSAL, azure-identity) read `error` to decide what went wrong and show
//! `error_description`, which begins with an `AADSTS` code that people search for; the trace and
//! correlation ids let an operator find the request in the log.

use serde_json::{json, Value};

/// An OAuth 2.0 error response.
#[derive(Debug, Clone, PartialEq)]
pub struct OAuthError {
    /// `400`, or `401` for client authentication failures (as Entra answers `invalid_client`).
    pub status: u16,
    /// The OAuth 2.0 error code (`invalid_client`, `invalid_grant`, …).
    pub error: &'static str,
    /// The AADSTS number.
    pub code: u32,
    pub message: String,
}

impl OAuthError {
    pub fn new(error: &'static str, code: u32, message: impl Into<String>) -> OAuthError {
        let status = if error == "invalid_client" { 401 } else { 400 };
        OAuthError { status, error, code, message: message.into() }
    }

    pub fn invalid_request(code: u32, message: impl Into<String>) -> OAuthError {
        OAuthError::new("invalid_request", code, message)
    }

    pub fn missing(parameter: &str) -> OAuthError {
        OAuthError::invalid_request(
            900144,
            format!("The request body must contain the following parameter: '{parameter}'."),
        )
    }

    pub fn invalid_client(code: u32, message: impl Into<String>) -> OAuthError {
        OAuthError::new("invalid_client", code, message)
    }

    pub fn invalid_grant(code: u32, message: impl Into<String>) -> OAuthError {
        OAuthError::new("invalid_grant", code, message)
    }

    /// The storage failed: not the client's fault, but still answered in Entra's shape.
    pub fn server_error(message: impl Into<String>) -> OAuthError {
        OAuthError { status: 500, error: "server_error", code: 90033, message: message.into() }
    }

    /// `AADSTS<code>: <message>`, without the trace lines.
    pub fn description(&self) -> String {
        format!("AADSTS{}: {}", self.code, self.message)
    }

    /// The JSON body, with the ids and time of this response.
    pub fn body(&self, trace_id: &str, correlation_id: &str, now: i64) -> Value {
        let timestamp = crate::time::entra_timestamp(now);
        json!({
            "error": self.error,
            "error_description": format!(
                "{}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}",
                self.description()
            ),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
        })
    }
}

impl From<crate::store::IdentityError> for OAuthError {
    fn from(e: crate::store::IdentityError) -> OAuthError {
        OAuthError::server_error(e.to_string())
    }
}
