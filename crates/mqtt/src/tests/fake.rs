//! Against a fake broker: a listener that plays a script of bytes, to reach what Mosquitto never
//! sends (malformed packets, QoS 2, refusals of every kind) and to see exactly what the client
//! writes.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::texts;
use crate::{publish, Config, ErrorKind, Subscriber};

/// Starts a one-connection fake broker running `script`; [`join`] it at the end.
async fn fake<F, Fut>(script: F) -> (Config, JoinHandle<()>)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        // Byte-at-a-time scripts must not wait for Nagle's algorithm.
        stream.set_nodelay(true).unwrap();
        script(stream).await;
    });
    (Config::from_url(&format!("mqtt://127.0.0.1:{port}"), "client").unwrap(), handle)
}

/// Waits for the fake's script to end, surfacing its asserts; a script still waiting for bytes
/// the client never sent fails the test rather than hanging it.
async fn join(fake: JoinHandle<()>) {
    match tokio::time::timeout(Duration::from_secs(10), fake).await {
        Ok(result) => result.unwrap(),
        Err(_) => panic!("the fake broker still waits for the client after 10 s"),
    }
}

/// Reads one packet the client sent: its first byte and body.
async fn read_packet(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let first = stream.read_u8().await.unwrap();
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let byte = stream.read_u8().await.unwrap();
        len |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.unwrap();
    (first, body)
}

/// CONNECT → CONNACK, SUBSCRIBE → SUBACK granting QoS 1.
async fn accept_subscriber(stream: &mut TcpStream) {
    let (first, _) = read_packet(stream).await;
    assert_eq!(first, 0x10, "CONNECT");
    stream.write_all(&[0x20, 2, 0, 0]).await.unwrap();
    let (first, body) = read_packet(stream).await;
    assert_eq!(first, 0x82, "SUBSCRIBE");
    assert_eq!(body.last(), Some(&1), "requested QoS 1");
    stream.write_all(&[0x90, 3, body[0], body[1], 1]).await.unwrap();
}

/// PINGREQ → PINGRESP.
async fn answer_ping(stream: &mut TcpStream) {
    assert_eq!(read_packet(stream).await, (0xc0, vec![]), "PINGREQ");
    stream.write_all(&[0xd0, 0]).await.unwrap();
}

/// Subscribes against a fake that accepts and then sends `bytes`; returns the first error.
async fn error_after_subscribing(bytes: &'static [u8]) -> crate::Error {
    let (config, fake) = fake(move |mut stream| async move {
        accept_subscriber(&mut stream).await;
        stream.write_all(bytes).await.unwrap();
        // Hold the connection open so the error comes from the bytes, not from the end of stream.
        let _ = stream.read_u8().await;
    })
    .await;
    let mut subscriber = Subscriber::connect(&config, "t").await.unwrap();
    let err = subscriber.next_batch(10, Duration::from_millis(50)).await.unwrap_err();
    drop(subscriber);
    join(fake).await;
    err
}

#[tokio::test]
async fn malformed_answers_to_connect_are_errors() {
    let cases: &[(&str, &[u8], ErrorKind)] = &[
        ("an HTTP server", b"HTTP/1.1 400 Bad Request\r\n\r\n", ErrorKind::Protocol),
        ("a CONNACK of 3 bytes", &[0x20, 3, 0, 0, 0], ErrorKind::Protocol),
        ("a PUBLISH first", &[0x30, 3, 0, 1, b't'], ErrorKind::Protocol),
        ("five length bytes", &[0x20, 0xff, 0xff, 0xff, 0xff, 0x7f], ErrorKind::Protocol),
        ("a 256 MiB packet", &[0x30, 0xff, 0xff, 0xff, 0x7f], ErrorKind::TooLarge),
        ("half a CONNACK, then the end", &[0x20, 2, 0], ErrorKind::Closed),
        ("nothing, then the end", &[], ErrorKind::Closed),
    ];
    for &(what, bytes, kind) in cases {
        let (config, fake) = fake(move |mut stream| async move {
            read_packet(&mut stream).await;
            stream.write_all(bytes).await.unwrap();
        })
        .await;
        let err = Subscriber::connect(&config, "t").await.err().expect(what);
        assert_eq!(err.kind(), kind, "{what}: {err}");
        join(fake).await;
    }
}

