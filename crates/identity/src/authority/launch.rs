//! SMART App Launch at the authorization endpoint: the `launch` parameter's context, and the
//! patient picker that `launch/patient` asks for when no launch named a patient.
//!
//! The launch value is what Azure's SMART launcher makes (base64 of a JSON object); its known
//! fields become the code's context, which the token endpoint returns beside the tokens.
//!
//! The picker is a second page after the sign-in form. Its post must not ask for the password
//! again, so the sign-in page hands it a `signin` token: a JWT signed with the authority's own keys,
//! for ten minutes, naming the user and the client, with an audience no resource accepts, so it can
//! never stand in for an access token.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::authorize::{get, hidden_inputs, html, page, AuthorizeOutcome, Reply};
use super::{base_claims, Authority};
use crate::jwt;
use crate::store::{IdentityError, User};

/// Where the FHIR service's patients come from; the server implements it over its resource store.
pub trait PatientDirectory: Send + Sync {
    /// Up to `limit` patients whose name matches `filter` (all when empty), as (id, display name).
    fn patients(&self, filter: &str, limit: usize) -> Result<Vec<(String, String)>, String>;
    /// Whether Patient/`id` exists (and is not deleted).
    fn exists(&self, id: &str) -> Result<bool, String>;
}

/// The `aud` of sign-in tokens: no resource's identifier, so the FHIR service refuses them.
pub const SIGNIN_AUDIENCE: &str = "urn:fhirside:signin";
/// How long a sign-in token lasts: enough to pick a patient, not to keep a session.
const SIGNIN_LIFETIME: i64 = 600;
/// Clock skew tolerated on a sign-in token's `nbf`.
const SKEW: i64 = 60;
/// Most patients the picker lists; a filter narrows the rest.
const PICKER_LIMIT: usize = 50;
/// The scope that asks for a patient in context.
const LAUNCH_PATIENT: &str = "launch/patient";
/// Launch fields kept as strings (SMART's context parameters, Azure's `practitioner`).
const STRING_FIELDS: [&str; 6] = ["patient", "encounter", "practitioner", "smart_style_url", "intent", "tenant"];
/// Fields of the sign-in and picker forms themselves, never carried over as request parameters.
pub(super) const FORM_FIELDS: [&str; 6] = ["login", "passwd", "signin", "patient", "action", "patient_filter"];

impl Authority {
    /// Sets where the patient picker finds patients; the first call wins (the server sets it once).
    pub fn set_patient_directory(&self, directory: Arc<dyn PatientDirectory>) {
        let _ = self.patient_directory.set(directory);
    }
}

/// Decodes a `launch` value: base64 or base64url (padding optional) of a JSON object, of which
/// the known fields are kept. `need_patient_banner` stays a boolean (`"true"` is read as one).
pub fn decode_launch(launch: &str) -> Result<Map<String, Value>, String> {
    // Standard base64's `+` arrives as a space when the app did not percent-encode it.
    let url_safe: String = launch
        .chars()
        .map(|c| match c {
            '+' | ' ' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    let bytes = crate::b64::decode(&url_safe).ok_or("it is not base64")?;
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&bytes) else {
        return Err("it is not a JSON object".into());
    };
    let mut context = Map::new();
    for name in STRING_FIELDS {
        if let Some(Value::String(value)) = fields.get(name).filter(|v| v.as_str() != Some("")) {
            context.insert(name.into(), json!(value));
        }
    }
    let banner = match fields.get("need_patient_banner") {
        Some(Value::Bool(banner)) => Some(*banner),
        Some(Value::String(text)) => text.parse::<bool>().ok(),
        _ => None,
    };
    if let Some(banner) = banner {
        context.insert("need_patient_banner".into(), json!(banner));
    }
    Ok(context)
}

/// The patient a `fhir_user` reference names (`Patient/123`, or an absolute URL ending so).
fn patient_of(fhir_user: &str) -> Option<&str> {
    let (before, id) = fhir_user.trim_end_matches('/').rsplit_once('/')?;
    let is_patient = before == "Patient" || before.ends_with("/Patient");
    (is_patient && !id.is_empty()).then_some(id)
}

/// Who signed in, to which client, and the sign-in token that proved it on a picker post.
pub(super) struct SignIn<'a> {
    pub client_id: &'a str,
    pub user: &'a User,
    pub token: Option<&'a str>,
}

/// What the launch step decided.
pub(super) enum PatientStep {
    /// The context is complete: go on and issue the code.
    Done,
    /// Answer with this (the picker page, or an error for the client).
    Answer(AuthorizeOutcome),
}

