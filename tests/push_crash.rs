//! Crash safety: `push` killed with SIGKILL at random moments never leaves
//! a narinfo whose NAR is missing or truncated, and a re-run completes.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::cache::{cache_url, check_narinfos, clear_cache, make_cache_bucket, signing_key};
use common::nix::{TestNix, chain_expr, fresh_store};
use common::seaweed::Seaweed;
use common::{ok, show};

#[test]
fn kill_9_at_random_moments_never_publishes_a_broken_narinfo() {
    let s = Seaweed::start();
    let nix = TestNix::new();
    let dir = tempfile::tempdir().unwrap();
    let (key_file, public) = signing_key(dir.path(), "crash-1");
    let creds = s.admin_env_file(dir.path());

    // A closure with small paths, a NAR that goes up in one PUT and one
    // large enough for a multipart upload (random data does not compress).
    let top = nix.build_expr(&chain_expr("crash", 3)).remove(0);
    let mut paths = vec![top.clone()];
    for (name, len) in [("one-part.bin", 5 << 20), ("multipart.bin", 20 << 20)] {
        let p = dir.path().join(name);
        let mut data = vec![0u8; len];
        getrandom::getrandom(&mut data).unwrap();
        std::fs::write(&p, data).unwrap();
        paths.push(nix.add(&p));
    }
    let total = 5;

    let push = |bucket: &str| {
        let mut c = nix.helper();
        c.arg("push")
            .args(["--endpoint", &s.endpoint, "--bucket", bucket])
            .arg("--writer-credentials-file")
            .arg(&creds)
            .arg("--signing-key-file")
            .arg(&key_file)
            .args(["--jobs", "2"])
            .args(&paths)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c
    };

    // How long a whole push takes here.
    make_cache_bucket(&s, "measure");
    let started = Instant::now();
    assert!(push("measure").status().unwrap().success());
    let full = started.elapsed();

    let mut seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed {seed}, full push {full:?}");
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };

    // Rounds of two kills (the second one hits a resuming push), then a
    // complete re-run; the bucket is emptied between rounds so that every
    // round starts from nothing. The kill moment is uniform over the
    // duration of a whole push, re-estimated from the complete runs (the
    // store server's speed varies).
    make_cache_bucket(&s, "crash");
    let mut estimate = full;
    let mut interrupted = 0;
    let mut kills = 0;
    for round in 0..12 {
        for trial in 0..2 {
            let bound = estimate.as_micros() as u64 + 1;
            let delay = Duration::from_micros(rand() % bound);
            let mut child = push("crash").spawn().unwrap();
            std::thread::sleep(delay);
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            kills += 1;
            let published = check_narinfos(&s, "crash").len();
            eprintln!("round {round} kill {trial}: after {delay:?}, {published} narinfos");
            if published < total {
                interrupted += 1;
            }
        }
        // A re-run completes what the kills left.
        let out = push("crash")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        assert_eq!(check_narinfos(&s, "crash").len(), total);
        if round == 11 {
            break;
        }
        // Start the next round from an empty bucket; a complete run from
        // nothing re-estimates the duration.
        clear_cache(&s, "crash");
        if round % 3 == 2 {
            let started = Instant::now();
            assert!(push("crash").status().unwrap().success());
            estimate = (estimate + started.elapsed()) / 2;
            clear_cache(&s, "crash");
        }
    }
    assert!(kills >= 20);
    assert!(
        interrupted >= kills / 4,
        "only {interrupted} of {kills} kills landed before the push finished"
    );

    // And what the last round left substitutes.
    let (_d, root) = fresh_store();
    let out = nix
        .command("nix")
        .args(["copy", "--from", &cache_url(&s, "crash"), "--to", &root])
        .args(["--option", "trusted-public-keys", &public])
        .args(&paths)
        .output()
        .unwrap();
    ok(out);
}
