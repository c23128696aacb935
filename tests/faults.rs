//! The helper against a misbehaving network: a fault-injecting proxy
//! (`common::proxy`, with a [`FaultPlan`]) between the helper and a real
//! SeaweedFS adds latency, resets connections, cuts answers short and
//! answers `503 SlowDown`. Under a share of faults a run converges (retries,
//! idempotent steps); under nothing but faults it gives up within its time
//! bound with an error that names the endpoint; and in no case does a run
//! leave a half-written file behind, or a narinfo whose NAR is missing or
//! of another size (the object a client would trust). After the faults
//! stop, a clean re-run completes and a fresh Nix store substitutes.

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use common::cache::{cache_url, check_narinfos, keys, make_cache_bucket, signing_key};
use common::nix::{TestNix, chain_expr, fresh_store};
use common::proxy::{Fault, FaultPlan, Proxy};
use common::seaweed::Seaweed;
use common::store::{BUCKET, ProxiedStore};
use common::{listing, show};
use nix_binary_cache::credentials::Credentials;
use serde_json::Value;

/// The store behind the proxy (which injects the faults).
type Rig = ProxiedStore;

impl Rig {
    fn new() -> Rig {
        ProxiedStore::start()
    }

    /// `provision` with `extra`; no secret may be printed, faults or not.
    /// Returns the output and how long the run took.
    fn run(&self, extra: &[&str]) -> (Output, Duration) {
        let start = Instant::now();
        let o = self.provision(
            "iam",
            &[&["--abort-incomplete-multipart-days", "7"][..], extra].concat(),
        );
        (o, start.elapsed())
    }

    /// A `--json` run; the report is `null` when the run printed none (a
    /// run that failed), which the callers' assertions then name.
    fn run_json(&self) -> (Output, Value) {
        let (o, _) = self.run(&["--json", "--wait-timeout", "20"]);
        let v = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        (o, v)
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
    let (o, report) = rig.run_json();
    assert_survived(&rig.proxy, 3, &o);
    assert_eq!(report["converged"], true, "{report:#}");
    rig.assert_no_partial_state();

    rig.proxy.set_faults(FaultPlan::default());
    rig.proxy.clear();
    let (o, report) = rig.run_json();
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        statuses(&report).iter().all(|s| s == "unchanged"),
        "{report:#}"
    );
    let writes: Vec<String> = rig.proxy.mutating().iter().map(|r| r.describe()).collect();
    assert!(writes.is_empty(), "a converged run wrote: {writes:?}");

    let s3 = rig.direct(Some(rig.writer()));
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
    let (o, report) = rig.run_json();
    assert_survived(&rig.proxy, 2, &o);
    assert_eq!(report["converged"], true, "{report:#}");
    rig.assert_no_partial_state();
    let first = format!("{}\n{report:#}", show(&o));
    rig.proxy.set_faults(FaultPlan::default());
    let (o, report) = rig.run_json();
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        statuses(&report).iter().all(|s| s == "unchanged"),
        "second run: {report:#}\n{}\nfirst run: {first}",
        show(&o)
    );
    rig.assert_writer_has_only_its_key().await;
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
    let (o, report) = rig.run_json();
    assert_eq!(rig.proxy.faults_injected(), 2);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(report["converged"], true, "{report:#}");
    rig.assert_writer_has_only_its_key().await;
}

/// When the store answers nothing but `fault`, provision stops within its
/// bound (the wait timeout plus the retries of one request), exits 3 and
/// names the endpoint; no half-written state is left.
fn gives_up_clearly(fault: Fault, words: &[&str]) {
    let rig = Rig::new();
    rig.proxy.set_faults(FaultPlan::always(fault));
    let (o, took) = rig.run(&["--wait-timeout", "3"]);
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
    let (o, report) = rig.run_json();
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
    let (o, report) = rig.run_json();
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(report["converged"], true);
    assert!(
        rig.proxy.requests().iter().all(|r| r.fault.is_none()),
        "latency is not a fault"
    );
}

// ---- push --------------------------------------------------------------

/// A cache bucket behind a proxy, a private Nix with a chain of four
/// derivations and a 20 MiB random file (a three-part multipart upload).
struct PushRig {
    sw: Seaweed,
    proxy: Proxy,
    nix: TestNix,
    _dir: tempfile::TempDir,
    key_file: PathBuf,
    public: String,
    creds: PathBuf,
    paths: Vec<String>,
}

impl PushRig {
    fn new(salt: &str) -> PushRig {
        let sw = Seaweed::start();
        make_cache_bucket(&sw, "cache");
        let proxy = Proxy::start(&sw.endpoint);
        let dir = tempfile::tempdir().unwrap();
        let (key_file, public) = signing_key(dir.path(), "faults-1");
        let creds = sw.admin_env_file(dir.path());
        let nix = TestNix::new();
        let top = nix.build_expr(&chain_expr(salt, 4)).remove(0);
        let big = dir.path().join("big.bin");
        let mut data = vec![0u8; 20 * 1024 * 1024];
        getrandom::getrandom(&mut data).unwrap();
        std::fs::write(&big, data).unwrap();
        let big = nix.add(&big);
        PushRig {
            sw,
            proxy,
            nix,
            _dir: dir,
            key_file,
            public,
            creds,
            paths: vec![top, big],
        }
    }

    fn push(&self) -> (Output, Duration) {
        let start = Instant::now();
        let o = self
            .nix
            .helper()
            .args(["push", "--quiet", "--endpoint", &self.proxy.endpoint])
            .args(["--bucket", "cache", "--writer-credentials-file"])
            .arg(&self.creds)
            .arg("--signing-key-file")
            .arg(&self.key_file)
            .args(&self.paths)
            .output()
            .unwrap();
        (o, start.elapsed())
    }

