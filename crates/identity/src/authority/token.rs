//! The token endpoint (`/{tenant}/oauth2/v2.0/token`, `/{tenant}/oauth2/token`).
//!
//! Grants: `client_credentials` (a daemon acting as itself), `authorization_code` (a user signed in
//! through [`super::authorize`], with PKCE) and `refresh_token`. Clients authenticate with a secret
//! (in the body or HTTP Basic) or a signed assertion (`private_key_jwt`, as SMART backend services
//! and MSAL's certificate credentials do); public clients do not authenticate and must use PKCE.
//!
//! SMART: user tokens carry `fhirUser` and the launch context's `patient`, and the response the
//! launch context; `client_credentials` also takes SMART Backend Services' `system/` scopes.

use serde_json::{json, Map, Value};

use super::{base_claims, Authority, EndpointVersion, OAuthError, ScopeTarget};
use crate::jwt;
use crate::roles::{self, RoleKind};
use crate::secret;
use crate::store::{App, AppKind, CodeGrant, Redeemed, RefreshGrant, User};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Scopes of OpenID Connect itself, which name no resource.
const OIDC_SCOPES: [&str; 5] = ["openid", "profile", "email", "offline_access", "online_access"];
/// How far a client assertion's `exp` may lie ahead (SMART backend services allow 5 minutes,
/// MSAL signs 10).
const MAX_ASSERTION_LIFETIME: i64 = 3600;
/// Clock skew tolerated on assertions.
const SKEW: i64 = 300;

/// A token request: the form fields, and HTTP Basic credentials if any.
#[derive(Debug, Default)]
pub struct TokenRequest {
    pub params: Vec<(String, String)>,
    pub basic: Option<(String, String)>,
}

impl TokenRequest {
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    pub(super) fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name).ok_or_else(|| OAuthError::missing(name))
    }
}

/// How the client proved who it is (Entra's `appidacr`/`azpacr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientAuth {
    Public,
    Secret,
    Assertion,
}

impl ClientAuth {
    fn acr(self) -> &'static str {
        match self {
            ClientAuth::Public => "0",
            ClientAuth::Secret => "1",
            ClientAuth::Assertion => "2",
        }
    }
}

/// Who a token is for: an app acting as itself, or a user through an app.
struct Subject<'a> {
    app: &'a App,
    client_auth: ClientAuth,
    user: Option<&'a User>,
}

impl Authority {
    /// Answers a token request: the JSON token response, or an Entra-shaped error.
    pub fn token(&self, version: EndpointVersion, request: &TokenRequest, now: i64) -> Result<Value, OAuthError> {
        match request.require("grant_type")? {
            "client_credentials" => self.client_credentials(version, request, now),
            "authorization_code" => self.authorization_code(version, request, now),
            "refresh_token" => self.refresh_token(version, request, now),
            other => Err(OAuthError::new(
                "unsupported_grant_type",
                70003,
                format!("The app requested an unsupported grant type '{other}'."),
            )),
        }
    }

    fn client_credentials(
        &self,
        version: EndpointVersion,
        request: &TokenRequest,
        now: i64,
    ) -> Result<Value, OAuthError> {
        let (app, client_auth) = self.authenticate_client(version, request, now)?;
        if client_auth == ClientAuth::Public {
            return Err(OAuthError::invalid_client(
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            ));
        }
        let resource = match version {
            EndpointVersion::V2 => {
                if request.get("resource").is_some() {
                    return Err(OAuthError::invalid_request(
                        901002,
                        "The 'resource' request parameter is not supported.",
                    ));
                }
                let scope = request.require("scope")?;
                if let Some(system) = system_scopes(scope)? {
                    // SMART Backend Services: the scopes name no resource; they are the FHIR service's.
                    let audience = self.fhir_base_audience();
                    let subject = Subject { app: &app, client_auth, user: None };
                    let access_token = self.access_token(&subject, &audience, Some(&system), &Value::Null, now)?;
                    let scope = Some(system.join(" "));
                    let body =
                        self.response(version, &audience, access_token, scope.as_deref(), None, None, &Map::new(), now);
                    return Ok(body);
                }
                let resources: Vec<&str> = scope
                    .split_whitespace()
                    .filter(|s| !OIDC_SCOPES.contains(s))
                    .map(|s| s.strip_suffix("/.default").ok_or(s))
                    .collect::<Result<_, _>>()
                    .map_err(|_| {
                        OAuthError::new(
                            "invalid_scope",
                            1002012,
                            format!(
                                "The provided value for scope {scope} is not valid. Client credential flows must have a \
                                 scope value with /.default suffixed to the resource identifier (application ID URI)."
                            ),
                        )
                    })?;
                match resources.as_slice() {
                    [one] => one.to_string(),
                    [] => {
                        return Err(OAuthError::new(
                            "invalid_scope",
                            1002012,
                            format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
                        ))
                    }
                    _ => {
                        return Err(OAuthError::new(
                            "invalid_scope",
                            700022,
                            "The provided value for the input parameter scope is not valid because it contains more than one resource.",
                        ))
                    }
                }
            }
            EndpointVersion::V1 => request.require("resource")?.to_owned(),
        };
        let audience = self.audience(&resource)?;
        let subject = Subject { app: &app, client_auth, user: None };
        let access_token = self.access_token(&subject, &audience, None, &Value::Null, now)?;
        Ok(self.response(version, &audience, access_token, None, None, None, &Map::new(), now))
    }

