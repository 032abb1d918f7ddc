//! Configuration: flags, `FHIRSIDE_*` environment variables, a TOML file, defaults — in that order
//! of precedence.
//!
//! The file format ([`FileConfig`]) is a user-facing contract and refuses unknown keys, so a typo
//! is an error rather than a silently ignored setting. It is resolved into [`Settings`], the
//! binary's internal view, which also enforces the safety rules: plain HTTP and `--auth none` are
//! only allowed on loopback addresses.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "FHIRSIDE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the database, certificates and other state [default: ./fhirside-data].
    #[arg(long, env = "FHIRSIDE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Store resources in PostgreSQL (`postgres://user@host:port/database`) instead of the
    /// embedded store in the data directory. Replicas on one database act as one service.
    #[arg(long, env = "FHIRSIDE_DATABASE_URL")]
    pub database: Option<String>,
    /// Address to listen on [default: 127.0.0.1:8443]. Port 0 picks a free port.
    #[arg(long, env = "FHIRSIDE_LISTEN")]
    pub listen: Option<String>,
    /// Serve plain HTTP instead of HTTPS (loopback addresses only).
    #[arg(long, env = "FHIRSIDE_HTTP", num_args = 0..=1, default_missing_value = "true")]
    pub http: Option<bool>,
    /// Authentication: `builtin` (tokens from the built-in authority) [default], `oidc` (tokens
    /// from the external issuer --authority), or `none` (loopback only, for local development).
    #[arg(long, env = "FHIRSIDE_AUTH")]
    pub auth: Option<String>,
    /// With --auth oidc: the issuer URL, as in its tokens' `iss` (e.g.
    /// https://login.microsoftonline.com/{tenant}/v2.0); discovered at
    /// {authority}/.well-known/openid-configuration.
    #[arg(long, env = "FHIRSIDE_AUTHORITY")]
    pub authority: Option<String>,
    /// An accepted token audience; repeatable, or comma-separated [default: the FHIR base URL].
    #[arg(long = "audience", env = "FHIRSIDE_AUDIENCES", value_delimiter = ',')]
    pub audiences: Vec<String>,
    /// An object id (`oid`) granted every FHIR data action; repeatable, or comma-separated.
    #[arg(long = "allowed-object-id", env = "FHIRSIDE_ALLOWED_OBJECT_IDS", value_delimiter = ',')]
    pub allowed_object_ids: Vec<String>,
    /// PEM file of extra certificate authorities trusted by outbound HTTPS: the --authority's keys,
    /// bulk storage, and the relay's destinations and token endpoints.
    #[arg(long, env = "FHIRSIDE_AUTHORITY_CA")]
    pub authority_ca: Option<PathBuf>,
    /// Version of the built-in authority's access tokens: 1 (as Azure's FHIR service) or 2 [default: 1].
    #[arg(long, env = "FHIRSIDE_ACCESS_TOKEN_VERSION")]
    pub access_token_version: Option<u8>,
    /// Lifetime of the built-in authority's access tokens, in seconds [default: 3599].
    #[arg(long, env = "FHIRSIDE_TOKEN_LIFETIME")]
    pub token_lifetime: Option<i64>,
    /// Public FHIR base URL, when clients reach the service through a proxy.
    #[arg(long, env = "FHIRSIDE_BASE_URL")]
    pub base_url: Option<String>,
    /// PEM certificate chain to serve instead of the generated one (with --tls-key). Replacing
    /// the files takes effect for new connections within seconds, without a restart.
    #[arg(long, env = "FHIRSIDE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "FHIRSIDE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: PEM bundle of the certificate authorities whose client certificates are
    /// accepted (reloaded on change like --tls-cert).
    #[arg(long, env = "FHIRSIDE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Mutual TLS: `required` (a client without a certificate from --tls-client-ca cannot connect),
    /// `optional` (a client may show none) or `off` [default: required with --tls-client-ca, else
    /// off]. Tokens still decide what a caller may do.
    #[arg(long, env = "FHIRSIDE_TLS_CLIENT_AUTH")]
    pub tls_client_auth: Option<String>,
    /// Seconds of `Strict-Transport-Security: max-age` on every HTTPS response; 0 sends none
    /// [default: 31536000, a year]. Never sent with --http.
    #[arg(long, env = "FHIRSIDE_HSTS_MAX_AGE")]
    pub hsts_max_age: Option<u32>,
    /// Add `includeSubDomains` to Strict-Transport-Security: only when every subdomain serves HTTPS.
    #[arg(long, env = "FHIRSIDE_HSTS_INCLUDE_SUBDOMAINS", num_args = 0..=1, default_missing_value = "true")]
    pub hsts_include_subdomains: Option<bool>,
    /// Largest accepted request body in bytes [default: 16 MiB].
    #[arg(long, env = "FHIRSIDE_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Most entries in a batch or transaction Bundle [default: 500, as in Azure's service].
    #[arg(long, env = "FHIRSIDE_MAX_BUNDLE_ENTRIES")]
    pub max_bundle_entries: Option<usize>,
    /// CORS: an origin browser apps may call from (scheme://host[:port], or `*`); repeatable, or
    /// comma-separated. Setting one turns CORS on [default: off].
    #[arg(long = "cors-origin", env = "FHIRSIDE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// CORS: a request header browser apps may send; repeatable, or comma-separated [default: *].
    #[arg(long = "cors-header", env = "FHIRSIDE_CORS_HEADERS", value_delimiter = ',')]
    pub cors_headers: Vec<String>,
    /// CORS: a method browser apps may use; repeatable, or comma-separated
    /// [default: GET, POST, PUT, PATCH, DELETE, OPTIONS].
    #[arg(long = "cors-method", env = "FHIRSIDE_CORS_METHODS", value_delimiter = ',')]
    pub cors_methods: Vec<String>,
    /// CORS: seconds a browser may cache a preflight answer [default: not sent].
    #[arg(long, env = "FHIRSIDE_CORS_MAX_AGE")]
    pub cors_max_age: Option<u32>,
    /// CORS: let browsers send credentials (cookies, HTTP authentication); not with the origin `*`.
    #[arg(long, env = "FHIRSIDE_CORS_ALLOW_CREDENTIALS", num_args = 0..=1, default_missing_value = "true")]
    pub cors_allow_credentials: Option<bool>,
    /// Also print every audit record to standard output, one JSON line each.
    #[arg(long, env = "FHIRSIDE_AUDIT_STDOUT", num_args = 0..=1, default_missing_value = "true")]
    pub audit_stdout: Option<bool>,
    /// Days the audit log's daily files are kept [default: 2192, six years].
    #[arg(long, env = "FHIRSIDE_AUDIT_RETENTION_DAYS")]
    pub audit_retention_days: Option<u32>,
    /// When audit records reach the disk: `always` (synced before each response) or `interval`
    /// (written before each response, synced at least every second) [default: interval].
    #[arg(long, env = "FHIRSIDE_AUDIT_SYNC")]
    pub audit_sync: Option<String>,
    /// `Location` of the audit records (Azure's region of the service) [default: local].
    #[arg(long, env = "FHIRSIDE_AUDIT_LOCATION")]
    pub audit_location: Option<String>,
    /// Seconds a background job's lease lasts without renewal: how soon another replica resumes
    /// the job of a replica that died [default: 30].
    #[arg(long, env = "FHIRSIDE_JOB_LEASE_SECONDS")]
    pub job_lease_seconds: Option<u64>,
    /// Relay: attempts of one delivery before it is dead-lettered (replay starts a new round)
    /// [default: 12].
    #[arg(long, env = "FHIRSIDE_RELAY_MAX_ATTEMPTS")]
    pub relay_max_attempts: Option<u32>,
    /// Relay: milliseconds before the first retry of a failed delivery; each later one doubles,
    /// with jitter [default: 10000].
    #[arg(long, env = "FHIRSIDE_RELAY_RETRY_BASE_MS")]
    pub relay_retry_base_ms: Option<u64>,
    /// Relay: the longest wait between two attempts, in milliseconds [default: 600000].
    #[arg(long, env = "FHIRSIDE_RELAY_RETRY_MAX_MS")]
    pub relay_retry_max_ms: Option<u64>,
    /// Relay: consecutive failed attempts that open a destination's circuit [default: 5].
    #[arg(long, env = "FHIRSIDE_RELAY_BREAKER_THRESHOLD")]
    pub relay_breaker_threshold: Option<u32>,
    /// Relay: milliseconds an open circuit holds a destination's deliveries back [default: 30000].
    #[arg(long, env = "FHIRSIDE_RELAY_BREAKER_OPEN_MS")]
    pub relay_breaker_open_ms: Option<u64>,
    /// Turn auditing off: requests are not recorded. For development and benchmarks only.
    #[arg(long, env = "FHIRSIDE_NO_AUDIT", num_args = 0..=1, default_missing_value = "true")]
    pub no_audit: Option<bool>,
    /// Bulk exports queued or running at once; one more is answered 429 [default: 4].
    #[arg(long, env = "FHIRSIDE_EXPORT_MAX_CONCURRENT")]
    pub export_max_concurrent: Option<u32>,
    /// Bytes after which an export file is closed and the next one begun [default: 67108864].
    #[arg(long, env = "FHIRSIDE_EXPORT_FILE_BYTES")]
    pub export_file_bytes: Option<usize>,
    /// Where bulk data lives: a directory (`file:/path`), Azure Blob Storage
    /// (`azure-blob:https://ACCOUNT.blob.core.windows.net` with FHIRSIDE_BLOB_ACCOUNT_KEY,
    /// FHIRSIDE_BLOB_SAS, FHIRSIDE_BLOB_MANAGED_IDENTITY (`system` or a client id) or
    /// FHIRSIDE_BLOB_TOKEN) or S3 (`s3:https://s3.REGION.amazonaws.com?region=REGION`
    /// with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) [default: <data dir>/bulk].
    #[arg(long, env = "FHIRSIDE_BULK_STORAGE")]
    pub bulk_storage: Option<String>,
    /// Hours a finished export or import (its status and files) is kept [default: 24].
    #[arg(long, env = "FHIRSIDE_BULK_RETENTION_HOURS")]
    pub bulk_retention_hours: Option<f64>,
    /// A directory `$import` may read local files from (besides <data dir>/bulk); repeatable.
    #[arg(long = "import-root", env = "FHIRSIDE_IMPORT_ROOTS", value_delimiter = ',')]
    pub import_roots: Vec<PathBuf>,
    /// Encryption at rest with this key-encryption key: `file:PATH` (32 bytes, raw or base64, mode
    /// 0600), `env:NAME` (base64), `vault:https://HOST:8200/v1/MOUNT/keys/NAME` (Vault or OpenBao
    /// transit; token in VAULT_TOKEN) or `azure-keyvault:https://VAULT.vault.azure.net/keys/NAME`
    /// (token in FHIRSIDE_KEYVAULT_TOKEN). Chosen when the store is created.
    #[arg(long, env = "FHIRSIDE_ENCRYPTION_KEY")]
    pub encryption_key: Option<String>,
    /// MedTech's device mapping (Azure's JSON); with --medtech-fhir-mapping, turns on
    /// `POST /medtech/v1/messages`.
    #[arg(long, env = "FHIRSIDE_MEDTECH_DEVICE_MAPPING")]
    pub medtech_device_mapping: Option<PathBuf>,
    /// MedTech's FHIR destination mapping (Azure's JSON).
    #[arg(long, env = "FHIRSIDE_MEDTECH_FHIR_MAPPING")]
    pub medtech_fhir_mapping: Option<PathBuf>,
    /// How MedTech finds the Patient and Device of a message: `lookup` (they must exist) or
    /// `create` (created when missing) [default: lookup].
    #[arg(long, env = "FHIRSIDE_MEDTECH_RESOLUTION")]
    pub medtech_resolution: Option<String>,
    /// An MQTT broker to take device messages from (`mqtt://[user[:password]@]host[:port]`), QoS 1
    /// in a persistent session.
    #[arg(long, env = "FHIRSIDE_MEDTECH_MQTT")]
    pub medtech_mqtt: Option<String>,
    /// The MQTT topic filter [default: medtech/#]; with replicas, `$share/GROUP/FILTER`.
    #[arg(long, env = "FHIRSIDE_MEDTECH_MQTT_TOPIC")]
    pub medtech_mqtt_topic: Option<String>,
    /// The MQTT client id, which names the persistent session [default: fhirside-medtech]; one per
    /// replica.
    #[arg(long, env = "FHIRSIDE_MEDTECH_MQTT_CLIENT_ID")]
    pub medtech_mqtt_client_id: Option<String>,
    /// A NATS server with JetStream to take device messages from (`nats://[user[:password]@|token@]host[:port]`).
    #[arg(long, env = "FHIRSIDE_MEDTECH_NATS")]
    pub medtech_nats: Option<String>,
    /// The JetStream stream [default: MEDTECH], made if missing.
    #[arg(long, env = "FHIRSIDE_MEDTECH_NATS_STREAM")]
    pub medtech_nats_stream: Option<String>,
    /// The subject the stream holds and the consumer filters [default: medtech.>].
    #[arg(long, env = "FHIRSIDE_MEDTECH_NATS_SUBJECT")]
    pub medtech_nats_subject: Option<String>,
    /// The durable pull consumer, shared by replicas [default: fhirside-medtech].
    #[arg(long, env = "FHIRSIDE_MEDTECH_NATS_CONSUMER")]
    pub medtech_nats_consumer: Option<String>,
}

