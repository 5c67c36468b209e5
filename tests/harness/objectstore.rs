//! Real S3-compatible object stores for the tests: Garage (a distributed store, one node
//! or three with replication 3) and moto's server (which honours conditional writes).
//! Each runs under a temporary directory on loopback ports and stops when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::daemons::{terminate, wait_for};
use crate::tools::{output, require, run};
use crate::upstream::free_port;

/// Kills the child when the thread that started it ends (a test that panics or a
/// process that exits leaves no object store behind).
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only prctl, which is async-signal-safe, runs in the child.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The bucket of one Garage node shared by every test of this process that asks for
/// it (each test uses a prefix of its own). Started on a thread that lives as long as
/// the process, so the node goes when the process does.
pub fn shared_garage() -> &'static Bucket {
    static BUCKET: std::sync::OnceLock<Bucket> = std::sync::OnceLock::new();
    BUCKET.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let garage = Garage::start(1);
            tx.send(garage.bucket.clone()).unwrap();
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("a shared Garage")
    })
}

/// A bucket and how to reach it.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub name: String,
    pub region: String,
    pub key_id: String,
    pub secret: String,
}

impl Bucket {
    /// `s3://BUCKET/PREFIX`
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.name)
    }

    /// The `AWS_*` variables a registry on this bucket is started with.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", self.region.as_str()),
            ("AWS_ACCESS_KEY_ID", self.key_id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.as_str()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// An `object_store` client of the bucket, for tests that look at objects directly.
    pub fn client(&self) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_access_key_id(&self.key_id)
            .with_secret_access_key(&self.secret)
            .with_region(&self.region)
            .with_bucket_name(&self.name)
            .with_http_connector(object_store::client::ReqwestConnector::default())
            .build()
            .expect("an S3 client")
    }
}

const KEY_ID: &str = "GK0123456789abcdef01234567";
const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const RPC_SECRET: &str = "4f6b0a1d2c3e5f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";

struct Node {
    config: PathBuf,
    log: PathBuf,
    s3_port: u16,
    child: Option<Child>,
}

/// A Garage cluster on loopback with one bucket and fixed test credentials.
pub struct Garage {
    nodes: Vec<Node>,
    pub bucket: Bucket,
    _dir: tempfile::TempDir,
}

impl Garage {
    /// `n` nodes (1, or 3 for replication 3), bootstrapped with a bucket.
    pub fn start(n: usize) -> Garage {
        require("garage");
        let dir = tempfile::tempdir().expect("temp dir");
        let replication = if n >= 3 { 3 } else { 1 };
        let nodes: Vec<Node> = (0..n)
            .map(|i| Self::configure(dir.path(), i, replication))
            .collect();
        let mut g = Garage {
            bucket: Bucket {
                endpoint: format!("http://127.0.0.1:{}", nodes[0].s3_port),
                name: "sealer-test".into(),
                region: "garage".into(),
                key_id: KEY_ID.into(),
                secret: SECRET.into(),
            },
            nodes,
            _dir: dir,
        };
        for i in 0..n {
            g.start_node(i);
        }
        g.bootstrap();
        g
    }

    fn configure(dir: &Path, i: usize, replication: usize) -> Node {
        let node = dir.join(format!("node{i}"));
        std::fs::create_dir_all(&node).unwrap();
        let (s3, rpc, admin) = (free_port(), free_port(), free_port());
        let config = node.join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"lmdb\"\n\
                 replication_factor = {replication}\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{RPC_SECRET}\"\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                 root_domain = \".s3.garage.localhost\"\n\
                 [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\nadmin_token = \"test-admin-token\"\n",
                meta = node.join("meta").display(),
                data = node.join("data").display(),
            ),
        )
        .unwrap();
        Node {
            config,
            log: node.join("garage.log"),
            s3_port: s3,
            child: None,
        }
    }

    fn cli(&self, i: usize) -> Command {
        let mut c = Command::new(require("garage"));
        c.arg("-c").arg(&self.nodes[i].config);
        c
    }

    /// Starts node `i` (again, after [`Garage::stop_node`]) and waits for its S3 port.
    pub fn start_node(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.nodes[i].log)
            .unwrap();
        let mut cmd = self.cli(i);
        cmd.arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().expect("starting garage");
        self.nodes[i].child = Some(child);
        let addr = format!("127.0.0.1:{}", self.nodes[i].s3_port);
        wait_for("garage", &self.nodes[i].log.clone(), || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
    }

    /// SIGKILL of node `i`: a node that fails.
    pub fn stop_node(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every node's S3 address.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("http://127.0.0.1:{}", n.s3_port))
            .collect()
    }

    fn node_id(&self, i: usize) -> String {
        let log = self.nodes[i].log.clone();
        let mut id = String::new();
        wait_for("garage's RPC", &log, || {
            let out = output(self.cli(i).args(["node", "id", "-q"]));
            id = String::from_utf8_lossy(&out.stdout).trim().to_string();
            out.status.success() && !id.is_empty()
        });
        id
    }

    fn bootstrap(&self) {
        let ids: Vec<String> = (0..self.nodes.len()).map(|i| self.node_id(i)).collect();
        for id in &ids[1..] {
            run(self.cli(0).args(["node", "connect", id]));
        }
        for (i, id) in ids.iter().enumerate() {
            let short = id.split('@').next().unwrap();
            let zone = format!("dc{i}");
            run(self
                .cli(0)
                .args(["layout", "assign", "-z", &zone, "-c", "1G", short]));
        }
        run(self.cli(0).args(["layout", "apply", "--version", "1"]));
        run(self
            .cli(0)
            .args(["key", "import", "--yes", "-n", "test", KEY_ID, SECRET]));
        run(self
            .cli(0)
            .args(["key", "allow", "--create-bucket", "test"]));
        run(self.cli(0).args(["bucket", "create", &self.bucket.name]));
        run(self.cli(0).args([
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            &self.bucket.name,
            "--key",
            "test",
        ]));
        // Every node serves the bucket before the tests start.
        for endpoint in self.endpoints() {
            let url = format!("{endpoint}/{}", self.bucket.name);
            wait_for("the bucket", &self.nodes[0].log, || {
                output(Command::new(require("curl")).args(["-s", "-o", "/dev/null", &url]))
                    .status
                    .success()
            });
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(c) = &mut n.child {
                terminate(c);
            }
        }
    }
}

/// moto's S3 server: honours `If-None-Match`/`If-Match` on PUT, unlike Garage.
pub struct Moto {
    child: Child,
    pub bucket: Bucket,
    _dir: tempfile::TempDir,
}

impl Moto {
    pub fn start() -> Moto {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let log = dir.path().join("moto.log");
        let f = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(require("moto_server"));
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(f);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().expect("starting moto_server");
        let addr = format!("127.0.0.1:{port}");
        wait_for("moto", &log, || std::net::TcpStream::connect(&addr).is_ok());
        let bucket = Bucket {
            endpoint: format!("http://{addr}"),
            name: "sealer-test".into(),
            region: "us-east-1".into(),
            key_id: "testing".into(),
            secret: "testing".into(),
        };
        run(Command::new(require("curl")).args([
            "-sf",
            "-X",
            "PUT",
            &format!("{}/{}", bucket.endpoint, bucket.name),
        ]));
        Moto {
            child,
            bucket,
            _dir: dir,
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}
