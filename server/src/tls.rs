//! TLS termination: `[server] tls_cert` and `tls_key` name PEM files. The
//! pair is checked at start (readable, parses, key matches the certificate)
//! and re-read when either file changes (polled by
//! `jobs::tls_watch`) and on a config reload. New connections get the new
//! certificate; open ones keep theirs. A bad new pair is logged and the
//! running one kept.
//!
//! rustls runs on aws-lc-rs, the provider reqwest already uses here, so no
//! second crypto library is linked.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A certificate/key pair that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("server.tls_cert: cannot read {path}: {source}")]
    ReadCert { path: PathBuf, source: std::io::Error },
    #[error("server.tls_cert: {path} holds no PEM certificate ({reason})")]
    NoCert { path: PathBuf, reason: String },
    #[error("server.tls_key: cannot read {path}: {source}")]
    ReadKey { path: PathBuf, source: std::io::Error },
    #[error("server.tls_key: {path} holds no PEM private key ({reason})")]
    NoKey { path: PathBuf, reason: String },
    #[error("server.tls_key: {path} is not a usable private key: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("server.tls_key: {key} does not match the certificate in server.tls_cert {cert}")]
    Mismatch { key: PathBuf, cert: PathBuf },
    #[error("server.tls_cert: {path}: {reason}")]
    BadCert { path: PathBuf, reason: String },
    #[error("TLS setup failed: {0}")]
    Setup(String),
}

/// The crypto provider Cove's TLS uses (the same as reqwest's).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads and checks a certificate chain and its private key.
pub fn load_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let cert_pem = std::fs::read(cert).map_err(|source| TlsError::ReadCert { path: cert.to_owned(), source })?;
    let key_pem = std::fs::read(key).map_err(|source| TlsError::ReadKey { path: key.to_owned(), source })?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::NoCert { path: cert.to_owned(), reason: e.to_string() })?;
    if chain.is_empty() {
        return Err(TlsError::NoCert { path: cert.to_owned(), reason: "no CERTIFICATE block".into() });
    }
    let der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsError::NoKey { path: key.to_owned(), reason: e.to_string() })?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| TlsError::BadKey { path: key.to_owned(), reason: e.to_string() })?;
    let pair = CertifiedKey::new(chain, signing);
    match pair.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(pair),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::Mismatch { key: key.to_owned(), cert: cert.to_owned() })
        }
        Err(e) => Err(TlsError::BadCert { path: cert.to_owned(), reason: e.to_string() }),
    }
}

/// Size and modification time of a file: a change means "read it again".
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The serving certificate, swapped when the files change.
pub struct CertStore {
    provider: Arc<CryptoProvider>,
    paths: Mutex<(PathBuf, PathBuf)>,
    current: RwLock<Arc<CertifiedKey>>,
    stamps: Mutex<(Stamp, Stamp)>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore").field("paths", &*self.paths.lock().unwrap_or_else(|p| p.into_inner())).finish()
    }
}

impl CertStore {
    /// Loads the pair; fails (naming the key) when it cannot be used.
    pub fn open(cert: &Path, key: &Path) -> Result<Arc<CertStore>, TlsError> {
        let provider = provider();
        let stamps = (stamp(cert), stamp(key));
        let pair = load_pair(cert, key, &provider)?;
        Ok(Arc::new(CertStore {
            provider,
            paths: Mutex::new((cert.to_owned(), key.to_owned())),
            current: RwLock::new(Arc::new(pair)),
            stamps: Mutex::new(stamps),
        }))
    }

    /// The certificate and key file paths in use.
    pub fn paths(&self) -> (PathBuf, PathBuf) {
        self.paths.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Loads `cert`/`key` and serves them to new connections from now on;
    /// on error keeps the current pair (and paths) and says why.
    pub fn reload_from(&self, cert: &Path, key: &Path) -> Result<(), TlsError> {
        let stamps = (stamp(cert), stamp(key));
        let result = load_pair(cert, key, &self.provider);
        // Remember what was looked at, so a bad pair is reported once, not
        // on every poll, and a later fix is noticed.
        *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) = stamps;
        let pair = result?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(pair);
        *self.paths.lock().unwrap_or_else(|p| p.into_inner()) = (cert.to_owned(), key.to_owned());
        Ok(())
    }

    /// Reloads when either file changed since it was last read. Returns
    /// `None` when nothing changed.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let (cert, key) = self.paths();
        let now = (stamp(&cert), stamp(&key));
        if *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) == now {
            return None;
        }
        Some(self.reload_from(&cert, &key))
    }

    /// The rustls server configuration: this store as the certificate
    /// resolver, ALPN `h2` then `http/1.1`.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// Logs the result of a certificate reload.
pub fn log_outcome(outcome: Option<Result<(), TlsError>>, trigger: &str) {
    match outcome {
        None => {}
        Some(Ok(())) => tracing::info!(trigger, "TLS certificate reloaded; new connections use it"),
        Some(Err(e)) => {
            tracing::error!(trigger, error = %e, "TLS certificate not reloaded; keeping the previous one")
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}
