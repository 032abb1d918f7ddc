//! The JetStream API requests this client makes — stream and consumer info and creation — over a
//! [`Connection`], with the API's error JSON (`{"error": {"code", "err_code", "description"}}`)
//! turned into [`Error`]s of kind [`ErrorKind::Api`] that name the operation.

use std::time::Duration;

use serde_json::{json, Value};

use crate::config::{subject_covers, Config};
use crate::connection::Connection;
use crate::error::{Error, ErrorKind};

/// How long an API request may take; the server's own JetStream API timeout is 5 s.
const API_TIMEOUT: Duration = Duration::from_secs(10);

// The API's `err_code`s this client reacts to (nats-server's `server/errors.json`).
pub const STREAM_NOT_FOUND: u64 = 10059;
pub const STREAM_NAME_IN_USE: u64 = 10058;
pub const CONSUMER_NOT_FOUND: u64 = 10014;

/// How the durable consumer is created when it does not exist. An existing consumer is used as it
/// is, so an operator may tune it (and a test may shorten `ack_wait`).
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// How long a delivered message may stay unacknowledged before JetStream delivers it again.
    /// 30 s: storing a batch of 1,000 takes well under a second, and after a crash the messages come
    /// back within half a minute.
    pub ack_wait: Duration,
    /// How many delivered, unacknowledged messages the consumer allows: room for a batch of 1,000 to
    /// each of several replicas pulling from the same durable consumer.
    pub max_ack_pending: i64,
}

impl Default for ConsumerSettings {
    fn default() -> ConsumerSettings {
        ConsumerSettings { ack_wait: Duration::from_secs(30), max_ack_pending: 20_000 }
    }
}

/// Makes a JetStream API request and returns its JSON answer, or the API's error.
pub async fn api(connection: &mut Connection, subject: &str, body: &Value) -> Result<Value, Error> {
    let msg = connection.request(subject, body.to_string().as_bytes(), API_TIMEOUT).await?;
    if let Some(status) = msg.status {
        return Err(match status.code {
            503 => Error::api(
                format!("JetStream is not enabled on the server or for this account (no responders to {subject})"),
                None,
            ),
            code => Error::api(format!("{subject} answered with status {code} {}", status.description), None),
        });
    }
    let answer: Value = serde_json::from_slice(&msg.payload)
        .map_err(|e| Error::protocol(format!("{subject} answered with something other than JSON: {e}")))?;
    match answer.get("error") {
        Some(error) => Err(api_error(subject, error)),
        None => Ok(answer),
    }
}

/// `{"code": 400, "err_code": 10065, "description": "subjects overlap with an existing stream"}` as
/// an [`Error`] naming the request.
pub fn api_error(context: &str, error: &Value) -> Error {
    let description = error.get("description").and_then(Value::as_str).unwrap_or("no description");
    let code = error.get("code").and_then(Value::as_u64);
    let err_code = error.get("err_code").and_then(Value::as_u64);
    let codes = match (code, err_code) {
        (Some(code), Some(err_code)) => format!(" (code {code}, err_code {err_code})"),
        (Some(code), None) => format!(" (code {code})"),
        _ => String::new(),
    };
    Error::api(format!("{context} failed: {description}{codes}"), err_code)
}

/// The stream's info, or `None` when it does not exist.
pub async fn stream_info(connection: &mut Connection, stream: &str) -> Result<Option<Value>, Error> {
    match api(connection, &format!("$JS.API.STREAM.INFO.{stream}"), &json!({})).await {
        Ok(info) => Ok(Some(info)),
        Err(error) if error.api_code() == Some(STREAM_NOT_FOUND) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Creates the stream (file storage, `subjects: [subject]`) unless it exists, and checks that an
/// existing one captures the subject: otherwise publishing would fail and a consumer filtering on
/// it would never see a message.
pub async fn ensure_stream(connection: &mut Connection, config: &Config) -> Result<(), Error> {
    let stream = &config.stream;
    let info = match stream_info(connection, stream).await? {
        Some(info) => info,
        None => {
            let create = json!({
                "name": stream, "subjects": [config.subject], "storage": "file",
                "retention": "limits", "discard": "old", "num_replicas": 1,
            });
            match api(connection, &format!("$JS.API.STREAM.CREATE.{stream}"), &create).await {
                Ok(info) => info,
                // Another process created it in between (with a different configuration).
                Err(error) if error.api_code() == Some(STREAM_NAME_IN_USE) => {
                    stream_info(connection, stream).await?.ok_or(error)?
                }
                Err(error) => return Err(error),
            }
        }
    };
    let subjects: Vec<&str> =
        info["config"]["subjects"].as_array().map(|s| s.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    if !subjects.iter().any(|s| subject_covers(s, &config.subject)) {
        return Err(Error::config(format!(
            "the stream {stream} exists but does not capture the subject {} (its subjects: {subjects:?})",
            config.subject
        )));
    }
    Ok(())
}

/// Creates the durable pull consumer unless it exists; an existing one must be a pull consumer
/// filtering on the configured subject, or this client would not get what it was configured for.
///
/// Acknowledgement is explicit, one ack per message, rather than `all` (one ack for everything up
/// to a sequence): with several replicas pulling from one durable consumer, or a redelivered message
/// in a batch, an `all` ack would acknowledge messages another pull holds and has not stored yet.
/// Explicit acks cost one small PUB each, written together in one buffer.
pub async fn ensure_consumer(
    connection: &mut Connection,
    config: &Config,
    settings: &ConsumerSettings,
) -> Result<(), Error> {
    let (stream, consumer) = (&config.stream, &config.consumer);
    let info_subject = format!("$JS.API.CONSUMER.INFO.{stream}.{consumer}");
    let info = match api(connection, &info_subject, &json!({})).await {
        Ok(info) => info,
        Err(error) if error.api_code() == Some(CONSUMER_NOT_FOUND) => {
            let mut consumer_config = json!({
                "durable_name": consumer,
                "deliver_policy": "all",
                "ack_policy": "explicit",
                "ack_wait": nanos(settings.ack_wait),
                "max_ack_pending": settings.max_ack_pending,
                "filter_subject": config.subject,
                "replay_policy": "instant",
            });
            // `CONSUMER.CREATE.<stream>.<name>` exists since 2.9 and is what newer servers expect;
            // `CONSUMER.DURABLE.CREATE` is the form older ones know.
            let subject = if connection.version() >= (2, 9, 0) {
                consumer_config["name"] = consumer.as_str().into();
                format!("$JS.API.CONSUMER.CREATE.{stream}.{consumer}")
            } else {
                format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{consumer}")
            };
            let body = json!({ "stream_name": stream, "config": consumer_config });
            match api(connection, &subject, &body).await {
                Ok(info) => info,
                // Another replica may have created it in between: use theirs if it is there.
                Err(error) if error.kind() == ErrorKind::Api => {
                    match api(connection, &info_subject, &json!({})).await {
                        Ok(info) => info,
                        Err(_) => return Err(error),
                    }
                }
                Err(error) => return Err(error),
            }
        }
        Err(error) => return Err(error),
    };
    let existing = &info["config"];
    if existing.get("deliver_subject").and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
        return Err(Error::config(format!(
            "the consumer {consumer} of stream {stream} is a push consumer, not a pull consumer"
        )));
    }
    let filter = existing.get("filter_subject").and_then(Value::as_str).unwrap_or("");
    if filter != config.subject {
        return Err(Error::config(format!(
            "the consumer {consumer} of stream {stream} filters on {filter:?}, not on the configured subject {}",
            config.subject
        )));
    }
    Ok(())
}

pub fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
