//! skopeo, as the tests use it: pushing OCI layouts into registries and
//! pulling images out, over plain HTTP, with no user policy or credentials
//! influencing the result.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::util::{no_proxy, require_tool, run};

/// skopeo with no user policy or credentials influencing the test.
pub fn skopeo() -> Command {
    let mut c = Command::new(require_tool("skopeo", "skopeo"));
    c.arg("--insecure-policy");
    c.env_remove("REGISTRY_AUTH_FILE");
    no_proxy(&mut c);
    c
}

/// `skopeo copy --all --preserve-digests oci:DIR:TAG docker://DEST` over
/// plain HTTP.
pub fn skopeo_push(layout: &Path, tag: &str, dest: &str, creds: Option<&str>) {
    let mut cmd = skopeo();
    cmd.args(["copy", "--all", "--preserve-digests", "--dest-tls-verify=false", "-q"]);
    if let Some(c) = creds {
        cmd.arg("--dest-creds").arg(c);
    }
    cmd.arg(format!("oci:{}:{tag}", layout.display())).arg(format!("docker://{dest}"));
    run(&mut cmd);
}

/// `skopeo copy --preserve-digests docker://SRC oci:DIR:TAG` over plain
/// HTTP (`all`: every platform of an index). Returns skopeo's output or
/// its failure message.
pub fn skopeo_pull(src: &str, dir: &Path, tag: &str, all: bool) -> Result<String, String> {
    let mut cmd = skopeo();
    cmd.args(["copy", "--preserve-digests", "--src-tls-verify=false", "--retry-times", "0"]);
    if all {
        cmd.arg("--all");
    }
    cmd.arg(format!("docker://{src}")).arg(format!("oci:{}:{tag}", dir.display()));
    let out = cmd.stdin(Stdio::null()).output().expect("run skopeo");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}
