//! The authorization endpoint (`/{tenant}/oauth2/v2.0/authorize`, `/{tenant}/oauth2/authorize`)
//! and its sign-in page: the browser half of the authorization code flow.
//!
//! A `GET` validates the request and shows a plain HTML sign-in form; the form posts back to the
//! same URL with the request's parameters and the user's name and password; a successful sign-in
//! redirects to the client's registered redirect URI with a one-time code.
//!
//! Errors before the client and its redirect URI are known good are shown on the page, never
//! redirected: sending a browser to an unregistered URI is how codes get stolen. After that, errors
//! go back to the client as `error`, `error_description` and `state`, as OAuth 2.0 specifies.
//!
//! SMART's `launch` parameter and the patient picker of `launch/patient` are in [`super::launch`].

use serde_json::{Map, Value};

use super::launch::{self, PatientStep, SignIn};
use super::{Authority, EndpointVersion, ScopeTarget};
use crate::secret;
use crate::store::{AppKind, CodeGrant};

/// What the HTTP layer should send back.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthorizeOutcome {
    /// `200` with an HTML page (the sign-in form, or an auto-posting form for `form_post`).
    Page(String),
    /// `302` to this URL.
    Redirect(String),
    /// An error page that cannot be sent back to the client, with its status.
    ErrorPage { status: u16, html: String },
}

/// The name and password a user typed.
pub struct Credentials {
    pub login: String,
    pub password: String,
}

pub(super) fn get<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

/// Where and how to send a response back to the client.
pub(super) struct Reply<'a> {
    redirect_uri: &'a str,
    state: Option<&'a str>,
    mode: &'a str,
}

impl Reply<'_> {
    fn send(&self, mut fields: Vec<(&str, String)>) -> AuthorizeOutcome {
        if let Some(state) = self.state {
            fields.push(("state", state.to_owned()));
        }
        if self.mode == "form_post" {
            let inputs: String = fields
                .iter()
                .map(|(k, v)| format!("<input type=\"hidden\" name=\"{}\" value=\"{}\">", html(k), html(v)))
                .collect();
            return AuthorizeOutcome::Page(format!(
                "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Signing in…</title></head>\
                 <body onload=\"document.forms[0].submit()\"><form method=\"post\" action=\"{}\">{inputs}\
                 <noscript><button type=\"submit\">Continue</button></noscript></form></body></html>",
                html(self.redirect_uri)
            ));
        }
        let encoded: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        let separator = if self.mode == "fragment" {
            '#'
        } else if self.redirect_uri.contains('?') {
            '&'
        } else {
            '?'
        };
        AuthorizeOutcome::Redirect(format!("{}{separator}{encoded}", self.redirect_uri))
    }

    pub(super) fn error(&self, error: &str, code: u32, message: &str) -> AuthorizeOutcome {
        self.send(vec![("error", error.to_owned()), ("error_description", format!("AADSTS{code}: {message}"))])
    }
}

impl Authority {
    /// Handles an authorization request; `credentials` are present when the sign-in form was posted.
    /// A `signin` parameter (the patient picker's post, see [`super::launch`]) stands in for the
    /// credentials: the HTTP layer takes it from a posted form only.
    pub fn authorize(
        &self,
        version: EndpointVersion,
        params: &[(String, String)],
        credentials: Option<Credentials>,
        now: i64,
    ) -> AuthorizeOutcome {
        match self.try_authorize(version, params, credentials, now) {
            Ok(outcome) => outcome,
            Err(e) => error_page(500, &format!("The sign-in service failed: {e}")),
        }
    }

