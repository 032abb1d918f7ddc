//! Where the broker is and who this client is: `mqtt://[user[:password]@]host[:port]`.

use std::fmt;
use std::time::Duration;

use crate::error::{Error, ErrorKind};

/// MQTT's registered port for unencrypted connections.
pub const DEFAULT_PORT: u16 = 1883;

/// How often an idle client pings the broker unless told otherwise: short enough to notice a dead
/// connection within a minute, long enough to cost nothing.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// A broker and the identity to present to it. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The session's name at the broker. A subscriber's persistent session (its subscription and
    /// the messages queued while it is away) lives under this id; two connections with one id
    /// take over from each other, so a publisher needs an id of its own.
    pub client_id: String,
    /// The longest silence before the client pings; the broker drops a client silent for 1.5 times
    /// this. Sent in whole seconds (rounded up, at most 65535); zero turns keep-alive off.
    pub keep_alive: Duration,
}

impl Config {
    /// Parses `mqtt://[user[:password]@]host[:port]` (port 1883 by default; user and password
    /// percent-decoded; an IPv6 address in brackets) with [`DEFAULT_KEEP_ALIVE`].
    ///
    /// Plain TCP only: `mqtts://` is refused rather than silently sent in clear. Errors never
    /// repeat the URL, which may hold a password.
    pub fn from_url(url: &str, client_id: &str) -> Result<Config, Error> {
        let invalid = |reason: &str| Error::new(ErrorKind::InvalidConfig, format!("invalid broker URL: {reason}"));
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(invalid("expected mqtt://[user[:password]@]host[:port]"));
        };
        if !scheme.eq_ignore_ascii_case("mqtt") {
            let hint = if scheme.eq_ignore_ascii_case("mqtts") { " (TLS is not supported)" } else { "" };
            return Err(invalid(&format!("the scheme must be mqtt{hint}")));
        }
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if !path.is_empty() && path != "/" {
            return Err(invalid("a broker URL has no path, query or fragment"));
        }
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(userinfo) => {
                let (user, password) = match userinfo.split_once(':') {
                    Some((user, password)) => (user, Some(password)),
                    None => (userinfo, None),
                };
                let user =
                    percent_decode(user).ok_or_else(|| invalid("the user name is not valid percent-encoding"))?;
                let password = match password {
                    Some(p) => {
                        Some(percent_decode(p).ok_or_else(|| invalid("the password is not valid percent-encoding"))?)
                    }
                    None => None,
                };
                (Some(user), password)
            }
        };
        let (host, port) = split_host_port(host_port).ok_or_else(|| invalid("expected host or host:port"))?;
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Err(invalid("the port must be a number from 1 to 65535")),
            },
        };
        Ok(Config {
            host: host.to_owned(),
            port,
            username,
            password,
            client_id: client_id.to_owned(),
            keep_alive: DEFAULT_KEEP_ALIVE,
        })
    }

    /// `host:port`, for messages (never with credentials).
    pub(crate) fn broker(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The keep-alive in CONNECT's whole seconds, rounded up so the broker never expects pings
    /// sooner than the client sends them.
    pub(crate) fn keep_alive_secs(&self) -> u16 {
        let secs = self.keep_alive.as_secs() + u64::from(self.keep_alive.subsec_nanos() > 0);
        u16::try_from(secs).unwrap_or(u16::MAX)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("client_id", &self.client_id)
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; the port as text.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match s.split_once(':') {
        Some((host, port)) if !port.contains(':') => Some((host, Some(port))),
        Some(_) => None, // an IPv6 address needs its brackets
        None => Some((s, None)),
    }
}

/// `%XX` escapes to bytes, which must then be UTF-8 (MQTT's user name is a UTF-8 string; the
/// password is bytes, but a `String` here keeps the configuration simple).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_alone_takes_the_defaults() {
        let config = Config::from_url("mqtt://broker.example", "medtech").unwrap();
        assert_eq!(config.host, "broker.example");
        assert_eq!(config.port, 1883);
        assert_eq!(config.username, None);
        assert_eq!(config.password, None);
        assert_eq!(config.client_id, "medtech");
        assert_eq!(config.keep_alive, DEFAULT_KEEP_ALIVE);
    }

    #[test]
    fn credentials_are_percent_decoded() {
        let config = Config::from_url("MQTT://dev%40ice:p%3Aa%2Fss%25@127.0.0.1:18830/", "c").unwrap();
        assert_eq!(config.username.as_deref(), Some("dev@ice"));
        assert_eq!(config.password.as_deref(), Some("p:a/ss%"));
        assert_eq!((config.host.as_str(), config.port), ("127.0.0.1", 18830));

        let user_only = Config::from_url("mqtt://user@h", "c").unwrap();
        assert_eq!((user_only.username.as_deref(), user_only.password), (Some("user"), None));
        // An '@' left unescaped in the password still splits at the last one.
        let at_in_password = Config::from_url("mqtt://u:p@ss@h", "c").unwrap();
        assert_eq!(at_in_password.password.as_deref(), Some("p@ss"));
    }

    #[test]
    fn ipv6_needs_brackets() {
        let config = Config::from_url("mqtt://[::1]:1884", "c").unwrap();
        assert_eq!((config.host.as_str(), config.port), ("::1", 1884));
        assert_eq!(config.broker(), "[::1]:1884");
        assert_eq!(Config::from_url("mqtt://[::1]", "c").unwrap().port, 1883);
        assert!(Config::from_url("mqtt://::1", "c").is_err());
    }

    #[test]
    fn unusable_urls_are_refused_without_repeating_them() {
        for url in [
            "broker:1883",
            "http://h",
            "mqtts://u:secret@h",
            "mqtt://u:secret@h:0",
            "mqtt://u:secret@h:99999",
            "mqtt://u:secret@h:x",
            "mqtt://u:secret@",
            "mqtt://u:secret@h/topic",
            "mqtt://u:secret@h?x=1",
            "mqtt://u:secret%zz@h",
            "mqtt://u:secret%ff@h",
            "mqtt://u:secret@[::1",
        ] {
            let err = Config::from_url(url, "c").expect_err(url);
            assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{url}");
            assert!(!err.to_string().contains("secret"), "{url}: {err}");
        }
        assert!(Config::from_url("mqtts://h", "c").unwrap_err().to_string().contains("TLS"));
    }

    #[test]
    fn debug_hides_the_password() {
        let config = Config::from_url("mqtt://u:hunter2@h", "c").unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }

    #[test]
    fn keep_alive_rounds_up_to_whole_seconds() {
        let mut config = Config::from_url("mqtt://h", "c").unwrap();
        config.keep_alive = Duration::from_millis(1500);
        assert_eq!(config.keep_alive_secs(), 2);
        config.keep_alive = Duration::ZERO;
        assert_eq!(config.keep_alive_secs(), 0);
        config.keep_alive = Duration::from_secs(1 << 20);
        assert_eq!(config.keep_alive_secs(), u16::MAX);
    }
}
