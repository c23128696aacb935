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
//! - **Files in any state.** The spool is shared with other processes and
//!   with crashes, so every file is read defensively: only regular files
//!   of bounded size, opened non-blocking. An entry file that cannot be
//!   used (unreadable, truncated, not JSON, another format version, no
//!   paths, a path outside the store) is kept and never pushed or removed,
//!   and `queue status` names it with what is wrong and what to do; the
//!   other entries drain as usual. An unreadable state file is ignored and
//!   replaced at the next attempt.
//! - **Cap.** Beyond `max_entries` waiting entries, new ones are refused
//!   with a log line: the oldest work is kept, the build still succeeds.

use std::collections::{HashMap, HashSet};
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

/// Entry and state files larger than this are not read: real ones hold a
/// few kilobytes (`$OUT_PATHS` is one environment variable, at most 128
/// KiB), and a stray big file must not be read into memory whole.
const MAX_FILE: u64 = 4 << 20;

impl Entry {
    /// A new entry for one build's outputs, queued now.
    pub fn new(paths: Vec<String>, drv: Option<&str>) -> Entry {
        Entry {
            version: ENTRY_VERSION,
            paths,
            drv: drv.map(str::to_string),
            queued: rfc3339_now(),
        }
    }

    /// Reads an entry file. Refuses what `enqueue` never writes: another
    /// format version (a newer helper may mean something else by the same
    /// fields), no paths, an empty path or one containing whitespace. The
    /// error says what is wrong with the file, not which file it is.
    pub fn parse(bytes: &[u8]) -> std::result::Result<Entry, String> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            if e.is_eof() {
                format!("is truncated ({e})")
            } else {
                format!("is not JSON ({e})")
            }
        })?;
        match value.get("version").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(ENTRY_VERSION) => {}
            Some(v) => {
                return Err(format!(
                    "was written by another nix-binary-cache (entry format version {v}; \
                     this one reads version {ENTRY_VERSION}): run an uploader of the \
                     version the post-build hook runs"
                ));
            }
            None => {}
        }
        let entry: Entry =
            serde_json::from_value(value).map_err(|e| format!("is not a queue entry ({e})"))?;
        if entry.paths.is_empty() {
            return Err("lists no paths".into());
        }
        if let Some(p) = entry
            .paths
            .iter()
            .find(|p| p.is_empty() || p.contains(char::is_whitespace))
        {
            return Err(format!("lists {p:?}, which is not a store path"));
        }
        Ok(entry)
    }

    /// The file's contents, as [`Entry::parse`] reads them.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an entry serialises")
    }

    /// Checks that every path is a store path in `store_dir` (checked by
    /// the uploader: a path that is not would fail the whole push, and with
    /// it every other entry).
    pub fn check_paths(&self, store_dir: &str) -> std::result::Result<(), String> {
        let prefix = format!("{}/", store_dir.trim_end_matches('/'));
        match self.paths.iter().find(|p| {
            !p.strip_prefix(&prefix)
                .is_some_and(crate::pathinfo::is_base_name)
        }) {
            Some(p) => Err(format!(
                "lists {p:?}, which is not a store path in {store_dir}"
            )),
            None => Ok(()),
        }
    }
}

impl EntryState {
    /// Reads a state file.
    pub fn parse(bytes: &[u8]) -> std::result::Result<EntryState, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("is not a state file ({e})"))
    }

    /// The file's contents, as [`EntryState::parse`] reads them.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a state serialises")
    }
}

/// An entry in the queue, with its state.
#[derive(Debug, Clone)]
pub struct Queued {
    /// File name in `queue/` (sorts by age).
    pub name: String,
    /// The entry, or why the file cannot be used (such an entry is kept
    /// and reported, never pushed or removed).
    pub entry: std::result::Result<Entry, String>,
    /// Its state (the default when there is none or it is unreadable).
    pub state: EntryState,
    /// Why the state file was ignored, when it exists but is unreadable.
    pub state_problem: Option<String>,
}