/// The configuration file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub database: Option<String>,
    pub listen: Option<String>,
    pub http: Option<bool>,
    pub auth: Option<String>,
    pub base_url: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub tls_client_auth: Option<String>,
    pub hsts_max_age: Option<u32>,
    pub hsts_include_subdomains: Option<bool>,
    pub max_body_bytes: Option<usize>,
    pub default_page_size: Option<u32>,
    pub max_page_size: Option<u32>,
    pub conditional_delete_max: Option<u32>,
    pub max_bundle_entries: Option<usize>,
    pub cors: Option<CorsFile>,
    pub authority: Option<String>,
    pub audiences: Option<Vec<String>>,
    pub allowed_object_ids: Option<Vec<String>>,
    pub authority_ca: Option<PathBuf>,
    pub access_token_version: Option<u8>,
    pub token_lifetime: Option<i64>,
    pub audit_stdout: Option<bool>,
    pub audit_retention_days: Option<u32>,
    pub audit_sync: Option<String>,
    pub audit_location: Option<String>,
    pub no_audit: Option<bool>,
    pub job_lease_seconds: Option<u64>,
    pub relay_max_attempts: Option<u32>,
    pub relay_retry_base_ms: Option<u64>,
    pub relay_retry_max_ms: Option<u64>,
    pub relay_breaker_threshold: Option<u32>,
    pub relay_breaker_open_ms: Option<u64>,
    pub export_max_concurrent: Option<u32>,
    pub export_file_bytes: Option<usize>,
    pub import_roots: Option<Vec<PathBuf>>,
    pub bulk_storage: Option<String>,
    pub bulk_retention_hours: Option<f64>,
    pub encryption_key: Option<String>,
    pub medtech_device_mapping: Option<PathBuf>,
    pub medtech_fhir_mapping: Option<PathBuf>,
    pub medtech_resolution: Option<String>,
    pub medtech_mqtt: Option<String>,
    pub medtech_mqtt_topic: Option<String>,
    pub medtech_mqtt_client_id: Option<String>,
    pub medtech_nats: Option<String>,
    pub medtech_nats_stream: Option<String>,
    pub medtech_nats_subject: Option<String>,
    pub medtech_nats_consumer: Option<String>,
}

