//! A private Mosquitto for tests (this crate's and the server's MedTech tests) and the throughput
//! example: started on a free loopback port with its configuration in a temporary directory,
//! killed when dropped. A missing `/usr/sbin/mosquitto` fails the test with a hint; nothing is
//! skipped.
//!
//! Private brokers make tests independent of the shared one at 127.0.0.1:1883 and of its
//! configuration (whose `max_inflight_messages` is Mosquitto's default of 20).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::Config;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";
const MOSQUITTO_PASSWD: &str = "/usr/bin/mosquitto_passwd";
const INSTALL_HINT: &str = "install Mosquitto (apt-get install mosquitto mosquitto-clients)";

/// The shared broker, for a test that must run against a stock configuration.
pub const SHARED_BROKER_URL: &str = "mqtt://127.0.0.1:1883";

/// How the private broker is configured.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// Mosquitto's default is 20; tests default to 1000, what the crate docs recommend.
    pub max_inflight_messages: u32,
    /// When not empty, anonymous clients are refused and these `(user, password)` pairs accepted.
    pub users: Vec<(String, String)>,
}

impl Default for BrokerOptions {
    fn default() -> BrokerOptions {
        BrokerOptions { max_inflight_messages: 1000, users: Vec::new() }
    }
}

/// A running private Mosquitto.
pub struct Broker {
    child: Child,
    dir: PathBuf,
    pub port: u16,
}

impl Broker {
    /// Anonymous access, 1000 messages in flight per client.
    pub fn start() -> Broker {
        Broker::start_with(&BrokerOptions::default())
    }

    pub fn start_with(options: &BrokerOptions) -> Broker {
        let dir = temp_dir();
        let port = free_port();
        let mut conf = format!(
            "listener {port} 127.0.0.1\n\
             max_inflight_messages {}\n\
             max_queued_messages 10000000\n\
             persistence false\n\
             log_dest stderr\n\
             log_type error\n\
             log_type warning\n\
             log_type notice\n\
             # Run as root, Mosquitto would switch to its own user, who cannot read this directory.\n\
             user root\n",
            options.max_inflight_messages
        );
        if options.users.is_empty() {
            conf.push_str("allow_anonymous true\n");
        } else {
            let passwords = dir.join("passwd");
            for (i, (user, password)) in options.users.iter().enumerate() {
                let mut command = Command::new(MOSQUITTO_PASSWD);
                if i == 0 {
                    command.arg("-c");
                }
                let status = command
                    .arg("-b")
                    .arg(&passwords)
                    .args([user, password])
                    .stdout(Stdio::null())
                    .status()
                    .unwrap_or_else(|e| panic!("cannot run {MOSQUITTO_PASSWD} ({e}); {INSTALL_HINT}"));
                assert!(status.success(), "{MOSQUITTO_PASSWD} failed: {status}");
            }
            conf.push_str(&format!("allow_anonymous false\npassword_file {}\n", passwords.display()));
        }
        let conf_path = dir.join("mosquitto.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let log = std::fs::File::create(dir.join("mosquitto.log")).unwrap();
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {MOSQUITTO} ({e}); {INSTALL_HINT}"));
        let mut broker = Broker { child, dir, port };
        broker.wait_until_listening();
        broker
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            let log = || std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default();
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("mosquitto exited ({status}) before listening\n--- its output:\n{}", log());
            }
            if Instant::now() > deadline {
                panic!("mosquitto did not listen on port {} within 20 s\n--- its output:\n{}", self.port, log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `mqtt://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// A configuration for this broker, anonymous.
    pub fn config(&self, client_id: &str) -> Config {
        Config::from_url(&self.url(), client_id).unwrap()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A name no other test (in this process or another) uses: for client ids and topics on a shared
/// broker.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{nanos}-{n}", std::process::id())
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(unique("fhirside-mqtt"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
