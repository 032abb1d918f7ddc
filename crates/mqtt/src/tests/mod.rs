//! Tests over sockets: against a real Mosquitto (`broker.rs`) and against a fake broker that
//! sends exactly the bytes a case needs, malformed ones included (`fake.rs`).

mod broker;
mod fake;

use std::time::Duration;

use crate::{Message, Subscriber};

fn payloads(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("{prefix}{i}").into_bytes()).collect()
}

fn texts(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|m| String::from_utf8_lossy(&m.payload).into_owned()).collect()
}

fn strings(payloads: &[Vec<u8>]) -> Vec<String> {
    payloads.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect()
}

/// Receives and acknowledges until `n` messages arrived (or fails after 20 s).
async fn receive(subscriber: &mut Subscriber, n: usize) -> Vec<Message> {
    let mut received = Vec::new();
    let all = async {
        while received.len() < n {
            let batch = subscriber.next_batch(1000, Duration::from_millis(20)).await.unwrap();
            received.extend(batch);
            subscriber.ack().await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(20), all).await.expect("messages within 20 s");
    received
}

/// Asserts that no message arrives (and no error happens) within `wait`.
async fn expect_nothing(subscriber: &mut Subscriber, wait: Duration) {
    if let Ok(result) = tokio::time::timeout(wait, subscriber.next_batch(1000, Duration::ZERO)).await {
        panic!("expected nothing, got {:?}", result.map(|batch| texts(&batch)));
    }
}