    /// A push that failed as it should: within `bound`, with an error that
    /// names the endpoint. Returns its stderr.
    fn assert_clear_failure(&self, o: &Output, took: Duration, bound: Duration) -> String {
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "{}", show(o));
        assert!(took < bound, "gave up only after {took:?}");
        assert!(
            err.contains(self.proxy.endpoint.trim_start_matches("http://")),
            "the error does not name the endpoint:\n{err}"
        );
        err
    }

    /// The invariant, then: a clean re-run completes, all five paths are in
    /// the cache, and a fresh store substitutes them trusting our key.
    fn clean_rerun_substitutes(&self) {
        self.proxy.set_faults(FaultPlan::default());
        let (o, _) = self.push();
        assert!(o.status.success(), "clean re-run: {}", show(&o));
        assert_eq!(check_narinfos(&self.sw, "cache").len(), 5);
        let (_d, root) = fresh_store();
        let copied = self
            .nix
            .command("nix")
            .args([
                "copy",
                "--from",
                &cache_url(&self.sw, "cache"),
                "--to",
                &root,
            ])
            .args(["--option", "trusted-public-keys", &self.public])
            .args(&self.paths)
            .output()
            .unwrap();
        assert!(copied.status.success(), "substitution: {}", show(&copied));
    }
}

/// Moderate faults everywhere, at most four in all: the push completes.
#[test]
fn push_completes_through_faults() {
    let rig = PushRig::new("faults-moderate");
    rig.proxy.set_faults(FaultPlan {
        latency: Duration::from_millis(2),
        reset: 5,
        truncate: 5,
        slow_down: 5,
        seed: 7,
        limit: Some(4),
        ..FaultPlan::default()
    });
    let (o, _) = rig.push();
    assert_survived(&rig.proxy, 2, &o);
    assert_eq!(check_narinfos(&rig.sw, "cache").len(), 5);
    rig.clean_rerun_substitutes();
}

/// Heavy, unbounded faults: the push may fail, but within its bound, with
/// an error naming the endpoint, and whatever narinfo it wrote points at a
/// complete NAR.
#[test]
fn push_under_heavy_faults_publishes_nothing_untrustworthy() {
    let rig = PushRig::new("faults-heavy");
    rig.proxy.set_faults(FaultPlan {
        reset: 20,
        truncate: 20,
        slow_down: 20,
        seed: 11,
        ..FaultPlan::default()
    });
    let (o, took) = rig.push();
    assert!(rig.proxy.faults_injected() >= 5);
    assert!(took < Duration::from_secs(120), "push took {took:?}");
    if !o.status.success() {
        rig.assert_clear_failure(&o, took, Duration::from_secs(120));
    }
    check_narinfos(&rig.sw, "cache");
    rig.clean_rerun_substitutes();
}

/// The answers of writes are lost (the store did the work, the client
/// hears nothing and retries): the first PUT of a part, a narinfo, and a
/// CompleteMultipartUpload, whose retry finds the upload already gone.
#[test]
fn push_survives_lost_write_answers() {
    for (only, what) in [
        (vec!["PUT"], "PUT"),
        (vec!["POST?uploadId"], "CompleteMultipartUpload"),
        (vec!["POST?uploads"], "CreateMultipartUpload"),
    ] {
        let rig = PushRig::new(&format!("faults-lost-{what}"));
        rig.proxy.set_faults(FaultPlan {
            limit: Some(2),
            only,
            ..FaultPlan::always(Fault::Truncate)
        });
        let (o, _) = rig.push();
        assert_eq!(rig.proxy.faults_injected(), 2, "{what}");
        assert!(o.status.success(), "{what}: {}", show(&o));
        assert_eq!(check_narinfos(&rig.sw, "cache").len(), 5, "{what}");
        rig.clean_rerun_substitutes();
    }
}

/// Every PUT is carried out but its answer lost: the push fails (it cannot
/// know), names the endpoint, and the narinfos the store did receive point
/// at complete NARs.
#[test]
fn push_fails_clearly_when_every_put_answer_is_lost() {
    let rig = PushRig::new("faults-all-puts");
    rig.proxy.set_faults(FaultPlan {
        only: vec!["PUT"],
        ..FaultPlan::always(Fault::Truncate)
    });
    let (o, took) = rig.push();
    rig.assert_clear_failure(&o, took, Duration::from_secs(60));
    check_narinfos(&rig.sw, "cache");
    rig.clean_rerun_substitutes();
}

/// A store that only says SlowDown: push gives up within its bound, says
/// why, and publishes no narinfo.
#[test]
fn push_gives_up_clearly_on_slow_down() {
    let rig = PushRig::new("faults-slowdown");
    rig.proxy.set_faults(FaultPlan::always(Fault::SlowDown));
    let (o, took) = rig.push();
    let err = rig.assert_clear_failure(&o, took, Duration::from_secs(60));
    assert!(
        err.contains("SlowDown") || err.contains("503"),
        "the error does not say why:\n{err}"
    );
    assert!(
        keys(&rig.sw, "cache")
            .iter()
            .all(|k| !k.ends_with(".narinfo")),
        "a narinfo was published"
    );
    rig.clean_rerun_substitutes();
}

/// Enough faults were injected for the test to prove something, and the run
/// still succeeded.
#[track_caller]
fn assert_survived(proxy: &Proxy, min: usize, o: &Output) {
    let injected = proxy.faults_injected();
    assert!(
        injected >= min,
        "only {injected} faults: the test proves nothing"
    );
    assert!(o.status.success(), "{injected} faults\n{}", show(o));
}
