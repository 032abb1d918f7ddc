//! One attempt to deliver a message to a destination, and the verification of a destination.
//!
//! A cloud FHIR destination receives the message as an idempotent transaction Bundle
//! ([`crate::rewrite`]) POSTed to its `fhirBaseUrl` with a bearer token from its credential; a
//! standard endpoint receives the message as it came, with its `verification-token` header (and a
//! bearer token when it has a credential). What the answer means:
//! - `2xx`: delivered;
//! - `401`: the cached token is dropped and the attempt repeated once with a fresh one;
//! - `401`/`403` again, `404`, `408`, `409`, `425`, `429`, `5xx`, or no answer: try again later
//!   (the destination, its credential or its configuration may recover; the message is not at
//!   fault);
//! - any other `4xx`: the destination rejected this message (a FHIR service's validation, with its
//!   `OperationOutcome`): final, since sending it again would get the same answer;
//! - a batch's `200` with failed entries: as its worst entry.

use std::time::Duration;

use serde_json::{json, Value};

use crate::backoff::parse_retry_after;
use crate::model::{Credential, Destination, Kind};
use crate::store::queue::Work;
use crate::token::TokenCache;
use crate::{rewrite, Relay};
use fhirside_fetch::Client;

/// How long one delivery may take: a large transaction Bundle takes the target a while.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer read (a transaction's response with `return=minimal`).
const MAX_ANSWER: usize = 16 << 20;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered {
        status: u16,
    },
    /// Final: the destination refused this message.
    Rejected {
        status: u16,
        error: String,
        outcome: Option<Value>,
    },
    /// Worth another attempt later.
    Retry {
        status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
    },
}

/// Whether a status is final for the message, a success, or worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Success,
    Retry,
    Reject,
}

pub fn classify(status: u16) -> Class {
    match status {
        200..=299 => Class::Success,
        401 | 403 | 404 | 408 | 409 | 425 | 429 => Class::Retry,
        400..=499 => Class::Reject,
        _ => Class::Retry,
    }
}

/// The first diagnostics of an `OperationOutcome`, for the message's error.
fn diagnostics(body: &[u8]) -> (String, Option<Value>) {
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).trim().to_owned();
        return (text, None);
    };
    let issues = json["issue"].as_array().cloned().unwrap_or_default();
    let text = issues
        .iter()
        .filter_map(|i| i["diagnostics"].as_str().or_else(|| i["details"]["text"].as_str()))
        .take(3)
        .collect::<Vec<_>>()
        .join("; ");
    (text, Some(json))
}

fn describe(status: u16, body: &[u8]) -> (String, Option<Value>) {
    let (text, outcome) = diagnostics(body);
    let error = if text.is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {text}") };
    (error, outcome)
}

