//! Keys and certificates made with the openssl CLI: a test CA and server
//! certificates it signs (for 127.0.0.1 and localhost), and self-signed
//! P-256 pairs ([`crate::token::SigningCert`] uses one).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{require_tool, run};

/// Runs `openssl ARGS`; panics with its output on failure; returns stdout.
pub fn openssl(args: &[&str]) -> String {
    run(Command::new(require_tool("openssl", "openssl")).args(args))
}

/// Runs `openssl ARGS` in `dir` (relative file names land there).
pub fn openssl_in(args: &[&str], dir: &Path) -> String {
    run(Command::new(require_tool("openssl", "openssl")).args(args).current_dir(dir))
}

/// Makes a self-signed P-256 key and certificate `key`/`cert` (paths) with
/// `subject`, valid for two days.
pub fn self_signed(key: &Path, cert: &Path, subject: &str) {
    let mut cmd = Command::new(require_tool("openssl", "openssl"));
    cmd.args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-days", "2", "-subj", subject, "-keyout"])
        .arg(key)
        .arg("-out")
        .arg(cert);
    run(&mut cmd);
}

/// Makes `ca.crt`/`ca.key` in `dir`.
pub fn make_ca(dir: &Path) {
    self_signed(&dir.join("ca.key"), &dir.join("ca.crt"), "/CN=cove-test-ca");
}

/// Makes `<name>.crt`/`<name>.key` for localhost and 127.0.0.1, signed by the CA.
pub fn make_server_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext file");
    let (key, csr, crt) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"));
    openssl_in(
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=localhost",
        ],
        dir,
    );
    openssl_in(
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
        dir,
    );
    (dir.join(crt), dir.join(key))
}

/// The DER bytes of a PEM certificate file.
pub fn der_of(pem_file: &Path) -> Vec<u8> {
    let out = Command::new(require_tool("openssl", "openssl"))
        .args(["x509", "-outform", "der", "-in"])
        .arg(pem_file)
        .output()
        .expect("openssl x509");
    assert!(out.status.success(), "openssl x509: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}
