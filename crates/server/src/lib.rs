//! Fhirside's HTTP layer: the FHIR R4 RESTful API.
//!
//! This crate turns HTTP requests into calls on a [`fhirside_store::ResourceStore`] and their results
//! into FHIR responses. It owns everything HTTP: routing, content negotiation, the FHIR headers
//! (`ETag`, `Last-Modified`, `Location`, `Prefer`, `If-*`), TLS, and the single mapping from errors
//! to `OperationOutcome` responses ([`error`]).
//!
//! The path of a request, in order (see `ARCHITECTURE.md`):
//! [`cors`] (browser cross-origin policy, before any token is asked for) →
//! [`context`] (request id, correlation id, standard headers) → [`auth`] (who is calling and whether
//! the interaction's data action is allowed) → [`audit`] (a `Started` record before, the outcome
//! after) → an [`interaction`] module (parse and validate with the `fhir` crate, then store) → a
//! response built by [`response`].
//!
//! It does not know SQL (only the store trait) nor the FHIR definitions' internals (only the `fhir`
//! crate's API), and nothing in it reaches back from the store to HTTP.

pub mod admin;
mod audit;
pub mod auth;
mod bulk;
mod bundle;
mod config;
mod context;
pub mod cors;
pub mod error;
mod extract;
mod ids;
mod indexing;
mod interaction;
pub mod jobs;
pub mod listener;
pub mod medtech;
mod negotiate;
mod params;
mod patching;
pub mod protect;
mod relay;
mod response;
pub mod search_params;
pub mod smart;
pub mod tls;

pub use bulk::BulkStorage;
pub use config::{AuthMode, CorsConfig, ExportConfig, Hsts, OAuthUris, ServerConfig};
pub use search_params::rebuild_index;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use fhirside_store::ResourceStore;

/// What every handler can reach: the configuration and the store. One shared allocation: axum
/// clones the state for every request (several times), so a clone is one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

#[derive(Clone)]
pub struct Shared {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) store: Arc<dyn ResourceStore>,
    /// The CapabilityStatement, built once: it depends only on the definitions and configuration.
    pub(crate) capability_statement: Arc<interaction::capabilities::Cached>,
    /// This process's job worker ([`jobs::spawn`] runs it).
    pub(crate) jobs: Arc<jobs::Worker>,
    /// Token validation; `None` when authentication is off (`--auth none`).
    pub(crate) authentication: Option<Arc<auth::Authentication>>,
    /// The installation's identity store (admin API), when there is one.
    pub(crate) identity: Option<Arc<fhirside_identity::store::IdentityStore>>,
    /// The built-in authority, served under `/{tenant}`, when it is on.
    pub(crate) authority: Option<Arc<fhirside_identity::authority::Authority>>,
    /// The audit log every request is recorded in, and `GET /_audit` reads; `None` when
    /// auditing is off.
    pub(crate) audit: Option<Arc<fhirside_audit::AuditLog>>,
    /// Where bulk export writes its files; `None` when bulk data is off.
    pub(crate) bulk: Option<Arc<BulkStorage>>,
    /// The MedTech mappings messages are turned into Observations with; `None` when it is off.
    pub(crate) medtech: Option<Arc<medtech::Medtech>>,
    /// The keyring of encryption at rest, for what the server seals itself (audit fields); `None`
    /// when encryption at rest is off.
    pub(crate) keys: Option<fhirside_keys::KeyringCell>,
    /// The relay behind `/relay/v1/…`; `None` when it is off.
    pub(crate) relay: Option<Arc<fhirside_relay::Relay>>,
}

impl AppState {
    pub fn new(config: ServerConfig, store: Arc<dyn ResourceStore>) -> AppState {
        let job_lease = config.job_lease;
        let indexer = search_params::current();
        let statement = interaction::capabilities::build(&config, &indexer);
        let capability_statement = Arc::new(std::sync::RwLock::new((indexer.fingerprint().to_owned(), statement)));
        AppState(Arc::new(Shared {
            config: Arc::new(config),
            store,
            capability_statement,
            jobs: Arc::new(jobs::Worker::new(job_lease)),
            authentication: None,
            identity: None,
            authority: None,
            audit: None,
            bulk: None,
            medtech: None,
            keys: None,
            relay: None,
        }))
    }

