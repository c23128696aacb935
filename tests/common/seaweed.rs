//! A real SeaweedFS (`weed mini`) on loopback with random admin credentials.
//!
//! Ports are chosen below 55535 with port + 10000 free as well (SeaweedFS
//! binds gRPC there). The process is killed and its directory removed when
//! the [`Seaweed`] value drops, also when the test panics.

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running SeaweedFS.
pub struct Seaweed {
    /// `http://127.0.0.1:PORT`: S3 and IAM.
    pub endpoint: String,
    /// The S3 port.
    pub port: u16,
    /// Admin access key id.
    pub admin_key: String,
    /// Admin secret key.
    pub admin_secret: String,
    /// Data directory (removed on drop).
    pub dir: tempfile::TempDir,
    ports: [u16; 5],
    child: Option<Child>,
}

fn free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("/dev/urandom is readable");
    u64::from_le_bytes(b)
}

fn random_token(len: usize) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..len)
        .map(|_| A[(random_u64() % A.len() as u64) as usize] as char)
        .collect()
}

/// Five consecutive free ports p..p+4 below 55535 with p+10000.. free too.
fn pick_ports() -> [u16; 5] {
    for _ in 0..200 {
        let base = 20000 + (random_u64() % 25000) as u16;
        let ports = [base, base + 1, base + 2, base + 3, base + 4];
        if ports.iter().all(|&p| free(p) && free(p + 10000)) {
            return ports;
        }
    }
    panic!("no free loopback ports found for SeaweedFS");
}

impl Seaweed {
    /// Starts a fresh server and waits until a signed ListBuckets works.
    pub fn start() -> Seaweed {
        let mut s = Seaweed {
            endpoint: String::new(),
            port: 0,
            admin_key: format!("ADMIN{}", random_token(15)),
            admin_secret: random_token(40),
            dir: tempfile::tempdir().expect("temp dir"),
            ports: [0; 5],
            child: None,
        };
        for attempt in 0..3 {
            s.ports = pick_ports();
            s.port = s.ports[0];
            s.endpoint = format!("http://127.0.0.1:{}", s.port);
            s.spawn();
            if s.wait_ready(Duration::from_secs(30)) {
                return s;
            }
            eprintln!(
                "SeaweedFS did not become ready (attempt {attempt}):\n{}",
                s.log()
            );
            s.kill();
        }
        panic!("SeaweedFS did not start");
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let child = Command::new(super::venv().join("bin/weed"))
            .arg("mini")
            .arg(format!("-dir={}", d.join("data").display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-s3.iam.readOnly=false",
                "-master.telemetry=false",
                "-admin.ui=false",
                "-webdav=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
            ])
            .arg(format!("-s3.port={}", self.ports[0]))
            .arg(format!("-filer.port={}", self.ports[1]))
            .arg(format!("-master.port={}", self.ports[2]))
            .arg(format!("-volume.port={}", self.ports[3]))
            .arg(format!("-admin.port={}", self.ports[4]))
            .env("AWS_ACCESS_KEY_ID", &self.admin_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.admin_secret)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(d.join("weed.log")).unwrap())
            .stderr(std::fs::File::create(d.join("weed.err")).unwrap())
            .spawn()
            .expect("weed starts (run scripts/setup.sh to install it)");
        self.child = Some(child);
    }

    /// Waits until S3 answers a signed ListBuckets with 200.
    fn wait_ready(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                return false;
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() && self.list_buckets_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn list_buckets_ok(&self) -> bool {
        let status = Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/s3_ready.py"))
            .arg(&self.endpoint)
            .env("AWS_ACCESS_KEY_ID", &self.admin_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.admin_secret)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        matches!(status, Ok(s) if s.success())
    }

    /// An env file with the admin credentials (mode 0600) in `dir`.
    pub fn admin_env_file(&self, dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("admin.env");
        std::fs::write(
            &p,
            format!(
                "AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\n",
                self.admin_key, self.admin_secret
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    /// Stops the server, keeping its data (for "the cache is down" tests).
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts a stopped server again on the same ports with the same data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        assert!(
            self.wait_ready(Duration::from_secs(30)),
            "SeaweedFS did not come back:\n{}",
            self.log()
        );
    }

    /// The server's log (stdout and stderr), for failure messages.
    pub fn log(&self) -> String {
        let out = std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
        let err = std::fs::read_to_string(self.dir.path().join("weed.err")).unwrap_or_default();
        format!("{}\n{}", tail(&out), tail(&err))
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
