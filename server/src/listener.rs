//! The listener: accepts connections (plain or TLS) and serves each with
//! the application until shutdown, then drains open connections.
//!
//! At accept, before any byte is read: a source outside
//! `auth.trusted_networks` (and neither a trusted proxy nor loopback) is
//! closed when `server.refuse_untrusted` is on, and past
//! `server.max_connections` a new connection is answered a minimal `503`
//! with `Retry-After` and closed. Each served connection is watched by
//! [`crate::conn::watchdog`] (head and idle timeouts); its requests get a
//! [`RequestBody`] (body inactivity timeout, drain after early answers).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::app::App;
use crate::body::Body;
use crate::config::HttpLimits;
use crate::conn::body::{BodyOptions, RequestBody};
use crate::conn::{watchdog, ConnState, InFlight, Timeouts, Tracked};

/// How long a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections past `server.max_connections` being answered `503` at once;
/// beyond these, they are closed without an answer.
const MAX_OVERFLOW_ANSWERS: usize = 64;

/// Runs the server on `listener` until `shutdown` resolves; with `tls`, every
/// connection is TLS (ALPN h2, http/1.1).
pub async fn run(
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Head and idle timeouts are the watchdog's (hyper's own head timeout
    // would also cut idle keep-alive connections). hyper's read buffer
    // bounds the request head: past it the answer is 431.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(None).max_buf_size(limits.max_header_size.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let overflow = Arc::new(Semaphore::new(MAX_OVERFLOW_ANSWERS));
    let timeouts = Timeouts { header: limits.header_timeout, idle: limits.idle_timeout };
    let body = BodyOptions {
        timeout: limits.body_timeout,
        drain_limit: limits.drain_limit,
        drain_timeout: limits.drain_timeout,
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if limits.refuse_untrusted && !app.admits_connection(peer.ip()) {
                    app.metrics_handle().connection_refused("untrusted");
                    tracing::debug!(peer = %peer, "connection from outside auth.trusted_networks closed at accept");
                    continue;
                }
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    app.metrics_handle().connection_refused("max_connections");
                    refuse_over_capacity(stream, peer, acceptor.is_some(), &overflow);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = ConnState::new();
                let svc = service(app.clone(), peer, state.clone(), body);
                let metrics = app.metrics_handle().clone();
                match &acceptor {
                    None => {
                        let conn = builder
                            .serve_connection_with_upgrades(TokioIo::new(Tracked::new(stream, state.clone())), svc)
                            .into_owned();
                        let conn = graceful.watch(conn);
                        tokio::spawn(async move {
                            let _open = metrics.connection_opened();
                            serve_watched(conn, state, timeouts, peer, permit).await;
                        });
                    }
                    Some(acceptor) => {
                        // The handshake runs in the connection's task, so a
                        // slow client never holds up the accept loop.
                        let accept = acceptor.accept(stream);
                        let watcher = graceful.watcher();
                        let builder = builder.clone();
                        tokio::spawn(async move {
                            let _open = metrics.connection_opened();
                            let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, accept).await {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(peer = %peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                                state.set_h2();
                            }
                            let conn = builder
                                .serve_connection_with_upgrades(TokioIo::new(Tracked::new(tls, state.clone())), svc)
                                .into_owned();
                            serve_watched(watcher.watch(conn), state, timeouts, peer, permit).await;
                        });
                    }
                }
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: waiting for open connections");
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after 30s; exiting anyway");
    }
}

/// The service of one connection: each request gets its [`RequestBody`]
/// and an [`InFlight`] mark held by both bodies.
fn service(
    app: Arc<App>,
    peer: SocketAddr,
    state: Arc<ConnState>,
    opts: BodyOptions,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone {
    service_fn(move |req: Request<Incoming>| {
        let app = app.clone();
        let in_flight = InFlight::start(&state);
        let expects_continue =
            req.headers().get(http::header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let req = req.map(|b| RequestBody::new(b, opts, expects_continue, Some(in_flight.clone())));
        async move {
            let resp = app.handle(req, peer).await;
            // The response body keeps the request in flight until it is sent.
            Ok::<_, Infallible>(resp.map(|b| {
                b.map_frame(move |f| {
                    let _ = &in_flight;
                    f
                })
                .boxed_unsync()
            }))
        }
    })
}

/// Serves `conn` until it ends or the watchdog closes it.
async fn serve_watched<F, E>(
    conn: F,
    state: Arc<ConnState>,
    timeouts: Timeouts,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
) where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::select! {
        r = conn => {
            if let Err(e) = r {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
        }
        why = watchdog(state, timeouts) => {
            tracing::debug!(peer = %peer, reason = why, "connection closed");
        }
    }
    drop(permit);
}

/// A connection past `server.max_connections`: a plain-HTTP one is told
/// `503` with `Retry-After` and closed, after its request is read briefly
/// (so the client sees the answer, not a reset); a TLS one, or one past the
/// few being answered, is closed at once.
fn refuse_over_capacity(stream: TcpStream, peer: SocketAddr, tls: bool, overflow: &Arc<Semaphore>) {
    tracing::debug!(peer = %peer, "server.max_connections reached; connection refused");
    if tls {
        return;
    }
    let Ok(permit) = overflow.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(1), answer_busy(stream)).await;
        drop(permit);
    });
}

const BUSY_BODY: &str = r#"{"errors":[{"code":"UNAVAILABLE","message":"too many open connections (server.max_connections); retry shortly"}]}"#;

async fn answer_busy<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        BUSY_BODY.len()
    );
    if stream.write_all(head.as_bytes()).await.is_err() || stream.write_all(BUSY_BODY.as_bytes()).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    // Read what the client sends (its request) so closing does not reset
    // the connection before it read the answer.
    let mut buf = [0u8; 4096];
    let mut total = 0usize;
    while total < 64 * 1024 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
}

/// Resolves on SIGINT or SIGTERM (SIGINT only where SIGTERM does not exist).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
