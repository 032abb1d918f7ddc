//! The Azure Blob backend against Azurite: Shared Key, an account SAS, refused credentials, import
//! sources, and the shape of bearer-token requests (Azurite takes tokens over https only).

use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use fhirside_fetch::testing::{serve, TestRequest, TestResponse};
use fhirside_objects::{open_source, Backend, BlobAuth, ObjectError, ObjectStore};

use crate::scenarios::{self, get};
use crate::servers::{azurite, client, AZURITE_ACCOUNT, AZURITE_KEY};

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn account_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}")
}

/// The store an operator would configure, with the account key from the environment.
fn shared_key_store(port: u16) -> ObjectStore {
    let env = |name: &str| (name == "FHIRSIDE_BLOB_ACCOUNT_KEY").then(|| AZURITE_KEY.to_owned());
    let store = ObjectStore::from_setting(&format!("azure-blob:{}/", account_url(port)), &env, client()).unwrap();
    let description = store.describe();
    assert_eq!(
        description,
        format!("Azure Blob Storage at {} (shared key of account {AZURITE_ACCOUNT})", account_url(port))
    );
    store
}

/// An account SAS for the Blob service, signed with the account key as Azure's documentation
/// describes (the string to sign of versions 2020-12-06 and later).
fn account_sas(permissions: &str) -> String {
    let (version, expiry) = ("2021-08-06", "2099-01-01T00:00:00Z");
    let string_to_sign = format!("{AZURITE_ACCOUNT}\n{permissions}\nb\nsco\n\n{expiry}\n\nhttps,http\n{version}\n\n");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &BASE64.decode(AZURITE_KEY).unwrap());
    let signature = BASE64.encode(ring::hmac::sign(&key, string_to_sign.as_bytes()));
    let encode = |text: &str| text.replace(':', "%3A").replace('+', "%2B").replace('/', "%2F").replace('=', "%3D");
    format!(
        "sv={version}&ss=b&srt=sco&sp={permissions}&se={}&spr=https,http&sig={}",
        encode(expiry),
        encode(&signature)
    )
}

fn sas_store(port: u16, sas: &str) -> ObjectStore {
    let backend = Backend::AzureBlob { account_url: account_url(port), auth: BlobAuth::Sas(format!("?{sas}")) };
    ObjectStore::new(backend, client())
}

#[tokio::test]
async fn shared_key_basics_and_pages() {
    let server = azurite();
    let store = shared_key_store(server.port);
    scenarios::basics(&store, "exports", &account_url(server.port)).await;
    scenarios::pages_and_prefixes(&store, "paged").await;
}

#[tokio::test]
async fn shared_key_large_objects() {
    let server = azurite();
    scenarios::large_objects(&shared_key_store(server.port), "large").await;
}

#[tokio::test]
async fn an_account_sas() {
    let server = azurite();
    let sas = account_sas("rwdlac");
    let store = sas_store(server.port, &sas);
    assert!(!store.describe().contains("sig="), "{}", store.describe());
    scenarios::basics(&store, "sas-exports", &account_url(server.port)).await;
    scenarios::pages_and_prefixes(&store, "sas-paged").await;
    // URLs carry no credentials.
    assert!(!store.url("sas-exports", "k").contains('?'));

    // A read-only SAS reads and lists but cannot write; its error shows no signature.
    let read_only = account_sas("rl");
    let reader = sas_store(server.port, &read_only);
    assert_eq!(get(&reader, "sas-exports", "other.ndjson").await, b"{\"n\":\"new\"}\n");
    assert_eq!(reader.list("sas-exports", "job-1/").await.unwrap().len(), 1);
    let error = reader.put("sas-exports", "k", Bytes::from_static(b"x"), "text/plain").await.unwrap_err();
    assert!(matches!(error, ObjectError::Denied(_)), "{error}");
    let signature = read_only.rsplit("sig=").next().unwrap();
    assert!(!error.to_string().contains(signature) && !error.to_string().contains("sig="), "{error}");
}

