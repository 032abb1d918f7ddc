//! Parsing and redaction of the absolute `http`/`https` URLs the client accepts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::FetchError;

/// An error and its sources, `a: b: c`, for logs.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// At most `max` characters of `text`, control characters replaced, for error messages.
pub(crate) fn printable(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).map(|c| if c.is_control() { '\u{FFFD}' } else { c }).collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}

/// The instance metadata address: the one non-loopback address a request may reach over plain
/// http, when it asks to ([`crate::Request::instance_metadata`]). Azure's Instance Metadata Service
/// (which hands a VM or an AKS node its managed identity's tokens) answers there over http only. It
/// is link-local, so never routed off the host's network segment, and answered by the host or the
/// platform rather than by another machine. Other link-local addresses stay refused: they may be
/// anyone on the segment.
pub(crate) const INSTANCE_METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// A parsed absolute URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) tls: bool,
    /// Lower case, without brackets for IPv6.
    pub(crate) host: String,
    /// The host when it is an IP literal.
    pub(crate) ip: Option<IpAddr>,
    pub(crate) port: u16,
    /// Path and query in origin form (`/a/b?c=d`), percent-encoded where needed.
    pub(crate) path: String,
}

impl Target {
    fn default_port(&self) -> u16 {
        if self.tls {
            443
        } else {
            80
        }
    }

    /// `host[:port]`, with brackets for IPv6 and without a default port.
    fn authority(&self) -> String {
        let host = match self.ip {
            Some(IpAddr::V6(_)) => format!("[{}]", self.host),
            _ => self.host.clone(),
        };
        if self.port == self.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    pub(crate) fn host_header(&self) -> String {
        self.authority()
    }

    /// The URL without its query, for messages.
    pub(crate) fn redacted(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        let path = self.path.split('?').next().unwrap_or("/");
        format!("{scheme}://{}{path}", self.authority())
    }

    /// Whether plain http could be allowed: a loopback IP, or `localhost` (whose addresses are
    /// checked again after resolution), or, when `instance_metadata` is allowed, exactly the IPv4
    /// literal [`INSTANCE_METADATA`] (never a name that resolves to it).
    pub(crate) fn may_use_plain_http(&self, instance_metadata: bool) -> bool {
        match self.ip {
            Some(ip) => is_loopback(ip) || (instance_metadata && ip == IpAddr::V4(INSTANCE_METADATA)),
            None => self.host == "localhost",
        }
    }
}

/// A URL as given, cut before its query and fragment and without user info, for messages about
/// URLs that did not parse.
pub(crate) fn redact_raw(url: &str) -> String {
    let base = url.split(['?', '#']).next().unwrap_or("");
    let shown = match base.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(end);
            let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
            format!("{scheme}://{authority}{path}")
        }
        None => base.to_owned(),
    };
    printable(&shown, 200)
}

/// Parses an absolute `http`/`https` URL: scheme, host (a name, an IPv4 address or an IPv6
/// address in brackets), optional port, and path with query. User info is refused; a fragment is
/// dropped; spaces and non-ASCII characters in the path are percent-encoded.
pub(crate) fn parse_url(url: &str) -> Result<Target, FetchError> {
    let invalid = |reason: &str| FetchError::InvalidUrl { url: redact_raw(url), reason: reason.to_owned() };
    let url = url.trim();
    let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("not an absolute URL"))?;
    let tls = if scheme.eq_ignore_ascii_case("https") {
        true
    } else if scheme.eq_ignore_ascii_case("http") {
        false
    } else {
        return Err(invalid("the scheme must be http or https"));
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains('@') {
        return Err(invalid("user info in URLs is not supported"));
    }
    let (host, ip, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (literal, after) = bracketed.split_once(']').ok_or_else(|| invalid("unclosed '[' in the host"))?;
        let ip: Ipv6Addr = literal.parse().map_err(|_| invalid("invalid IPv6 address"))?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(|| invalid("unexpected characters after ']'"))?),
        };
        (ip.to_string(), Some(IpAddr::V6(ip)), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host.to_ascii_lowercase(), Some(port)),
            None => (authority.to_ascii_lowercase(), None),
        };
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        if !host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_') {
            return Err(invalid("invalid characters in the host (international names must be given in punycode)"));
        }
        let ip = host.parse::<Ipv4Addr>().ok().map(IpAddr::V4);
        (host, ip, port)
    };
    let port = match port {
        None | Some("") => {
            if tls {
                443
            } else {
                80
            }
        }
        Some(digits) => {
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid("invalid port"));
            }
            match digits.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(invalid("invalid port")),
            }
        }
    };
    let path = path.split('#').next().unwrap_or("");
    let mut encoded = String::with_capacity(path.len() + 1);
    if !path.starts_with('/') {
        encoded.push('/');
    }
    for byte in path.bytes() {
        match byte {
            0..=0x1f | 0x7f => return Err(invalid("control characters in the path")),
            b' ' | b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}' | 0x80.. => {
                encoded.push_str(&format!("%{byte:02X}"))
            }
            _ => encoded.push(byte as char),
        }
    }
    Ok(Target { tls, host, ip, port, path: encoded })
}

/// The `Host` header the client sends for `url`: `host[:port]`, lower case, without a default
/// port. For signatures that cover it (S3's Signature V4).
pub fn host_header(url: &str) -> Result<String, FetchError> {
    parse_url(url).map(|target| target.host_header())
}

/// `url` as errors show it: without its query, fragment or user info.
pub fn redact(url: &str) -> String {
    match parse_url(url) {
        Ok(target) => target.redacted(),
        Err(_) => redact_raw(url),
    }
}