    /// Turns authentication on, with the installation's identity store and, when it serves one,
    /// the built-in authority.
    pub fn with_identity(
        mut self,
        authentication: Option<auth::Authentication>,
        identity: Option<Arc<fhirside_identity::store::IdentityStore>>,
        authority: Option<Arc<fhirside_identity::authority::Authority>>,
    ) -> AppState {
        let shared = Arc::make_mut(&mut self.0);
        shared.authentication = authentication.map(Arc::new);
        shared.identity = identity;
        shared.authority = authority;
        self
    }

    /// Turns bulk data on, with its files in `storage`.
    pub fn with_bulk(mut self, storage: BulkStorage) -> AppState {
        let shared = Arc::make_mut(&mut self.0);
        shared.bulk = Some(Arc::new(storage));
        self
    }

    /// Turns MedTech on: `POST /medtech/v1/messages` turns device messages into Observations.
    pub fn with_medtech(mut self, medtech: medtech::Medtech) -> AppState {
        let shared = Arc::make_mut(&mut self.0);
        shared.medtech = Some(Arc::new(medtech));
        self
    }

    /// Turns the relay on: its Platform API under `/relay/v1` (the caller runs its worker).
    pub fn with_relay(mut self, relay: Arc<fhirside_relay::Relay>) -> AppState {
        let shared = Arc::make_mut(&mut self.0);
        shared.relay = Some(relay);
        self
    }

    /// Turns auditing on: every request is recorded in `log`.
    /// Encryption at rest: the server seals the audit fields that can carry PHI with `keys`. (The
    /// store and its index are sealed by the store and [`protect::ProtectedStore`].)
    pub fn with_encryption(mut self, keys: fhirside_keys::KeyringCell) -> AppState {
        let shared = Arc::make_mut(&mut self.0);
        shared.keys = Some(keys);
        self
    }

    pub fn with_audit(mut self, log: Arc<fhirside_audit::AuditLog>) -> AppState {
        let shared = Arc::make_mut(&mut self.0);
        shared.audit = Some(log);
        self
    }
}

/// The FHIR API's routes. Paths follow the FHIR RESTful API; `$operations` and `_history`/`_search`
/// are resolved inside the handlers because they share path shapes with resource ids.
pub fn router(state: AppState) -> Router {
    use interaction::*;
    let fhir = Router::new()
        .route("/metadata", get(capabilities::handle))
        .route("/.well-known/smart-configuration", get(smart::configuration::handle))
        .route("/", get(system::get).post(system::post))
        .route(
            "/{segment}",
            get(type_level::get)
                .post(type_level::post)
                .put(update::conditional)
                .delete(delete::conditional)
                .patch(patch::conditional),
        )
        .route(
            "/{segment}/{id}",
            get(instance::get).put(update::handle).delete(delete::handle).post(instance::post).patch(patch::handle),
        )
        .route("/{segment}/{id}/{op}", get(instance::get_sub).post(instance::post_sub).delete(instance::delete_sub))
        .route("/{segment}/{id}/_history/{vid}", get(vread::handle))
        .route("/{segment}/{id}/{op}/{sub}", get(instance::get_file).post(instance::post_compartment_search))
        .merge(admin::routes())
        .merge(audit::query::routes())
        .merge(medtech::http::routes())
        .merge(relay::routes())
        .fallback(fallback::route_not_found)
        .method_not_allowed_fallback(fallback::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), context::middleware))
        .with_state(state.clone());
    // The built-in authority's endpoints: outside the context middleware, since they are how a
    // caller gets a token. Static path segments take precedence over the FHIR routes' captures.
    // Azure's SMART proxy routes sit at the FHIR base, beside it.
    let app = match &state.authority {
        Some(authority) => {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                authority.set_patient_directory(Arc::new(smart::directory::StorePatients::new(
                    state.store.clone(),
                    runtime,
                )));
            }
            fhir.merge(Router::new().nest(
                &format!("/{}", authority.tenant_id()),
                fhirside_identity::authority::http::router(authority.clone()),
            ))
            .merge(fhirside_identity::authority::proxy::router(authority.clone()))
        }
        None => fhir,
    };
    let hsts = state.config.hsts.map(|hsts| hsts.header_value());
    // Outside the context middleware (a later layer is an outer one): preflights need no token.
    let app = app.layer(axum::middleware::from_fn_with_state(state, cors::middleware));
    // Outermost, so that every response over HTTPS carries it: FHIR, the authority's, preflights.
    match hsts {
        None => app,
        Some(value) => app.layer(axum::middleware::map_response(move |mut response: axum::response::Response| {
            response.headers_mut().insert(axum::http::header::STRICT_TRANSPORT_SECURITY, value.clone());
            std::future::ready(response)
        })),
    }
}