#[tokio::test]
async fn wrong_credentials_are_denied_without_showing_them() {
    let server = azurite();
    let wrong_key = BASE64.encode(b"not the account key of devstoreaccount1");
    let auth = BlobAuth::SharedKey { account: AZURITE_ACCOUNT.into(), key: wrong_key.clone() };
    let store = ObjectStore::new(Backend::AzureBlob { account_url: account_url(server.port), auth }, client());
    for error in [
        store.ensure_container("exports").await.unwrap_err(),
        store.put("exports", "k", Bytes::from_static(b"x"), "text/plain").await.unwrap_err(),
        store.list("exports", "").await.unwrap_err(),
        store.get("exports", "k").await.unwrap_err(),
    ] {
        assert!(matches!(error, ObjectError::Denied(_)), "{error}");
        assert!(!error.to_string().contains(&wrong_key), "{error}");
        assert!(!format!("{error:?}").contains(&wrong_key), "{error:?}");
    }
    assert!(!format!("{store:?}").contains(&wrong_key));
    let sas_error = sas_store(server.port, "sv=2021-08-06&ss=b&srt=sco&sp=rl&se=2099-01-01&sig=forged")
        .list("exports", "")
        .await
        .unwrap_err();
    assert!(matches!(sas_error, ObjectError::Denied(_)), "{sas_error}");
    assert!(!sas_error.to_string().contains("forged"), "{sas_error}");
}

#[tokio::test]
async fn import_sources() {
    let server = azurite();
    let store = shared_key_store(server.port);
    store.ensure_container("imports").await.unwrap();
    store
        .put("imports", "job 1/Patient.ndjson", Bytes::from_static(b"{\"resourceType\":\"Patient\"}\n"), "x")
        .await
        .unwrap();
    let url = store.url("imports", "job 1/Patient.ndjson");
    let read = |url: String, configured: Option<ObjectStore>| async move {
        open_source(&url, configured.as_ref(), &[], &client()).await?.read_to_end(1 << 20).await
    };
    // Under the configured store's URL: read with its credentials.
    assert_eq!(read(url.clone(), Some(store.clone())).await.unwrap(), b"{\"resourceType\":\"Patient\"}\n");
    // A URL with its own SAS: fetched as it is.
    let with_sas = format!("{url}?{}", account_sas("r"));
    assert_eq!(read(with_sas.clone(), None).await.unwrap(), b"{\"resourceType\":\"Patient\"}\n");
    assert_eq!(read(with_sas, Some(store.clone())).await.unwrap(), b"{\"resourceType\":\"Patient\"}\n");
    // Without credentials, a private container does not answer.
    let error = read(url.clone(), None).await.unwrap_err();
    assert!(matches!(error, ObjectError::Denied(_) | ObjectError::NotFound(_)), "{error}");
    let error = read(store.url("imports", "absent.ndjson"), Some(store.clone())).await.unwrap_err();
    assert!(matches!(error, ObjectError::NotFound(_)), "{error}");
    let error = read("s3://bucket/key".into(), Some(store.clone())).await.unwrap_err();
    assert!(matches!(error, ObjectError::Invalid(_)), "{error}");
}

/// Azurite accepts bearer tokens only over https, so only the request is checked here: the
/// token as `Authorization: Bearer`, with `x-ms-version` and `x-ms-date`, and no signature.
#[tokio::test]
async fn bearer_token_requests() {
    let seen: Arc<Mutex<Vec<TestRequest>>> = Arc::default();
    let log = seen.clone();
    let address = serve(
        Arc::new(move |request: TestRequest| {
            log.lock().unwrap().push(request);
            Some(TestResponse::new(201, ""))
        }),
        None,
    )
    .await;
    let env = |name: &str| (name == "FHIRSIDE_BLOB_TOKEN").then(|| "token-value".to_owned());
    let setting = format!("azure-blob:http://127.0.0.1:{}/{AZURITE_ACCOUNT}", address.port());
    let store = ObjectStore::from_setting(&setting, &env, client()).unwrap();
    assert!(!store.describe().contains("token-value"));
    store.put("exports", "a/b.ndjson", Bytes::from_static(b"{}\n"), "application/fhir+ndjson").await.unwrap();
    let seen = seen.lock().unwrap();
    let request = &seen[0];
    assert_eq!((request.method.as_str(), request.path.as_str()), ("PUT", "/devstoreaccount1/exports/a/b.ndjson"));
    assert_eq!(request.header("authorization"), Some("Bearer token-value"));
    assert!(request.header("x-ms-version").is_some_and(|v| v.as_bytes() >= b"2017-11-09".as_slice()));
    assert!(request.header("x-ms-date").is_some_and(|v| v.ends_with(" GMT")));
    assert_eq!(request.header("x-ms-blob-type"), Some("BlockBlob"));
    assert_eq!(request.header("content-type"), Some("application/fhir+ndjson"));
    assert_eq!(request.body, b"{}\n");
}
