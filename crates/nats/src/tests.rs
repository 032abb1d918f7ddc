//! Against a real nats-server: the shared one at 127.0.0.1:4222 (or `NATS_URL`), with names no other
//! test uses, or a private one (`testing::NatsServer`) where a test restarts it or needs
//! authentication. Malformed input comes from a fake server on a tokio TcpListener.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::connection::Connection;
use crate::jetstream::{self, ConsumerSettings};
use crate::testing::{self, NatsServer};
use crate::{ensure_stream, publish, Config, ErrorKind, Subscriber};

/// Every step of a test is bounded, so that a hang is a failure rather than a stuck suite.
async fn within<T>(seconds: u64, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(seconds), future).await.expect("the step finished in time")
}

/// Deletes a test's stream when the test ends, passed or failed, so the shared server does not fill
/// with leftovers. (A thread of its own: the test's runtime may be gone or panicking.)
struct DeleteOnDrop(Config);

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let config = self.0.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let _ = runtime.block_on(testing::delete_stream(&config));
        })
        .join();
    }
}

fn payloads(range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
    range.map(|i| format!("m{i}").into_bytes()).collect()
}

fn texts(messages: &[crate::Message]) -> Vec<String> {
    messages.iter().map(|m| String::from_utf8(m.payload.clone()).unwrap()).collect()
}

fn short_ack_wait() -> ConsumerSettings {
    ConsumerSettings { ack_wait: Duration::from_secs(1), ..ConsumerSettings::default() }
}

/// Takes batches (acknowledging each) until `count` messages have come.
async fn consume(subscriber: &mut Subscriber, count: usize, max: usize) -> Vec<String> {
    let mut received = Vec::new();
    while received.len() < count {
        let batch = within(10, subscriber.next_batch(max, Duration::from_millis(50))).await.unwrap();
        assert!(!batch.is_empty() && batch.len() <= max, "a batch of {}", batch.len());
        received.extend(texts(&batch));
        within(10, subscriber.ack()).await.unwrap();
    }
    received
}

/// Nothing is delivered for `seconds` (longer than the test consumers' ack_wait).
async fn assert_nothing_more(subscriber: &mut Subscriber, seconds: u64) {
    let next = tokio::time::timeout(Duration::from_secs(seconds), subscriber.next_batch(10, Duration::ZERO)).await;
    assert!(next.is_err(), "unexpected delivery: {:?}", next.map(|b| b.map(|b| texts(&b))));
}

async fn stream_info(config: &Config) -> Option<Value> {
    let mut connection = Connection::open(config).await.unwrap();
    jetstream::stream_info(&mut connection, &config.stream).await.unwrap()
}

async fn consumer_info(config: &Config) -> Value {
    let mut connection = Connection::open(config).await.unwrap();
    let subject = format!("$JS.API.CONSUMER.INFO.{}.{}", config.stream, config.consumer);
    jetstream::api(&mut connection, &subject, &json!({})).await.unwrap()
}

#[tokio::test]
async fn publishes_n_and_consumes_exactly_n_in_order() {
    let config = testing::unique_config(&testing::shared_url());
    let _delete = DeleteOnDrop(config.clone());
    within(10, ensure_stream(&config)).await.unwrap();
    within(30, publish(&config, &payloads(0..2500))).await.unwrap();
    let mut subscriber = within(10, Subscriber::connect(&config)).await.unwrap();
    let received = consume(&mut subscriber, 2500, 1000).await;
    assert_eq!(received, texts_of(0..2500));
    assert_nothing_more(&mut subscriber, 1).await;
}

fn texts_of(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("m{i}")).collect()
}

#[tokio::test]
async fn messages_carry_their_subject() {
    let mut config = testing::unique_config(&testing::shared_url());
    let _delete = DeleteOnDrop(config.clone());
    let base = config.subject.clone();
    config.subject = format!("{base}.*");
    within(10, ensure_stream(&config)).await.unwrap();
    let mut subscriber = within(10, Subscriber::connect(&config)).await.unwrap();
    let publisher = Config { subject: format!("{base}.device7"), ..config.clone() };
    within(10, publish(&publisher, &payloads(0..1))).await.unwrap();
    let batch = within(10, subscriber.next_batch(10, Duration::ZERO)).await.unwrap();
    assert_eq!(batch, vec![crate::Message { subject: format!("{base}.device7"), payload: b"m0".to_vec() }]);
    subscriber.ack().await.unwrap();
}

