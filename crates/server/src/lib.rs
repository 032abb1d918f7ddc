//! Fhirside's HTTP layer: the FHIR R4 RESTful API.
//!
//! This crate turns HTTP requests into calls on a [`fhirside_store::ResourceStore`] and their results
//! into FHIR responses. It owns everything HTTP: routing, content negotiation, the FHIR headers
//! (`ETag`, `Last-Modified`, `Location`, `Prefer`, `If-*`), TLS, and the single mapping from errors
//! to `OperationOutcome` responses ([`error`]).
//!
//! The path of a request, in order (see `ARCHITECTURE.md`):
//! [`context`] (request id, correlation id, standard headers) → [`auth`] (who is calling and whether
//! the interaction's data action is allowed) → an [`interaction`] module (parse and validate with
//! the `fhir` crate, then store) → a response built by [`response`].
//!
//! It does not know SQL (only the store trait) nor the FHIR definitions' internals (only the `fhir`
//! crate's API), and nothing in it reaches back from the store to HTTP.

pub mod auth;
mod bundle;
mod config;
mod context;
pub mod error;
mod extract;
mod ids;
mod indexing;
mod interaction;
pub mod listener;
mod negotiate;
mod params;
mod patching;
mod response;
pub mod search_params;
pub mod tls;

pub use config::{AuthMode, ServerConfig};

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use fhirside_store::ResourceStore;

/// What every handler can reach: the configuration and the store.
#[derive(Clone)]
pub struct AppState {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) store: Arc<dyn ResourceStore>,
    /// The CapabilityStatement, built once: it depends only on the definitions and configuration.
    pub(crate) capability_statement: Arc<interaction::capabilities::Cached>,
    pub(crate) reindexer: Arc<search_params::Reindexer>,
}

impl AppState {
    pub fn new(config: ServerConfig, store: Arc<dyn ResourceStore>) -> AppState {
        let indexer = search_params::current();
        let statement = interaction::capabilities::build(&config, &indexer);
        let capability_statement = Arc::new(std::sync::RwLock::new((indexer.fingerprint().to_owned(), statement)));
        AppState { config: Arc::new(config), store, capability_statement, reindexer: Default::default() }
    }
}

/// The FHIR API's routes. Paths follow the FHIR RESTful API; `$operations` and `_history`/`_search`
/// are resolved inside the handlers because they share path shapes with resource ids.
pub fn router(state: AppState) -> Router {
    use interaction::*;
    Router::new()
        .route("/metadata", get(capabilities::handle))
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
        .route("/{segment}/{id}/{op}", get(instance::get_sub).post(instance::post_sub))
        .route("/{segment}/{id}/_history/{vid}", get(vread::handle))
        .route("/{segment}/{id}/{op}/{sub}", axum::routing::post(instance::post_compartment_search))
        .fallback(fallback::route_not_found)
        .method_not_allowed_fallback(fallback::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), context::middleware))
        .with_state(state)
}
