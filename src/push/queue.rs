//! The upload queue: a spool directory between the nix-daemon's
//! `post-build-hook` (which must return at once and never fail) and the
//! uploader service (which may wait for the cache as long as it takes).
//!
//! Layout of the spool directory `SPOOL`:
//!
//! ```text
//! SPOOL/tmp/<name>.json     an entry being written (never read by anyone)
//! SPOOL/queue/<name>.json   a complete entry: {"version", "paths", "drv", "queued"}
//! SPOOL/state/<name>.json   the uploader's notes: attempts, last error, next try
//! SPOOL/lock                held (flock) by the uploader while it drains
//! ```
//!
//! - **Enqueue** writes `tmp/<name>.json`, fsyncs it and renames it into
//!   `queue/`: an entry appears whole or not at all, without any lock, so
//!   the hook never waits for an uploader. Names start with the time in
//!   milliseconds, so sorting names sorts by age.
//! - **Entries are immutable.** Only the uploader writes `state/`, and it
//!   deletes an entry only after a push reported all of the entry's paths
//!   in the cache (or served upstream). A crash at any point leaves the
//!   entry where it was: at worst it is pushed again, which uploads nothing.
//! - **Sharing.** The hook runs as root; the uploader may run as a system
//!   user or as a person. Entries are created `0644` (store paths are not
//!   secret; every reader may read them); deleting needs write access to
//!   `queue/`. The NixOS module creates `SPOOL` owned by root and the
//!   uploader's group with mode `2770` (setgid: every file and directory
//!   created below belongs to that group); subdirectories are created with
//!   the spool directory's own mode, so they are group-writable too. Two
//!   uploaders on one spool serialise on `lock`.
//! - **Cap.** Beyond `max_entries` waiting entries, new ones are refused
//!   with a log line: the oldest work is kept, the build still succeeds.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{Cache, PushOptions, PushReport};
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::signing::SecretKey;

/// Entry format version.
pub const ENTRY_VERSION: u32 = 1;

/// A queued build result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Format version ([`ENTRY_VERSION`]).
    pub version: u32,
    /// The build's output paths (`$OUT_PATHS`).
    pub paths: Vec<String>,
    /// The derivation (`$DRV_PATH`), for the status display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drv: Option<String>,
    /// When it was queued (RFC 3339, UTC).
    pub queued: String,
}

/// The uploader's notes on an entry (the sidecar file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryState {
    /// Push attempts so far.
    pub attempts: u32,
    /// When the last attempt ended (RFC 3339).
    #[serde(default)]
    pub last_attempt: Option<String>,
    /// Why it failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Not before this time (Unix seconds) is it tried again.
    #[serde(default)]
    pub next_attempt: u64,
}

/// An entry in the queue, with its state.
#[derive(Debug, Clone)]
pub struct Queued {
    /// File name in `queue/` (sorts by age).
    pub name: String,
    /// The entry; `None` when the file is unreadable (kept, reported).
    pub entry: Option<Entry>,
    /// Its state.
    pub state: EntryState,
}

/// What [`Spool::enqueue`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// Written under this name.
    Queued(String),
    /// Refused: the queue holds this many entries already.
    Full(usize),
    /// `OUT_PATHS` was empty.
    Nothing,
}

/// A spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    /// Its path.
    pub dir: PathBuf,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The current time in RFC 3339 (UTC, whole seconds).
pub fn rfc3339_now() -> String {
    rfc3339(SystemTime::now())
}

fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Spool {
    /// The spool at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Spool {
        Spool { dir: dir.into() }
    }

    fn sub(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Creates the spool and its subdirectories if missing; subdirectories
    /// take the spool directory's mode (and, through setgid, its group).
    pub fn ensure(&self) -> Result<()> {
        fsutil::create_dir_all_mode(&self.dir, 0o755)?;
        let mode = fs::metadata(&self.dir)
            .io_context("inspect", &self.dir)?
            .mode()
            & 0o7777;
        for s in ["tmp", "queue", "state"] {
            let d = self.sub(s);
            if !d.is_dir() {
                fsutil::create_dir_all_mode(&d, mode)?;
            }
        }
        Ok(())
    }

    /// Names of the waiting entries, oldest first.
    pub fn names(&self) -> Result<Vec<String>> {
        let dir = self.sub("queue");
        let mut names = Vec::new();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(Error::io("list", &dir, e)),
        };
        for e in rd {
            let name = e.io_context("list", &dir)?.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".json") && !name.starts_with('.') {
                names.push(name.into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Queues `paths` (one build's outputs). Never waits for an uploader.
    pub fn enqueue(
        &self,
        paths: &[String],
        drv: Option<&str>,
        max_entries: usize,
    ) -> Result<Enqueued> {
        if paths.is_empty() {
            return Ok(Enqueued::Nothing);
        }
        self.ensure()?;
        let waiting = self.names()?.len();
        if waiting >= max_entries {
            return Ok(Enqueued::Full(waiting));
        }
        let entry = Entry {
            version: ENTRY_VERSION,
            paths: paths.to_vec(),
            drv: drv.map(str::to_string),
            queued: rfc3339_now(),
        };
        let millis = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let mut random = [0u8; 4];
        getrandom::getrandom(&mut random)
            .map_err(|e| Error::Other(format!("the OS random source failed: {e}")))?;
        let name = format!(
            "{millis:013}-{}-{}.json",
            std::process::id(),
            hex::encode(random)
        );
        let tmp = self.sub("tmp").join(&name);
        let body = serde_json::to_vec(&entry).expect("an entry serialises");
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .io_context("create", &tmp)?;
        let written = f
            .set_permissions(fs::Permissions::from_mode(0o644))
            .and_then(|_| f.write_all(&body))
            .and_then(|_| f.sync_all());
        drop(f);
        let dest = self.sub("queue").join(&name);
        if let Err(e) = written.and_then(|_| fs::rename(&tmp, &dest)) {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io("queue", &dest, e));
        }
        if let Ok(d) = File::open(self.sub("queue")) {
            let _ = d.sync_all();
        }
        Ok(Enqueued::Queued(name))
    }

    /// Every waiting entry with its state, oldest first.
    pub fn list(&self) -> Result<Vec<Queued>> {
        let mut out = Vec::new();
        for name in self.names()? {
            let entry = fs::read(self.sub("queue").join(&name))
                .ok()
                .and_then(|b| serde_json::from_slice::<Entry>(&b).ok());
            let state = fs::read(self.sub("state").join(&name))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            out.push(Queued { name, entry, state });
        }
        Ok(out)
    }

    fn write_state(&self, name: &str, state: &EntryState) -> Result<()> {
        let body = serde_json::to_vec_pretty(state).expect("a state serialises");
        fsutil::write_atomic(&self.sub("state").join(name), &body, 0o644)
    }

    /// Removes a pushed entry, then its state.
    fn remove(&self, name: &str) -> Result<()> {
        let p = self.sub("queue").join(name);
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &p, e)),
        }
        let _ = fs::remove_file(self.sub("state").join(name));
        Ok(())
    }

    /// Removes state files whose entry is gone and temporary files older
    /// than an hour (a hook that died while writing).
    ///
    /// Hidden files in `state/` are the temporary files of a `write_state`
    /// whose uploader was killed before its rename; nothing else would
    /// ever remove them. Only the holder of the spool lock writes `state/`
    /// and `tidy` runs under that lock, so any such file is a dead
    /// writer's and goes at once.
    fn tidy(&self, names: &[String]) {
        if let Ok(rd) = fs::read_dir(self.sub("state")) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with('.') || (n.ends_with(".json") && !names.contains(&n)) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        if let Ok(rd) = fs::read_dir(self.sub("tmp")) {
            for e in rd.flatten() {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > Duration::from_secs(3600));
                if old {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }

    /// Takes the uploader lock (waits for another uploader's pass). The
    /// lock file is created group-writable and locked through a read-only
    /// handle, so every uploader sharing the spool can take it.
    pub fn lock(&self) -> Result<File> {
        self.ensure()?;
        let p = self.sub("lock");
        if !p.exists() {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o664)
                .open(&p)
            {
                Ok(f) => {
                    let _ = f.set_permissions(fs::Permissions::from_mode(0o664));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io("create", &p, e)),
            }
        }
        let f = File::open(&p).io_context("open", &p)?;
        f.lock().io_context("lock", &p)?;
        Ok(f)
    }
}