    fn authorization_code(
        &self,
        version: EndpointVersion,
        request: &TokenRequest,
        now: i64,
    ) -> Result<Value, OAuthError> {
        let code = request.require("code")?;
        let redirect_uri = request.require("redirect_uri")?;
        let (app, client_auth) = self.authenticate_client(version, request, now)?;
        let grant = match self.store.redeem_code(code, now)? {
            Redeemed::Valid(grant) => grant,
            Redeemed::AlreadyUsed => {
                return Err(OAuthError::invalid_grant(
                    54005,
                    "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
                ))
            }
            Redeemed::Expired => {
                return Err(OAuthError::invalid_grant(
                    70008,
                    "The provided authorization code or refresh token has expired due to inactivity.",
                ))
            }
            Redeemed::Unknown => {
                return Err(OAuthError::invalid_grant(70000, "The provided value for the 'code' parameter is not valid."))
            }
        };
        check_same_client(&grant.client_id, &app)?;
        if grant.redirect_uri != redirect_uri {
            return Err(OAuthError::invalid_grant(
                50011,
                "The redirect URI does not match the redirect URI of the authorization request.",
            ));
        }
        check_pkce(&grant, request.get("code_verifier"))?;
        let user = self.user(&grant.user_object_id)?;
        let subject = Subject { app: &app, client_auth, user: Some(&user) };
        let body = self.user_tokens(
            version,
            &subject,
            &grant.scope,
            &grant.resource,
            grant.nonce.as_deref(),
            &grant.context,
            now,
        )?;
        Ok(self.with_client_info(body, request, &user))
    }

    fn refresh_token(&self, version: EndpointVersion, request: &TokenRequest, now: i64) -> Result<Value, OAuthError> {
        let token = request.require("refresh_token")?;
        let (app, client_auth) = self.authenticate_client(version, request, now)?;
        let grant = match self.store.redeem_refresh_token(token, now)? {
            Redeemed::Valid(grant) => grant,
            Redeemed::Expired => {
                return Err(OAuthError::invalid_grant(700082, "The refresh token has expired due to inactivity."))
            }
            Redeemed::AlreadyUsed => {
                return Err(OAuthError::invalid_grant(
                    700084,
                    "The refresh token was already used; refresh tokens are single-use, use the newest one.",
                ))
            }
            Redeemed::Unknown => {
                return Err(OAuthError::invalid_grant(
                    9002313,
                    "Invalid request. The refresh token is malformed or not valid.",
                ))
            }
        };
        check_same_client(&grant.client_id, &app)?;
        // A narrower scope may be asked for; never a wider one.
        let scope = match request.get("scope") {
            Some(asked) => {
                let granted: Vec<&str> = grant.scope.split_whitespace().collect();
                let narrowed: Vec<&str> = asked.split_whitespace().filter(|s| granted.contains(s)).collect();
                if narrowed.is_empty() {
                    grant.scope.clone()
                } else {
                    narrowed.join(" ")
                }
            }
            None => grant.scope.clone(),
        };
        let user = self.user(&grant.user_object_id)?;
        let subject = Subject { app: &app, client_auth, user: Some(&user) };
        let body = self.user_tokens(version, &subject, &scope, &grant.resource, None, &grant.context, now)?;
        Ok(self.with_client_info(body, request, &user))
    }

    fn user(&self, object_id: &str) -> Result<User, OAuthError> {
        self.store
            .user(object_id)?
            .ok_or_else(|| OAuthError::invalid_grant(50034, "The user account does not exist in the directory."))
    }

