//! The S3 backend against moto's server, with its authentication on (every request's Signature
//! V4 is checked against the access key created for the test).

use bytes::Bytes;
use fhirside_objects::{open_source, Backend, ObjectError, ObjectStore, S3Auth};

use crate::scenarios::{self, get};
use crate::servers::{client, moto};

/// The store an operator would configure, credentials from the environment.
fn store(port: u16, auth: &S3Auth, region: &str) -> ObjectStore {
    let env = |name: &str| match name {
        "AWS_ACCESS_KEY_ID" => Some(auth.access_key_id.clone()),
        "AWS_SECRET_ACCESS_KEY" => Some(auth.secret_access_key.clone()),
        _ => None,
    };
    let setting = format!("s3:http://127.0.0.1:{port}?region={region}&path_style=true");
    let store = ObjectStore::from_setting(&setting, &env, client()).unwrap();
    assert_eq!(store.describe(), format!("S3 at http://127.0.0.1:{port} (region {region}, path-style)"));
    store
}

#[tokio::test]
async fn basics_and_pages() {
    let (server, auth) = moto().await;
    let store = store(server.port, &auth, "eu-west-1");
    scenarios::basics(&store, "exports", &format!("http://127.0.0.1:{}", server.port)).await;
    scenarios::pages_and_prefixes(&store, "paged").await;
}

#[tokio::test]
async fn large_objects() {
    let (server, auth) = moto().await;
    scenarios::large_objects(&store(server.port, &auth, "eu-west-1"), "large").await;
}

#[tokio::test]
async fn us_east_1_and_refused_credentials() {
    let (server, auth) = moto().await;
    // us-east-1 takes no location constraint.
    let store = store(server.port, &auth, "us-east-1");
    store.ensure_container("east").await.unwrap();
    store.ensure_container("east").await.unwrap();
    store.put("east", "k.ndjson", Bytes::from_static(b"{}\n"), "application/fhir+ndjson").await.unwrap();
    assert_eq!(get(&store, "east", "k.ndjson").await, b"{}\n");

    let wrong_secret = "wrong-secret-0123456789abcdefghijklmnopqr".to_owned();
    let wrong = S3Auth { secret_access_key: wrong_secret.clone(), ..auth.clone() };
    let backend = Backend::S3 {
        endpoint: format!("http://127.0.0.1:{}", server.port),
        region: "us-east-1".into(),
        auth: wrong,
        path_style: true,
    };
    let refused = ObjectStore::new(backend, client());
    for error in [
        refused.ensure_container("east").await.unwrap_err(),
        refused.put("east", "k2", Bytes::from_static(b"x"), "text/plain").await.unwrap_err(),
        refused.get("east", "k.ndjson").await.unwrap_err(),
        refused.list("east", "").await.unwrap_err(),
    ] {
        assert!(matches!(error, ObjectError::Denied(_)), "{error}");
        assert!(!error.to_string().contains(&wrong_secret), "{error}");
    }
    assert!(!format!("{refused:?}").contains(&wrong_secret));
    assert!(!refused.describe().contains(&wrong_secret));
}

#[tokio::test]
async fn import_sources() {
    let (server, auth) = moto().await;
    let store = store(server.port, &auth, "eu-west-1");
    store.ensure_container("imports").await.unwrap();
    let content = b"{\"resourceType\":\"Observation\"}\n";
    store.put("imports", "job 2/Observation.ndjson", Bytes::from_static(content), "x").await.unwrap();
    let read = |url: String, configured: Option<ObjectStore>| async move {
        open_source(&url, configured.as_ref(), &[], &client()).await?.read_to_end(1 << 20).await
    };
    assert_eq!(read("s3://imports/job%202/Observation.ndjson".into(), Some(store.clone())).await.unwrap(), content);
    let url = store.url("imports", "job 2/Observation.ndjson");
    assert_eq!(url, format!("http://127.0.0.1:{}/imports/job%202/Observation.ndjson", server.port));
    assert_eq!(read(url.clone(), Some(store.clone())).await.unwrap(), content);
    // Unsigned, moto (with authentication on) refuses.
    let error = read(url, None).await.unwrap_err();
    assert!(matches!(error, ObjectError::Denied(_)), "{error}");
    let error = read("s3://imports/absent.ndjson".into(), Some(store.clone())).await.unwrap_err();
    assert!(matches!(error, ObjectError::NotFound(_)), "{error}");
    let error = read("s3://imports/k".into(), None).await.unwrap_err();
    assert!(matches!(error, ObjectError::Invalid(_)), "{error}");
}
