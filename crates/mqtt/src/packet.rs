//! MQTT 3.1.1 packets: encoding the ones a client sends, decoding the ones a broker sends.
//!
//! Decoding works on whatever bytes have arrived so far and answers "not yet" (`Ok(None)`) for a
//! partial packet, so the connection can read in any chunk size. Everything from the broker is
//! checked before it is trusted: lengths against the bytes present and against
//! [`MAX_PACKET_SIZE`] (refused as soon as the fixed header announces more, before any of it is
//! buffered), flags against the packet type, topic names as UTF-8. A malformed packet is an
//! [`ErrorKind::Protocol`] error, never a panic: no indexing here goes unchecked.

use crate::error::{Error, ErrorKind};

/// The largest packet this client sends or accepts, header included. MQTT allows 256 MiB, but a
/// device message is a few hundred bytes and a subscriber holds a whole batch in memory.
pub const MAX_PACKET_SIZE: usize = 16 * 1024 * 1024;

const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PUBREC: u8 = 5;
const PUBREL: u8 = 6;
const PUBCOMP: u8 = 7;
const SUBSCRIBE: u8 = 8;
const SUBACK: u8 = 9;
const UNSUBACK: u8 = 11;
const PINGREQ: u8 = 12;
const PINGRESP: u8 = 13;
const DISCONNECT: u8 = 14;

pub(crate) const PINGREQ_PACKET: [u8; 2] = [PINGREQ << 4, 0];
pub(crate) const DISCONNECT_PACKET: [u8; 2] = [DISCONNECT << 4, 0];

/// A PUBLISH as received.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Publish {
    /// Set on a redelivery (after a reconnection); informative only, as a message may arrive twice
    /// with or without it under at-least-once delivery.
    pub dup: bool,
    pub qos: u8,
    pub topic: String,
    /// Present for QoS 1 and 2.
    pub packet_id: Option<u16>,
    pub payload: Vec<u8>,
}

/// A packet a broker sends to a client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Packet {
    ConnAck { session_present: bool, return_code: u8 },
    Publish(Publish),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    SubAck { packet_id: u16, return_codes: Vec<u8> },
    UnsubAck(u16),
    PingResp,
}

/// The acknowledgements a client sends for what it received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // the packets' names in the MQTT specification
pub(crate) enum Ack {
    /// Completes a QoS 1 delivery.
    PubAck,
    /// First answer to a QoS 2 delivery; the broker then sends PUBREL.
    PubRec,
    /// Answer to PUBREL, completing a QoS 2 delivery.
    PubComp,
}

/// The CONNECT packet's variable fields.
pub(crate) struct Connect<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub clean_session: bool,
    pub keep_alive_secs: u16,
}

pub(crate) fn encode_connect(out: &mut Vec<u8>, connect: &Connect<'_>) -> Result<(), Error> {
    if connect.password.is_some() && connect.username.is_none() {
        // MQTT 3.1.1 §3.1.2.9: a password needs a user name (which may be empty).
        return Err(Error::new(ErrorKind::InvalidConfig, "a password needs a user name (MQTT 3.1.1)"));
    }
    let mut body = Vec::with_capacity(64);
    put_str(&mut body, b"MQTT", "protocol name")?;
    body.push(4); // protocol level 4 = 3.1.1
    let mut flags = 0u8;
    if connect.username.is_some() {
        flags |= 0x80;
    }
    if connect.password.is_some() {
        flags |= 0x40;
    }
    if connect.clean_session {
        flags |= 0x02;
    }
    body.push(flags);
    body.extend_from_slice(&connect.keep_alive_secs.to_be_bytes());
    put_str(&mut body, connect.client_id.as_bytes(), "client id")?;
    if let Some(username) = connect.username {
        put_str(&mut body, username.as_bytes(), "user name")?;
    }
    if let Some(password) = connect.password {
        put_str(&mut body, password.as_bytes(), "password")?;
    }
    put_fixed_header(out, CONNECT << 4, body.len())?;
    out.extend_from_slice(&body);
    Ok(())
}

pub(crate) fn encode_subscribe(out: &mut Vec<u8>, packet_id: u16, filter: &str, qos: u8) -> Result<(), Error> {
    let mut body = Vec::with_capacity(filter.len() + 5);
    body.extend_from_slice(&packet_id.to_be_bytes());
    put_str(&mut body, filter.as_bytes(), "topic filter")?;
    body.push(qos);
    // SUBSCRIBE's fixed header flags are 0010 (§3.8.1).
    put_fixed_header(out, SUBSCRIBE << 4 | 0x02, body.len())?;
    out.extend_from_slice(&body);
    Ok(())
}