/// The audit log, resolved: `None` when auditing is off (`--no-audit`). Its `Location` is in the
/// server's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    pub stdout: bool,
    pub retention_days: u32,
    pub sync: fhirside_audit::SyncPolicy,
}

/// How often an `interval` audit log is synced to disk.
const AUDIT_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// How callers are authenticated, resolved.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub mode: fhirside_server::AuthMode,
    /// The external issuer (`oidc` mode).
    pub authority: Option<String>,
    /// Accepted audiences; empty means the FHIR base URL.
    pub audiences: Vec<String>,
    pub allowed_object_ids: Vec<String>,
    pub authority_ca: Option<PathBuf>,
    pub access_token_version: u8,
    pub token_lifetime: i64,
}

/// The config file's `[cors]` table (also the shape of the `--cors-*` flags, each of which wins over
/// its key): Azure's FHIR service's five CORS settings.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct CorsFile {
    pub origins: Option<Vec<String>>,
    pub headers: Option<Vec<String>>,
    pub methods: Option<Vec<String>>,
    pub max_age: Option<u32>,
    pub allow_credentials: Option<bool>,
}

/// The methods allowed when origins are set and methods are not: those of the FHIR RESTful API.
const DEFAULT_CORS_METHODS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// HTTPS, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The operator's certificate and key (else the data directory's generated ones).
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
    pub client_auth: fhirside_server::tls::ClientAuth,
}

/// A year: what browsers' preload lists ask for, and long enough that a visitor returning after a
/// holiday is still protected.
const DEFAULT_HSTS_MAX_AGE: u32 = 31_536_000;

/// Resolved settings for `serve`.
#[derive(Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    /// The PostgreSQL URL; `None` for the embedded store.
    pub database: Option<String>,
    pub listen: SocketAddr,
    pub http: bool,
    /// How HTTPS is served; `None` with --http.
    pub tls: Option<TlsSettings>,
    pub server: fhirside_server::ServerConfig,
    pub auth: AuthSettings,
    pub audit: Option<AuditSettings>,
    /// `--bulk-storage`, when set (else the data directory's `bulk/`).
    pub bulk_storage: Option<String>,
    /// `--encryption-key`: the key-encryption key of encryption at rest, when it is on.
    pub encryption_key: Option<String>,
    /// MedTech's mappings, read and checked, when both are configured.
    pub medtech: Option<fhirside_server::medtech::Medtech>,
    /// The brokers MedTech takes device messages from.
    pub medtech_subscriptions: Vec<fhirside_server::medtech::brokers::Subscription>,
    /// How the relay retries deliveries.
    pub relay: fhirside_relay::RelayConfig,
}

