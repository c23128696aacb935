//! A SeaweedFS behind the recording proxy, with a state directory and the
//! admin credentials in an env file: what every provisioning test starts
//! from. Tests wrap it in a `Rig` of their own (it derefs to this).

use std::path::PathBuf;
use std::process::Output;

use nix_binary_cache::credentials::Credentials;
use nix_binary_cache::http::{Endpoint, EndpointConfig};
use nix_binary_cache::iam::IamClient;
use nix_binary_cache::s3::S3Client;

use super::proxy::Proxy;
use super::seaweed::Seaweed;

/// The bucket the provisioning tests make a cache of.
pub const BUCKET: &str = "nix-cache";

/// The writer user `provision` makes unless told otherwise.
pub const WRITER: &str = "nix-cache-writer";

/// A store, a proxy in front of it, and a directory for state files.
pub struct ProxiedStore {
    /// The real store.
    pub sw: Seaweed,
    /// The recording (and fault-injecting) proxy in front of it.
    pub proxy: Proxy,
    /// Holds the admin env file and the state directory.
    pub dir: tempfile::TempDir,
    /// The admin credentials env file (0600).
    pub admin_file: PathBuf,
}

impl ProxiedStore {
    /// Starts SeaweedFS and the proxy.
    pub fn start() -> ProxiedStore {
        let sw = Seaweed::start();
        let proxy = Proxy::start(&sw.endpoint);
        let dir = tempfile::tempdir().unwrap();
        let admin_file = sw.admin_env_file(dir.path());
        ProxiedStore {
            sw,
            proxy,
            dir,
            admin_file,
        }
    }

    /// `--state-dir` of the runs.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The writer credentials file provision writes into the state dir.
    pub fn writer_file(&self) -> PathBuf {
        self.state_dir().join("writer.env")
    }

    /// The writer credentials provision wrote.
    pub fn writer(&self) -> Credentials {
        Credentials::from_env_file(&self.writer_file()).unwrap()
    }

    /// `provision` through the proxy with the flags every run here shares
    /// (endpoint, [`BUCKET`], `backend`, the admin credentials file, the
    /// state directory), then `extra`. Flags a test sets its own way go in
    /// `extra` only: clap refuses a flag given twice.
    pub fn provision_args(&self, backend: &str, extra: &[&str]) -> Vec<String> {
        let state = self.state_dir();
        [
            "provision",
            "--endpoint",
            &self.proxy.endpoint,
            "--bucket",
            BUCKET,
            "--backend",
            backend,
            "--admin-credentials-file",
            self.admin_file.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
    }

    /// Runs [`provision_args`](Self::provision_args); no secret may be
    /// printed.
    pub fn provision(&self, backend: &str, extra: &[&str]) -> Output {
        let o = super::cmd()
            .args(self.provision_args(backend, extra))
            .output()
            .expect("the helper binary runs");
        self.assert_no_secret(&o);
        o
    }

    /// Runs [`provision`](Self::provision) with `--json`; returns the
    /// output and the report.
    pub fn provision_json(&self, backend: &str, extra: &[&str]) -> (Output, serde_json::Value) {
        let o = self.provision(backend, &[&["--json"][..], extra].concat());
        let v = super::json_stdout(&o);
        (o, v)
    }

    /// Neither the admin secret nor the writer secret (when its file
    /// exists) reached stdout or stderr.
    #[track_caller]
    pub fn assert_no_secret(&self, o: &Output) {
        super::assert_no_secret(o, &[&self.sw.admin_secret], &self.writer_file());
    }

    /// The writer user has exactly one access key, the one in its file: a
    /// retried `CreateAccessKey` left no orphan.
    pub async fn assert_writer_has_only_its_key(&self) {
        let keys = self.admin_iam().list_access_keys(WRITER).await.unwrap();
        let ids: Vec<&str> = keys.iter().map(|k| k.access_key_id.as_str()).collect();
        assert_eq!(
            ids,
            [self.writer().access_key_id.as_str()],
            "orphan writer keys: {keys:?}"
        );
    }

    /// An S3 client straight to SeaweedFS (not through the proxy).
    pub fn direct(&self, creds: Option<Credentials>) -> S3Client {
        S3Client::new(self.endpoint(), creds, true)
    }

    /// The admin, straight to SeaweedFS.
    pub fn admin_s3(&self) -> S3Client {
        self.direct(Some(self.admin()))
    }

    /// The admin's IAM client, straight to SeaweedFS.
    pub fn admin_iam(&self) -> IamClient {
        IamClient::new(self.endpoint(), self.admin())
    }

    fn admin(&self) -> Credentials {
        Credentials::new(&self.sw.admin_key, &self.sw.admin_secret)
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::new(EndpointConfig::new(&self.sw.endpoint).unwrap()).unwrap()
    }
}