/// Appends a QoS 1 PUBLISH straight into `out` (the publisher's hot path: no intermediate body).
pub(crate) fn encode_publish_qos1(out: &mut Vec<u8>, topic: &str, packet_id: u16, payload: &[u8]) -> Result<(), Error> {
    let remaining = 2 + topic.len() + 2 + payload.len();
    put_fixed_header(out, PUBLISH << 4 | 1 << 1, remaining)?;
    put_str(out, topic.as_bytes(), "topic")?;
    out.extend_from_slice(&packet_id.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

pub(crate) fn encode_ack(out: &mut Vec<u8>, ack: Ack, packet_id: u16) {
    let kind = match ack {
        Ack::PubAck => PUBACK,
        Ack::PubRec => PUBREC,
        Ack::PubComp => PUBCOMP,
    };
    let id = packet_id.to_be_bytes();
    out.extend_from_slice(&[kind << 4, 2, id[0], id[1]]);
}

/// The size of a PUBLISH carrying `payload` to `topic`, to refuse an oversized one before connecting.
pub(crate) fn publish_size(topic: &str, payload: &[u8]) -> usize {
    let remaining = 2 + topic.len() + 2 + payload.len();
    1 + varint_len(remaining) + remaining
}

fn put_str(out: &mut Vec<u8>, s: &[u8], what: &str) -> Result<(), Error> {
    let len = u16::try_from(s.len())
        .map_err(|_| Error::new(ErrorKind::InvalidConfig, format!("the {what} is longer than 65535 bytes")))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s);
    Ok(())
}

fn put_fixed_header(out: &mut Vec<u8>, first: u8, remaining: usize) -> Result<(), Error> {
    if 1 + varint_len(remaining) + remaining > MAX_PACKET_SIZE {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!("a packet of {remaining} bytes exceeds the limit of {MAX_PACKET_SIZE} bytes"),
        ));
    }
    out.push(first);
    put_varint(out, remaining);
    Ok(())
}

/// The "remaining length": 7 bits a byte, least significant first, high bit = more follows.
fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            break;
        }
    }
}

fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Decodes a remaining length: `Ok(None)` while its bytes have not all arrived, an error past the
/// four bytes MQTT allows (a maximum of 268,435,455).
fn decode_varint(buf: &[u8]) -> Result<Option<(usize, usize)>, Error> {
    let mut value = 0usize;
    let mut multiplier = 1usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(i) else { return Ok(None) };
        value += usize::from(byte & 0x7f) * multiplier;
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
        multiplier *= 128;
    }
    Err(Error::protocol("malformed remaining length (more than four bytes)"))
}

/// Decodes the first packet of `buf`: the packet and the bytes it took, or `Ok(None)` if it has not
/// fully arrived.
pub(crate) fn decode(buf: &[u8], max_size: usize) -> Result<Option<(Packet, usize)>, Error> {
    let Some(&first) = buf.first() else { return Ok(None) };
    // The type and flags are checked before waiting for the rest, so that garbage (an HTTP
    // server, a TLS listener) is reported at once rather than after a length it made up.
    let (kind, flags) = (first >> 4, first & 0x0f);
    check_first_byte(kind, flags)?;
    let Some((remaining, varint_bytes)) = decode_varint(&buf[1..])? else { return Ok(None) };
    let total = 1 + varint_bytes + remaining;
    if total > max_size {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!("the broker sent a packet of {total} bytes, more than the limit of {max_size}"),
        ));
    }
    let Some(body) = buf.get(1 + varint_bytes..total) else { return Ok(None) };
    let packet = match kind {
        PUBLISH => Packet::Publish(decode_publish(flags, body)?),
        CONNACK => {
            let [ack_flags, return_code] = fixed_body::<2>(kind, body)?;
            if ack_flags & 0xfe != 0 {
                return Err(Error::protocol("CONNACK with reserved flags set"));
            }
            Packet::ConnAck { session_present: ack_flags & 1 == 1, return_code }
        }
        PUBACK => Packet::PubAck(packet_id(kind, body)?),
        PUBREC => Packet::PubRec(packet_id(kind, body)?),
        PUBREL => Packet::PubRel(packet_id(kind, body)?),
        PUBCOMP => Packet::PubComp(packet_id(kind, body)?),
        UNSUBACK => Packet::UnsubAck(packet_id(kind, body)?),
        SUBACK => match body {
            [hi, lo, codes @ ..] if !codes.is_empty() => {
                Packet::SubAck { packet_id: u16::from_be_bytes([*hi, *lo]), return_codes: codes.to_vec() }
            }
            _ => return Err(Error::protocol("SUBACK without a return code")),
        },
        PINGRESP => {
            fixed_body::<0>(kind, body)?;
            Packet::PingResp
        }
        // check_first_byte admits only the types above; no panic even if that changes.
        _ => return Err(Error::protocol(format!("unexpected packet type {kind} from a broker"))),
    };
    Ok(Some((packet, total)))
}