#[tokio::test]
async fn connack_return_codes_are_named() {
    let cases = [
        (1, ErrorKind::Refused, "protocol version"),
        (2, ErrorKind::Refused, "identifier rejected"),
        (3, ErrorKind::Refused, "unavailable"),
        (4, ErrorKind::BadCredentials, "bad user name or password"),
        (5, ErrorKind::NotAuthorized, "not authorized"),
        (9, ErrorKind::Refused, "unknown"),
    ];
    for (code, kind, words) in cases {
        let (config, fake) = fake(move |mut stream| async move {
            read_packet(&mut stream).await;
            stream.write_all(&[0x20, 2, 0, code]).await.unwrap();
        })
        .await;
        let err = Subscriber::connect(&config, "t").await.err().unwrap();
        assert_eq!(err.kind(), kind, "{err}");
        let text = err.to_string();
        assert!(text.contains(words) && text.contains(&format!("return code {code}")), "{text}");
        join(fake).await;
    }
}

#[tokio::test]
async fn a_refused_or_downgraded_subscription_is_an_error() {
    for (granted, words) in [(0x80, "refused the subscription"), (0, "QoS 0")] {
        let (config, fake) = fake(move |mut stream| async move {
            read_packet(&mut stream).await;
            stream.write_all(&[0x20, 2, 0, 0]).await.unwrap();
            let (_, body) = read_packet(&mut stream).await;
            stream.write_all(&[0x90, 3, body[0], body[1], granted]).await.unwrap();
        })
        .await;
        let err = Subscriber::connect(&config, "t").await.err().unwrap();
        assert_eq!(err.kind(), ErrorKind::SubscriptionRefused, "{err}");
        assert!(err.to_string().contains(words), "{err}");
        join(fake).await;
    }
}

#[tokio::test]
async fn malformed_deliveries_are_errors() {
    let err = error_after_subscribing(&[0x30, 4, 0, 2, 0xff, 0xfe]).await;
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    let err = error_after_subscribing(&[0x32, 4, 0, 9, b't', 0]).await;
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    // 17 MiB announced: refused from the header, before the client buffers any of it.
    let err = error_after_subscribing(&[0x30, 0x80, 0x80, 0xc4, 0x08]).await;
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    let err = error_after_subscribing(&[0x20, 2, 0, 0]).await;
    assert_eq!(err.kind(), ErrorKind::Protocol, "a second CONNACK: {err}");
}

#[tokio::test]
async fn the_end_of_the_connection_is_an_error() {
    let (config, fake) = fake(|mut stream| async move {
        accept_subscriber(&mut stream).await;
    })
    .await;
    let mut subscriber = Subscriber::connect(&config, "t").await.unwrap();
    let err = subscriber.next_batch(10, Duration::ZERO).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    join(fake).await;
}

#[tokio::test]
async fn a_missing_pingresp_is_a_timeout() {
    let (config, fake) = fake(|mut stream| async move {
        accept_subscriber(&mut stream).await;
        // Swallow the PINGREQ and never answer.
        assert_eq!(read_packet(&mut stream).await, (0xc0, vec![]));
        let _ = stream.read_u8().await;
    })
    .await;
    let config = Config { keep_alive: Duration::from_secs(1), ..config };
    let mut subscriber = Subscriber::connect(&config, "t").await.unwrap();
    let started = Instant::now();
    let waiting = tokio::time::timeout(Duration::from_secs(10), subscriber.next_batch(10, Duration::ZERO));
    let err = waiting.await.expect("an error within 10 s").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.to_string().contains("PINGRESP"), "{err}");
    // A ping after one keep-alive of silence, the error one keep-alive later.
    assert!(started.elapsed() >= Duration::from_millis(1900), "{:?}", started.elapsed());
    drop(subscriber);
    join(fake).await;
}

#[tokio::test]
async fn an_idle_subscriber_pings_every_keep_alive() {
    let pings = Arc::new(AtomicUsize::new(0));
    let counted = pings.clone();
    let (config, fake) = fake(move |mut stream| async move {
        accept_subscriber(&mut stream).await;
        loop {
            let mut first = [0];
            if stream.read(&mut first).await.unwrap() == 0 || first[0] == 0xe0 {
                return; // the end, or DISCONNECT
            }
            assert_eq!((first[0], stream.read_u8().await.unwrap()), (0xc0, 0), "PINGREQ");
            counted.fetch_add(1, Ordering::SeqCst);
            stream.write_all(&[0xd0, 0]).await.unwrap();
        }
    })
    .await;
    let config = Config { keep_alive: Duration::from_secs(1), ..config };
    let mut subscriber = Subscriber::connect(&config, "t").await.unwrap();
    let idle = tokio::time::timeout(Duration::from_millis(3300), subscriber.next_batch(10, Duration::ZERO));
    assert!(idle.await.is_err(), "no message and no error while idle");
    drop(subscriber);
    join(fake).await;
    // At about 1, 2 and 3 s; at least two leaves room for a slow machine.
    assert!(pings.load(Ordering::SeqCst) >= 2, "{} pings", pings.load(Ordering::SeqCst));
}

