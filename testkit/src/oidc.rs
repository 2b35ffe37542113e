//! A loopback OIDC issuer (discovery and JWKS over real HTTP, keys
//! replaceable for rotation), signing keys made with `openssl genpkey`, and
//! the forged tokens the tests throw at verifiers.

use std::sync::{Arc, Mutex};

use base64::Engine as _;

use crate::fault::{FaultServer, Reply};

pub use crate::certs::openssl;

/// Serves `/.well-known/openid-configuration` and `/jwks` on loopback; the
/// key set can be replaced (rotation). With [`Issuer::set_login`] it also
/// runs a browser login: `/authorize` approves at once (no consent page)
/// and redirects back with a one-time code, and `/token` exchanges the code
/// for an ID token, checking the client, the redirect URI and the PKCE
/// verifier (S256) as a real issuer does.
pub struct Issuer {
    pub server: FaultServer,
    pub url: String,
    jwks: Arc<Mutex<serde_json::Value>>,
    login: Arc<Mutex<Option<Login>>>,
}

/// Who `/authorize` logs in and how its ID tokens are signed.
struct Login {
    key: SigningKey,
    claims: serde_json::Value,
    /// code → (client_id, redirect_uri, code_challenge)
    codes: std::collections::HashMap<String, (String, String, String)>,
}

fn authorize(req: &crate::fault::Request, login: &Mutex<Option<Login>>) -> Reply {
    let mut guard = login.lock().expect("lock");
    let Some(l) = guard.as_mut() else { return Reply::new(404, "no login configured") };
    let (Some(client), Some(redirect), Some(challenge)) =
        (req.query("client_id"), req.query("redirect_uri"), req.query("code_challenge"))
    else {
        return Reply::new(400, "client_id, redirect_uri and code_challenge are required");
    };
    if req.query("response_type").as_deref() != Some("code")
        || req.query("code_challenge_method").as_deref() != Some("S256")
    {
        return Reply::new(400, "response_type=code with S256 PKCE only");
    }
    let code = crate::util::random_name("code");
    l.codes.insert(code.clone(), (client, redirect.clone(), challenge));
    let state: String = form_urlencoded::byte_serialize(req.query("state").unwrap_or_default().as_bytes()).collect();
    let sep = if redirect.contains('?') { '&' } else { '?' };
    Reply::new(302, "").header("Location", format!("{redirect}{sep}code={code}&state={state}"))
}

