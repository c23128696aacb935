//! The automatic push against a misbehaving network and a killed
//! uploader. The post-build hook (`enqueue`, one call per build with its
//! `OUT_PATHS`) fills a spool; the uploader (`upload-queue`) drains it into
//! a real SeaweedFS through the fault-injecting proxy (`common::proxy`),
//! which adds latency, resets connections, cuts answers short and answers
//! `503 SlowDown`.
//!
//! What must hold whatever happens: an entry leaves the queue only once
//! the whole closure of its paths has narinfos in the cache, every narinfo
//! points at a complete NAR, the spool keeps no temporary file, and once
//! the network behaves a drain completes and another machine substitutes
//! the paths, signatures required.

mod common;

use std::collections::HashSet;
use std::fs::File;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::cache::{cache_url, check_narinfos, clear_cache, make_cache_bucket};
use common::nix::chain_expr;
use common::proxy::FaultPlan;
use common::queue::{BUCKET, Spooler};
use common::store::ProxiedStore;
use common::{assert_no_secret, show};

/// SeaweedFS with a cache bucket, the proxy before it, and a spool whose
/// uploader talks to the proxy (clients substitute from the store itself).
struct Rig {
    store: ProxiedStore,
    q: Spooler,
}

impl std::ops::Deref for Rig {
    type Target = Spooler;
    fn deref(&self) -> &Spooler {
        &self.q
    }
}

/// One queued build: its entry file and the closure of its outputs.
struct Tracked {
    name: String,
    closure: Vec<String>,
}

