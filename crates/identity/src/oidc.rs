//! An external OpenID Connect issuer (Microsoft Entra ID, Keycloak, another Fhirside) whose tokens
//! the FHIR service trusts: its discovery document and its signing keys (JWKS).
//!
//! The keys are fetched on discovery and cached. A token signed with a key the cache does not know
//! (the issuer rotated) makes the issuer refetch its JWKS, at most once per 30 seconds, so a flood
//! of tokens with made-up key ids cannot make us hammer the issuer; and a cache older than 24 hours
//! is refreshed on the next call (discovery included, in case `jwks_uri` moved). No background
//! task: the calls that need keys do the fetching, and concurrent callers share one fetch.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::jwt::{Decoded, Jwk, JwkSet};
use fhirside_fetch::Client;

/// The shortest time between two JWKS refetches caused by unknown key ids (and between two
/// attempts after a failed fetch).
pub const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// The age after which cached keys are refreshed.
pub const MAX_KEY_AGE: Duration = Duration::from_secs(24 * 3600);

/// What an issuer's discovery document says (the members Fhirside uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    pub issuer: String,
    pub jwks_uri: String,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    /// Whether `issuer` is the configured authority (ignoring a trailing slash). It need not be:
    /// Entra's v1 documents name `https://sts.windows.net/{tenant}/` for the authority
    /// `https://login.microsoftonline.com/{tenant}`. Worth a line in the log when false.
    pub issuer_matches_authority: bool,
}

/// An external issuer, with its discovery document and keys cached.
pub struct OidcIssuer {
    /// As configured, without a trailing slash.
    authority: String,
    client: Client,
    min_refetch: Duration,
    max_age: Duration,
    state: RwLock<State>,
    /// Held while fetching, so that concurrent callers wait for one fetch instead of each making
    /// their own.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    discovery: Option<Arc<Discovery>>,
    keys: Arc<JwkSet>,
    /// When the keys were fetched.
    fetched_at: Option<Instant>,
    /// Bumped by every successful fetch: a caller that waited for the lock sees whether another
    /// caller fetched meanwhile.
    generation: u64,
    /// The last refetch caused by an unknown key id.
    last_refetch: Option<Instant>,
    /// The last failed fetch, with its error, so a down issuer is asked at most once per interval.
    last_failure: Option<(Instant, String)>,
}

impl std::fmt::Debug for OidcIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcIssuer").field("authority", &self.authority).finish_non_exhaustive()
    }
}

