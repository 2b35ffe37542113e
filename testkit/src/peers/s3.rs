//! Real S3 servers for the object backend: s3s-fs (enforces S3's part-size
//! rules) and a single-node Garage (a distributed store that ignores
//! conditional writes), each on free loopback ports in a temp dir.
//!
//! Their binaries are looked up in [`crate::util::peers_bin`]; a missing one
//! fails the test and names the script that installs it
//! (scripts/peers/install-*.sh).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cove_backends::object::{ObjectStorage, ObjectStorageConfig};

use crate::util::{free_port, require_peer, wait_listening};

/// A running S3 server that is killed on drop.
pub struct S3Peer {
    child: Child,
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    dir: Option<tempfile::TempDir>,
}

impl Drop for S3Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("COVE_KEEP_PEER_DIR").is_some() {
            if let Some(d) = self.dir.take() {
                eprintln!("kept peer dir {}", d.keep().display());
            }
        }
    }
}

impl S3Peer {
    /// The `[storage]` section of a `cove serve` config on this bucket
    /// under `prefix`, with multipart parts of `part_size` bytes; `root`
    /// (the replica's own local directory) is `@DATA@`, which the e2e
    /// harness replaces with the server's data directory.
    pub fn cove_storage_section(&self, prefix: &str, part_size: usize) -> String {
        format!(
            "[storage]\nkind = \"s3\"\nroot = \"@DATA@\"\nbucket = \"{}\"\nendpoint = \"{}\"\nregion = \"{}\"\n\
             access_key_id = \"{}\"\nsecret_access_key = \"{}\"\nallow_http = true\nprefix = \"{prefix}\"\npart_size = {part_size}\n",
            self.bucket, self.endpoint, self.region, self.access_key, self.secret_key
        )
    }

    /// The names of the objects below `dir` in the bucket (last path
    /// component), sorted: what a test reads of the layout behind Cove.
    pub async fn list_names(&self, dir: &str) -> Vec<String> {
        use futures::TryStreamExt as _;
        let base = object_store::path::Path::from(dir);
        let metas: Vec<_> = object_store::ObjectStore::list(&self.raw_s3(), Some(&base))
            .try_collect()
            .await
            .unwrap_or_else(|e| panic!("list {dir}: {e}"));
        let mut names: Vec<String> = metas.iter().filter_map(|m| m.location.filename().map(str::to_owned)).collect();
        names.sort();
        names
    }

    /// The `[storage]` config pointing at this server.
    pub fn config(&self, prefix: &str) -> ObjectStorageConfig {
        toml::from_str(&format!(
            r#"kind = "s3"
               bucket = "{}"
               endpoint = "{}"
               region = "{}"
               allow_http = true
               access_key_id = "{}"
               secret_access_key = "{}"
               prefix = "{prefix}"
               part_size = {}"#,
            self.bucket,
            self.endpoint,
            self.region,
            self.access_key,
            self.secret_key,
            5 * 1024 * 1024
        ))
        .expect("test config parses")
    }

    /// A fresh `ObjectStorage` (a "replica") on this server's bucket.
    pub fn storage(&self, prefix: &str) -> ObjectStorage {
        ObjectStorage::from_config(&self.config(prefix)).expect("valid config")
    }

    /// Starts s3s-fs on a free port with a bucket directory `cove`.
    pub fn s3s_fs() -> S3Peer {
        let bin = require_peer("s3s-fs", "install-s3s-fs.sh");
        let dir = tempfile::tempdir().expect("tempdir");
        if std::env::var_os("COVE_KEEP_PEER_DIR").is_some() {
            eprintln!("s3s-fs dir: {}", dir.path().display());
        }
        let bucket = "cove".to_owned();
        std::fs::create_dir_all(dir.path().join(&bucket)).expect("bucket dir");
        let port = free_port();
        let (ak, sk) = ("COVETESTKEY", "cove-test-secret-key");
        let mut child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ak, "--secret-key", sk])
            .arg(dir.path())
            .env("RUST_LOG", "s3s_fs=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("s3s-fs.log")).expect("log"))
            .spawn()
            .expect("spawn s3s-fs");
        wait_listening(port, &mut child, "s3s-fs", None, Duration::from_secs(30));
        S3Peer {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket,
            access_key: ak.into(),
            secret_key: sk.into(),
            region: "us-east-1".into(),
            dir: Some(dir),
        }
    }

    /// Starts a single-node Garage (sqlite, replication_factor = 1) on free
    /// ports, assigns and applies its layout, creates bucket `cove` and
    /// imports a key allowed on it.
    pub fn garage() -> S3Peer {
        let bin = require_peer("garage", "install-garage.sh");
        let dir = tempfile::tempdir().expect("tempdir");
        let (s3_port, rpc_port, admin_port) = (free_port(), free_port(), free_port());
        let secret: String = (0..32).map(|_| format!("{:02x}", rand_byte())).collect();
        let cfg = dir.path().join("garage.toml");
        std::fs::write(
            &cfg,
            format!(
                r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3_port}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin_port}"
"#,
                meta = dir.path().join("meta").display(),
                data = dir.path().join("data").display(),
            ),
        )
        .expect("write garage.toml");
        let log = std::fs::File::create(dir.path().join("garage.log")).expect("log file");
        let mut child = Command::new(&bin)
            .arg("-c")
            .arg(&cfg)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn garage");
        wait_listening(rpc_port, &mut child, "garage", None, Duration::from_secs(30));
        let garage = |args: &[&str]| -> String {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let out = Command::new(&bin).arg("-c").arg(&cfg).args(args).output().expect("run garage cli");
                if out.status.success() {
                    return String::from_utf8_lossy(&out.stdout).into_owned();
                }
                if Instant::now() > deadline {
                    panic!("garage {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        };
        let node = garage(&["node", "id", "-q"]);
        let node_id = node.trim().split('@').next().unwrap_or_default().to_owned();
        garage(&["layout", "assign", "-z", "dc1", "-c", "1G", &node_id]);
        garage(&["layout", "apply", "--version", "1"]);
        garage(&["bucket", "create", "cove"]);
        let key_id = format!("GK{}", (0..12).map(|_| format!("{:02x}", rand_byte())).collect::<String>());
        let key_secret: String = (0..32).map(|_| format!("{:02x}", rand_byte())).collect();
        garage(&["key", "import", "--yes", "-n", "cove-test", &key_id, &key_secret]);
        garage(&["bucket", "allow", "--read", "--write", "--owner", "cove", "--key", &key_id]);
        wait_listening(s3_port, &mut child, "garage s3 api", None, Duration::from_secs(30));
        S3Peer {
            child,
            endpoint: format!("http://127.0.0.1:{s3_port}"),
            bucket: "cove".into(),
            access_key: key_id,
            secret_key: key_secret,
            region: "garage".into(),
            dir: Some(dir),
        }
    }
}

fn rand_byte() -> u8 {
    uuid::Uuid::new_v4().as_bytes()[0]
}

impl S3Peer {
    /// A raw object_store S3 client on this server (for inspecting the
    /// bucket and its multipart uploads).
    pub fn raw_s3(&self) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_endpoint(&self.endpoint)
            .with_region(&self.region)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_access_key_id(&self.access_key)
            .with_secret_access_key(&self.secret_key)
            .build()
            .expect("raw s3 client")
    }
}