    fn try_authorize(
        &self,
        version: EndpointVersion,
        params: &[(String, String)],
        credentials: Option<Credentials>,
        now: i64,
    ) -> Result<AuthorizeOutcome, crate::store::IdentityError> {
        let Some(client_id) = get(params, "client_id") else {
            return Ok(error_page(400, "AADSTS900144: The request must contain the parameter 'client_id'."));
        };
        let Some(app) = self.store.app(client_id)?.filter(|a| a.client_id == client_id) else {
            return Ok(error_page(
                400,
                &format!("AADSTS700016: Application with identifier '{client_id}' was not found in the directory."),
            ));
        };
        let redirect_uri = match get(params, "redirect_uri") {
            Some(uri) => uri,
            None if app.redirect_uris.len() == 1 => app.redirect_uris[0].as_str(),
            None => return Ok(error_page(400, "AADSTS900144: The request must contain the parameter 'redirect_uri'.")),
        };
        if !app.redirect_uris.iter().any(|r| r == redirect_uri) {
            return Ok(error_page(
                400,
                &format!(
                    "AADSTS50011: The redirect URI '{redirect_uri}' specified in the request does not match the \
                     redirect URIs configured for the application '{client_id}'."
                ),
            ));
        }
        let mode = get(params, "response_mode").unwrap_or("query");
        let reply = Reply {
            redirect_uri,
            state: get(params, "state"),
            mode: if matches!(mode, "query" | "fragment" | "form_post") { mode } else { "query" },
        };
        if get(params, "response_type") != Some("code") {
            return Ok(reply.error(
                "unsupported_response_type",
                700054,
                "The authorization endpoint supports response_type 'code' only.",
            ));
        }
        let challenge = get(params, "code_challenge");
        let method = get(params, "code_challenge_method").unwrap_or(if challenge.is_some() { "plain" } else { "" });
        if challenge.is_some() && method != "S256" {
            return Ok(reply.error("invalid_request", 50027, "code_challenge_method must be 'S256'."));
        }
        if challenge.is_none() && app.kind == AppKind::Public {
            return Ok(reply.error(
                "invalid_request",
                9002325,
                "Proof Key for Code Exchange is required for public clients: send code_challenge with code_challenge_method=S256.",
            ));
        }
        if app.kind == AppKind::Service {
            return Ok(reply.error(
                "unauthorized_client",
                700016,
                "This application is a backend service and cannot sign in users.",
            ));
        }
        let scope = get(params, "scope").unwrap_or("openid").to_owned();
        let resource = match self.requested_resource(version, params, &scope) {
            Ok(resource) => resource,
            Err((error, code, message)) => return Ok(reply.error(error, code, &message)),
        };

        // A bad launch is refused before the user types a password for nothing.
        let mut context = match get(params, "launch").map(launch::decode_launch) {
            None => Map::new(),
            Some(Ok(context)) => context,
            Some(Err(e)) => {
                return Ok(reply.error("invalid_request", 9002313, &format!("The launch parameter is not valid: {e}.")))
            }
        };

        let (user, signin) = match (credentials, get(params, "signin")) {
            (Some(credentials), _) => {
                let Some(user) = self.store.check_password(credentials.login.trim(), &credentials.password)? else {
                    return Ok(AuthorizeOutcome::Page(sign_in_page(
                        params,
                        Some(credentials.login.as_str()),
                        Some("AADSTS50126: Error validating credentials due to invalid username or password."),
                    )));
                };
                (user, None)
            }
            (None, Some(token)) => match self.verify_signin(token, &app.client_id, now)? {
                Some(user) => (user, Some(token)),
                None => {
                    return Ok(AuthorizeOutcome::Page(sign_in_page(
                        params,
                        get(params, "login_hint"),
                        Some("AADSTS50133: Your sign-in has expired. Please sign in again."),
                    )))
                }
            },
            (None, None) => return Ok(AuthorizeOutcome::Page(sign_in_page(params, get(params, "login_hint"), None))),
        };
        let signed_in = SignIn { client_id: &app.client_id, user: &user, token: signin };
        if let PatientStep::Answer(outcome) =
            self.launch_patient(&reply, params, &scope, &signed_in, &mut context, now)?
        {
            return Ok(outcome);
        }
        let code = secret::new_opaque_token();
        let grant = CodeGrant {
            client_id: app.client_id.clone(),
            redirect_uri: redirect_uri.to_owned(),
            user_object_id: user.object_id.clone(),
            scope,
            resource,
            code_challenge: challenge.map(str::to_owned),
            code_challenge_method: challenge.map(|_| "S256".to_owned()),
            nonce: get(params, "nonce").map(str::to_owned),
            endpoint_version: version.as_str().to_owned(),
            context: Value::Object(context),
        };
        self.store.save_code(&code, &grant, now + self.config.code_lifetime)?;
        let mut fields = vec![("code", code)];
        if version == EndpointVersion::V1 {
            fields.push(("session_state", secret::new_opaque_token()));
        }
        Ok(reply.send(fields))
    }

