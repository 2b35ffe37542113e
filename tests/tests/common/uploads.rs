//! Upload requests on [`Server`]: the monolithic POST, a PATCH of a chunk
//! and the closing PUT, each sent as the tests write them by hand (octet
//! stream, optional `Content-Range`) and returned unchecked.

use super::{with_query, Server};

impl Server {
    /// A monolithic upload: `POST /v2/<repo>/blobs/uploads/?digest=` with
    /// `body` as `application/octet-stream`.
    pub async fn post_monolithic(&self, repo: &str, digest: &str, body: &[u8]) -> reqwest::Response {
        self.req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(body.to_vec())
            .send()
            .await
            .expect("POST")
    }

    /// PATCHes `body` to an upload URL as `application/octet-stream`, with
    /// `Content-Range: range` when given.
    pub async fn patch_chunk(&self, url: &str, range: Option<&str>, body: &[u8]) -> reqwest::Response {
        let mut req = self.req("PATCH", url).header("content-type", "application/octet-stream");
        if let Some(range) = range {
            req = req.header("content-range", range);
        }
        req.body(body.to_vec()).send().await.expect("PATCH")
    }

    /// The closing PUT of an upload: `?digest=`, `body` (possibly empty) as
    /// `application/octet-stream`, with `Content-Range: range` when given.
    pub async fn put_final(&self, url: &str, digest: &str, range: Option<&str>, body: &[u8]) -> reqwest::Response {
        let mut req = self
            .req("PUT", &with_query(url, &format!("digest={digest}")))
            .header("content-type", "application/octet-stream");
        if let Some(range) = range {
            req = req.header("content-range", range);
        }
        req.body(body.to_vec()).send().await.expect("PUT")
    }
}
