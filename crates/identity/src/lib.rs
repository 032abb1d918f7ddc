//! Fhirside's identity: who a caller is, proven by a signed token.
//!
//! Two halves:
//! - the **built-in authority** ([`authority`]): an OAuth 2.0 / OpenID Connect service with the
//!   endpoint shapes, token claims and error bodies of Microsoft Entra ID, so that MSAL,
//!   azure-identity and Postman obtain tokens from Fhirside with only the authority URL changed.
//!   Its state (tenant, signing keys, app registrations, secrets, users, role assignments) lives in
//!   an [`store::IdentityStore`];
//! - **token validation** ([`validate`]) for the FHIR service: signature, algorithm allow-list,
//!   issuer, audience and lifetime, against the built-in authority's keys or an external OpenID
//!   Connect issuer's JWKS ([`oidc`]).
//!
//! The roles and data actions of Azure's FHIR service are defined here ([`roles`]) because both
//! halves and the admin CLI speak of them.
//!
//! This crate knows nothing of FHIR resources or the resource store: the FHIR service asks it "who
//! is this and which data actions do they hold", and it answers.

pub mod admin;
pub mod authority;
pub mod b64;
pub mod jwt;
pub mod keys;
pub mod oidc;
pub mod roles;
pub mod secret;
pub mod store;
pub mod time;
pub mod validate;

/// The outbound HTTP client, which moved to its own crate; `fhirside_identity::fetch::Client` still
/// names it.
pub use fhirside_fetch as fetch;