#[tokio::test]
async fn deliveries_in_single_bytes_at_every_qos_are_received_and_acknowledged() {
    let (config, fake) = fake(|mut stream| async move {
        accept_subscriber(&mut stream).await;
        let mut bytes = vec![0x30, 5, 0, 1, b'a', b'q', b'0']; // QoS 0
        bytes.extend([0x32, 7, 0, 1, b'b', 0, 10, b'q', b'1']); // QoS 1, id 10
        bytes.extend([0x34, 7, 0, 1, b'c', 0, 11, b'q', b'2']); // QoS 2, id 11
        for byte in bytes {
            stream.write_all(&[byte]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(read_packet(&mut stream).await, (0x40, vec![0, 10]), "PUBACK 10");
        assert_eq!(read_packet(&mut stream).await, (0x50, vec![0, 11]), "PUBREC 11");
        answer_ping(&mut stream).await;
        stream.write_all(&[0x62, 2, 0, 11]).await.unwrap(); // PUBREL 11
        assert_eq!(read_packet(&mut stream).await, (0x70, vec![0, 11]), "PUBCOMP 11");
    })
    .await;
    let mut subscriber = Subscriber::connect(&config, "t").await.unwrap();
    let mut received = Vec::new();
    while received.len() < 3 {
        received.extend(subscriber.next_batch(10, Duration::from_millis(200)).await.unwrap());
        subscriber.ack().await.unwrap();
    }
    let topics: Vec<&str> = received.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(topics, ["a", "b", "c"]);
    assert_eq!(texts(&received), ["q0", "q1", "q2"]);
    // The PUBCOMP goes out while waiting for the next batch.
    let _ = tokio::time::timeout(Duration::from_millis(300), subscriber.next_batch(10, Duration::ZERO)).await;
    join(fake).await;
}

#[tokio::test]
async fn a_dup_of_a_pending_message_is_delivered_once_and_acknowledged_once() {
    let (config, fake) = fake(|mut stream| async move {
        accept_subscriber(&mut stream).await;
        stream.write_all(&[0x32, 6, 0, 1, b't', 0, 7, b'x']).await.unwrap();
        stream.write_all(&[0x3a, 6, 0, 1, b't', 0, 7, b'x']).await.unwrap(); // DUP
        assert_eq!(read_packet(&mut stream).await, (0x40, vec![0, 7]));
        answer_ping(&mut stream).await;
        // Nothing more: a second PUBACK would show here before the end of the stream.
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, [0xe0, 0], "only DISCONNECT after the one PUBACK");
    })
    .await;
    let mut subscriber = Subscriber::connect(&config, "t").await.unwrap();
    let batch = subscriber.next_batch(10, Duration::from_millis(200)).await.unwrap();
    assert_eq!(texts(&batch), ["x"]);
    subscriber.ack().await.unwrap();
    drop(subscriber);
    join(fake).await;
}

#[tokio::test]
async fn next_batch_is_cancel_safe_and_insists_on_ack() {
    let (config, fake) = fake(|mut stream| async move {
        accept_subscriber(&mut stream).await;
        stream.write_all(&[0x32, 6, 0, 1, b't', 0, 1, b'x']).await.unwrap();
        assert_eq!(read_packet(&mut stream).await, (0x40, vec![0, 1]));
        answer_ping(&mut stream).await;
        let _ = stream.read_to_end(&mut Vec::new()).await;
    })
    .await;
    let mut subscriber = Subscriber::connect(&config, "t").await.unwrap();
    // Cancelled while lingering after the first message: the message is kept, not lost.
    let cancelled =
        tokio::time::timeout(Duration::from_millis(100), subscriber.next_batch(10, Duration::from_secs(60)));
    assert!(cancelled.await.is_err());
    let batch = subscriber.next_batch(1, Duration::from_secs(60)).await.unwrap();
    assert_eq!(texts(&batch), ["x"]);

    let err = subscriber.next_batch(10, Duration::ZERO).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage, "{err}");
    subscriber.ack().await.unwrap();
    let waiting = tokio::time::timeout(Duration::from_millis(100), subscriber.next_batch(10, Duration::ZERO));
    assert!(waiting.await.is_err(), "after ack, next_batch waits for messages");
    drop(subscriber);
    join(fake).await;
}

