//! A durable JetStream pull consumer read in batches, for at-least-once processing: take a batch,
//! store it, acknowledge it, repeat. A message that is not acknowledged within the consumer's
//! `ack_wait` (because the process died, or the Subscriber was dropped) is delivered again.
//!
//! One pull request is outstanding at a time, for up to the batch size and expiring after
//! [`PULL_EXPIRES`]: deliveries carry the stream's subject, not the request's, so with a single
//! request every delivery and every status (`404`, `408`, `409` on the request's reply subject) is
//! unambiguously about it. When it ends — fulfilled, or a status says so — the next one is sent.
//! A request the server never ends (a restart lost it) is given up locally a little after its expiry,
//! together with a PING: no PONG by the next expiry means the connection is dead.
//!
//! Deliveries are queued in `self` as they arrive, so a dropped `next_batch` future loses nothing,
//! and deliveries beyond a batch wait in the queue for the next one.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Config;
use crate::connection::Connection;
use crate::error::{Error, ErrorKind};
use crate::jetstream::{self, nanos, ConsumerSettings};
use crate::proto::{self, Frame, Msg};
use crate::Message;

/// How long the server holds a pull request open while there is nothing to deliver. Short enough
/// that a lost request (server restart, leadership change) is noticed within seconds.
pub const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// The most one pull request asks for: a larger `max` is served by several requests in turn (and
/// the batch needs its linger to fill), so that no request asks the server for absurd numbers.
const MAX_PULL_BATCH: usize = 10_000;
/// How long after a pull request's expiry its `408` may be late before it is given up on.
const PULL_GRACE: Duration = Duration::from_secs(2);
/// How long the server may take to confirm an acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// After `409 Exceeded MaxWaiting` (too many pull requests waiting on the consumer), how long to wait
/// before asking again, so as not to spin.
const MAX_WAITING_BACKOFF: Duration = Duration::from_secs(1);