impl OidcIssuer {
    /// `authority` is the issuer URL as configured (`https://login.microsoftonline.com/{tenant}/v2.0`,
    /// `https://fhir.example.org/{tenant}/v2.0`…); nothing is fetched until [`discover`](Self::discover)
    /// or the first [`keys_for`](Self::keys_for).
    pub fn new(authority: &str, client: Client) -> OidcIssuer {
        OidcIssuer {
            authority: authority.trim().trim_end_matches('/').to_owned(),
            client,
            min_refetch: MIN_REFETCH_INTERVAL,
            max_age: MAX_KEY_AGE,
            state: RwLock::default(),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// Changes the refetch interval for unknown keys (30 s) and the key cache's lifetime (24 h).
    pub fn set_refresh_intervals(&mut self, min_refetch: Duration, max_age: Duration) {
        self.min_refetch = min_refetch;
        self.max_age = max_age;
    }

    /// The authority as configured, without a trailing slash.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// `{authority}/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.authority)
    }

    /// Fetches the discovery document and then the JWKS, and caches both (replacing what was
    /// cached). Call it at start-up to fail early on a wrong authority.
    pub async fn discover(&self) -> Result<Discovery, String> {
        let _fetching = self.fetching.lock().await;
        self.fetch_all().await.map(|d| (*d).clone())
    }

    /// The cached keys that may have signed `token` (by `kid` or certificate thumbprint); empty when
    /// none does, even after a refetch (the caller rejects the token as signed by an unknown key).
    /// Discovers the issuer on first use. `Err` only when the keys cannot be had at all (the issuer
    /// is unreachable or answers nonsense).
    pub async fn keys_for(&self, token: &Decoded) -> Result<Vec<Jwk>, String> {
        let (generation, discovered, stale) = {
            let state = self.read();
            let stale = state.fetched_at.is_none_or(|at| at.elapsed() >= self.max_age);
            (state.generation, state.discovery.is_some(), stale)
        };
        if !discovered {
            let _fetching = self.fetching.lock().await;
            if self.read().generation == generation {
                self.check_backoff()?;
                self.fetch_all().await?;
            }
        } else if stale && self.read().last_failure.as_ref().is_none_or(|(at, _)| at.elapsed() >= self.min_refetch) {
            // Stale keys are still served if the refresh fails: the issuer being down for a while
            // should not reject tokens signed by keys we know.
            let _fetching = self.fetching.lock().await;
            if self.read().generation == generation {
                let _ = self.fetch_all().await;
            }
        }

        let (generation, found) = {
            let state = self.read();
            (state.generation, state.keys.candidates(token).cloned().collect::<Vec<_>>())
        };
        if !found.is_empty() {
            return Ok(found);
        }

        // An unknown key: the issuer may have rotated. Refetch the JWKS unless another caller did
        // while we waited, or one was refetched for an unknown key too recently.
        let _fetching = self.fetching.lock().await;
        let (refetched_meanwhile, too_soon, jwks_uri) = {
            let state = self.read();
            (
                state.generation != generation,
                state.last_refetch.is_some_and(|at| at.elapsed() < self.min_refetch),
                state.discovery.as_ref().map(|d| d.jwks_uri.clone()),
            )
        };
        if !refetched_meanwhile && !too_soon {
            let Some(jwks_uri) = jwks_uri else {
                return Err(format!("the OpenID Connect issuer {} is not discovered", self.authority));
            };
            self.write().last_refetch = Some(Instant::now());
            self.fetch_keys(&jwks_uri).await?;
        }
        Ok(self.read().keys.candidates(token).cloned().collect())
    }

    /// The discovery document's `issuer`, once discovered.
    pub fn issuer(&self) -> Option<String> {
        self.discovery().map(|d| d.issuer.clone())
    }

    pub fn authorization_endpoint(&self) -> Option<String> {
        self.discovery().and_then(|d| d.authorization_endpoint.clone())
    }

    pub fn token_endpoint(&self) -> Option<String> {
        self.discovery().and_then(|d| d.token_endpoint.clone())
    }

    pub fn jwks_uri(&self) -> Option<String> {
        self.discovery().map(|d| d.jwks_uri.clone())
    }

    /// The cached discovery document, once discovered.
    pub fn discovery(&self) -> Option<Arc<Discovery>> {
        self.read().discovery.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The last failure's error, when it is too recent to ask the issuer again.
    fn check_backoff(&self) -> Result<(), String> {
        match &self.read().last_failure {
            Some((at, error)) if at.elapsed() < self.min_refetch => Err(error.clone()),
            _ => Ok(()),
        }
    }

    /// Discovery, then keys; the caller holds `fetching`.
    async fn fetch_all(&self) -> Result<Arc<Discovery>, String> {
        let result = async {
            let discovery = Arc::new(self.fetch_discovery().await?);
            let keys = self.fetch_jwks(&discovery.jwks_uri).await?;
            Ok::<_, String>((discovery, keys))
        }
        .await;
        match result {
            Ok((discovery, keys)) => {
                let mut state = self.write();
                state.discovery = Some(discovery.clone());
                state.store_keys(keys);
                Ok(discovery)
            }
            Err(error) => {
                self.write().last_failure = Some((Instant::now(), error.clone()));
                Err(error)
            }
        }
    }

    /// Keys only; the caller holds `fetching`.
    async fn fetch_keys(&self, jwks_uri: &str) -> Result<(), String> {
        match self.fetch_jwks(jwks_uri).await {
            Ok(keys) => {
                self.write().store_keys(keys);
                Ok(())
            }
            Err(error) => {
                self.write().last_failure = Some((Instant::now(), error.clone()));
                Err(error)
            }
        }
    }

    async fn fetch_discovery(&self) -> Result<Discovery, String> {
        let url = self.discovery_url();
        let document = self.get_json(&url, "OpenID Connect discovery").await?;
        let member =
            |name: &str| document.get(name).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
        let missing = |name: &str| format!("the OpenID Connect discovery document at {url} has no \"{name}\"");
        let issuer = member("issuer").ok_or_else(|| missing("issuer"))?;
        let jwks_uri = member("jwks_uri").ok_or_else(|| missing("jwks_uri"))?;
        Ok(Discovery {
            issuer_matches_authority: issuer.trim_end_matches('/') == self.authority,
            issuer,
            jwks_uri,
            authorization_endpoint: member("authorization_endpoint"),
            token_endpoint: member("token_endpoint"),
        })
    }

    async fn fetch_jwks(&self, jwks_uri: &str) -> Result<JwkSet, String> {
        let body = self.get(jwks_uri, "JWKS").await?;
        JwkSet::parse(&body).map_err(|e| format!("the JWKS at {}: {e}", redact(jwks_uri)))
    }

    async fn get_json(&self, url: &str, what: &str) -> Result<Value, String> {
        let body = self.get(url, what).await?;
        match serde_json::from_slice(&body) {
            Ok(value @ Value::Object(_)) => Ok(value),
            _ => Err(format!("the {what} document at {} is not a JSON object", redact(url))),
        }
    }

    async fn get(&self, url: &str, what: &str) -> Result<Vec<u8>, String> {
        let response = self
            .client
            .get(url, &[("Accept", "application/json")])
            .await
            .map_err(|e| format!("{what} of {}: {e}", self.authority))?;
        if response.status != 200 {
            return Err(format!("{what}: {} answered HTTP {}", redact(url), response.status));
        }
        Ok(response.body)
    }
}

impl State {
    fn store_keys(&mut self, keys: JwkSet) {
        self.keys = Arc::new(keys);
        self.fetched_at = Some(Instant::now());
        self.generation += 1;
        self.last_failure = None;
    }
}

/// A URL without its query, for messages.
fn redact(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::b64;
    use crate::jwt;
    use crate::keys::SigningKey;
    use fhirside_fetch::testing::{serve, temp_file, tls_fixture, TestRequest, TestResponse};

    /// A test issuer at `http://127.0.0.1:{port}/tenant/v2.0` serving a discovery document and a
    /// JWKS that the test can change, counting requests.
    struct Server {
        authority: String,
        discovery: Arc<Mutex<Value>>,
        keys: Arc<Mutex<Vec<Jwk>>>,
        discovery_hits: Arc<AtomicUsize>,
        jwks_hits: Arc<AtomicUsize>,
    }

    impl Server {
        async fn start(keys: Vec<Jwk>) -> Server {
            let discovery: Arc<Mutex<Value>> = Arc::default();
            let keys = Arc::new(Mutex::new(keys));
            let discovery_hits = Arc::new(AtomicUsize::new(0));
            let jwks_hits = Arc::new(AtomicUsize::new(0));
            let (d, k, dh, jh) = (discovery.clone(), keys.clone(), discovery_hits.clone(), jwks_hits.clone());
            let address = serve(
                Arc::new(move |request: TestRequest| match request.path.as_str() {
                    "/tenant/v2.0/.well-known/openid-configuration" => {
                        dh.fetch_add(1, Ordering::SeqCst);
                        Some(TestResponse::json(d.lock().unwrap()))
                    }
                    "/tenant/discovery/v2.0/keys" => {
                        jh.fetch_add(1, Ordering::SeqCst);
                        Some(TestResponse::json(json!({"keys": *k.lock().unwrap()})))
                    }
                    _ => Some(TestResponse::new(404, "")),
                }),
                None,
            )
            .await;
            let base = format!("http://127.0.0.1:{}", address.port());
            let authority = format!("{base}/tenant/v2.0");
            *discovery.lock().unwrap() = json!({
                "issuer": authority,
                "jwks_uri": format!("{base}/tenant/discovery/v2.0/keys"),
                "authorization_endpoint": format!("{base}/tenant/oauth2/v2.0/authorize"),
                "token_endpoint": format!("{base}/tenant/oauth2/v2.0/token"),
                "response_types_supported": ["code"],
            });
            Server { authority, discovery, keys, discovery_hits, jwks_hits }
        }

        fn hits(&self) -> (usize, usize) {
            (self.discovery_hits.load(Ordering::SeqCst), self.jwks_hits.load(Ordering::SeqCst))
        }

        fn issuer(&self) -> OidcIssuer {
            // Loopback http needs no CA; any trusted root makes a client.
            let ca = temp_file(&tls_fixture().0);
            let client = Client::new(Some(&ca)).unwrap();
            let _ = std::fs::remove_file(ca);
            OidcIssuer::new(&format!("{}/", self.authority), client)
        }
    }

    fn token(key: &SigningKey) -> jwt::Decoded {
        jwt::decode(&key.sign(&json!({"sub": "someone"}))).unwrap()
    }

    /// A token whose header names a key nobody has.
    fn token_with_kid(kid: &str) -> jwt::Decoded {
        let header = b64::encode(json!({"alg": "RS256", "kid": kid}).to_string());
        let claims = b64::encode(json!({"sub": "someone"}).to_string());
        jwt::decode(&format!("{header}.{claims}.{}", b64::encode(b"sig"))).unwrap()
    }

    #[tokio::test]
    async fn discovers_and_follows_key_rotation_without_hammering() {
        let first = SigningKey::generate(0).unwrap();
        let server = Server::start(vec![first.jwk()]).await;
        let issuer = server.issuer();
        assert_eq!(issuer.authority(), server.authority);
        assert_eq!(issuer.issuer(), None);

        let discovery = issuer.discover().await.unwrap();
        assert_eq!(discovery.issuer, server.authority);
        assert!(discovery.issuer_matches_authority);
        assert!(discovery.jwks_uri.ends_with("/tenant/discovery/v2.0/keys"));
        assert_eq!(issuer.issuer(), Some(server.authority.clone()));
        assert_eq!(
            issuer.token_endpoint(),
            Some(format!("{}/tenant/oauth2/v2.0/token", server.authority.trim_end_matches("/tenant/v2.0")))
        );
        assert!(issuer.authorization_endpoint().unwrap().ends_with("/tenant/oauth2/v2.0/authorize"));
        assert_eq!(server.hits(), (1, 1));

        // The cached key verifies the token; nothing is fetched.
        let decoded = token(&first);
        let keys = issuer.keys_for(&decoded).await.unwrap();
        assert_eq!(keys, vec![first.jwk()]);
        decoded.verify_with(&keys[0]).unwrap();
        assert_eq!(server.hits(), (1, 1));

        // The issuer rotates: a token with the new kid makes one refetch, which finds it.
        let second = SigningKey::generate(0).unwrap();
        *server.keys.lock().unwrap() = vec![second.jwk()];
        let decoded = token(&second);
        let keys = issuer.keys_for(&decoded).await.unwrap();
        assert_eq!(keys, vec![second.jwk()]);
        decoded.verify_with(&keys[0]).unwrap();
        assert_eq!(server.hits(), (1, 2));

        // Another unknown kid within 30 s: no refetch, no key.
        assert_eq!(issuer.keys_for(&token_with_kid("made-up")).await.unwrap(), vec![]);
        assert_eq!(issuer.keys_for(&token_with_kid("made-up-too")).await.unwrap(), vec![]);
        assert_eq!(server.hits(), (1, 2));
        // Keys already cached are still found.
        assert_eq!(issuer.keys_for(&token(&second)).await.unwrap().len(), 1);
        // The first key is gone from the issuer, and so from the cache.
        assert_eq!(issuer.keys_for(&token(&first)).await.unwrap(), vec![]);
        assert_eq!(server.hits(), (1, 2));
    }

    #[tokio::test]
    async fn discovers_on_first_use_and_shares_concurrent_refetches() {
        let first = SigningKey::generate(0).unwrap();
        let server = Server::start(vec![first.jwk()]).await;
        let issuer = Arc::new(server.issuer());
        assert_eq!(issuer.keys_for(&token(&first)).await.unwrap(), vec![first.jwk()]);
        assert_eq!(server.hits(), (1, 1));

        let second = SigningKey::generate(0).unwrap();
        server.keys.lock().unwrap().push(second.jwk());
        let decoded = token(&second);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (issuer, decoded) = (issuer.clone(), decoded.clone());
                tokio::spawn(async move { issuer.keys_for(&decoded).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), vec![second.jwk()]);
        }
        assert_eq!(server.hits(), (1, 2));
    }

    #[tokio::test]
    async fn refreshes_old_keys_and_rediscovers() {
        let key = SigningKey::generate(0).unwrap();
        let server = Server::start(vec![key.jwk()]).await;
        let mut issuer = server.issuer();
        issuer.set_refresh_intervals(Duration::from_secs(30), Duration::ZERO);
        issuer.discover().await.unwrap();
        assert_eq!(issuer.keys_for(&token(&key)).await.unwrap().len(), 1);
        assert_eq!(issuer.keys_for(&token(&key)).await.unwrap().len(), 1);
        assert_eq!(server.hits(), (3, 3));
    }

    #[tokio::test]
    async fn reports_an_issuer_other_than_the_authority() {
        let key = SigningKey::generate(0).unwrap();
        let server = Server::start(vec![key.jwk()]).await;
        server.discovery.lock().unwrap()["issuer"] = json!("https://sts.windows.net/tenant/");
        let issuer = server.issuer();
        let discovery = issuer.discover().await.unwrap();
        assert!(!discovery.issuer_matches_authority);
        assert_eq!(issuer.issuer().as_deref(), Some("https://sts.windows.net/tenant/"));
        assert_eq!(issuer.keys_for(&token(&key)).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn refuses_incomplete_documents_and_backs_off() {
        let key = SigningKey::generate(0).unwrap();
        let server = Server::start(vec![key.jwk()]).await;
        server.discovery.lock().unwrap().as_object_mut().unwrap().remove("jwks_uri");
        let issuer = server.issuer();
        let error = issuer.discover().await.unwrap_err();
        assert!(error.contains("jwks_uri"), "{error}");
        assert_eq!(issuer.issuer(), None);
        // Tokens arriving meanwhile do not make a request each.
        let error = issuer.keys_for(&token(&key)).await.unwrap_err();
        assert!(error.contains("jwks_uri"), "{error}");
        assert_eq!(server.hits(), (1, 0));

        let missing = OidcIssuer::new(&format!("{}/nowhere", server.authority), issuer.client.clone());
        let error = missing.discover().await.unwrap_err();
        assert!(error.contains("HTTP 404"), "{error}");
    }
}
