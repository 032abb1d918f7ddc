//! How fast a subscriber drains a broker: publishes small device messages to a private Mosquitto,
//! then receives and acknowledges them in batches of up to 1,000 (linger 20 ms), the way the
//! MedTech service does minus storing. Two runs: a backlog queued while the subscriber was away,
//! and live traffic with the publisher running at the same time.
//!
//! ```text
//! cargo run --release -p fhirside-mqtt --features testing --example subscribe_throughput -- [messages] [max_inflight_messages]
//! ```
//!
//! Defaults: 50,000 messages, `max_inflight_messages 1000`. The second argument sets the broker's
//! in-flight window (20 is Mosquitto's default). The first batch sizes are printed to show it.
//!
//! Results (release build, Mosquitto 2.0.11, 2 cores, messages of 86 bytes; three runs):
//!
//! | run | `max_inflight_messages` | messages/s | batches |
//! | --- | --- | --- | --- |
//! | publish, pipelined QoS 1 | 1000 | 302,000–306,000 | |
//! | subscribe, backlog | 1000 | 315,000–317,000 | 50 × 1,000 |
//! | subscribe, live (publisher on the same runtime thread) | 1000 | 54,000–141,000 | ~1,000 |
//! | subscribe, backlog | 20 | 135,000 | 20, 400, then 1,000 |
//!
//! The live figure is bounded by the publisher sharing the subscriber's thread, not by the
//! subscriber. With 20 in flight, Mosquitto 2.0.11 keeps to the window for the first batch only
//! (see the crate docs); a broker that kept to it would cap every batch at 20.

use std::time::{Duration, Instant};

use fhirside_mqtt::testing::{Broker, BrokerOptions};
use fhirside_mqtt::{publish, Subscriber};

const BATCH: usize = 1000;
const LINGER: Duration = Duration::from_millis(20);

fn device_message(i: usize) -> Vec<u8> {
    format!(
        r#"{{"deviceId":"device-{:04}","heartRate":{},"measurementDateTime":"2024-05-01T10:{:02}:{:02}Z"}}"#,
        i % 100,
        60 + i % 40,
        (i / 60) % 60,
        i % 60
    )
    .into_bytes()
}

struct Drained {
    seconds: f64,
    batch_sizes: Vec<usize>,
}

async fn drain(subscriber: &mut Subscriber, n: usize) -> Drained {
    let started = Instant::now();
    let mut batch_sizes = Vec::new();
    while batch_sizes.iter().sum::<usize>() < n {
        batch_sizes.push(subscriber.next_batch(BATCH, LINGER).await.unwrap().len());
        subscriber.ack().await.unwrap();
    }
    assert_eq!(batch_sizes.iter().sum::<usize>(), n, "exactly the messages published");
    Drained { seconds: started.elapsed().as_secs_f64(), batch_sizes }
}

fn report(what: &str, n: usize, drained: &Drained) {
    let sizes = &drained.batch_sizes;
    // The first few sizes show the broker's in-flight window at work.
    let first: Vec<String> = sizes.iter().take(6).map(usize::to_string).collect();
    println!(
        "{what}: {n} messages in {:.2} s = {:.0} messages/s; {} batches: {}{}",
        drained.seconds,
        n as f64 / drained.seconds,
        sizes.len(),
        first.join(", "),
        if sizes.len() > first.len() { ", …" } else { "" }
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(50_000, |a| a.parse().expect("messages"));
    let max_inflight_messages: u32 = args.next().map_or(1000, |a| a.parse().expect("max_inflight_messages"));
    let broker = Broker::start_with(&BrokerOptions { max_inflight_messages, ..Default::default() });
    let messages: Vec<Vec<u8>> = (0..n).map(device_message).collect();
    let bytes: usize = messages.iter().map(Vec::len).sum();
    println!("mosquitto max_inflight_messages {max_inflight_messages}; {n} messages of {} bytes on average", bytes / n);

    // Backlog: the session exists, the subscriber is away while everything is published.
    let config = broker.config("throughput-subscriber");
    drop(Subscriber::connect(&config, "devices/+/telemetry").await.unwrap());
    let started = Instant::now();
    publish(&broker.config("throughput-publisher"), "devices/backlog/telemetry", &messages).await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    println!("publish (QoS 1, pipelined): {n} messages in {seconds:.2} s = {:.0} messages/s", n as f64 / seconds);
    let mut subscriber = Subscriber::connect(&config, "devices/+/telemetry").await.unwrap();
    report("subscribe, backlog", n, &drain(&mut subscriber, n).await);

    // Live: publisher and subscriber at the same time (one runtime thread, the broker on the other core).
    let publisher_config = broker.config("throughput-publisher");
    let live = messages.clone();
    let publisher =
        tokio::spawn(async move { publish(&publisher_config, "devices/live/telemetry", &live).await.unwrap() });
    report("subscribe, live", n, &drain(&mut subscriber, n).await);
    publisher.await.unwrap();
}