pub fn resolve(args: ServeArgs) -> Result<Settings, String> {
    let file = match &args.config {
        None => FileConfig::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
    };
    let data_dir = args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("fhirside-data"));
    let database = check_database(args.database.or(file.database))?;
    let listen_text = args.listen.or(file.listen).unwrap_or_else(|| "127.0.0.1:8443".into());
    let listen = resolve_listen(&listen_text)?;
    let http = args.http.or(file.http).unwrap_or(false);
    let auth_text = args.auth.or(file.auth).unwrap_or_else(|| "builtin".into());
    let auth = match auth_text.as_str() {
        "builtin" => fhirside_server::AuthMode::BuiltIn,
        "oidc" => fhirside_server::AuthMode::External,
        "none" => fhirside_server::AuthMode::None,
        other => return Err(format!("unknown --auth mode '{other}'; use 'builtin', 'oidc' or 'none' (loopback only)")),
    };
    let authority = args.authority.or(file.authority).map(|a| a.trim_end_matches('/').to_owned());
    if auth == fhirside_server::AuthMode::External {
        match &authority {
            None => return Err("--auth oidc needs --authority, the issuer's URL".into()),
            Some(a) if !a.starts_with("https://") => {
                return Err(format!("--authority must be an https URL, not '{a}'"))
            }
            Some(_) => {}
        }
    }
    let list = |flags: Vec<String>, file: Option<Vec<String>>| -> Vec<String> {
        let values = if flags.is_empty() { file.unwrap_or_default() } else { flags };
        values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()).map(str::to_owned).collect()
    };
    let access_token_version = args.access_token_version.or(file.access_token_version).unwrap_or(1);
    if !matches!(access_token_version, 1 | 2) {
        return Err(format!("--access-token-version must be 1 or 2, not {access_token_version}"));
    }
    let token_lifetime = args.token_lifetime.or(file.token_lifetime).unwrap_or(3599);
    if !(60..=86_400).contains(&token_lifetime) {
        return Err(format!("--token-lifetime must be between 60 and 86400 seconds, not {token_lifetime}"));
    }
    let auth_settings = AuthSettings {
        mode: auth,
        authority,
        audiences: list(args.audiences, file.audiences),
        allowed_object_ids: list(args.allowed_object_ids, file.allowed_object_ids),
        authority_ca: args.authority_ca.or(file.authority_ca),
        access_token_version,
        token_lifetime,
    };
    if http && !listen.ip().is_loopback() {
        return Err(format!(
            "plain HTTP is only allowed on a loopback address, not {listen}; drop --http to serve HTTPS"
        ));
    }
    if auth == fhirside_server::AuthMode::None && !listen.ip().is_loopback() {
        return Err(format!("--auth none is only allowed on a loopback address, not {listen}"));
    }
    let cert_and_key = match (args.tls_cert.or(file.tls_cert), args.tls_key.or(file.tls_key)) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    let client_auth =
        resolve_client_auth(args.tls_client_ca.or(file.tls_client_ca), args.tls_client_auth.or(file.tls_client_auth))?;
    if http && client_auth != fhirside_server::tls::ClientAuth::Off {
        return Err("mutual TLS (--tls-client-auth) needs HTTPS; drop --http".into());
    }
    let tls = (!http).then_some(TlsSettings { cert_and_key, client_auth });
    let hsts_max_age = args.hsts_max_age.or(file.hsts_max_age).unwrap_or(DEFAULT_HSTS_MAX_AGE);
    let hsts_include_subdomains = args.hsts_include_subdomains.or(file.hsts_include_subdomains).unwrap_or(false);
    if hsts_max_age == 0 && hsts_include_subdomains {
        return Err("--hsts-include-subdomains needs Strict-Transport-Security on (--hsts-max-age above 0)".into());
    }
    // Browsers ignore the header over plain HTTP (RFC 6797 §8.1), and on a loopback `--http`
    // server it would only mislead whoever reads the responses.
    let hsts = (!http && hsts_max_age > 0)
        .then_some(fhirside_server::Hsts { max_age: hsts_max_age, include_subdomains: hsts_include_subdomains });
    let defaults = fhirside_server::ServerConfig::default();
    let base_url = args.base_url.or(file.base_url).map(|b| b.trim_end_matches('/').to_owned());
    if let Some(base) = &base_url {
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(format!("--base-url must be an http(s) URL, not '{base}'"));
        }
    }
    let cors_flags = CorsFile {
        origins: Some(args.cors_origins).filter(|v| !v.is_empty()),
        headers: Some(args.cors_headers).filter(|v| !v.is_empty()),
        methods: Some(args.cors_methods).filter(|v| !v.is_empty()),
        max_age: args.cors_max_age,
        allow_credentials: args.cors_allow_credentials,
    };
    let cors = resolve_cors(cors_flags, file.cors.unwrap_or_default())?;
    let audit_location = args.audit_location.or(file.audit_location).unwrap_or(defaults.audit_location.clone());
    let audit_location = audit_location.trim().to_owned();
    if audit_location.is_empty() || audit_location.len() > 128 || audit_location.chars().any(char::is_control) {
        return Err(format!("--audit-location must be a name of 1 to 128 characters, not '{audit_location}'"));
    }
    let audit = if args.no_audit.or(file.no_audit).unwrap_or(false) {
        None
    } else {
        let retention_days =
            args.audit_retention_days.or(file.audit_retention_days).unwrap_or(fhirside_audit::DEFAULT_RETENTION_DAYS);
        if retention_days == 0 {
            return Err("--audit-retention-days must be at least 1".into());
        }
        let sync = match args.audit_sync.or(file.audit_sync).as_deref() {
            None | Some("interval") => fhirside_audit::SyncPolicy::Interval(AUDIT_SYNC_INTERVAL),
            Some("always") => fhirside_audit::SyncPolicy::Always,
            Some(other) => return Err(format!("--audit-sync must be 'always' or 'interval', not '{other}'")),
        };
        Some(AuditSettings { stdout: args.audit_stdout.or(file.audit_stdout).unwrap_or(false), retention_days, sync })
    };
    let server = fhirside_server::ServerConfig {
        base_url,
        scheme: if http { "http" } else { "https" },
        auth,
        oauth: None,
        max_body_bytes: args.max_body_bytes.or(file.max_body_bytes).unwrap_or(defaults.max_body_bytes),
        default_page_size: file.default_page_size.unwrap_or(defaults.default_page_size),
        max_page_size: file.max_page_size.unwrap_or(defaults.max_page_size),
        conditional_delete_max: file.conditional_delete_max.unwrap_or(defaults.conditional_delete_max),
        max_bundle_entries: args.max_bundle_entries.or(file.max_bundle_entries).unwrap_or(defaults.max_bundle_entries),
        cors,
        audit_location,
        job_lease: match args.job_lease_seconds.or(file.job_lease_seconds) {
            None => defaults.job_lease,
            Some(seconds @ 1..=3600) => std::time::Duration::from_secs(seconds),
            Some(other) => return Err(format!("--job-lease-seconds must be between 1 and 3600, not {other}")),
        },
        hsts,
        export: fhirside_server::ExportConfig {
            max_concurrent: match args.export_max_concurrent.or(file.export_max_concurrent) {
                None => defaults.export.max_concurrent,
                Some(n @ 1..=64) => n,
                Some(other) => return Err(format!("--export-max-concurrent must be between 1 and 64, not {other}")),
            },
            file_bytes: match args.export_file_bytes.or(file.export_file_bytes) {
                None => defaults.export.file_bytes,
                Some(n @ 1024..=4_294_967_296) => n,
                Some(other) => {
                    return Err(format!("--export-file-bytes must be between 1024 and 4294967296, not {other}"))
                }
            },
            retention: match args.bulk_retention_hours.or(file.bulk_retention_hours) {
                None => defaults.export.retention,
                Some(hours) if hours > 0.0 && hours <= 24.0 * 365.0 => {
                    std::time::Duration::from_secs_f64(hours * 3600.0)
                }
                Some(other) => {
                    return Err(format!("--bulk-retention-hours must be above 0 and at most 8760, not {other}"))
                }
            },
            import_roots: if args.import_roots.is_empty() {
                file.import_roots.unwrap_or_default()
            } else {
                args.import_roots
            },
        },
    };
    if server.default_page_size == 0 || server.default_page_size > server.max_page_size {
        return Err("default_page_size must be between 1 and max_page_size".into());
    }
    let bulk_storage = args.bulk_storage.or(file.bulk_storage).filter(|s| !s.trim().is_empty());
    let medtech = resolve_medtech(
        args.medtech_device_mapping.or(file.medtech_device_mapping),
        args.medtech_fhir_mapping.or(file.medtech_fhir_mapping),
        args.medtech_resolution.or(file.medtech_resolution),
    )?;
    let medtech_subscriptions = resolve_subscriptions(
        MedtechBrokers {
            mqtt: args.medtech_mqtt.or(file.medtech_mqtt),
            mqtt_topic: args.medtech_mqtt_topic.or(file.medtech_mqtt_topic),
            mqtt_client_id: args.medtech_mqtt_client_id.or(file.medtech_mqtt_client_id),
            nats: args.medtech_nats.or(file.medtech_nats),
            nats_stream: args.medtech_nats_stream.or(file.medtech_nats_stream),
            nats_subject: args.medtech_nats_subject.or(file.medtech_nats_subject),
            nats_consumer: args.medtech_nats_consumer.or(file.medtech_nats_consumer),
        },
        medtech.is_some(),
    )?;
    let encryption_key = args.encryption_key.or(file.encryption_key);
    if encryption_key.as_deref().is_some_and(|key| key.trim().is_empty()) {
        return Err("--encryption-key is empty".into());
    }
    let relay = resolve_relay(RelayFlags {
        max_attempts: args.relay_max_attempts.or(file.relay_max_attempts),
        retry_base_ms: args.relay_retry_base_ms.or(file.relay_retry_base_ms),
        retry_max_ms: args.relay_retry_max_ms.or(file.relay_retry_max_ms),
        breaker_threshold: args.relay_breaker_threshold.or(file.relay_breaker_threshold),
        breaker_open_ms: args.relay_breaker_open_ms.or(file.relay_breaker_open_ms),
    })?;
    Ok(Settings {
        data_dir,
        database,
        listen,
        http,
        tls,
        server,
        auth: auth_settings,
        audit,
        bulk_storage,
        encryption_key,
        medtech,
        medtech_subscriptions,
        relay,
    })
}

