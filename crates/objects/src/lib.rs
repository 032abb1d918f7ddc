//! Where bulk data lives: the NDJSON files `$export` writes and `$import` reads, in a local
//! directory, Azure Blob Storage or S3, behind one small API ([`ObjectStore`]): containers
//! (directories, blob containers, buckets) holding objects under `/`-separated keys.
//!
//! This crate knows nothing of FHIR, of serving HTTP or of the resource store; it talks to the
//! storage services with [`fhirside_fetch`] (https only, except to emulators on the loopback
//! interface), signs requests itself (Azure's Shared Key, S3's Signature V4), gets an Azure
//! managed identity's tokens from the platform's identity endpoint (src/managed_identity.rs) and
//! reads the XML answers by hand, so it adds no SDK, XML or URL crate to the build.
//!
//! Credentials and tokens never appear in URLs ([`ObjectStore::url`]), descriptions
//! ([`ObjectStore::describe`]), Debug output or errors ([`ObjectError`]).

mod azure;
mod errors;
mod http;
mod local;
mod managed_identity;
mod names;
mod reader;
mod s3;
mod setting;
mod source;
#[cfg(feature = "testing")]
pub mod testing;
mod text;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fhirside_fetch::Client;

pub use errors::ObjectError;
pub use names::MAX_KEY_BYTES;
pub use reader::ObjectReader;
pub use source::open_source;

/// Where the objects are.
#[derive(Clone, PartialEq, Eq)]
pub enum Backend {
    /// `{root}/{container}/{key}` on the local file system.
    Local { root: PathBuf },
    /// `https://{account}.blob.core.windows.net`, or Azurite's `http://127.0.0.1:10000/devstoreaccount1`.
    AzureBlob { account_url: String, auth: BlobAuth },
    /// `endpoint` is `https://s3.{region}.amazonaws.com` or an S3-compatible server's URL.
    S3 { endpoint: String, region: String, auth: S3Auth, path_style: bool },
}

/// How requests to Azure Blob Storage are authorized.
#[derive(Clone, PartialEq, Eq)]
pub enum BlobAuth {
    /// The storage account's name and one of its access keys (base64), signing each request.
    SharedKey { account: String, key: String },
    /// A shared access signature: the query string (`sv=…&sig=…`, with or without `?`).
    Sas(String),
    /// An OAuth 2.0 access token for `https://storage.azure.com/` (Entra ID), used as it is until
    /// it expires.
    Bearer(String),
    /// The tokens of an Azure managed identity, fetched from the platform's identity endpoint,
    /// cached and refreshed before they expire.
    ManagedIdentity(ManagedIdentity),
}

/// An Azure managed identity (Entra ID) and where its tokens come from.
#[derive(Clone, PartialEq, Eq)]
pub struct ManagedIdentity {
    /// A user-assigned identity's client id; `None` for the system-assigned identity.
    pub client_id: Option<String>,
    pub endpoint: IdentityEndpoint,
}

/// The platform's endpoint that hands out a managed identity's tokens.
#[derive(Clone, PartialEq, Eq)]
pub enum IdentityEndpoint {
    /// App Service, Azure Functions, Container Apps: the URL of `IDENTITY_ENDPOINT`, and the value
    /// of `IDENTITY_HEADER`, which each request carries back (a secret of the platform's).
    AppService { url: String, header: String },
    /// The Instance Metadata Service of VMs, scale sets and AKS nodes, at `http://169.254.169.254`
    /// unless `AZURE_POD_IDENTITY_AUTHORITY_HOST` names another authority (`scheme://host[:port]`).
    Imds { authority: String },
    /// AKS workload identity: the service account token that Kubernetes writes to
    /// `AZURE_FEDERATED_TOKEN_FILE` (and replaces before it expires), exchanged at the Entra
    /// token endpoint of `AZURE_AUTHORITY_HOST` and `AZURE_TENANT_ID` for a token of the
    /// identity whose federated credential trusts it.
    Workload { authority: String, tenant: String, token_file: std::path::PathBuf },
}