#[tokio::test]
async fn an_unacknowledged_batch_is_delivered_again_and_an_acknowledged_one_is_not() {
    let config = testing::unique_config(&testing::shared_url());
    let _delete = DeleteOnDrop(config.clone());
    within(10, ensure_stream(&config)).await.unwrap();
    within(10, publish(&config, &payloads(0..10))).await.unwrap();
    let mut first = within(10, Subscriber::connect_with(&config, &short_ack_wait())).await.unwrap();
    let acked = within(10, first.next_batch(4, Duration::from_millis(50))).await.unwrap();
    assert_eq!(texts(&acked), texts_of(0..4));
    within(10, first.ack()).await.unwrap();
    let unacked = within(10, first.next_batch(4, Duration::from_millis(50))).await.unwrap();
    assert_eq!(texts(&unacked), texts_of(4..8));
    drop(first);

    // m8 and m9 come at once, m4..m7 once their ack_wait (1 s) has passed; m0..m3 never.
    let mut second = within(10, Subscriber::connect(&config)).await.unwrap();
    let received: BTreeSet<String> = consume(&mut second, 6, 10).await.into_iter().collect();
    assert_eq!(received, texts_of(4..10).into_iter().collect());
    assert_nothing_more(&mut second, 3).await;
}

#[tokio::test]
async fn next_batch_before_ack_is_a_usage_error() {
    let config = testing::unique_config(&testing::shared_url());
    let _delete = DeleteOnDrop(config.clone());
    within(10, ensure_stream(&config)).await.unwrap();
    within(10, publish(&config, &payloads(0..2))).await.unwrap();
    let mut subscriber = within(10, Subscriber::connect(&config)).await.unwrap();
    within(10, subscriber.next_batch(1, Duration::ZERO)).await.unwrap();
    let error = subscriber.next_batch(1, Duration::ZERO).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Usage, "{error}");
    // Still usable: acknowledge and go on.
    subscriber.ack().await.unwrap();
    assert_eq!(consume(&mut subscriber, 1, 1).await, ["m1"]);
}

#[tokio::test]
async fn messages_published_before_the_consumer_existed_are_delivered() {
    let config = testing::unique_config(&testing::shared_url());
    let _delete = DeleteOnDrop(config.clone());
    within(10, ensure_stream(&config)).await.unwrap();
    within(10, publish(&config, &payloads(0..3))).await.unwrap();
    let mut subscriber = within(10, Subscriber::connect(&config)).await.unwrap();
    within(10, publish(&config, &payloads(3..5))).await.unwrap();
    assert_eq!(consume(&mut subscriber, 5, 100).await, texts_of(0..5));
}

#[tokio::test]
async fn stream_and_consumer_are_created_when_missing_and_reused_when_present() {
    let config = testing::unique_config(&testing::shared_url());
    let _delete = DeleteOnDrop(config.clone());
    assert!(stream_info(&config).await.is_none());
    let mut first = within(10, Subscriber::connect(&config)).await.unwrap();
    let stream = stream_info(&config).await.expect("the stream was created");
    assert_eq!(stream["config"]["subjects"], json!([config.subject]));
    assert_eq!(stream["config"]["storage"], "file");
    let consumer = consumer_info(&config).await;
    assert_eq!(consumer["config"]["durable_name"], json!(config.consumer));
    assert_eq!(consumer["config"]["filter_subject"], json!(config.subject));
    assert_eq!(consumer["config"]["ack_policy"], "explicit");
    assert_eq!(consumer["config"]["deliver_policy"], "all");

    within(10, publish(&config, &payloads(0..3))).await.unwrap();
    assert_eq!(consume(&mut first, 1, 1).await, ["m0"]);
    drop(first);
    within(10, ensure_stream(&config)).await.unwrap();
    // The same consumer, with its acknowledged position: not a new one that starts over.
    let mut second = within(10, Subscriber::connect(&config)).await.unwrap();
    assert_eq!(consume(&mut second, 2, 10).await, ["m1", "m2"]);
    assert_eq!(stream_info(&config).await.unwrap()["state"]["messages"], 3);
}

