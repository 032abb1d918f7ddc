//! A managed identity's tokens for the Azure Blob backend. First against a stand-in (one loopback
//! server playing the platform's identity endpoint, which checks each token request as Azure's
//! would, and the Blob service, which records what each request carries): the protocols of the
//! metadata service, of App Service and of AKS workload identity (Entra's token endpoint),
//! caching, refreshing and failures. Then against Azurite
//! over https with OAuth, which checks the tokens' issuer, audience and lifetime.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use fhirside_fetch::testing::{serve, TestRequest, TestResponse};
use fhirside_fetch::Client;
use fhirside_objects::testing::{azurite_oauth, entra_token, ENTRA_ISSUER, STORAGE_AUDIENCE};
use fhirside_objects::{Backend, BlobAuth, ObjectError, ObjectStore, Tuning};

use crate::scenarios;
use crate::servers::{client, AZURITE_ACCOUNT};

const IMDS_PATH: &str = "/metadata/identity/oauth2/token";
const APP_SERVICE_PATH: &str = "/msi/token";
const IDENTITY_HEADER: &str = "identity-header-secret";
const CLIENT_ID: &str = "6a1f6e3b-2c4d-4e5f-8a9b-0c1d2e3f4a5b";
/// Workload identity: the tenant, and the client id the pod's service account names
/// (`AZURE_CLIENT_ID`).
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const WORKLOAD_PATH: &str = "/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token";
const POD_CLIENT_ID: &str = "0e4ba29c-4112-4a0b-84f8-77dd188a24b5";
const NDJSON: &str = "application/fhir+ndjson";

/// The identity endpoint the stand-in plays.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Platform {
    /// The Instance Metadata Service (found through `AZURE_POD_IDENTITY_AUTHORITY_HOST`).
    Imds,
    /// App Service's endpoint (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`).
    AppService,
    /// Entra's token endpoint, exchanging the service account token of `AZURE_FEDERATED_TOKEN_FILE`.
    Workload,
}

