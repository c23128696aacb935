//! Automatic push: the post-build hook (`enqueue`) only drops a file into
//! the spool and exits 0 whatever the state of the cache; the uploader
//! (`upload-queue`) drains it, retries while the cache is down and removes
//! an entry only once its paths are in the cache.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cache::{cache_url, check_narinfos, make_cache_bucket};
use common::nix::chain_expr;
use common::queue::{BUCKET, Spooler};
use common::seaweed::Seaweed;
use common::show;

/// The store, and the spool whose uploader talks to it directly.
struct Rig {
    s: Seaweed,
    q: Spooler,
}

impl std::ops::Deref for Rig {
    type Target = Spooler;
    fn deref(&self) -> &Spooler {
        &self.q
    }
}

fn rig() -> Rig {
    let s = Seaweed::start();
    make_cache_bucket(&s, BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let creds = s.admin_env_file(dir.path());
    let q = Spooler::new(dir, creds, &s.endpoint, cache_url(&s, BUCKET));
    Rig { s, q }
}

#[test]
fn hook_queues_while_the_cache_is_down_and_the_uploader_drains_after() {
    let mut r = rig();
    let a = r.nix.build_expr(&chain_expr("queue-a", 3)).remove(0);
    let b = r.nix.build_expr(&chain_expr("queue-b", 1)).remove(0);
    r.s.stop();

    // The hook returns at once with exit 0 and keeps the paths.
    let (out, took) = r.enqueue(&format!("{a} {b}"), &[]);
    assert!(out.status.success(), "{}", show(&out));
    eprintln!("enqueue took {took:?}");
    assert!(took < Duration::from_secs(3), "enqueue took {took:?}");
    assert_eq!(r.entries(), 1);
    let (out, _) = r.enqueue(&b, &[]);
    assert!(out.status.success());
    assert_eq!(r.entries(), 2);
    assert!(r.status_text().contains("2 entries waiting"));

    // The uploader cannot reach the cache: the entries stay, with the error.
    let out = r.uploader().arg("--once").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(r.entries(), 2);
    let status = r.status_text();
    assert!(status.contains("1 attempt failed"), "{status}");
    assert!(status.contains(&r.s.endpoint), "{status}");

    // The cache is back: one pass drains everything, and it substitutes.
    r.s.restart();
    let out = r.uploader().arg("--once").output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(r.entries(), 0);
    assert!(r.status_text().contains("is empty"));
    assert_eq!(check_narinfos(&r.s, BUCKET).len(), 4);
    let out = r.substitutes(&[&a, &b]);
    assert!(out.status.success(), "{}", show(&out));
}

#[test]
fn the_service_retries_until_the_cache_is_back() {
    let mut r = rig();
    let a = r.nix.build_expr(&chain_expr("queue-service", 2)).remove(0);
    r.s.stop();
    let mut service = r
        .uploader()
        .args(["--poll-interval", "1", "--max-backoff", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (out, _) = r.enqueue(&a, &[]);
    assert!(out.status.success());
    // It tries, fails and records it, keeping the entry.
    let state_dir = r.spool.join("state");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&state_dir)
        .map(|d| d.count())
        .unwrap_or(0)
        == 0
    {
        assert!(Instant::now() < deadline, "the service never tried");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(r.entries(), 1);
    r.s.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    while r.entries() > 0 {
        assert!(
            Instant::now() < deadline,
            "the service never drained the queue"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    service.kill().unwrap();
    let out = service.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("push failed"), "{log}");
    assert!(log.contains("1 entry pushed"), "{log}");
    let out = r.substitutes(&[&a]);
    assert!(out.status.success(), "{}", show(&out));
}

#[test]
fn hook_errors_and_a_full_queue_never_fail_the_build() {
    let r = rig();
    let a = r.nix.build_expr(&chain_expr("queue-cap", 1)).remove(0);
    // Cap: beyond it new entries are refused with a log line, exit 0.
    assert!(r.enqueue(&a, &["--max-entries", "1"]).0.status.success());
    let (out, _) = r.enqueue(&a, &["--max-entries", "1"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("queue is full"));
    assert_eq!(r.entries(), 1);
    // An unusable spool (a file where the directory should be): exit 0 and
    // a log line naming the problem.
    let bad = r.dir.path().join("not-a-dir");
    std::fs::write(&bad, "").unwrap();
    let out = r
        .nix
        .helper()
        .args(["enqueue", "--spool"])
        .arg(bad.join("spool"))
        .env("OUT_PATHS", &a)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not-a-dir") && err.contains("not queued"),
        "{err}"
    );
    // No spool given at all: still exit 0.
    let out = r
        .nix
        .helper()
        .arg("enqueue")
        .env("OUT_PATHS", &a)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    // Empty OUT_PATHS: nothing queued.
    assert!(r.enqueue("", &[]).0.status.success());
    assert_eq!(r.entries(), 1);
}

#[test]
fn collected_paths_are_dropped_with_a_log_line_not_retried_forever() {
    let r = rig();
    let a = r.nix.build_expr(&chain_expr("queue-gc", 1)).remove(0);
    let gone = "/nix/store/00000000000000000000000000000000-collected";
    assert!(r.enqueue(&format!("{a} {gone}"), &[]).0.status.success());
    assert!(r.enqueue(gone, &[]).0.status.success());
    let out = r.uploader().arg("--once").output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no longer in the local store"),
        "{}",
        show(&out)
    );
    assert_eq!(r.entries(), 0);
    assert_eq!(check_narinfos(&r.s, BUCKET).len(), 1);
}

#[test]
fn spool_files_are_shareable() {
    use std::os::unix::fs::MetadataExt;
    let r = rig();
    std::fs::create_dir(&r.spool).unwrap();
    std::fs::set_permissions(
        &r.spool,
        std::os::unix::fs::PermissionsExt::from_mode(0o2770),
    )
    .unwrap();
    assert!(
        r.enqueue("/nix/store/00000000000000000000000000000000-x", &[])
            .0
            .status
            .success()
    );
    for sub in ["tmp", "queue", "state"] {
        let m = std::fs::metadata(r.spool.join(sub)).unwrap().mode() & 0o7777;
        assert_eq!(m, 0o2770, "{sub}");
    }
    let entry = std::fs::read_dir(r.spool.join("queue"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(std::fs::metadata(&entry).unwrap().mode() & 0o777, 0o644);
}
