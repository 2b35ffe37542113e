//! Parsers for the `WWW-Authenticate` (RFC 7235) and `Link` (RFC 8288)
//! response headers, as registries send them.

/// One authentication challenge: a scheme and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme as sent (`Bearer`, `Basic`); compare case-insensitively.
    pub scheme: String,
    /// Parameters in order; names are lowercased, values unquoted.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// The value of parameter `name` (case-insensitive), if present.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Whether the scheme is `scheme` (case-insensitive).
    pub fn is(&self, scheme: &str) -> bool {
        self.scheme.eq_ignore_ascii_case(scheme)
    }
}

/// A header that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed WWW-Authenticate header: {0}")]
pub struct ChallengeError(&'static str);

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn skip_spaces_and_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.pos += 1;
        }
    }

    fn token(&mut self) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        // Only ASCII tchars were consumed, so this is valid UTF-8.
        std::str::from_utf8(&self.s[start..self.pos]).unwrap_or_default()
    }

    /// A quoted string starting at the opening quote; handles `\` escapes.
    fn quoted(&mut self) -> Result<String, ChallengeError> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(ChallengeError("unterminated quoted string")),
                Some(b'"') => {
                    self.pos += 1;
                    return String::from_utf8(out).map_err(|_| ChallengeError("quoted string is not UTF-8"));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = self.peek().ok_or(ChallengeError("unterminated escape in quoted string"))?;
                    out.push(c);
                    self.pos += 1;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// An unquoted value: everything up to a comma or whitespace (lenient:
    /// some servers send realm URLs unquoted).
    fn bare_value(&mut self) -> String {
        let start = self.pos;
        while self.peek().is_some_and(|c| !matches!(c, b',' | b' ' | b'\t')) {
            self.pos += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.pos]).into_owned()
    }
}

/// Parses one `WWW-Authenticate` header value into its challenges.
///
/// Handles several challenges in one value (`Basic realm="a", Bearer
/// realm="b"`), quoted strings holding commas and escapes
/// (`scope="repository:a/b:pull,push"`), and unquoted values. A token68
/// credential (`Negotiate abc==`) is kept as a parameter with an empty name.
pub fn parse_www_authenticate(header: &str) -> Result<Vec<Challenge>, ChallengeError> {
    let mut c = Cursor { s: header.as_bytes(), pos: 0 };
    let mut out: Vec<Challenge> = Vec::new();
    loop {
        c.skip_spaces_and_commas();
        if c.peek().is_none() {
            break;
        }
        let scheme = c.token();
        if scheme.is_empty() {
            return Err(ChallengeError("expected an auth scheme"));
        }
        let mut challenge = Challenge { scheme: scheme.to_owned(), params: Vec::new() };
        // Parameters: `name = value` separated by commas. A token not
        // followed by `=` starts the next challenge.
        loop {
            c.skip_spaces_and_commas();
            let save = c.pos;
            let name = c.token();
            if name.is_empty() {
                if c.peek().is_some() {
                    return Err(ChallengeError("unexpected character"));
                }
                break;
            }
            c.skip_spaces();
            if c.peek() != Some(b'=') {
                c.pos = save;
                break;
            }
            c.pos += 1;
            // token68 ends in `=` padding: `abc==` followed by end or comma.
            if matches!(c.peek(), None | Some(b'=' | b',')) && challenge.params.is_empty() {
                let mut end = c.pos;
                while c.s.get(end) == Some(&b'=') {
                    end += 1;
                }
                if matches!(c.s.get(end), None | Some(b',')) {
                    let t = String::from_utf8_lossy(&c.s[save..end]).into_owned();
                    challenge.params.push((String::new(), t));
                    c.pos = end;
                    break;
                }
            }
            c.skip_spaces();
            let value = if c.peek() == Some(b'"') { c.quoted()? } else { c.bare_value() };
            challenge.params.push((name.to_ascii_lowercase(), value));
            c.skip_spaces();
            match c.peek() {
                None | Some(b',') => {}
                Some(_) => return Err(ChallengeError("expected a comma after a parameter")),
            }
        }
        out.push(challenge);
    }
    if out.is_empty() {
        return Err(ChallengeError("no challenge"));
    }
    Ok(out)
}