fn token(req: &crate::fault::Request, login: &Mutex<Option<Login>>, issuer: &str) -> Reply {
    let form: std::collections::HashMap<String, String> = form_urlencoded::parse(&req.body).into_owned().collect();
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let mut guard = login.lock().expect("lock");
    let Some(l) = guard.as_mut() else { return Reply::new(404, "no login configured") };
    let bad = |why: &str| {
        Reply::new(400, serde_json::json!({ "error": "invalid_grant", "error_description": why }).to_string())
            .header("Content-Type", "application/json")
    };
    if get("grant_type") != "authorization_code" {
        return bad("grant_type");
    }
    // A code is good for one exchange only.
    let Some((client, redirect, challenge)) = l.codes.remove(&get("code")) else { return bad("unknown code") };
    if get("client_id") != client || get("redirect_uri") != redirect {
        return bad("client or redirect_uri differs from the authorization request");
    }
    let verifier_hash = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(<sha2::Sha256 as sha2::Digest>::digest(get("code_verifier").as_bytes()));
    if verifier_hash != challenge {
        return bad("PKCE verifier does not match the challenge");
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut claims = l.claims.clone();
    claims["iss"] = issuer.into();
    claims["aud"] = client.into();
    claims["iat"] = now.into();
    claims["exp"] = (now + 300).into();
    let id_token = l.key.sign(&claims);
    Reply::new(200, serde_json::json!({ "id_token": id_token, "token_type": "Bearer", "expires_in": 300 }).to_string())
        .header("Content-Type", "application/json")
}

impl Issuer {
    /// Starts an issuer publishing no keys.
    pub async fn start() -> Issuer {
        let jwks = Arc::new(Mutex::new(serde_json::json!({ "keys": [] })));
        let url_cell: Arc<Mutex<String>> = Arc::new(Mutex::new(String::new()));
        let login: Arc<Mutex<Option<Login>>> = Arc::new(Mutex::new(None));
        let (j, u, lg) = (jwks.clone(), url_cell.clone(), login.clone());
        let server = FaultServer::start(move |req| {
            let url = u.lock().expect("lock").clone();
            let body = match req.path() {
                "/.well-known/openid-configuration" => serde_json::json!({
                    "issuer": url,
                    "jwks_uri": format!("{url}/jwks"),
                    "authorization_endpoint": format!("{url}/authorize"),
                    "token_endpoint": format!("{url}/token"),
                    "code_challenge_methods_supported": ["S256"],
                    "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                }),
                "/jwks" => j.lock().expect("lock").clone(),
                "/authorize" => return authorize(req, &lg),
                "/token" if req.method == "POST" => return token(req, &lg, &url),
                _ => return Reply::new(404, "not found"),
            };
            Reply::new(200, body.to_string()).header("Content-Type", "application/json")
        })
        .await;
        let url = server.url();
        *url_cell.lock().expect("lock") = url.clone();
        Issuer { server, url, jwks, login }
    }

    /// Turns on the browser login: `/authorize` logs in a user with
    /// `claims` (e.g. `{"sub": "carol", "groups": ["dev"]}`), and `/token`
    /// issues ID tokens signed with `key` (publish its JWK with
    /// [`Issuer::set_keys`]).
    pub fn set_login(&self, key: SigningKey, claims: serde_json::Value) {
        *self.login.lock().expect("lock") = Some(Login { key, claims, codes: Default::default() });
    }

    /// Replaces the published keys.
    pub fn set_keys(&self, keys: Vec<serde_json::Value>) {
        *self.jwks.lock().expect("lock") = serde_json::json!({ "keys": keys });
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.server.count("GET", "/jwks")
    }
}

/// An issuer signing key made with `openssl genpkey`.
pub struct SigningKey {
    pub kid: String,
    pub alg: jsonwebtoken::Algorithm,
    pub key: jsonwebtoken::EncodingKey,
}

fn openssl_genpkey(args: &[&str]) -> Vec<u8> {
    let mut all = vec!["genpkey"];
    all.extend_from_slice(args);
    openssl(&all).into_bytes()
}

impl SigningKey {
    /// RSA 2048, RS256.
    pub fn rsa(kid: &str) -> SigningKey {
        let pem = openssl_genpkey(&["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]);
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).expect("rsa key");
        SigningKey { kid: kid.into(), alg: jsonwebtoken::Algorithm::RS256, key }
    }

    /// P-256, ES256.
    pub fn ec(kid: &str) -> SigningKey {
        let pem = openssl_genpkey(&["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
        let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem).expect("ec key");
        SigningKey { kid: kid.into(), alg: jsonwebtoken::Algorithm::ES256, key }
    }

    /// The public JWK with `kid`, `alg` and `use`.
    pub fn jwk(&self) -> serde_json::Value {
        let mut j = jsonwebtoken::jwk::Jwk::from_encoding_key(&self.key, self.alg).expect("jwk");
        j.common.key_id = Some(self.kid.clone());
        j.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        serde_json::to_value(j).expect("jwk json")
    }

    /// A JWT of `claims` signed with this key, `kid` in its header.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let mut h = jsonwebtoken::Header::new(self.alg);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, claims, &self.key).expect("sign")
    }
}

/// An unsigned token (`alg: none`) with the given `kid` and claims.
pub fn unsigned_token(kid: &str, claims: &serde_json::Value) -> String {
    let b64 = |v: &serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let header = serde_json::json!({ "alg": "none", "typ": "JWT", "kid": kid });
    format!("{}.{}.", b64(&header), b64(claims))
}

/// An HS256 token signed with `secret` claiming to be key `kid` (the
/// asymmetric/symmetric confusion attack).
pub fn hs256_token(kid: &str, secret: &[u8], claims: &serde_json::Value) -> String {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, &jsonwebtoken::EncodingKey::from_secret(secret)).expect("sign hs256")
}