#[tokio::test]
async fn pull_requests_are_renewed_while_idle() {
    let config = testing::unique_config(&testing::shared_url());
    let _delete = DeleteOnDrop(config.clone());
    let mut subscriber = within(10, Subscriber::connect(&config)).await.unwrap();
    let publisher = config.clone();
    // Past one pull request's expiry (5 s): its 408 must lead to a new request.
    tokio::spawn(async move {
        tokio::time::sleep(crate::subscriber::PULL_EXPIRES + Duration::from_millis(1500)).await;
        publish(&publisher, &payloads(0..1)).await.unwrap();
    });
    let batch = within(15, subscriber.next_batch(1000, Duration::from_millis(50))).await.unwrap();
    assert_eq!(texts(&batch), ["m0"]);
    subscriber.ack().await.unwrap();
}

#[tokio::test]
async fn linger_takes_what_arrives_after_the_first_message() {
    let config = testing::unique_config(&testing::shared_url());
    let _delete = DeleteOnDrop(config.clone());
    let mut subscriber = within(10, Subscriber::connect(&config)).await.unwrap();
    let publisher = config.clone();
    tokio::spawn(async move {
        publish(&publisher, &payloads(0..1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        publish(&publisher, &payloads(1..2)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        publish(&publisher, &payloads(2..3)).await.unwrap();
    });
    let batch = within(10, subscriber.next_batch(10, Duration::from_millis(1000))).await.unwrap();
    assert_eq!(texts(&batch), ["m0", "m1"]);
    subscriber.ack().await.unwrap();
    let batch = within(10, subscriber.next_batch(10, Duration::ZERO)).await.unwrap();
    assert_eq!(texts(&batch), ["m2"]);
    subscriber.ack().await.unwrap();
}

#[tokio::test]
async fn a_deleted_consumer_ends_a_waiting_next_batch_with_an_error() {
    let config = testing::unique_config(&testing::shared_url());
    let _delete = DeleteOnDrop(config.clone());
    let mut subscriber = within(10, Subscriber::connect(&config)).await.unwrap();
    let deleter = config.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        testing::delete_consumer(&deleter).await.unwrap();
    });
    let error = within(10, subscriber.next_batch(10, Duration::ZERO)).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Api, "{error}");
    assert!(error.to_string().contains("Consumer Deleted"), "{error}");
}

/// Connects after a restart: JetStream takes a moment to recover its streams.
async fn reconnect(config: &Config) -> Subscriber {
    for _ in 0..50 {
        if let Ok(subscriber) = Subscriber::connect(config).await {
            return subscriber;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("could not reconnect after the restart");
}

/// Acknowledges m0 and m1, takes m2 without acknowledging it, leaves m3 and m4 undelivered.
async fn acknowledge_two_take_one(config: &Config) -> Subscriber {
    within(10, ensure_stream(config)).await.unwrap();
    within(10, publish(config, &payloads(0..5))).await.unwrap();
    let mut subscriber = within(10, Subscriber::connect_with(config, &short_ack_wait())).await.unwrap();
    assert_eq!(consume(&mut subscriber, 2, 2).await, ["m0", "m1"]);
    let delivered = within(10, subscriber.next_batch(1, Duration::ZERO)).await.unwrap();
    assert_eq!(texts(&delivered), ["m2"]);
    subscriber
}

#[tokio::test]
async fn a_restarted_server_keeps_unacknowledged_messages_and_acknowledgements() {
    let mut server = NatsServer::start();
    let config = testing::unique_config(&server.url());
    let mut subscriber = acknowledge_two_take_one(&config).await;
    server.restart();
    // The old connection is gone: an error, not a hang.
    let error = within(10, subscriber.ack()).await.unwrap_err();
    assert!(matches!(error.kind(), ErrorKind::Io | ErrorKind::Timeout), "{error}");
    let mut subscriber = reconnect(&config).await;
    let received: BTreeSet<String> = consume(&mut subscriber, 3, 10).await.into_iter().collect();
    assert_eq!(received, texts_of(2..5).into_iter().collect());
    assert_nothing_more(&mut subscriber, 2).await;
}

/// After a crash, JetStream has every message it acknowledged to the publisher, but it writes a
/// consumer's acknowledgements to disk shortly after taking them: acks confirmed just before a crash
/// can be lost, and those messages delivered again. At least once, not exactly once.
#[tokio::test]
async fn a_crashed_server_keeps_unacknowledged_messages() {
    let mut server = NatsServer::start();
    let config = testing::unique_config(&server.url());
    drop(acknowledge_two_take_one(&config).await);
    server.crash_and_restart();
    let mut subscriber = reconnect(&config).await;
    let mut received = BTreeSet::new();
    while !texts_of(2..5).iter().all(|m| received.contains(m)) {
        received.extend(consume(&mut subscriber, 1, 10).await);
    }
    assert!(received.iter().all(|m| texts_of(0..5).contains(m)), "{received:?}");
}

#[tokio::test]
async fn api_errors_are_clear() {
    let taken = testing::unique_config(&testing::shared_url());
    let _delete = DeleteOnDrop(taken.clone());
    within(10, ensure_stream(&taken)).await.unwrap();

    // Another stream cannot capture the same subject.
    let overlapping = Config { stream: format!("{}_OTHER", taken.stream), ..taken.clone() };
    let error = within(10, ensure_stream(&overlapping)).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Api, "{error}");
    assert!(error.to_string().contains(&format!("$JS.API.STREAM.CREATE.{}", overlapping.stream)), "{error}");
    assert!(error.to_string().contains("subjects overlap"), "{error}");
    assert_eq!(error.api_code(), Some(10065));
    let error = within(10, Subscriber::connect(&overlapping)).await.err().unwrap();
    assert!(error.to_string().contains("subjects overlap"), "{error}");

    // An existing stream that does not capture the subject.
    let elsewhere = Config { subject: format!("{}.elsewhere", taken.subject), ..taken.clone() };
    let error = within(10, Subscriber::connect(&elsewhere)).await.err().unwrap();
    assert_eq!(error.kind(), ErrorKind::Config, "{error}");
    assert!(error.to_string().contains("does not capture"), "{error}");

    // Publishing where no stream listens.
    let nowhere = testing::unique_config(&testing::shared_url());
    let error = within(10, publish(&nowhere, &payloads(0..3))).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Api, "{error}");
    assert!(error.to_string().contains("no stream captures"), "{error}");

    // An existing consumer of the same name that filters on something else.
    let mut wide = taken.clone();
    wide.subject = format!("{}.>", taken.subject);
    wide.stream = format!("{}_WIDE", taken.stream);
    let _delete_wide = DeleteOnDrop(wide.clone());
    within(10, Subscriber::connect(&wide)).await.unwrap();
    let narrow = Config { subject: format!("{}.a", taken.subject), ..wide.clone() };
    let error = within(10, Subscriber::connect(&narrow)).await.err().unwrap();
    assert_eq!(error.kind(), ErrorKind::Config, "{error}");
    assert!(error.to_string().contains("filters on"), "{error}");
}

