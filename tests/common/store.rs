//! A SeaweedFS behind the recording proxy, with a state directory and the
//! admin credentials in an env file: what every provisioning test starts
//! from. Tests wrap it in a `Rig` of their own (it derefs to this).

use std::path::PathBuf;

use nix_binary_cache::credentials::Credentials;
use nix_binary_cache::http::{Endpoint, EndpointConfig};
use nix_binary_cache::iam::IamClient;
use nix_binary_cache::s3::S3Client;

use super::proxy::Proxy;
use super::seaweed::Seaweed;

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
