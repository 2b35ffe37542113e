//! A loopback OIDC issuer (discovery and JWKS over real HTTP, keys
//! replaceable for rotation), signing keys made with `openssl genpkey`, and
//! the forged tokens the tests throw at verifiers.

use std::sync::{Arc, Mutex};

use base64::Engine as _;

use crate::fault::{FaultServer, Reply};

pub use crate::certs::openssl;

/// Serves `/.well-known/openid-configuration` and `/jwks` on loopback; the
/// key set can be replaced (rotation).
pub struct Issuer {
    pub server: FaultServer,
    pub url: String,
    jwks: Arc<Mutex<serde_json::Value>>,
}

impl Issuer {
    /// Starts an issuer publishing no keys.
    pub async fn start() -> Issuer {
        let jwks = Arc::new(Mutex::new(serde_json::json!({ "keys": [] })));
        let url_cell: Arc<Mutex<String>> = Arc::new(Mutex::new(String::new()));
        let (j, u) = (jwks.clone(), url_cell.clone());
        let server = FaultServer::start(move |req| {
            let url = u.lock().expect("lock").clone();
            let body = match req.path() {
                "/.well-known/openid-configuration" => serde_json::json!({
                    "issuer": url,
                    "jwks_uri": format!("{url}/jwks"),
                    "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                }),
                "/jwks" => j.lock().expect("lock").clone(),
                _ => return Reply::new(404, "not found"),
            };
            Reply::new(200, body.to_string()).header("Content-Type", "application/json")
        })
        .await;
        let url = server.url();
        *url_cell.lock().expect("lock") = url.clone();
        Issuer { server, url, jwks }
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
