//! The message brokers a MedTech subscription reads from: an MQTT topic filter
//! ([`fhirside_mqtt`]) or a NATS JetStream durable consumer ([`fhirside_nats`]), each a
//! [`Source`] of [`Feed`]s for [`super::subscribe`].

use std::time::Duration;

use super::subscribe::{Feed, Source};

/// An MQTT subscription: QoS 1 in a persistent session under its client id.
pub struct Mqtt {
    config: fhirside_mqtt::Config,
    topic: String,
}

impl Mqtt {
    /// `url` is `mqtt://[user[:password]@]host[:port]`.
    pub fn new(url: &str, topic: &str, client_id: &str) -> Result<Mqtt, String> {
        if topic.is_empty() {
            return Err("the MQTT topic filter is empty".into());
        }
        let config = fhirside_mqtt::Config::from_url(url, client_id).map_err(|e| e.to_string())?;
        Ok(Mqtt { config, topic: topic.to_owned() })
    }
}

impl Source for Mqtt {
    type Feed = fhirside_mqtt::Subscriber;

    fn transport(&self) -> &'static str {
        "mqtt"
    }

    fn broker(&self) -> String {
        format!("mqtt://{}:{}", self.config.host, self.config.port)
    }

    fn describe(&self) -> String {
        format!("{} topic {} as {}", self.broker(), self.topic, self.config.client_id)
    }

    async fn connect(&self) -> Result<fhirside_mqtt::Subscriber, String> {
        fhirside_mqtt::Subscriber::connect(&self.config, &self.topic).await.map_err(|e| e.to_string())
    }
}

impl Feed for fhirside_mqtt::Subscriber {
    async fn next_batch(&mut self, max: usize, linger: Duration) -> Result<Vec<(String, Vec<u8>)>, String> {
        let batch = fhirside_mqtt::Subscriber::next_batch(self, max, linger).await.map_err(|e| e.to_string())?;
        Ok(batch.into_iter().map(|m| (m.topic, m.payload)).collect())
    }

    async fn ack(&mut self) -> Result<(), String> {
        fhirside_mqtt::Subscriber::ack(self).await.map_err(|e| e.to_string())
    }
}

/// A NATS JetStream subscription: a durable pull consumer on a stream (both made if missing).
/// Replicas sharing the consumer's name share its messages, each message going to one of them.
pub struct Nats {
    config: fhirside_nats::Config,
}

impl Nats {
    /// `url` is `nats://[user[:password]@|token@]host[:port]`.
    pub fn new(url: &str, stream: &str, subject: &str, consumer: &str) -> Result<Nats, String> {
        let config = fhirside_nats::Config::from_url(url, stream, subject, consumer).map_err(|e| e.to_string())?;
        Ok(Nats { config })
    }
}

impl Source for Nats {
    type Feed = fhirside_nats::Subscriber;

    fn transport(&self) -> &'static str {
        "nats"
    }

    fn broker(&self) -> String {
        format!("nats://{}:{}", self.config.host, self.config.port)
    }

    fn describe(&self) -> String {
        let c = &self.config;
        format!("{} stream {} subject {} consumer {}", self.broker(), c.stream, c.subject, c.consumer)
    }

    async fn connect(&self) -> Result<fhirside_nats::Subscriber, String> {
        fhirside_nats::Subscriber::connect(&self.config).await.map_err(|e| e.to_string())
    }
}

impl Feed for fhirside_nats::Subscriber {
    async fn next_batch(&mut self, max: usize, linger: Duration) -> Result<Vec<(String, Vec<u8>)>, String> {
        let batch = fhirside_nats::Subscriber::next_batch(self, max, linger).await.map_err(|e| e.to_string())?;
        Ok(batch.into_iter().map(|m| (m.subject, m.payload)).collect())
    }

    async fn ack(&mut self) -> Result<(), String> {
        fhirside_nats::Subscriber::ack(self).await.map_err(|e| e.to_string())
    }
}

/// A subscription to start with the server.
pub enum Subscription {
    Mqtt(Mqtt),
    Nats(Nats),
}

/// Where, without credentials.
impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subscription::Mqtt(source) => write!(f, "Mqtt({})", source.describe()),
            Subscription::Nats(source) => write!(f, "Nats({})", source.describe()),
        }
    }
}
