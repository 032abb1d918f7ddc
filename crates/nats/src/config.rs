//! Where the server is, how to authenticate, and which stream, subject and durable consumer to use.
//! Names are checked before anything reaches the wire, because a space in a subject would split a
//! protocol line and a `.` in a stream name would change which JetStream API is addressed.

use std::fmt;

use crate::error::Error;

pub const DEFAULT_PORT: u16 = 4222;

#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// The JetStream stream, created with `subjects: [subject]` when missing.
    pub stream: String,
    /// The subject published to, and the consumer's filter subject (which may hold wildcards).
    pub subject: String,
    /// The durable pull consumer's name.
    pub consumer: String,
}

impl Config {
    /// `nats://[user[:password]@|token@]host[:port][/]`, port 4222 by default. As in the official
    /// clients, user info without a `:` is a token. User info may be percent-encoded (`%40` for `@`).
    /// The error never repeats the URL, which may carry a secret.
    pub fn from_url(url: &str, stream: &str, subject: &str, consumer: &str) -> Result<Config, Error> {
        let rest = url
            .strip_prefix("nats://")
            .ok_or_else(|| Error::config("the NATS URL must start with nats:// (TLS is not supported)"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (userinfo, hostport) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (host, port) = split_host_port(hostport)?;
        let mut config = Config {
            host,
            port,
            user: None,
            password: None,
            token: None,
            stream: stream.to_owned(),
            subject: subject.to_owned(),
            consumer: consumer.to_owned(),
        };
        match userinfo {
            None => {}
            Some(info) => match info.split_once(':') {
                Some((user, password)) => {
                    config.user = Some(percent_decode(user)?);
                    config.password = Some(percent_decode(password)?);
                }
                None => config.token = Some(percent_decode(info)?),
            },
        }
        config.validate()?;
        Ok(config)
    }

    /// The checks of `from_url`, repeated by every operation because the fields are public.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.host.is_empty() || self.host.bytes().any(|b| b.is_ascii_whitespace() || b == b'/') {
            return Err(Error::config("the NATS host is empty or not a host name"));
        }
        if self.port == 0 {
            return Err(Error::config("the NATS port must not be 0"));
        }
        for secret in [&self.user, &self.password, &self.token].into_iter().flatten() {
            if secret.chars().any(char::is_control) {
                return Err(Error::config("the NATS user, password or token holds a control character"));
            }
        }
        check_name("stream", &self.stream)?;
        check_name("consumer", &self.consumer)?;
        check_subject(&self.subject, true)
    }

    pub(crate) fn address(&self) -> String {
        match self.host.contains(':') {
            true => format!("[{}]:{}", self.host, self.port),
            false => format!("{}:{}", self.host, self.port),
        }
    }
}

/// Never prints the password or the token.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &redacted(&self.password))
            .field("token", &redacted(&self.token))
            .field("stream", &self.stream)
            .field("subject", &self.subject)
            .field("consumer", &self.consumer)
            .finish()
    }
}

fn split_host_port(hostport: &str) -> Result<(String, u16), Error> {
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let (host, after) =
            bracketed.split_once(']').ok_or_else(|| Error::config("the NATS URL has an unclosed [ in its host"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(Error::config("the NATS URL has text after its IPv6 host")),
            },
        }
    } else {
        match hostport.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => {
            port.parse().map_err(|_| Error::config(format!("the NATS port {port:?} is not a port number")))?
        }
    };
    Ok((host.to_owned(), port))
}

fn percent_decode(text: &str) -> Result<String, Error> {
    let invalid = || Error::config("the NATS URL's user info has an invalid percent-encoding");
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(invalid)?;
            let hex = std::str::from_utf8(hex).map_err(|_| invalid())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| invalid())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid())
}

/// Stream and consumer names become tokens of API subjects and file names on the server.
fn check_name(what: &str, name: &str) -> Result<(), Error> {
    let bad = |c: char| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\');
    if name.is_empty() || name.len() > 255 || name.chars().any(bad) {
        return Err(Error::config(format!(
            "the {what} name {name:?} must be 1 to 255 characters without whitespace, '.', '*', '>', '/' or '\\'"
        )));
    }
    Ok(())
}

