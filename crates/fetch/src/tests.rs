//! The client against the test server of `testing.rs`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::testing::{serve, temp_file, tls_fixture, TestRequest, TestResponse};
use crate::url::parse_url;
use crate::*;

/// A client that needs no system roots: the test CA is enough.
fn client_trusting(ca_pem: &str) -> Client {
    let path = temp_file(ca_pem);
    let client = Client::new(Some(&path)).unwrap();
    let _ = std::fs::remove_file(path);
    client
}

fn plain_client() -> Client {
    client_trusting(&tls_fixture().0)
}

#[test]
fn parses_urls() {
    let t = parse_url("https://Example.org/a/b?c=d#frag").unwrap();
    assert_eq!((t.tls, t.host.as_str(), t.ip, t.port, t.path.as_str()), (true, "example.org", None, 443, "/a/b?c=d"));
    assert_eq!(t.host_header(), "example.org");
    assert_eq!(t.redacted(), "https://example.org/a/b");

    let t = parse_url("http://127.0.0.1:8080").unwrap();
    assert_eq!((t.tls, t.port, t.path.as_str()), (false, 8080, "/"));
    assert_eq!(t.ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    assert_eq!(t.host_header(), "127.0.0.1:8080");

    let t = parse_url("https://[::1]:8443?x=1").unwrap();
    assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("::1", 8443, "/?x=1"));
    assert_eq!(t.ip, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    assert_eq!(t.host_header(), "[::1]:8443");
    assert_eq!(parse_url("https://[2001:db8::1]/").unwrap().host_header(), "[2001:db8::1]");
    assert_eq!(parse_url("https://h:443/").unwrap().host_header(), "h");
    assert_eq!(parse_url("https://h:/").unwrap().port, 443);
    assert_eq!(parse_url("https://h/a b/é").unwrap().path, "/a%20b/%C3%A9");

    for bad in [
        "ftp://h/",
        "h/path",
        "https:///path",
        "https://user:pw@h/",
        "https://h:0/",
        "https://h:65536/",
        "https://h:8x/",
        "https://[::1/",
        "https://[::1]x/",
        "https://[nothex]/",
        "https://a:1:2/",
        "https://bad host/",
        "https://h/a\r\nInjected: yes",
    ] {
        assert!(matches!(parse_url(bad), Err(FetchError::InvalidUrl { .. })), "{bad}");
    }
    // Credentials in a refused URL are not echoed.
    let error = parse_url("https://user:secret@h/p?sig=topsecret").unwrap_err().to_string();
    assert!(!error.contains("secret"), "{error}");
}

#[tokio::test]
async fn gets_and_posts_over_plain_http_on_loopback() {
    let seen: Arc<Mutex<Vec<TestRequest>>> = Arc::default();
    let log = seen.clone();
    let address = serve(
        Arc::new(move |request: TestRequest| {
            log.lock().unwrap().push(request.clone());
            let mut response = TestResponse::new(201, request.body.clone());
            response.headers.push(("X-Echo-Path".into(), request.path.clone()));
            Some(response)
        }),
        None,
    )
    .await;
    let client = plain_client();

    let url = format!("http://127.0.0.1:{}/a/b?c=d", address.port());
    let response = client.get(&url, &[("Accept", "application/json"), ("Authorization", "Bearer t")]).await.unwrap();
    assert_eq!(response.status, 201);
    assert_eq!(response.header("x-echo-path"), Some("/a/b?c=d"));
    assert!(response.body.is_empty());

    let url = format!("http://localhost:{}/post", address.port());
    let response = client.post(&url, &[("Content-Type", "text/plain")], b"hello".to_vec()).await.unwrap();
    assert_eq!(response.body, b"hello");
    assert!(response.is_success());

    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].header("host"), Some(format!("127.0.0.1:{}", address.port()).as_str()));
    assert_eq!(seen[0].header("authorization"), Some("Bearer t"));
    assert_eq!(seen[0].header("accept"), Some("application/json"));
    assert!(seen[0].header("user-agent").is_some_and(|ua| ua.starts_with("fhirside/")));
    assert_eq!(seen[1].method, "POST");
    assert_eq!(seen[1].header("host"), Some(format!("localhost:{}", address.port()).as_str()));
    assert_eq!(seen[1].header("content-length"), Some("5"));
}