impl Authority {
    /// Completes the context's patient after sign-in. A user who is a patient is always in their
    /// own context (a launch naming another patient is refused); for `launch/patient` without a
    /// patient, the picker chooses one.
    pub(super) fn launch_patient(
        &self,
        reply: &Reply,
        params: &[(String, String)],
        scope: &str,
        signin: &SignIn,
        context: &mut Map<String, Value>,
        now: i64,
    ) -> Result<PatientStep, IdentityError> {
        let wants_patient = scope.split_whitespace().any(|s| s == LAUNCH_PATIENT || s.ends_with("/launch/patient"));
        if let Some(own) = signin.user.fhir_user.as_deref().and_then(patient_of) {
            if context.get("patient").is_some_and(|p| p.as_str() != Some(own)) {
                return Ok(PatientStep::Answer(reply.error(
                    "access_denied",
                    50105,
                    "The launch context names a patient other than the signed-in patient.",
                )));
            }
            if wants_patient {
                context.insert("patient".into(), json!(own));
            }
            return Ok(PatientStep::Done);
        }
        if !wants_patient || context.contains_key("patient") {
            return Ok(PatientStep::Done);
        }
        let Some(directory) = self.patient_directory.get() else {
            return Ok(PatientStep::Answer(reply.error(
                "invalid_request",
                9002313,
                "The scope launch/patient needs a patient to be chosen, and there is no patient directory to choose from.",
            )));
        };
        let directory_failed = |e: String| {
            PatientStep::Answer(reply.error("server_error", 90033, &format!("The patient directory failed: {e}")))
        };
        let mut error = None;
        if get(params, "action") != Some("filter") {
            // Only a picker post (proven by its sign-in token) chooses; a sign-in post cannot.
            if let Some(id) = signin.token.and(get(params, "patient")) {
                match directory.exists(id) {
                    Ok(true) => {
                        context.insert("patient".into(), json!(id));
                        return Ok(PatientStep::Done);
                    }
                    Ok(false) => error = Some(format!("Patient/{id} was not found.")),
                    Err(e) => return Ok(directory_failed(e)),
                }
            }
        }
        // A filter re-render keeps the sign-in token it came with: re-signing would extend it.
        let token = match signin.token {
            Some(token) => token.to_owned(),
            None => self.signin_token(signin.client_id, &signin.user.object_id, now)?,
        };
        let filter = get(params, "patient_filter").unwrap_or("").trim();
        let patients = match directory.patients(filter, PICKER_LIMIT) {
            Ok(patients) => patients,
            Err(e) => return Ok(directory_failed(e)),
        };
        let html = picker_page(params, &token, filter, &patients, error.as_deref());
        Ok(PatientStep::Answer(AuthorizeOutcome::Page(html)))
    }

    /// A token proving that `user_object_id` signed in to `client_id`.
    fn signin_token(&self, client_id: &str, user_object_id: &str, now: i64) -> Result<String, IdentityError> {
        let mut claims = base_claims(self.issuer_v2(), SIGNIN_AUDIENCE.into(), now, SIGNIN_LIFETIME);
        claims.insert("azp".into(), json!(client_id));
        claims.insert("oid".into(), json!(user_object_id));
        claims.insert("tid".into(), json!(self.tenant_id()));
        self.sign(&Value::Object(claims))
    }

    /// The user a sign-in token proves, if it is this authority's, current and for `client_id`.
    pub(super) fn verify_signin(&self, token: &str, client_id: &str, now: i64) -> Result<Option<User>, IdentityError> {
        let Ok(decoded) = jwt::decode(token) else { return Ok(None) };
        let keys = self.jwks()?;
        if !keys.candidates(&decoded).any(|key| decoded.verify_with(key).is_ok()) {
            return Ok(None);
        }
        let current = decoded.claim_time("exp").is_some_and(|exp| exp > now)
            && decoded.claim_time("nbf").is_none_or(|nbf| nbf <= now + SKEW);
        let ours = decoded.claim_str("aud") == Some(SIGNIN_AUDIENCE)
            && decoded.claim_str("iss") == Some(self.issuer_v2().as_str())
            && decoded.claim_str("azp") == Some(client_id);
        match decoded.claim_str("oid") {
            Some(oid) if current && ours => self.store.user(oid),
            _ => Ok(None),
        }
    }
}

/// The picker: the request's parameters and the sign-in token in hidden fields, a name filter, and
/// one radio button per patient, the first checked.
fn picker_page(
    params: &[(String, String)],
    signin: &str,
    filter: &str,
    patients: &[(String, String)],
    error: Option<&str>,
) -> String {
    let hidden = hidden_inputs(params, &FORM_FIELDS);
    let error =
        error.map(|e| format!("<p id=\"error\" role=\"alert\" class=\"error\">{}</p>\n", html(e))).unwrap_or_default();
    let choices: String = if patients.is_empty() {
        "<p>No patients found.</p>\n".into()
    } else {
        patients
            .iter()
            .enumerate()
            .map(|(i, (id, name))| {
                let (id, checked) = (html(id), if i == 0 { " checked" } else { "" });
                format!(
                    "<p><input type=\"radio\" name=\"patient\" value=\"{id}\" id=\"patient-{id}\"{checked}> \
                     <label for=\"patient-{id}\">{} ({id})</label></p>\n",
                    html(name)
                )
            })
            .collect()
    };
    let body = format!(
        "<h1>Choose a patient</h1>\n{error}<form method=\"post\">\n{hidden}\
         <input type=\"hidden\" name=\"signin\" value=\"{}\">\n\
         <p><label for=\"patient_filter\">Patient name</label><br>\
         <input id=\"patient_filter\" name=\"patient_filter\" type=\"text\" value=\"{}\"> \
         <button type=\"submit\" name=\"action\" value=\"filter\">Search</button></p>\n\
         <fieldset><legend>Patients</legend>\n{choices}</fieldset>\n\
         <p><button type=\"submit\">Continue</button></p>\n</form>",
        html(signin),
        html(filter)
    );
    page("Choose a patient", &body)
}