#[tokio::test]
async fn credentials_are_sent_and_never_shown() {
    let server = NatsServer::start_with(&["--user", "medtech", "--pass", "s3cret-pw"]);
    let port = server.port();
    let good = testing::unique_config(&format!("nats://medtech:s3cret-pw@127.0.0.1:{port}"));
    within(10, ensure_stream(&good)).await.unwrap();
    let bad = Config { password: Some("wrong-pw".into()), ..good.clone() };
    let error = within(10, Subscriber::connect(&bad)).await.err().unwrap();
    assert_eq!(error.kind(), ErrorKind::Server, "{error}");
    assert!(error.to_string().contains("Authorization Violation"), "{error}");
    assert!(!format!("{error} {error:?}").contains("wrong-pw"));
    let anonymous = Config { user: None, password: None, ..good.clone() };
    assert_eq!(within(10, ensure_stream(&anonymous)).await.unwrap_err().kind(), ErrorKind::Server);

    let token_server = NatsServer::start_with(&["--auth", "t0k3n"]);
    let token = testing::unique_config(&format!("nats://t0k3n@127.0.0.1:{}", token_server.port()));
    within(10, ensure_stream(&token)).await.unwrap();
    let wrong = Config { token: Some("n0pe".into()), ..token.clone() };
    let error = within(10, ensure_stream(&wrong)).await.unwrap_err();
    assert!(!format!("{error} {error:?}").contains("n0pe"), "{error}");
}

/// What a fake server does after the client wrote: send these bytes, then close or not.
type Answer = fn(&str) -> (String, bool);

/// A fake server: sends `info`, then, each time the client has written something, calls `answer`
/// with everything the client wrote so far.
async fn fake_server(info: &'static str, answer: Answer) -> Config {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = tcp.write_all(info.as_bytes()).await;
                let mut seen = Vec::new();
                let mut buffer = [0; 4096];
                while let Ok(n @ 1..) = tcp.read(&mut buffer).await {
                    seen.extend_from_slice(&buffer[..n]);
                    let (bytes, close) = answer(&String::from_utf8_lossy(&seen));
                    let _ = tcp.write_all(bytes.as_bytes()).await;
                    if close {
                        break;
                    }
                }
            });
        }
    });
    testing::unique_config(&format!("nats://127.0.0.1:{port}"))
}