/// AWS credentials (an access key, or temporary ones with their session token).
#[derive(Clone, PartialEq, Eq)]
pub struct S3Auth {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

// Debug shows no secrets: these end up in logs.
impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&describe(self))
    }
}

impl std::fmt::Debug for BlobAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobAuth::SharedKey { account, .. } => write!(f, "SharedKey {{ account: {account:?}, .. }}"),
            BlobAuth::Sas(_) => f.write_str("Sas(..)"),
            BlobAuth::Bearer(_) => f.write_str("Bearer(..)"),
            BlobAuth::ManagedIdentity(identity) => write!(f, "ManagedIdentity({identity:?})"),
        }
    }
}

impl std::fmt::Debug for ManagedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedIdentity").field("client_id", &self.client_id).field("endpoint", &self.endpoint).finish()
    }
}

impl std::fmt::Debug for IdentityEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdentityEndpoint::AppService { url, .. } => {
                f.debug_struct("AppService").field("url", &shown_url(url)).finish_non_exhaustive()
            }
            IdentityEndpoint::Imds { authority } => f.debug_struct("Imds").field("authority", authority).finish(),
            IdentityEndpoint::Workload { authority, tenant, token_file } => f
                .debug_struct("Workload")
                .field("authority", authority)
                .field("tenant", tenant)
                .field("token_file", token_file)
                .finish(),
        }
    }
}

impl std::fmt::Debug for S3Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Auth").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

/// Sizes and times; the defaults suit production, tests make them small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Bodies larger than this are uploaded in parts (Azure's Put Block, S3's multipart upload).
    pub multipart_threshold: usize,
    /// The size of each part (S3 takes no less than 5 MiB).
    pub part_size: usize,
    /// Keys asked for per listing page (S3 gives at most 1000, Azure 5000).
    pub list_page_size: usize,
    /// How long a request without a body may take, and how long a download may stall.
    pub request_timeout: Duration,
    /// Uploads get one more second per this many bytes: the slowest upload rate accepted.
    pub upload_bytes_per_second: usize,
    /// Further attempts after a transient failure (network, timeout, throttling, HTTP 5xx).
    pub retries: u32,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            multipart_threshold: 256 << 20,
            part_size: 64 << 20,
            list_page_size: 1000,
            request_timeout: Duration::from_secs(60),
            upload_bytes_per_second: 1 << 20,
            retries: 2,
        }
    }
}

/// A store of objects. Cloning is cheap; clones share the configuration.
#[derive(Clone)]
pub struct ObjectStore {
    shared: Arc<Shared>,
}

struct Shared {
    backend: Backend,
    http: http::Http,
    /// A managed identity's token cache, shared by all requests (and by [`ObjectStore::with_tuning`]'s
    /// copies, the identity being the same).
    tokens: Option<Arc<managed_identity::TokenSource>>,
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore").field("backend", &self.shared.backend).finish_non_exhaustive()
    }
}