/// An uploader service, killed (SIGKILL) when dropped, also when the test
/// panics.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rig() -> Rig {
    let store = ProxiedStore::start();
    make_cache_bucket(&store.sw, BUCKET);
    let q = Spooler::new(
        tempfile::tempdir().unwrap(),
        store.admin_file.clone(),
        &store.proxy.endpoint,
        cache_url(&store.sw, BUCKET),
    );
    Rig { store, q }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl Rig {
    /// Builds `n` chained derivations and returns their outputs in build
    /// order (dependencies first).
    fn build_chain(&self, salt: &str, n: usize) -> Vec<String> {
        let top = self.nix.build_expr(&chain_expr(salt, n)).remove(0);
        let closure = self.nix.closure(&top);
        assert_eq!(closure.len(), n, "{closure:?}");
        assert_eq!(closure.last(), Some(&top), "not dependencies first");
        closure
    }

    /// Enqueues each of `outputs` as the hook does after each build, plus
    /// the tops of `outputs` as one entry with two paths (a derivation with
    /// two outputs) when `pair` is given.
    fn enqueue_builds(&self, outputs: &[String], pair: Option<[&str; 2]>) -> Vec<Tracked> {
        let mut out: Vec<Tracked> = outputs
            .iter()
            .map(|p| Tracked {
                name: self.enqueue_one(p),
                closure: self.nix.closure(p),
            })
            .collect();
        if let Some([a, b]) = pair {
            let mut closure = self.nix.closure(a);
            closure.extend(self.nix.closure(b));
            out.push(Tracked {
                name: self.enqueue_one(&format!("{a} {b}")),
                closure,
            });
        }
        out
    }

    /// The invariant, checked from outside at any moment: every narinfo
    /// in the bucket is signed by our key and points at a NAR of exactly
    /// `FileSize` bytes, and every entry that left the queue has its whole
    /// closure in the cache. The queue is read before the bucket, so an
    /// entry removed just after still counts as waiting. Returns how many
    /// entries are gone and how many narinfos exist.
    #[track_caller]
    fn assert_consistent(&self, tracked: &[Tracked]) -> (usize, usize) {
        let waiting = self.entry_names();
        for name in &waiting {
            let body = std::fs::read(self.spool.join("queue").join(name)).unwrap_or_default();
            assert!(
                body.is_empty() || serde_json::from_slice::<serde_json::Value>(&body).is_ok(),
                "queue/{name} is not a whole entry"
            );
        }
        let infos = check_narinfos(&self.store.sw, BUCKET);
        for n in &infos {
            assert!(
                n.sigs.iter().any(|s| s.starts_with("queue-1:")),
                "{} is not signed by our key: {:?}",
                n.store_path,
                n.sigs
            );
        }
        let cached: HashSet<&str> = infos.iter().map(|n| n.store_path.as_str()).collect();
        let mut gone = 0;
        for t in tracked.iter().filter(|t| !waiting.contains(&t.name)) {
            gone += 1;
            let missing: Vec<&String> = t
                .closure
                .iter()
                .filter(|p| !cached.contains(p.as_str()))
                .collect();
            assert!(
                missing.is_empty(),
                "entry {} left the queue, but the cache lacks {missing:?}",
                t.name
            );
        }
        (gone, infos.len())
    }

    /// Checks [`Rig::assert_consistent`] every 100 ms until `done` (given
    /// the number of entries gone) holds, for at most 45 s; `log` is the
    /// uploader's, for the message. Returns the number of observations and
    /// how many of them saw some entries gone and others waiting.
    #[track_caller]
    fn watch(
        &self,
        tracked: &[Tracked],
        done: impl Fn(&Rig, usize) -> bool,
        log: &std::path::Path,
    ) -> (usize, usize) {
        let started = Instant::now();
        let (mut observations, mut partial) = (0, 0);
        loop {
            let (gone, _) = self.assert_consistent(tracked);
            observations += 1;
            if gone > 0 && gone < tracked.len() {
                partial += 1;
            }
            if done(self, gone) {
                return (observations, partial);
            }
            assert!(
                started.elapsed() < Duration::from_secs(45),
                "not done after {:?}; {} faults; status:\n{}\nlog:\n{}",
                started.elapsed(),
                self.store.proxy.faults_injected(),
                self.status_text(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `upload-queue --once`.
    fn drain_once(&self) -> Output {
        self.uploader()
            .args(["--once", "--quiet"])
            .output()
            .unwrap()
    }

    /// The secrets no output may show: the store's admin secret (the
    /// uploader's credentials here) and the signing key's secret half.
    fn secrets(&self) -> Vec<String> {
        let key = std::fs::read_to_string(&self.key_file).unwrap();
        let secret = key.trim().split_once(':').unwrap().1.to_string();
        vec![self.store.sw.admin_secret.clone(), secret]
    }

    #[track_caller]
    fn assert_no_secret(&self, o: &Output) {
        let secrets = self.secrets();
        let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        assert_no_secret(o, &refs, &self.creds);
    }

    /// A fresh store substitutes `paths` from the cache, trusting our key.
    #[track_caller]
    fn assert_substitutes(&self, paths: &[&String]) {
        let o = self.substitutes(paths);
        assert!(o.status.success(), "substitution: {}", show(&o));
    }
}

/// The uploader service through an outage, then a flaky network. First
/// every request fails: the service keeps every entry and records the
/// failed attempt. Then a share of requests fails (resets, cut answers,
/// SlowDown, latency) while more builds are queued. Watched from outside
/// every 100 ms all along: no entry leaves the queue before its closure is
/// in the cache, no narinfo points at a missing or short NAR. The service
/// drains everything on its own, the spool keeps nothing, and another
/// machine substitutes.
#[test]
fn the_service_drains_through_faults_and_removes_entries_only_when_cached() {
    let r = rig();
    let a = r.build_chain("qf-drain-a", 4);
    let mut tracked = r.enqueue_builds(&a, None);
    r.store.proxy.set_faults(FaultPlan::every_request(50));
    let log = r.dir.path().join("uploader.log");
    let _service = Running(
        r.uploader()
            .args(["--poll-interval", "1", "--max-backoff", "2", "--quiet"])
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let tried = |r: &Rig, _gone: usize| {
        tracked
            .iter()
            .all(|t| r.state(&t.name).is_some_and(|s| s["attempts"] != 0))
    };
    let (seen, _) = r.watch(&tracked, tried, &log);
    assert_eq!(
        r.entries(),
        tracked.len(),
        "an entry left during the outage"
    );
    let outage_faults = r.store.proxy.faults_injected();

    r.store.proxy.set_faults(FaultPlan {
        latency: Duration::from_millis(5),
        reset: 15,
        truncate: 15,
        slow_down: 15,
        seed: 51,
        ..FaultPlan::default()
    });
    // More builds finish while the uploader works.
    let b = r.build_chain("qf-drain-b", 3);
    tracked.extend(r.enqueue_builds(&b, Some([&a[3], &b[2]])));
    assert_eq!(tracked.len(), 8);
    let started = Instant::now();
    let (observations, partial) = r.watch(&tracked, |_, gone| gone == tracked.len(), &log);
    let faults = r.store.proxy.faults_injected();
    let failed_passes = std::fs::read_to_string(&log)
        .unwrap()
        .matches("push failed")
        .count();
    eprintln!(
        "outage: {outage_faults} faults, {seen} observations; drained in {:?} through {faults} \
         faults; {failed_passes} failed passes in all; {observations} observations, {partial} \
         mid-drain",
        started.elapsed()
    );
    assert!(failed_passes >= 1, "the service never failed a pass");
    assert!(
        faults >= 10,
        "only {faults} faults: the test proves nothing"
    );
    let (_, narinfos) = r.assert_consistent(&tracked);
    assert_eq!(narinfos, 7, "one narinfo per built path");
    r.assert_tidy();
    assert!(r.files("state").is_empty(), "{:?}", r.files("state"));
    assert!(r.status_text().contains("is empty"));
    r.assert_substitutes(&[&a[3], &b[2]]);
}

/// Every request fails. `upload-queue --once` keeps every entry and
/// records, per entry, the attempts, the error (naming the endpoint) and
/// the next try 5 s then 10 s later; `queue status` shows it without a
/// secret; the service honours the backoff (sends nothing before the next
/// try); the spool keeps no temporary file. Once the faults stop, one pass
/// drains everything and it substitutes.
#[test]
fn nothing_but_faults_loses_nothing_and_records_the_backoff() {
    let r = rig();
    let a = r.build_chain("qf-down", 3);
    let tracked = r.enqueue_builds(&a, None);
    let names: Vec<String> = tracked.iter().map(|t| t.name.clone()).collect();
    r.store.proxy.set_faults(FaultPlan::every_request(0xdead));
    let endpoint = r.store.proxy.endpoint.trim_start_matches("http://");
    for attempt in 1..=2u64 {
        let before = now_unix();
        let o = r.drain_once();
        let after = now_unix();
        assert_eq!(o.status.code(), Some(1), "pass {attempt}: {}", show(&o));
        r.assert_no_secret(&o);
        assert_eq!(r.entry_names(), names, "pass {attempt} removed an entry");
        let wait = 5 << (attempt - 1);
        for n in &names {
            let s = r
                .state(n)
                .unwrap_or_else(|| panic!("pass {attempt}: no state for {n}"));
            assert_eq!(s["attempts"], attempt, "{n}: {s:#}");
            let err = s["lastError"].as_str().unwrap_or_default();
            assert!(
                err.contains(endpoint),
                "{n}: the error names no endpoint: {s:#}"
            );
            assert!(s["lastAttempt"].is_string(), "{n}: {s:#}");
            let next = s["nextAttempt"].as_u64().unwrap();
            assert!(
                (before + wait..=after + wait + 1).contains(&next),
                "{n}: next try at {next}, expected {wait}s after the pass ({before}..{after})"
            );
            let text = serde_json::to_string(&s).unwrap();
            for secret in r.secrets() {
                assert!(!text.contains(&secret), "{n}: a secret in the state file");
            }
        }
        r.assert_tidy();
        assert_eq!(r.files("state"), names);
    }
    assert!(r.store.proxy.faults_injected() >= 10);
    assert!(
        r.store.proxy.requests().iter().all(|q| q.fault.is_some()),
        "a request got through"
    );
    assert!(
        check_narinfos(&r.store.sw, BUCKET).is_empty(),
        "a narinfo was published"
    );

    let status = r.status(&[]);
    r.assert_no_secret(&status);
    let text = String::from_utf8_lossy(&status.stdout);
    for want in [
        "3 entries waiting",
        "2 attempts failed",
        "last error:",
        endpoint,
        "next try in",
    ] {
        assert!(text.contains(want), "queue status lacks {want:?}:\n{text}");
    }
    let json = r.status(&["--json"]);
    r.assert_no_secret(&json);
    let json = common::json_stdout(&json);
    let entries = json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{json:#}");
    for e in entries {
        assert_eq!(e["attempts"], 2, "{e:#}");
        assert!(e["nextAttempt"].as_u64().unwrap() > now_unix(), "{e:#}");
    }

    // The service waits for the next try: no request in the meantime.
    let due = names
        .iter()
        .map(|n| r.state(n).unwrap()["nextAttempt"].as_u64().unwrap())
        .min()
        .unwrap();
    let states: Vec<_> = names.iter().map(|n| r.state(n)).collect();
    r.store.proxy.clear();
    let service = Running(
        r.uploader()
            .args(["--poll-interval", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Watch for up to 3 s, ending two seconds before the next try is due
    // (the backoff after two attempts is 10 s, so there is time to watch).
    let watch = due.saturating_sub(now_unix() + 2).min(3);
    assert!(watch >= 1, "the next try is due too soon to watch the wait");
    std::thread::sleep(Duration::from_secs(watch));
    drop(service);
    let sent: Vec<String> = r
        .store
        .proxy
        .requests()
        .iter()
        .map(|q| q.describe())
        .collect();
    assert!(sent.is_empty(), "the service did not wait: {sent:?}");
    let now: Vec<_> = names.iter().map(|n| r.state(n)).collect();
    assert_eq!(now, states, "the service tried before the next try");
    r.assert_tidy();

    // The network is back: one pass drains, nothing is left.
    r.store.proxy.set_faults(FaultPlan::default());
    let o = r.drain_once();
    assert!(o.status.success(), "{}", show(&o));
    r.assert_no_secret(&o);
    assert_eq!(r.entries(), 0);
    r.assert_consistent(&tracked);
    r.assert_tidy();
    assert!(r.files("state").is_empty(), "{:?}", r.files("state"));
    assert_eq!(check_narinfos(&r.store.sw, BUCKET).len(), 3);
    r.assert_substitutes(&[&a[2]]);
}

/// A random `u64` below `n` (the moments of the kills).
fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).unwrap();
    u64::from_le_bytes(b) % n.max(1)
}

/// `upload-queue --once` killed with SIGKILL at random moments of a drain
/// (through latency and a few faults): no entry whose closure is not all
/// in the cache is ever lost, no narinfo ever points at a missing NAR, and
/// a re-run drains and leaves the spool clean.
#[test]
fn kill_9_mid_drain_loses_no_entry_and_publishes_no_broken_narinfo() {
    let r = rig();
    let chain = r.build_chain("qf-kill", 4);
    let big = r.dir.path().join("big.bin");
    let mut data = vec![0u8; 3 << 20];
    getrandom::getrandom(&mut data).unwrap();
    std::fs::write(&big, data).unwrap();
    let big = r.nix.add(&big);
    let mut outputs = chain.clone();
    outputs.push(big.clone());
    let total = outputs.len();
    let slow = FaultPlan {
        latency: Duration::from_millis(10),
        ..FaultPlan::default()
    };
    let faulty = |seed| FaultPlan {
        reset: 3,
        truncate: 3,
        slow_down: 3,
        seed,
        ..slow.clone()
    };

    // How long a whole drain takes here.
    r.store.proxy.set_faults(slow.clone());
    let tracked = r.enqueue_builds(&outputs, None);
    let started = Instant::now();
    let o = r.drain_once();
    let estimate = started.elapsed();
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(r.assert_consistent(&tracked), (total, total));
    eprintln!("a whole drain takes {estimate:?}");

    let (mut kills, mut interrupted) = (0, 0);
    for round in 0..5u64 {
        clear_cache(&r.store.sw, BUCKET);
        let tracked = r.enqueue_builds(&outputs, None);
        r.store.proxy.set_faults(faulty(round));
        // The second kill hits a resuming drain, if the first left one.
        for _ in 0..2 {
            if r.entries() == 0 {
                break;
            }
            let delay = Duration::from_micros(random_below(estimate.as_micros() as u64 * 6 / 5));
            let mut child = r
                .uploader()
                .args(["--once", "--quiet"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(delay);
            child.kill().unwrap();
            child.wait().unwrap();
            kills += 1;
            let (gone, narinfos) = r.assert_consistent(&tracked);
            eprintln!(
                "round {round}: killed after {delay:?}: {gone} of {total} entries gone, \
                 {narinfos} narinfos"
            );
            if gone < total {
                interrupted += 1;
            }
        }
        // A re-run (the network behaving) drains what the kills left.
        r.store.proxy.set_faults(slow.clone());
        let o = r.drain_once();
        assert!(o.status.success(), "round {round} re-run: {}", show(&o));
        assert_eq!(r.assert_consistent(&tracked), (total, total));
        r.assert_tidy();
        assert!(r.files("state").is_empty(), "{:?}", r.files("state"));
    }
    assert!(
        interrupted >= kills / 3,
        "only {interrupted} of {kills} kills landed before the drain finished"
    );
    r.assert_substitutes(&[&chain[3], &big]);
}