    /// MSAL sends `client_info=1`; Entra then adds `client_info`, base64url JSON with the user's
    /// object id (`uid`) and tenant (`utid`), from which MSAL makes the account's `home_account_id`
    /// (`{uid}.{utid}`). Without it MSAL falls back to the id token's pairwise `sub`.
    fn with_client_info(&self, mut body: Value, request: &TokenRequest, user: &User) -> Value {
        if request.get("client_info") == Some("1") {
            let info = json!({ "uid": user.object_id, "utid": self.tenant_id() });
            if let Some(map) = body.as_object_mut() {
                map.insert("client_info".into(), json!(crate::b64::encode(info.to_string())));
            }
        }
        body
    }

    /// Access token, optional id token and refresh token for a user, and the response carrying them.
    #[allow(clippy::too_many_arguments)]
    fn user_tokens(
        &self,
        version: EndpointVersion,
        subject: &Subject,
        scope: &str,
        resource: &str,
        nonce: Option<&str>,
        context: &Value,
        now: i64,
    ) -> Result<Value, OAuthError> {
        let scopes: Vec<&str> = scope.split_whitespace().collect();
        let access_token = self.access_token(subject, resource, Some(&scopes), context, now)?;
        let id_token =
            if scopes.contains(&"openid") { Some(self.id_token(version, subject, &scopes, nonce, now)?) } else { None };
        // Entra's v1 endpoint always returns a refresh token to a code flow; v2 only for
        // `offline_access` (SMART adds `online_access`).
        let refresh =
            version == EndpointVersion::V1 || scopes.iter().any(|s| *s == "offline_access" || *s == "online_access");
        let refresh_token = if refresh {
            let token = secret::new_opaque_token();
            let grant = RefreshGrant {
                client_id: subject.app.client_id.clone(),
                user_object_id: subject.user.map(|u| u.object_id.clone()).unwrap_or_default(),
                scope: scope.to_owned(),
                resource: resource.to_owned(),
                endpoint_version: version.as_str().to_owned(),
                context: context.clone(),
            };
            self.store.save_refresh_token(&token, &grant, now + self.config.refresh_token_lifetime)?;
            Some(token)
        } else {
            None
        };
        let extra = context.as_object().cloned().unwrap_or_default();
        Ok(self.response(version, resource, access_token, Some(scope), id_token, refresh_token, &extra, now))
    }

    /// The token response, in the shape of the endpoint version (v1 sends numbers as strings).
    #[allow(clippy::too_many_arguments)]
    fn response(
        &self,
        version: EndpointVersion,
        resource: &str,
        access_token: String,
        scope: Option<&str>,
        id_token: Option<String>,
        refresh_token: Option<String>,
        extra: &Map<String, Value>,
        now: i64,
    ) -> Value {
        let lifetime = self.config.token_lifetime;
        let mut body = match version {
            EndpointVersion::V2 => json!({
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
            }),
            EndpointVersion::V1 => json!({
                "token_type": "Bearer",
                "expires_in": lifetime.to_string(),
                "ext_expires_in": lifetime.to_string(),
                "expires_on": (now + lifetime).to_string(),
                "not_before": now.to_string(),
                "resource": resource,
            }),
        };
        let map = body.as_object_mut().expect("object");
        if let Some(scope) = scope {
            map.insert("scope".into(), json!(scope));
        }
        map.insert("access_token".into(), json!(access_token));
        if let Some(refresh_token) = refresh_token {
            map.insert("refresh_token".into(), json!(refresh_token));
        }
        if let Some(id_token) = id_token {
            map.insert("id_token".into(), json!(id_token));
        }
        for (k, v) in extra {
            map.entry(k.clone()).or_insert_with(|| v.clone());
        }
        body
    }