#[tokio::test]
async fn publish_keeps_many_messages_in_flight() {
    let (config, fake) = fake(|mut stream| async move {
        assert_eq!(read_packet(&mut stream).await.0, 0x10);
        stream.write_all(&[0x20, 2, 0, 0]).await.unwrap();
        // All 100 must arrive before any PUBACK: one round trip each would hang here.
        let mut ids = Vec::new();
        for i in 0..100 {
            let (first, body) = read_packet(&mut stream).await;
            assert_eq!(first, 0x32, "QoS 1 PUBLISH");
            assert_eq!(&body[..3], [0, 1, b't']);
            assert_eq!(&body[5..], format!("p{i}").as_bytes());
            ids.push([body[3], body[4]]);
        }
        for id in ids {
            stream.write_all(&[0x40, 2, id[0], id[1]]).await.unwrap();
        }
        assert_eq!(read_packet(&mut stream).await, (0xe0, vec![]), "DISCONNECT");
    })
    .await;
    let payloads: Vec<Vec<u8>> = (0..100).map(|i| format!("p{i}").into_bytes()).collect();
    tokio::time::timeout(Duration::from_secs(10), publish(&config, "t", &payloads)).await.unwrap().unwrap();
    join(fake).await;
}

#[tokio::test]
async fn publish_refuses_bad_input_and_unknown_acknowledgements() {
    let config = Config::from_url("mqtt://127.0.0.1:9", "c").unwrap();
    for topic in ["", "a/+", "a/#"] {
        assert_eq!(publish(&config, topic, &[vec![]]).await.unwrap_err().kind(), ErrorKind::Usage, "{topic}");
    }
    let huge = vec![0; crate::MAX_PACKET_SIZE];
    assert_eq!(publish(&config, "t", &[huge]).await.unwrap_err().kind(), ErrorKind::TooLarge);

    let (config, fake) = fake(|mut stream| async move {
        read_packet(&mut stream).await;
        stream.write_all(&[0x20, 2, 0, 0]).await.unwrap();
        read_packet(&mut stream).await;
        stream.write_all(&[0x40, 2, 0x03, 0xe7]).await.unwrap(); // PUBACK 999
        let _ = stream.read_to_end(&mut Vec::new()).await;
    })
    .await;
    let err = publish(&config, "t", &[b"x".to_vec()]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(err.to_string().contains("999"), "{err}");
    join(fake).await;
}

#[tokio::test]
async fn ack_returns_only_once_the_broker_confirmed_it_took_the_acknowledgements() {
    let (config, fake) = fake(|mut stream| async move {
        accept_subscriber(&mut stream).await;
        stream.write_all(&[0x32, 6, 0, 1, b't', 0, 1, b'x']).await.unwrap();
        assert_eq!(read_packet(&mut stream).await, (0x40, vec![0, 1]), "PUBACK");
        assert_eq!(read_packet(&mut stream).await, (0xc0, vec![]), "PINGREQ behind it");
        // A message of the next batch comes before the confirmation; it must not be lost.
        stream.write_all(&[0x32, 6, 0, 1, b't', 0, 2, b'y']).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        stream.write_all(&[0xd0, 0]).await.unwrap();
        // The second batch's confirmation never comes.
        assert_eq!(read_packet(&mut stream).await, (0x40, vec![0, 2]), "PUBACK");
        assert_eq!(read_packet(&mut stream).await, (0xc0, vec![]), "PINGREQ behind it");
        let _ = stream.read_to_end(&mut Vec::new()).await;
    })
    .await;
    let config = Config { keep_alive: Duration::from_secs(1), ..config };
    let mut subscriber = Subscriber::connect(&config, "t").await.unwrap();
    assert_eq!(texts(&subscriber.next_batch(10, Duration::ZERO).await.unwrap()), ["x"]);
    let started = Instant::now();
    subscriber.ack().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    assert_eq!(texts(&subscriber.next_batch(10, Duration::ZERO).await.unwrap()), ["y"]);
    let err = subscriber.ack().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.to_string().contains("confirming"), "{err}");
    drop(subscriber);
    join(fake).await;
}
