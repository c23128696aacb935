//! Push: upload store paths, signed, so that a plain Nix substitutes them.
//!
//! The order of events is what keeps a cache consistent whatever happens
//! to the process:
//!
//! 1. `nix path-info --json --recursive` gives the closure with NarHash,
//!    NarSize and references.
//! 2. One HEAD `<hash>.narinfo` per path (concurrent, kept-alive
//!    connections) tells what the cache already has; with
//!    `--skip-if-substitutable`, one HEAD per missing path at each upstream
//!    tells what clients can fetch from there instead.
//! 3. Each missing path's NAR is streamed from the store, hashed, compressed
//!    and uploaded ([`upload`]); the computed NarHash and NarSize must equal
//!    Nix's, or nothing is published for the path.
//! 4. Only then, and only once every path it references has its narinfo in
//!    the cache (or upstream), its signed narinfo is written: the narinfo is
//!    the commit point. A push killed at any moment leaves at worst NAR
//!    objects no narinfo points at; a re-run finds the narinfos that exist
//!    and uploads the rest.
//! 5. The top-level paths are recorded under `roots/` (host, time), the
//!    basis for retention.
//!
//! NAR objects are named after the NarHash (`nar/<nix32>.nar.zst`): it is
//! known before the upload starts, so a multipart upload can be opened
//! straight away and the stream never has to be buffered or copied to learn
//! its name. (Nix names them after the FileHash, known only at the end.)
//! Clients follow the narinfo's `URL:`, so either is valid.

pub mod compress;
pub mod progress;
pub mod queue;
pub mod upload;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use indicatif::HumanBytes;
use tokio::sync::{Semaphore, watch};

pub use compress::Compression;
use progress::Progress;
pub use progress::ProgressMode;
use upload::{Budget, NarJob, UploadedNar};

use crate::error::{Error, Result};
use crate::http::{Endpoint, EndpointConfig, Request};
use crate::narinfo::NarInfo;
use crate::pathinfo::{self, PathInfo, base_name};
use crate::s3::S3Client;
use crate::signing::SecretKey;

/// Content type of narinfo objects.
pub const NARINFO_CONTENT_TYPE: &str = "text/x-nix-narinfo";

/// The bucket a push writes to.
#[derive(Debug, Clone)]
pub struct Cache {
    /// Client signing as the writer.
    pub client: S3Client,
    /// Bucket name.
    pub bucket: String,
}

/// The object key of a path's narinfo.
pub fn narinfo_key(hash_part: &str) -> String {
    format!("{hash_part}.narinfo")
}

impl Cache {
    /// A cache in `bucket`, written through `client`.
    pub fn new(client: S3Client, bucket: impl Into<String>) -> Cache {
        Cache {
            client,
            bucket: bucket.into(),
        }
    }

    /// True when the cache has the narinfo of the path with `hash_part`.
    pub async fn has_narinfo(&self, hash_part: &str) -> Result<bool> {
        Ok(self
            .client
            .head_object(&self.bucket, &narinfo_key(hash_part))
            .await?
            .is_some())
    }
}

/// A cache whose paths need not be uploaded (`--skip-if-substitutable`),
/// asked anonymously as a substituter would.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The URL as given.
    pub url: String,
    endpoint: Endpoint,
}

impl Upstream {
    /// An upstream at `url` (http only to loopback unless allowed).
    pub fn new(url: &str, allow_insecure_http: bool, ca_file: Option<PathBuf>) -> Result<Upstream> {
        let mut cfg = EndpointConfig::new(url)?;
        cfg.allow_insecure_http = allow_insecure_http;
        cfg.ca_file = ca_file;
        cfg.timeout = Duration::from_secs(10);
        cfg.max_retries = 2;
        Ok(Upstream {
            url: url.to_string(),
            endpoint: Endpoint::new(cfg)?,
        })
    }

