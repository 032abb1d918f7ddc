//! A QoS 1 subscriber in a persistent session, read in batches and acknowledged per batch.
//!
//! The shape follows the one use: the MedTech service takes a batch, stores it durably, and only
//! then acknowledges, so a crash between the two costs a redelivery, never a message
//! (at-least-once). Because the session is persistent (clean session off), the broker also queues
//! what is published while the subscriber is away, and redelivers whatever it sent but never saw
//! acknowledged when the subscriber returns under the same client id.
//!
//! The broker sends at most its in-flight limit of unacknowledged QoS 1 messages (Mosquitto's
//! `max_inflight_messages`, 20 by default) and then waits for PUBACKs. A batch therefore never
//! holds more than that limit; set it at least as high as the batch size (see the crate docs).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Config;
use crate::connection::{Connection, IO_TIMEOUT};
use crate::error::{Error, ErrorKind};
use crate::packet::{self, Ack, Packet, Publish, PINGREQ_PACKET};
use crate::Message;

/// The only SUBSCRIBE this client sends; a broker's packet ids for its PUBLISHes are a separate space.
const SUBSCRIBE_PACKET_ID: u16 = 1;

/// A connected subscriber. Dropping it sends DISCONNECT when the socket can take it at once; the
/// broker keeps the session either way.
pub struct Subscriber {
    connection: Connection,
    keep_alive: Duration,
    session_present: bool,
    /// Messages read but not yet returned, each with the acknowledgement it will need. Kept here,
    /// not in a local, so that a cancelled `next_batch` loses nothing.
    pending: Vec<(Message, Option<(Ack, u16)>)>,
    /// When the first of `pending` arrived: the batch closes `linger` after.
    first_at: Option<Instant>,
    /// The acknowledgements of the batch last returned, until `ack`.
    owed: Option<Vec<(Ack, u16)>>,
    /// When each unanswered PINGREQ left, oldest first (keep-alive's, and `ack`'s confirmations).
    pings: VecDeque<Instant>,
}

impl Subscriber {
    /// Connects with clean session off (a persistent session under `config.client_id`, so QoS 1
    /// messages published while this subscriber is away are queued by the broker and delivered
    /// on reconnect) and subscribes to `topic_filter` at QoS 1.
    ///
    /// Asking for QoS 1 rather than 2 makes the broker downgrade QoS 2 publications to 1; a QoS 2
    /// delivery from a broker that ignores that is still completed (PUBREC at `ack`, PUBCOMP on
    /// PUBREL). A broker that grants only QoS 0 is refused: it would drop messages silently.
    pub async fn connect(config: &Config, topic_filter: &str) -> Result<Subscriber, Error> {
        if topic_filter.is_empty() {
            return Err(Error::new(ErrorKind::Usage, "empty topic filter"));
        }
        let (connection, session_present) = Connection::open(config, false).await?;
        let mut subscriber = Subscriber {
            connection,
            keep_alive: config.keep_alive.min(Duration::from_secs(u64::from(u16::MAX))),
            session_present,
            pending: Vec::new(),
            first_at: None,
            owed: None,
            pings: VecDeque::new(),
        };
        let connection = &mut subscriber.connection;
        packet::encode_subscribe(connection.write_buf(), SUBSCRIBE_PACKET_ID, topic_filter, 1)
            .map_err(|e| e.at(&connection.broker))?;
        let deadline = Instant::now() + IO_TIMEOUT;
        subscriber.connection.flush_by(deadline).await?;
        loop {
            let packet = subscriber.connection.next_packet_by(deadline, "SUBACK").await?;
            let broker = &subscriber.connection.broker;
            match packet {
                Packet::SubAck { packet_id: SUBSCRIBE_PACKET_ID, return_codes } => match return_codes[..] {
                    [1 | 2] => return Ok(subscriber),
                    [0] => {
                        let message = "the broker granted QoS 0 only, which loses messages: refused";
                        return Err(Error::new(ErrorKind::SubscriptionRefused, message).at(broker));
                    }
                    [0x80] => {
                        let message = format!("the broker refused the subscription to '{topic_filter}' (SUBACK 0x80)");
                        return Err(Error::new(ErrorKind::SubscriptionRefused, message).at(broker));
                    }
                    _ => return Err(Error::protocol(format!("SUBACK with codes {return_codes:?}")).at(broker)),
                },
                // A persistent session's backlog may come before the SUBACK.
                packet => subscriber.handle(packet, "SUBACK")?,
            }
        }
    }

    /// Whether the broker still had this client id's session when it connected. `false` on a
    /// reconnection means the broker lost the session (restarted without persistence, or expired
    /// it), and with it whatever was queued meanwhile.
    pub fn session_present(&self) -> bool {
        self.session_present
    }