#[tokio::test]
async fn refuses_plain_http_beyond_loopback_without_connecting() {
    let client = plain_client();
    for url in ["http://example.org/", "http://10.0.0.1/", "http://[2001:db8::1]/", "http://localhost.example/"] {
        let error = client.get(url, &[]).await.unwrap_err();
        assert!(matches!(error, FetchError::InsecureUrl { .. }), "{url}: {error}");
    }
    assert!(client.get("http://127.0.0.2:1/", &[]).await.is_err_and(|e| matches!(e, FetchError::Connect { .. })));
}

#[tokio::test]
async fn plain_http_to_the_instance_metadata_address_only_when_asked() {
    let mut client = plain_client();
    client.set_timeouts(Duration::from_millis(300), Duration::from_secs(2));
    // Port 9 (discard): a real metadata service, should this run on a cloud VM, is not disturbed.
    let metadata = "http://169.254.169.254:9/metadata/identity/oauth2/token?api-version=2018-02-01";

    // Allowed: the request is sent. What answers depends on the machine (nothing, so a failed or
    // timed-out connection; a metadata service; a network's transparent proxy), so only the
    // refusal is ruled out.
    let outcome = client.send(Request::new("GET", metadata).header("Metadata", "true").instance_metadata()).await;
    assert!(!matches!(outcome, Err(FetchError::InsecureUrl { .. } | FetchError::InvalidUrl { .. })), "{outcome:?}");

    // Without asking, and for any other address even when asking: refused before connecting
    // (an attempt at these would time out or fail to connect instead).
    let error = client.send(Request::new("GET", metadata)).await.unwrap_err();
    assert!(matches!(error, FetchError::InsecureUrl { .. }), "{error}");
    assert!(!error.to_string().contains("api-version"), "{error}");
    for url in [
        "http://169.254.1.1/metadata/identity/oauth2/token",
        "http://169.254.169.253/",
        "http://10.0.0.1/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fe80::1]/",
        "http://metadata.example/",
    ] {
        let error = client.send(Request::new("GET", url).instance_metadata()).await.unwrap_err();
        assert!(matches!(error, FetchError::InsecureUrl { .. }), "{url}: {error}");
    }
}

#[tokio::test]
async fn https_with_a_configured_ca() {
    let (ca, config) = tls_fixture();
    let address =
        serve(Arc::new(|request: TestRequest| Some(TestResponse::new(200, request.path))), Some(config)).await;
    let client = client_trusting(&ca);
    for host in ["127.0.0.1", "localhost"] {
        let response = client.get(&format!("https://{host}:{}/secure?q=1", address.port()), &[]).await.unwrap();
        assert_eq!((response.status, response.body.as_slice()), (200, b"/secure?q=1".as_slice()));
    }

    // Another CA does not do.
    let (other_ca, _) = tls_fixture();
    let error = client_trusting(&other_ca).get(&format!("https://127.0.0.1:{}/", address.port()), &[]).await;
    assert!(matches!(error, Err(FetchError::Tls { .. })), "{error:?}");
    // Nor does the system store (when this machine has one).
    if let Ok(system) = Client::new(None) {
        let error = system.get(&format!("https://localhost:{}/", address.port()), &[]).await;
        assert!(matches!(error, Err(FetchError::Tls { .. })), "{error:?}");
    }
}

