//! Automatic push: the post-build hook (`enqueue`) only drops a file into
//! the spool and exits 0 whatever the state of the cache; the uploader
//! (`upload-queue`) drains it, retries while the cache is down and removes
//! an entry only once its paths are in the cache.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::cache::{cache_url, check_narinfos, make_cache_bucket};
use common::nix::chain_expr;
use common::queue::{BUCKET, Spooler};
use common::seaweed::Seaweed;
use common::{ok, show};

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

impl Rig {
    /// The store paths the cache has a narinfo for.
    fn pushed(&self) -> Vec<String> {
        check_narinfos(&self.s, BUCKET)
            .into_iter()
            .map(|n| n.store_path)
            .collect()
    }
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
    r.drain();
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

/// The service sleeps until the earliest entry is due, not a whole poll
/// interval: an entry it cannot use is retried on its backoff (5 s, then
/// 10 s) although the poll interval is ten minutes.
#[test]
fn the_service_wakes_when_an_entry_is_due_not_at_the_next_poll() {
    let r = rig();
    let (out, _) = r.enqueue("relative/not-a-store-path", &[]);
    assert!(out.status.success(), "{}", show(&out));
    let mut service = r
        .uploader()
        .args(["--poll-interval", "600"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let attempts = || -> u64 {
        let v: serde_json::Value = serde_json::from_str(&ok(r.status(&["--json"]))).unwrap();
        v["entries"][0]["attempts"].as_u64().unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    while attempts() < 2 {
        assert!(
            Instant::now() < deadline,
            "the service slept past the entry's next attempt"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    service.kill().unwrap();
    service.wait().unwrap();
    assert_eq!(r.entries(), 1, "an entry it cannot use is kept");
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
    let log = r.drain();
    assert!(log.contains("no longer in the local store"), "{log}");
    assert_eq!(r.entries(), 0);
    assert_eq!(check_narinfos(&r.s, BUCKET).len(), 1);
}

#[test]
fn spool_files_are_shareable() {
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
        assert_eq!(common::mode(&r.spool.join(sub)), 0o2770, "{sub}");
    }
    let entry = std::fs::read_dir(r.spool.join("queue"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(common::mode(&entry), 0o644);
}

/// Runs `c` and fails the test (instead of hanging it) when it has not
/// finished within a minute: a FIFO in the spool must not block a reader.
fn output_within_a_minute(mut c: Command) -> Output {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{c:?} hangs");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_spool_left_in_a_bad_state_is_reported_and_kept_while_good_entries_drain() {
    let r = rig();
    let good = r.nix.build_expr(&chain_expr("queue-bad-good", 1)).remove(0);
    let never = r
        .nix
        .build_expr(&chain_expr("queue-bad-never", 1))
        .remove(0);
    let good_name = r.enqueue_one(&good);
    let queue = r.spool.join("queue");
    let state = r.spool.join("state");
    let real = std::fs::read_to_string(queue.join(&good_name)).unwrap();

    // Files another process, an admin or a crash may leave. Their names
    // sort before the good entry's, so they are met first.
    let entry = |paths: &str| format!(r#"{{"version":1,"paths":{paths},"queued":"x"}}"#);
    let bad: Vec<(&str, String, &str)> = vec![
        (
            "0000000000001-1-truncated.json",
            real[..real.len() / 2].to_string(),
            "is truncated",
        ),
        (
            "0000000000002-1-notjson.json",
            "hello\n".into(),
            "is not JSON",
        ),
        (
            "0000000000003-1-future.json",
            real.replace(&good, &never)
                .replace(r#""version":1"#, r#""version":2"#),
            "entry format version 2",
        ),
        (
            "0000000000004-1-nopaths.json",
            entry("[]"),
            "lists no paths",
        ),
        (
            "0000000000005-1-notstore.json",
            entry(r#"["relative/garbage"]"#),
            "not a store path in /nix/store",
        ),
    ];
    for (name, body, _) in &bad {
        std::fs::write(queue.join(name), body).unwrap();
    }
    // Unreadable: a directory and a FIFO where entry files should be.
    std::fs::create_dir(queue.join("0000000000006-1-dir.json")).unwrap();
    let fifo = queue.join("0000000000007-1-fifo.json");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // A stray file in queue/, a partial entry in tmp/, a garbage state file
    // for the good entry, and a state "file" that cannot be replaced (a
    // directory) for a bad one.
    std::fs::write(queue.join("notes.txt"), "").unwrap();
    let partial = "0000000000009-1-partial.json";
    std::fs::write(r.spool.join("tmp").join(partial), &real[..10]).unwrap();
    std::fs::write(state.join(&good_name), "{\"attempts\": oops").unwrap();
    std::fs::create_dir(state.join("0000000000002-1-notjson.json")).unwrap();

    // The hook still queues, exit 0.
    let (out, _) = r.enqueue(&good, &[]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(r.entries(), 7 + 1 + 2);

    // Status lists each bad entry by file, with what is wrong and what to do.
    let mut c = r.nix.helper();
    c.args(["queue", "status", "--spool"]).arg(&r.spool);
    let status = ok(output_within_a_minute(c));
    for (name, _, why) in &bad {
        let line = status
            .lines()
            .find(|l| l.contains(&queue.join(name).display().to_string()))
            .unwrap_or_else(|| panic!("{name} is not reported\n{status}"));
        assert!(line.contains(why), "{line}");
        assert!(
            line.contains("keeps it") && line.contains("remove it"),
            "{line}"
        );
    }
    for name in ["0000000000006-1-dir.json", "0000000000007-1-fifo.json"] {
        let line = status
            .lines()
            .find(|l| l.contains(name) && l.contains("cannot be read"))
            .unwrap_or_else(|| panic!("{name} is not reported\n{status}"));
        assert!(line.contains("not a regular file"), "{line}");
    }
    let state_line = format!(
        "its state file {} is not a state file",
        state.join(&good_name).display()
    );
    assert!(status.contains(&state_line), "{status}");
    assert!(
        status.contains("notes.txt: ignored by the uploader"),
        "{status}"
    );
    assert!(
        status.contains(&format!("tmp/{partial}: an entry being written")),
        "{status}"
    );
    assert!(status.contains("9 entries waiting"), "{status}");

    // The uploader pushes the good entries and removes them; every entry
    // it could not use stays exactly as it was, pass after pass.
    for pass in 0..2 {
        let mut c = r.uploader();
        c.arg("--once");
        let out = output_within_a_minute(c);
        assert_eq!(out.status.code(), Some(1), "pass {pass}: {}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("7 entries remaining"), "{err}");
        for (name, body, why) in &bad {
            assert_eq!(&std::fs::read_to_string(queue.join(name)).unwrap(), body);
            let path = queue.join(name).display().to_string();
            assert!(
                err.lines().any(|l| l.starts_with(&path) && l.contains(why)),
                "{name}: {err}"
            );
        }
        assert!(queue.join("0000000000006-1-dir.json").is_dir());
        assert!(fifo.exists());
        assert!(queue.join("notes.txt").exists());
        assert_eq!(r.entries(), 7 + 1);
    }
    let pushed = r.pushed();
    assert!(pushed.contains(&good), "{pushed:?}");
    assert!(!pushed.contains(&never), "a future entry was pushed");
    let out = r.substitutes(&[&good]);
    assert!(out.status.success(), "{}", show(&out));

    // After the passes, status still names the problem, and counts the
    // uploader's attempts.
    let status = r.status_text();
    assert!(!status.contains(&good_name), "{status}");
    let not_store = format!(
        "{} lists \"relative/garbage\", which is not a store path in /nix/store",
        queue.join("0000000000005-1-notstore.json").display()
    );
    assert!(status.contains(&not_store), "{status}");
    assert!(status.contains("2 attempts failed"), "{status}");
    let json = ok(r.status(&["--json"]));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let problems: Vec<&str> = json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["problem"].as_str())
        .collect();
    assert_eq!(problems.len(), 7, "{json}");
    assert!(json["strays"].as_array().unwrap().len() >= 2, "{json}");
}

#[test]
fn an_entry_a_dead_hook_left_in_tmp_is_pushed_after_an_hour() {
    let r = rig();
    let a = r.nix.build_expr(&chain_expr("queue-tmp-a", 1)).remove(0);
    let b = r.nix.build_expr(&chain_expr("queue-tmp-b", 1)).remove(0);
    let name = r.enqueue_one(&a);
    // The hook died after writing b's entry in full but before moving it
    // into queue/; another one died halfway through writing.
    let body = std::fs::read_to_string(r.spool.join("queue").join(&name)).unwrap();
    let tmp = r.spool.join("tmp");
    let complete = tmp.join(name.replace(".json", "0.json"));
    let partial = tmp.join(name.replace(".json", "1.json"));
    let fresh = tmp.join(name.replace(".json", "2.json"));
    std::fs::write(&complete, body.replace(&a, &b)).unwrap();
    std::fs::write(&partial, &body[..body.len() - 1]).unwrap();
    std::fs::write(&fresh, &body[..body.len() - 1]).unwrap();
    for f in [&complete, &partial] {
        let touched = Command::new("touch")
            .args(["-d", "2 hours ago"])
            .arg(f)
            .status()
            .unwrap();
        assert!(touched.success());
    }
    let log = r.drain();
    assert!(
        log.contains("a post-build hook left behind; queued"),
        "{log}"
    );
    let pushed = r.pushed();
    assert!(pushed.contains(&a) && pushed.contains(&b), "{pushed:?}");
    assert!(!complete.exists() && !partial.exists());
    assert!(fresh.exists(), "a file being written was removed");
    assert_eq!(r.entries(), 0);
}
