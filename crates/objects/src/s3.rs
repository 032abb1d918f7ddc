//! S3 (AWS, and servers that speak its API such as moto or MinIO): CreateBucket, PutObject or a
//! multipart upload, GetObject, DeleteObject and ListObjectsV2, signed with Signature Version 4.
//!
//! Objects are addressed path-style (`{endpoint}/{bucket}/{key}`, what emulators and many
//! S3-compatible servers want) or virtual-hosted (`https://{bucket}.{endpoint host}/{key}`, what
//! AWS prefers).

use bytes::Bytes;
use fhirside_fetch::{Request, Response};

use crate::http::{failure, stream_failure, Http};
use crate::reader::ObjectReader;
use crate::text::{
    amz_date, hex, hmac_sha256, percent_encode, sha256_hex, url_path, xml_elements, xml_escape, xml_text,
};
use crate::{names, ObjectError, S3Auth};

/// S3's smallest part (but the last) of a multipart upload.
const MIN_PART: usize = 5 << 20;
const MAX_PARTS: usize = 10_000;

pub(crate) struct S3<'a> {
    /// Without a trailing slash.
    pub endpoint: &'a str,
    pub region: &'a str,
    pub auth: &'a S3Auth,
    pub path_style: bool,
    pub http: &'a Http,
}

