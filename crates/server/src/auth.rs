//! Who is calling, and may they do this?
//!
//! Authentication happens once per request in the context middleware, which stores a
//! [`Principal`] in the request's extensions; each interaction then asks [`authorize`] for the
//! Azure data action it needs (`read`, `write`, `delete`, …). Today the only mode is
//! [`AuthMode::None`](crate::AuthMode::None) — local development on loopback, where the caller holds
//! every data action. Token validation and Azure's roles plug in here without touching the
//! interactions.

use axum::http::HeaderMap;

use crate::error::FhirError;
use crate::{AppState, AuthMode};

/// Azure's FHIR data actions (`Microsoft.HealthcareApis/services/fhir/resources/<action>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataAction {
    Read,
    Write,
    Delete,
    HardDelete,
    Export,
    Import,
    ResourceValidate,
    Reindex,
    ConvertData,
    Smart,
}

impl DataAction {
    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of data actions (what a role grants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataActions(u16);

impl DataActions {
    pub fn of(actions: &[DataAction]) -> DataActions {
        DataActions(actions.iter().fold(0, |bits, a| bits | a.bit()))
    }

    pub fn contains(self, action: DataAction) -> bool {
        self.0 & action.bit() != 0
    }
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The data actions this caller holds.
    pub data_actions: DataActions,
    /// `oid` of the caller's token; empty when authentication is off.
    pub object_id: String,
}

pub(crate) fn authenticate(state: &AppState, _headers: &HeaderMap) -> Result<Principal, FhirError> {
    match state.config.auth {
        AuthMode::None => Ok(Principal {
            data_actions: DataActions::of(&[
                DataAction::Read,
                DataAction::Write,
                DataAction::Delete,
                DataAction::ResourceValidate,
                DataAction::Reindex,
            ]),
            object_id: String::new(),
        }),
    }
}

/// Fails with `403` unless the caller holds `action`.
pub(crate) fn authorize(principal: &Principal, action: DataAction) -> Result<(), FhirError> {
    if principal.data_actions.contains(action) {
        Ok(())
    } else {
        Err(FhirError::Forbidden)
    }
}
