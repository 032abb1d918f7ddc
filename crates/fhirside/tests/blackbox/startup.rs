//! Starting the binary: TLS by default with a CA clients can trust, and the loopback rules.

use std::process::Command;

use crate::harness::{temp_dir, Server};

#[test]
fn https_by_default_with_a_trustable_ca() {
    let server = Server::start();
    assert!(server.base.starts_with("https://127.0.0.1:"));
    let ca = server.ca.clone().expect("the CA path is printed");
    assert!(ca.starts_with(server.data_dir.canonicalize().unwrap()));
    // The harness client verifies the server certificate against that CA.
    server.get("/metadata").expect(200);
    // A restart keeps the same CA, so clients keep trusting the server.
    let before = std::fs::read(&ca).unwrap();
    let mut server = server;
    server.restart();
    assert_eq!(std::fs::read(server.ca.as_ref().unwrap()).unwrap(), before);
    server.get("/metadata").expect(200);
}

#[test]
fn refuses_unsafe_listen_addresses() {
    for args in [["--listen", "0.0.0.0:0", "--http"].as_slice(), ["--listen", "0.0.0.0:0", "--auth", "none"].as_slice()]
    {
        let output = Command::new(env!("CARGO_BIN_EXE_fhirside"))
            .args(["serve", "--data-dir"])
            .arg(temp_dir("unsafe"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("loopback"), "{args:?}");
    }
}

#[test]
fn one_server_per_data_directory() {
    let server = Server::start_http();
    let output = Command::new(env!("CARGO_BIN_EXE_fhirside"))
        .args(["serve", "--http", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&server.data_dir)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("in use"));
}

#[test]
fn settings_come_from_the_environment_and_the_config_file() {
    use std::io::BufRead;
    let dir = temp_dir("env");
    let config = dir.join("fhirside.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nauth = \"none\"\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fhirside"))
        .arg("serve")
        .env("FHIRSIDE_CONFIG", &config)
        .env("FHIRSIDE_HTTP", "true")
        .env("FHIRSIDE_DATA_DIR", dir.join("data"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let base = lines.map_while(Result::ok).find_map(|l| l.strip_prefix("FHIR base URL: ").map(str::to_owned));
    let _ = child.kill();
    let _ = child.wait();
    let base = base.expect("the server printed its base URL");
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    assert!(!base.ends_with(":8443"), "the file's port 0 was used: {base}");
    assert!(dir.join("data/fhirside.db").exists(), "FHIRSIDE_DATA_DIR was used");
}
