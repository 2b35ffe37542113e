//! The admin client of the CLI: one bodiless HTTP/1.0 request to the
//! server's loopback admin endpoints, over TLS (trusting exactly the
//! configured certificate) when the server terminates TLS itself.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use cove_server::config::Config;

/// Sends `method path` to a running Cove at `addr` (plain HTTP/1.0 over
/// loopback) and returns the status and body. `Err` when nothing listens.
async fn admin_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    on_line: Option<&mut (dyn FnMut(&str) + Send)>,
) -> std::io::Result<(u16, String)> {
    let s = tokio::net::TcpStream::connect(addr).await?;
    exchange(s, addr, method, path, false, on_line).await
}

/// Sends one bodiless HTTP/1.0 request on `s` and reads the response to the
/// end: (status, body). With `tolerate_unclean_close`, a read error after
/// some bytes arrived (a TLS peer closing without close_notify) still
/// returns what was read. `on_line` sees each complete body line as soon as
/// it arrives (for answers that stream progress).
async fn exchange<S>(
    mut s: S,
    addr: SocketAddr,
    method: &str,
    path: &str,
    tolerate_unclean_close: bool,
    mut on_line: Option<&mut (dyn FnMut(&str) + Send)>,
) -> std::io::Result<(u16, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    // Where the body starts once the head is in, and how much of it was shown.
    let mut body_at: Option<usize> = None;
    let mut shown = 0usize;
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(n) => n,
            Err(e) if tolerate_unclean_close && !buf.is_empty() => {
                let _ = e;
                break;
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(f) = on_line.as_mut() {
            if body_at.is_none() {
                body_at = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
                shown = body_at.unwrap_or(0);
            }
            if body_at.is_some() {
                while let Some(nl) = buf[shown..].iter().position(|b| *b == b'\n') {
                    f(String::from_utf8_lossy(&buf[shown..shown + nl]).trim_end());
                    shown += nl + 1;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// [`admin_request`] over TLS when the config terminates TLS (trusting
/// exactly the configured certificate), plain HTTP otherwise.
pub async fn send(config: &Config, addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    match &config.server.tls_cert {
        Some(cert) => admin_request_tls(addr, cert, method, path, None).await,
        None => admin_request(addr, method, path, None).await,
    }
}

/// [`send`], showing each line of the answer's body to `on_line` as it
/// arrives.
pub async fn send_streaming(
    config: &Config,
    addr: SocketAddr,
    method: &str,
    path: &str,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> std::io::Result<(u16, String)> {
    match &config.server.tls_cert {
        Some(cert) => admin_request_tls(addr, cert, method, path, Some(on_line)).await,
        None => admin_request(addr, method, path, Some(on_line)).await,
    }
}

/// The loopback address of the server a config describes (`0.0.0.0` and
/// `[::]` mean this host).
pub fn local_addr(config: &Config) -> Option<SocketAddr> {
    let mut addr: SocketAddr = config.server.listen.parse().ok()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    Some(addr)
}

/// Trusts exactly the certificates of one PEM file (the server's own
/// `tls_cert`), whatever name they carry: the CLI talks to its own server on
/// loopback, where the certificate's names rarely include 127.0.0.1.
#[derive(Debug)]
struct PinnedCert {
    certs: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if self.certs.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("the server's certificate is not the one in server.tls_cert".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Like [`admin_request`], over TLS to a server whose
/// certificate is the one in `cert_file` (for the CLI on the same host).
async fn admin_request_tls(
    addr: SocketAddr,
    cert_file: &Path,
    method: &str,
    path: &str,
    on_line: Option<&mut (dyn FnMut(&str) + Send)>,
) -> std::io::Result<(u16, String)> {
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let pem = std::fs::read(cert_file)?;
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&pem).collect::<Result<_, _>>().map_err(|e| invalid(e.to_string()))?;
    let provider = cove_server::tls::provider();
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCert { certs, provider }))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let s = connector.connect(name, tcp).await?;
    // A peer closing without close_notify still delivered the response.
    exchange(s, addr, method, path, true, on_line).await
}
