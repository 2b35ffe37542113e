//! Reading requests: query parameters, lengths and ranges.

use http::header::HeaderMap;

use cove_core::{ErrorCode, RegistryError};

/// Largest `n` honoured in a paginated request; larger values are clamped
/// (the client follows the `Link` header for the rest).
const MAX_PAGE: usize = 10_000;

/// The request body length a client declared (for metrics; never trusted).
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(http::header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

pub fn content_length(h: &HeaderMap) -> Result<Option<u64>, RegistryError> {
    match h.get(http::header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| RegistryError::new(ErrorCode::SizeInvalid, "invalid Content-Length")),
    }
}

pub use crate::range::parse_content_range;

/// Decoded query parameters.
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        Query(q.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated parameter (`?tag=a&tag=b`), in order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every parameter, in order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// A flag: present empty, `1` or `true`.
    pub fn flag(&self, key: &str) -> bool {
        self.0.iter().any(|(n, v)| n == key && matches!(v.as_str(), "" | "1" | "true"))
    }

    /// `n` and `last` for paginated lists.
    pub fn page(&self) -> Result<(Option<usize>, Option<String>), RegistryError> {
        let n = match self.get("n") {
            None | Some("") => None,
            Some(s) => Some(
                s.parse::<usize>()
                    .map_err(|_| RegistryError::new(ErrorCode::PaginationInvalid, "n must be a non-negative integer"))?
                    .min(MAX_PAGE),
            ),
        };
        Ok((n, self.get("last").filter(|l| !l.is_empty()).map(str::to_owned)))
    }
}