    /// An access token for the FHIR service, with Entra's claims for the configured version. A
    /// user's carries SMART's `fhirUser` and the launch `context`'s `patient`; an app's has `scp`
    /// only for SMART system scopes (`.default` grants roles, not scopes, as in Entra).
    fn access_token(
        &self,
        subject: &Subject,
        audience: &str,
        scopes: Option<&[&str]>,
        context: &Value,
        now: i64,
    ) -> Result<String, OAuthError> {
        let v2 = self.config.access_token_version == 2;
        let (iss, aud) = if v2 {
            (self.issuer_v2(), self.fhir_app_id().to_owned())
        } else {
            (self.issuer_v1(), audience.to_owned())
        };
        let mut claims = base_claims(iss, aud, now, self.config.token_lifetime);
        let app = subject.app;
        if v2 {
            claims.insert("azp".into(), json!(app.client_id));
            claims.insert("azpacr".into(), json!(subject.client_auth.acr()));
        } else {
            claims.insert("appid".into(), json!(app.client_id));
            claims.insert("appidacr".into(), json!(subject.client_auth.acr()));
        }
        let principal = match subject.user {
            Some(user) => {
                if v2 {
                    claims.insert("name".into(), json!(user.display_name));
                    claims.insert("preferred_username".into(), json!(user.user_principal_name));
                } else {
                    claims.insert("amr".into(), json!(["pwd"]));
                    claims.insert("name".into(), json!(user.display_name));
                    claims.insert("unique_name".into(), json!(user.user_principal_name));
                    claims.insert("upn".into(), json!(user.user_principal_name));
                }
                let mut scp = Vec::new();
                for scope in scopes.unwrap_or_default() {
                    match self.scope_target(scope) {
                        ScopeTarget::Fhir { name, .. } => scp.push(name),
                        ScopeTarget::Bare(name) => scp.push(name),
                        ScopeTarget::Oidc(_) | ScopeTarget::Unknown(_) => {}
                    }
                }
                claims.insert("scp".into(), json!(scp.join(" ")));
                if let Some(fhir_user) = &user.fhir_user {
                    claims.insert("fhirUser".into(), json!(self.fhir_user_url(fhir_user)));
                }
                if let Some(patient) = context.get("patient").and_then(Value::as_str) {
                    claims.insert("patient".into(), json!(patient));
                }
                claims.insert("sub".into(), json!(pairwise_subject(&user.object_id, &app.client_id)));
                &user.object_id
            }
            None => {
                if let Some(scopes) = scopes {
                    claims.insert("scp".into(), json!(scopes.join(" ")));
                }
                claims.insert("sub".into(), json!(app.object_id));
                &app.object_id
            }
        };
        claims.insert("oid".into(), json!(principal));
        let app_roles: Vec<String> = self
            .store
            .role_assignments(Some(principal))?
            .into_iter()
            .filter(|a| roles::find(&a.role).is_some_and(|r| r.kind == RoleKind::AppRole))
            .map(|a| a.role)
            .collect();
        if !app_roles.is_empty() {
            claims.insert("roles".into(), json!(app_roles));
        }
        claims.insert("tid".into(), json!(self.tenant_id()));
        claims.insert("uti".into(), json!(secret::new_opaque_token()[..22]));
        claims.insert("ver".into(), json!(if v2 { "2.0" } else { "1.0" }));
        claims.insert("idtyp".into(), json!(if subject.user.is_some() { "user" } else { "app" }));
        Ok(self.sign(&Value::Object(claims))?)
    }

    /// An OpenID Connect id token for the client (`aud` = client id).
    fn id_token(
        &self,
        version: EndpointVersion,
        subject: &Subject,
        scopes: &[&str],
        nonce: Option<&str>,
        now: i64,
    ) -> Result<String, OAuthError> {
        let user = subject.user.expect("id tokens are issued to users");
        let mut claims =
            base_claims(self.issuer(version), subject.app.client_id.clone(), now, self.config.token_lifetime);
        claims.insert("name".into(), json!(user.display_name));
        claims.insert("oid".into(), json!(user.object_id));
        match version {
            EndpointVersion::V2 => claims.insert("preferred_username".into(), json!(user.user_principal_name)),
            EndpointVersion::V1 => claims.insert("upn".into(), json!(user.user_principal_name)),
        };
        claims.insert("sub".into(), json!(pairwise_subject(&user.object_id, &subject.app.client_id)));
        claims.insert("tid".into(), json!(self.tenant_id()));
        if let Some(nonce) = nonce {
            claims.insert("nonce".into(), json!(nonce));
        }
        if let (true, Some(fhir_user)) = (scopes.iter().any(|s| s.ends_with("fhirUser")), &user.fhir_user) {
            claims.insert("fhirUser".into(), json!(self.fhir_user_url(fhir_user)));
        }
        claims.insert("ver".into(), json!(if version == EndpointVersion::V2 { "2.0" } else { "1.0" }));
        Ok(self.sign(&Value::Object(claims))?)
    }

