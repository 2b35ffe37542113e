//! The [`Upstream`] implementation: manifests (HEAD and GET, the digest
//! from the header or the bytes), blobs (streamed), tag and referrers lists
//! (following `Link` headers on the same origin only), and the `/v2/` ping.

use cove_core::manifest::{Descriptor, OCI_INDEX};
use cove_core::upstream::{RateLimit, UpstreamBlob, UpstreamError, UpstreamHealth, UpstreamManifest};
use cove_core::{Digest, DigestHasher, Reference, RepoName, Upstream};
use futures::StreamExt;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LINK};
use reqwest::{Method, StatusCode, Url};

use super::response::{
    announced_digest, body_io_error, check_status, header_str, header_u64, invalid, media_type, media_type_field,
    read_capped, status_failure, Failure,
};
use super::{OciUpstream, MANIFEST_ACCEPT};

/// Largest tag-list page accepted from an upstream.
const MAX_TAGS_PAGE: usize = 32 << 20;

/// Most tag-list pages followed through `Link` headers.
const MAX_TAG_PAGES: usize = 1000;

/// Most referrers-list pages followed through `Link` headers.
const MAX_REFERRERS_PAGES: usize = 100;

impl OciUpstream {
    /// HEAD or GET of a manifest. `Ok(None)`: a HEAD by tag whose answer
    /// carries no digest.
    async fn manifest(
        &self,
        method: Method,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<UpstreamManifest>, UpstreamError> {
        let url = self.endpoint(repo, &format!("manifests/{reference}"))?;
        let scope = pull_scope(repo);
        let (url, scope, method) = (&url, scope.as_str(), &method);
        self.retrying("manifest", || async move {
            let resp = self.send_answered(method, url, Some(MANIFEST_ACCEPT), scope).await?;
            // Docker Hub announces the pull budget on manifest answers, a 429 included.
            self.record_rate_limit(resp.headers());
            let resp = check_status(resp)?;
            let announced = announced_digest(resp.headers())?;
            let content_type = header_str(resp.headers(), CONTENT_TYPE.as_str()).map(media_type);
            if method == Method::HEAD {
                let size = header_u64(resp.headers(), CONTENT_LENGTH.as_str())
                    .ok_or_else(|| invalid("manifest HEAD without a Content-Length"))?;
                let media_type = content_type.ok_or_else(|| invalid("manifest HEAD without a Content-Type"))?;
                return Ok(Some(UpstreamManifest {
                    digest: match (announced, reference) {
                        (Some(d), _) => d,
                        (None, Reference::Digest(d)) => d.clone(),
                        // Nothing says which digest the tag points to.
                        (None, Reference::Tag(_)) => return Ok(None),
                    },
                    media_type,
                    size,
                    bytes: None,
                }));
            }
            let bytes = read_capped(resp, self.max_manifest_size, "manifest").await?;
            let media_type = match content_type {
                Some(m) => m,
                None => {
                    media_type_field(&bytes).ok_or_else(|| invalid("manifest without a Content-Type or mediaType"))?
                }
            };
            let digest = match announced {
                Some(d) => d,
                None => {
                    let alg = match reference {
                        Reference::Digest(d) => d.algorithm(),
                        Reference::Tag(_) => cove_core::Algorithm::Sha256,
                    };
                    let mut h = DigestHasher::new(alg);
                    h.update(&bytes);
                    h.finish()
                }
            };
            Ok(Some(UpstreamManifest { digest, media_type, size: bytes.len() as u64, bytes: Some(bytes) }))
        })
        .await
    }

    /// The next page of a tag or referrers list: `link` resolved against `url`,
    /// refused unless it stays on the upstream's origin.
    fn next_page(&self, url: &Url, link: &str, what: &str) -> Result<Url, UpstreamError> {
        let next = url.join(link).map_err(|_| UpstreamError::Invalid("bad Link header".into()))?;
        if !same_origin(&next, &self.base) {
            return Err(UpstreamError::Invalid(format!("{what} Link points to another origin")));
        }
        Ok(next)
    }
}

fn pull_scope(repo: &RepoName) -> String {
    format!("repository:{repo}:pull")
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme() && a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default()
}

#[async_trait::async_trait]
impl Upstream for OciUpstream {
    fn host(&self) -> &str {
        &self.host
    }

    async fn head_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<UpstreamManifest, UpstreamError> {
        match self.manifest(Method::HEAD, repo, reference).await? {
            Some(m) => Ok(m),
            None => {
                // No digest header on a HEAD by tag: only the bytes can tell.
                let m = self.get_manifest(repo, reference).await?;
                Ok(UpstreamManifest { bytes: None, ..m })
            }
        }
    }

    async fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<UpstreamManifest, UpstreamError> {
        self.manifest(Method::GET, repo, reference)
            .await?
            .ok_or_else(|| UpstreamError::Invalid("manifest GET without a body".into()))
    }

    async fn head_blob(&self, repo: &RepoName, digest: &Digest) -> Result<u64, UpstreamError> {
        let url = self.endpoint(repo, &format!("blobs/{digest}"))?;
        let scope = pull_scope(repo);
        let (url, scope) = (&url, scope.as_str());
        self.retrying("blob HEAD", || async move {
            let resp = self.send(&Method::HEAD, url, None, scope).await?;
            header_u64(resp.headers(), CONTENT_LENGTH.as_str())
                .ok_or_else(|| invalid("blob HEAD without a Content-Length"))
        })
        .await
    }

