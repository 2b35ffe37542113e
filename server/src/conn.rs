//! Connection hygiene: every accepted connection is watched so that a slow
//! or idle client cannot hold it open.
//!
//! - A request head must arrive whole within `server.header_timeout`,
//!   counted from the connection's start (first request) or from the first
//!   byte after the previous request (keep-alive). A trickle of bytes does
//!   not extend it.
//! - A connection with no request in flight is closed after
//!   `server.idle_timeout` without a request (bytes a client sends while
//!   idle, such as HTTP/2 pings, do not keep it open).
//! - A request body that sends nothing for `server.body_timeout` fails
//!   ([`body::RequestBody`]); the handler's storage keeps what it had
//!   (an upload session stays at its last complete chunk).
//!
//! [`ConnState`] is shared by the connection's I/O ([`Tracked`]), its
//! requests ([`InFlight`]) and its [`watchdog`], which the listener races
//! against the connection.

pub mod body;

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// No time recorded.
const NONE: u64 = u64::MAX;

/// The timeouts the [`watchdog`] applies.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
}

/// What one connection is doing, in milliseconds since it was accepted.
#[derive(Debug)]
pub struct ConnState {
    start: Instant,
    /// Requests whose request or response body is still alive.
    in_flight: AtomicUsize,
    /// When the head of the next request began (first byte, or the
    /// connection's start); `NONE` while a request is in flight or the
    /// connection idles with nothing received.
    head_started: AtomicU64,
    /// When the last request ended, or the last byte was written.
    idle_since: AtomicU64,
    /// HTTP/2 (ALPN or the prior-knowledge preface): no head timeout, the
    /// h2 codec bounds its frames; idle still applies.
    h2: AtomicBool,
    received_any: AtomicBool,
    notify: Notify,
}

impl ConnState {
    /// A fresh connection: waiting for its first request head.
    pub fn new() -> Arc<ConnState> {
        Arc::new(ConnState {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            head_started: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            received_any: AtomicBool::new(false),
            notify: Notify::new(),
        })
    }

    /// Marks the connection as HTTP/2 (TLS negotiated `h2`).
    pub fn set_h2(&self) {
        self.h2.store(true, Ordering::Relaxed);
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn on_read(&self, data: &[u8]) {
        if !self.received_any.swap(true, Ordering::Relaxed) && data.starts_with(b"PRI * HTTP/2.0") {
            self.set_h2();
        }
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_started.compare_exchange(NONE, self.now(), Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            self.notify.notify_one();
        }
    }

    fn on_write(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            self.idle_since.fetch_max(self.now(), Ordering::Relaxed);
        }
    }

    /// When the connection must close and why; `None` while a request is
    /// in flight.
    fn deadline(&self, t: Timeouts) -> Option<(Instant, &'static str)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let at = |ms: u64, d: Duration| self.start + Duration::from_millis(ms) + d;
        let head = self.head_started.load(Ordering::Acquire);
        if head != NONE && !self.h2.load(Ordering::Relaxed) {
            return Some((at(head, t.header), "request head not received within server.header_timeout"));
        }
        Some((at(self.idle_since.load(Ordering::Acquire), t.idle), "idle for server.idle_timeout"))
    }
}

/// One request of a connection, alive while its request body or its
/// response body is (both hold a clone).
#[derive(Debug)]
pub struct InFlight(Arc<ConnState>);

impl InFlight {
    /// A request whose head was just read.
    pub fn start(state: &Arc<ConnState>) -> Arc<InFlight> {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        state.head_started.store(NONE, Ordering::Release);
        Arc::new(InFlight(state.clone()))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let s = &self.0;
        if s.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            s.idle_since.fetch_max(s.now(), Ordering::Release);
            s.notify.notify_one();
        }
    }
}

/// Resolves when the connection has broken one of its [`Timeouts`], with
/// the reason; the listener then drops the connection.
pub async fn watchdog(state: Arc<ConnState>, t: Timeouts) -> &'static str {
    loop {
        let notified = state.notify.notified();
        match state.deadline(t) {
            None => notified.await,
            Some((at, why)) => {
                if at <= Instant::now() {
                    return why;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = notified => {}
                }
            }
        }
    }
}

/// A connection's byte stream, reporting reads and writes to its
/// [`ConnState`].
pub struct Tracked<S> {
    inner: S,
    state: Arc<ConnState>,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, state: Arc<ConnState>) -> Tracked<S> {
        Tracked { inner, state }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.state.on_read(&buf.filled()[before..]);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.state.on_write();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.state.on_write();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts { header: Duration::from_millis(200), idle: Duration::from_millis(400) };

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_sends_no_head_is_closed_at_the_header_timeout() {
        let s = ConnState::new();
        s.on_read(b"GET / HT");
        let t0 = Instant::now();
        let why = watchdog(s, T).await;
        assert!(why.contains("header_timeout"), "{why}");
        assert!(t0.elapsed() <= T.header + Duration::from_millis(5), "{:?}", t0.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn requests_in_flight_are_never_cut_and_idle_follows_the_last_one() {
        let s = ConnState::new();
        let dog = tokio::spawn(watchdog(s.clone(), T));
        let req = InFlight::start(&s);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!dog.is_finished(), "a request in flight for 5 s keeps its connection");
        // Bytes while a request is in flight (its body) start no head timer.
        s.on_read(b"body bytes");
        let ended = Instant::now();
        drop(req);
        let why = dog.await.expect("watchdog");
        assert!(why.contains("idle_timeout"), "{why}");
        let waited = ended.elapsed();
        assert!(
            waited >= T.idle - Duration::from_millis(5) && waited <= T.idle + Duration::from_millis(5),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_byte_after_a_request_starts_the_head_timer() {
        let s = ConnState::new();
        drop(InFlight::start(&s));
        let dog = tokio::spawn(watchdog(s.clone(), T));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let first = Instant::now();
        s.on_read(b"G");
        let why = dog.await.expect("watchdog");
        assert!(why.contains("header_timeout"), "{why}");
        assert!(first.elapsed() <= T.header + Duration::from_millis(5), "{:?}", first.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn http2_has_no_head_timer_but_idles_out() {
        let s = ConnState::new();
        s.on_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        let t0 = Instant::now();
        let why = watchdog(s, T).await;
        assert!(why.contains("idle_timeout"), "{why}");
        assert!(t0.elapsed() >= T.idle - Duration::from_millis(5), "{:?}", t0.elapsed());
    }
}