    /// `Practitioner/123` as an absolute URL on the FHIR service.
    fn fhir_user_url(&self, reference: &str) -> String {
        if reference.contains("://") {
            return reference.to_owned();
        }
        format!("{}/{reference}", self.fhir_base())
    }

    /// The canonical FHIR audience, as configured (the audience of tokens that name no resource).
    fn fhir_base_audience(&self) -> String {
        self.config.fhir_audiences.first().cloned().unwrap_or_else(|| self.fhir_app_id().to_owned())
    }

    /// The FHIR audience a requested resource names (AADSTS500011 when none).
    fn audience(&self, resource: &str) -> Result<String, OAuthError> {
        self.resolve_resource(resource).ok_or_else(|| {
            OAuthError::new(
                "invalid_resource",
                500011,
                format!(
                    "The resource principal named {resource} was not found in the tenant named {}. This can happen \
                     if the application has not been installed by the administrator of the tenant.",
                    self.tenant_id()
                ),
            )
        })
    }

    /// Identifies and authenticates the client of a token request.
    fn authenticate_client(
        &self,
        version: EndpointVersion,
        request: &TokenRequest,
        now: i64,
    ) -> Result<(App, ClientAuth), OAuthError> {
        let assertion = request.get("client_assertion");
        let basic = request.basic.as_ref();
        let secret = request.get("client_secret").or(basic.map(|(_, s)| s.as_str())).filter(|s| !s.is_empty());
        if assertion.is_some() && secret.is_some() {
            return Err(OAuthError::invalid_request(
                50027,
                "Only one client authentication method may be used: a client secret or a client assertion.",
            ));
        }
        let decoded =
            match assertion {
                Some(assertion) => {
                    if request.get("client_assertion_type") != Some(ASSERTION_TYPE) {
                        return Err(OAuthError::invalid_request(
                            50027,
                            format!("The client_assertion_type must be '{ASSERTION_TYPE}'."),
                        ));
                    }
                    Some(jwt::decode(assertion).map_err(|_| {
                        OAuthError::invalid_client(50027, "The client assertion is not a well-formed JWT.")
                    })?)
                }
                None => None,
            };
        let client_id = request
            .get("client_id")
            .or(basic.map(|(id, _)| id.as_str()))
            .or(decoded.as_ref().and_then(|d| d.claim_str("iss")))
            .ok_or_else(|| OAuthError::missing("client_id"))?
            .to_owned();
        let app = self.store.app(&client_id)?.filter(|a| a.client_id == client_id).ok_or_else(|| {
            OAuthError::new(
                "unauthorized_client",
                700016,
                format!(
                    "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen \
                     if the application has not been installed by the administrator of the tenant.",
                    self.tenant_id()
                ),
            )
        })?;
        if let Some(secret) = secret {
            match app.kind {
                AppKind::Confidential => {}
                AppKind::Public => {
                    return Err(OAuthError::invalid_client(
                        700025,
                        "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.",
                    ))
                }
                AppKind::Service => {
                    return Err(OAuthError::invalid_client(
                        7000218,
                        "This application is a backend service: it authenticates with a client assertion \
                         (private_key_jwt), not a client secret.",
                    ))
                }
            }
            return match self.store.check_secret(&client_id, secret)? {
                Some(info) if info.expires_at <= now => Err(OAuthError::invalid_client(
                    7000222,
                    format!("The provided client secret keys for app '{client_id}' are expired."),
                )),
                Some(_) => Ok((app, ClientAuth::Secret)),
                None => Err(OAuthError::invalid_client(
                    7000215,
                    format!(
                        "Invalid client secret provided. Ensure the secret being sent in the request is the client \
                         secret value, not the client secret ID, for a secret added to app '{client_id}'."
                    ),
                )),
            };
        }
        if let Some(decoded) = decoded {
            self.verify_assertion(version, &app, &decoded, now)?;
            return Ok((app, ClientAuth::Assertion));
        }
        if app.kind == AppKind::Public {
            return Ok((app, ClientAuth::Public));
        }
        Err(OAuthError::invalid_client(
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ))
    }

