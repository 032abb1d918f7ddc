//! `ceiling`: the HTTP stack Fhirside serves on, answering every `GET /{type}/{id}` with a constant
//! body — the upper bound a read-by-id could reach on this machine.
//!
//! It is assembled like `fhirside serve`: a multi-threaded tokio runtime with the default worker
//! count, [`fhirside_server::listener::serve`] (the same accept loop, hyper HTTP/1.1 settings and
//! `TCP_NODELAY`), an axum [`Router`] with a two-parameter route, and one `axum::middleware::from_fn`
//! layer that adds the headers Fhirside's context middleware adds. The handler also sets a read's
//! `Content-Type`, `ETag` and `Last-Modified`, all as constants, so the response has the same shape
//! and size on the wire. What it leaves out is exactly the cost of Fhirside itself: request ids,
//! auth, parameter parsing, content negotiation, the store (SQLite) and formatting the headers.
//!
//! ```text
//! ceiling [--listen 127.0.0.1:0] [--body-file PATH | --body-bytes N]
//! ```
//!
//! With `--body-file` the body is that file's bytes (`bench/run.sh` passes a real Patient read, so
//! the response is the same size); with `--body-bytes` it is a JSON document of exactly N bytes.
//! It prints `FHIR base URL: http://ADDR` once listening (the line `fhirside serve` prints) and
//! stops on SIGINT/SIGTERM.

use std::io::Write;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{Path, Request};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use fhirside_server::listener::{self, Transport};

const USAGE: &str = "usage: ceiling [--listen ADDR] [--body-file PATH | --body-bytes N]";
const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

fn main() {
    if let Err(message) = run() {
        eprintln!("ceiling: {message}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let mut listen: SocketAddr = "127.0.0.1:0".parse().expect("a valid address");
    let mut body: Vec<u8> = padded_json(1_000);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--listen" => listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--body-file" => {
                let path = value()?;
                body = std::fs::read(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
            }
            "--body-bytes" => body = padded_json(value()?.parse().map_err(|e| format!("--body-bytes: {e}"))?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    let body = axum::body::Bytes::from(body);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ceiling")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "ceiling: constant {}-byte body", body.len());
        let _ = writeln!(out, "FHIR base URL: http://{local}");
        let _ = out.flush();
        drop(out);

        let router = Router::new()
            .route(
                "/{segment}/{id}",
                get(move |Path((_segment, _id)): Path<(String, String)>| {
                    let body = body.clone();
                    async move {
                        // The headers a Fhirside read carries, as constants, so the response is the
                        // same size on the wire.
                        let mut response = Response::new(Body::from(body));
                        let headers = response.headers_mut();
                        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
                        headers.insert(header::ETAG, HeaderValue::from_static("W/\"1\""));
                        headers
                            .insert(header::LAST_MODIFIED, HeaderValue::from_static("Mon, 23 Nov 2026 12:00:00 GMT"));
                        response
                    }
                }),
            )
            .fallback(|| async { StatusCode::NOT_FOUND })
            .layer(axum::middleware::from_fn(headers));
        listener::serve(listener, Transport::Plain, router, shutdown_signal()).await;
        Ok(())
    })
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_REQUEST_CHARGE: HeaderName = HeaderName::from_static("x-ms-request-charge");

/// The static part of Fhirside's context middleware: the headers every response carries (with a
/// constant request id, where Fhirside generates a UUID per request).
async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(X_REQUEST_ID.clone(), HeaderValue::from_static("00000000-0000-4000-8000-000000000000"));
    headers.insert(X_REQUEST_CHARGE.clone(), HeaderValue::from_static("1"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("frame-src 'self';"));
    response
}

/// `{"resourceType":"Binary","data":"xxxx…"}` padded to exactly `len` bytes (or the bare minimum).
fn padded_json(len: usize) -> Vec<u8> {
    let head = br#"{"resourceType":"Binary","data":""#;
    let tail = br#""}"#;
    let mut body = head.to_vec();
    body.resize(len.saturating_sub(tail.len()).max(head.len()), b'x');
    body.extend_from_slice(tail);
    body
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