pub struct Subscriber {
    connection: Connection,
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`.
    next_subject: String,
    /// Delivered messages not yet handed out, each with its ack subject (`$JS.ACK.…`).
    queue: VecDeque<(Message, String)>,
    /// The ack subjects of the batch last handed out.
    unacked: Vec<String>,
    pull: Option<Pull>,
    ping_outstanding: bool,
    /// No pull request before this instant (after a 409 Exceeded MaxWaiting).
    pause_until: Option<Instant>,
}

/// The outstanding pull request.
struct Pull {
    reply: String,
    /// Messages still to come for it.
    remaining: usize,
    expires_at: Instant,
}

impl Subscriber {
    /// Connects (INFO/CONNECT with verbose and pedantic off, headers on), creates the stream when it
    /// does not exist (`subjects: [subject]`, file storage) and the durable pull consumer named
    /// `consumer` (filter_subject = subject, ack_policy explicit, deliver_policy all, ack_wait 30 s,
    /// max_ack_pending 20,000). An existing stream and consumer are reused, after checking that they
    /// capture and filter on `subject`.
    pub async fn connect(config: &Config) -> Result<Subscriber, Error> {
        Subscriber::connect_with(config, &ConsumerSettings::default()).await
    }

    pub(crate) async fn connect_with(config: &Config, settings: &ConsumerSettings) -> Result<Subscriber, Error> {
        let mut connection = Connection::open(config).await?;
        jetstream::ensure_stream(&mut connection, config).await?;
        jetstream::ensure_consumer(&mut connection, config, settings).await?;
        Ok(Subscriber {
            connection,
            next_subject: format!("$JS.API.CONSUMER.MSG.NEXT.{}.{}", config.stream, config.consumer),
            queue: VecDeque::new(),
            unacked: Vec::new(),
            pull: None,
            ping_outstanding: false,
            pause_until: None,
        })
    }

    /// Waits as long as it takes for at least one message, then takes those that arrive within
    /// `linger` of the first, up to `max` (at least 1). The previous batch must have been
    /// acknowledged ([`Subscriber::ack`]); if it was not, this is an error of kind
    /// [`ErrorKind::Usage`] — drop the Subscriber to have JetStream deliver that batch again.
    ///
    /// After any other error the connection is unusable: make a new Subscriber (unacknowledged
    /// messages are delivered again after `ack_wait`).
    pub async fn next_batch(&mut self, max: usize, linger: Duration) -> Result<Vec<Message>, Error> {
        if !self.unacked.is_empty() {
            return Err(Error::new(ErrorKind::Usage, "next_batch called before the previous batch was acknowledged"));
        }
        let max = max.max(1);
        while self.queue.is_empty() {
            self.pump(max, None).await?;
        }
        let deadline = Instant::now() + linger;
        while self.queue.len() < max && self.pump(max, Some(deadline)).await? {}
        let taken = self.queue.len().min(max);
        let mut batch = Vec::with_capacity(taken);
        self.unacked.reserve(taken);
        for (message, ack) in self.queue.drain(..taken) {
            batch.push(message);
            self.unacked.push(ack);
        }
        Ok(batch)
    }

    /// Acknowledges every message of the last batch, and returns once the server has confirmed it:
    /// JetStream will not deliver them again. Every ack is written in one buffer; only the last asks
    /// for a confirmation, because the consumer handles a connection's acks in order.
    pub async fn ack(&mut self) -> Result<(), Error> {
        let Some((last, others)) = self.unacked.split_last() else { return Ok(()) };
        let confirm = self.connection.new_reply_subject("ack");
        let output = self.connection.output();
        for subject in others {
            proto::publish(output, subject, None, b"+ACK");
        }
        proto::publish(output, last, Some(&confirm), b"+ACK");
        self.connection.flush().await?;
        let deadline = Instant::now() + ACK_TIMEOUT;
        loop {
            match self.connection.read_frame(Some(deadline)).await? {
                Some(Frame::Msg(msg)) if msg.subject == confirm => {
                    if let Some(status) = msg.status {
                        return Err(Error::api(
                            format!(
                                "acknowledging failed with status {} {} (was the consumer deleted?)",
                                status.code, status.description
                            ),
                            None,
                        ));
                    }
                    self.unacked.clear();
                    return Ok(());
                }
                Some(frame) => self.on_frame(frame)?,
                None => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!("the server did not confirm the acks within {ACK_TIMEOUT:?}"),
                    ))
                }
            }
        }
    }

    /// Makes sure a pull request is outstanding, then handles one frame or waits until `deadline`
    /// (or until a pull request should be re-checked). False when `deadline` has passed.
    async fn pump(&mut self, max: usize, deadline: Option<Instant>) -> Result<bool, Error> {
        self.ensure_pull(max).await?;
        let recheck = match (&self.pull, self.pause_until) {
            (Some(pull), _) => pull.expires_at + PULL_GRACE,
            (None, Some(pause)) => pause,
            (None, None) => Instant::now() + PULL_EXPIRES,
        };
        let wake = deadline.map_or(recheck, |deadline| deadline.min(recheck));
        if let Some(frame) = self.connection.read_frame(Some(wake)).await? {
            self.on_frame(frame)?;
        }
        Ok(deadline.is_none_or(|deadline| Instant::now() < deadline))
    }

    async fn ensure_pull(&mut self, max: usize) -> Result<(), Error> {
        let now = Instant::now();
        if let Some(pull) = &self.pull {
            if now < pull.expires_at + PULL_GRACE {
                return Ok(());
            }
            // The server never ended this request: it may have lost it, or the connection is dead.
            if self.ping_outstanding {
                return Err(Error::new(ErrorKind::Timeout, "the server answers neither pull requests nor PING"));
            }
            self.connection.output().extend_from_slice(proto::PING);
            self.ping_outstanding = true;
            self.pull = None;
        }
        if self.pause_until.is_some_and(|until| now < until) {
            return self.connection.flush().await;
        }
        self.pause_until = None;
        let wanted = max.saturating_sub(self.queue.len()).min(MAX_PULL_BATCH);
        if wanted == 0 {
            return self.connection.flush().await;
        }
        let reply = self.connection.new_reply_subject("pull");
        let request = format!(r#"{{"batch":{wanted},"expires":{}}}"#, nanos(PULL_EXPIRES));
        proto::publish(self.connection.output(), &self.next_subject, Some(&reply), request.as_bytes());
        self.connection.flush().await?;
        self.pull = Some(Pull { reply, remaining: wanted, expires_at: now + PULL_EXPIRES });
        Ok(())
    }

    fn on_frame(&mut self, frame: Frame) -> Result<(), Error> {
        match frame {
            Frame::Msg(msg) => self.on_msg(msg),
            Frame::Pong => {
                self.ping_outstanding = false;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn on_msg(&mut self, msg: Msg) -> Result<(), Error> {
        let ours = self.pull.as_ref().is_some_and(|pull| pull.reply == msg.subject);
        if let Some(status) = msg.status {
            let description = status.description.to_ascii_lowercase();
            match status.code {
                // Idle heartbeat: not asked for, harmless.
                100 => {}
                // No messages (for no_wait) / the request expired: ask again.
                404 | 408 => {}
                409 if description.contains("leadership change") || description.contains("server shutdown") => {}
                409 if description.contains("exceeded maxwaiting") => {
                    self.pause_until = Some(Instant::now() + MAX_WAITING_BACKOFF);
                }
                503 => {
                    return Err(Error::api(
                        "the pull request had no responders: is the consumer or JetStream gone?",
                        None,
                    ))
                }
                code => {
                    // "Consumer Deleted", "Consumer is push based", "Exceeded MaxRequestBatch"…:
                    // asking again would fail again.
                    return Err(Error::api(
                        format!("the pull request failed with status {code} {}", status.description),
                        None,
                    ));
                }
            }
            if ours {
                self.pull = None;
            }
            return Ok(());
        }
        // A delivery: its reply subject is where it is acknowledged. Anything else on the inbox (a
        // late ack confirmation after a dropped `ack` future) is not a delivery.
        let Some(ack) = msg.reply.filter(|reply| reply.starts_with("$JS.ACK.")) else { return Ok(()) };
        self.queue.push_back((Message { subject: msg.subject, payload: msg.payload }, ack));
        if let Some(pull) = &mut self.pull {
            pull.remaining = pull.remaining.saturating_sub(1);
            if pull.remaining == 0 {
                self.pull = None;
            }
        }
        Ok(())
    }
}
