//! Accepting connections: plain HTTP/1.1 or HTTPS (rustls), with graceful shutdown.
//!
//! One accept loop serves both transports so that TLS is not a separate code path to get wrong.
//! On shutdown the loop stops accepting, every open connection finishes its in-flight request
//! and closes, and [`serve`] returns once the last one has (or after the grace period).

use std::future::Future;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How connections are carried.
#[derive(Clone)]
pub enum Transport {
    Plain,
    /// TLS with the configuration in force when each connection is accepted, so that a renewed
    /// certificate is served without a restart.
    Tls(crate::tls::LiveConfig),
}

/// How long open connections get to finish after shutdown begins.
const GRACE: Duration = Duration::from_secs(10);
/// A client that has not finished its TLS handshake or request headers by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, transport: Transport, router: Router, shutdown: impl Future<Output = ()>) {
    let (stop, stopped) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Running out of file descriptors is transient: wait instead of spinning.
                    eprintln!("accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(WithPeer { router: router.clone(), peer: ClientAddr(peer) });
        let acceptor = match &transport {
            Transport::Plain => None,
            Transport::Tls(live) => Some(tokio_rustls::TlsAcceptor::from(live.current())),
        };
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(HANDSHAKE_TIMEOUT).keep_alive(true);
            match acceptor {
                None => {
                    let conn = http.serve_connection(TokioIo::new(stream), service);
                    drive(conn, &mut stopped).await;
                }
                Some(acceptor) => {
                    let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await else {
                        return;
                    };
                    let conn = http.serve_connection(TokioIo::new(tls), service);
                    drive(conn, &mut stopped).await;
                }
            }
        });
    }
    drop(stopped);
    // Every connection task holds a receiver; `closed` resolves when the last one ends.
    let _ = tokio::time::timeout(GRACE, stop.closed()).await;
}

/// The TCP peer of the connection a request came on (the audit record's `CallerIPAddress`), in
/// every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// The router, for one connection: puts the connection's [`ClientAddr`] in each request.
#[derive(Clone)]
struct WithPeer {
    router: Router,
    peer: ClientAddr,
}

impl<B> tower_service::Service<axum::http::Request<B>> for WithPeer
where
    Router: tower_service::Service<axum::http::Request<B>>,
{
    type Response = <Router as tower_service::Service<axum::http::Request<B>>>::Response;
    type Error = <Router as tower_service::Service<axum::http::Request<B>>>::Error;
    type Future = <Router as tower_service::Service<axum::http::Request<B>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower_service::Service::<axum::http::Request<B>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, mut request: axum::http::Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.peer);
        self.router.call(request)
    }
}

/// Runs one connection, switching it to graceful shutdown when the server stops.
async fn drive<I, S>(conn: hyper::server::conn::http1::Connection<I, S>, stopped: &mut watch::Receiver<()>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stopped.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
