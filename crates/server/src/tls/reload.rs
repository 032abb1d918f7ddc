//! Certificates replaced on disk are served without a restart.
//!
//! Something else renews the certificate (certbot, cert-manager, an operator with `cp`), so the
//! server watches its files. Every [`POLL`] it reads them and compares a fingerprint of their bytes
//! with what it loaded. They are a few kilobytes, so this costs little more than a `stat`. It is
//! also more reliable than metadata: a renewed certificate is usually the same size as the old
//! one, a copy in place keeps the inode, and modification times move in clock ticks. Polling works
//! where change notifications do not (Kubernetes secret volumes that swap a symlink, network file
//! systems). A certificate and its key are seldom replaced in one atomic step, so a change is acted
//! on only once the files have stayed the same for one more poll. The files are then loaded into a
//! whole new [`ServerConfig`] (certificate, key and client CA bundle alike). If they do not load,
//! the configuration in force stays and the reason is logged, once per change.
//!
//! A new configuration also starts a new session cache: a session resumed across the change would
//! skip the new certificate and the new client CA's check.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;

use super::{server_config, ClientAuth, TlsFiles};

/// How often the files are looked at: a renewed certificate is served within two or three of these.
pub const POLL: Duration = Duration::from_secs(1);

/// The TLS configuration in force, shared by the listener (which takes it for each new
/// connection) and the [`Reloader`] (which replaces it).
#[derive(Clone)]
pub struct LiveConfig(Arc<RwLock<Arc<ServerConfig>>>);

impl LiveConfig {
    /// `config`, in force until a [`Reloader`] replaces it (or for good, without one).
    pub fn new(config: Arc<ServerConfig>) -> LiveConfig {
        LiveConfig(Arc::new(RwLock::new(config)))
    }

    /// The configuration for a new connection; connections already open keep theirs.
    pub fn current(&self) -> Arc<ServerConfig> {
        // A poisoned lock still holds a complete configuration: it is only ever replaced whole.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn replace(&self, config: Arc<ServerConfig>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = config;
    }
}

/// What the watched files held when polled: a fingerprint of each one's bytes, `None` for one
/// that could not be read (missing, or mid-rename).
type Stamp = Vec<Option<(usize, u64)>>;

/// Watches the files of a [`LiveConfig`] and replaces it when they change.
pub struct Reloader {
    files: TlsFiles,
    client_auth: ClientAuth,
    live: LiveConfig,
    /// The files as they were when last loaded (or last found unloadable).
    loaded: Stamp,
    /// A change seen at the last poll, acted on if the next poll sees the same.
    pending: Option<Stamp>,
}

/// What a poll did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// The files changed and the new configuration is in force.
    Replaced,
    /// The files changed but do not load (the reason); the previous configuration stays.
    Kept(String),
}

impl Reloader {
    /// Loads the files; an error here (unlike on a later change) means the server cannot start.
    pub fn load(files: TlsFiles, client_auth: ClientAuth) -> Result<Reloader, String> {
        let loaded = stamp(&files, &client_auth);
        let live = LiveConfig::new(server_config(&files, &client_auth)?);
        Ok(Reloader { files, client_auth, live, loaded, pending: None })
    }

    pub fn live(&self) -> LiveConfig {
        self.live.clone()
    }

    /// One poll: `None` while nothing changed (or a change is still settling).
    pub fn check(&mut self) -> Option<Reload> {
        let now = stamp(&self.files, &self.client_auth);
        if now == self.loaded {
            self.pending = None;
            return None;
        }
        if self.pending.as_ref() != Some(&now) {
            self.pending = Some(now);
            return None;
        }
        self.pending = None;
        // Remembered whether or not it loads, so that a bad pair is reported once, not every poll.
        self.loaded = now;
        match server_config(&self.files, &self.client_auth) {
            Ok(config) => {
                self.live.replace(config);
                Some(Reload::Replaced)
            }
            Err(error) => Some(Reload::Kept(error)),
        }
    }