#[derive(Default)]
struct Log {
    token_requests: usize,
    /// What was wrong with token requests (each is also answered 400).
    wrong: Vec<String>,
    /// Answers to the next token requests; with none queued, `token-{n}` for an hour.
    answers: VecDeque<TestResponse>,
    /// How long the endpoint takes to answer.
    delay: Duration,
    /// The `Authorization` header of each Blob request, in order.
    blob_auth: Vec<Option<String>>,
    blob_requests: Vec<TestRequest>,
    /// Statuses and error codes of the next Blob answers; with none queued, 200, 202 or 201 as
    /// Azure answers a GET, a DELETE or a PUT.
    blob_statuses: VecDeque<(u16, &'static str)>,
}

struct StandIn {
    port: u16,
    platform: Platform,
    client_id: Option<&'static str>,
    log: Arc<Mutex<Log>>,
    /// Workload identity: the file Kubernetes keeps the service account token in.
    token_file: std::path::PathBuf,
}

impl StandIn {
    async fn start(platform: Platform, client_id: Option<&'static str>) -> StandIn {
        let log: Arc<Mutex<Log>> = Arc::default();
        let shared = log.clone();
        let token_file = std::env::temp_dir().join(format!(
            "fhirside-service-account-{}-{}.jwt",
            std::process::id(),
            TOKEN_FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&token_file, "service-account-token-1\n").unwrap();
        let file = token_file.clone();
        let address = serve(
            Arc::new(move |request: TestRequest| {
                let path = request.path.split('?').next().unwrap_or("").to_owned();
                if path == IMDS_PATH || path == APP_SERVICE_PATH || path == WORKLOAD_PATH {
                    let (answer, delay) = {
                        let mut log = shared.lock().unwrap();
                        log.token_requests += 1;
                        let assertion = std::fs::read_to_string(&file).unwrap_or_default();
                        let problems = check_token_request(&request, platform, client_id, assertion.trim());
                        let answer = if problems.is_empty() {
                            let n = log.token_requests;
                            log.answers
                                .pop_front()
                                .unwrap_or_else(|| token_answer(platform, &format!("token-{n}"), 3600))
                        } else {
                            log.wrong.extend(problems);
                            error_answer(400, "invalid_request", "the stand-in found the request wrong")
                        };
                        (answer, log.delay)
                    };
                    // The endpoint is slow (the server runs on several threads).
                    std::thread::sleep(delay);
                    return Some(answer);
                }
                let mut log = shared.lock().unwrap();
                log.blob_auth.push(request.header("authorization").map(str::to_owned));
                let usual = match request.method.as_str() {
                    "GET" => 200,
                    "DELETE" => 202,
                    _ => 201,
                };
                let (status, code) = log.blob_statuses.pop_front().unwrap_or((usual, ""));
                log.blob_requests.push(request);
                let mut answer = TestResponse::new(status, if status == 200 { "{}\n" } else { "" });
                if !code.is_empty() {
                    answer.headers.push(("x-ms-error-code".into(), code.into()));
                }
                Some(answer)
            }),
            None,
        )
        .await;
        StandIn { port: address.port(), platform, client_id, log, token_file }
    }

    /// The variables the platform sets, and the operator's choice of identity.
    fn env(&self) -> Vec<(&'static str, String)> {
        let which = self.client_id.unwrap_or("system").to_owned();
        let mut vars = vec![("FHIRSIDE_BLOB_MANAGED_IDENTITY", which)];
        match self.platform {
            Platform::Imds => {
                vars.push(("AZURE_POD_IDENTITY_AUTHORITY_HOST", format!("http://127.0.0.1:{}", self.port)))
            }
            Platform::AppService => {
                vars.push(("IDENTITY_ENDPOINT", format!("http://127.0.0.1:{}{APP_SERVICE_PATH}", self.port)));
                vars.push(("IDENTITY_HEADER", IDENTITY_HEADER.to_owned()));
            }
            // What the AKS webhook sets in the pod.
            Platform::Workload => {
                vars.push(("AZURE_FEDERATED_TOKEN_FILE", self.token_file.display().to_string()));
                vars.push(("AZURE_CLIENT_ID", POD_CLIENT_ID.to_owned()));
                vars.push(("AZURE_TENANT_ID", TENANT.to_owned()));
                vars.push(("AZURE_AUTHORITY_HOST", format!("http://127.0.0.1:{}/", self.port)));
            }
        }
        vars
    }

    /// A store on `account_url` configured as an operator would, through the environment.
    fn store_on(&self, account_url: &str, client: Client) -> ObjectStore {
        let vars = self.env();
        let env = |name: &str| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
        let store = ObjectStore::from_setting(&format!("azure-blob:{account_url}"), &env, client).unwrap();
        assert!(matches!(store.backend(), Backend::AzureBlob { auth: BlobAuth::ManagedIdentity(_), .. }));
        // Fail fast: the failure tests want the first error, not three tries.
        store.with_tuning(Tuning { retries: 0, ..Tuning::default() })
    }

    /// A store on the stand-in's own Blob service.
    fn store(&self) -> ObjectStore {
        self.store_on(&format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.port), client())
    }

    fn token_url(&self) -> String {
        match self.platform {
            Platform::Imds => format!("http://127.0.0.1:{}{IMDS_PATH}", self.port),
            Platform::AppService => format!("http://127.0.0.1:{}{APP_SERVICE_PATH}", self.port),
            Platform::Workload => format!("http://127.0.0.1:{}{WORKLOAD_PATH}", self.port),
        }
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap()
    }

    /// The bearer tokens the Blob requests carried, in order.
    fn tokens_sent(&self) -> Vec<String> {
        let log = self.log();
        assert!(log.wrong.is_empty(), "wrong token requests: {:?}", log.wrong);
        log.blob_auth
            .iter()
            .map(|auth| auth.as_deref().and_then(|a| a.strip_prefix("Bearer ")).expect("a bearer token").to_owned())
            .collect()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.token_file);
    }
}

/// Names the stand-ins' token files apart.
static TOKEN_FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// `name=value&…`, decoded.
fn form(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(&n.replace('+', " ")), percent_decode(&v.replace('+', " ")))
        })
        .collect()
}

