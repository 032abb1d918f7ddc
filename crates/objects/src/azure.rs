//! Azure Blob Storage (and Azurite) over its REST API: Create Container, Put Blob or Put Block and
//! Put Block List, Get Blob, Delete Blob and List Blobs, authorized with the account's Shared Key,
//! a SAS, a bearer token, or a managed identity's tokens (src/managed_identity.rs).
//!
//! The account URL is `https://{account}.blob.core.windows.net`, or Azurite's path-style
//! `http://127.0.0.1:10000/devstoreaccount1`; an object is at `{account URL}/{container}/{key}`.

use base64::Engine;
use bytes::Bytes;
use fhirside_fetch::{Request, Response};

use crate::http::{failure, stream_failure, Http};
use crate::managed_identity::TokenSource;
use crate::reader::ObjectReader;
use crate::text::{hmac_sha256, http_date, percent_encode, url_path, xml_elements, xml_escape, xml_text};
use crate::{names, BlobAuth, ObjectError};

/// The REST API version asked for: one that Azurite 3.35 serves and that has what is used here
/// (Put Block of up to 4000 MiB, `Encoded` blob names in listings).
pub(crate) const VERSION: &str = "2021-08-06";

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub(crate) struct Blob<'a> {
    /// Without a trailing slash.
    pub account_url: &'a str,
    pub auth: &'a BlobAuth,
    pub http: &'a Http,
    /// The token cache of a managed identity (`BlobAuth::ManagedIdentity`).
    pub tokens: Option<&'a TokenSource>,
}