    /// Waits for at least one message (sending PINGREQ as keep-alive requires while idle), then
    /// takes the ones that arrive within `linger` of the first, up to `max`. Messages of the
    /// previous batch must have been acknowledged.
    ///
    /// A missing PINGRESP (within the keep-alive) or the end of the connection is an error: drop
    /// the subscriber and connect again; unacknowledged messages come back. Cancel-safe: a
    /// dropped call loses nothing, the next call continues.
    pub async fn next_batch(&mut self, max: usize, linger: Duration) -> Result<Vec<Message>, Error> {
        if self.owed.is_some() {
            let message = "next_batch before the previous batch was acknowledged";
            return Err(Error::new(ErrorKind::Usage, message));
        }
        if max == 0 {
            return Err(Error::new(ErrorKind::Usage, "next_batch with max 0"));
        }
        loop {
            while self.pending.len() < max {
                match self.connection.decode()? {
                    Some(packet) => self.handle(packet, "PUBLISH")?,
                    None => break,
                }
            }
            if self.connection.has_unsent() {
                // PUBCOMPs just queued, or acknowledgements left by a cancelled call.
                self.connection.flush_by(Instant::now() + IO_TIMEOUT).await?;
            }
            let now = Instant::now();
            if let Some(first_at) = self.first_at {
                if self.pending.len() >= max || now >= first_at + linger {
                    return Ok(self.take_batch(max, now));
                }
            }
            let mut wake = self.first_at.map(|first_at| first_at + linger);
            if !self.keep_alive.is_zero() {
                let due = match self.pings.front() {
                    Some(sent) => *sent + self.keep_alive,
                    None => self.connection.last_sent + self.keep_alive,
                };
                if self.pings.is_empty() && now >= due {
                    self.connection.write_buf().extend_from_slice(&PINGREQ_PACKET);
                    self.pings.push_back(now);
                    self.connection.flush_by(now + IO_TIMEOUT).await?;
                    continue;
                }
                wake = Some(wake.map_or(due, |w| w.min(due)));
            }
            let Some(wake) = wake else {
                self.connection.read_more().await?;
                continue;
            };
            // `timeout_at` polls the read before the clock, so bytes already waiting (a PINGRESP
            // among them) are read even when the deadline has passed.
            if let Ok(read) = tokio::time::timeout_at(wake, self.connection.read_more()).await {
                read?;
            } else if let Some(&sent) = self.pings.front() {
                if Instant::now() >= sent + self.keep_alive {
                    let message = format!("no PINGRESP within the keep-alive of {:?}", self.keep_alive);
                    return Err(Error::new(ErrorKind::Timeout, message).at(&self.connection.broker));
                }
            }
        }
    }

    /// Acknowledges (PUBACK) every QoS 1 message of the last batch: the broker will not deliver
    /// them again. Does nothing when no batch awaits acknowledgement.
    ///
    /// Returns once the broker has processed the acknowledgements, not merely once they left: MQTT
    /// 3.1.1 confirms nothing about a PUBACK, and a broker that sees a reconnection before it read
    /// the old connection's PUBACKs redelivers those messages (Mosquitto does). So a PINGREQ goes
    /// behind them, and its PINGRESP, since a broker handles a connection's packets in order,
    /// shows that every PUBACK before it was taken. One round trip per batch.
    pub async fn ack(&mut self) -> Result<(), Error> {
        let Some(owed) = self.owed.take() else { return Ok(()) };
        if owed.is_empty() {
            return Ok(()); // QoS 0 only: nothing to acknowledge
        }
        // Everything goes into the write buffer and `pings` before the first await, so a cancelled
        // `ack` still sends it all (the next `next_batch` flushes what is left and takes the PINGRESP).
        for (ack, packet_id) in owed {
            packet::encode_ack(self.connection.write_buf(), ack, packet_id);
        }
        self.connection.write_buf().extend_from_slice(&PINGREQ_PACKET);
        let now = Instant::now();
        self.pings.push_back(now);
        let wait = if self.keep_alive.is_zero() { IO_TIMEOUT } else { self.keep_alive.min(IO_TIMEOUT) };
        let deadline = now + wait;
        self.connection.flush_by(deadline).await?;
        // Messages of the next batch may arrive first; they wait in `pending`.
        while !self.pings.is_empty() {
            if let Some(packet) = self.connection.decode()? {
                self.handle(packet, "PINGRESP")?;
            } else {
                match tokio::time::timeout_at(deadline, self.connection.read_more()).await {
                    Ok(read) => read?,
                    Err(_) => {
                        let message = format!("no PINGRESP confirming the acknowledgements within {wait:?}");
                        return Err(Error::new(ErrorKind::Timeout, message).at(&self.connection.broker));
                    }
                }
            }
        }
        Ok(())
    }

    fn handle(&mut self, packet: Packet, awaited: &str) -> Result<(), Error> {
        match packet {
            Packet::Publish(publish) => self.receive(publish),
            // The broker released a QoS 2 message we acknowledged with PUBREC: complete the flow.
            Packet::PubRel(packet_id) => packet::encode_ack(self.connection.write_buf(), Ack::PubComp, packet_id),
            Packet::PingResp => {
                self.pings.pop_front();
            }
            other => return Err(self.connection.unexpected(&other, awaited)),
        }
        Ok(())
    }

    fn receive(&mut self, publish: Publish) {
        let ack = match (publish.qos, publish.packet_id) {
            (1, Some(id)) => Some((Ack::PubAck, id)),
            (2, Some(id)) => Some((Ack::PubRec, id)),
            _ => None,
        };
        // A broker may not reuse a packet id before it is acknowledged, so a DUP with the id of
        // a message still pending here is that message again.
        if publish.dup && ack.is_some() && self.pending.iter().any(|(_, pending)| *pending == ack) {
            return;
        }
        self.first_at.get_or_insert_with(Instant::now);
        self.pending.push((Message { topic: publish.topic, payload: publish.payload }, ack));
    }

    fn take_batch(&mut self, max: usize, now: Instant) -> Vec<Message> {
        let rest = self.pending.split_off(max.min(self.pending.len()));
        let batch = std::mem::replace(&mut self.pending, rest);
        // Left-overs (messages that came while `ack` waited, or read by a cancelled call with a
        // larger `max`) start the next batch, which may take them at once.
        self.first_at = if self.pending.is_empty() { None } else { Some(now) };
        let (messages, acks): (Vec<Message>, Vec<Option<(Ack, u16)>>) = batch.into_iter().unzip();
        self.owed = Some(acks.into_iter().flatten().collect());
        messages
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.connection.disconnect_now();
    }
}