    /// Polls every [`POLL`] on the runtime, logging each change to standard error, until aborted.
    /// A poll reads a few small local files, so it runs inline rather than on a blocking thread.
    pub fn spawn(mut self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(POLL);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                match self.check() {
                    None => {}
                    Some(Reload::Replaced) => {
                        eprintln!("tls: the files changed; new connections get the certificate in {}", self.describe())
                    }
                    Some(Reload::Kept(error)) => eprintln!(
                        "tls: the files changed but do not load, so the previous certificate is still served: {error}"
                    ),
                }
            }
        })
    }

    fn describe(&self) -> String {
        let mut text = format!("{} (key {})", self.files.cert.display(), self.files.key.display());
        if let Some(ca) = self.client_auth.ca() {
            text.push_str(&format!(", client CA {}", ca.display()));
        }
        text
    }
}

fn stamp(files: &TlsFiles, client_auth: &ClientAuth) -> Stamp {
    [Some(files.cert.as_path()), Some(files.key.as_path()), client_auth.ca()]
        .into_iter()
        .flatten()
        .map(|path| {
            // SipHash with fixed keys: it only has to notice edits, and whoever can write these
            // files does not need a collision to take over the server.
            std::fs::read(path).ok().map(|bytes| {
                let mut hasher = std::hash::DefaultHasher::new();
                std::hash::Hasher::write(&mut hasher, &bytes);
                (bytes.len(), std::hash::Hasher::finish(&hasher))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap().self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_changed_pair_is_served_once_settled_and_a_bad_one_keeps_the_last_good() {
        let dir = std::env::temp_dir().join(format!("fhirside-tls-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem"), ca: None };
        let (cert_a, key_a) = pair("a.example");
        std::fs::write(&files.cert, &cert_a).unwrap();
        std::fs::write(&files.key, &key_a).unwrap();
        let mut reloader = Reloader::load(files.clone(), ClientAuth::Off).unwrap();
        let live = reloader.live();
        let first = live.current();
        assert_eq!(reloader.check(), None, "nothing changed");

        let (cert_b, key_b) = pair("b.example");
        std::fs::write(&files.cert, &cert_b).unwrap();
        std::fs::write(&files.key, &key_b).unwrap();
        assert_eq!(reloader.check(), None, "a change waits one poll to settle");
        assert!(Arc::ptr_eq(&first, &live.current()));
        assert_eq!(reloader.check(), Some(Reload::Replaced));
        let second = live.current();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(reloader.check(), None);

        // A key that does not go with the certificate: the last good configuration stays.
        std::fs::write(&files.key, &key_a).unwrap();
        assert_eq!(reloader.check(), None);
        match reloader.check() {
            Some(Reload::Kept(reason)) => assert!(reason.contains("key.pem"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert!(Arc::ptr_eq(&second, &live.current()));
        assert_eq!((reloader.check(), reloader.check()), (None, None), "reported once");

        // A missing file is a change that does not load, and its return is another change.
        std::fs::remove_file(&files.cert).unwrap();
        reloader.check();
        assert!(matches!(reloader.check(), Some(Reload::Kept(reason)) if reason.contains("cannot read")));
        std::fs::write(&files.cert, &cert_a).unwrap();
        reloader.check();
        assert_eq!(reloader.check(), Some(Reload::Replaced));
        assert!(!Arc::ptr_eq(&second, &live.current()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_client_ca_that_does_not_load_refuses_start() {
        let dir = std::env::temp_dir().join(format!("fhirside-tls-client-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem"), ca: None };
        let (cert, key) = pair("a.example");
        std::fs::write(&files.cert, &cert).unwrap();
        std::fs::write(&files.key, &key).unwrap();
        std::fs::write(dir.join("empty.pem"), "").unwrap();
        let required = ClientAuth::Required { ca: dir.join("empty.pem") };
        let error = Reloader::load(files.clone(), required).err().unwrap();
        assert!(error.contains("holds no PEM certificate"), "{error}");
        let optional = ClientAuth::Optional { ca: dir.join("cert.pem") };
        assert!(Reloader::load(files, optional).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