/// The relay's retry settings as given, each optional.
struct RelayFlags {
    max_attempts: Option<u32>,
    retry_base_ms: Option<u64>,
    retry_max_ms: Option<u64>,
    breaker_threshold: Option<u32>,
    breaker_open_ms: Option<u64>,
}

fn resolve_relay(flags: RelayFlags) -> Result<fhirside_relay::RelayConfig, String> {
    use std::time::Duration;
    let defaults = fhirside_relay::RelayConfig::default();
    let in_range = |name: &str, value: u64, range: std::ops::RangeInclusive<u64>| {
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(format!("--{name} must be between {} and {}, not {value}", range.start(), range.end()))
        }
    };
    let config = fhirside_relay::RelayConfig {
        max_attempts: match flags.max_attempts {
            None => defaults.max_attempts,
            Some(n) => in_range("relay-max-attempts", n.into(), 1..=1000)? as u32,
        },
        retry_base: flags
            .retry_base_ms
            .map(|ms| in_range("relay-retry-base-ms", ms, 1..=3_600_000).map(Duration::from_millis))
            .transpose()?
            .unwrap_or(defaults.retry_base),
        retry_max: flags
            .retry_max_ms
            .map(|ms| in_range("relay-retry-max-ms", ms, 1..=86_400_000).map(Duration::from_millis))
            .transpose()?
            .unwrap_or(defaults.retry_max),
        breaker_threshold: match flags.breaker_threshold {
            None => defaults.breaker_threshold,
            Some(n) => in_range("relay-breaker-threshold", n.into(), 1..=1000)? as u32,
        },
        breaker_open: flags
            .breaker_open_ms
            .map(|ms| in_range("relay-breaker-open-ms", ms, 1..=3_600_000).map(Duration::from_millis))
            .transpose()?
            .unwrap_or(defaults.breaker_open),
        ..defaults
    };
    if config.retry_max < config.retry_base {
        return Err("--relay-retry-max-ms must not be less than --relay-retry-base-ms".into());
    }
    Ok(config)
}

/// Mutual TLS: the client CA bundle and the mode. A bundle alone means `required`, so that naming
/// the CA never leaves the door open by accident; a mode that asks for certificates needs a bundle.
fn resolve_client_auth(ca: Option<PathBuf>, mode: Option<String>) -> Result<fhirside_server::tls::ClientAuth, String> {
    use fhirside_server::tls::ClientAuth;
    match (mode.as_deref().map(|m| m.trim().to_ascii_lowercase()).as_deref(), ca) {
        (Some("off"), _) | (None, None) => Ok(ClientAuth::Off),
        (Some("required") | None, Some(ca)) => Ok(ClientAuth::Required { ca }),
        (Some("optional"), Some(ca)) => Ok(ClientAuth::Optional { ca }),
        (Some(mode @ ("required" | "optional")), None) => Err(format!(
            "--tls-client-auth {mode} needs --tls-client-ca, the PEM bundle of the client certificates' CA"
        )),
        (Some(other), _) => Err(format!("--tls-client-auth must be 'required', 'optional' or 'off', not '{other}'")),
    }
}