impl Queued {
    /// The entry, when it can be pushed: read, and every path a store path
    /// in `store_dir`. Otherwise the problem; such an entry is kept and
    /// never pushed, since one bad path would fail every other entry's push.
    pub fn usable(&self, store_dir: &str) -> std::result::Result<&Entry, String> {
        let entry = self.entry.as_ref().map_err(Clone::clone)?;
        entry.check_paths(store_dir)?;
        Ok(entry)
    }
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

/// The name of an entry queued at `millis` (since the epoch) by process
/// `pid`: the time first, zero-padded, so that names sort by age.
pub fn entry_name(millis: u128, pid: u32, random: [u8; 4]) -> String {
    format!("{millis:013}-{pid}-{}.json", hex::encode(random))
}

/// True for a file name in `queue/` that is an entry (others are ignored:
/// hidden files, editor backups).
pub fn is_entry_name(name: &str) -> bool {
    name.ends_with(".json") && !name.starts_with('.')
}

/// Reads a spool file that must be a regular file of at most [`MAX_FILE`]
/// bytes. Opened non-blocking, so a FIFO dropped into the spool cannot
/// hang the uploader or `queue status`.
fn read_spool_file(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > MAX_FILE {
        return Err(std::io::Error::other(format!(
            "{} bytes, larger than any entry ({MAX_FILE} bytes at most)",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    f.take(MAX_FILE).read_to_end(&mut bytes)?;
    Ok(bytes)
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

    /// The file of the entry `name`.
    pub fn entry_path(&self, name: &str) -> PathBuf {
        self.sub("queue").join(name)
    }

    /// The state file of the entry `name`.
    pub fn state_path(&self, name: &str) -> PathBuf {
        self.sub("state").join(name)
    }

    /// Files that are not entries: anything in `tmp/` (an entry being
    /// written, or left by a hook that died while writing it) and files in
    /// `queue/` whose names entries never have. The uploader ignores those
    /// in `queue/`; see [`Spool::tidy`] for `tmp/`.
    pub fn strays(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for (sub, stray) in [("tmp", true), ("queue", false)] {
            let Ok(rd) = fs::read_dir(self.sub(sub)) else {
                continue;
            };
            for e in rd.flatten() {
                if stray || !is_entry_name(&e.file_name().to_string_lossy()) {
                    out.push(e.path());
                }
            }
        }
        out.sort();
        out
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
            if is_entry_name(&name) {
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
        let entry = Entry::new(paths.to_vec(), drv);
        let millis = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let mut random = [0u8; 4];
        getrandom::getrandom(&mut random)
            .map_err(|e| Error::Other(format!("the OS random source failed: {e}")))?;
        let name = entry_name(millis, std::process::id(), random);
        let tmp = self.sub("tmp").join(&name);
        let body = entry.to_bytes();
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
            let entry = read_spool_file(&self.entry_path(&name))
                .map_err(|e| format!("cannot be read ({e})"))
                .and_then(|b| Entry::parse(&b));
            let (state, state_problem) = match read_spool_file(&self.state_path(&name)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => (EntryState::default(), None),
                Err(e) => (EntryState::default(), Some(format!("cannot be read ({e})"))),
                Ok(b) => match EntryState::parse(&b) {
                    Ok(s) => (s, None),
                    Err(why) => (EntryState::default(), Some(why)),
                },
            };
            out.push(Queued {
                name,
                entry,
                state,
                state_problem,
            });
        }
        Ok(out)
    }

    fn write_state(&self, name: &str, state: &EntryState) -> Result<()> {
        fsutil::write_atomic(&self.state_path(name), &state.to_bytes(), 0o644)
    }

    /// Removes a pushed entry, then its state.
    fn remove(&self, name: &str) -> Result<()> {
        let p = self.entry_path(name);
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &p, e)),
        }
        let _ = fs::remove_file(self.state_path(name));
        Ok(())
    }

    /// Removes state files whose entry is gone, and deals with what a
    /// process that died while writing left behind.
    ///
    /// Hidden files in `state/` are the temporary files of a `write_state`
    /// whose uploader was killed before its rename; nothing else would
    /// ever remove them. Only the holder of the spool lock writes `state/`
    /// and `tidy` runs under that lock, so any such file is a dead
    /// writer's and goes at once.
    ///
    /// A file in `tmp/` written an hour ago or earlier is a hook's that
    /// died: a complete entry (the hook died between writing and moving
    /// it) is moved into `queue/`, so that build is pushed after all; a
    /// partial one is removed.
    fn tidy(&self, names: &[String]) {
        // A set: the queue may hold thousands of entries, and this runs at
        // every pass.
        let names: HashSet<&str> = names.iter().map(String::as_str).collect();
        let old = |e: &fs::DirEntry| {
            e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(3600))
        };
        if let Ok(rd) = fs::read_dir(self.sub("state")) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with('.') || (is_entry_name(&n) && !names.contains(n.as_str())) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        if let Ok(rd) = fs::read_dir(self.sub("tmp")) {
            for e in rd.flatten().filter(old) {
                let n = e.file_name().to_string_lossy().into_owned();
                let dest = self.entry_path(&n);
                let complete = read_spool_file(&e.path())
                    .is_ok_and(|b| serde_json::from_slice::<serde_json::Value>(&b).is_ok());
                if complete && is_entry_name(&n) && !dest.exists() {
                    match fs::rename(e.path(), &dest) {
                        Ok(()) => eprintln!(
                            "{}: a complete entry a post-build hook left behind; queued",
                            dest.display()
                        ),
                        Err(err) => eprintln!("cannot queue {}: {err}", e.path().display()),
                    }
                } else {
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
    /// When the earliest remaining entry is due (Unix seconds), from the
    /// states as this pass left them, so the service need not read the
    /// spool again to know how long to sleep.
    pub next_due: Option<u64>,
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
    spool.tidy(&spool.names()?);
    let queued = spool.list()?;
    let now = now_unix();
    // A next attempt further away than any backoff is not one an uploader
    // wrote (a hand-edited or corrupt state file): the entry is due.
    let latest = now.saturating_add(max_backoff.as_secs());
    // The due entries, up to a batch; the others keep their time, and a
    // failed one gets a new one: the earliest is when the service wakes.
    let mut due: Vec<&Queued> = Vec::new();
    let mut earliest = u64::MAX;
    for q in &queued {
        let is_due =
            ignore_schedule || q.state.next_attempt <= now || q.state.next_attempt > latest;
        if is_due && due.len() < BATCH {
            due.push(q);
        } else {
            earliest = earliest.min(q.state.next_attempt);
        }
    }
    let next_due = std::cell::Cell::new(earliest);
    let mut pass = Pass {
        waiting: queued.len(),
        attempted: due.len(),
        next_due: Some(earliest).filter(|&t| t < u64::MAX),
        ..Default::default()
    };
    if due.is_empty() {
        return Ok(pass);
    }
    // Records a failed attempt. A state file that cannot be written is
    // logged, not fatal: the entry stays and is tried at every pass, and
    // the other entries are still handled.
    let fail = |q: &Queued, why: String| {
        let attempts = q.state.attempts.saturating_add(1);
        let state = EntryState {
            attempts,
            last_attempt: Some(rfc3339_now()),
            last_error: Some(why),
            next_attempt: now_unix() + backoff(attempts, max_backoff).as_secs(),
        };
        next_due.set(next_due.get().min(state.next_attempt));
        if let Err(e) = spool.write_state(&q.name, &state) {
            eprintln!("cannot record the failed attempt: {e}");
        }
    };
    let mut good: Vec<(&Queued, &Entry)> = Vec::new();
    // Each path once, in the order the entries name them.
    let mut paths: Vec<String> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for q in &due {
        match q.usable(&opts.store_dir) {
            Ok(entry) => {
                good.push((q, entry));
                for p in &entry.paths {
                    if seen.insert(p) {
                        paths.push(p.clone());
                    }
                }
            }
            Err(problem) => {
                let why = bad_entry(&spool.entry_path(&q.name), &problem);
                eprintln!("{why}");
                fail(q, why);
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
    match result {
        Err(e) => {
            let why = e.to_string();
            for (q, _) in &good {
                fail(q, why.clone());
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
            let available = report.available();
            let invalid: HashSet<&str> = report.invalid.iter().map(String::as_str).collect();
            for (q, entry) in good {
                let missing: Vec<&String> = entry
                    .paths
                    .iter()
                    .filter(|p| !available.contains(p.as_str()) && !invalid.contains(p.as_str()))
                    .collect();
                for p in entry.paths.iter().filter(|p| invalid.contains(p.as_str())) {
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
                    fail(q, why);
                }
            }
            pass.report = Some(report);
        }
    }
    pass.next_due = Some(next_due.get()).filter(|&t| t < u64::MAX);
    Ok(pass)
}

/// What is said about an entry file that cannot be used (`problem` from
/// [`Entry::parse`] or [`Entry::check_paths`]): which file, what is wrong,
/// and what to do, since the uploader leaves it alone.
pub fn bad_entry(path: &std::path::Path, problem: &str) -> String {
    format!(
        "{} {problem}; the uploader keeps it and does not push it: fix the file, \
         or push its paths with `nix-binary-cache push` and remove it",
        path.display()
    )
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
    fn entry_files_enqueue_never_writes_are_refused_with_the_reason() {
        let path = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a";
        let e = Entry::new(vec![path.into()], None);
        let bytes = e.to_bytes();
        assert_eq!(Entry::parse(&bytes), Ok(e.clone()));
        let refused = |b: &[u8]| Entry::parse(b).unwrap_err();
        assert!(refused(&bytes[..bytes.len() - 1]).starts_with("is truncated"));
        assert!(refused(b"").starts_with("is truncated"));
        assert!(refused(b"nonsense").starts_with("is not JSON"));
        assert!(refused(br#"{"version":2,"whatever":1}"#).contains("entry format version 2"));
        assert!(refused(br#"{"version":1,"queued":"x"}"#).contains("missing field `paths`"));
        assert_eq!(
            refused(br#"{"version":1,"paths":[],"queued":"x"}"#),
            "lists no paths"
        );
        assert!(refused(br#"{"version":1,"paths":["a b"],"queued":"x"}"#).contains("\"a b\""));
        assert_eq!(e.check_paths("/nix/store"), Ok(()));
        assert_eq!(e.check_paths("/nix/store/"), Ok(()));
        assert!(e.check_paths("/other/store").is_err());
        let sub = Entry::new(vec![format!("{path}/bin")], None);
        assert!(sub.check_paths("/nix/store").is_err());
        assert!(EntryState::parse(b"{}").is_err());
        let st = EntryState {
            attempts: 3,
            ..Default::default()
        };
        assert_eq!(EntryState::parse(&st.to_bytes()), Ok(st));
    }

    #[test]
    fn backoff_is_capped() {
        let cap = Duration::from_secs(300);
        assert_eq!(backoff(1, cap), Duration::from_secs(5));
        assert_eq!(backoff(3, cap), Duration::from_secs(20));
        assert_eq!(backoff(60, cap), cap);
    }
}
