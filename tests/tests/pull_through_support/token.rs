//! A token service for distribution's `auth: token`: ES256 JWTs with an
//! `x5c` header, signed by a key the test generates with openssl. Grants
//! whatever scope is asked, only to requests carrying the expected Basic
//! credentials.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use super::distribution::TokenAuth;
use super::fault::{FaultServer, Reply};

/// A P-256 key and its self-signed certificate.
pub struct SigningCert {
    pub key_pem: Vec<u8>,
    pub cert_pem_path: PathBuf,
    /// The certificate's DER, base64, as `x5c` wants it.
    pub cert_der_b64: String,
    _dir: tempfile::TempDir,
}

impl SigningCert {
    /// Generates a key and certificate with the openssl CLI.
    pub fn generate() -> SigningCert {
        let openssl = crate::common::require_tool("openssl", "openssl");
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        let mut cmd = Command::new(openssl);
        cmd.args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=cove-test-token-issuer",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert);
        crate::common::run(&mut cmd);
        let pem = std::fs::read_to_string(&cert).expect("cert");
        let cert_der_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        SigningCert { key_pem: std::fs::read(&key).expect("key"), cert_pem_path: cert, cert_der_b64, _dir: dir }
    }
}

/// The token service.
pub struct TokenIssuer {
    pub server: FaultServer,
    pub issuer: String,
    pub service: String,
    granted: std::sync::Arc<AtomicUsize>,
}

impl TokenIssuer {
    /// Starts an issuer that grants tokens only to Basic `user:pass`.
    pub async fn start(cert: &SigningCert, user: &str, pass: &str) -> TokenIssuer {
        let issuer = "cove-test-issuer".to_owned();
        let service = "cove-test-registry".to_owned();
        let key = jsonwebtoken::EncodingKey::from_ec_pem(&cert.key_pem).expect("ec key");
        let x5c = cert.cert_der_b64.clone();
        let want = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")));
        let granted = std::sync::Arc::new(AtomicUsize::new(0));
        let (iss, svc, g) = (issuer.clone(), service.clone(), granted.clone());
        let counter = AtomicUsize::new(0);
        let server = FaultServer::start(move |req| {
            if req.header("authorization") != Some(want.as_str()) {
                return Reply::new(401, r#"{"details":"bad credentials"}"#)
                    .header("WWW-Authenticate", "Basic realm=\"token\"");
            }
            if req.query("service").as_deref() != Some(svc.as_str()) {
                return Reply::new(400, "wrong service");
            }
            let mut access = Vec::new();
            if let Some(scope) = req.query("scope") {
                let (typ, rest) = scope.split_once(':').unwrap_or_default();
                let (name, actions) = rest.rsplit_once(':').unwrap_or_default();
                access.push(serde_json::json!({
                    "type": typ, "name": name, "actions": actions.split(',').collect::<Vec<_>>(),
                }));
            }
            let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("time").as_secs();
            let claims = serde_json::json!({
                "iss": iss, "sub": "tester", "aud": svc, "exp": now + 300, "nbf": now - 5, "iat": now,
                "jti": format!("jti-{}", counter.fetch_add(1, Ordering::SeqCst)), "access": access,
            });
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
            header.x5c = Some(vec![x5c.clone()]);
            let token = jsonwebtoken::encode(&header, &claims, &key).expect("sign");
            g.fetch_add(1, Ordering::SeqCst);
            let body = serde_json::json!({ "token": token, "expires_in": 300 });
            Reply::new(200, serde_json::to_vec(&body).expect("json")).header("Content-Type", "application/json")
        })
        .await;
        TokenIssuer { server, issuer, service, granted }
    }

    /// distribution's `auth: token` settings for this issuer.
    pub fn auth_config(&self, cert: &SigningCert) -> TokenAuth {
        TokenAuth {
            realm: format!("{}/token", self.server.url()),
            service: self.service.clone(),
            issuer: self.issuer.clone(),
            rootcertbundle: cert.cert_pem_path.clone(),
        }
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