/// Only the packets a broker sends, each with the flags MQTT 3.1.1 fixes for it (§2.2.2).
fn check_first_byte(kind: u8, flags: u8) -> Result<(), Error> {
    let expected = match kind {
        PUBLISH if (flags >> 1) & 0x03 == 3 => return Err(Error::protocol("PUBLISH with QoS 3")),
        PUBLISH => return Ok(()),
        PUBREL => 0x02,
        CONNACK | PUBACK | PUBREC | PUBCOMP | SUBACK | UNSUBACK | PINGRESP => 0,
        _ => return Err(Error::protocol(format!("unexpected packet type {kind} from a broker"))),
    };
    if flags != expected {
        return Err(Error::protocol(format!("packet type {kind} with flags {flags:#06b}")));
    }
    Ok(())
}

fn decode_publish(flags: u8, body: &[u8]) -> Result<Publish, Error> {
    let dup = flags & 0x08 != 0;
    let qos = (flags >> 1) & 0x03;
    let [hi, lo, rest @ ..] = body else { return Err(Error::protocol("PUBLISH without a topic name")) };
    let topic_len = usize::from(u16::from_be_bytes([*hi, *lo]));
    let (Some(topic), Some(rest)) = (rest.get(..topic_len), rest.get(topic_len..)) else {
        return Err(Error::protocol("PUBLISH whose topic name is longer than the packet"));
    };
    let topic = std::str::from_utf8(topic).map_err(|_| Error::protocol("PUBLISH whose topic name is not UTF-8"))?;
    if topic.is_empty() {
        return Err(Error::protocol("PUBLISH with an empty topic name"));
    }
    let (packet_id, payload) = if qos == 0 {
        (None, rest)
    } else {
        let [hi, lo, payload @ ..] = rest else { return Err(Error::protocol("PUBLISH without a packet identifier")) };
        let id = u16::from_be_bytes([*hi, *lo]);
        if id == 0 {
            return Err(Error::protocol("PUBLISH with packet identifier 0"));
        }
        (Some(id), payload)
    };
    Ok(Publish { dup, qos, topic: topic.to_owned(), packet_id, payload: payload.to_vec() })
}

fn fixed_body<const N: usize>(kind: u8, body: &[u8]) -> Result<[u8; N], Error> {
    body.try_into().map_err(|_| Error::protocol(format!("packet type {kind} of {} bytes instead of {N}", body.len())))
}

