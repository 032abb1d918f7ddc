//! The NATS client protocol as bytes: parsing what the server sends (INFO, MSG, HMSG with its status
//! line, PING, PONG, +OK, -ERR) from a buffer that may hold a partial frame, and encoding what the
//! client sends (CONNECT, PUB, HPUB, SUB, PING, PONG; no UNSUB: a connection has one subscription,
//! to its inbox, for its lifetime). No I/O here, so every edge case of the
//! framing is a unit test. Nothing the server sends may panic the parser: lengths come from the
//! peer, so they are bounded and checked against the buffer before any slicing.

use std::io::Write;

use crate::error::Error;

/// The longest control line accepted: the server's own limit is 4 KiB, a subject rarely 200 bytes.
/// Without a bound, a peer sending no line break would grow the read buffer forever.
pub const MAX_CONTROL_LINE: usize = 16 * 1024;

/// A frame from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// The INFO JSON, parsed by the connection.
    Info(String),
    Msg(Msg),
    Ping,
    Pong,
    Ok,
    Err(String),
}

/// A MSG or HMSG. Headers other than the status line are not kept: JetStream's pull requests speak
/// through the status, and this client's users want payloads.
#[derive(Debug, PartialEq, Eq)]
pub struct Msg {
    pub subject: String,
    pub sid: u64,
    pub reply: Option<String>,
    pub status: Option<Status>,
    pub payload: Vec<u8>,
}

/// The status of an HMSG's header block, as in `NATS/1.0 404 No Messages`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: u16,
    pub description: String,
}

/// Parses the frame at the start of `buf`: `Ok(None)` when more bytes are needed, else the frame and
/// the number of bytes it took. `max_size` bounds a message's announced size (headers and payload).
pub fn parse(buf: &[u8], max_size: usize) -> Result<Option<(Frame, usize)>, Error> {
    let window = &buf[..buf.len().min(MAX_CONTROL_LINE)];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        return match buf.len() >= MAX_CONTROL_LINE {
            true => Err(Error::protocol(format!("a control line is longer than {MAX_CONTROL_LINE} bytes"))),
            false => Ok(None),
        };
    };
    let line = &buf[..newline];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let after_line = newline + 1;
    let line = std::str::from_utf8(line).map_err(|_| Error::protocol("a control line is not UTF-8"))?;
    let (op, args) = match line.find([' ', '\t']) {
        Some(space) => (&line[..space], line[space + 1..].trim()),
        None => (line, ""),
    };
    let frame = match op.to_ascii_uppercase().as_str() {
        "MSG" => return parse_msg(buf, after_line, args, false, max_size),
        "HMSG" => return parse_msg(buf, after_line, args, true, max_size),
        "PING" => Frame::Ping,
        "PONG" => Frame::Pong,
        "+OK" => Frame::Ok,
        "-ERR" => Frame::Err(args.trim_matches('\'').to_owned()),
        "INFO" => Frame::Info(args.to_owned()),
        _ => return Err(Error::protocol(format!("unexpected line from the server: {:?}", truncate(line)))),
    };
    Ok(Some((frame, after_line)))
}

/// `MSG <subject> <sid> [reply] <size>` or `HMSG <subject> <sid> [reply] <header size> <total size>`,
/// then the bytes and a CRLF.
fn parse_msg(
    buf: &[u8],
    start: usize,
    args: &str,
    headers: bool,
    max_size: usize,
) -> Result<Option<(Frame, usize)>, Error> {
    let bad =
        || Error::protocol(format!("malformed {} line: {:?}", if headers { "HMSG" } else { "MSG" }, truncate(args)));
    let parts: Vec<&str> = args.split_ascii_whitespace().collect();
    let sizes = if headers { 2 } else { 1 };
    let (subject, sid, reply, sizes) = match parts.len() - sizes.min(parts.len()) {
        2 => (parts[0], parts[1], None, &parts[2..]),
        3 => (parts[0], parts[1], Some(parts[2]), &parts[3..]),
        _ => return Err(bad()),
    };
    let sid: u64 = sid.parse().map_err(|_| bad())?;
    let sizes: Vec<usize> = sizes.iter().map(|s| s.parse::<usize>()).collect::<Result<_, _>>().map_err(|_| bad())?;
    let (header_size, total) = match sizes[..] {
        [total] => (0, total),
        [header_size, total] if header_size <= total => (header_size, total),
        _ => return Err(bad()),
    };
    if total > max_size {
        return Err(Error::protocol(format!(
            "the server announced a {total}-byte message, above the {max_size}-byte limit"
        )));
    }
    let end = start + total;
    if buf.len() < end + 2 {
        return Ok(None);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Err(Error::protocol("a message is not followed by CRLF where its size says it ends"));
    }
    let status = match headers {
        true => parse_status(&buf[start..start + header_size])?,
        false => None,
    };
    let msg = Msg {
        subject: subject.to_owned(),
        sid,
        reply: reply.map(str::to_owned),
        status,
        payload: buf[start + header_size..end].to_vec(),
    };
    Ok(Some((Frame::Msg(msg), end + 2)))
}