/// A subject is dot-separated non-empty tokens without whitespace; `*` and a final `>` are wildcards,
/// allowed in a filter but not where a message is published.
pub(crate) fn check_subject(subject: &str, wildcards: bool) -> Result<(), Error> {
    let invalid = |why: &str| Error::config(format!("the subject {subject:?} {why}"));
    if subject.is_empty() || subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("must be non-empty and without whitespace"));
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        match *token {
            "" => return Err(invalid("has an empty token")),
            "*" | ">" if !wildcards => return Err(invalid("holds a wildcard")),
            ">" if i + 1 != tokens.len() => return Err(invalid("has '>' before its last token")),
            _ => {}
        }
    }
    Ok(())
}

/// Whether `filter` (a stream's subject, possibly with wildcards) takes in every subject `subject`
/// (possibly with wildcards) can match: how `ensure_stream` checks that an existing stream holds the
/// configured subject before a consumer is made to filter on it.
pub(crate) fn subject_covers(filter: &str, subject: &str) -> bool {
    let mut filter = filter.split('.');
    let mut subject = subject.split('.');
    loop {
        match (filter.next(), subject.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(s)) if s != ">" => {}
            (Some(f), Some(s)) if f == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Config, Error> {
        Config::from_url(url, "TELEMETRY", "devices.telemetry", "fhirside")
    }

    #[test]
    fn url_forms() {
        let c = parse("nats://127.0.0.1").unwrap();
        assert_eq!((c.host.as_str(), c.port, &c.user, &c.token), ("127.0.0.1", 4222, &None, &None));
        let c = parse("nats://alice:s%40cret@nats.local:4333/").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("nats.local", 4333));
        assert_eq!(
            (c.user.as_deref(), c.password.as_deref(), c.token.as_deref()),
            (Some("alice"), Some("s@cret"), None)
        );
        let c = parse("nats://t0ken@[::1]:4223").unwrap();
        assert_eq!((c.host.as_str(), c.port, c.token.as_deref()), ("::1", 4223, Some("t0ken")));
        assert_eq!(c.address(), "[::1]:4223");
    }

    #[test]
    fn bad_urls_are_config_errors_without_secrets() {
        for url in [
            "tls://h",
            "h:4222",
            "nats://",
            "nats://u:hunter2@h:99999",
            "nats://u:hunter2@h:x",
            "nats://[::1",
            "nats://hunter2%zz@h",
        ] {
            let error = parse(url).unwrap_err();
            assert_eq!(error.kind(), crate::ErrorKind::Config, "{url}");
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
        let debug = format!("{:?}", parse("nats://u:hunter2@h").unwrap());
        assert!(!debug.contains("hunter2") && debug.contains("<redacted>"), "{debug}");
    }

    #[test]
    fn names_and_subjects_are_checked() {
        assert!(Config::from_url("nats://h", "a.b", "s", "c").is_err());
        assert!(Config::from_url("nats://h", "a", "s", "c d").is_err());
        assert!(Config::from_url("nats://h", "a", "s..t", "c").is_err());
        assert!(Config::from_url("nats://h", "a", "s t", "c").is_err());
        assert!(Config::from_url("nats://h", "a", "s.>.t", "c").is_err());
        assert!(Config::from_url("nats://h", "a", "s.*.>", "c").is_ok());
        assert!(check_subject("s.*", false).is_err());
    }

    #[test]
    fn coverage() {
        assert!(subject_covers("a.b", "a.b"));
        assert!(subject_covers("a.*", "a.b"));
        assert!(subject_covers("a.>", "a.b.c"));
        assert!(subject_covers("a.>", "a.*"));
        assert!(!subject_covers("a.*", "a.>"));
        assert!(!subject_covers("a.*", "a.b.c"));
        assert!(!subject_covers("a.b", "a.*"));
        assert!(!subject_covers("a.b", "a"));
        assert!(!subject_covers("a", "a.b"));
    }
}