/// Backoff after `attempts` failed attempts: 5 s, 10 s, 20 s ... capped.
pub fn backoff(attempts: u32, cap: Duration) -> Duration {
    let secs = 5u64.saturating_mul(1u64 << attempts.saturating_sub(1).min(20));
    Duration::from_secs(secs).min(cap)
}

/// What one drain pass did.
#[derive(Debug, Clone, Default)]
pub struct Pass {
    /// Entries pushed and removed.
    pub done: usize,
    /// Entries that stay (failed, or not yet due).
    pub waiting: usize,
    /// Entries attempted in this pass.
    pub attempted: usize,
    /// The error that failed the whole pass (cache down, Nix failing).
    pub error: Option<String>,
    /// The push report, when a push ran.
    pub report: Option<PushReport>,
}

/// Up to this many entries are pushed together.
const BATCH: usize = 1000;

/// One pass: pushes the due entries (all of them with `ignore_schedule`)
/// as one push, removes those now in the cache and records attempts and
/// errors for the others. Holds the spool lock for the pass.
pub async fn drain_once(
    spool: &Spool,
    cache: &Cache,
    key: &SecretKey,
    opts: &PushOptions,
    ignore_schedule: bool,
    max_backoff: Duration,
) -> Result<Pass> {
    let _lock = spool.lock()?;
    let queued = spool.list()?;
    spool.tidy(&queued.iter().map(|q| q.name.clone()).collect::<Vec<_>>());
    let now = now_unix();
    let due: Vec<&Queued> = queued
        .iter()
        .filter(|q| ignore_schedule || q.state.next_attempt <= now)
        .take(BATCH)
        .collect();
    let mut pass = Pass {
        waiting: queued.len(),
        attempted: due.len(),
        ..Default::default()
    };
    if due.is_empty() {
        return Ok(pass);
    }
    let mut paths: Vec<String> = Vec::new();
    for q in &due {
        for p in q.entry.iter().flat_map(|e| &e.paths) {
            if !paths.contains(p) {
                paths.push(p.clone());
            }
        }
    }
    let mut opts = opts.clone();
    opts.skip_invalid = true;
    let result = if paths.is_empty() {
        Ok(PushReport::default())
    } else {
        super::push(cache, key, &opts, &paths).await
    };
    let failed_at = rfc3339_now();
    let fail = |q: &Queued, why: String| -> Result<()> {
        let attempts = q.state.attempts + 1;
        let state = EntryState {
            attempts,
            last_attempt: Some(failed_at.clone()),
            last_error: Some(why),
            next_attempt: now_unix() + backoff(attempts, max_backoff).as_secs(),
        };
        spool.write_state(&q.name, &state)
    };
    match result {
        Err(e) => {
            let why = e.to_string();
            for q in &due {
                fail(q, why.clone())?;
            }
            pass.error = Some(why);
        }
        Ok(report) => {
            let reasons: HashMap<&str, &str> = report
                .failed
                .iter()
                .map(|(p, w)| (p.as_str(), w.as_str()))
                .collect();
            let roots_failed = reasons.get("roots/").copied();
            for q in &due {
                let Some(entry) = &q.entry else {
                    fail(q, "the entry file is unreadable; remove it by hand".into())?;
                    continue;
                };
                let missing: Vec<&String> = entry
                    .paths
                    .iter()
                    .filter(|p| !report.available(p) && !report.invalid.contains(p))
                    .collect();
                for p in entry.paths.iter().filter(|p| report.invalid.contains(p)) {
                    eprintln!(
                        "{p} is no longer in the local store (garbage-collected?): nothing to upload"
                    );
                }
                if missing.is_empty() && roots_failed.is_none() {
                    spool.remove(&q.name)?;
                    pass.done += 1;
                    pass.waiting -= 1;
                } else {
                    let why = match missing.first() {
                        Some(p) => reasons
                            .get(p.as_str())
                            .map(|w| format!("{p}: {w}"))
                            .or_else(|| report.failed.first().map(|(f, w)| format!("{f}: {w}")))
                            .unwrap_or_else(|| format!("{p} is not in the cache")),
                        None => roots_failed.unwrap_or_default().to_string(),
                    };
                    fail(q, why)?;
                }
            }
            pass.report = Some(report);
        }
    }
    Ok(pass)
}