    /// `private_key_jwt`: the assertion is signed by one of the app's registered keys, names the
    /// app as `iss` and `sub` and this token endpoint as `aud`, is current, and is used once.
    fn verify_assertion(
        &self,
        version: EndpointVersion,
        app: &App,
        token: &jwt::Decoded,
        now: i64,
    ) -> Result<(), OAuthError> {
        let fail = |code: u32, message: &str| Err(OAuthError::invalid_client(code, message.to_owned()));
        if token.claim_str("iss") != Some(app.client_id.as_str())
            || token.claim_str("sub") != Some(app.client_id.as_str())
        {
            return fail(700021, "The client assertion's 'iss' and 'sub' must both be the client id.");
        }
        // Apps that redeem codes through Azure's SMART proxy address their assertion to it.
        let endpoints = [
            self.token_endpoint(version),
            self.token_endpoint(EndpointVersion::V1),
            self.token_endpoint(EndpointVersion::V2),
            self.proxy_token_endpoint(),
        ];
        let audience_ok = match token.claims.get("aud") {
            Some(Value::String(aud)) => endpoints.contains(aud),
            Some(Value::Array(auds)) => {
                auds.iter().any(|a| a.as_str().is_some_and(|a| endpoints.iter().any(|e| e == a)))
            }
            _ => false,
        };
        if !audience_ok {
            // Entra's number for this (Azure SDK troubleshooting guides); 700212 is workload identity
            // federation's "no matching federated identity record", another thing.
            return fail(
                700023,
                "Client assertion audience claim does not match Realm issuer: it must be the token endpoint's URL.",
            );
        }
        let Some(exp) = token.claim_time("exp") else {
            return fail(700024, "The client assertion has no 'exp' claim.");
        };
        if exp + SKEW < now
            || exp > now + MAX_ASSERTION_LIFETIME
            || token.claim_time("nbf").is_some_and(|nbf| nbf > now + SKEW)
        {
            return fail(700024, "Client assertion is not within its valid time range.");
        }
        let Some(keys) = &app.jwks else {
            return fail(700027, "The app has no registered public keys to verify a client assertion with.");
        };
        if token.alg().is_err() {
            return fail(700027, "The client assertion's signature algorithm is not accepted.");
        }
        if !keys.candidates(token).any(|key| token.verify_with(key).is_ok()) {
            return fail(700027, "Client assertion failed signature validation.");
        }
        let jti = token.claim_str("jti").unwrap_or_default();
        if jti.is_empty() || !self.first_use_of_assertion(&format!("{}:{jti}", app.client_id), exp + SKEW, now) {
            return fail(700025, "The client assertion has no 'jti' or was already used.");
        }
        Ok(())
    }
}

/// The scope of a `client_credentials` request when it asks for SMART system scopes
/// (`system/*.read system/Observation.rs`, besides OpenID Connect's), `None` when it asks for none
/// (a `/.default` request). Mixing the two is refused: one token cannot be both.
fn system_scopes(scope: &str) -> Result<Option<Vec<&str>>, OAuthError> {
    let scopes: Vec<&str> = scope.split_whitespace().filter(|s| !OIDC_SCOPES.contains(s)).collect();
    let is_system = |s: &&str| s.strip_prefix("system/").is_some_and(|rest| !rest.is_empty());
    if !scopes.iter().any(is_system) {
        return Ok(None);
    }
    if !scopes.iter().all(is_system) {
        return Err(OAuthError::new(
            "invalid_scope",
            70011,
            format!(
                "The provided value for scope {scope} is not valid. SMART system scopes cannot be combined with other \
                 scopes such as <resource>/.default in one client credentials request."
            ),
        ));
    }
    Ok(Some(scopes))
}

fn check_same_client(granted_to: &str, app: &App) -> Result<(), OAuthError> {
    if granted_to == app.client_id {
        Ok(())
    } else {
        Err(OAuthError::invalid_grant(70000, "The grant was issued to another client."))
    }
}

/// RFC 7636: the verifier must hash to the challenge of the authorization request.
fn check_pkce(grant: &CodeGrant, verifier: Option<&str>) -> Result<(), OAuthError> {
    let Some(challenge) = &grant.code_challenge else { return Ok(()) };
    let Some(verifier) = verifier else {
        return Err(OAuthError::invalid_grant(
            501481,
            "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
        ));
    };
    let computed = crate::b64::encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()));
    // A plain comparison: the code is single-use, so timing reveals nothing an attacker can reuse.
    if computed != *challenge {
        return Err(OAuthError::invalid_grant(
            501481,
            "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
        ));
    }
    Ok(())
}

/// Entra's `sub` for users is pairwise: the same user has a different subject in each app.
fn pairwise_subject(object_id: &str, client_id: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("{object_id}|{client_id}").as_bytes());
    crate::b64::encode(digest)
}
