//! The automatic push as a builder runs it: the nix-daemon's post-build
//! hook (`enqueue`, with `OUT_PATHS` and `DRV_PATH` in its environment)
//! fills a spool directory, the uploader (`upload-queue`) drains it into a
//! cache bucket, and `queue status` shows what waits and why.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::nix::TestNix;
use super::ok;

/// Bucket of the cache the uploader fills.
pub const BUCKET: &str = "cache";

/// A private Nix, a spool, a signing key and the credentials the uploader
/// uses, pointed at one endpoint (the store itself, or a proxy before it).
pub struct Spooler {
    /// The Nix that builds the paths (and runs `nix path-info` for the
    /// uploader).
    pub nix: TestNix,
    /// Holds the spool, the key and the credentials file.
    pub dir: tempfile::TempDir,
    /// The spool directory.
    pub spool: PathBuf,
    /// The signing key file (0600).
    pub key_file: PathBuf,
    /// The public key clients trust.
    pub public: String,
    /// The credentials env file the uploader signs with.
    pub creds: PathBuf,
    /// Where the uploader sends its requests.
    pub endpoint: String,
    /// The URL clients substitute from.
    pub substituter: String,
}

impl Spooler {
    /// A spool in `dir`, uploading to `endpoint` with the credentials
    /// `creds` (a file in `dir`); clients substitute from `substituter`.
    pub fn new(
        dir: tempfile::TempDir,
        creds: PathBuf,
        endpoint: &str,
        substituter: String,
    ) -> Spooler {
        let (key_file, public) = super::cache::signing_key(dir.path(), "queue-1");
        Spooler {
            nix: TestNix::new(),
            spool: dir.path().join("spool"),
            dir,
            key_file,
            public,
            creds,
            endpoint: endpoint.to_string(),
            substituter,
        }
    }

    /// `enqueue` as the daemon runs it: OUT_PATHS and DRV_PATH set.
    /// Returns its output and how long it took.
    pub fn enqueue(&self, out_paths: &str, extra: &[&str]) -> (Output, Duration) {
        let started = Instant::now();
        let out = self
            .nix
            .helper()
            .arg("enqueue")
            .arg("--spool")
            .arg(&self.spool)
            .args(extra)
            .env("OUT_PATHS", out_paths)
            .env(
                "DRV_PATH",
                "/nix/store/00000000000000000000000000000000-x.drv",
            )
            .output()
            .unwrap();
        (out, started.elapsed())
    }

    /// Enqueues `out_paths`, asserting that it queued exactly one entry;
    /// returns the entry's file name.
    #[track_caller]
    pub fn enqueue_one(&self, out_paths: &str) -> String {
        let before = self.entry_names();
        let (out, _) = self.enqueue(out_paths, &[]);
        assert!(out.status.success(), "{}", super::show(&out));
        let added: Vec<String> = self
            .entry_names()
            .into_iter()
            .filter(|n| !before.contains(n))
            .collect();
        assert_eq!(added.len(), 1, "enqueue of {out_paths} added {added:?}");
        added.into_iter().next().unwrap()
    }

    /// `upload-queue` for this spool, endpoint, bucket, key and credentials.
    pub fn uploader(&self) -> Command {
        let mut c = self.nix.helper();
        c.arg("upload-queue")
            .arg("--spool")
            .arg(&self.spool)
            .args(["--endpoint", &self.endpoint, "--bucket", BUCKET])
            .arg("--writer-credentials-file")
            .arg(&self.creds)
            .arg("--signing-key-file")
            .arg(&self.key_file);
        c
    }

    /// One `upload-queue --once` pass that must leave the queue empty;
    /// returns its log.
    #[track_caller]
    pub fn drain(&self) -> String {
        let out = self.uploader().arg("--once").output().unwrap();
        assert!(out.status.success(), "{}", super::show(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `queue status` output (it must succeed).
    pub fn status(&self, extra: &[&str]) -> Output {
        let o = self
            .nix
            .helper()
            .args(["queue", "status", "--spool"])
            .arg(&self.spool)
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "queue status: {}", super::show(&o));
        o
    }

    /// `queue status` text.
    pub fn status_text(&self) -> String {
        ok(self.status(&[]))
    }

    /// The names of the waiting entries (files in `queue/`), sorted.
    pub fn entry_names(&self) -> Vec<String> {
        self.files("queue")
    }

    /// How many entries wait.
    pub fn entries(&self) -> usize {
        self.entry_names().len()
    }

    /// The files of spool subdirectory `sub` (`tmp`, `queue`, `state`).
    pub fn files(&self, sub: &str) -> Vec<String> {
        let d = self.spool.join(sub);
        if d.exists() {
            super::listing(&d)
        } else {
            Vec::new()
        }
    }

    /// The uploader's state sidecar of entry `name`, if written.
    pub fn state(&self, name: &str) -> Option<serde_json::Value> {
        let text = std::fs::read(self.spool.join("state").join(name)).ok()?;
        Some(serde_json::from_slice(&text).expect("a state file is whole JSON"))
    }

    /// `nix copy` of `paths` from the cache into a fresh store, trusting
    /// this key only, signatures required.
    pub fn substitutes<S: AsRef<std::ffi::OsStr>>(&self, paths: &[S]) -> Output {
        self.nix.substitute(&self.substituter, &self.public, paths)
    }

    /// The spool holds nothing but `queue/` entries, their state sidecars
    /// and the lock: no temporary file, no state without an entry.
    #[track_caller]
    pub fn assert_tidy(&self) {
        let entries = self.entry_names();
        assert!(
            self.files("tmp").is_empty(),
            "left in tmp/: {:?}",
            self.files("tmp")
        );
        for f in self.files("state") {
            assert!(
                entries.contains(&f),
                "state/{f} is not the state of a waiting entry ({entries:?})"
            );
        }
        for f in entries {
            assert!(!f.starts_with('.'), "a hidden file in queue/: {f}");
        }
        if self.spool.exists() {
            for f in super::listing(&self.spool) {
                assert!(
                    ["lock", "queue", "state", "tmp"].contains(&f.as_str()),
                    "unexpected file in the spool: {f}"
                );
            }
        }
    }
}