impl Blob<'_> {
    /// The URL of a container, or of an object in it, without credentials.
    pub fn url(&self, container: &str, key: Option<&str>) -> String {
        match key {
            Some(key) => format!("{}/{container}/{}", self.account_url, percent_encode(key, true)),
            None => format!("{}/{container}", self.account_url),
        }
    }

    pub async fn ensure_container(&self, container: &str) -> Result<(), ObjectError> {
        names::check_azure_container(container)?;
        let what = format!("Azure Blob create container '{container}'");
        let query = [("restype", "container".to_owned())];
        let response = self.call(&what, "PUT", container, None, &query, &[], Bytes::new()).await?;
        match response.status {
            201 => Ok(()),
            409 if response.header("x-ms-error-code") == Some("ContainerAlreadyExists") => Ok(()),
            _ => Err(failure(&what, &response)),
        }
    }

    pub async fn put(&self, container: &str, key: &str, body: Bytes, content_type: &str) -> Result<(), ObjectError> {
        names::check_azure_container(container)?;
        names::check_key(key)?;
        let what = format!("Azure Blob put in '{container}'");
        let tuning = &self.http.tuning;
        if body.len() <= tuning.multipart_threshold {
            let headers = [("x-ms-blob-type", "BlockBlob".to_owned()), ("Content-Type", content_type.to_owned())];
            let response = self.call(&what, "PUT", container, Some(key), &[], &headers, body).await?;
            return expect(&what, &response, 201);
        }
        // Blocks of equal size, at most 50,000 of them, each under the 4000 MiB limit.
        let block_size = tuning.part_size.max(body.len().div_ceil(50_000)).min(4000 << 20);
        let mut ids = Vec::new();
        for (index, start) in (0..body.len()).step_by(block_size).enumerate() {
            // Ids must all have the same length before encoding.
            let id = BASE64.encode(format!("block-{index:08}"));
            let part = body.slice(start..(start + block_size).min(body.len()));
            let query = [("comp", "block".to_owned()), ("blockid", id.clone())];
            let response = self.call(&what, "PUT", container, Some(key), &query, &[], part).await?;
            expect(&what, &response, 201)?;
            ids.push(id);
        }
        let mut list = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
        for id in &ids {
            list.push_str(&format!("<Latest>{}</Latest>", xml_escape(id)));
        }
        list.push_str("</BlockList>");
        let query = [("comp", "blocklist".to_owned())];
        let headers = [("x-ms-blob-content-type", content_type.to_owned()), ("Content-Type", "application/xml".into())];
        let response = self.call(&what, "PUT", container, Some(key), &query, &headers, Bytes::from(list)).await?;
        expect(&what, &response, 201)
    }

    pub async fn get(&self, container: &str, key: &str) -> Result<ObjectReader, ObjectError> {
        names::check_azure_container(container)?;
        names::check_key(key)?;
        let what = format!("Azure Blob get in '{container}'");
        let bearer = self.bearer().await?;
        let make = || self.request("GET", container, Some(key), &[], &[], Bytes::new(), bearer.as_deref());
        let response = self.http.open(&what, make).await?;
        if response.status != 200 {
            self.refused(response.status, response.header("x-ms-error-code"), bearer.as_deref()).await;
            return Err(stream_failure(&what, response).await);
        }
        Ok(ObjectReader::http(response, what))
    }

    pub async fn delete(&self, container: &str, key: &str) -> Result<(), ObjectError> {
        names::check_azure_container(container)?;
        names::check_key(key)?;
        let what = format!("Azure Blob delete in '{container}'");
        let response = self.call(&what, "DELETE", container, Some(key), &[], &[], Bytes::new()).await?;
        match response.status {
            202 | 404 => Ok(()),
            _ => Err(failure(&what, &response)),
        }
    }

    pub async fn list(&self, container: &str, prefix: &str) -> Result<Vec<String>, ObjectError> {
        names::check_azure_container(container)?;
        names::check_prefix(prefix)?;
        let what = format!("Azure Blob list in '{container}'");
        let page_size = self.http.tuning.list_page_size.clamp(1, 5000);
        let mut keys = Vec::new();
        let mut marker = String::new();
        loop {
            let mut query = vec![
                ("restype", "container".to_owned()),
                ("comp", "list".to_owned()),
                ("maxresults", page_size.to_string()),
            ];
            if !prefix.is_empty() {
                query.push(("prefix", prefix.to_owned()));
            }
            if !marker.is_empty() {
                query.push(("marker", marker.clone()));
            }
            let response = self.call(&what, "GET", container, None, &query, &[], Bytes::new()).await?;
            expect(&what, &response, 200)?;
            let xml = String::from_utf8_lossy(&response.body);
            for name in xml_elements(&xml, "Name") {
                // Names with characters XML cannot carry come percent-encoded.
                if name.attributes.contains("Encoded=\"true\"") {
                    let decoded = crate::text::percent_decode(&name.text)
                        .ok_or_else(|| ObjectError::Rejected(format!("{what}: an undecodable blob name")))?;
                    keys.push(decoded);
                } else {
                    keys.push(name.text);
                }
            }
            marker = xml_text(&xml, "NextMarker").unwrap_or_default();
            if marker.is_empty() {
                return Ok(keys);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn call(
        &self,
        what: &str,
        method: &str,
        container: &str,
        key: Option<&str>,
        query: &[(&str, String)],
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Response, ObjectError> {
        let body_len = body.len();
        let bearer = self.bearer().await?;
        let make = || self.request(method, container, key, query, headers, body.clone(), bearer.as_deref());
        let response = self.http.call(what, body_len, make).await?;
        self.refused(response.status, response.header("x-ms-error-code"), bearer.as_deref()).await;
        Ok(response)
    }

    /// The token of a request's attempts: the configured one, or the managed identity's current
    /// one (fetched once for all attempts, which follow each other within minutes).
    async fn bearer(&self) -> Result<Option<String>, ObjectError> {
        match (self.auth, self.tokens) {
            (BlobAuth::Bearer(token), _) => Ok(Some(token.clone())),
            (BlobAuth::ManagedIdentity(_), Some(tokens)) => tokens.token(self.http).await.map(Some),
            (BlobAuth::ManagedIdentity(_), None) => {
                Err(ObjectError::Invalid("Azure Blob: a managed identity without its token cache".into()))
            }
            _ => Ok(None),
        }
    }

    /// When the storage did not accept the token (`401`, or `403 AuthenticationFailed`: expired,
    /// revoked, or not valid here), a managed identity's cached token is dropped so that the next
    /// request fetches a new one. This request's error stands. Other refusals, such as `403
    /// AuthorizationPermissionMismatch` (the identity lacks a role), keep it: another token would
    /// not help.
    async fn refused(&self, status: u16, code: Option<&str>, bearer: Option<&str>) {
        let not_accepted = status == 401 || (status == 403 && code == Some("AuthenticationFailed"));
        if let (true, Some(tokens), Some(token)) = (not_accepted, self.tokens, bearer) {
            tokens.forget(token).await;
        }
    }

    /// A request with its credentials: a Shared Key signature, the SAS appended, or the token.
    #[allow(clippy::too_many_arguments)]
    fn request(
        &self,
        method: &str,
        container: &str,
        key: Option<&str>,
        query: &[(&str, String)],
        headers: &[(&str, String)],
        body: Bytes,
        bearer: Option<&str>,
    ) -> Result<Request, ObjectError> {
        let mut url = self.url(container, key);
        let mut all_headers: Vec<(String, String)> = vec![
            ("x-ms-date".into(), http_date(time::OffsetDateTime::now_utc())),
            ("x-ms-version".into(), VERSION.into()),
        ];
        all_headers.extend(headers.iter().map(|(n, v)| (n.to_string(), v.clone())));
        let mut query_string = crate::text::query_string(query);
        match self.auth {
            BlobAuth::SharedKey { account, key: account_key } => {
                let signature = shared_key_signature(
                    account,
                    account_key,
                    method,
                    url_path(&url),
                    query,
                    &all_headers,
                    body.len(),
                )?;
                all_headers.push(("Authorization".into(), format!("SharedKey {account}:{signature}")));
            }
            BlobAuth::Sas(sas) => {
                let sas = sas.trim_start_matches('?');
                if !query_string.is_empty() {
                    query_string.push('&');
                }
                query_string.push_str(sas);
            }
            BlobAuth::Bearer(_) | BlobAuth::ManagedIdentity(_) => {
                let token =
                    bearer.ok_or_else(|| ObjectError::Invalid("Azure Blob: no token for the request".into()))?;
                all_headers.push(("Authorization".into(), format!("Bearer {token}")));
            }
        }
        if !query_string.is_empty() {
            url.push('?');
            url.push_str(&query_string);
        }
        let mut request = Request::new(method, &url).body(body);
        for (name, value) in all_headers {
            request = request.header(name, value);
        }
        Ok(request)
    }
}

fn expect(what: &str, response: &Response, status: u16) -> Result<(), ObjectError> {
    if response.status == status {
        Ok(())
    } else {
        Err(failure(what, response))
    }
}

/// The Shared Key signature of a request: HMAC-SHA256, with the account key, of the verb, the
/// standard headers Azure lists (of which only Content-Length and Content-Type are ever sent
/// here; `x-ms-date` stands for Date), the `x-ms-` headers in order of name, and the resource:
/// `/{account}{encoded path}` followed by each query parameter, decoded, in order of name.
#[allow(clippy::too_many_arguments)]
pub(crate) fn shared_key_signature(
    account: &str,
    account_key: &str,
    method: &str,
    path: &str,
    query: &[(&str, String)],
    headers: &[(String, String)],
    body_len: usize,
) -> Result<String, ObjectError> {
    let key = BASE64
        .decode(account_key.trim())
        .map_err(|_| ObjectError::Invalid("the Azure storage account key is not valid base64".into()))?;
    let header =
        |name: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).unwrap_or("");
    // Since version 2015-02-21 an empty body is signed as an empty length, not "0".
    let length = if body_len == 0 { String::new() } else { body_len.to_string() };
    let mut ms_headers: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| n.to_ascii_lowercase().starts_with("x-ms-"))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect();
    ms_headers.sort();
    let mut string_to_sign = format!("{method}\n\n\n{length}\n\n{}\n\n\n\n\n\n\n", header("Content-Type"),);
    for (name, value) in &ms_headers {
        string_to_sign.push_str(&format!("{name}:{value}\n"));
    }
    string_to_sign.push_str(&format!("/{account}{path}"));
    let mut params: Vec<(String, &str)> = query.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.as_str())).collect();
    params.sort();
    for (name, value) in params {
        string_to_sign.push_str(&format!("\n{name}:{value}"));
    }
    Ok(BASE64.encode(hmac_sha256(&key, string_to_sign.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_urls() {
        assert_eq!(url_path("http://127.0.0.1:10000/devstoreaccount1/c/k%20x?comp=list"), "/devstoreaccount1/c/k%20x");
        assert_eq!(url_path("https://a.blob.core.windows.net/c"), "/c");
        assert_eq!(url_path("https://a.blob.core.windows.net"), "");
    }

    #[test]
    fn shared_key_string_to_sign() {
        // Pins the string to sign as the Blob REST documentation lays it out (Azurite checks the
        // real thing in tests/backends).
        let key = BASE64.encode(b"key");
        let headers = vec![
            ("x-ms-version".to_owned(), VERSION.to_owned()),
            ("x-ms-date".to_owned(), "Fri, 24 May 2013 00:00:00 GMT".to_owned()),
            ("Content-Type".to_owned(), "application/fhir+ndjson".to_owned()),
            ("x-ms-blob-type".to_owned(), "BlockBlob".to_owned()),
        ];
        let query = [("restype", "container".to_owned()), ("comp", "list".to_owned())];
        let signature = shared_key_signature("acct", &key, "PUT", "/acct/c/k", &query, &headers, 5).unwrap();
        let expected = "PUT\n\n\n5\n\napplication/fhir+ndjson\n\n\n\n\n\n\n\
            x-ms-blob-type:BlockBlob\nx-ms-date:Fri, 24 May 2013 00:00:00 GMT\nx-ms-version:2021-08-06\n\
            /acct/acct/c/k\ncomp:list\nrestype:container";
        assert_eq!(signature, BASE64.encode(hmac_sha256(b"key", expected.as_bytes())));
        assert!(matches!(
            shared_key_signature("acct", "not base64!", "GET", "/", &[], &headers, 0),
            Err(ObjectError::Invalid(m)) if !m.contains("not base64!")
        ));
    }
}
