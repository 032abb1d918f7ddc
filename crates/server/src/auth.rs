//! Who is calling, and may they do this?
//!
//! Authentication happens once per request in the context middleware, which stores a
//! [`Principal`] in the request's extensions; each interaction then asks [`authorize`] for the Azure
//! data action it needs (`read`, `write`, `delete`, …).
//!
//! With authentication on, the caller presents a bearer token, validated by
//! [`fhirside_identity::validate`] against the built-in authority or an external OpenID Connect
//! issuer. The caller's data actions are the union of:
//! - the Azure RBAC roles assigned to the token's `oid` (read from the identity store at request
//!   time, so that removing an assignment takes effect at once, not when the token expires);
//! - the app roles in the token's `roles` claim (how an external issuer grants access);
//! - everything but SMART, when the `oid` is in the configured allowed object ids (Azure API for
//!   FHIR's access policy).
//!
//! `/metadata` is answered without a token, as Azure's service does. With `--auth none` (loopback
//! only, for local development) every caller holds every FHIR data action, `admin` and `audit`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::http::{header, HeaderMap, HeaderValue};
use fhirside_identity::roles::{self, RoleKind};
use fhirside_identity::store::IdentityStore;
use fhirside_identity::validate::{Claims, Validator};

pub use fhirside_identity::roles::{DataAction, DataActions};

use crate::error::FhirError;
use crate::smart::SmartAccess;
use crate::AppState;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The data actions this caller holds.
    pub data_actions: DataActions,
    /// `oid` of the caller's token; empty when authentication is off.
    pub object_id: String,
    /// The token's verified claims; `None` when authentication is off or the route is anonymous.
    pub claims: Option<Arc<Claims>>,
    /// The SMART limits of a caller holding the `smart` data action.
    pub smart: Option<Arc<SmartAccess>>,
}

impl Principal {
    fn anonymous() -> Principal {
        Principal { data_actions: DataActions::NONE, object_id: String::new(), claims: None, smart: None }
    }
}

/// Token validation and role resolution for the FHIR service.
pub struct Authentication {
    pub validator: Arc<Validator>,
    /// Where role assignments live (the installation's identity store).
    pub role_assignments: Option<Arc<IdentityStore>>,
    /// Object ids granted every FHIR data action (Azure API for FHIR's "allowed object IDs").
    pub allowed_object_ids: Vec<String>,
    /// The `WWW-Authenticate` challenge of a `401`.
    pub challenge: HeaderValue,
    /// Data actions from role assignments, per object id, as of a store version.
    cache: RwLock<(i64, HashMap<String, DataActions>)>,
}

impl Authentication {
    /// `authorization_uri` is the authority clients should get a token from; `resource` is the
    /// audience to ask for.
    pub fn new(
        validator: Arc<Validator>,
        role_assignments: Option<Arc<IdentityStore>>,
        allowed_object_ids: Vec<String>,
        authorization_uri: &str,
        resource: &str,
    ) -> Authentication {
        let challenge = format!(
            "Bearer authorization_uri=\"{authorization_uri}\", resource_id=\"{resource}\", realm=\"{resource}\""
        );
        Authentication {
            validator,
            role_assignments,
            allowed_object_ids,
            challenge: HeaderValue::from_str(&challenge).unwrap_or(HeaderValue::from_static("Bearer")),
            cache: RwLock::new((i64::MIN, HashMap::new())),
        }
    }

    /// The data actions granted to `object_id` by role assignments.
    fn assigned(&self, object_id: &str) -> DataActions {
        let Some(store) = &self.role_assignments else { return DataActions::NONE };
        let Ok(version) = store.data_version() else { return DataActions::NONE };
        if let Ok(cache) = self.cache.read() {
            if cache.0 == version {
                if let Some(actions) = cache.1.get(object_id) {
                    return *actions;
                }
            }
        }
        let actions = match store.role_assignments(Some(object_id)) {
            Ok(assignments) => assignments
                .iter()
                .filter_map(|a| roles::find(&a.role))
                .filter(|r| r.kind == RoleKind::Rbac)
                .fold(DataActions::NONE, |all, r| all.union(r.data_actions())),
            Err(e) => {
                eprintln!("fhirside: role assignments unavailable: {e}");
                return DataActions::NONE;
            }
        };
        if let Ok(mut cache) = self.cache.write() {
            if cache.0 != version {
                *cache = (version, HashMap::new());
            }
            cache.1.insert(object_id.to_owned(), actions);
        }
        actions
    }
}

/// Routes answered without a token. A relay source posts messages with its own source key, which
/// its handler checks.
fn is_anonymous_route(path: &str) -> bool {
    path == "/metadata" || path == "/.well-known/smart-configuration" || crate::relay::is_source_route(path)
}

pub(crate) async fn authenticate(state: &AppState, path: &str, headers: &HeaderMap) -> Result<Principal, FhirError> {
    let Some(auth) = &state.authentication else {
        return Ok(Principal {
            data_actions: DataActions::star()
                .without(&[DataAction::HardDelete])
                .union(DataActions::of(&[DataAction::Admin, DataAction::Audit])),
            object_id: String::new(),
            claims: None,
            smart: None,
        });
    };
    if is_anonymous_route(path) {
        return Ok(Principal::anonymous());
    }
    let unauthenticated = || FhirError::Unauthenticated { challenge: auth.challenge.clone() };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(unauthenticated)?;
    let claims = match auth.validator.validate(token, fhirside_identity::time::now()).await {
        Ok(claims) => claims,
        Err(rejection) => {
            // The reason goes to the log, the token never does.
            eprintln!("fhirside: request {} refused: token {rejection}", crate::context::request_id());
            return Err(unauthenticated());
        }
    };
    let object_id = claims.object_id().to_owned();
    let mut actions = roles::data_actions(claims.roles()).union(auth.assigned(&object_id));
    if auth.allowed_object_ids.iter().any(|id| id.eq_ignore_ascii_case(&object_id)) {
        actions = actions.union(DataActions::star());
    }
    let smart = match actions.contains(DataAction::Smart) {
        true => Some(Arc::new(SmartAccess::from_claims(&claims)?)),
        false => None,
    };
    Ok(Principal { data_actions: actions, object_id, claims: Some(claims), smart })
}

/// The data actions SMART scopes decide for a caller holding `smart`.
const SCOPED: [DataAction; 7] = [
    DataAction::Read,
    DataAction::Write,
    DataAction::Delete,
    DataAction::Search,
    DataAction::ReadById,
    DataAction::Create,
    DataAction::Update,
];

/// Fails with `403` unless the caller holds `action`. For a SMART caller the FHIR interactions are
/// decided by its scopes, which the interaction checks on the resource types it touches.
pub(crate) fn authorize(principal: &Principal, action: DataAction) -> Result<(), FhirError> {
    if principal.smart.is_some() && SCOPED.contains(&action) {
        return Ok(());
    }
    if principal.data_actions.contains(action) {
        Ok(())
    } else {
        Err(FhirError::Forbidden)
    }
}