    /// True when the upstream serves the narinfo. An upstream that cannot
    /// be asked does not serve it: the path is uploaded (the safe side).
    async fn serves(&self, hash_part: &str) -> bool {
        let req = Request::new(http::Method::HEAD, format!("/{}", narinfo_key(hash_part)));
        match self.endpoint.send(&req, None, "s3").await {
            Ok(r) => r.status.is_success(),
            Err(_) => false,
        }
    }
}

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// NAR compression.
    pub compression: Compression,
    /// Compression level (`None`: the codec's default).
    pub level: Option<i32>,
    /// NARs uploaded at once.
    pub jobs: usize,
    /// Push the closure (true) or only the given paths, whose references
    /// must then already be in the cache or upstream.
    pub closure: bool,
    /// Caches whose paths are not uploaded again.
    pub upstreams: Vec<Upstream>,
    /// The Nix store directory.
    pub store_dir: String,
    /// Progress display.
    pub progress: ProgressMode,
    /// Record the top-level paths under `roots/`.
    pub record_roots: bool,
    /// Paths no longer in the local store are reported in
    /// [`PushReport::invalid`] instead of failing the push (the queue).
    pub skip_invalid: bool,
    /// Multipart part size; NARs that compress to less go up in one PUT.
    pub part_size: usize,
    /// Memory for part buffers, shared by all jobs.
    pub memory_budget: usize,
    /// Concurrent HEAD requests when asking what the cache has.
    pub head_concurrency: usize,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            compression: Compression::Zstd,
            level: None,
            jobs: 4,
            closure: true,
            upstreams: Vec::new(),
            store_dir: pathinfo::DEFAULT_STORE_DIR.into(),
            progress: ProgressMode::Auto,
            record_roots: true,
            skip_invalid: false,
            part_size: 8 * 1024 * 1024,
            memory_budget: 24 * 1024 * 1024,
            head_concurrency: 64,
        }
    }
}

/// A path this push uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedPath {
    /// The store path.
    pub path: String,
    /// NAR size.
    pub nar_size: u64,
    /// Size of the stored (compressed) NAR.
    pub file_size: u64,
    /// The NAR object's key.
    pub url: String,
}

/// What a push did.
#[derive(Debug, Clone, Default)]
pub struct PushReport {
    /// The top-level paths (resolved).
    pub roots: Vec<String>,
    /// Paths considered (the closure, or the paths given).
    pub considered: usize,
    /// Paths uploaded now.
    pub uploaded: Vec<UploadedPath>,
    /// Paths the cache already had.
    pub present: Vec<String>,
    /// Paths an upstream serves, so not uploaded.
    pub upstream: Vec<String>,
    /// Paths that could not be pushed, with the reason.
    pub failed: Vec<(String, String)>,
    /// Paths not valid in the local store (with `skip_invalid`).
    pub invalid: Vec<String>,
    /// The `roots/` record written.
    pub roots_key: Option<String>,
    /// Wall time of the whole push.
    pub elapsed: Duration,
    /// Compression used.
    pub compression: Compression,
}

impl PushReport {
    /// True when every path is in the cache (or upstream) now.
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }

    /// The paths (and so their closures) available to clients: uploaded,
    /// already there, or served by an upstream. A set, since callers look
    /// up many paths in a closure of thousands.
    pub fn available(&self) -> HashSet<&str> {
        self.uploaded
            .iter()
            .map(|u| u.path.as_str())
            .chain(self.present.iter().map(String::as_str))
            .chain(self.upstream.iter().map(String::as_str))
            .collect()
    }

    /// NAR bytes and stored bytes uploaded.
    pub fn bytes(&self) -> (u64, u64) {
        self.uploaded
            .iter()
            .fold((0, 0), |(n, f), u| (n + u.nar_size, f + u.file_size))
    }

    /// The human summary printed at the end of a push.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let (nar, file) = self.bytes();
        let secs = self.elapsed.as_secs_f64().max(1e-6);
        if self.uploaded.is_empty() {
            s.push_str(&format!(
                "nothing uploaded: {} of {} already in the cache",
                self.present.len(),
                count(self.considered, "path", "paths")
            ));
        } else {
            s.push_str(&format!(
                "uploaded {}: {} NAR -> {} {} (ratio {:.2}) in {:.1}s, {}/s; {} of {} already in \
                 the cache",
                count(self.uploaded.len(), "path", "paths"),
                HumanBytes(nar),
                HumanBytes(file),
                self.compression.name(),
                nar as f64 / file.max(1) as f64,
                secs,
                HumanBytes((nar as f64 / secs) as u64),
                self.present.len(),
                count(self.considered, "path", "paths")
            ));
        }
        if !self.upstream.is_empty() {
            s.push_str(&format!(
                "; {} served by an upstream cache",
                self.upstream.len()
            ));
        }
        if !self.invalid.is_empty() {
            s.push_str(&format!(
                "; {} no longer in the local store",
                self.invalid.len()
            ));
        }
        if !self.failed.is_empty() {
            s.push_str(&format!("; {} FAILED", self.failed.len()));
        }
        s
    }
}

/// `n` and the noun in the right number ("1 path", "2 paths").
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    Published,
    Failed,
}