    async fn get_blob(&self, repo: &RepoName, digest: &Digest) -> Result<UpstreamBlob, UpstreamError> {
        let url = self.endpoint(repo, &format!("blobs/{digest}"))?;
        let scope = pull_scope(repo);
        let (url, scope) = (&url, scope.as_str());
        // Retried only until the response head arrives: once the stream is
        // handed out, a failure ends it with an error.
        let resp = self.retrying("blob GET", || async move { self.send(&Method::GET, url, None, scope).await }).await?;
        let size = resp.content_length();
        // A body that stalls past read_timeout fails the download; it does
        // not open the circuit (the upstream did answer, and other requests
        // may be flowing), but it is the last failure status reports show.
        let stream = resp.bytes_stream().map(|r| r.map_err(body_io_error));
        Ok(UpstreamBlob { size, stream: Box::pin(stream) })
    }

    async fn tags(&self, repo: &RepoName) -> Result<Vec<String>, UpstreamError> {
        #[derive(serde::Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let scope = pull_scope(repo);
        let mut url = self.endpoint(repo, "tags/list")?;
        let mut all = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..MAX_TAG_PAGES {
            if !seen.insert(url.clone()) {
                return Err(UpstreamError::Invalid("tag list pagination loops".into()));
            }
            let (u, s) = (&url, scope.as_str());
            let (page, next) = self
                .retrying("tags", || async move {
                    let resp = self.send(&Method::GET, u, None, s).await?;
                    let next = header_str(resp.headers(), LINK.as_str()).and_then(crate::challenge::next_link);
                    let body = read_capped(resp, MAX_TAGS_PAGE, "tag list").await?;
                    let page: TagList = serde_json::from_slice(&body)
                        .map_err(|e| invalid(&format!("tag list is not valid JSON: {e}")))?;
                    Ok((page.tags.unwrap_or_default(), next))
                })
                .await?;
            all.extend(page);
            match next {
                None => return Ok(all),
                Some(link) => url = self.next_page(&url, &link, "tag list")?,
            }
        }
        Err(UpstreamError::Invalid(format!("tag list has more than {MAX_TAG_PAGES} pages")))
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Option<Vec<Descriptor>>, UpstreamError> {
        #[derive(serde::Deserialize)]
        struct Index {
            manifests: Option<Vec<Descriptor>>,
        }
        let scope = pull_scope(repo);
        let mut url = self.endpoint(repo, &format!("referrers/{subject}"))?;
        let mut all = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..MAX_REFERRERS_PAGES {
            if !seen.insert(url.clone()) {
                return Err(UpstreamError::Invalid("referrers pagination loops".into()));
            }
            let (u, s) = (&url, scope.as_str());
            let page = self
                .retrying("referrers", || async move {
                    let resp = self.send_answered(&Method::GET, u, Some(OCI_INDEX), s).await?;
                    // No referrers API: 404 (distribution 2.8), or the other
                    // answers clients take to mean "use the tag schema".
                    if matches!(resp.status().as_u16(), 400 | 404 | 405 | 406) {
                        return Ok(None);
                    }
                    let resp = check_status(resp)?;
                    if header_str(resp.headers(), CONTENT_TYPE.as_str()).map(media_type).as_deref() != Some(OCI_INDEX) {
                        return Ok(None);
                    }
                    let next = header_str(resp.headers(), LINK.as_str()).and_then(crate::challenge::next_link);
                    let body = read_capped(resp, self.max_manifest_size, "referrers list").await?;
                    let index: Index = serde_json::from_slice(&body)
                        .map_err(|e| invalid(&format!("referrers list is not a valid image index: {e}")))?;
                    Ok(Some((index.manifests.unwrap_or_default(), next)))
                })
                .await?;
            let Some((list, next)) = page else {
                return Ok(None);
            };
            all.extend(list);
            match next {
                None => return Ok(Some(all)),
                Some(link) => url = self.next_page(&url, &link, "referrers")?,
            }
        }
        Err(UpstreamError::Invalid(format!("referrers list has more than {MAX_REFERRERS_PAGES} pages")))
    }

    fn health(&self) -> UpstreamHealth {
        self.health.snapshot()
    }

    fn rate_limit(&self) -> Option<RateLimit> {
        *self.rate_limit.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn ping(&self) -> Result<(), UpstreamError> {
        let url = Url::parse(&format!("{}/v2/", self.base.as_str().trim_end_matches('/')))
            .map_err(|e| UpstreamError::Invalid(format!("bad request URL: {e}")))?;
        let resp = match self.send_once(&Method::GET, &url, None, None).await {
            Ok(r) => r,
            Err(Failure::Fatal(e) | Failure::Retry(e) | Failure::Silent(e) | Failure::RetryAfter(e, _)) => {
                return Err(e)
            }
        };
        // A registry answers /v2/ with 200, or 401 and a challenge.
        match resp.status() {
            s if s.is_success() || s == StatusCode::UNAUTHORIZED => Ok(()),
            s => match status_failure(s, resp.headers()) {
                Failure::Fatal(UpstreamError::NotFound) => {
                    Err(UpstreamError::Invalid(format!("{} answered {s} on /v2/: not a registry", self.host)))
                }
                Failure::Fatal(e) | Failure::Retry(e) | Failure::Silent(e) | Failure::RetryAfter(e, _) => Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let a = Url::parse("https://h.example/v2/x").expect("url");
        assert!(same_origin(&a, &Url::parse("https://h.example:443/y").expect("url")));
        assert!(!same_origin(&a, &Url::parse("http://h.example/y").expect("url")));
        assert!(!same_origin(&a, &Url::parse("https://evil.example/y").expect("url")));
    }
}