/// The broker settings of `serve`, before they are checked.
struct MedtechBrokers {
    mqtt: Option<String>,
    mqtt_topic: Option<String>,
    mqtt_client_id: Option<String>,
    nats: Option<String>,
    nats_stream: Option<String>,
    nats_subject: Option<String>,
    nats_consumer: Option<String>,
}

/// The brokers to subscribe to: each needs MedTech's mappings.
fn resolve_subscriptions(
    brokers: MedtechBrokers,
    mappings: bool,
) -> Result<Vec<fhirside_server::medtech::brokers::Subscription>, String> {
    use fhirside_server::medtech::brokers::{Mqtt, Nats, Subscription};
    let mut subscriptions = Vec::new();
    if let Some(url) = brokers.mqtt.filter(|u| !u.trim().is_empty()) {
        let topic = brokers.mqtt_topic.unwrap_or_else(|| "medtech/#".into());
        let client_id = brokers.mqtt_client_id.unwrap_or_else(|| "fhirside-medtech".into());
        let source = Mqtt::new(url.trim(), &topic, &client_id).map_err(|e| format!("--medtech-mqtt: {e}"))?;
        subscriptions.push(Subscription::Mqtt(source));
    }
    if let Some(url) = brokers.nats.filter(|u| !u.trim().is_empty()) {
        let stream = brokers.nats_stream.unwrap_or_else(|| "MEDTECH".into());
        let subject = brokers.nats_subject.unwrap_or_else(|| "medtech.>".into());
        let consumer = brokers.nats_consumer.unwrap_or_else(|| "fhirside-medtech".into());
        let source = Nats::new(url.trim(), &stream, &subject, &consumer).map_err(|e| format!("--medtech-nats: {e}"))?;
        subscriptions.push(Subscription::Nats(source));
    }
    if !subscriptions.is_empty() && !mappings {
        return Err("--medtech-mqtt and --medtech-nats need --medtech-device-mapping and --medtech-fhir-mapping".into());
    }
    Ok(subscriptions)
}

/// MedTech's mappings, read and checked: both or neither must be given.
fn resolve_medtech(
    device: Option<PathBuf>,
    fhir: Option<PathBuf>,
    resolution: Option<String>,
) -> Result<Option<fhirside_server::medtech::Medtech>, String> {
    use fhirside_server::medtech::{Medtech, Resolution};
    let resolution = match resolution.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("lookup") => Resolution::Lookup,
        Some("create") => Resolution::Create,
        Some(other) => return Err(format!("--medtech-resolution must be 'lookup' or 'create', not '{other}'")),
    };
    let (device, fhir) = match (device, fhir) {
        (None, None) => return Ok(None),
        (Some(device), Some(fhir)) => (device, fhir),
        _ => return Err("--medtech-device-mapping and --medtech-fhir-mapping go together".into()),
    };
    let (device, fhir) = (crate::medtech_cmd::read_json(&device)?, crate::medtech_cmd::read_json(&fhir)?);
    Medtech::load(&device, &fhir, resolution).map(Some).map_err(|e| format!("MedTech: {e}"))
}

/// The database URL, if one is set: only PostgreSQL's schemes are accepted (the embedded store
/// needs no URL).
pub fn check_database(url: Option<String>) -> Result<Option<String>, String> {
    match url.map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()) {
        None => Ok(None),
        Some(url) if fhirside_store::PostgresConfig::is_postgres_url(&url) => Ok(Some(url)),
        Some(_) => Err("the database URL must start with postgres:// or postgresql://".into()),
    }
}

/// The database URL for `fhirside db …`: the flag or `FHIRSIDE_DATABASE_URL`, else the config
/// file's `database`.
pub fn database_url(flag: Option<String>, config: Option<&std::path::Path>) -> Result<String, String> {
    let file = file_config(config)?;
    check_database(flag.or(file.database))?
        .ok_or_else(|| "no database: give --database postgres://… (or FHIRSIDE_DATABASE_URL)".to_owned())
}

/// The CORS policy from the flags (which win, setting by setting) and the `[cors]` table; `None`
/// without origins. Headers default to `*` (FHIR apps send `Authorization`, `Content-Type`,
/// `Prefer`, `If-Match`…, and the policy already limits who may call), methods to the FHIR API's.
fn resolve_cors(flags: CorsFile, file: CorsFile) -> Result<Option<fhirside_server::CorsConfig>, String> {
    let list = |values: Vec<String>| -> Vec<String> {
        values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()).map(str::to_owned).collect()
    };
    let origins = list(flags.origins.or(file.origins).unwrap_or_default());
    let headers = flags.headers.or(file.headers);
    let methods = flags.methods.or(file.methods);
    let max_age = flags.max_age.or(file.max_age);
    let allow_credentials = flags.allow_credentials.or(file.allow_credentials).unwrap_or(false);
    if origins.is_empty() {
        if headers.is_some() || methods.is_some() || max_age.is_some() || allow_credentials {
            return Err("CORS settings need at least one origin (--cors-origin, or `origins` in [cors])".into());
        }
        return Ok(None);
    }
    let cors = fhirside_server::CorsConfig {
        origins,
        headers: headers.map(list).unwrap_or_else(|| vec!["*".into()]),
        methods: methods
            .map(|m| list(m).iter().map(|m| m.to_ascii_uppercase()).collect())
            .unwrap_or_else(|| DEFAULT_CORS_METHODS.map(String::from).to_vec()),
        max_age,
        allow_credentials,
    };
    cors.validate()?;
    Ok(Some(cors))
}

/// Where the admin commands (`fhirside app …`) and `fhirside token` find the installation,
/// resolved as `serve` resolves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTarget {
    /// The flag or `FHIRSIDE_DATA_DIR`, else the config file's `data_dir`, else `./fhirside-data`.
    pub data_dir: PathBuf,
    /// The flag or `FHIRSIDE_DATABASE_URL`, else the config file's `database`; `None` (or an empty
    /// value) for the embedded stores.
    pub database: Option<String>,
}

pub fn admin_target(
    data_dir: Option<PathBuf>,
    database: Option<String>,
    config: Option<&std::path::Path>,
) -> Result<AdminTarget, String> {
    let file = file_config(config)?;
    Ok(AdminTarget {
        data_dir: data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("fhirside-data")),
        database: check_database(database.or(file.database))?,
    })
}

/// `--encryption-key`, else the config file's `encryption_key`.
pub fn encryption_key(flag: Option<String>, config: Option<&std::path::Path>) -> Result<Option<String>, String> {
    Ok(match flag {
        Some(key) => Some(key),
        None => file_config(config)?.encryption_key,
    })
}