/// The earliest `next_attempt` among waiting entries (Unix seconds).
pub fn next_due(spool: &Spool) -> Option<u64> {
    spool
        .list()
        .ok()?
        .iter()
        .map(|q| q.state.next_attempt)
        .min()
}

/// Seconds from now until `t` (Unix seconds), 0 if past.
pub fn secs_until(t: u64) -> u64 {
    t.saturating_sub(now_unix())
}

/// Reads an entry's paths from `$OUT_PATHS` text.
pub fn split_out_paths(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

/// The age of an entry from its name (its first field is milliseconds).
pub fn age_of(name: &str) -> Option<Duration> {
    let millis: u64 = name.split('-').next()?.parse().ok()?;
    let queued = SystemTime::UNIX_EPOCH + Duration::from_millis(millis);
    SystemTime::now().duration_since(queued).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enqueue_is_atomic_ordered_and_capped() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::new(d.path().join("spool"));
        assert_eq!(s.enqueue(&[], None, 10).unwrap(), Enqueued::Nothing);
        let a = vec!["/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a".to_string()];
        let mut names = Vec::new();
        for _ in 0..3 {
            match s.enqueue(&a, Some("/nix/store/x.drv"), 3).unwrap() {
                Enqueued::Queued(n) => names.push(n),
                other => panic!("{other:?}"),
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(s.enqueue(&a, None, 3).unwrap(), Enqueued::Full(3));
        assert_eq!(s.names().unwrap(), names);
        assert_eq!(fs::read_dir(d.path().join("spool/tmp")).unwrap().count(), 0);
        let listed = s.list().unwrap();
        assert_eq!(listed[0].entry.as_ref().unwrap().paths, a);
        assert_eq!(listed[0].state, EntryState::default());
        assert!(age_of(&names[0]).unwrap() < Duration::from_secs(60));
        let mode = fs::metadata(d.path().join("spool/queue").join(&names[0]))
            .unwrap()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn subdirectories_take_the_spool_mode() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("spool");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o2770)).unwrap();
        Spool::new(&dir).ensure().unwrap();
        for s in ["tmp", "queue", "state"] {
            let m = fs::metadata(dir.join(s)).unwrap().mode() & 0o7777;
            assert_eq!(m, 0o2770, "{s}");
        }
    }

    #[test]
    fn tidy_removes_what_a_killed_uploader_left_in_state() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::new(d.path().join("spool"));
        let a = vec!["/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a".to_string()];
        let Enqueued::Queued(name) = s.enqueue(&a, None, 10).unwrap() else {
            panic!("not queued");
        };
        s.write_state(&name, &EntryState::default()).unwrap();
        let state = d.path().join("spool/state");
        // A write_state killed before its rename, and a gone entry's state.
        fs::write(state.join(format!(".{name}.tmp-4242")), b"{\"attem").unwrap();
        fs::write(state.join("0000000000000-1-00000000.json"), b"{}").unwrap();
        s.tidy(&s.names().unwrap());
        let left: Vec<String> = fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, [name]);
    }

    #[test]
    fn backoff_is_capped() {
        let cap = Duration::from_secs(300);
        assert_eq!(backoff(1, cap), Duration::from_secs(5));
        assert_eq!(backoff(3, cap), Duration::from_secs(20));
        assert_eq!(backoff(60, cap), cap);
    }
}
