//! `fhirside token`: an access token for an app, like `az account get-access-token`.
//!
//! It runs the built-in authority's client-credentials grant in this process, against the same
//! identity store and with the settings the server recorded when it last started (its URL, the
//! FHIR audiences, the token version), so the token is exactly what the token endpoint would
//! issue — without a network round trip, and with the same secret checks.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use fhirside_identity::authority::token::TokenRequest;
use fhirside_identity::authority::{Authority, AuthorityConfig, EndpointVersion};
use serde_json::{json, Value};

use crate::identity::{ACCESS_TOKEN_VERSION, AUTHORITY_BASE, FHIR_AUDIENCES, TOKEN_LIFETIME};

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// The app's client id.
    #[arg(long, env = "FHIRSIDE_CLIENT_ID")]
    client_id: String,
    /// One of the app's client secrets.
    #[arg(long, env = "FHIRSIDE_CLIENT_SECRET", hide_env_values = true, allow_hyphen_values = true)]
    client_secret: String,
    /// The resource to get a token for [default: the FHIR service].
    #[arg(long)]
    resource: Option<String>,
    /// TOML configuration file (only its `data_dir` and `database` are used here).
    #[arg(long, env = "FHIRSIDE_CONFIG")]
    config: Option<PathBuf>,
    /// The data directory of the server [default: ./fhirside-data].
    #[arg(long, env = "FHIRSIDE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The PostgreSQL database of the servers (`postgres://user@host:port/database`), whose
    /// identity store issues the token instead of the data directory's.
    #[arg(long, env = "FHIRSIDE_DATABASE_URL")]
    database: Option<String>,
    /// `json` (as `az account get-access-token`) or `tsv` (the token alone, for scripts).
    #[arg(long, value_enum, default_value_t = TokenOutput::Json)]
    output: TokenOutput,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TokenOutput {
    Json,
    Tsv,
}

pub fn run(args: TokenArgs) -> Result<(), String> {
    let target = crate::config::admin_target(args.data_dir, args.database, args.config.as_deref())?;
    let issued = issue(&target, &args.client_id, &args.client_secret, args.resource.as_deref())?;
    match args.output {
        TokenOutput::Tsv => println!("{}", issued.access_token),
        TokenOutput::Json => {
            let out: Value = json!({
                "accessToken": issued.access_token,
                "expiresOn": fhirside_identity::time::rfc3339(issued.expires_on),
                "expires_on": issued.expires_on,
                "tenant": issued.tenant,
                "tokenType": "Bearer",
            });
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
    }
    Ok(())
}

/// A token the built-in authority issued.
pub struct Issued {
    pub access_token: String,
    /// Seconds since the epoch.
    pub expires_on: i64,
    pub tenant: String,
}

/// Issues an app's access token for `resource` (the FHIR service by default) from the identity
/// store of `target`, as the token endpoint would: for `fhirside token` and the bulk commands.
pub fn issue(
    target: &crate::config::AdminTarget,
    client_id: &str,
    client_secret: &str,
    resource: Option<&str>,
) -> Result<Issued, String> {
    let store = Arc::new(crate::identity::open_store(target.database.as_deref(), &target.data_dir)?);
    let setting = |key: &str| store.setting(key).map_err(|e| e.to_string());
    let base = setting(AUTHORITY_BASE)?.ok_or_else(|| {
        format!(
            "{} has no built-in authority yet: start `fhirside serve` on it once (with authentication on)",
            store.describe()
        )
    })?;
    let audiences: Vec<String> =
        setting(FHIR_AUDIENCES)?.and_then(|a| serde_json::from_str(&a).ok()).unwrap_or_else(|| vec![base.clone()]);
    let mut config = AuthorityConfig::new(&base, audiences.clone());
    if let Some(version) = setting(ACCESS_TOKEN_VERSION)?.and_then(|v| v.parse().ok()) {
        config.access_token_version = version;
    }
    if let Some(lifetime) = setting(TOKEN_LIFETIME)?.and_then(|v| v.parse().ok()) {
        config.token_lifetime = lifetime;
    }
    let authority = Authority::new(config, store.clone()).map_err(|e| e.to_string())?;
    let resource = resource.map_or_else(|| audiences[0].clone(), str::to_owned);
    let request = TokenRequest {
        params: vec![
            ("grant_type".into(), "client_credentials".into()),
            ("client_id".into(), client_id.to_owned()),
            ("client_secret".into(), client_secret.to_owned()),
            ("scope".into(), format!("{}/.default", resource.trim_end_matches('/'))),
        ],
        basic: None,
    };
    let now = fhirside_identity::time::now();
    let response = authority.token(EndpointVersion::V2, &request, now).map_err(|e| e.description())?;
    Ok(Issued {
        access_token: response["access_token"].as_str().unwrap_or_default().to_owned(),
        expires_on: now + response["expires_in"].as_i64().unwrap_or(0),
        tenant: store.tenant_id().to_owned(),
    })
}