fn packet_id(kind: u8, body: &[u8]) -> Result<u16, Error> {
    Ok(u16::from_be_bytes(fixed_body::<2>(kind, body)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(buf: &[u8]) -> Result<Option<(Packet, usize)>, Error> {
        decode(buf, MAX_PACKET_SIZE)
    }

    #[test]
    fn remaining_length_round_trips_at_every_boundary() {
        for n in [0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 268_435_455] {
            let mut out = Vec::new();
            put_varint(&mut out, n);
            assert_eq!(out.len(), varint_len(n), "{n}");
            assert_eq!(decode_varint(&out).unwrap(), Some((n, out.len())), "{n}");
            // Every proper prefix is "not yet", not an error.
            for cut in 0..out.len() {
                assert_eq!(decode_varint(&out[..cut]).unwrap(), None, "{n} cut at {cut}");
            }
        }
    }

    #[test]
    fn a_fifth_length_byte_is_malformed() {
        let err = decode_all(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Protocol);
    }

    #[test]
    fn an_oversized_packet_is_refused_from_its_header_alone() {
        // 0x80 0x80 0x80 0x01 = 2 MiB; the limit here is 1 KiB; none of the body has arrived.
        let err = decode(&[0x30, 0x80, 0x80, 0x80, 0x01], 1024).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooLarge);
    }

    #[test]
    fn publish_decodes_at_each_qos_and_only_once_complete() {
        let mut qos1 = Vec::new();
        encode_publish_qos1(&mut qos1, "a/b", 7, b"hello").unwrap();
        for cut in 0..qos1.len() {
            assert_eq!(decode_all(&qos1[..cut]).unwrap(), None, "cut at {cut}");
        }
        let (packet, used) = decode_all(&qos1).unwrap().unwrap();
        assert_eq!(used, qos1.len());
        let expected =
            Publish { dup: false, qos: 1, topic: "a/b".into(), packet_id: Some(7), payload: b"hello".to_vec() };
        assert_eq!(packet, Packet::Publish(expected));

        let qos0 = [0x30, 5, 0, 1, b't', b'h', b'i'];
        let (packet, _) = decode_all(&qos0).unwrap().unwrap();
        let expected = Publish { dup: false, qos: 0, topic: "t".into(), packet_id: None, payload: b"hi".to_vec() };
        assert_eq!(packet, Packet::Publish(expected));

        let qos2_dup = [0x3c, 5, 0, 1, b't', 0, 9];
        let (packet, _) = decode_all(&qos2_dup).unwrap().unwrap();
        let expected = Publish { dup: true, qos: 2, topic: "t".into(), packet_id: Some(9), payload: vec![] };
        assert_eq!(packet, Packet::Publish(expected));
    }

    #[test]
    fn malformed_publishes_are_errors() {
        let cases: &[(&str, &[u8])] = &[
            ("QoS 3", &[0x36, 5, 0, 1, b't', 0, 1]),
            ("topic past the end", &[0x32, 4, 0, 9, b't', b'x']),
            ("no topic length", &[0x30, 1, 0]),
            ("topic not UTF-8", &[0x30, 4, 0, 2, 0xff, 0xfe]),
            ("empty topic", &[0x30, 2, 0, 0]),
            ("no packet id", &[0x32, 4, 0, 1, b't', 0]),
            ("packet id 0", &[0x32, 5, 0, 1, b't', 0, 0]),
        ];
        for (what, bytes) in cases {
            let err = decode_all(bytes).expect_err(what);
            assert_eq!(err.kind(), ErrorKind::Protocol, "{what}");
        }
    }

    #[test]
    fn control_packets_decode_and_check_their_flags_and_sizes() {
        assert_eq!(
            decode_all(&[0x20, 2, 1, 0]).unwrap().unwrap().0,
            Packet::ConnAck { session_present: true, return_code: 0 }
        );
        assert_eq!(decode_all(&[0x40, 2, 1, 2]).unwrap().unwrap().0, Packet::PubAck(258));
        assert_eq!(decode_all(&[0x62, 2, 0, 5]).unwrap().unwrap().0, Packet::PubRel(5));
        assert_eq!(
            decode_all(&[0x90, 3, 0, 1, 0x80]).unwrap().unwrap().0,
            Packet::SubAck { packet_id: 1, return_codes: vec![0x80] }
        );
        assert_eq!(decode_all(&[0xd0, 0]).unwrap().unwrap().0, Packet::PingResp);

        let malformed: &[(&str, &[u8])] = &[
            ("CONNACK too short", &[0x20, 1, 0]),
            ("CONNACK reserved flags", &[0x20, 2, 0x02, 0]),
            ("PUBREL without its flags", &[0x60, 2, 0, 5]),
            ("PUBACK with flags", &[0x41, 2, 0, 5]),
            ("SUBACK without codes", &[0x90, 2, 0, 1]),
            ("PINGRESP with a body", &[0xd0, 1, 0]),
            ("CONNECT from a broker", &[0x10, 0]),
            ("reserved type 0", &[0x00, 0]),
            ("reserved type 15", &[0xf0, 0]),
        ];
        for (what, bytes) in malformed {
            let err = decode_all(bytes).expect_err(what);
            assert_eq!(err.kind(), ErrorKind::Protocol, "{what}");
        }
    }

    #[test]
    fn connect_carries_the_flags_and_credentials_in_order() {
        let mut out = Vec::new();
        let connect = Connect {
            client_id: "c",
            username: Some("u"),
            password: Some("p"),
            clean_session: false,
            keep_alive_secs: 30,
        };
        encode_connect(&mut out, &connect).unwrap();
        let expected = [0x10, 19, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xc0, 0, 30, 0, 1, b'c', 0, 1, b'u', 0, 1, b'p'];
        assert_eq!(out, expected);
    }

    #[test]
    fn an_oversized_publish_is_refused_before_encoding() {
        let mut out = Vec::new();
        let err = encode_publish_qos1(&mut out, "t", 1, &vec![0; MAX_PACKET_SIZE]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooLarge);
        assert!(out.is_empty());
        assert!(publish_size("t", &[0; 10]) == 1 + 1 + 2 + 1 + 2 + 10);
    }
}
