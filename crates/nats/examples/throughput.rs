//! Publishing and consuming throughput against a NATS server with JetStream (not part of the test
//! suite).
//!
//! `cargo run --release -p fhirside-nats --features testing --example throughput -- [messages] [batch]`
//! with `NATS_URL` (default `nats://127.0.0.1:4222`). Publishes `messages` (50,000) device messages of
//! ~71 bytes to a fresh stream (file storage), then consumes and acknowledges them in batches of up
//! to `batch` (1,000) with a 20 ms linger, and deletes the stream.
//!
//! Measured on the 2-core development machine (nats-server 2.9.10 on the same machine, release
//! build, three runs): publishing 170,000–260,000 messages/s; consuming and acknowledging
//! 190,000–260,000 messages/s in batches of 1,000 (≈ 200,000 in batches of 100; 237,000 over
//! 200,000 messages). The MedTech service's target is 5,000 messages/s: the client is not the
//! bottleneck.

use std::time::{Duration, Instant};

use fhirside_nats::{ensure_stream, publish, testing, Subscriber};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), fhirside_nats::Error> {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().map_or(50_000, |n| n.parse().expect("a message count"));
    let batch: usize = args.next().map_or(1_000, |n| n.parse().expect("a batch size"));
    let config = testing::unique_config(&testing::shared_url());
    ensure_stream(&config).await?;
    let payloads: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            format!(
                r#"{{"deviceId":"device-{}","heartRate":{},"endDate":"2024-05-01T10:{:02}:{:02}Z"}}"#,
                i % 100,
                60 + i % 40,
                i / 60 % 60,
                i % 60
            )
            .into_bytes()
        })
        .collect();
    let bytes = payloads[0].len();

    let start = Instant::now();
    publish(&config, &payloads).await?;
    let published = start.elapsed();
    println!(
        "published {count} messages of ~{bytes} bytes in {published:.2?}: {:.0} messages/s",
        rate(count, published)
    );

    let start = Instant::now();
    let mut subscriber = Subscriber::connect(&config).await?;
    let (mut received, mut batches) = (0, 0);
    while received < count {
        received += subscriber.next_batch(batch, Duration::from_millis(20)).await?.len();
        subscriber.ack().await?;
        batches += 1;
    }
    let consumed = start.elapsed();
    println!(
        "consumed and acknowledged {received} in {batches} batches in {consumed:.2?}: {:.0} messages/s",
        rate(received, consumed)
    );
    testing::delete_stream(&config).await
}

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}