/// What Azure's endpoints insist on: the path, `api-version`, `resource`, the identity asked for,
/// and the platform's header; Entra's token endpoint, the form of a client credentials grant with
/// the service account token (`assertion`, what the file holds now) as the client's assertion.
fn check_token_request(
    request: &TestRequest,
    platform: Platform,
    client_id: Option<&str>,
    assertion: &str,
) -> Vec<String> {
    let mut wrong = Vec::new();
    let (path, query) = request.path.split_once('?').unwrap_or((&request.path, ""));
    if platform == Platform::Workload {
        let params = form(&String::from_utf8_lossy(&request.body));
        let param = |name: &str| params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let expected = [
            ("grant_type", "client_credentials"),
            ("client_id", client_id.unwrap_or(POD_CLIENT_ID)),
            ("scope", "https://storage.azure.com/.default"),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", assertion),
        ];
        for (name, value) in expected {
            if param(name) != Some(value) {
                wrong.push(format!("{name} {:?}, expected {value:?}", param(name)));
            }
        }
        if request.method != "POST" || path != WORKLOAD_PATH || !query.is_empty() || params.len() != expected.len() {
            wrong.push(format!("{} {} with {params:?}", request.method, request.path));
        }
        if request.header("content-type") != Some("application/x-www-form-urlencoded") {
            wrong.push(format!("content-type {:?}", request.header("content-type")));
        }
        if request.header("metadata").is_some() || request.header("x-identity-header").is_some() {
            wrong.push("a platform header sent to Entra".into());
        }
        return wrong;
    }
    let params = form(query);
    let param = |name: &str| params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let (expected_path, api_version) = match platform {
        Platform::Imds => (IMDS_PATH, "2018-02-01"),
        Platform::AppService | Platform::Workload => (APP_SERVICE_PATH, "2019-08-01"),
    };
    if request.method != "GET" {
        wrong.push(format!("method {}", request.method));
    }
    if path != expected_path {
        wrong.push(format!("path {path}"));
    }
    if param("api-version") != Some(api_version) {
        wrong.push(format!("api-version {:?}", param("api-version")));
    }
    if param("resource") != Some("https://storage.azure.com/") {
        wrong.push(format!("resource {:?}", param("resource")));
    }
    if param("client_id") != client_id {
        wrong.push(format!("client_id {:?}, expected {client_id:?}", param("client_id")));
    }
    if params.len() != 2 + usize::from(client_id.is_some()) {
        wrong.push(format!("parameters {params:?}"));
    }
    match platform {
        Platform::Imds => {
            if request.header("metadata") != Some("true") {
                wrong.push("no Metadata: true".into());
            }
            if request.header("x-identity-header").is_some() {
                wrong.push("X-IDENTITY-HEADER sent to the metadata service".into());
            }
        }
        Platform::AppService | Platform::Workload => {
            if request.header("x-identity-header") != Some(IDENTITY_HEADER) {
                wrong.push(format!("X-IDENTITY-HEADER {:?}", request.header("x-identity-header")));
            }
        }
    }
    wrong
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn epoch_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A token answer as each platform words it: the metadata service gives `expires_in` and
/// `expires_on` as strings, App Service `expires_on` alone.
fn token_answer(platform: Platform, token: &str, lifetime: u64) -> TestResponse {
    let expires_on = epoch_now() + lifetime;
    TestResponse::json(match platform {
        Platform::Imds => serde_json::json!({
            "access_token": token, "refresh_token": "", "expires_in": lifetime.to_string(),
            "expires_on": expires_on.to_string(), "not_before": epoch_now().to_string(),
            "resource": "https://storage.azure.com/", "token_type": "Bearer"
        }),
        Platform::AppService => serde_json::json!({
            "access_token": token, "expires_on": expires_on.to_string(),
            "resource": "https://storage.azure.com/", "token_type": "Bearer", "client_id": CLIENT_ID
        }),
        // Entra's v2 token endpoint: numbers, and no expires_on.
        Platform::Workload => serde_json::json!({
            "token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token
        }),
    })
}

fn error_answer(status: u16, error: &str, description: &str) -> TestResponse {
    let mut answer = TestResponse::json(serde_json::json!({"error": error, "error_description": description}));
    answer.status = status;
    answer
}

async fn put(store: &ObjectStore, key: &str) -> Result<(), ObjectError> {
    store.put("exports", key, Bytes::from_static(b"{}\n"), NDJSON).await
}

#[tokio::test]
async fn token_requests_and_the_headers_blob_requests_carry() {
    for (platform, client_id) in [
        (Platform::Imds, None),
        (Platform::Imds, Some(CLIENT_ID)),
        (Platform::AppService, None),
        (Platform::AppService, Some(CLIENT_ID)),
        (Platform::Workload, None),
        (Platform::Workload, Some(CLIENT_ID)),
    ] {
        let stand_in = StandIn::start(platform, client_id).await;
        let store = stand_in.store();
        let case = format!("{platform:?} {client_id:?}");
        store.ensure_container("exports").await.unwrap();
        put(&store, "a/Patient-1.ndjson").await.unwrap();
        let reader = store.get("exports", "a/Patient-1.ndjson").await.unwrap();
        assert_eq!(reader.read_to_end(1 << 10).await.unwrap(), b"{}\n");
        store.delete("exports", "a/Patient-1.ndjson").await.unwrap_or_else(|e| panic!("{case}: {e}"));

        assert_eq!(stand_in.log().token_requests, 1, "{case}: one token for every request");
        assert_eq!(stand_in.tokens_sent(), ["token-1"; 4], "{case}");
        for request in &stand_in.log().blob_requests {
            assert!(request.header("x-ms-version").is_some_and(|v| v >= "2017-11-09"), "{case}: {request:?}");
            assert!(request.header("x-ms-date").is_some_and(|v| v.ends_with(" GMT")), "{case}");
            // No other credential rides along.
            assert!(!request.path.contains("sig="), "{case}");
            assert!(request.header("x-identity-header").is_none() && request.header("metadata").is_none(), "{case}");
        }
        let description = store.describe();
        assert!(description.contains(" identity, ") && !description.contains(IDENTITY_HEADER), "{description}");
        let debug = format!("{store:?}");
        assert!(!debug.contains(IDENTITY_HEADER) && !debug.contains("token-1"), "{debug}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_share_one_fetch() {
    let stand_in = StandIn::start(Platform::Imds, None).await;
    stand_in.log().delay = Duration::from_millis(300);
    let store = stand_in.store();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let store = store.clone();
        tasks.spawn(async move { put(&store, &format!("p/{i}.ndjson")).await });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    assert_eq!(stand_in.log().token_requests, 1);
    assert_eq!(stand_in.tokens_sent(), ["token-1"; 16]);
}

#[tokio::test]
async fn a_token_is_replaced_when_half_its_life_has_passed() {
    let stand_in = StandIn::start(Platform::Imds, Some(CLIENT_ID)).await;
    stand_in.log().answers.push_back(token_answer(Platform::Imds, "short-lived", 2));
    let store = stand_in.store();
    put(&store, "1").await.unwrap();
    put(&store, "2").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    put(&store, "3").await.unwrap();
    put(&store, "4").await.unwrap();
    assert_eq!(stand_in.tokens_sent(), ["short-lived", "short-lived", "token-2", "token-2"]);
    assert_eq!(stand_in.log().token_requests, 2);

    // App Service's answer gives only expires_on.
    let stand_in = StandIn::start(Platform::AppService, None).await;
    stand_in.log().answers.push_back(token_answer(Platform::AppService, "short-lived", 2));
    let store = stand_in.store();
    put(&store, "1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    put(&store, "2").await.unwrap();
    assert_eq!(stand_in.tokens_sent(), ["short-lived", "token-2"]);
}

/// Kubernetes replaces the service account token before it expires: each fetch reads the file
/// again. A file that cannot be read, or holds no token, is the request's error, naming the file.
#[tokio::test]
async fn workload_identity_reads_the_service_account_token_for_each_fetch() {
    let stand_in = StandIn::start(Platform::Workload, None).await;
    stand_in.log().answers.push_back(token_answer(Platform::Workload, "short-lived", 2));
    let store = stand_in.store();
    put(&store, "1").await.unwrap();
    std::fs::write(&stand_in.token_file, "service-account-token-2").unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    put(&store, "2").await.unwrap();
    // The stand-in checked each assertion against what the file held when it was asked.
    assert_eq!(stand_in.tokens_sent(), ["short-lived", "token-2"]);

    let file = stand_in.token_file.display().to_string();
    for (content, expected) in [(None, "cannot be read"), (Some(" \n"), "holds no token")] {
        let stand_in = StandIn::start(Platform::Workload, None).await;
        match content {
            None => std::fs::remove_file(&stand_in.token_file).unwrap(),
            Some(text) => std::fs::write(&stand_in.token_file, text).unwrap(),
        }
        let error = put(&stand_in.store(), "k").await.unwrap_err();
        assert!(matches!(&error, ObjectError::Denied(m) if m.contains(expected)), "{error}");
        assert!(error.to_string().contains(&stand_in.token_file.display().to_string()), "{error}");
        assert_eq!(stand_in.log().token_requests, 0, "{file}: nothing asked without a token");
    }
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_valid_token_until_it_expires() {
    let stand_in = StandIn::start(Platform::Imds, None).await;
    {
        let mut log = stand_in.log();
        log.answers.push_back(token_answer(Platform::Imds, "first", 4));
        for _ in 0..5 {
            log.answers.push_back(error_answer(503, "temporarily_unavailable", "busy"));
        }
    }
    let store = stand_in.store();
    put(&store, "1").await.unwrap();
    // Past half its life: the refresh fails, the token still serves, and the next requests
    // do not wait for the failing endpoint again at once.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    put(&store, "2").await.unwrap();
    put(&store, "3").await.unwrap();
    assert_eq!(stand_in.log().token_requests, 2);
    // In its last quarter the token is no longer sent: the request fails with the endpoint's error.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let error = put(&store, "4").await.unwrap_err();
    assert!(matches!(error, ObjectError::Unavailable(_)), "{error}");
    assert_eq!(
        error.to_string(),
        format!("Azure managed identity token from {}: HTTP 503 temporarily_unavailable: busy", stand_in.token_url())
    );
    assert_eq!(stand_in.log().token_requests, 3);
    assert_eq!(stand_in.tokens_sent(), ["first"; 3]);
}

#[tokio::test]
async fn endpoint_failures_are_the_requests_errors() {
    for platform in [Platform::Imds, Platform::AppService] {
        let stand_in = StandIn::start(platform, Some(CLIENT_ID)).await;
        let store = stand_in.store();
        let endpoint = stand_in.token_url();
        {
            let mut log = stand_in.log();
            log.answers.push_back(error_answer(400, "invalid_request", "Identity not found"));
            log.answers.push_back(error_answer(500, "server_error", "IMDS is restarting"));
            let mut not_json = TestResponse::new(200, "access_token=secret-value");
            not_json.headers.push(("Content-Type".into(), "text/plain".into()));
            log.answers.push_back(not_json);
            log.answers.push_back(TestResponse::json(r#"{"access_token":"secret-value","token_type":"Bearer"}"#));
        }
        let errors = [
            put(&store, "k").await.unwrap_err(),
            // On the streaming path of a get too.
            store.get("exports", "k").await.unwrap_err(),
            store.list("exports", "").await.unwrap_err(),
            store.delete("exports", "k").await.unwrap_err(),
        ];
        assert_eq!(
            errors[0],
            ObjectError::Denied(format!(
                "Azure managed identity token from {endpoint}: HTTP 400 invalid_request: Identity not found"
            ))
        );
        assert_eq!(
            errors[1],
            ObjectError::Unavailable(format!(
                "Azure managed identity token from {endpoint}: HTTP 500 server_error: IMDS is restarting"
            ))
        );
        let not_json = format!("Azure managed identity token from {endpoint}: the answer is not JSON");
        assert_eq!(errors[2], ObjectError::Rejected(not_json));
        assert!(matches!(&errors[3], ObjectError::Rejected(m) if m.contains("no expires_in or expires_on")));
        for error in &errors {
            let shown = format!("{error} {error:?}");
            assert!(!shown.contains("secret-value") && !shown.contains(IDENTITY_HEADER), "{shown}");
            assert!(!shown.contains("api-version") && !shown.contains(CLIENT_ID), "{shown}");
        }
        // Nothing reached the Blob service without a token.
        assert!(stand_in.log().blob_requests.is_empty(), "{platform:?}");
        assert!(stand_in.log().wrong.is_empty(), "{:?}", stand_in.log().wrong);
    }

    // An endpoint that does not answer at all.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let env = |name: &str| match name {
        "FHIRSIDE_BLOB_MANAGED_IDENTITY" => Some("system".to_owned()),
        "AZURE_POD_IDENTITY_AUTHORITY_HOST" => Some(format!("http://127.0.0.1:{closed}")),
        _ => None,
    };
    let store = ObjectStore::from_setting("azure-blob:https://acct.blob.core.windows.net", &env, client())
        .unwrap()
        .with_tuning(Tuning { retries: 0, ..Tuning::default() });
    let error = put(&store, "k").await.unwrap_err();
    assert!(matches!(error, ObjectError::Unavailable(_)), "{error}");
    assert!(
        error.to_string().starts_with(&format!(
            "Azure managed identity token: cannot connect to http://127.0.0.1:{closed}{IMDS_PATH}:"
        )),
        "{error}"
    );
}

#[tokio::test]
async fn a_token_the_storage_refuses_is_replaced() {
    let stand_in = StandIn::start(Platform::AppService, None).await;
    {
        let mut log = stand_in.log();
        // Azure's answer to an expired or revoked token, then Azurite's.
        log.blob_statuses.push_back((401, "InvalidAuthenticationInfo"));
        log.blob_statuses.push_back((201, ""));
        log.blob_statuses.push_back((403, "AuthenticationFailed"));
        // The identity lacks a role: another token would not help.
        log.blob_statuses.push_back((403, "AuthorizationPermissionMismatch"));
    }
    let store = stand_in.store();
    let error = put(&store, "1").await.unwrap_err();
    assert_eq!(error, ObjectError::Denied("Azure Blob put in 'exports': HTTP 401 InvalidAuthenticationInfo".into()));
    put(&store, "2").await.unwrap();
    // On the streaming path too.
    let error = store.get("exports", "2").await.unwrap_err();
    assert_eq!(error, ObjectError::Denied("Azure Blob get in 'exports': HTTP 403 AuthenticationFailed".into()));
    assert!(matches!(put(&store, "3").await, Err(ObjectError::Denied(_))));
    put(&store, "4").await.unwrap();
    assert_eq!(stand_in.tokens_sent(), ["token-1", "token-2", "token-2", "token-3", "token-3"]);
}

/// Azurite over https with `--oauth basic` checks each token's issuer, audience and lifetime:
/// the store works with the tokens the identity endpoint hands out, fetching one for everything,
/// while requests without a token, or with a token for another audience, from another issuer or
/// expired, are refused.
#[tokio::test]
async fn against_azurite_with_oauth() {
    let azurite = azurite_oauth();
    let ca = azurite.ca_file.clone().unwrap();
    let https = || Client::new(Some(&ca)).unwrap();
    let account_url = format!("https://127.0.0.1:{}/{AZURITE_ACCOUNT}", azurite.port);
    let stand_in = StandIn::start(Platform::Imds, None).await;
    stand_in.log().answers.push_back(token_answer(
        Platform::Imds,
        &entra_token(ENTRA_ISSUER, STORAGE_AUDIENCE, 3600),
        3599,
    ));
    let store = stand_in.store_on(&account_url, https());
    scenarios::basics(&store, "mi-exports", &account_url).await;
    scenarios::pages_and_prefixes(&store, "mi-paged").await;
    store.put("mi-exports", "kept.ndjson", Bytes::from_static(b"{\"kept\":1}\n"), NDJSON).await.unwrap();
    assert_eq!(stand_in.log().token_requests, 1);
    assert!(stand_in.log().wrong.is_empty());

    let with_token = |token: String| {
        let backend = Backend::AzureBlob { account_url: account_url.clone(), auth: BlobAuth::Bearer(token) };
        ObjectStore::new(backend, https()).with_tuning(Tuning { retries: 0, ..Tuning::default() })
    };
    // The same kind of token, given directly, reads: the refusals below are about the tokens.
    let good = with_token(entra_token(ENTRA_ISSUER, STORAGE_AUDIENCE, 600));
    assert_eq!(scenarios::get(&good, "mi-exports", "kept.ndjson").await, b"{\"kept\":1}\n");
    for (token, why) in [
        (entra_token(ENTRA_ISSUER, "https://management.azure.com", 600), "another audience"),
        (entra_token("https://login.example.org/tenant/", STORAGE_AUDIENCE, 600), "another issuer"),
        (entra_token(ENTRA_ISSUER, STORAGE_AUDIENCE, -30), "expired"),
        ("not-a-jwt".to_owned(), "not a JWT"),
    ] {
        let error = with_token(token).list("mi-exports", "").await.unwrap_err();
        assert!(matches!(error, ObjectError::Denied(_)), "{why}: {error}");
    }
    // Without any credential, the private container does not answer.
    let anonymous = https().get(&store.url("mi-exports", "kept.ndjson"), &[]).await.unwrap();
    assert!(matches!(anonymous.status, 401 | 403 | 404), "an anonymous read answered {}", anonymous.status);
}
