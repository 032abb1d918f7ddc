//! For tests (this crate's and, with the `testing` feature, other crates') and the throughput
//! example: unique names on a shared server, a private `nats-server` with JetStream on a free port
//! that can be restarted over the same store, and deleting what a test created.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::connection::{unique_token, Connection};
use crate::error::Error;
use crate::jetstream::{self, CONSUMER_NOT_FOUND, STREAM_NOT_FOUND};
use crate::Config;

/// The server tests share (`nats-server -a 127.0.0.1 -p 4222 -js`), overridable with `NATS_URL`.
pub fn shared_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A configuration with a stream, subject and consumer no other test uses.
pub fn unique_config(url: &str) -> Config {
    let token = unique_token();
    Config::from_url(url, &format!("TEST_{token}"), &format!("test.{token}"), &format!("c_{token}"))
        .expect("a valid URL")
}

/// Deletes the stream (and so its consumers); a missing stream is not an error.
pub async fn delete_stream(config: &Config) -> Result<(), Error> {
    let mut connection = Connection::open(config).await?;
    let subject = format!("$JS.API.STREAM.DELETE.{}", config.stream);
    match jetstream::api(&mut connection, &subject, &json!({})).await {
        Err(error) if error.api_code() != Some(STREAM_NOT_FOUND) => Err(error),
        _ => Ok(()),
    }
}

/// Deletes the durable consumer; a missing one is not an error.
pub async fn delete_consumer(config: &Config) -> Result<(), Error> {
    let mut connection = Connection::open(config).await?;
    let subject = format!("$JS.API.CONSUMER.DELETE.{}.{}", config.stream, config.consumer);
    match jetstream::api(&mut connection, &subject, &json!({})).await {
        Err(error) if error.api_code() != Some(CONSUMER_NOT_FOUND) => Err(error),
        _ => Ok(()),
    }
}

/// A `nats-server -js` of one's own, on a free port with its store in a fresh directory; killed (and
/// the directory removed) on drop.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
    options: Vec<String>,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        NatsServer::start_with(&[])
    }

    /// With more command-line options, e.g. `["--user", "u", "--pass", "p"]`.
    pub fn start_with(options: &[&str]) -> NatsServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let store = std::env::temp_dir().join(format!("fhirside-nats-{}", unique_token()));
        let options = options.iter().map(|o| o.to_string()).collect();
        let mut server = NatsServer { child: None, port, store, options };
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (SIGTERM: JetStream writes its state) and starts it again on the same port
    /// and store.
    pub fn restart(&mut self) {
        if let Some(child) = &self.child {
            let status = Command::new(self.binary())
                .args(["--signal", &format!("term={}", child.id())])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            assert!(status.is_ok_and(|s| s.success()), "nats-server --signal term");
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        self.spawn();
    }

    /// Kills the server (SIGKILL, as in a crash) and starts it again on the same port and store.
    pub fn crash_and_restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn binary(&self) -> String {
        std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".to_owned())
    }

    fn spawn(&mut self) {
        let child = Command::new(self.binary())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&self.store)
            .args(&self.options)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on the PATH (or NATS_SERVER)");
        self.child = Some(child);
        // Ready when it accepts connections; JetStream answers shortly after.
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("nats-server did not listen on port {} within 5 s", self.port);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