/// The first line of a header block: `NATS/1.0`, optionally followed by a status code and a
/// description.
fn parse_status(block: &[u8]) -> Result<Option<Status>, Error> {
    let bad = || Error::protocol("a message's header block does not start with NATS/1.0");
    let first = block.split(|&b| b == b'\n').next().unwrap_or_default();
    let first = std::str::from_utf8(first).map_err(|_| bad())?.trim_end_matches('\r');
    let rest = first.strip_prefix("NATS/1.0").ok_or_else(bad)?.trim();
    if rest.is_empty() {
        return Ok(None);
    }
    let (code, description) = rest.split_once(' ').unwrap_or((rest, ""));
    let code = code.parse().map_err(|_| Error::protocol(format!("a message has the status {:?}", truncate(rest))))?;
    Ok(Some(Status { code, description: description.trim().to_owned() }))
}

fn truncate(text: &str) -> &str {
    match text.char_indices().nth(80) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

pub fn connect(out: &mut Vec<u8>, options: &serde_json::Value) {
    out.extend_from_slice(b"CONNECT ");
    out.extend_from_slice(options.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub fn publish(out: &mut Vec<u8>, subject: &str, reply: Option<&str>, payload: &[u8]) {
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject.as_bytes());
    if let Some(reply) = reply {
        out.push(b' ');
        out.extend_from_slice(reply.as_bytes());
    }
    let _ = write!(out, " {}\r\n", payload.len());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// HPUB with a header block of `Name: value` lines. Names and values are the client's own
/// constants and configured names, checked to hold no line breaks.
pub fn publish_with_headers(
    out: &mut Vec<u8>,
    subject: &str,
    reply: Option<&str>,
    headers: &[(&str, &str)],
    payload: &[u8],
) {
    let mut block = Vec::with_capacity(64);
    block.extend_from_slice(b"NATS/1.0\r\n");
    for (name, value) in headers {
        let _ = write!(block, "{name}: {value}\r\n");
    }
    block.extend_from_slice(b"\r\n");
    out.extend_from_slice(b"HPUB ");
    out.extend_from_slice(subject.as_bytes());
    if let Some(reply) = reply {
        out.push(b' ');
        out.extend_from_slice(reply.as_bytes());
    }
    let _ = write!(out, " {} {}\r\n", block.len(), block.len() + payload.len());
    out.extend_from_slice(&block);
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

pub fn subscribe(out: &mut Vec<u8>, subject: &str, sid: u64) {
    let _ = write!(out, "SUB {subject} {sid}\r\n");
}

pub const PING: &[u8] = b"PING\r\n";
pub const PONG: &[u8] = b"PONG\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Frame {
        let (frame, used) = parse(bytes, 1 << 20).unwrap().expect("a whole frame");
        assert_eq!(used, bytes.len());
        frame
    }

    #[test]
    fn control_lines() {
        assert_eq!(one(b"PING\r\n"), Frame::Ping);
        assert_eq!(one(b"pong\r\n"), Frame::Pong);
        assert_eq!(one(b"+OK\r\n"), Frame::Ok);
        assert_eq!(one(b"-ERR 'Authorization Violation'\r\n"), Frame::Err("Authorization Violation".into()));
        assert_eq!(one(b"INFO {\"max_payload\":1048576}\r\n"), Frame::Info("{\"max_payload\":1048576}".into()));
    }

    #[test]
    fn msg_with_and_without_reply() {
        let Frame::Msg(m) = one(b"MSG a.b 7 5\r\nhello\r\n") else { panic!() };
        assert_eq!((m.subject.as_str(), m.sid, m.reply, m.payload.as_slice()), ("a.b", 7, None, &b"hello"[..]));
        let Frame::Msg(m) = one(b"MSG a.b 7 $JS.ACK.S.C.1.2.3.4.5 0\r\n\r\n") else { panic!() };
        assert_eq!((m.reply.as_deref(), m.payload.len()), (Some("$JS.ACK.S.C.1.2.3.4.5"), 0));
    }

    #[test]
    fn payload_holding_crlf_is_taken_by_size() {
        let Frame::Msg(m) = one(b"MSG a 1 6\r\nab\r\ncd\r\n") else { panic!() };
        assert_eq!(m.payload, b"ab\r\ncd");
    }

    #[test]
    fn hmsg_status_and_headers() {
        let bytes = b"HMSG _INBOX.x.1 1 28 28\r\nNATS/1.0 404 No Messages\r\n\r\n\r\n";
        let Frame::Msg(m) = one(bytes) else { panic!() };
        assert_eq!(m.status, Some(Status { code: 404, description: "No Messages".into() }));
        assert!(m.payload.is_empty());
        let block = "NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 3\r\n\r\n";
        let bytes = format!("HMSG _INBOX.x.1 1 {} {}\r\n{block}\r\n", block.len(), block.len());
        let Frame::Msg(m) = one(bytes.as_bytes()) else { panic!() };
        assert_eq!(m.status.map(|s| s.code), Some(408));
        let block = "NATS/1.0\r\nNats-Msg-Id: 1\r\n\r\n";
        let bytes = format!("HMSG s 2 $JS.ACK.r {} {}\r\n{block}data\r\n", block.len(), block.len() + 4);
        let Frame::Msg(m) = one(bytes.as_bytes()) else { panic!() };
        assert_eq!((m.status, m.payload.as_slice()), (None, &b"data"[..]));
    }

    #[test]
    fn partial_frames_need_more_bytes() {
        let whole = b"MSG a.b 7 reply 5\r\nhello\r\nPING\r\n";
        for cut in 0..26 {
            assert_eq!(parse(&whole[..cut], 1024).unwrap(), None, "cut at {cut}");
        }
        let (frame, used) = parse(whole, 1024).unwrap().unwrap();
        assert!(matches!(frame, Frame::Msg(_)));
        assert_eq!(parse(&whole[used..], 1024).unwrap(), Some((Frame::Ping, 6)));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let cases: &[&[u8]] = &[
            b"HELLO\r\n",
            b"MSG\r\n",
            b"MSG a\r\n",
            b"MSG a b 3\r\nabc\r\n",
            b"MSG a 1 -3\r\n",
            b"MSG a 1 r x y 3\r\n",
            b"MSG a 1 99999999999999999999999\r\n",
            b"MSG a 1 3\r\nabcde\r\n",
            b"HMSG a 1 5 3\r\n",
            b"HMSG a 1 4 4\r\nXXXX\r\n",
            b"HMSG a 1 12 12\r\nNATS/1.0 x\r\n\r\n",
            b"MSG a 1 2000\r\n",
            b"\xff\xfe\r\n",
        ];
        for case in cases {
            assert!(parse(case, 1024).is_err(), "{:?}", String::from_utf8_lossy(case));
        }
        assert!(parse(&vec![b'x'; MAX_CONTROL_LINE], 1024).is_err());
    }

    #[test]
    fn encoding() {
        let mut out = Vec::new();
        publish(&mut out, "a.b", Some("_INBOX.1"), b"hi");
        publish(&mut out, "$JS.ACK.x", None, b"+ACK");
        subscribe(&mut out, "_INBOX.z.*", 1);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "PUB a.b _INBOX.1 2\r\nhi\r\nPUB $JS.ACK.x 4\r\n+ACK\r\nSUB _INBOX.z.* 1\r\n"
        );
        let mut out = Vec::new();
        publish_with_headers(&mut out, "a", Some("r"), &[("Nats-Expected-Stream", "S")], b"xy");
        let text = String::from_utf8(out.clone()).unwrap();
        assert_eq!(text, "HPUB a r 37 39\r\nNATS/1.0\r\nNats-Expected-Stream: S\r\n\r\nxy\r\n");
        // What we send, the parser reads back (as the server would echo it).
        let echoed = text.replacen("HPUB a r", "HMSG a 9 r", 1);
        let Frame::Msg(m) = one(echoed.as_bytes()) else { panic!() };
        assert_eq!((m.status, m.payload.as_slice()), (None, &b"xy"[..]));
    }
}
