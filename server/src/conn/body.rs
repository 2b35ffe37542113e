//! The request body every handler reads: hyper's body with an inactivity
//! timeout (`server.body_timeout`), and drained after an early answer.
//!
//! When a handler answers without reading the body (a refusal before the
//! upload, a manifest too large), dropping the body would make hyper close
//! the connection while the client is still sending, and a client that did
//! not ask `Expect: 100-continue` then sees a reset instead of the answer.
//! So a body dropped unfinished is read and discarded in the background, up
//! to `server.drain_limit` bytes and `server.drain_timeout`, while the
//! answer is written; then the connection can even be reused. A client that
//! asked `Expect: 100-continue` and was never told to continue is not
//! drained (it sends nothing more).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Sleep;

use crate::conn::InFlight;

/// How request bodies are timed and drained.
#[derive(Debug, Clone, Copy)]
pub struct BodyOptions {
    /// `server.body_timeout`: longest wait for the next bytes.
    pub timeout: Duration,
    /// `server.drain_limit` and `server.drain_timeout`.
    pub drain_limit: u64,
    pub drain_timeout: Duration,
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body: {0}")]
    Transport(#[from] hyper::Error),
    #[error("the request body sent nothing for {0:?} (server.body_timeout)")]
    Stalled(Duration),
}

impl From<BodyError> for std::io::Error {
    fn from(e: BodyError) -> std::io::Error {
        match e {
            BodyError::Stalled(_) => std::io::Error::new(std::io::ErrorKind::TimedOut, e),
            BodyError::Transport(_) => std::io::Error::other(e),
        }
    }
}

/// A request's body (see the module documentation).
pub struct RequestBody {
    inner: Option<Incoming>,
    opts: BodyOptions,
    sleep: Option<Pin<Box<Sleep>>>,
    /// The inactivity timer runs (the last poll found nothing).
    waiting: bool,
    /// The end or an error was seen: nothing to drain.
    done: bool,
    polled: bool,
    expects_continue: bool,
    in_flight: Option<Arc<InFlight>>,
}

impl RequestBody {
    /// Wraps `inner`; `expects_continue` when the request asked
    /// `Expect: 100-continue`; `in_flight` keeps the connection's request
    /// count up while the body (or its drain) lives.
    pub fn new(
        inner: Incoming,
        opts: BodyOptions,
        expects_continue: bool,
        in_flight: Option<Arc<InFlight>>,
    ) -> RequestBody {
        RequestBody {
            inner: Some(inner),
            opts,
            sleep: None,
            waiting: false,
            done: false,
            polled: false,
            expects_continue,
            in_flight,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        this.polled = true;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                // The timer starts when the body is found empty, so time a
                // handler spends between reads (writing to disk) never counts.
                let deadline = tokio::time::Instant::now() + this.opts.timeout;
                if !this.waiting {
                    this.waiting = true;
                    match this.sleep.as_mut() {
                        Some(s) => s.as_mut().reset(deadline),
                        None => this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                if let Some(s) = this.sleep.as_mut() {
                    if s.as_mut().poll(cx).is_ready() {
                        // Dropping hyper's body makes it close the connection.
                        this.done = true;
                        this.inner = None;
                        tracing::info!(timeout = ?this.opts.timeout, "request body stalled; dropping the connection");
                        return Poll::Ready(Some(Err(BodyError::Stalled(this.opts.timeout))));
                    }
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map(|b| b.size_hint()).unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if self.done || inner.is_end_stream() || self.opts.drain_limit == 0 {
            return;
        }
        // Polling would send `100 Continue`, inviting the body we refuse.
        if self.expects_continue && !self.polled {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(drain(inner, self.opts, self.in_flight.take()));
    }
}

/// Reads and discards `body` within the drain bounds.
async fn drain(mut body: Incoming, opts: BodyOptions, in_flight: Option<Arc<InFlight>>) {
    let mut bytes = 0u64;
    let read = async {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return "the client stopped";
            };
            if let Some(d) = frame.data_ref() {
                bytes += d.len() as u64;
                if bytes > opts.drain_limit {
                    return "more than server.drain_limit";
                }
            }
        }
        "drained"
    };
    let outcome = tokio::time::timeout(opts.drain_timeout, read).await.unwrap_or("server.drain_timeout passed");
    tracing::debug!(bytes, outcome, "unread request body after an early answer");
    drop(in_flight);
}
