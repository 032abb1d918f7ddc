//! Setting up authentication for `serve`: the identity store, the built-in authority or the
//! external issuer, and the validator the FHIR service checks tokens with.

use std::path::Path;
use std::sync::Arc;

use fhirside_identity::authority::{Authority, AuthorityConfig, EndpointVersion};
use fhirside_identity::fetch::Client;
use fhirside_identity::oidc::OidcIssuer;
use fhirside_identity::store::IdentityStore;
use fhirside_identity::validate::{Trust, Validator};
use fhirside_server::auth::Authentication;
use fhirside_server::AuthMode;

use crate::config::AuthSettings;

/// What the server needs to authenticate callers.
pub struct Identity {
    pub authentication: Option<Authentication>,
    pub store: Option<Arc<IdentityStore>>,
    pub authority: Option<Arc<Authority>>,
    /// The endpoints to advertise in the CapabilityStatement.
    pub oauth: Option<fhirside_server::OAuthUris>,
    /// Lines for the start-up banner.
    pub banner: Vec<String>,
}

/// Settings the server records in the identity store so that the CLI (`fhirside token`) issues
/// tokens exactly as the running authority does.
pub const AUTHORITY_BASE: &str = "authority_base";
pub const FHIR_AUDIENCES: &str = "fhir_audiences";
pub const ACCESS_TOKEN_VERSION: &str = "access_token_version";
pub const TOKEN_LIFETIME: &str = "token_lifetime";

/// Opens the identity store where the installation keeps it: in its PostgreSQL database when it
/// has one (shared by replicas and by the admin CLI), else `identity.db` in the data directory.
/// `serve`, the admin commands and `fhirside token` all open it here.
pub fn open_store(database: Option<&str>, data_dir: &Path) -> Result<IdentityStore, String> {
    match database {
        Some(url) => {
            IdentityStore::open_postgres(url).map_err(|e| format!("cannot open the identity store in PostgreSQL: {e}"))
        }
        None => IdentityStore::open(data_dir)
            .map_err(|e| format!("cannot open the identity store in {}: {e}", data_dir.display())),
    }
}

pub async fn set_up(
    settings: &AuthSettings,
    database: Option<&str>,
    data_dir: &Path,
    base: &str,
) -> Result<Identity, String> {
    if settings.mode == AuthMode::None {
        return Ok(Identity {
            authentication: None,
            store: None,
            authority: None,
            oauth: None,
            banner: vec!["authentication: none (local development only)".into()],
        });
    }
    let store = Arc::new(open_store(database, data_dir)?);
    let audiences = if settings.audiences.is_empty() { vec![base.to_owned()] } else { settings.audiences.clone() };
    let resource = audiences[0].clone();
    match settings.mode {
        AuthMode::BuiltIn => {
            let mut config = AuthorityConfig::new(base, audiences.clone());
            config.access_token_version = settings.access_token_version;
            config.token_lifetime = settings.token_lifetime;
            config.key_publication = config.key_publication.max(2 * settings.token_lifetime);
            let record = |key: &str, value: &str| {
                store.set_setting(key, value).map_err(|e| format!("cannot record the authority's settings: {e}"))
            };
            record(AUTHORITY_BASE, &config.base)?;
            record(FHIR_AUDIENCES, &serde_json::to_string(&audiences).unwrap_or_default())?;
            record(ACCESS_TOKEN_VERSION, &settings.access_token_version.to_string())?;
            record(TOKEN_LIFETIME, &settings.token_lifetime.to_string())?;
            let authority = Arc::new(
                Authority::new(config, store.clone()).map_err(|e| format!("cannot start the authority: {e}"))?,
            );
            let validator = Validator::new(Trust::BuiltIn(authority.clone()), Vec::new(), audiences);
            let authentication = Authentication::new(
                Arc::new(validator),
                Some(store.clone()),
                settings.allowed_object_ids.clone(),
                &authority.authority_url(),
                &resource,
            );
            let banner = vec![
                format!("authentication: built-in authority, tenant {}", authority.tenant_id()),
                format!("identity store: {}", store.describe()),
                format!("authority: {}", authority.authority_url()),
                format!("token audience: {resource}"),
            ];
            let oauth = Some(fhirside_server::OAuthUris {
                token: authority.token_endpoint(EndpointVersion::V2),
                authorize: authority.authorization_endpoint(EndpointVersion::V2),
            });
            Ok(Identity {
                authentication: Some(authentication),
                store: Some(store),
                authority: Some(authority),
                oauth,
                banner,
            })
        }
        AuthMode::External => {
            let issuer_url = settings.authority.clone().ok_or("--auth oidc needs --authority")?;
            let client = Client::new(settings.authority_ca.as_deref())?;
            let issuer = Arc::new(OidcIssuer::new(&issuer_url, client));
            let mut banner = vec![
                format!("authentication: tokens from {issuer_url}"),
                format!("identity store: {}", store.describe()),
            ];
            // A wrong URL should show at start; an issuer that is down should not keep the FHIR
            // service from starting (discovery is retried when the first token arrives).
            if let Err(e) = issuer.discover().await {
                banner.push(format!("warning: OpenID Connect discovery of {issuer_url} failed: {e}"));
            }
            let validator = Validator::new(Trust::External(issuer.clone()), vec![issuer_url.clone()], audiences);
            let authorization_uri = issuer_url.trim_end_matches("/v2.0").to_owned();
            let authentication = Authentication::new(
                Arc::new(validator),
                Some(store.clone()),
                settings.allowed_object_ids.clone(),
                &authorization_uri,
                &resource,
            );
            banner.push(format!("token audience: {resource}"));
            let oauth = match (issuer.token_endpoint(), issuer.authorization_endpoint()) {
                (Some(token), Some(authorize)) => Some(fhirside_server::OAuthUris { token, authorize }),
                _ => None,
            };
            Ok(Identity { authentication: Some(authentication), store: Some(store), authority: None, oauth, banner })
        }
        AuthMode::None => unreachable!("handled above"),
    }
}