/// The target of the `rel="next"` link in a `Link` header value, if any
/// (`</v2/a/tags/list?n=100&last=x>; rel="next"`).
pub fn next_link(header: &str) -> Option<String> {
    let b = header.as_bytes();
    let mut i = 0;
    while i < b.len() {
        // Find the next `<target>`.
        let open = i + header[i..].find('<')?;
        let close = open + header[open..].find('>')?;
        let target = &header[open + 1..close];
        // Parameters run to the next unquoted comma.
        let mut j = close + 1;
        let mut in_quotes = false;
        while j < b.len() {
            match b[j] {
                b'"' => in_quotes = !in_quotes,
                b',' if !in_quotes => break,
                _ => {}
            }
            j += 1;
        }
        let params = &header[close + 1..j];
        for p in params.split(';') {
            if let Some((k, v)) = p.split_once('=') {
                if k.trim().eq_ignore_ascii_case("rel")
                    && v.trim().trim_matches('"').split_ascii_whitespace().any(|r| r.eq_ignore_ascii_case("next"))
                {
                    return Some(target.trim().to_owned());
                }
            }
        }
        i = j + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(h: &str) -> Challenge {
        let mut v = parse_www_authenticate(h).expect(h);
        assert_eq!(v.len(), 1, "{h}: {v:?}");
        v.remove(0)
    }

    #[test]
    fn docker_hub_bearer() {
        let c = one(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        );
        assert!(c.is("bearer"));
        assert_eq!(c.param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c.param("service"), Some("registry.docker.io"));
        assert_eq!(c.param("scope"), Some("repository:library/nginx:pull"));
    }

    #[test]
    fn commas_inside_quotes_and_spaces_around() {
        let c = one(
            r#"Bearer  realm = "http://127.0.0.1:1/token" , service="svc", scope="repository:a/b:pull,push", error="insufficient_scope""#,
        );
        assert_eq!(c.param("scope"), Some("repository:a/b:pull,push"));
        assert_eq!(c.param("error"), Some("insufficient_scope"));
        assert_eq!(c.param("REALM"), Some("http://127.0.0.1:1/token"));
    }

    #[test]
    fn escapes_in_quotes() {
        let c = one(r#"Basic realm="a \"quoted\" \\ realm, yes""#);
        assert!(c.is("Basic"));
        assert_eq!(c.param("realm"), Some(r#"a "quoted" \ realm, yes"#));
    }

    #[test]
    fn several_challenges_in_one_value() {
        let v = parse_www_authenticate(
            r#"Basic realm="basic, realm", Bearer realm="https://t/x",scope="repository:a:pull,push""#,
        )
        .expect("parse");
        assert_eq!(v.len(), 2);
        assert!(v[0].is("basic"));
        assert_eq!(v[0].param("realm"), Some("basic, realm"));
        assert!(v[1].is("bearer"));
        assert_eq!(v[1].param("realm"), Some("https://t/x"));
        assert_eq!(v[1].param("scope"), Some("repository:a:pull,push"));
    }

    #[test]
    fn unquoted_values_and_bare_scheme() {
        let c = one("Bearer realm=https://ghcr.io/token,service=ghcr.io");
        assert_eq!(c.param("realm"), Some("https://ghcr.io/token"));
        assert_eq!(c.param("service"), Some("ghcr.io"));
        let v = parse_www_authenticate("Negotiate, Basic realm=x").expect("parse");
        assert_eq!(v.len(), 2);
        assert!(v[0].params.is_empty());
        assert_eq!(v[1].param("realm"), Some("x"));
    }

    #[test]
    fn token68() {
        let v = parse_www_authenticate("Negotiate abc==, Basic realm=\"r\"").expect("parse");
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].params, vec![(String::new(), "abc==".to_owned())]);
        assert_eq!(v[1].param("realm"), Some("r"));
    }

    #[test]
    fn malformed() {
        for bad in [
            "",
            "   ",
            "Bearer realm=\"unterminated",
            "Bearer realm=\"x\" junk=",
            "\"quoted-scheme\"",
            "Bearer realm=\"x\\",
        ] {
            assert!(parse_www_authenticate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn link_next() {
        assert_eq!(
            next_link(r#"</v2/a/tags/list?n=2&last=b>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?n=2&last=b")
        );
        assert_eq!(
            next_link(r#"<https://x/prev>; rel="prev", <https://x/next?a=1,2>; title="a, b"; rel=next"#).as_deref(),
            Some("https://x/next?a=1,2")
        );
        assert_eq!(next_link(r#"</p>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
        assert_eq!(next_link(""), None);
    }
}
