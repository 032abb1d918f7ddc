//! TLS as a scanner and as clients see it: only TLS 1.2 and 1.3 with forward-secret AEAD suites
//! (scanned with Debian's `openssl s_client`), Strict-Transport-Security over HTTPS and never over
//! `--http`, certificate files replaced on disk served to new connections without a restart, and
//! mutual TLS for service-to-service callers.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

use crate::harness::{temp_dir, Server};

/// A certificate authority made for one test.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate and its key, as PEM.
struct Pair {
    cert: String,
    key: String,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa { issuer: Issuer::new(params, key), pem }
    }

    /// A certificate for the loopback listener, whose subject is `name`.
    fn server(&self, name: &str) -> Pair {
        self.sign(name, vec!["127.0.0.1".into(), "localhost".into()], ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate for mutual TLS.
    fn client(&self, name: &str) -> Pair {
        self.sign(name, vec![name.to_owned()], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn sign(&self, name: &str, alt_names: Vec<String>, usage: ExtendedKeyUsagePurpose) -> Pair {
        let mut params = CertificateParams::new(alt_names).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pair { cert: cert.pem(), key: key.serialize_pem() }
    }
}

/// Writes `pair` as `<name>.pem` and `<name>-key.pem` in `dir`; returns their paths.
fn write_pair(dir: &Path, name: &str, pair: &Pair) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem")));
    std::fs::write(&cert, &pair.cert).unwrap();
    std::fs::write(&key, &pair.key).unwrap();
    (cert, key)
}

fn der(pem: &str) -> Vec<u8> {
    rustls_pemfile::certs(&mut pem.as_bytes()).next().unwrap().unwrap().to_vec()
}

/// A rustls client trusting `roots_pem`, showing `identity` when the server asks for one.
fn client_config(roots_pem: &str, identity: Option<&Pair>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut roots_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match identity {
        None => builder.with_no_client_auth(),
        Some(pair) => {
            let chain = rustls_pemfile::certs(&mut pair.cert.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
            let key = rustls_pemfile::private_key(&mut pair.key.as_bytes()).unwrap().unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    })
}

/// The DER of the certificate a new connection to `host_port` is served.
fn served_certificate(host_port: &str, config: &Arc<rustls::ClientConfig>) -> std::io::Result<Vec<u8>> {
    let mut tcp = std::net::TcpStream::connect(host_port)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    Ok(conn.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default())
}

/// `openssl s_client` against the listener with `args`, its standard input closed so that it
/// leaves right after the handshake.
fn s_client(server: &Server, args: &[&str]) -> Output {
    Command::new("openssl")
        .args(["s_client", "-connect", server.host_port(), "-brief"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl (Debian's openssl package)")
}

/// Whether the handshake completed, and openssl's report of it.
fn handshake(server: &Server, args: &[&str]) -> (bool, String) {
    let output = s_client(server, args);
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success() && text.contains("CONNECTION ESTABLISHED"), text)
}

/// Asserts that the server itself turned the handshake down: it answered with an alert, so the
/// client did offer what `args` name (OpenSSL at security level 0 offers TLS 1.0 and weak suites).
#[track_caller]
fn assert_refused_by_server(server: &Server, args: &[&str]) {
    let (established, text) = handshake(server, args);
    assert!(!established && text.contains("SSL alert number"), "{args:?} was not refused by the server: {text}");
}

/// Every TLS 1.2 cipher suite OpenSSL knows (at security level 0), tried one by one: the ones
/// the server accepts.
fn tls12_suites_accepted(server: &Server) -> BTreeSet<String> {
    let list = Command::new("openssl").args(["ciphers", "ALL:COMPLEMENTOFALL:@SECLEVEL=0"]).output().unwrap();
    let list = String::from_utf8(list.stdout).unwrap();
    let suites: Vec<&str> = list.trim().split(':').collect();
    assert!(suites.len() > 50, "openssl knows {} suites: {list}", suites.len());
    suites
        .into_iter()
        .filter(|suite| handshake(server, &["-tls1_2", "-cipher", &format!("{suite}:@SECLEVEL=0")]).0)
        .map(str::to_owned)
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn scan_finds_only_tls_1_2_and_1_3_with_forward_secret_aead_suites() {
    // The generated certificate has an ECDSA P-256 key.
    let server = Server::start();
    for version in ["-tls1", "-tls1_1"] {
        assert_refused_by_server(&server, &[version, "-cipher", "DEFAULT:@SECLEVEL=0"]);
    }
    for (flag, name) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let (established, text) = handshake(&server, &[flag]);
        assert!(established && text.contains(&format!("Protocol version: {name}")), "{flag}: {text}");
    }
    // TLS 1.3's CCM suites are not among the allowed ones.
    assert_refused_by_server(&server, &["-tls1_3", "-ciphersuites", "TLS_AES_128_CCM_SHA256:TLS_AES_128_CCM_8_SHA256"]);
    for weak in ["AES128-SHA", "ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"] {
        assert_refused_by_server(&server, &["-tls1_2", "-cipher", &format!("{weak}:@SECLEVEL=0")]);
    }
    assert_eq!(
        tls12_suites_accepted(&server),
        set(&["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305"])
    );
}

#[test]
fn scan_with_an_rsa_certificate_finds_only_ecdhe_aead_suites() {
    // rcgen cannot make RSA keys with ring; openssl can.
    let pki = temp_dir("pki");
    let (cert, key) = (pki.join("rsa.pem"), pki.join("rsa-key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Fhirside RSA"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let server = Server::start_in(
        &temp_dir("data"),
        &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
    );
    let (established, text) = handshake(&server, &["-tls1_3"]);
    assert!(established && text.contains("Peer certificate: CN = Fhirside RSA"), "{text}");
    // Static RSA key exchange (no forward secrecy), even with AES-GCM, and CBC suites are refused.
    for weak in ["AES128-GCM-SHA256", "AES128-SHA", "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA384"] {
        assert_refused_by_server(&server, &["-tls1_2", "-cipher", &format!("{weak}:@SECLEVEL=0")]);
    }
    assert_eq!(
        tls12_suites_accepted(&server),
        set(&["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305"])
    );
    let _ = std::fs::remove_dir_all(&pki);
}

#[test]
fn strict_transport_security_on_every_https_response_and_never_over_http() {
    // Authentication on: FHIR responses, refusals and the authority's own routes all carry it.
    let server = Server::start_secure(&[]);
    let discovery = format!("/{}/v2.0/.well-known/openid-configuration", server.tenant.as_deref().unwrap());
    for (path, status) in [("/metadata", 200), ("/Patient", 401), (discovery.as_str(), 200)] {
        let response = server.get(path).expect(status);
        assert_eq!(response.header("strict-transport-security"), Some("max-age=31536000"), "{path}");
    }
    // A browser's preflight, answered before authentication.
    let response = server.request("OPTIONS", "/Patient", &[("origin", "https://app.example")], None);
    assert_eq!(response.header("strict-transport-security"), Some("max-age=31536000"));
    drop(server);

    let server = Server::launch_with_env(
        &temp_dir("data"),
        &["--auth", "none", "--hsts-include-subdomains"],
        &[("FHIRSIDE_HSTS_MAX_AGE", "600")],
        None,
    );
    let response = server.get("/Patient/missing").expect(404);
    assert_eq!(response.header("strict-transport-security"), Some("max-age=600; includeSubDomains"));
    drop(server);

    let server = Server::start_in(&temp_dir("data"), &["--hsts-max-age", "0"]);
    assert_eq!(server.get("/metadata").expect(200).header("strict-transport-security"), None, "0 turns it off");
    drop(server);

    // Plain HTTP never sends it, whatever is configured.
    let server = Server::start_in(&temp_dir("data"), &["--http", "--hsts-max-age", "600"]);
    assert!(server.base.starts_with("http://"));
    assert_eq!(server.get("/metadata").expect(200).header("strict-transport-security"), None);
}

#[test]
fn plain_http_stays_on_loopback_and_cannot_stand_in_for_mutual_tls() {
    let refused = crate::harness::serve_refused;
    assert!(refused(&["--listen", "[::]:0"], &[("FHIRSIDE_HTTP", "true")]).contains("loopback"));
    assert!(refused(&["--listen", "192.0.2.1:0", "--http"], &[]).contains("loopback"));
    let message = refused(&["--http", "--tls-client-ca", "/nonexistent/ca.pem"], &[]);
    assert!(message.contains("needs HTTPS"), "{message}");
}

/// Whether `ready` comes true within `limit`, polled every 100 ms.
fn eventually(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn replaced_certificate_files_are_served_to_new_connections_and_a_broken_replacement_is_not() {
    let pki = temp_dir("pki");
    let ca = TestCa::new("Fhirside test CA");
    let (a, b) = (ca.server("Fhirside A"), ca.server("Fhirside B"));
    let (cert, key) = write_pair(&pki, "server", &a);
    let log = pki.join("server.log");
    let server = Server::launch(
        &temp_dir("data"),
        &["--auth", "none", "--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
        Some(&log),
    );
    let trust = client_config(&ca.pem, None);
    assert_eq!(served_certificate(server.host_port(), &trust).unwrap(), der(&a.cert));

    // Replaced as most tools do it: the certificate, then the key, each rewritten in place.
    write_pair(&pki, "server", &b);
    let served = eventually(Duration::from_secs(10), || {
        served_certificate(server.host_port(), &trust).is_ok_and(|served| served == der(&b.cert))
    });
    // The server polls every second and waits one more poll for the files to settle, so this
    // takes two or three seconds; the limit leaves room for a loaded machine.
    assert!(served, "the new certificate is not served after 10 s");
    server.client_with_tls(trust.clone()).request("GET", "/metadata", &[], None).expect(200);

    // A truncated certificate (a copy cut short) is not served: the last good pair is, and the
    // server says why.
    std::fs::write(&cert, &b.cert[..b.cert.len() / 2]).unwrap();
    let logged = eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|text| text.contains("do not load"))
    });
    assert!(logged, "no reason logged: {}", std::fs::read_to_string(&log).unwrap_or_default());
    assert_eq!(served_certificate(server.host_port(), &trust).unwrap(), der(&b.cert));
    let text = std::fs::read_to_string(&log).unwrap();
    let reason = text.lines().find(|l| l.contains("do not load")).unwrap();
    assert!(reason.contains("server.pem") && reason.contains("previous certificate is still served"), "{reason}");
    assert!(!text.contains("PRIVATE KEY") && !text.contains(b.key.lines().nth(1).unwrap()), "no key in the log");

    // Fixed again: served again.
    std::fs::write(&cert, &a.cert).unwrap();
    std::fs::write(&key, &a.key).unwrap();
    let served = eventually(Duration::from_secs(10), || {
        served_certificate(server.host_port(), &trust).is_ok_and(|served| served == der(&a.cert))
    });
    assert!(served, "the repaired pair is not served after 10 s");
    drop(server);
    let _ = std::fs::remove_dir_all(&pki);
}

/// A server on `--tls-cert` from a test CA asking client certificates of another (`mode`), with
/// authentication on; the server CA's PEM, a client allowed in, and one from a third CA.
fn mutual_tls_server(mode: &str) -> (Server, String, Pair, Pair, PathBuf) {
    let pki = temp_dir("pki");
    let server_ca = TestCa::new("Fhirside server CA");
    let client_ca = TestCa::new("Fhirside client CA");
    let (cert, key) = write_pair(&pki, "server", &server_ca.server("Fhirside"));
    let client_ca_file = pki.join("client-ca.pem");
    std::fs::write(&client_ca_file, &client_ca.pem).unwrap();
    let server = Server::launch(
        &temp_dir("data"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--tls-client-ca",
            client_ca_file.to_str().unwrap(),
            "--tls-client-auth",
            mode,
        ],
        None,
    );
    let stranger = TestCa::new("Someone else's CA").client("intruder");
    (server, server_ca.pem, client_ca.client("billing-service"), stranger, pki)
}

/// `GET /metadata` with `config`: the status, or the error that ended the connection.
fn metadata(server: &Server, config: Arc<rustls::ClientConfig>) -> Result<u16, String> {
    let mut client = server.client_with_tls(config);
    client.try_request("GET", "/metadata", &[], None).map(|r| r.status).map_err(|e| e.to_string())
}

/// `GET /metadata` through `openssl s_client` with `args`: what the server answered, and
/// OpenSSL's report.
fn openssl_get(server: &Server, args: &[&str]) -> (String, String) {
    let mut openssl = Command::new("openssl")
        .args(["s_client", "-connect", server.host_port(), "-quiet"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl (Debian's openssl package)");
    // Closing standard input after the request makes s_client leave once the answer is in.
    let mut stdin = openssl.stdin.take().unwrap();
    let _ = std::io::Write::write_all(&mut stdin, b"GET /metadata HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    drop(stdin);
    let output = openssl.wait_with_output().unwrap();
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn mutual_tls_required_lets_in_only_clients_with_a_certificate_from_the_client_ca() {
    let (server, roots, service, stranger, pki) = mutual_tls_server("required");
    assert_eq!(metadata(&server, client_config(&roots, Some(&service))), Ok(200));
    let error = metadata(&server, client_config(&roots, None)).unwrap_err();
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    assert!(metadata(&server, client_config(&roots, Some(&stranger))).is_err());
    // OpenSSL's client as well: with the certificate it gets an answer, without one an alert.
    let (service_cert, service_key) = write_pair(&pki, "billing-service", &service);
    let (cert, key) = (service_cert.to_str().unwrap(), service_key.to_str().unwrap());
    let (answer, _) = openssl_get(&server, &["-cert", cert, "-key", key]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    for version in ["-tls1_2", "-tls1_3"] {
        let (answer, log) = openssl_get(&server, &[version]);
        assert!(answer.is_empty() && log.contains("alert certificate required"), "{version}: {answer} {log}");
    }

    // The certificate only opens the connection: the token still decides what the caller may do.
    let mut client = server.client_with_tls(client_config(&roots, Some(&service)));
    client.request("GET", "/Patient", &[], None).expect(401);
    drop(server);
    let _ = std::fs::remove_dir_all(&pki);
}

#[test]
fn mutual_tls_optional_lets_in_clients_without_a_certificate_but_not_with_a_foreign_one() {
    let (server, roots, service, stranger, pki) = mutual_tls_server("optional");
    assert_eq!(metadata(&server, client_config(&roots, Some(&service))), Ok(200));
    assert_eq!(metadata(&server, client_config(&roots, None)), Ok(200));
    assert!(metadata(&server, client_config(&roots, Some(&stranger))).is_err());
    drop(server);
    let _ = std::fs::remove_dir_all(&pki);
}