/// The backend, borrowed for one operation.
enum Imp<'a> {
    Local(local::Local<'a>),
    Azure(azure::Blob<'a>),
    S3(s3::S3<'a>),
}

impl ObjectStore {
    /// A store on `backend`; `client` makes its HTTP requests (unused by the local backend).
    /// Trailing slashes of URLs are dropped.
    pub fn new(backend: Backend, client: Client) -> ObjectStore {
        let backend = match backend {
            Backend::AzureBlob { account_url, auth } => {
                Backend::AzureBlob { account_url: account_url.trim_end_matches('/').to_owned(), auth }
            }
            Backend::S3 { endpoint, region, auth, path_style } => {
                Backend::S3 { endpoint: endpoint.trim_end_matches('/').to_owned(), region, auth, path_style }
            }
            local => local,
        };
        let tokens = match &backend {
            Backend::AzureBlob { auth: BlobAuth::ManagedIdentity(identity), .. } => {
                Some(Arc::new(managed_identity::TokenSource::new(identity.clone())))
            }
            _ => None,
        };
        let http = http::Http { client, tuning: Tuning::default() };
        ObjectStore { shared: Arc::new(Shared { backend, http, tokens }) }
    }

    /// Parses an operator's setting (formats in src/setting.rs): `file:/abs/dir` or a plain
    /// path; `azure-blob:{account URL}` with `FHIRSIDE_BLOB_ACCOUNT_KEY`, `FHIRSIDE_BLOB_SAS`,
    /// `FHIRSIDE_BLOB_MANAGED_IDENTITY` (and the platform's identity endpoint variables) or
    /// `FHIRSIDE_BLOB_TOKEN`; `s3:{endpoint}?region=…&path_style=true` with `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and optionally `AWS_SESSION_TOKEN`. `env` looks variables up.
    pub fn from_setting(
        setting: &str,
        env: &dyn Fn(&str) -> Option<String>,
        client: Client,
    ) -> Result<ObjectStore, ObjectError> {
        Ok(ObjectStore::new(setting::parse(setting, env)?, client))
    }

    /// The same store with other sizes and times.
    pub fn with_tuning(self, tuning: Tuning) -> ObjectStore {
        let shared = Shared {
            backend: self.shared.backend.clone(),
            http: http::Http { client: self.shared.http.client.clone(), tuning },
            tokens: self.shared.tokens.clone(),
        };
        ObjectStore { shared: Arc::new(shared) }
    }

    pub fn backend(&self) -> &Backend {
        &self.shared.backend
    }

    pub fn tuning(&self) -> &Tuning {
        &self.shared.http.tuning
    }

    fn imp(&self) -> Imp<'_> {
        let http = &self.shared.http;
        match &self.shared.backend {
            Backend::Local { root } => Imp::Local(local::Local { root }),
            Backend::AzureBlob { account_url, auth } => {
                Imp::Azure(azure::Blob { account_url, auth, http, tokens: self.shared.tokens.as_deref() })
            }
            Backend::S3 { endpoint, region, auth, path_style } => {
                Imp::S3(s3::S3 { endpoint, region, auth, path_style: *path_style, http })
            }
        }
    }

    /// Creates the container unless it exists.
    pub async fn ensure_container(&self, container: &str) -> Result<(), ObjectError> {
        match self.imp() {
            Imp::Local(local) => local.ensure_container(container).await,
            Imp::Azure(blob) => blob.ensure_container(container).await,
            Imp::S3(s3) => s3.ensure_container(container).await,
        }
    }

    /// Stores `body` under `key`, replacing what was there. In one request up to
    /// [`Tuning::multipart_threshold`], in parts beyond. The container must exist.
    pub async fn put(&self, container: &str, key: &str, body: Bytes, content_type: &str) -> Result<(), ObjectError> {
        match self.imp() {
            Imp::Local(local) => local.put(container, key, body).await,
            Imp::Azure(blob) => blob.put(container, key, body, content_type).await,
            Imp::S3(s3) => s3.put(container, key, body, content_type).await,
        }
    }

    /// Opens an object for reading, part by part.
    pub async fn get(&self, container: &str, key: &str) -> Result<ObjectReader, ObjectError> {
        match self.imp() {
            Imp::Local(local) => local.get(container, key).await,
            Imp::Azure(blob) => blob.get(container, key).await,
            Imp::S3(s3) => s3.get(container, key).await,
        }
    }

    /// Deletes an object; one that does not exist is no error.
    pub async fn delete(&self, container: &str, key: &str) -> Result<(), ObjectError> {
        match self.imp() {
            Imp::Local(local) => local.delete(container, key).await,
            Imp::Azure(blob) => blob.delete(container, key).await,
            Imp::S3(s3) => s3.delete(container, key).await,
        }
    }

    /// The keys that start with `prefix`, in lexicographic order, all pages read.
    pub async fn list(&self, container: &str, prefix: &str) -> Result<Vec<String>, ObjectError> {
        match self.imp() {
            Imp::Local(local) => local.list(container, prefix).await,
            Imp::Azure(blob) => blob.list(container, prefix).await,
            Imp::S3(s3) => s3.list(container, prefix).await,
        }
    }

    /// Deletes every object whose key starts with `prefix` (a few at a time); returns how many.
    /// A container that does not exist holds nothing to delete.
    pub async fn delete_prefix(&self, container: &str, prefix: &str) -> Result<usize, ObjectError> {
        const IN_FLIGHT: usize = 8;
        let keys = match self.list(container, prefix).await {
            Err(ObjectError::NotFound(_)) => return Ok(0),
            result => result?,
        };
        let count = keys.len();
        let mut tasks = tokio::task::JoinSet::new();
        let mut first_error = None;
        for key in keys {
            if tasks.len() >= IN_FLIGHT {
                if let Some(Err(e)) = tasks.join_next().await.map(flatten) {
                    first_error.get_or_insert(e);
                }
            }
            let (store, container) = (self.clone(), container.to_owned());
            tasks.spawn(async move { store.delete(&container, &key).await });
        }
        while let Some(result) = tasks.join_next().await {
            if let Err(e) = flatten(result) {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(count),
        }
    }

    /// The object's URL (`file://` for the local backend), without any credential.
    pub fn url(&self, container: &str, key: &str) -> String {
        match self.imp() {
            Imp::Local(local) => local.url(container, key),
            Imp::Azure(blob) => blob.url(container, Some(key)),
            Imp::S3(s3) => s3.url(container, Some(key)),
        }
    }

    /// What the store is, for logs: kind, location and kind of credential, never a secret.
    pub fn describe(&self) -> String {
        describe(&self.shared.backend)
    }
}

fn flatten(result: Result<Result<(), ObjectError>, tokio::task::JoinError>) -> Result<(), ObjectError> {
    result.unwrap_or_else(|e| Err(ObjectError::Unavailable(format!("a delete task failed: {e}"))))
}

fn describe(backend: &Backend) -> String {
    match backend {
        Backend::Local { root } => format!("local directory {}", root.display()),
        Backend::AzureBlob { account_url, auth } => {
            let auth = match auth {
                BlobAuth::SharedKey { account, .. } => format!("shared key of account {account}"),
                BlobAuth::Sas(_) => "a shared access signature".into(),
                BlobAuth::Bearer(_) => "a bearer token".into(),
                BlobAuth::ManagedIdentity(identity) => {
                    let which = match &identity.client_id {
                        None => "system-assigned".to_owned(),
                        Some(client_id) => format!("user-assigned, client id {client_id}"),
                    };
                    let source = match &identity.endpoint {
                        IdentityEndpoint::AppService { url, .. } => format!("the identity endpoint {}", shown_url(url)),
                        IdentityEndpoint::Imds { authority } => {
                            format!("the instance metadata service at {}", shown_url(authority))
                        }
                        IdentityEndpoint::Workload { authority, tenant, token_file } => format!(
                            "{}, tenant {tenant}, for the workload token in {}",
                            shown_url(authority),
                            token_file.display()
                        ),
                    };
                    let kind = match identity.endpoint {
                        IdentityEndpoint::Workload { .. } => "workload identity",
                        _ => "managed identity",
                    };
                    format!("{kind}, {which}, tokens from {source}")
                }
            };
            format!("Azure Blob Storage at {} ({auth})", shown_url(account_url))
        }
        Backend::S3 { endpoint, region, auth, path_style } => {
            let style = if *path_style { "path-style" } else { "virtual-hosted" };
            let temporary = if auth.session_token.is_some() { ", temporary credentials" } else { "" };
            format!("S3 at {} (region {region}, {style}{temporary})", shown_url(endpoint))
        }
    }
}

/// A service URL for logs: without a query or user info (should one have been configured).
fn shown_url(url: &str) -> String {
    fhirside_fetch::redact(url).trim_end_matches('/').to_owned()
}
