//! Against a real Mosquitto: a private one per test (killed at the end), and once the shared one.

use std::time::Duration;

use super::{expect_nothing, payloads, receive, strings, texts};
use crate::connection::Connection;
use crate::testing::{unique, Broker, BrokerOptions, SHARED_BROKER_URL};
use crate::{publish, Config, ErrorKind, Subscriber};

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn publish_n_then_subscribe_receives_exactly_n_in_order() {
    let broker = Broker::start();
    let subscriber_config = broker.config("subscriber");
    // The first connection creates the session and its subscription; what is published after
    // it leaves is queued for it.
    drop(Subscriber::connect(&subscriber_config, "devices/telemetry").await.unwrap());
    let sent = payloads("m", 500);
    publish(&broker.config("publisher"), "devices/telemetry", &sent).await.unwrap();

    let mut subscriber = Subscriber::connect(&subscriber_config, "devices/telemetry").await.unwrap();
    assert!(subscriber.session_present());
    let received = receive(&mut subscriber, 500).await;
    assert_eq!(texts(&received), strings(&sent));
    assert!(received.iter().all(|m| m.topic == "devices/telemetry"));
    expect_nothing(&mut subscriber, QUIET).await;
}

#[tokio::test]
async fn an_unacknowledged_batch_is_redelivered_after_reconnecting_and_acknowledged_ones_are_not() {
    let broker = Broker::start();
    let config = broker.config("subscriber");
    let mut subscriber = Subscriber::connect(&config, "t").await.unwrap();
    publish(&broker.config("publisher"), "t", &payloads("m", 10)).await.unwrap();

    let first = subscriber.next_batch(4, Duration::from_millis(200)).await.unwrap();
    assert_eq!(texts(&first), ["m0", "m1", "m2", "m3"]);
    subscriber.ack().await.unwrap();
    let second = subscriber.next_batch(3, Duration::from_millis(200)).await.unwrap();
    assert_eq!(texts(&second), ["m4", "m5", "m6"]);
    // Gone before acknowledging, as if the store had failed or the process crashed.
    drop(subscriber);

    let mut subscriber = Subscriber::connect(&config, "t").await.unwrap();
    let again = receive(&mut subscriber, 6).await;
    assert_eq!(texts(&again), ["m4", "m5", "m6", "m7", "m8", "m9"]);
    expect_nothing(&mut subscriber, QUIET).await;
}

#[tokio::test]
async fn messages_published_while_the_subscriber_is_away_arrive_when_it_returns() {
    let broker = Broker::start();
    let config = broker.config("subscriber");
    let publisher = broker.config("publisher");
    let mut subscriber = Subscriber::connect(&config, "t").await.unwrap();
    publish(&publisher, "t", &payloads("live", 1)).await.unwrap();
    assert_eq!(texts(&receive(&mut subscriber, 1).await), ["live0"]);
    drop(subscriber);

    publish(&publisher, "t", &payloads("away", 5)).await.unwrap();
    let mut subscriber = Subscriber::connect(&config, "t").await.unwrap();
    assert!(subscriber.session_present());
    assert_eq!(texts(&receive(&mut subscriber, 5).await), ["away0", "away1", "away2", "away3", "away4"]);
    expect_nothing(&mut subscriber, QUIET).await;
}

#[tokio::test]
async fn wildcard_filters_select_topics() {
    let broker = Broker::start();
    let mut one_level = Subscriber::connect(&broker.config("plus"), "ward/+/telemetry").await.unwrap();
    let mut all_levels = Subscriber::connect(&broker.config("hash"), "ward/#").await.unwrap();
    let publisher = broker.config("publisher");
    for topic in ["ward/bed1/telemetry", "ward/bed2/telemetry", "ward/bed1/status", "lab/bed1/telemetry"] {
        publish(&publisher, topic, &[topic.as_bytes().to_vec()]).await.unwrap();
    }

    let topics = |messages: Vec<crate::Message>| messages.into_iter().map(|m| m.topic).collect::<Vec<_>>();
    assert_eq!(topics(receive(&mut one_level, 2).await), ["ward/bed1/telemetry", "ward/bed2/telemetry"]);
    expect_nothing(&mut one_level, QUIET).await;
    assert_eq!(
        topics(receive(&mut all_levels, 3).await),
        ["ward/bed1/telemetry", "ward/bed2/telemetry", "ward/bed1/status"]
    );
    expect_nothing(&mut all_levels, QUIET).await;
}

