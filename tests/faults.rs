//! The helper against a misbehaving network: a fault-injecting proxy
//! (`common::proxy`, with a [`FaultPlan`]) between the helper and a real
//! SeaweedFS adds latency, resets connections, cuts answers short and
//! answers `503 SlowDown`. Under a share of faults a run converges (retries,
//! idempotent steps); under nothing but faults it gives up within its time
//! bound with an error that names the endpoint; and in no case does a run
//! leave a half-written file behind.

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use common::proxy::{Fault, FaultPlan, Proxy};
use common::seaweed::Seaweed;
use common::{cmd, listing, show};
use nix_binary_cache::credentials::Credentials;
use nix_binary_cache::http::{Endpoint, EndpointConfig};
use nix_binary_cache::iam::IamClient;
use nix_binary_cache::s3::S3Client;
use serde_json::Value;

const BUCKET: &str = "nix-cache";

struct Rig {
    sw: Seaweed,
    proxy: Proxy,
    dir: tempfile::TempDir,
    admin_file: PathBuf,
}

impl Rig {
    fn new() -> Rig {
        let sw = Seaweed::start();
        let proxy = Proxy::start(&sw.endpoint);
        let dir = tempfile::tempdir().unwrap();
        let admin_file = sw.admin_env_file(dir.path());
        Rig {
            sw,
            proxy,
            dir,
            admin_file,
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn writer_file(&self) -> PathBuf {
        self.state_dir().join("writer.env")
    }

    fn provision(&self, extra: &[&str]) -> (Output, Duration) {
        let start = Instant::now();
        let o = cmd()
            .args([
                "provision",
                "--endpoint",
                &self.proxy.endpoint,
                "--bucket",
                BUCKET,
                "--backend",
                "iam",
                "--admin-credentials-file",
                self.admin_file.to_str().unwrap(),
                "--state-dir",
                self.state_dir().to_str().unwrap(),
                "--abort-incomplete-multipart-days",
                "7",
            ])
            .args(extra)
            .output()
            .unwrap();
        (o, start.elapsed())
    }

    fn provision_json(&self) -> (Output, Value) {
        let (o, _) = self.provision(&["--json", "--wait-timeout", "20"]);
        let v = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        (o, v)
    }

    /// A client straight to SeaweedFS, signing as `creds`.
    fn direct(&self, creds: Option<Credentials>) -> S3Client {
        let e = Endpoint::new(EndpointConfig::new(&self.sw.endpoint).unwrap()).unwrap();
        S3Client::new(e, creds, true)
    }

    /// The writer file is absent or complete, and nothing temporary is left.
    fn assert_no_partial_state(&self) {
        if !self.state_dir().exists() {
            return;
        }
        for name in listing(&self.state_dir()) {
            assert!(
                !name.starts_with('.') && !name.contains("tmp"),
                "left behind in the state directory: {name}"
            );
        }
        if self.writer_file().exists() {
            Credentials::from_env_file(&self.writer_file()).expect("a complete writer file");
        }
    }
}

fn statuses(report: &Value) -> Vec<String> {
    report["resources"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["status"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A fresh store, provisioned through resets, cut answers, SlowDown and
/// latency: the run converges, and a clean run afterwards has nothing to do
/// and sends reads only. The writer it made authenticates.
#[tokio::test]
async fn provision_converges_through_faults() {
    let rig = Rig::new();
    rig.proxy.set_faults(FaultPlan {
        latency: Duration::from_millis(5),
        reset: 8,
        truncate: 8,
        slow_down: 8,
        seed: 0x5eed,
        limit: Some(4),
        ..FaultPlan::default()
    });
    let (o, report) = rig.provision_json();
    let injected = rig.proxy.faults_injected();
    assert!(
        injected >= 3,
        "only {injected} faults: the test proves nothing"
    );
    assert!(o.status.success(), "{injected} faults\n{}", show(&o));
    assert_eq!(report["converged"], true, "{report:#}");
    rig.assert_no_partial_state();

    rig.proxy.set_faults(FaultPlan::default());
    rig.proxy.clear();
    let (o, report) = rig.provision_json();
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        statuses(&report).iter().all(|s| s == "unchanged"),
        "{report:#}"
    );
    let writes: Vec<String> = rig.proxy.mutating().iter().map(|r| r.describe()).collect();
    assert!(writes.is_empty(), "a converged run wrote: {writes:?}");

    let writer = Credentials::from_env_file(&rig.writer_file()).unwrap();
    let s3 = rig.direct(Some(writer));
    s3.put_object(BUCKET, "probe", "x", "text/plain")
        .await
        .unwrap();
}

/// Faults only on writes (PUT/POST), where a lost answer is the dangerous
/// case (the store did the work, the client retries it): still converges,
/// and a `CreateAccessKey` whose answer was lost leaves no orphan key.
#[tokio::test]
async fn provision_converges_when_writes_lose_their_answers() {
    let rig = Rig::new();
    rig.proxy.set_faults(FaultPlan {
        truncate: 25,
        reset: 5,
        seed: 44,
        limit: Some(4),
        only: vec!["PUT", "POST"],
        ..FaultPlan::default()
    });
    let (o, report) = rig.provision_json();
    let injected = rig.proxy.faults_injected();
    assert!(
        injected >= 2,
        "only {injected} faults: the test proves nothing"
    );
    assert!(o.status.success(), "{injected} faults\n{}", show(&o));
    assert_eq!(report["converged"], true, "{report:#}");
    rig.assert_no_partial_state();
    let first = format!("{}\n{report:#}", show(&o));
    rig.proxy.set_faults(FaultPlan::default());
    let (o, report) = rig.provision_json();
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        statuses(&report).iter().all(|s| s == "unchanged"),
        "second run: {report:#}\n{}\nfirst run: {first}",
        show(&o)
    );
    let iam = IamClient::new(
        Endpoint::new(EndpointConfig::new(&rig.sw.endpoint).unwrap()).unwrap(),
        Credentials::new(&rig.sw.admin_key, &rig.sw.admin_secret),
    );
    let keys = iam.list_access_keys("nix-cache-writer").await.unwrap();
    let writer = Credentials::from_env_file(&rig.writer_file()).unwrap();
    let ids: Vec<&str> = keys.iter().map(|k| k.access_key_id.as_str()).collect();
    assert_eq!(ids, [writer.access_key_id.as_str()], "orphan writer keys");
}

/// `CreateAccessKey` is not idempotent: when its answer is lost the retry
/// issues another key. Provision must leave the writer with exactly the key
/// in its file.
#[tokio::test]
async fn lost_create_access_key_answers_leave_no_orphan_key() {
    let rig = Rig::new();
    rig.proxy.set_faults(FaultPlan {
        limit: Some(2),
        only: vec!["CreateAccessKey"],
        ..FaultPlan::always(Fault::Truncate)
    });
    let (o, report) = rig.provision_json();
    assert_eq!(rig.proxy.faults_injected(), 2);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(report["converged"], true, "{report:#}");
    let iam = IamClient::new(
        Endpoint::new(EndpointConfig::new(&rig.sw.endpoint).unwrap()).unwrap(),
        Credentials::new(&rig.sw.admin_key, &rig.sw.admin_secret),
    );
    let keys = iam.list_access_keys("nix-cache-writer").await.unwrap();
    let writer = Credentials::from_env_file(&rig.writer_file()).unwrap();
    let ids: Vec<&str> = keys.iter().map(|k| k.access_key_id.as_str()).collect();
    assert_eq!(ids, [writer.access_key_id.as_str()], "orphan writer keys");
}

/// When the store answers nothing but `fault`, provision stops within its
/// bound (the wait timeout plus the retries of one request), exits 3 and
/// names the endpoint; no half-written state is left.
fn gives_up_clearly(fault: Fault, words: &[&str]) {
    let rig = Rig::new();
    rig.proxy.set_faults(FaultPlan::always(fault));
    let (o, took) = rig.provision(&["--wait-timeout", "3"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(rig.proxy.faults_injected() >= 1);
    assert_eq!(o.status.code(), Some(3), "{fault:?}\n{}", show(&o));
    assert!(
        took < Duration::from_secs(45),
        "{fault:?}: gave up only after {took:?}"
    );
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains(&rig.proxy.endpoint)
            || last.contains(rig.proxy.endpoint.trim_start_matches("http://")),
        "{fault:?}: the error does not name the endpoint:\n{err}"
    );
    assert!(
        words.iter().any(|w| err.contains(w)),
        "{fault:?}: the error says none of {words:?}:\n{err}"
    );
    assert!(
        !rig.writer_file().exists(),
        "{fault:?}: a writer file was written"
    );
    rig.assert_no_partial_state();
    check_clean(&rig);
}

/// After the faults stop, the same command converges.
fn check_clean(rig: &Rig) {
    rig.proxy.set_faults(FaultPlan::default());
    let (o, report) = rig.provision_json();
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(report["converged"], true);
}

#[test]
fn provision_gives_up_clearly_on_slow_down() {
    gives_up_clearly(Fault::SlowDown, &["SlowDown", "503"]);
}

#[test]
fn provision_gives_up_clearly_on_resets() {
    gives_up_clearly(Fault::Reset, &["reset", "connection", "closed"]);
}

#[test]
fn provision_gives_up_clearly_on_cut_answers() {
    gives_up_clearly(
        Fault::Truncate,
        &["connection", "closed", "incomplete", "body"],
    );
}

/// Latency alone changes nothing but time.
#[test]
fn provision_is_unaffected_by_latency() {
    let rig = Rig::new();
    rig.proxy.set_faults(FaultPlan {
        latency: Duration::from_millis(150),
        ..FaultPlan::default()
    });
    let (o, report) = rig.provision_json();
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(report["converged"], true);
    assert!(
        rig.proxy.requests().iter().all(|r| r.fault.is_none()),
        "latency is not a fault"
    );
}
