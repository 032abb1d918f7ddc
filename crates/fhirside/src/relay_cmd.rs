//! `fhirside relay …`: the relay's credentials, destinations, sources and messages from the
//! command line, the same operations as the Platform API under `/relay/v1`.
//!
//! The commands open the relay's store where `serve` keeps it: the `relay_*` tables of the
//! PostgreSQL database with `--database` (or `FHIRSIDE_DATABASE_URL`), else `relay.db` in the data
//! directory (shared with a running server, as `identity.db` is; the directory's `LOCK` is not
//! taken). `destination verify` sends the
//! verification from this process and records the result, which the server sees at once. Output is
//! indented JSON for people, or one line of JSON with `--output json`. A source's key is shown
//! once, when it is created; credential secrets never.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use fhirside_relay::deliver::{self, Method};
use fhirside_relay::token::TokenCache;
use fhirside_relay::{now_ms, RelayStore};
use serde_json::{json, Map, Value};

#[derive(Args, Debug)]
pub struct RelayArgs {
    #[command(subcommand)]
    command: RelayCommand,
    /// The data directory of the server [default: ./fhirside-data].
    #[arg(long, env = "FHIRSIDE_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// The PostgreSQL database of the servers (`postgres://user@host:port/database`), whose relay
    /// tables the command uses instead of the data directory's `relay.db`.
    #[arg(long, env = "FHIRSIDE_DATABASE_URL", global = true)]
    database: Option<String>,
    /// The servers' key-encryption key, on an installation encrypted at rest (as `fhirside serve
    /// --encryption-key`): credentials and messages are sealed with its keyring.
    #[arg(long, env = "FHIRSIDE_ENCRYPTION_KEY", global = true)]
    encryption_key: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text, global = true)]
    output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Indented JSON.
    Text,
    /// One line of JSON, for scripts.
    Json,
}

#[derive(Subcommand, Debug)]
enum RelayCommand {
    /// List an organization's environments (development, staging and production are created on
    /// first use).
    Environments {
        #[arg(long)]
        organization: i64,
    },
    /// Auth credentials: how the relay gets tokens for a destination.
    #[command(subcommand)]
    Credential(CredentialCommand),
    /// Destinations: where messages are delivered.
    #[command(subcommand)]
    Destination(DestinationCommand),
    /// Sources: the systems that post messages, each with its key.
    #[command(subcommand)]
    Source(SourceCommand),
    /// Messages: delivery status and replay.
    #[command(subcommand)]
    Message(MessageCommand),
}

#[derive(Subcommand, Debug)]
enum CredentialCommand {
    /// Create an `OAuth_2.0_2-legged` (client secret) or `OAuth_2.0_2-legged_JWT` (private key)
    /// client-credentials credential.
    Create(Box<CredentialCreate>),
    List {
        /// The environment's id (`fhirside relay environments`).
        #[arg(long)]
        environment: String,
    },
    Show {
        /// The id.
        id: String,
    },
    Delete {
        /// The id.
        id: String,
    },
}

#[derive(Args, Debug)]
struct CredentialCreate {
    /// The organization number (Redox's `organization`).
    #[arg(long)]
    organization: i64,
    /// The environment's id (`fhirside relay environments`).
    #[arg(long)]
    environment: String,
    /// A display name.
    #[arg(long)]
    name: String,
    /// The token endpoint (Redox's `url`), e.g. https://HOST/TENANT/oauth2/v2.0/token.
    #[arg(long)]
    url: String,
    /// The app registration's client id.
    #[arg(long)]
    client_id: String,
    /// The client secret; prefer the environment variable, which other users cannot see.
    #[arg(long, env = "FHIRSIDE_RELAY_CLIENT_SECRET", hide_env_values = true, allow_hyphen_values = true)]
    client_secret: Option<String>,
    /// Instead of a secret: a PKCS#8 PEM private key (RSA, P-256 or P-384) that signs client
    /// assertions (`OAuth_2.0_2-legged_JWT`).
    #[arg(long, conflicts_with = "client_secret")]
    private_key_file: Option<PathBuf>,
    /// The `kid` of the private key's public key, as registered with the token endpoint.
    #[arg(long, requires = "private_key_file")]
    kid: Option<String>,
    /// e.g. https://HOST/.default
    #[arg(long)]
    scope: Option<String>,
    /// e.g. the FHIR service's metadata URL with `metadata` replaced by `Bundle`.
    #[arg(long)]
    audience: Option<String>,
    /// Redox's `resourceURI` (sent only to token endpoints that take it: not Entra's v2.0).
    #[arg(long)]
    resource: Option<String>,
}