#[test]
fn refuses_a_ca_file_without_certificates() {
    let path = temp_file("not a certificate\n");
    assert!(Client::new(Some(&path)).unwrap_err().contains("holds no certificate"));
    let _ = std::fs::remove_file(path);
    assert!(Client::new(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err().contains("cannot read"));
}

#[tokio::test]
async fn limits_the_response_size() {
    let address = serve(
        Arc::new(|request: TestRequest| {
            let size = if request.path.starts_with("/big") { DEFAULT_MAX_RESPONSE_BYTES + 1 } else { 1000 };
            let mut response = TestResponse::new(200, vec![b'x'; size]);
            response.content_length = !request.path.ends_with("unsized");
            Some(response)
        }),
        None,
    )
    .await;
    let mut client = plain_client();
    let base = format!("http://127.0.0.1:{}", address.port());
    for path in ["/big", "/big-unsized"] {
        let error = client.get(&format!("{base}{path}"), &[]).await.unwrap_err();
        assert!(matches!(error, FetchError::TooLarge { limit: DEFAULT_MAX_RESPONSE_BYTES, .. }), "{error}");
    }
    assert_eq!(client.get(&format!("{base}/small-unsized"), &[]).await.unwrap().body.len(), 1000);
    client.set_max_response_bytes(999);
    for path in ["/small", "/small-unsized"] {
        let error = client.get(&format!("{base}{path}"), &[]).await.unwrap_err();
        assert!(matches!(error, FetchError::TooLarge { limit: 999, .. }), "{error}");
    }
}

#[tokio::test]
async fn follows_no_redirects() {
    let address = serve(
        Arc::new(|_| {
            let mut response = TestResponse::new(302, "");
            response.headers.push(("Location".into(), "https://elsewhere.example/".into()));
            Some(response)
        }),
        None,
    )
    .await;
    let response = plain_client().get(&format!("http://127.0.0.1:{}/", address.port()), &[]).await.unwrap();
    assert_eq!(response.status, 302);
    assert_eq!(response.header("location"), Some("https://elsewhere.example/"));
}

#[tokio::test]
async fn times_out_and_errors_keep_secrets_out() {
    let address = serve(Arc::new(|_| None), None).await;
    let mut client = plain_client();
    client.set_timeouts(Duration::from_secs(5), Duration::from_millis(200));
    let url = format!("http://127.0.0.1:{}/slow?sig=secret-sas", address.port());
    let error = client.post(&url, &[("Authorization", "Bearer secret-token")], b"secret-body".to_vec()).await;
    let error = error.unwrap_err();
    assert!(matches!(error, FetchError::Timeout { phase: TimeoutPhase::Request, .. }), "{error}");
    let text = error.to_string();
    assert!(text.contains(&format!("127.0.0.1:{}/slow", address.port())), "{text}");
    assert!(!text.contains("secret"), "{text}");

    let error = client.get(&url, &[("Authorization", "Bearer secret\r\nX: y")]).await.unwrap_err();
    assert!(matches!(error, FetchError::InvalidRequest { .. }), "{error}");
    assert!(!error.to_string().contains("secret"), "{error}");
    let error = client.get(&url, &[("Host", "elsewhere")]).await.unwrap_err();
    assert!(matches!(error, FetchError::InvalidRequest { .. }), "{error}");
}

#[tokio::test]
async fn sends_any_method_headers_and_body() {
    let seen: Arc<Mutex<Vec<TestRequest>>> = Arc::default();
    let log = seen.clone();
    let address = serve(
        Arc::new(move |request: TestRequest| {
            log.lock().unwrap().push(request);
            Some(TestResponse::new(201, ""))
        }),
        None,
    )
    .await;
    let url = format!("http://127.0.0.1:{}/container/blob?comp=block", address.port());
    let request = Request::new("PUT", &url)
        .header("x-ms-blob-type", "BlockBlob")
        .header("x-ms-meta-a", "1")
        .header("x-ms-meta-a", "2")
        .body(Bytes::from_static(b"payload"));
    assert_eq!(plain_client().send(request).await.unwrap().status, 201);
    // An empty upload still says how long it is (Azure answers 411 otherwise); a GET does not.
    plain_client().send(Request::new("PUT", &url)).await.unwrap();
    plain_client().send(Request::new("DELETE", &url)).await.unwrap();
    let error = plain_client().send(Request::new("BAD METHOD", &url)).await.unwrap_err();
    assert!(matches!(error, FetchError::InvalidRequest { .. }), "{error}");

    let seen = seen.lock().unwrap();
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("PUT", "/container/blob?comp=block"));
    assert_eq!(seen[0].body, b"payload");
    assert_eq!(seen[0].header("content-length"), Some("7"));
    assert_eq!(seen[0].header("x-ms-blob-type"), Some("BlockBlob"));
    let metas: Vec<&str> = seen[0]
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("x-ms-meta-a"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(metas, ["1", "2"]);
    assert_eq!(seen[1].header("content-length"), Some("0"));
    assert_eq!(seen[2].method, "DELETE");
    assert_eq!(seen[2].header("content-length"), None);
}

#[tokio::test]
async fn streams_bodies_beyond_the_buffered_limit() {
    const SIZE: usize = 3 * DEFAULT_MAX_RESPONSE_BYTES + 17;
    let address = serve(
        Arc::new(|request: TestRequest| {
            let body: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
            let mut response = TestResponse::new(200, body);
            response.content_length = request.path != "/unsized";
            Some(response)
        }),
        None,
    )
    .await;
    let client = plain_client();
    for path in ["/sized", "/unsized"] {
        let url = format!("http://127.0.0.1:{}{path}", address.port());
        let error = client.get(&url, &[]).await.unwrap_err();
        assert!(matches!(error, FetchError::TooLarge { .. }), "{error}");

        let mut response = client.send_streaming(Request::new("GET", &url)).await.unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.content_length(), (path == "/sized").then_some(SIZE as u64));
        let (mut total, mut chunks, mut expected) = (0usize, 0usize, 0usize);
        while let Some(chunk) = response.chunk().await.unwrap() {
            assert!(chunk.iter().all(|b| {
                let ok = *b == (expected % 251) as u8;
                expected += 1;
                ok
            }));
            total += chunk.len();
            chunks += 1;
        }
        assert_eq!(total, SIZE);
        assert!(chunks > 1, "{chunks}");
        assert!(response.chunk().await.unwrap().is_none());

        // A per-call limit applies to streams too, and a larger one to buffered reads.
        let request = Request::new("GET", &url).max_response_bytes(SIZE - 1);
        let mut response = client.send_streaming(request).await.unwrap();
        let error = loop {
            match response.chunk().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the limit was not enforced"),
                Err(e) => break e,
            }
        };
        assert!(matches!(error, FetchError::TooLarge { .. }), "{error}");
        let response = client.send(Request::new("GET", &url).max_response_bytes(SIZE)).await.unwrap();
        assert_eq!(response.body.len(), SIZE);
    }
}