/// The config file at `path`, or an empty one without a path.
fn file_config(path: Option<&std::path::Path>) -> Result<FileConfig, String> {
    let Some(path) = path else { return Ok(FileConfig::default()) };
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// An `ip:port` or `host:port` (resolved now, so that the loopback rule sees real addresses).
fn resolve_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    use std::net::ToSocketAddrs;
    let mut addrs = text.to_socket_addrs().map_err(|e| format!("--listen '{text}': {e}"))?;
    addrs.next().ok_or_else(|| format!("--listen '{text}' resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_plain_http_and_no_auth_off_loopback() {
        let args = ServeArgs { listen: Some("0.0.0.0:8443".into()), http: Some(true), ..Default::default() };
        assert!(resolve(args).unwrap_err().contains("plain HTTP"));
        let args = ServeArgs { listen: Some("0.0.0.0:8443".into()), auth: Some("none".into()), ..Default::default() };
        assert!(resolve(args).unwrap_err().contains("--auth none"));
        let args = ServeArgs { listen: Some("0.0.0.0:8443".into()), ..Default::default() };
        assert_eq!(
            resolve(args).unwrap().auth.mode,
            fhirside_server::AuthMode::BuiltIn,
            "authentication is on by default"
        );
        let args = ServeArgs { auth: Some("oidc".into()), ..Default::default() };
        assert!(resolve(args).unwrap_err().contains("--authority"));
    }

    #[test]
    fn defaults_and_file_precedence() {
        let dir = std::env::temp_dir().join(format!("fhirside-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("fhirside.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9000\"\nmax_page_size = 50\n").unwrap();
        let settings = resolve(ServeArgs { config: Some(file.clone()), ..Default::default() }).unwrap();
        assert_eq!(settings.listen.port(), 9000);
        assert_eq!(settings.server.max_page_size, 50);
        assert!(!settings.http);
        let settings = resolve(ServeArgs {
            config: Some(file.clone()),
            listen: Some("127.0.0.1:9001".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(settings.listen.port(), 9001, "flags win over the file");
        std::fs::write(&file, "lisen = \"127.0.0.1:9000\"\n").unwrap();
        assert!(resolve(ServeArgs { config: Some(file), ..Default::default() }).is_err(), "unknown keys are refused");
    }

    #[test]
    fn admin_commands_find_the_installation_as_serve_does() {
        let dir = std::env::temp_dir().join(format!("fhirside-config-admin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("fhirside.toml");
        std::fs::write(&file, "data_dir = \"/srv/fhir\"\ndatabase = \"postgres://db/fhir\"\n").unwrap();
        let target = admin_target(None, None, Some(&file)).unwrap();
        assert_eq!(target.data_dir, PathBuf::from("/srv/fhir"));
        assert_eq!(target.database.as_deref(), Some("postgres://db/fhir"));
        let flags = admin_target(Some("d".into()), Some("postgresql://other/x".into()), Some(&file)).unwrap();
        assert_eq!(flags, AdminTarget { data_dir: "d".into(), database: Some("postgresql://other/x".into()) });
        let embedded = admin_target(None, Some(String::new()), Some(&file)).unwrap();
        assert_eq!(embedded.database, None, "an empty flag chooses the embedded stores");
        assert_eq!(admin_target(None, None, None).unwrap().data_dir, PathBuf::from("fhirside-data"));
        assert!(admin_target(None, Some("mysql://x".into()), None).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn audit_settings() {
        let settings = resolve(ServeArgs::default()).unwrap();
        assert_eq!(
            settings.audit,
            Some(AuditSettings {
                stdout: false,
                retention_days: 2192,
                sync: fhirside_audit::SyncPolicy::Interval(std::time::Duration::from_secs(1)),
            }),
            "on by default"
        );
        assert_eq!(settings.server.audit_location, "local");
        let args = ServeArgs {
            audit_stdout: Some(true),
            audit_retention_days: Some(30),
            audit_sync: Some("always".into()),
            audit_location: Some("westeurope".into()),
            ..Default::default()
        };
        let settings = resolve(args).unwrap();
        let expected = AuditSettings { stdout: true, retention_days: 30, sync: fhirside_audit::SyncPolicy::Always };
        assert_eq!(settings.audit, Some(expected));
        assert_eq!(settings.server.audit_location, "westeurope");
        assert_eq!(resolve(ServeArgs { no_audit: Some(true), ..Default::default() }).unwrap().audit, None);
        let refused = |args: ServeArgs| resolve(args).unwrap_err();
        assert!(
            refused(ServeArgs { audit_sync: Some("sometimes".into()), ..Default::default() }).contains("--audit-sync")
        );
        assert!(refused(ServeArgs { audit_retention_days: Some(0), ..Default::default() }).contains("retention"));
        assert!(refused(ServeArgs { audit_location: Some(" ".into()), ..Default::default() }).contains("location"));

        let dir = std::env::temp_dir().join(format!("fhirside-config-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("fhirside.toml");
        std::fs::write(&file, "audit_sync = \"always\"\naudit_retention_days = 7\naudit_location = \"eastus\"\n")
            .unwrap();
        let settings = resolve(ServeArgs { config: Some(file.clone()), ..Default::default() }).unwrap();
        assert_eq!(
            settings.audit.as_ref().map(|a| (a.retention_days, a.sync)),
            Some((7, fhirside_audit::SyncPolicy::Always))
        );
        assert_eq!(settings.server.audit_location, "eastus");
        std::fs::write(&file, "no_audit = true\n").unwrap();
        assert_eq!(resolve(ServeArgs { config: Some(file), ..Default::default() }).unwrap().audit, None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tls_settings() {
        use fhirside_server::tls::ClientAuth;
        let settings = resolve(ServeArgs::default()).unwrap();
        assert_eq!(settings.tls, Some(TlsSettings { cert_and_key: None, client_auth: ClientAuth::Off }));
        let hsts = settings.server.hsts.unwrap();
        assert_eq!(hsts.header_value(), "max-age=31536000", "on by default, a year, without subdomains");

        let args = ServeArgs {
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            tls_client_ca: Some("ca.pem".into()),
            hsts_max_age: Some(600),
            hsts_include_subdomains: Some(true),
            ..Default::default()
        };
        let settings = resolve(args).unwrap();
        let tls = settings.tls.unwrap();
        assert_eq!(tls.cert_and_key, Some(("c.pem".into(), "k.pem".into())));
        assert_eq!(tls.client_auth, ClientAuth::Required { ca: "ca.pem".into() }, "a client CA alone means required");
        assert_eq!(settings.server.hsts.unwrap().header_value(), "max-age=600; includeSubDomains");
        let optional = ServeArgs {
            tls_client_ca: Some("ca.pem".into()),
            tls_client_auth: Some("optional".into()),
            ..Default::default()
        };
        assert_eq!(resolve(optional).unwrap().tls.unwrap().client_auth, ClientAuth::Optional { ca: "ca.pem".into() });
        let off = ServeArgs {
            tls_client_ca: Some("ca.pem".into()),
            tls_client_auth: Some("off".into()),
            ..Default::default()
        };
        assert_eq!(resolve(off).unwrap().tls.unwrap().client_auth, ClientAuth::Off);
        assert_eq!(resolve(ServeArgs { hsts_max_age: Some(0), ..Default::default() }).unwrap().server.hsts, None);

        // Plain HTTP: loopback only, never HSTS, and no mutual TLS to fall back from.
        let http = resolve(ServeArgs { http: Some(true), ..Default::default() }).unwrap();
        assert_eq!((http.tls, http.server.hsts), (None, None));
        let refused = |args: ServeArgs| resolve(args).unwrap_err();
        let message =
            refused(ServeArgs { listen: Some("0.0.0.0:8080".into()), http: Some(true), ..Default::default() });
        assert!(message.contains("plain HTTP is only allowed on a loopback address"), "{message}");
        let message = refused(ServeArgs { listen: Some("[::]:8080".into()), http: Some(true), ..Default::default() });
        assert!(message.contains("loopback"), "{message}");
        assert!(resolve(ServeArgs { listen: Some("[::1]:0".into()), http: Some(true), ..Default::default() }).is_ok());
        let message =
            refused(ServeArgs { http: Some(true), tls_client_ca: Some("ca.pem".into()), ..Default::default() });
        assert!(message.contains("needs HTTPS"), "{message}");
        let message = refused(ServeArgs { tls_client_auth: Some("required".into()), ..Default::default() });
        assert!(message.contains("--tls-client-ca"), "{message}");
        let message = refused(ServeArgs { tls_client_auth: Some("sometimes".into()), ..Default::default() });
        assert!(message.contains("'sometimes'"), "{message}");
        let message = refused(ServeArgs { tls_cert: Some("c.pem".into()), ..Default::default() });
        assert!(message.contains("go together"), "{message}");
        let message =
            refused(ServeArgs { hsts_max_age: Some(0), hsts_include_subdomains: Some(true), ..Default::default() });
        assert!(message.contains("--hsts-max-age"), "{message}");

        let dir = std::env::temp_dir().join(format!("fhirside-config-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("fhirside.toml");
        std::fs::write(
            &file,
            "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\ntls_client_ca = \"ca.pem\"\ntls_client_auth = \"optional\"\n\
             hsts_max_age = 86400\nhsts_include_subdomains = true\n",
        )
        .unwrap();
        let settings = resolve(ServeArgs { config: Some(file.clone()), ..Default::default() }).unwrap();
        assert_eq!(settings.tls.unwrap().client_auth, ClientAuth::Optional { ca: "ca.pem".into() });
        assert_eq!(settings.server.hsts.unwrap().header_value(), "max-age=86400; includeSubDomains");
        let args =
            ServeArgs { config: Some(file.clone()), tls_client_auth: Some("required".into()), ..Default::default() };
        assert_eq!(resolve(args).unwrap().tls.unwrap().client_auth, ClientAuth::Required { ca: "ca.pem".into() });
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn cors_settings() {
        assert!(resolve(ServeArgs::default()).unwrap().server.cors.is_none(), "off by default");
        let args = ServeArgs { cors_origins: vec!["https://app.example".into()], ..Default::default() };
        let cors = resolve(args).unwrap().server.cors.unwrap();
        assert_eq!(cors.origins, ["https://app.example"]);
        assert_eq!(cors.headers, ["*"]);
        assert_eq!(cors.methods, ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);
        assert_eq!((cors.max_age, cors.allow_credentials), (None, false));

        let refused = |args: ServeArgs| resolve(args).unwrap_err();
        let message = refused(ServeArgs {
            cors_origins: vec!["*".into()],
            cors_allow_credentials: Some(true),
            ..Default::default()
        });
        assert!(message.contains("credentials") && message.contains("'*'"), "{message}");
        let message = refused(ServeArgs { cors_origins: vec!["https://app.example/".into()], ..Default::default() });
        assert!(message.contains("https://app.example/"), "{message}");
        let message = refused(ServeArgs { cors_methods: vec!["GET".into()], ..Default::default() });
        assert!(message.contains("origin"), "{message}");

        let dir = std::env::temp_dir().join(format!("fhirside-config-cors-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("fhirside.toml");
        std::fs::write(
            &file,
            "[cors]\norigins = [\"https://a.example\", \"http://localhost:3000\"]\nheaders = [\"Authorization\", \
             \"Content-Type\"]\nmethods = [\"get\", \"post\"]\nmax_age = 600\nallow_credentials = true\n",
        )
        .unwrap();
        let cors =
            resolve(ServeArgs { config: Some(file.clone()), ..Default::default() }).unwrap().server.cors.unwrap();
        assert_eq!(cors.origins, ["https://a.example", "http://localhost:3000"]);
        assert_eq!(cors.headers, ["Authorization", "Content-Type"]);
        assert_eq!(cors.methods, ["GET", "POST"]);
        assert_eq!((cors.max_age, cors.allow_credentials), (Some(600), true));
        // A flag replaces its key, and only that key.
        let args = ServeArgs {
            config: Some(file.clone()),
            cors_origins: vec!["https://b.example".into()],
            ..Default::default()
        };
        let cors = resolve(args).unwrap().server.cors.unwrap();
        assert_eq!(cors.origins, ["https://b.example"]);
        assert_eq!(cors.max_age, Some(600));
        std::fs::write(&file, "[cors]\norigins = [\"*\"]\nallow_credentials = true\n").unwrap();
        assert!(resolve(ServeArgs { config: Some(file.clone()), ..Default::default() })
            .unwrap_err()
            .contains("credentials"));
        std::fs::write(&file, "[cors]\norigin = [\"*\"]\n").unwrap();
        assert!(resolve(ServeArgs { config: Some(file), ..Default::default() }).is_err(), "unknown keys are refused");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
