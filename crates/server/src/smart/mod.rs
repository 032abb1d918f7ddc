//! SMART on FHIR on the FHIR API: which resources a caller holding the `smart` data action (the
//! FHIR SMART User role, the `smartUser` app role) may reach, from its token's clinical scopes and
//! patient context, and the discovery document SMART apps start from.
//!
//! For such callers the scopes, not the role's `read`/`write`/`delete`, decide the FHIR
//! interactions (Azure's role "reads and writes FHIR data within the SMART scopes"); every
//! interaction asks [`SmartAccess`] about its resource types and resources.

pub mod access;
pub mod configuration;
pub mod directory;
pub mod scopes;

pub use access::SmartAccess;
pub use scopes::Interaction;
