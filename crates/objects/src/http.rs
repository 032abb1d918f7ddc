//! Sending requests to a storage service: the time each may take, what to do with transient
//! failures, and the error code of a failed answer.

use std::time::Duration;

use fhirside_fetch::{Client, FetchError, Request, Response, StreamingResponse};

use crate::errors::{from_fetch, from_status};
use crate::{text, ObjectError, Tuning};

/// The largest answer read whole (listings of 1000 keys of up to 1 KiB each, error bodies).
const MAX_ANSWER_BYTES: usize = 16 << 20;

#[derive(Clone)]
pub(crate) struct Http {
    pub client: Client,
    pub tuning: Tuning,
}

impl Http {
    /// Sends the request `make` builds and reads the whole answer, trying again after transient
    /// failures (`make` is called for each attempt: signatures carry the time). Answers of any
    /// status are returned; the caller judges them.
    pub async fn call(
        &self,
        what: &str,
        body_len: usize,
        make: impl Fn() -> Result<Request, ObjectError>,
    ) -> Result<Response, ObjectError> {
        let timeout = self.timeout_for(body_len);
        let mut attempt = 0;
        loop {
            let request = make()?.timeout(timeout).max_response_bytes(MAX_ANSWER_BYTES);
            let outcome = self.client.send(request).await;
            if attempt < self.tuning.retries && should_retry(outcome.as_ref().map(|r| r.status)) {
                attempt += 1;
                tokio::time::sleep(backoff(attempt)).await;
                continue;
            }
            return outcome.map_err(|e| from_fetch(what, e));
        }
    }

    /// Like [`call`](Self::call), but returns once the answer's head has arrived; its body is
    /// then read part by part, each part within the request timeout.
    pub async fn open(
        &self,
        what: &str,
        make: impl Fn() -> Result<Request, ObjectError>,
    ) -> Result<StreamingResponse, ObjectError> {
        let timeout = self.tuning.request_timeout;
        let mut attempt = 0;
        loop {
            let request = make()?.timeout(timeout).idle_timeout(timeout);
            let outcome = self.client.send_streaming(request).await;
            if attempt < self.tuning.retries && should_retry(outcome.as_ref().map(|r| r.status)) {
                attempt += 1;
                tokio::time::sleep(backoff(attempt)).await;
                continue;
            }
            return outcome.map_err(|e| from_fetch(what, e));
        }
    }

    /// The request timeout, plus the time an upload of `body_len` bytes may take at the slowest
    /// rate accepted.
    fn timeout_for(&self, body_len: usize) -> Duration {
        let rate = self.tuning.upload_bytes_per_second.max(1);
        self.tuning.request_timeout + Duration::from_secs((body_len / rate) as u64)
    }
}

/// Network failures, timeouts, throttling and server errors are worth another try; a refusal
/// (bad URL, TLS, 4xx) is not.
fn should_retry(outcome: Result<u16, &FetchError>) -> bool {
    match outcome {
        Ok(status) => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
        Err(FetchError::Connect { .. } | FetchError::Timeout { .. } | FetchError::Protocol { .. }) => true,
        Err(_) => false,
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250 << (2 * attempt.min(4)))
}

/// The error for an answer that is not the success expected: the service's error code from the
/// `x-ms-error-code` header (Azure) or the body's `<Code>` (both).
pub(crate) fn failure(what: &str, response: &Response) -> ObjectError {
    let from_body = || text::xml_text(&String::from_utf8_lossy(&response.body), "Code");
    let code = response.header("x-ms-error-code").map(str::to_owned).or_else(from_body);
    from_status(what, response.status, code.as_deref())
}

/// The same for a streamed answer, whose (small) error body is read first.
pub(crate) async fn stream_failure(what: &str, mut response: StreamingResponse) -> ObjectError {
    let body = response.read_to_end(64 << 10).await.unwrap_or_default();
    let answer = Response { status: response.status, headers: std::mem::take(&mut response.headers), body };
    failure(what, &answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_transient_failures_only() {
        assert!(should_retry(Ok(503)));
        assert!(should_retry(Ok(429)));
        assert!(!should_retry(Ok(200)));
        assert!(!should_retry(Ok(404)));
        assert!(!should_retry(Ok(403)));
        let insecure = FetchError::InsecureUrl { url: "http://example.org/".into() };
        assert!(!should_retry(Err(&insecure)));
        let refused = FetchError::Connect { url: "http://127.0.0.1:1/".into(), reason: "refused".into() };
        assert!(should_retry(Err(&refused)));
        assert_eq!(backoff(1), Duration::from_millis(1000));
    }

    #[test]
    fn failures_carry_the_service_code() {
        let response = Response {
            status: 403,
            headers: vec![],
            body: b"<Error><Code>SignatureDoesNotMatch</Code><StringToSign>secret</StringToSign></Error>".to_vec(),
        };
        let error = failure("S3 put in 'b'", &response);
        assert_eq!(error, ObjectError::Denied("S3 put in 'b': HTTP 403 SignatureDoesNotMatch".into()));
        let response = Response {
            status: 404,
            headers: vec![("x-ms-error-code".into(), "BlobNotFound".into())],
            body: Vec::new(),
        };
        assert!(matches!(failure("get", &response), ObjectError::NotFound(_)));
    }
}