const INFO: &str = "INFO {\"server_id\":\"fake\",\"version\":\"2.9.10\",\"headers\":true,\"max_payload\":1048576}\r\n";

/// Once the client's PING is in: a PONG (ending the handshake) and then `then`.
fn after_handshake(seen: &str, then: &str) -> (String, bool) {
    match seen.contains("PING\r\n") {
        true => (format!("PONG\r\n{then}"), false),
        false => (String::new(), false),
    }
}

/// Once the client has made a JetStream API request: `reply` with `{}` replaced by its reply subject.
fn after_request(seen: &str, reply: &str) -> (String, bool) {
    let line = seen.lines().find(|l| l.starts_with("PUB $JS.API."));
    match line.and_then(|line| line.split(' ').nth(2)) {
        Some(subject) => (reply.replace("{}", subject), false),
        None => after_handshake(seen, ""),
    }
}

#[tokio::test]
async fn malformed_input_from_a_fake_server_is_an_error_not_a_panic() {
    let cases: &[(&str, &'static str, Answer, ErrorKind)] = &[
        ("garbage instead of INFO", "\x00\x01\x02garbage\r\n", |_| (String::new(), false), ErrorKind::Protocol),
        ("INFO that is not JSON", "INFO {not json\r\n", |_| (String::new(), false), ErrorKind::Protocol),
        ("INFO without headers", "INFO {\"max_payload\":1024}\r\n", |_| (String::new(), false), ErrorKind::Config),
        (
            "INFO asking for TLS",
            "INFO {\"headers\":true,\"tls_required\":true}\r\n",
            |_| (String::new(), false),
            ErrorKind::Config,
        ),
        ("garbage after INFO", INFO, |s| after_handshake(s, "\u{7f}ELLO WORLD\r\n"), ErrorKind::Protocol),
        ("-ERR for CONNECT", INFO, |_| ("-ERR 'Authorization Violation'\r\n".into(), true), ErrorKind::Server),
        ("a huge message size", INFO, |s| after_handshake(s, "MSG a 1 99999999999\r\n"), ErrorKind::Protocol),
        (
            "a size beyond usize",
            INFO,
            |s| after_handshake(s, "MSG a 1 999999999999999999999999\r\n"),
            ErrorKind::Protocol,
        ),
        (
            "a payload longer than its size",
            INFO,
            |s| after_handshake(s, "MSG a 1 2\r\nabcdef\r\n"),
            ErrorKind::Protocol,
        ),
        (
            "a header block without NATS/1.0",
            INFO,
            |s| after_handshake(s, "HMSG a 1 4 4\r\nXXXX\r\n"),
            ErrorKind::Protocol,
        ),
        ("an endless control line", INFO, |s| after_handshake(s, &"x".repeat(70_000)), ErrorKind::Protocol),
        (
            "closed in the middle of a message",
            INFO,
            |s| (after_handshake(s, "MSG a 1 10\r\nabc").0, true),
            ErrorKind::Io,
        ),
        ("an API reply that is not JSON", INFO, |s| after_request(s, "MSG {} 1 5\r\nnot{}\r\n"), ErrorKind::Protocol),
        ("an API reply of the wrong JSON", INFO, |s| after_request(s, "MSG {} 1 2\r\n[]\r\n"), ErrorKind::Config),
        (
            "an API reply with an odd status",
            INFO,
            |s| after_request(s, "HMSG {} 1 22 22\r\nNATS/1.0 999 Weird\r\n\r\n\r\n"),
            ErrorKind::Api,
        ),
        (
            "no JetStream (no responders)",
            INFO,
            |s| after_request(s, "HMSG {} 1 30 30\r\nNATS/1.0 503 No Responders\r\n\r\n\r\n"),
            ErrorKind::Api,
        ),
    ];
    for (name, info, answer, kind) in cases {
        let config = fake_server(info, *answer).await;
        let result = tokio::time::timeout(Duration::from_secs(15), Subscriber::connect(&config)).await;
        let error =
            result.unwrap_or_else(|_| panic!("{name}: hung")).err().unwrap_or_else(|| panic!("{name}: connected"));
        assert_eq!(error.kind(), *kind, "{name}: {error}");
    }
}