    /// The resource an authorization request is for: v1's `resource`, or the one resource all of
    /// v2's scopes name (bare SMART scopes take the `aud` parameter, else the FHIR service).
    /// A refusal is `(error, AADSTS code, message)`, to redirect to the client.
    fn requested_resource(
        &self,
        version: EndpointVersion,
        params: &[(String, String)],
        scope: &str,
    ) -> Result<String, (&'static str, u32, String)> {
        let unknown = |resource: &str| {
            Err((
                "invalid_resource",
                500011,
                format!(
                    "The resource principal named {resource} was not found in the tenant named {}.",
                    self.tenant_id()
                ),
            ))
        };
        let canonical = self.config.fhir_audiences.first().cloned().unwrap_or_default();
        if version == EndpointVersion::V1 {
            return match get(params, "resource") {
                None => Ok(canonical),
                Some(resource) => match self.resolve_resource(resource) {
                    Some(audience) => Ok(audience),
                    None => unknown(resource),
                },
            };
        }
        let mut audiences: Vec<String> = Vec::new();
        for part in scope.split_whitespace() {
            match self.scope_target(part) {
                ScopeTarget::Fhir { audience, .. } => audiences.push(audience),
                ScopeTarget::Bare(_) => match get(params, "aud") {
                    Some(aud) => match self.resolve_resource(aud) {
                        Some(audience) => audiences.push(audience),
                        None => return unknown(aud),
                    },
                    None => audiences.push(canonical.clone()),
                },
                ScopeTarget::Unknown(scope) => {
                    return Err((
                        "invalid_scope",
                        70011,
                        format!("The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."),
                    ))
                }
                ScopeTarget::Oidc(_) => {}
            }
        }
        audiences.dedup();
        match audiences.as_slice() {
            [] => Ok(canonical),
            [one] => Ok(one.clone()),
            _ => Err((
                "invalid_scope",
                700022,
                "The provided value for the input parameter scope is not valid because it contains more than one resource.".into(),
            )),
        }
    }
}

fn error_page(status: u16, message: &str) -> AuthorizeOutcome {
    AuthorizeOutcome::ErrorPage {
        status,
        html: page(
            "Sign-in error",
            &format!("<h1>Sorry, we can't sign you in</h1><p role=\"alert\">{}</p>", html(message)),
        ),
    }
}

/// Hidden fields carrying the request's parameters, each name once (the first, as [`get`] reads
/// it: a posted form also arrives with its URL's query), except those named in `skip`.
pub(super) fn hidden_inputs(params: &[(String, String)], skip: &[&str]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    let mut out = String::new();
    for (k, v) in params {
        if skip.contains(&k.as_str()) || seen.contains(&k.as_str()) {
            continue;
        }
        seen.push(k);
        out.push_str(&format!("<input type=\"hidden\" name=\"{}\" value=\"{}\">\n", html(k), html(v)));
    }
    out
}

/// The sign-in form: every request parameter travels in a hidden field so that the post is a
/// complete authorization request on its own. The picker's fields stay out: a fresh sign-in
/// starts the choice afresh.
fn sign_in_page(params: &[(String, String)], login: Option<&str>, error: Option<&str>) -> String {
    let hidden = hidden_inputs(params, &launch::FORM_FIELDS);
    let error =
        error.map(|e| format!("<p id=\"error\" role=\"alert\" class=\"error\">{}</p>\n", html(e))).unwrap_or_default();
    let described = if error.is_empty() { "" } else { " aria-describedby=\"error\"" };
    let body = format!(
        "<h1>Sign in</h1>\n{error}<form method=\"post\">\n{hidden}\
         <p><label for=\"login\">User name</label><br>\
         <input id=\"login\" name=\"login\" type=\"text\" autocomplete=\"username\" required value=\"{}\"{described}></p>\n\
         <p><label for=\"passwd\">Password</label><br>\
         <input id=\"passwd\" name=\"passwd\" type=\"password\" autocomplete=\"current-password\" required{described}></p>\n\
         <p><button type=\"submit\">Sign in</button></p>\n</form>",
        html(login.unwrap_or(""))
    );
    page("Sign in to Fhirside", &body)
}

pub(super) fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:26rem;margin:3rem auto;padding:0 1rem;line-height:1.5}}\
         input{{width:100%;padding:.5rem;font-size:1rem;box-sizing:border-box}}\
         input[type=radio]{{width:auto}}fieldset{{border:0;padding:0}}\
         button{{padding:.5rem 1.5rem;font-size:1rem}}.error{{color:#a00;font-weight:bold}}</style></head>\n\
         <body><main>\n{body}\n</main></body>\n</html>\n",
        html(title)
    )
}

/// Escapes text for HTML content and attribute values.
pub(super) fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