#[tokio::test]
async fn credentials_are_checked_and_refusals_say_why_without_the_password() {
    let options = BrokerOptions { users: vec![("gateway".into(), "s3cret pass".into())], ..Default::default() };
    let broker = Broker::start_with(&options);
    let url = |userinfo: &str| format!("mqtt://{userinfo}127.0.0.1:{}", broker.port);

    let wrong = Config::from_url(&url("gateway:wrong-pass@"), "c1").unwrap();
    let err = Subscriber::connect(&wrong, "t").await.err().expect("a wrong password is refused");
    // Mosquitto answers a wrong password with 5 (not authorized) rather than 4 for 3.1.1 clients.
    assert!(matches!(err.kind(), ErrorKind::NotAuthorized | ErrorKind::BadCredentials), "{err}");
    let text = err.to_string();
    assert!(text.contains("refused") && text.contains(&format!("127.0.0.1:{}", broker.port)), "{text}");
    assert!(!text.contains("wrong-pass"), "{text}");

    let anonymous = Config::from_url(&url(""), "c2").unwrap();
    let err = publish(&anonymous, "t", &[b"x".to_vec()]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAuthorized, "{err}");

    let right = Config::from_url(&url("gateway:s3cret%20pass@"), "c3").unwrap();
    let mut subscriber = Subscriber::connect(&right, "t").await.unwrap();
    let publisher = Config { client_id: "c4".into(), ..right.clone() };
    publish(&publisher, "t", &[b"authenticated".to_vec()]).await.unwrap();
    assert_eq!(texts(&receive(&mut subscriber, 1).await), ["authenticated"]);
}

#[tokio::test]
async fn a_refused_tcp_connection_is_a_connect_error() {
    // A port just freed: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = Config::from_url(&format!("mqtt://127.0.0.1:{port}"), "c").unwrap();
    let err = Subscriber::connect(&config, "t").await.err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
}

#[tokio::test]
async fn keep_alive_holds_an_idle_connection_open() {
    let broker = Broker::start();
    let config = Config { keep_alive: Duration::from_secs(1), ..broker.config("idle") };
    let mut subscriber = Subscriber::connect(&config, "t").await.unwrap();
    // Mosquitto drops a client silent for 1.5 keep-alives, but checks only now and then: without
    // pings it closed the connection 2.7 to 5.4 s into the silence (measured), so 8 s of idling
    // would end in an error here instead of nothing.
    expect_nothing(&mut subscriber, Duration::from_secs(8)).await;
    publish(&broker.config("publisher"), "t", &[b"after idling".to_vec()]).await.unwrap();
    assert_eq!(texts(&receive(&mut subscriber, 1).await), ["after idling"]);
}

#[tokio::test]
async fn the_shared_broker_delivers_with_its_stock_configuration() {
    let topic = unique("fhirside-mqtt-test");
    let config = Config::from_url(SHARED_BROKER_URL, &unique("sub")).unwrap();
    let mut subscriber = Subscriber::connect(&config, &topic).await.unwrap();
    let sent = payloads("m", 100);
    let publisher = Config::from_url(SHARED_BROKER_URL, &unique("pub")).unwrap();
    publish(&publisher, &topic, &sent).await.unwrap();
    // In batches of at most its max_inflight_messages (20 unless configured), all the same.
    assert_eq!(texts(&receive(&mut subscriber, 100).await), strings(&sent));
    drop(subscriber);
    // A clean-session connection under the same id ends the session, so the shared broker does
    // not keep one per test run.
    Connection::open(&config, true).await.unwrap().0.disconnect().await;
}
