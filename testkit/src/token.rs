//! A token service for distribution's `auth: token`: ES256 JWTs with an
//! `x5c` header, signed by a P-256 key the test generates with openssl.
//! Grants whatever scope is asked (only to requests carrying the expected
//! Basic credentials, when some are required).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine as _;

use crate::certs::self_signed;
use crate::fault::{FaultServer, Reply};
use crate::peers::distribution::TokenAuth;
use crate::util::now_secs;

/// A P-256 signing key and its self-signed certificate (openssl CLI); also
/// usable as a server certificate for 127.0.0.1.
pub struct SigningCert {
    pub key_pem: Vec<u8>,
    pub key_pem_path: PathBuf,
    pub cert_pem_path: PathBuf,
    /// The certificate's DER, base64 (standard), as `x5c` wants it.
    pub cert_der_b64: String,
    _dir: tempfile::TempDir,
}

impl SigningCert {
    /// Generates a key and a self-signed certificate for it.
    pub fn generate() -> SigningCert {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        self_signed(&key, &cert, "/CN=cove-test-token-issuer");
        let pem = std::fs::read_to_string(&cert).expect("cert");
        // The PEM body is the base64 of the DER.
        let cert_der_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        SigningCert {
            key_pem: std::fs::read(&key).expect("key"),
            key_pem_path: key,
            cert_pem_path: cert,
            cert_der_b64,
            _dir: dir,
        }
    }
}

/// The token service; stops when dropped.
pub struct TokenIssuer {
    pub server: FaultServer,
    pub issuer: String,
    pub service: String,
    granted: Arc<AtomicUsize>,
}

impl TokenIssuer {
    /// Starts an issuer whose tokens live `expires_in` seconds. With
    /// `creds = Some((user, pass))` only requests carrying that Basic
    /// authorization get a token (others get 401).
    pub async fn start(cert: &SigningCert, creds: Option<(&str, &str)>, expires_in: u64) -> TokenIssuer {
        let issuer = "cove-test-issuer".to_owned();
        let service = "cove-test-registry".to_owned();
        let key = jsonwebtoken::EncodingKey::from_ec_pem(&cert.key_pem).expect("ec key");
        let x5c = cert.cert_der_b64.clone();
        let want = creds
            .map(|(u, p)| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))));
        let granted = Arc::new(AtomicUsize::new(0));
        let (iss, svc, g) = (issuer.clone(), service.clone(), granted.clone());
        let counter = AtomicUsize::new(0);
        let server = FaultServer::start(move |req| {
            if let Some(w) = &want {
                if req.header("authorization") != Some(w.as_str()) {
                    return Reply::new(401, r#"{"details":"bad credentials"}"#)
                        .header("WWW-Authenticate", "Basic realm=\"token\"");
                }
            }
            if req.query("service").as_deref() != Some(svc.as_str()) {
                return Reply::new(400, "wrong service");
            }
            let mut access = Vec::new();
            if let Some(scope) = req.query("scope") {
                // repository:NAME:ACTIONS (NAME may hold ':' for a port).
                let (typ, rest) = scope.split_once(':').unwrap_or_default();
                let (name, actions) = rest.rsplit_once(':').unwrap_or_default();
                access.push(serde_json::json!({
                    "type": typ, "name": name, "actions": actions.split(',').collect::<Vec<_>>(),
                }));
            }
            // The claims distribution checks.
            let now = now_secs();
            let claims = serde_json::json!({
                "iss": iss, "sub": "tester", "aud": svc, "exp": now + expires_in, "nbf": now - 5, "iat": now,
                "jti": format!("jti-{}", counter.fetch_add(1, Ordering::SeqCst)), "access": access,
            });
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
            header.x5c = Some(vec![x5c.clone()]);
            let token = jsonwebtoken::encode(&header, &claims, &key).expect("sign");
            g.fetch_add(1, Ordering::SeqCst);
            let body = serde_json::json!({ "token": token, "expires_in": expires_in });
            Reply::new(200, serde_json::to_vec(&body).expect("json")).header("Content-Type", "application/json")
        })
        .await;
        TokenIssuer { server, issuer, service, granted }
    }

    /// The realm URL to configure in distribution.
    pub fn realm(&self) -> String {
        format!("{}/token", self.server.url())
    }

    /// distribution's `auth: token` settings for this issuer.
    pub fn auth_config(&self, cert: &SigningCert) -> TokenAuth {
        TokenAuth {
            realm: self.realm(),
            service: self.service.clone(),
            issuer: self.issuer.clone(),
            rootcertbundle: cert.cert_pem_path.clone(),
        }
    }

    /// Token requests so far, granted or not.
    pub fn hits(&self) -> usize {
        self.server.requests().len()
    }

    /// Tokens granted so far.
    pub fn granted(&self) -> usize {
        self.granted.load(Ordering::SeqCst)
    }

    /// The `Authorization` headers of every token request so far.
    pub fn authorizations(&self) -> Vec<String> {
        self.server.requests().iter().map(|r| r.header("authorization").unwrap_or("").to_owned()).collect()
    }
}
