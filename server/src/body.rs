//! Response and request body helpers: everything is a stream end to end.

use bytes::Bytes;
use futures::TryStreamExt;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;

use cove_core::ByteStream;

use crate::conn::body::RequestBody;

/// The response body type: boxed, streaming, fails with `io::Error`.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn stream(s: ByteStream) -> Body {
    StreamBody::new(s.map_ok(Frame::data)).boxed_unsync()
}

/// A request body as a [`ByteStream`]; transport failures become
/// `io::Error`s (a stalled body `TimedOut`).
pub fn incoming(b: RequestBody) -> ByteStream {
    Box::pin(b.into_data_stream().map_err(std::io::Error::from))
}