#[tokio::test]
async fn per_call_timeouts() {
    let address = serve(Arc::new(|_| None), None).await;
    let client = plain_client();
    let url = format!("http://127.0.0.1:{}/slow", address.port());
    let started = std::time::Instant::now();
    let error = client.send(Request::new("GET", &url).timeout(Duration::from_millis(200))).await.unwrap_err();
    assert!(matches!(error, FetchError::Timeout { phase: TimeoutPhase::Request, .. }), "{error}");
    let error = client.send_streaming(Request::new("GET", &url).timeout(Duration::from_millis(200))).await.unwrap_err();
    assert!(matches!(error, FetchError::Timeout { phase: TimeoutPhase::Request, .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A server answering one request with 5 of the 100 body bytes it announces, then holding the
/// connection open for `hold` before closing it. Returns its port.
async fn short_body_server(hold: Duration) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buffer = [0u8; 4096];
        let _ = tcp.read(&mut buffer).await;
        let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello").await;
        tokio::time::sleep(hold).await;
    });
    port
}

#[tokio::test]
async fn a_stalled_stream_times_out() {
    // Announces more than it sends, then holds the connection open.
    let port = short_body_server(Duration::from_secs(30)).await;
    let url = format!("http://127.0.0.1:{port}/");
    let request = Request::new("GET", &url).idle_timeout(Duration::from_millis(200));
    let mut response = plain_client().send_streaming(request).await.unwrap();
    assert_eq!(response.chunk().await.unwrap().as_deref(), Some(b"hello".as_slice()));
    let error = response.chunk().await.unwrap_err();
    assert!(matches!(error, FetchError::Timeout { phase: TimeoutPhase::Body, .. }), "{error}");
}

#[tokio::test]
async fn a_truncated_body_is_an_error() {
    let port = short_body_server(Duration::ZERO).await;
    let url = format!("http://127.0.0.1:{port}/");
    let mut response = plain_client().send_streaming(Request::new("GET", &url)).await.unwrap();
    let mut error = None;
    for _ in 0..3 {
        match response.chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("a truncated body ended cleanly"),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    assert!(matches!(error, Some(FetchError::Protocol { .. })), "{error:?}");
}

#[test]
fn host_headers_and_redaction() {
    assert_eq!(host_header("https://S3.eu-west-1.amazonaws.com:443/b/k").unwrap(), "s3.eu-west-1.amazonaws.com");
    assert_eq!(host_header("http://127.0.0.1:10000/devstoreaccount1").unwrap(), "127.0.0.1:10000");
    assert_eq!(redact("https://a.blob.core.windows.net/c/k?sv=1&sig=secret"), "https://a.blob.core.windows.net/c/k");
    assert!(!redact("nonsense?sig=secret").contains("secret"));
}