/// Pushes `paths` (store paths or links to them) and, unless
/// `opts.closure` is off, their closures to `cache`, signing with `key`.
///
/// Errors that concern the whole push (a bad path, Nix failing, the cache
/// unreachable when asked what it has) are `Err`; a path that fails on its
/// own is listed in [`PushReport::failed`] and does not stop the others
/// (but stops its dependents from being published).
pub async fn push(
    cache: &Cache,
    key: &SecretKey,
    opts: &PushOptions,
    paths: &[String],
) -> Result<PushReport> {
    let start = Instant::now();
    let mut report = PushReport {
        compression: opts.compression,
        ..Default::default()
    };
    let plan = plan(cache, opts, paths, &mut report).await?;
    upload_all(cache, key, opts, plan, &mut report).await;
    let available = report.available();
    let available: Vec<String> = report
        .roots
        .iter()
        .filter(|r| available.contains(r.as_str()))
        .cloned()
        .collect();
    if opts.record_roots && !available.is_empty() {
        match record_roots(cache, &available).await {
            Ok(k) => report.roots_key = Some(k),
            Err(e) => report.failed.push((
                "roots/".into(),
                format!("cannot record the pushed roots: {e}"),
            )),
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

/// What is left to upload, dependencies first.
struct Plan {
    order: Vec<PathInfo>,
    /// References outside the pushed set that neither the cache nor an
    /// upstream has (only without the closure).
    unavailable: HashSet<String>,
    level: i32,
}

/// Resolves the paths, asks Nix for their metadata and the cache (and the
/// upstreams) what they have; fills the report's roots, present, upstream
/// and invalid lists.
async fn plan(
    cache: &Cache,
    opts: &PushOptions,
    paths: &[String],
    report: &mut PushReport,
) -> Result<Plan> {
    for p in paths {
        let p = pathinfo::resolve_store_path(p, &opts.store_dir)?;
        if !report.roots.contains(&p) {
            report.roots.push(p);
        }
    }
    if let Some(l) = opts.level {
        opts.compression
            .check_level(l)
            .map_err(|m| Error::config("compression level", m))?;
    }
    let level = opts.level.unwrap_or(opts.compression.default_level());

    let (roots, closure, dir) = (report.roots.clone(), opts.closure, opts.store_dir.clone());
    let infos = tokio::task::spawn_blocking(move || pathinfo::query(&roots, closure, &dir))
        .await
        .map_err(|e| Error::Other(format!("nix path-info did not finish: {e}")))??;
    if !infos.invalid.is_empty() {
        if !opts.skip_invalid {
            return Err(Error::config(
                "store path",
                format!(
                    "{} not valid in the local store (never built, or garbage-collected)",
                    infos.invalid.join(", ")
                ),
            ));
        }
        report.roots.retain(|r| !infos.invalid.contains(r));
        report.invalid = infos.invalid;
    }
    let valid = infos.valid;
    report.considered = valid.len();

    // References outside the set (only without the closure) must be
    // available already: a narinfo must never point at a missing path.
    let in_set: HashSet<&str> = valid.iter().map(|p| p.path.as_str()).collect();
    let external: BTreeSet<String> = valid
        .iter()
        .flat_map(|p| p.dependencies())
        .filter(|r| !in_set.contains(r.as_str()))
        .cloned()
        .collect();

    let mut asked: Vec<String> = valid.iter().map(|p| p.path.clone()).collect();
    asked.extend(external.iter().cloned());
    let present = present_in_cache(cache, &asked, opts.head_concurrency).await?;
    let missing: Vec<&String> = asked.iter().filter(|p| !present.contains(*p)).collect();
    let served = served_upstream(&opts.upstreams, &missing, opts.head_concurrency).await;

    let mut to_push = Vec::new();
    for info in valid {
        if present.contains(&info.path) {
            report.present.push(info.path);
        } else if served.contains(&info.path) {
            report.upstream.push(info.path);
        } else {
            to_push.push(info);
        }
    }
    Ok(Plan {
        order: pathinfo::closure_order(to_push)?,
        unavailable: external
            .into_iter()
            .filter(|r| !present.contains(r) && !served.contains(r))
            .collect(),
        level,
    })
}

/// Uploads the plan's paths, `opts.jobs` NARs at a time, each narinfo
/// after its references' (see [`push_one`]); fills the report's uploaded
/// and failed lists.
async fn upload_all(
    cache: &Cache,
    key: &SecretKey,
    opts: &PushOptions,
    plan: Plan,
    report: &mut PushReport,
) {
    let order = plan.order;
    let total_bytes = order.iter().map(|p| p.nar_size).sum();
    let progress = Progress::start(opts.progress, order.len(), total_bytes);
    let mut senders = HashMap::new();
    let mut receivers = HashMap::new();
    for info in &order {
        let (tx, rx) = watch::channel(Status::Pending);
        senders.insert(info.path.clone(), tx);
        receivers.insert(info.path.clone(), rx);
    }
    let ctx = Ctx {
        cache,
        key,
        jobs: Arc::new(Semaphore::new(opts.jobs.max(1))),
        budget: Budget::new(opts.memory_budget),
        job: NarJob {
            compression: opts.compression,
            level: plan.level,
            part_size: opts.part_size,
            parts_in_flight: 2,
        },
        progress: &progress,
        done: AtomicUsize::new(0),
        total: order.len(),
        store_failure: Default::default(),
    };
    let mut tasks = FuturesUnordered::new();
    for info in &order {
        let deps: Vec<(String, watch::Receiver<Status>)> = info
            .dependencies()
            .filter_map(|d| receivers.get(d).map(|rx| (d.clone(), rx.clone())))
            .collect();
        let missing_ref = info
            .dependencies()
            .find(|d| plan.unavailable.contains(*d))
            .cloned();
        let tx = senders.remove(&info.path).expect("one sender per path");
        let ctx = &ctx;
        tasks.push(async move {
            let result = match missing_ref {
                Some(r) => Err(format!(
                    "its reference {r} is neither in the cache nor upstream; push it too \
                     (leave out --no-closure)"
                )),
                None => push_one(ctx, info, &deps).await,
            };
            let _ = tx.send(if result.is_ok() {
                Status::Published
            } else {
                Status::Failed
            });
            (info, result)
        });
    }
    while let Some((info, result)) = tasks.next().await {
        match result {
            Ok(nar) => {
                let done = ctx.done.fetch_add(1, Ordering::Relaxed) + 1;
                progress.uploaded(info, &nar, done, ctx.total);
                report.uploaded.push(UploadedPath {
                    path: info.path.clone(),
                    nar_size: info.nar_size,
                    file_size: nar.file_size,
                    url: nar.key,
                });
            }
            Err(e) => {
                if e != NOT_ATTEMPTED {
                    progress.failed(&info.path, &e);
                }
                report.failed.push((info.path.clone(), e));
            }
        }
    }
    drop(tasks);
    drop(ctx);
    progress.finish();
}

struct Ctx<'a> {
    cache: &'a Cache,
    key: &'a SecretKey,
    jobs: Arc<Semaphore>,
    budget: Budget,
    job: NarJob,
    progress: &'a Progress,
    done: AtomicUsize,
    total: usize,
    /// The first error that showed the store itself failing (unreachable,
    /// 5xx after retries, credentials refused): later paths are not tried.
    store_failure: std::sync::Mutex<Option<String>>,
}

/// The reason given for paths not tried after the store failed.
pub const NOT_ATTEMPTED: &str = "not attempted: the store failed on an earlier path";

/// True for errors that concern the store as a whole rather than one path:
/// trying the other paths would only repeat them.
fn store_wide(e: &Error) -> bool {
    match e {
        Error::Transport { .. } => true,
        Error::Store { status, .. } => *status >= 500 || *status == 401 || *status == 403,
        _ => false,
    }
}

impl Ctx<'_> {
    /// Turns an error into the path's failure message, remembering it when
    /// it shows the store failing.
    fn fail(&self, e: Error) -> String {
        let message = e.to_string();
        if store_wide(&e) {
            let mut f = self.store_failure.lock().unwrap_or_else(|p| p.into_inner());
            f.get_or_insert_with(|| message.clone());
        }
        message
    }

    fn store_failed(&self) -> bool {
        self.store_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}

/// Uploads one NAR, waits for the path's references to be published, then
/// publishes its signed narinfo.
async fn push_one(
    ctx: &Ctx<'_>,
    info: &PathInfo,
    deps: &[(String, watch::Receiver<Status>)],
) -> std::result::Result<UploadedNar, String> {
    let failed_dep = |deps: &[(String, watch::Receiver<Status>)]| {
        deps.iter()
            .find(|(_, rx)| *rx.borrow() == Status::Failed)
            .map(|(d, _)| format!("not published: its reference {d} could not be pushed"))
    };
    if let Some(e) = failed_dep(deps) {
        return Err(e);
    }
    let nar = {
        let _slot = ctx.jobs.acquire().await.map_err(|e| e.to_string())?;
        if ctx.store_failed() {
            return Err(NOT_ATTEMPTED.into());
        }
        upload::upload_nar(
            ctx.cache,
            info,
            &ctx.job,
            &ctx.budget,
            ctx.progress.bytes.clone(),
        )
        .await
        .map_err(|e| ctx.fail(e))?
    };
    for (_, rx) in deps {
        let mut rx = rx.clone();
        let _ = rx.wait_for(|s| *s != Status::Pending).await;
    }
    if let Some(e) = failed_dep(deps) {
        return Err(e);
    }
    let narinfo = make_narinfo(info, &nar, ctx.job.compression, ctx.key);
    ctx.cache
        .client
        .put_object(
            &ctx.cache.bucket,
            &narinfo_key(info.hash_part()),
            narinfo.render(),
            NARINFO_CONTENT_TYPE,
        )
        .await
        .map_err(|e| ctx.fail(e))?;
    Ok(nar)
}

/// The signed narinfo of an uploaded path. Signatures Nix already holds
/// for it (e.g. from the cache it was substituted from) are kept.
pub fn make_narinfo(
    info: &PathInfo,
    nar: &UploadedNar,
    compression: Compression,
    key: &SecretKey,
) -> NarInfo {
    let mut n = NarInfo {
        store_path: info.path.clone(),
        url: nar.key.clone(),
        compression: Some(compression.name().into()),
        file_hash: Some(nar.file_hash.clone()),
        file_size: Some(nar.file_size),
        nar_hash: info.nar_hash.clone(),
        nar_size: info.nar_size,
        references: info
            .references
            .iter()
            .map(|r| base_name(r).to_string())
            .collect(),
        deriver: info.deriver.as_deref().map(|d| base_name(d).to_string()),
        sigs: info
            .signatures
            .iter()
            .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
            .cloned()
            .collect(),
        ca: info.ca.clone().filter(|c| !c.contains(['\n', '\r'])),
        extra: Vec::new(),
    };
    n.sign(key);
    n
}

/// The paths among `paths` whose narinfo the cache has (one HEAD each,
/// `concurrency` at a time).
pub async fn present_in_cache(
    cache: &Cache,
    paths: &[String],
    concurrency: usize,
) -> Result<HashSet<String>> {
    let mut present = HashSet::new();
    // One request first: an unreachable cache then fails once, with one
    // series of retries, instead of once per path.
    let Some((first, rest)) = paths.split_first() else {
        return Ok(present);
    };
    if cache
        .has_narinfo(pathinfo::hash_part(first).unwrap_or_default())
        .await?
    {
        present.insert(first.clone());
    }
    let mut answers = futures::stream::iter(rest.iter().map(|p| async move {
        let hash = pathinfo::hash_part(p).unwrap_or_default();
        cache.has_narinfo(hash).await.map(|has| (p, has))
    }))
    .buffer_unordered(concurrency.max(1));
    while let Some(answer) = answers.next().await {
        let (p, has) = answer?;
        if has {
            present.insert(p.clone());
        }
    }
    Ok(present)
}

/// The paths among `paths` that one of `upstreams` serves.
async fn served_upstream(
    upstreams: &[Upstream],
    paths: &[&String],
    concurrency: usize,
) -> HashSet<String> {
    let mut served = HashSet::new();
    for up in upstreams {
        let ask: Vec<&&String> = paths.iter().filter(|p| !served.contains(**p)).collect();
        let found: Vec<String> = futures::stream::iter(ask.into_iter().map(|p| async move {
            let hash = pathinfo::hash_part(p).unwrap_or_default();
            up.serves(hash).await.then(|| (*p).clone())
        }))
        .buffer_unordered(concurrency.max(1))
        .filter_map(|x| async move { x })
        .collect()
        .await;
        served.extend(found);
    }
    served
}

/// This machine's name, as a safe object key component.
pub fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "unknown-host".into()
    } else {
        name
    }
}

/// Writes `roots/<host>/<time>-<random>.json` listing `paths`; returns the key.
pub async fn record_roots(cache: &Cache, paths: &[String]) -> Result<String> {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    let stamp = now
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| Error::Other(format!("cannot format the time: {e}")))?;
    let mut random = [0u8; 4];
    getrandom::getrandom(&mut random)
        .map_err(|e| Error::Other(format!("the OS random source failed: {e}")))?;
    let host = host_name();
    let key = format!("roots/{host}/{stamp}-{}.json", hex::encode(random));
    let body = serde_json::json!({
        "version": 1,
        "host": host,
        "time": stamp,
        "paths": paths,
        "tool": concat!("nix-binary-cache ", env!("CARGO_PKG_VERSION")),
    });
    cache
        .client
        .put_object(&cache.bucket, &key, body.to_string(), "application/json")
        .await?;
    Ok(key)
}