impl S3<'_> {
    /// The URL of a bucket (with a trailing `/` when virtual-hosted) or of an object.
    pub fn url(&self, bucket: &str, key: Option<&str>) -> String {
        let key = key.map(|k| percent_encode(k, true)).unwrap_or_default();
        if self.path_style {
            return match key.is_empty() {
                true => format!("{}/{bucket}", self.endpoint),
                false => format!("{}/{bucket}/{key}", self.endpoint),
            };
        }
        let (scheme, rest) = self.endpoint.split_once("://").unwrap_or(("https", self.endpoint));
        format!("{scheme}://{bucket}.{rest}/{key}")
    }

    pub async fn ensure_container(&self, bucket: &str) -> Result<(), ObjectError> {
        names::check_s3_bucket(bucket)?;
        let what = format!("S3 create bucket '{bucket}'");
        // Outside us-east-1 a bucket is created where its request says, and must say so.
        let body = if self.region == "us-east-1" {
            Bytes::new()
        } else {
            Bytes::from(format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                xml_escape(self.region)
            ))
        };
        let response = self.call(&what, "PUT", bucket, None, &[], &[], body).await?;
        let owned =
            || xml_text(&String::from_utf8_lossy(&response.body), "Code").as_deref() == Some("BucketAlreadyOwnedByYou");
        match response.status {
            200 => Ok(()),
            409 if owned() => Ok(()),
            _ => Err(failure(&what, &response)),
        }
    }

    pub async fn put(&self, bucket: &str, key: &str, body: Bytes, content_type: &str) -> Result<(), ObjectError> {
        names::check_s3_bucket(bucket)?;
        names::check_key(key)?;
        let what = format!("S3 put in '{bucket}'");
        if body.len() <= self.http.tuning.multipart_threshold {
            let headers = [("content-type", content_type.to_owned())];
            let response = self.call(&what, "PUT", bucket, Some(key), &[], &headers, body).await?;
            return expect(&what, &response, 200);
        }
        let headers = [("content-type", content_type.to_owned())];
        let query = [("uploads", String::new())];
        let response = self.call(&what, "POST", bucket, Some(key), &query, &headers, Bytes::new()).await?;
        expect(&what, &response, 200)?;
        let upload_id = xml_text(&String::from_utf8_lossy(&response.body), "UploadId")
            .filter(|id| !id.is_empty())
            .ok_or_else(|| ObjectError::Rejected(format!("{what}: no UploadId in the answer")))?;
        match self.upload_parts(&what, bucket, key, &upload_id, body).await {
            Ok(()) => Ok(()),
            Err(error) => {
                // Parts of an unfinished upload are stored (and billed) until aborted.
                let query = [("uploadId", upload_id.clone())];
                let _ = self.call(&what, "DELETE", bucket, Some(key), &query, &[], Bytes::new()).await;
                Err(error)
            }
        }
    }

    async fn upload_parts(
        &self,
        what: &str,
        bucket: &str,
        key: &str,
        upload_id: &str,
        body: Bytes,
    ) -> Result<(), ObjectError> {
        let part_size = self.http.tuning.part_size.max(MIN_PART).max(body.len().div_ceil(MAX_PARTS));
        let mut complete = String::from("<CompleteMultipartUpload>");
        for (index, start) in (0..body.len()).step_by(part_size).enumerate() {
            let number = index + 1;
            let part = body.slice(start..(start + part_size).min(body.len()));
            let query = [("partNumber", number.to_string()), ("uploadId", upload_id.to_owned())];
            let response = self.call(what, "PUT", bucket, Some(key), &query, &[], part).await?;
            expect(what, &response, 200)?;
            let etag = response
                .header("etag")
                .ok_or_else(|| ObjectError::Rejected(format!("{what}: no ETag for part {number}")))?;
            complete
                .push_str(&format!("<Part><PartNumber>{number}</PartNumber><ETag>{}</ETag></Part>", xml_escape(etag)));
        }
        complete.push_str("</CompleteMultipartUpload>");
        let query = [("uploadId", upload_id.to_owned())];
        let headers = [("content-type", "application/xml".to_owned())];
        let response = self.call(what, "POST", bucket, Some(key), &query, &headers, Bytes::from(complete)).await?;
        expect(what, &response, 200)?;
        // The completion can fail after its 200 has been sent: the body then holds an error.
        let answer = String::from_utf8_lossy(&response.body);
        if answer.contains("<Error>") {
            let code = xml_text(&answer, "Code");
            return Err(crate::errors::from_status(what, 500, code.as_deref()));
        }
        Ok(())
    }

    pub async fn get(&self, bucket: &str, key: &str) -> Result<ObjectReader, ObjectError> {
        names::check_s3_bucket(bucket)?;
        names::check_key(key)?;
        let what = format!("S3 get in '{bucket}'");
        let empty = sha256_hex(b"");
        let response =
            self.http.open(&what, || self.request("GET", bucket, Some(key), &[], &[], Bytes::new(), &empty)).await?;
        if response.status != 200 {
            return Err(stream_failure(&what, response).await);
        }
        Ok(ObjectReader::http(response, what))
    }

    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), ObjectError> {
        names::check_s3_bucket(bucket)?;
        names::check_key(key)?;
        let what = format!("S3 delete in '{bucket}'");
        let response = self.call(&what, "DELETE", bucket, Some(key), &[], &[], Bytes::new()).await?;
        match response.status {
            200 | 204 | 404 => Ok(()),
            _ => Err(failure(&what, &response)),
        }
    }

    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, ObjectError> {
        names::check_s3_bucket(bucket)?;
        names::check_prefix(prefix)?;
        let what = format!("S3 list in '{bucket}'");
        let page_size = self.http.tuning.list_page_size.clamp(1, 1000);
        let mut keys = Vec::new();
        let mut token = String::new();
        loop {
            let mut query = vec![("list-type", "2".to_owned()), ("max-keys", page_size.to_string())];
            if !prefix.is_empty() {
                query.push(("prefix", prefix.to_owned()));
            }
            if !token.is_empty() {
                query.push(("continuation-token", token.clone()));
            }
            let response = self.call(&what, "GET", bucket, None, &query, &[], Bytes::new()).await?;
            expect(&what, &response, 200)?;
            let xml = String::from_utf8_lossy(&response.body);
            keys.extend(xml_elements(&xml, "Key").into_iter().map(|e| e.text));
            token = xml_text(&xml, "NextContinuationToken").unwrap_or_default();
            let truncated = xml_text(&xml, "IsTruncated").as_deref() == Some("true");
            if !truncated {
                return Ok(keys);
            }
            if token.is_empty() {
                return Err(ObjectError::Rejected(format!("{what}: a truncated listing without a continuation token")));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn call(
        &self,
        what: &str,
        method: &str,
        bucket: &str,
        key: Option<&str>,
        query: &[(&str, String)],
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Response, ObjectError> {
        // Hashed once, not for each attempt: parts are up to hundreds of MiB.
        let payload_hash = sha256_hex(&body);
        let body_len = body.len();
        self.http
            .call(what, body_len, || self.request(method, bucket, key, query, headers, body.clone(), &payload_hash))
            .await
    }

    /// A request signed with Signature Version 4 (the payload's SHA-256 included).
    #[allow(clippy::too_many_arguments)]
    fn request(
        &self,
        method: &str,
        bucket: &str,
        key: Option<&str>,
        query: &[(&str, String)],
        headers: &[(&str, String)],
        body: Bytes,
        payload_hash: &str,
    ) -> Result<Request, ObjectError> {
        let base = self.url(bucket, key);
        let host = fhirside_fetch::host_header(&base).map_err(|e| ObjectError::Invalid(format!("S3 endpoint: {e}")))?;
        let path = match url_path(&base) {
            "" => "/",
            path => path,
        };
        let now = amz_date(time::OffsetDateTime::now_utc());
        let mut signed: Vec<(String, String)> = vec![
            ("host".into(), host),
            ("x-amz-content-sha256".into(), payload_hash.to_owned()),
            ("x-amz-date".into(), now.clone()),
        ];
        if let Some(token) = &self.auth.session_token {
            signed.push(("x-amz-security-token".into(), token.clone()));
        }
        signed.extend(headers.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_owned())));
        signed.sort();
        let mut pairs: Vec<(String, String)> =
            query.iter().map(|(n, v)| (percent_encode(n, false), percent_encode(v, false))).collect();
        pairs.sort();
        let canonical_query: Vec<String> = pairs.iter().map(|(n, v)| format!("{n}={v}")).collect();
        let canonical_query = canonical_query.join("&");
        let authorization =
            signature_v4(self.auth, self.region, method, path, &canonical_query, &signed, payload_hash, &now);
        let url = if canonical_query.is_empty() { base } else { format!("{base}?{canonical_query}") };
        let mut request = Request::new(method, &url).body(body).header("Authorization", authorization);
        for (name, value) in signed.into_iter().filter(|(name, _)| name != "host") {
            request = request.header(name, value);
        }
        Ok(request)
    }
}

/// The `Authorization` header of Signature Version 4: the canonical request (method, encoded
/// path, sorted query, the signed headers and the payload hash) is hashed into a string to sign,
/// which is signed with a key derived from the secret for the day, region and service.
#[allow(clippy::too_many_arguments)]
pub(crate) fn signature_v4(
    auth: &S3Auth,
    region: &str,
    method: &str,
    path: &str,
    canonical_query: &str,
    headers: &[(String, String)],
    payload_hash: &str,
    amz_date: &str,
) -> String {
    let day = &amz_date[..8];
    let canonical_headers: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let signed_headers: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    let signed_headers = signed_headers.join(";");
    let canonical_request =
        format!("{method}\n{path}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{payload_hash}");
    let scope = format!("{day}/{region}/s3/aws4_request");
    let string_to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", sha256_hex(canonical_request.as_bytes()));
    let mut key = hmac_sha256(format!("AWS4{}", auth.secret_access_key).as_bytes(), day.as_bytes());
    for part in [region, "s3", "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    let signature = hex(&hmac_sha256(&key, string_to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        auth.access_key_id
    )
}

fn expect(what: &str, response: &Response, status: u16) -> Result<(), ObjectError> {
    if response.status == status {
        Ok(())
    } else {
        Err(failure(what, response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's documented example "GET Object" of the Signature V4 for S3 pages (the example
    /// credentials, bucket `examplebucket`, a ranged GET of `test.txt`).
    #[test]
    fn signs_like_the_aws_example() {
        let auth = S3Auth {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        let empty = sha256_hex(b"");
        let headers = vec![
            ("host".to_owned(), "examplebucket.s3.amazonaws.com".to_owned()),
            ("range".to_owned(), "bytes=0-9".to_owned()),
            ("x-amz-content-sha256".to_owned(), empty.clone()),
            ("x-amz-date".to_owned(), "20130524T000000Z".to_owned()),
        ];
        let authorization =
            signature_v4(&auth, "us-east-1", "GET", "/test.txt", "", &headers, &empty, "20130524T000000Z");
        assert_eq!(
            authorization,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }
}