/// Where and what to send, with the headers of the destination's kind.
fn request(destination: &Destination, body: Vec<u8>, bearer: Option<&str>) -> Result<fhirside_fetch::Request, String> {
    let (url, content_type) = match destination.kind {
        Kind::CloudFhir => {
            (destination.fhir_base_url().ok_or("the destination has no fhirBaseUrl")?, "application/fhir+json")
        }
        Kind::Standard => {
            (destination.endpoint.as_deref().ok_or("the destination has no endpoint")?, "application/json")
        }
    };
    let mut request = fhirside_fetch::Request::new("POST", url)
        .header("content-type", content_type)
        .header("accept", "application/fhir+json, application/json")
        .timeout(ATTEMPT_TIMEOUT)
        .max_response_bytes(MAX_ANSWER)
        .body(body);
    if destination.kind == Kind::CloudFhir {
        request = request.header("prefer", "return=minimal");
    }
    if let Some(token) = &destination.verification_token {
        request = request.header("verification-token", token.as_str());
    }
    if let Some(token) = bearer {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    Ok(request)
}

/// Sends `body` to the destination, with a fresh token once if the first is refused.
async fn post(
    client: &Client,
    tokens: &TokenCache,
    destination: &Destination,
    credential: Option<&Credential>,
    body: Vec<u8>,
) -> Outcome {
    let mut refreshed = false;
    loop {
        let bearer = match credential {
            Some(credential) => match tokens.bearer(client, credential).await {
                Ok(token) => Some(token),
                Err(error) => return Outcome::Retry { status: None, error, retry_after: None },
            },
            None => None,
        };
        let request = match request(destination, body.clone(), bearer.as_deref()) {
            Ok(request) => request,
            Err(error) => return Outcome::Retry { status: None, error: error.to_owned(), retry_after: None },
        };
        let response = match client.send(request).await {
            Ok(response) => response,
            Err(error) => return Outcome::Retry { status: None, error: error.to_string(), retry_after: None },
        };
        let status = response.status;
        if status == 401 && !refreshed {
            if let Some(credential) = credential {
                tokens.forget(credential);
                refreshed = true;
                continue;
            }
        }
        let (error, outcome) = describe(status, &response.body);
        return match classify(status) {
            Class::Success => batch_failures(status, &response.body).unwrap_or(Outcome::Delivered { status }),
            Class::Reject => Outcome::Rejected { status, error, outcome },
            Class::Retry => Outcome::Retry {
                status: Some(status),
                error,
                retry_after: parse_retry_after(response.header("retry-after")),
            },
        };
    }
}

/// A batch answers `200` even when entries failed: the failed entries decide. A `5xx` or `429`
/// entry is worth another attempt (the batch's conditional writes make repeating the others
/// harmless); otherwise a `4xx` entry is the destination rejecting part of the message.
fn batch_failures(status: u16, body: &[u8]) -> Option<Outcome> {
    let bundle: Value = serde_json::from_slice(body).ok()?;
    if bundle["type"] != "batch-response" {
        return None;
    }
    let mut failures = Vec::new();
    for (i, entry) in bundle["entry"].as_array()?.iter().enumerate() {
        let text = entry.pointer("/response/status").and_then(Value::as_str).unwrap_or_default();
        let code: u16 = text.split_whitespace().next().and_then(|c| c.parse().ok()).unwrap_or(0);
        if code >= 400 {
            failures.push((i, code, entry.pointer("/response/outcome").cloned()));
        }
    }
    let (_, _, first_outcome) = failures.first()?.clone();
    let listed: Vec<String> = failures.iter().take(5).map(|(i, code, _)| format!("entry {i}: {code}")).collect();
    let error = format!("HTTP {status}, but {} batch entries failed ({})", failures.len(), listed.join(", "));
    if failures.iter().any(|(_, code, _)| classify(*code) == Class::Retry) {
        Some(Outcome::Retry { status: Some(status), error, retry_after: None })
    } else {
        Some(Outcome::Rejected { status, error, outcome: first_outcome })
    }
}

/// One attempt for a leased delivery.
pub async fn send(relay: &Relay, work: &Work) -> Outcome {
    let body = match work.destination.kind {
        Kind::CloudFhir => rewrite::as_transaction(&work.body, &work.message_id),
        Kind::Standard => work.body.clone(),
    };
    post(&relay.client, &relay.tokens, &work.destination, work.credential.as_ref(), body.to_string().into_bytes()).await
}

/// How a standard endpoint is asked for the challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Post,
    Get,
}

/// Verifies a destination: a WebSub-style challenge for a standard endpoint (REDOX-COMPAT §5),
/// a token and a sample transaction Bundle for a FHIR service. `Err` says why it failed.
pub async fn verify(
    client: &Client,
    tokens: &TokenCache,
    destination: &Destination,
    credential: Option<&Credential>,
    method: Method,
) -> Result<(), String> {
    if destination.in_progress() {
        return Err("the destination is still in progress: complete it (PATCH with setupState null) first".into());
    }
    match destination.kind {
        Kind::CloudFhir => {
            let sample = rewrite::sample_bundle(&destination.id);
            match post(client, tokens, destination, credential, sample.to_string().into_bytes()).await {
                Outcome::Delivered { .. } => Ok(()),
                Outcome::Rejected { error, .. } => Err(format!("the FHIR service refused the sample Bundle: {error}")),
                Outcome::Retry { error, .. } => Err(error),
            }
        }
        Kind::Standard => challenge(client, tokens, destination, credential, method).await,
    }
}