#[derive(Subcommand, Debug)]
enum DestinationCommand {
    /// Create a standard HTTPS endpoint (`--endpoint`) or a FHIR service (`--fhir-base-url`).
    Create(DestinationCreate),
    List {
        /// The environment's id (`fhirside relay environments`).
        #[arg(long)]
        environment: String,
    },
    Show {
        /// The id.
        id: String,
    },
    Delete {
        /// The id.
        id: String,
    },
    /// Send the verification (challenge, or a sample Bundle for a FHIR service) and record it.
    Verify {
        /// The id.
        id: String,
        /// How a standard endpoint is asked for the challenge.
        #[arg(long, default_value = "POST")]
        method: String,
        /// A PEM file of CA certificates to trust besides the system's (e.g. another Fhirside's ca.pem).
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
struct DestinationCreate {
    /// The environment's id (`fhirside relay environments`).
    #[arg(long)]
    environment: String,
    /// A display name.
    #[arg(long)]
    name: String,
    /// A standard endpoint's URL.
    #[arg(long, conflicts_with = "fhir_base_url")]
    endpoint: Option<String>,
    /// A standard endpoint's verification token (sent in the `verification-token` header).
    #[arg(long, env = "FHIRSIDE_RELAY_VERIFICATION_TOKEN", hide_env_values = true, allow_hyphen_values = true)]
    verification_token: Option<String>,
    /// A FHIR service's base URL (Azure's `cloudProviderSettings` for Health Data Services).
    #[arg(long)]
    fhir_base_url: Option<String>,
    /// The auth credential's id.
    #[arg(long)]
    credential: Option<String>,
    /// Save it in progress (Redox's "save progress"), to complete later.
    #[arg(long)]
    in_progress: bool,
}

#[derive(Subcommand, Debug)]
enum SourceCommand {
    /// Create a source; its key is printed once.
    Create {
        /// The environment's id (`fhirside relay environments`).
        #[arg(long)]
        environment: String,
        /// A display name.
        #[arg(long)]
        name: String,
    },
    List {
        /// The environment's id (`fhirside relay environments`).
        #[arg(long)]
        environment: String,
    },
}

#[derive(Subcommand, Debug)]
enum MessageCommand {
    /// The newest messages of an environment, e.g. the dead-lettered ones.
    List {
        /// The environment's id (`fhirside relay environments`).
        #[arg(long)]
        environment: String,
        /// pending, succeeded, failed (rejected or dead-lettered) or dead-letter.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        count: i64,
    },
    /// A message's delivery to each destination, with its attempts.
    Show { id: String },
    /// Put a message's failed and dead-lettered deliveries back in the queue.
    Replay { id: String },
}

pub fn run(args: RelayArgs) -> Result<(), String> {
    let data_dir = args.data_dir.unwrap_or_else(|| PathBuf::from("fhirside-data"));
    let store = match &args.database {
        Some(url) => RelayStore::open_postgres(url).map_err(|e| e.to_string())?,
        None => {
            if !data_dir.is_dir() {
                return Err(format!("no data directory at {}", data_dir.display()));
            }
            RelayStore::open(&data_dir).map_err(|e| e.to_string())?
        }
    };
    // On an installation encrypted at rest the relay's secrets and messages are sealed.
    let postgres = args
        .database
        .as_deref()
        .map(fhirside_store::PostgresConfig::from_url)
        .transpose()
        .map_err(|e| e.to_string())?;
    let settings = match &postgres {
        Some(config) => fhirside_store::SettingsOf::Postgres(config),
        None => fhirside_store::SettingsOf::Embedded(&data_dir),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let keys = runtime.block_on(crate::encryption::keyring_for_command(settings, args.encryption_key.as_deref()))?;
    let store = match keys {
        Some(keys) => store.sealed_with(keys),
        None => store,
    };
    let out = execute(&store, args.command)?;
    match args.output {
        Output::Json => println!("{out}"),
        Output::Text => println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default()),
    }
    Ok(())
}

fn execute(store: &RelayStore, command: RelayCommand) -> Result<Value, String> {
    let e = |e: fhirside_relay::RelayError| e.to_string();
    let now = now_ms();
    Ok(match command {
        RelayCommand::Environments { organization } => {
            json!(store.environments(organization).map_err(e)?.iter().map(|x| x.to_json()).collect::<Vec<_>>())
        }
        RelayCommand::Credential(command) => match command {
            CredentialCommand::Create(c) => {
                let mut body = json!({
                    "organization": c.organization, "name": c.name, "environmentId": c.environment,
                    "authStrategy": fhirside_relay::model::STRATEGY_OAUTH, "grantType": "client_credentials",
                    "url": c.url, "clientId": c.client_id,
                });
                match (c.client_secret, c.private_key_file) {
                    (_, Some(path)) => {
                        let pem = std::fs::read_to_string(&path)
                            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                        body["authStrategy"] = json!(fhirside_relay::model::STRATEGY_OAUTH_JWT);
                        body["privateKey"] = json!(pem);
                    }
                    (Some(secret), None) => body["clientSecret"] = json!(secret),
                    (None, None) => {
                        return Err(
                            "give --client-secret (or FHIRSIDE_RELAY_CLIENT_SECRET) or --private-key-file".into()
                        )
                    }
                }
                for (field, value) in
                    [("scopes", c.scope), ("audience", c.audience), ("resource", c.resource), ("kid", c.kid)]
                {
                    if let Some(value) = value {
                        body[field] = json!(value);
                    }
                }
                store.create_credential(&body, now).map_err(e)?.to_json()
            }
            CredentialCommand::List { environment } => {
                json!(store.credentials(&environment).map_err(e)?.iter().map(|c| c.to_json()).collect::<Vec<_>>())
            }
            CredentialCommand::Show { id } => store.credential(&id).map_err(e)?.to_json(),
            CredentialCommand::Delete { id } => {
                store.delete_credential(&id).map_err(e)?;
                json!({ "message": "The auth credential was deleted." })
            }
        },
        RelayCommand::Destination(command) => match command {
            DestinationCommand::Create(d) => {
                let mut body = Map::new();
                body.insert("name".into(), json!(d.name));
                if let Some(endpoint) = d.endpoint {
                    body.insert("endpoint".into(), json!(endpoint));
                }
                if let Some(token) = d.verification_token {
                    body.insert("verificationToken".into(), json!(token));
                }
                if let Some(credential) = d.credential {
                    body.insert("authCredential".into(), json!(credential));
                }
                if let Some(base) = d.fhir_base_url {
                    body.insert(
                        "cloudProviderSettings".into(),
                        json!({ "typeId": "azure", "productId": "health-data-services",
                                "settings": { "fhirBaseUrl": base } }),
                    );
                }
                if d.in_progress {
                    body.insert("setupState".into(), json!({ "step": "configure" }));
                }
                let (destination, environment) =
                    store.create_destination(&d.environment, &Value::Object(body), now).map_err(e)?;
                destination.to_json(&environment)
            }
            DestinationCommand::List { environment } => {
                let (list, environment) = store.destinations(&environment).map_err(e)?;
                json!(list.iter().map(|d| d.to_json(&environment)).collect::<Vec<_>>())
            }
            DestinationCommand::Show { id } => {
                let (destination, environment) = store.destination(&id).map_err(e)?;
                destination.to_json(&environment)
            }
            DestinationCommand::Delete { id } => {
                store.delete_destination(&id).map_err(e)?;
                json!({ "message": "The destination was deleted." })
            }
            DestinationCommand::Verify { id, method, ca_file } => verify(store, &id, &method, ca_file)?,
        },
        RelayCommand::Source(command) => match command {
            SourceCommand::Create { environment, name } => {
                let (source, key) = store.create_source(&environment, &json!({ "name": name }), now).map_err(e)?;
                let mut shown = source.to_json();
                shown["secret"] = json!(key);
                shown
            }
            SourceCommand::List { environment } => {
                json!(store.sources(&environment).map_err(e)?.iter().map(|s| s.to_json()).collect::<Vec<_>>())
            }
        },
        RelayCommand::Message(command) => match command {
            MessageCommand::List { environment, status, count } => {
                let states: &[&str] = match status.as_deref() {
                    None => &[],
                    Some("pending") => &["pending"],
                    Some("succeeded") => &["succeeded"],
                    Some("failed") => &["failed", "dead"],
                    Some("dead-letter") => &["dead"],
                    Some(other) => {
                        return Err(format!(
                            "--status must be pending, succeeded, failed or dead-letter, not '{other}'"
                        ))
                    }
                };
                json!(store.messages(&environment, states, count.clamp(1, 1000)).map_err(e)?)
            }
            MessageCommand::Show { id } => store.message(&id).map_err(e)?,
            MessageCommand::Replay { id } => {
                store.replay(&id, now).map_err(e)?;
                store.message(&id).map_err(e)?
            }
        },
    })
}

fn verify(store: &RelayStore, id: &str, method: &str, ca_file: Option<PathBuf>) -> Result<Value, String> {
    let method = match method {
        "POST" => Method::Post,
        "GET" => Method::Get,
        other => return Err(format!("--method must be POST or GET, not '{other}'")),
    };
    let e = |e: fhirside_relay::RelayError| e.to_string();
    let (destination, _) = store.destination(id).map_err(e)?;
    let credential = destination.auth_credential.as_deref().map(|c| store.credential(c)).transpose().map_err(e)?;
    let client = fhirside_fetch::Client::new(ca_file.as_deref())?;
    let tokens = TokenCache::default();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let result = runtime.block_on(deliver::verify(&client, &tokens, &destination, credential.as_ref(), method));
    let (destination, environment) = store.record_verification(&destination, result, now_ms()).map_err(e)?;
    Ok(destination.to_json(&environment))
}
