//! A minimal blocking HTTP/1.1 client on one keep-alive [`TcpStream`] (plain HTTP only), for the load
//! clients: every request asks for `application/fhir+json`, and every response is read whole.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One keep-alive connection to `host_port`, opened on first use and again after the server closes
/// it or a request fails.
pub struct Client<'a> {
    host_port: &'a str,
    prefer: &'a str,
    read_timeout: Duration,
    conn: Option<BufReader<TcpStream>>,
    /// `Authorization` of every request, when set.
    authorization: Option<String>,
}

/// A response's status and whole body (chunked bodies reassembled).
pub struct Response {
    pub status: u16,
    /// Empty for statuses that carry none (1xx, 204, 304).
    pub body: Vec<u8>,
}

impl<'a> Client<'a> {
    /// `prefer` is the `Prefer` header of every request (`return=minimal`, `handling=strict`…);
    /// waiting longer than `read_timeout` for the server fails the request.
    pub fn new(host_port: &'a str, prefer: &'a str, read_timeout: Duration) -> Self {
        Client { host_port, prefer, read_timeout, conn: None, authorization: None }
    }

    /// Sends `Authorization: <value>` (e.g. `Bearer …`) with every request.
    pub fn with_authorization(mut self, value: String) -> Self {
        self.authorization = Some(value);
        self
    }

    /// A GET on a reused connection that fails is sent once more on a new one: the server may have
    /// closed the idle connection in between, and a GET is safe to repeat.
    pub fn get(&mut self, path: &str) -> io::Result<Response> {
        let reused = self.conn.is_some();
        match self.send("GET", path, None) {
            Err(_) if reused => self.send("GET", path, None),
            result => result,
        }
    }

    /// A POST of a FHIR JSON body; never repeated, since a transaction is not idempotent.
    pub fn post(&mut self, path: &str, body: &[u8]) -> io::Result<Response> {
        self.send("POST", path, Some(body))
    }

    /// A POST of a form (an OAuth token request).
    pub fn post_form(&mut self, path: &str, body: &[u8]) -> io::Result<Response> {
        self.send_as("POST", path, Some(body), "application/x-www-form-urlencoded")
    }

    fn send(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> io::Result<Response> {
        self.send_as(method, path, body, "application/fhir+json")
    }

    fn send_as(&mut self, method: &str, path: &str, body: Option<&[u8]>, content_type: &str) -> io::Result<Response> {
        if self.conn.is_none() {
            let tcp = TcpStream::connect(self.host_port)?;
            tcp.set_nodelay(true)?;
            tcp.set_read_timeout(Some(self.read_timeout))?;
            self.conn = Some(BufReader::with_capacity(64 * 1024, tcp));
        }
        let conn = self.conn.as_mut().expect("connected above");
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {}\r\n", self.host_port);
        if body.is_some() {
            let _ = write!(head, "content-type: {content_type}\r\n");
        }
        let _ = write!(head, "accept: application/fhir+json\r\nprefer: {}\r\n", self.prefer);
        if let Some(value) = &self.authorization {
            let _ = write!(head, "authorization: {value}\r\n");
        }
        if let Some(body) = body {
            let _ = write!(head, "content-length: {}\r\n", body.len());
        }
        head.push_str("\r\n");
        let exchange = |conn: &mut BufReader<TcpStream>| {
            let stream = conn.get_mut();
            stream.write_all(head.as_bytes())?;
            stream.write_all(body.unwrap_or_default())?;
            read_response(conn)
        };
        // After a failure the connection is in an unknown state: the next request opens a new one.
        match exchange(conn) {
            Ok((response, close)) => {
                if close {
                    self.conn = None;
                }
                Ok(response)
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}

/// Reads one response; the flag says the server will close the connection after it.
fn read_response(conn: &mut BufReader<TcpStream>) -> io::Result<(Response, bool)> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut line = String::new();
    if conn.read_line(&mut line)? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    let status: u16 =
        line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad(format!("status line {line:?}")))?;
    let (mut length, mut chunked, mut close) = (None, false, false);
    loop {
        line.clear();
        if conn.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed in the headers"));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').ok_or_else(|| bad(format!("header {header:?}")))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|e| bad(format!("content-length: {e}")))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let mut body = Vec::new();
    // RFC 9112 §6.3: these statuses have no body whatever the headers say, and chunked framing wins
    // over a Content-Length; without either, the body runs to the end of the connection.
    if status == 204 || status == 304 || (100..200).contains(&status) {
    } else if chunked {
        loop {
            line.clear();
            conn.read_line(&mut line)?;
            let size = line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size, 16).map_err(|e| bad(format!("chunk size {size:?}: {e}")))?;
            let start = body.len();
            body.resize(start + size, 0);
            conn.read_exact(&mut body[start..])?;
            line.clear();
            conn.read_line(&mut line)?; // the CRLF after the chunk; after the last one, no trailers expected
            if size == 0 {
                break;
            }
        }
    } else if let Some(len) = length {
        body.resize(len, 0);
        conn.read_exact(&mut body)?;
    } else {
        conn.read_to_end(&mut body)?;
        close = true;
    }
    Ok((Response { status, body }, close))
}