async fn challenge(
    client: &Client,
    tokens: &TokenCache,
    destination: &Destination,
    credential: Option<&Credential>,
    method: Method,
) -> Result<(), String> {
    let endpoint = destination.endpoint.as_deref().ok_or("the destination has no endpoint")?;
    let challenge = crate::new_id();
    let token = destination.verification_token.clone().unwrap_or_default();
    let mut request = match method {
        Method::Post => fhirside_fetch::Request::new("POST", endpoint)
            .header("content-type", "application/json")
            .body(json!({ "verification-token": token, "challenge": challenge }).to_string()),
        Method::Get => {
            let query = form_urlencoded::Serializer::new(String::new())
                .append_pair("challenge", &challenge)
                .append_pair("verification-token", &token)
                .finish();
            let separator = if endpoint.contains('?') { '&' } else { '?' };
            fhirside_fetch::Request::new("GET", &format!("{endpoint}{separator}{query}"))
        }
    };
    request = request.header("application-name", "RedoxEngine").timeout(ATTEMPT_TIMEOUT);
    if let Some(token) = &destination.verification_token {
        request = request.header("verification-token", token.as_str());
    }
    if let Some(credential) = credential {
        let bearer = tokens.bearer(client, credential).await?;
        request = request.header("authorization", format!("Bearer {bearer}"));
    }
    let response = client.send(request).await.map_err(|e| e.to_string())?;
    if !response.is_success() {
        return Err(format!("the endpoint answered the verification request with HTTP {}", response.status));
    }
    // Old receivers answer with the bare value, newer ones with e.g. {"challenge": "…"}.
    if !String::from_utf8_lossy(&response.body).contains(&challenge) {
        return Err("the endpoint answered 2xx but its answer does not contain the challenge".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_split_into_success_retry_and_reject() {
        assert_eq!(classify(200), Class::Success);
        assert_eq!(classify(201), Class::Success);
        for status in [401, 403, 404, 408, 409, 429, 500, 502, 503, 504] {
            assert_eq!(classify(status), Class::Retry, "{status}");
        }
        for status in [400, 405, 410, 412, 413, 415, 422] {
            assert_eq!(classify(status), Class::Reject, "{status}");
        }
    }

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use fhirside_fetch::testing::{serve, TestResponse};

    use crate::model::Credential;

    /// A token endpoint that numbers its tokens and a FHIR service that refuses the first one.
    #[tokio::test]
    async fn tokens_are_cached_and_fetched_again_when_the_destination_refuses_one() {
        let issued = Arc::new(AtomicUsize::new(0));
        let counter = issued.clone();
        let authority = serve(
            Arc::new(move |request| {
                assert!(String::from_utf8_lossy(&request.body).contains("client_secret=s"));
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                Some(TestResponse::json(json!({"access_token": format!("t{n}"), "expires_in": 3600})))
            }),
            None,
        )
        .await;
        let fhir = serve(
            Arc::new(|request| {
                Some(match request.header("authorization") {
                    Some("Bearer t1") => TestResponse::new(401, ""),
                    Some(_) if request.path == "/fhir" => TestResponse::json(json!({"resourceType": "Bundle"})),
                    _ => TestResponse::new(400, "no token"),
                })
            }),
            None,
        )
        .await;
        let credential = Credential {
            id: "c".into(),
            environment_id: "e".into(),
            fields: json!({"name": "c", "url": format!("http://{authority}/token"), "clientId": "a",
                           "authStrategy": "OAuth_2.0_2-legged", "grantType": "client_credentials"})
            .as_object()
            .unwrap()
            .clone(),
            secrets: json!({"clientSecret": "s"}).as_object().unwrap().clone(),
            created_at: 0,
            updated_at: 0,
        };
        let environment = crate::model::Environment {
            id: "e".into(),
            organization: 1,
            name: "Development".into(),
            flag: "Development".into(),
        };
        let destination = crate::model::new_destination(
            &json!({"name": "d", "authCredential": "c", "cloudProviderSettings": {"typeId": "azure",
                    "productId": "health-data-services", "settings": {"fhirBaseUrl": format!("http://{fhir}/fhir")}}}),
            "d".into(),
            &environment,
            0,
        )
        .unwrap();
        let client = Client::new(None).unwrap();
        let tokens = TokenCache::default();
        let body = b"{}".to_vec();
        let first = post(&client, &tokens, &destination, Some(&credential), body.clone()).await;
        assert_eq!(first, Outcome::Delivered { status: 200 });
        assert_eq!(issued.load(Ordering::SeqCst), 2, "the refused token was replaced once");
        let second = post(&client, &tokens, &destination, Some(&credential), body).await;
        assert_eq!(second, Outcome::Delivered { status: 200 });
        assert_eq!(issued.load(Ordering::SeqCst), 2, "the new token came from the cache");
    }

    #[test]
    fn failed_batch_entries_decide_a_batchs_outcome() {
        let response = |statuses: &[&str]| {
            let entries: Vec<Value> = statuses
                .iter()
                .map(|s| json!({"response": {"status": s, "outcome": {"resourceType": "OperationOutcome"}}}))
                .collect();
            json!({"resourceType": "Bundle", "type": "batch-response", "entry": entries}).to_string().into_bytes()
        };
        assert_eq!(batch_failures(200, &response(&["201 Created", "200 OK"])), None);
        let rejected = batch_failures(200, &response(&["201 Created", "400 Bad Request"])).unwrap();
        assert!(
            matches!(&rejected, Outcome::Rejected { error, outcome: Some(_), .. } if error.contains("entry 1: 400"))
        );
        let retry = batch_failures(200, &response(&["422", "503 Service Unavailable"])).unwrap();
        assert!(matches!(retry, Outcome::Retry { .. }));
        let transaction = json!({"resourceType": "Bundle", "type": "transaction-response", "entry": []});
        assert_eq!(batch_failures(200, transaction.to_string().as_bytes()), None);
        assert_eq!(batch_failures(200, b"not json"), None);
    }

    #[test]
    fn an_operation_outcome_becomes_the_error() {
        let body = br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid",
            "diagnostics":"Patient.gender: 'banana' is not a valid code"}]}"#;
        let (error, outcome) = describe(400, body);
        assert_eq!(error, "HTTP 400: Patient.gender: 'banana' is not a valid code");
        assert_eq!(outcome.unwrap()["resourceType"], "OperationOutcome");
        assert_eq!(describe(503, b"").0, "HTTP 503");
    }
}
