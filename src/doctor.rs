//! `doctor`: why doesn't my cache work? Each check says ok, warn, fail or
//! skip, and every warning or failure says in one sentence what to change.
//!
//! The checks look at the cache the way its users do:
//!
//! - as a **client** (anonymous requests): the endpoint answers and its TLS
//!   certificate is valid; the clock agrees with the store's (`Date`);
//!   `nix-cache-info` is readable and names the right `StoreDir`; a sample
//!   of narinfos verifies under the trusted keys and their NARs exist;
//! - as a **stranger**: an anonymous write is refused (a probe at a fixed
//!   key under `doctor/`; if it is accepted that is reported loudly, and the
//!   probe is deleted or named for deletion), an anonymous listing too;
//! - as the **writer**: its credentials authenticate (a signed GET: HEAD
//!   hides the error code), it may write (a fixed probe object,
//!   `doctor/write-probe`, overwritten by every run because the writer may
//!   not delete) and it may not delete;
//! - as the **Nix daemon**: its nix.conf (`$NIX_CONF_DIR/nix.conf` or
//!   `/etc/nix/nix.conf`, includes followed) lists the substituter and the
//!   keys, the signing key is one of the trusted keys, and the current user
//!   may use the cache.
//!
//! Network failures are results here, not errors: a store that cannot be
//! reached fails the `endpoint` check and skips the checks that need it.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use http::{Method, StatusCode};
use serde::Serialize;

use crate::credentials::Credentials;
use crate::error::Error;
use crate::fsutil;
use crate::http::{Endpoint, EndpointConfig, Request, Response, is_loopback};
use crate::narinfo::NarInfo;
use crate::nix_conf::{self, UserInfo};
use crate::provision::identity::{WriterCheck, check_writer};
use crate::s3::{S3Client, S3Error};
use crate::signing::{PublicKey, SecretKey};

/// SigV4 refuses requests whose clock is off by more than this.
pub const SIGV4_MAX_SKEW: Duration = Duration::from_secs(15 * 60);
/// A skew above this is worth a warning.
pub const WARN_SKEW: Duration = Duration::from_secs(5 * 60);
/// The object an anonymous write probe tries to create (fixed: never more
/// than one, even when the probe is accepted and cannot be deleted).
pub const ANONYMOUS_PROBE_KEY: &str = "doctor/anonymous-write-probe";
/// The object the writer's write probe overwrites on every run.
pub const WRITER_PROBE_KEY: &str = "doctor/write-probe";
/// How many narinfos the sample check reads.
const SAMPLE: usize = 3;
/// `trusted-public-keys` when nix.conf does not set it.
const NIX_DEFAULT_KEY: &str = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";

/// What doctor looks at.
#[derive(Debug, Clone)]
pub struct DoctorConfig {
    /// How to reach the store.
    pub endpoint: EndpointConfig,
    /// The bucket.
    pub bucket: String,
    /// Path-style addressing.
    pub path_style: bool,
    /// The URL clients substitute from.
    pub substituter_url: String,
    /// The Nix store directory clients use.
    pub store_dir: String,
    /// The writer credentials file, if this machine has one.
    pub writer_credentials_file: Option<PathBuf>,
    /// The signing key file, if this machine pushes.
    pub signing_key_file: Option<PathBuf>,
    /// The public keys that sign for the cache (configured trust).
    pub public_keys: Vec<PublicKey>,
    /// The nix.conf the daemon reads.
    pub nix_conf: PathBuf,
    /// The user running doctor.
    pub user: UserInfo,
    /// Where a setting comes from, for fixes: `true` when a manifest (the
    /// Nix modules) configured it, so fixes name module options.
    pub from_manifest: bool,
}

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// As it should be.
    Ok,
    /// Works, but is risky or will break.
    Warn,
    /// Broken: the cache does not work (or is unsafe) until it is fixed.
    Fail,
    /// Not checked (missing input, or an earlier check failed).
    Skip,
}

impl Status {
    /// The word printed for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        }
    }
}

/// One check: what was found and, unless ok, what to change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Its name (`endpoint`, `nix-cache-info`, ...).
    pub check: &'static str,
    /// The result.
    pub status: Status,
    /// What was found.
    pub message: String,
    /// What to change, in one sentence (warn and fail).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn new(check: &'static str, status: Status, message: impl Into<String>) -> Check {
        Check {
            check,
            status,
            message: message.into(),
            fix: None,
        }
    }
    fn ok(check: &'static str, message: impl Into<String>) -> Check {
        Check::new(check, Status::Ok, message)
    }
    fn skip(check: &'static str, message: impl Into<String>) -> Check {
        Check::new(check, Status::Skip, message)
    }
    fn warn(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(check, Status::Warn, message).with_fix(fix)
    }
    fn fail(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(check, Status::Fail, message).with_fix(fix)
    }
    fn with_fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
}

/// Every check of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The endpoint checked.
    pub endpoint: String,
    /// The bucket checked.
    pub bucket: String,
    /// The substituter URL checked.
    pub substituter: String,
    /// The checks, in order.
    pub checks: Vec<Check>,
    /// True when no check failed.
    pub ok: bool,
}

impl Report {
    /// The check named `name`.
    pub fn get(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.check == name)
    }

    /// One line per check (the fix indented below it), then a summary.
    pub fn to_text(&self) -> String {
        let width = self.checks.iter().map(|c| c.check.len()).max().unwrap_or(0);
        let mut out = format!(
            "doctor: {} bucket {} (substituter {})\n",
            self.endpoint, self.bucket, self.substituter
        );
        for c in &self.checks {
            out.push_str(&format!(
                "{:<4}  {:<width$}  {}\n",
                c.status.as_str(),
                c.check,
                c.message
            ));
            if let Some(fix) = &c.fix {
                out.push_str(&format!("      {:<width$}  fix: {fix}\n", ""));
            }
        }
        let count = |s: Status| self.checks.iter().filter(|c| c.status == s).count();
        out.push_str(&format!(
            "{} ok, {} warn, {} fail, {} skip\n",
            count(Status::Ok),
            count(Status::Warn),
            count(Status::Fail),
            count(Status::Skip)
        ));
        out
    }
}

/// Classifies a clock difference (`server - local`, in seconds).
pub fn clock_check(skew_secs: i64) -> Check {
    let abs = Duration::from_secs(skew_secs.unsigned_abs());
    let way = if skew_secs > 0 { "behind" } else { "ahead of" };
    let what = format!(
        "the local clock is {} s {way} the store's",
        skew_secs.unsigned_abs()
    );
    let fix = "synchronise the clock with NTP (on NixOS services.timesyncd, the default; \
               elsewhere `timedatectl set-ntp true`)";
    if abs > SIGV4_MAX_SKEW {
        Check::fail(
            "clock",
            format!("{what}: the store refuses signed requests (pushes) beyond 15 minutes"),
            fix,
        )
    } else if abs > WARN_SKEW {
        Check::warn(
            "clock",
            format!("{what}: signed requests fail beyond 15 minutes"),
            fix,
        )
    } else {
        Check::ok(
            "clock",
            format!("within {} s of the store's clock", abs.as_secs()),
        )
    }
}

/// The `StoreDir` of a `nix-cache-info` text (`None` when absent).
fn cache_info_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// URLs compared as Nix users write them: a trailing `/` does not matter.
fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Runs every check.
pub async fn run(cfg: &DoctorConfig) -> Report {
    let mut d = Doctor::new(cfg);
    d.run().await;
    Report {
        endpoint: cfg.endpoint.url.to_string(),
        bucket: cfg.bucket.clone(),
        substituter: cfg.substituter_url.clone(),
        ok: d.checks.iter().all(|c| c.status != Status::Fail),
        checks: d.checks,
    }
}

struct Doctor<'a> {
    cfg: &'a DoctorConfig,
    checks: Vec<Check>,
    /// Anonymous client (`None`: the endpoint configuration is unusable).
    anon: Option<S3Client>,
    /// Client signing as the writer, once its credentials are known to work.
    writer: Option<S3Client>,
    /// The daemon's nix.conf assignments.
    conf: Vec<(String, String)>,
    /// The public half of the signing key, once read.
    signing_public: Option<PublicKey>,
}

/// True for an error reading a file this user may not read (doctor run
/// without root on a machine whose secrets belong to root).
fn permission_denied(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied)
}

impl<'a> Doctor<'a> {
    fn new(cfg: &'a DoctorConfig) -> Doctor<'a> {
        let (conf, _) = nix_conf::read_conf_file(&cfg.nix_conf);
        Doctor {
            cfg,
            checks: Vec::new(),
            anon: None,
            writer: None,
            conf,
            signing_public: None,
        }
    }

    fn push(&mut self, c: Check) {
        self.checks.push(c);
    }

    /// A fix naming the module option or, without a manifest, the flag.
    fn option(&self, module: &str, flag: &str) -> String {
        if self.cfg.from_manifest {
            format!("services.nixBinaryCache.{module}")
        } else {
            flag.to_string()
        }
    }

    async fn run(&mut self) {
        let reachable = self.endpoint_and_cache_info().await;
        if reachable {
            self.anonymous_write().await;
            self.anonymous_list().await;
        } else {
            for name in ["anonymous-write", "anonymous-list"] {
                self.push(Check::skip(name, "the endpoint cannot be reached"));
            }
        }
        self.writer_checks(reachable).await;
        self.signing_key();
        self.nix_conf_checks();
        if reachable {
            self.sample_narinfos().await;
        } else {
            self.push(Check::skip(
                "sample-narinfo",
                "the endpoint cannot be reached",
            ));
        }
    }

    /// `endpoint`, `clock` and `nix-cache-info` from one anonymous GET of
    /// `nix-cache-info`. True when the store answered.
    async fn endpoint_and_cache_info(&mut self) -> bool {
        let mut ec = self.cfg.endpoint.clone();
        ec.max_retries = 1;
        ec.timeout = Duration::from_secs(15);
        let url = ec.url.clone();
        let endpoint = match Endpoint::new(ec) {
            Ok(e) => e,
            Err(e) => {
                let fix = match &e {
                    Error::InvalidFile { .. } => {
                        "give a readable PEM CA bundle with --ca-file (cache.caFile)"
                    }
                    _ => "correct the endpoint URL",
                };
                self.push(Check::fail("endpoint", e.to_string(), fix));
                for name in ["clock", "nix-cache-info"] {
                    self.push(Check::skip(name, "the endpoint cannot be used"));
                }
                return false;
            }
        };
        let anon = S3Client::new(endpoint, None, self.cfg.path_style);
        let req = Request::new(
            Method::GET,
            anon.path(&self.cfg.bucket, Some("nix-cache-info")),
        );
        let resp = match anon.send(&req).await {
            Ok(r) => r,
            Err(e) => {
                let text = e.to_string();
                let lower = text.to_ascii_lowercase();
                let check = if lower.contains("certificate") || lower.contains("tls") {
                    Check::fail(
                        "endpoint",
                        format!("the TLS certificate of {url} is not valid: {text}"),
                        format!(
                            "give the store a certificate from a CA clients trust, or install \
                             its CA on every client and name it with {}",
                            self.option("cache.caFile", "--ca-file")
                        ),
                    )
                } else {
                    Check::fail(
                        "endpoint",
                        format!("cannot reach {url}: {text}"),
                        "check that the store runs and that the endpoint URL (host, port, \
                         scheme) is the one clients can reach",
                    )
                };
                self.push(check);
                for name in ["clock", "nix-cache-info"] {
                    self.push(Check::skip(name, "the endpoint cannot be reached"));
                }
                return false;
            }
        };
        let transport = if url.scheme() == "https" {
            Check::ok(
                "endpoint",
                format!("{url} answers; its TLS certificate is valid"),
            )
        } else if is_loopback(&url) {
            Check::ok(
                "endpoint",
                format!("{url} answers (plain http on loopback)"),
            )
        } else {
            Check::warn(
                "endpoint",
                format!("{url} answers over plain http"),
                "serve the store over https: on plain http anyone on the network sees what \
                 is fetched and can delay or drop it (signatures still reject altered paths)",
            )
        };
        self.push(transport);
        self.push(self.clock(&resp));
        let info = self.cache_info(&resp);
        self.push(info);
        self.anon = Some(anon);
        true
    }

    fn clock(&self, resp: &Response) -> Check {
        let Some(date) = resp
            .header("date")
            .and_then(|d| httpdate::parse_http_date(d).ok())
        else {
            return Check::skip("clock", "the store sent no Date header");
        };
        let now = SystemTime::now();
        let skew = match date.duration_since(now) {
            Ok(ahead) => ahead.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        };
        clock_check(skew)
    }

    fn cache_info(&self, resp: &Response) -> Check {
        let name = "nix-cache-info";
        let b = &self.cfg.bucket;
        let provision = "run `nix-binary-cache provision` (services.nixBinaryCache.provision)";
        if resp.status.is_success() {
            let text = resp.text();
            let want = &self.cfg.store_dir;
            return match cache_info_field(&text, "StoreDir") {
                Some(dir) if dir != want => Check::fail(
                    name,
                    format!(
                        "says StoreDir {dir}, but clients use {want}: Nix refuses a cache for \
                         another store directory"
                    ),
                    format!(
                        "set {} to {want} and re-run provision, which rewrites nix-cache-info",
                        self.option("storeDir", "--store-dir (of provision)")
                    ),
                ),
                _ => Check::ok(
                    name,
                    format!(
                        "served anonymously: StoreDir {}, Priority {}, WantMassQuery {}",
                        cache_info_field(&text, "StoreDir").unwrap_or("(default /nix/store)"),
                        cache_info_field(&text, "Priority").unwrap_or("(default)"),
                        cache_info_field(&text, "WantMassQuery").unwrap_or("(default)"),
                    ),
                ),
            };
        }
        let e = S3Error::from_response(resp);
        match (resp.status, e.code.as_str()) {
            (_, "NoSuchBucket") => Check::fail(
                name,
                format!("the bucket {b} does not exist"),
                format!("create it: {provision}"),
            ),
            (StatusCode::NOT_FOUND, _) => Check::fail(
                name,
                format!("{b}/nix-cache-info does not exist"),
                format!("{provision}, which writes it"),
            ),
            (StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED, _) => Check::fail(
                name,
                format!(
                    "not readable anonymously (HTTP {} {}): clients cannot use the cache",
                    resp.status.as_u16(),
                    e.code
                ),
                format!(
                    "the bucket policy must allow anonymous s3:GetObject on arn:aws:s3:::{b}/*: \
                     {provision} with public = true (the default), which adds that statement"
                ),
            ),
            (s, code) => Check::fail(
                name,
                format!("GET {b}/nix-cache-info answered HTTP {} {code}", s.as_u16()),
                "check the store's logs; clients get the same answer",
            ),
        }
    }

    async fn anonymous_write(&mut self) {
        let name = "anonymous-write";
        let anon = self.anon.clone().expect("reachable");
        let b = self.cfg.bucket.clone();
        let req = Request::new(Method::PUT, anon.path(&b, Some(ANONYMOUS_PROBE_KEY)))
            .header("content-type", "text/plain")
            .body(
                "nix-binary-cache doctor: anonymous write probe. Anyone could write this; \
                 delete it once the bucket policy is fixed.\n",
            );
        let resp = match anon.send(&req).await {
            Ok(r) => r,
            Err(e) => return self.push(Check::skip(name, format!("no answer: {e}"))),
        };
        let e = S3Error::from_response(&resp);
        if matches!(
            resp.status,
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED
        ) {
            return self.push(Check::ok(
                name,
                format!(
                    "an anonymous PUT is refused ({})",
                    code_or_status(&resp, &e)
                ),
            ));
        }
        if !resp.status.is_success() {
            return self.push(if e.code == "NoSuchBucket" {
                Check::skip(name, format!("the bucket {b} does not exist"))
            } else {
                Check::warn(
                    name,
                    format!("an anonymous PUT got HTTP {}", code_or_status(&resp, &e)),
                    "make sure the bucket policy grants anonymous users s3:GetObject only",
                )
            });
        }
        // Accepted: the worst finding. Clean up if we can, else say where.
        let del = Request::new(Method::DELETE, anon.path(&b, Some(ANONYMOUS_PROBE_KEY)));
        let cleanup = match anon.send(&del).await {
            Ok(r) if r.status.is_success() => {
                "the probe was deleted again, anonymously: anyone can delete from the cache too"
                    .to_string()
            }
            _ => format!(
                "the probe object {b}/{ANONYMOUS_PROBE_KEY} is left in the bucket (the \
                 writer may not delete): delete it with the store's admin credentials"
            ),
        };
        self.push(Check::fail(
            name,
            format!(
                "ANYONE CAN WRITE TO THIS CACHE: an anonymous PUT of {b}/{ANONYMOUS_PROBE_KEY} \
                 succeeded; {cleanup}"
            ),
            "take write access away from anonymous users: remove s3:PutObject (or s3:*) for \
             everyone from the bucket policy (provision's statement grants s3:GetObject only) \
             and from the store's own anonymous identity if it has one (SeaweedFS: the IAM \
             user `anonymous`); signatures still reject forged paths, but anyone can \
             overwrite or fill the cache",
        ));
    }

    async fn anonymous_list(&mut self) {
        let name = "anonymous-list";
        let anon = self.anon.clone().expect("reachable");
        match anon.list_page(&self.cfg.bucket, "", None, 1).await {
            Ok(_) => self.push(Check::warn(
                name,
                "anyone can list the bucket, and so enumerate every store path in it",
                "remove s3:ListBucket for everyone from the bucket policy; Nix clients never \
                 list a cache",
            )),
            Err(Error::Store {
                status: 401 | 403, ..
            }) => self.push(Check::ok(name, "an anonymous listing is refused")),
            Err(e) => self.push(Check::skip(name, format!("inconclusive: {e}"))),
        }
    }

    async fn writer_checks(&mut self, reachable: bool) {
        let names = ["writer-credentials", "writer-write", "writer-delete"];
        let Some(file) = self.cfg.writer_credentials_file.clone() else {
            for n in names {
                self.push(Check::skip(
                    n,
                    "no writer credentials file given (--writer-credentials-file, or \
                     push.writerCredentialsFile in the manifest)",
                ));
            }
            return;
        };
        let skip_rest = |d: &mut Self, why: &str| {
            for n in &names[1..] {
                d.push(Check::skip(n, why.to_string()));
            }
        };
        let creds = match Credentials::from_env_file(&file) {
            Ok(c) => c,
            Err(e) if permission_denied(&e) => {
                let why = format!(
                    "{} is not readable by this user; run doctor as root to check the writer",
                    file.display()
                );
                self.push(Check::skip(names[0], why.clone()));
                return skip_rest(self, &why);
            }
            Err(e) => {
                self.push(Check::fail(
                    names[0],
                    e.to_string(),
                    format!(
                        "put AWS_ACCESS_KEY_ID=… and AWS_SECRET_ACCESS_KEY=… of the writer in {} \
                         (mode 0600); provision writes it for the iam and minio backends",
                        file.display()
                    ),
                ));
                return skip_rest(self, "the writer credentials file is unusable");
            }
        };
        if !reachable {
            self.push(Check::skip(names[0], "the endpoint cannot be reached"));
            return skip_rest(self, "the endpoint cannot be reached");
        }
        let anon = self.anon.clone().expect("reachable");
        let key = creds.access_key_id.clone();
        let mode_warning = fsutil::secret_mode_warning(&file);
        match check_writer(&anon, &self.cfg.bucket, &creds).await {
            Ok(WriterCheck::Valid) => {
                let msg = format!("{} (access key {key}) authenticates", file.display());
                self.push(match &mode_warning {
                    Some(w) => Check::warn(
                        names[0],
                        format!("{msg}, but {w}"),
                        format!("chmod 600 {}", file.display()),
                    ),
                    None => Check::ok(names[0], msg),
                });
            }
            Ok(WriterCheck::UnknownKey) => {
                self.push(Check::fail(
                    names[0],
                    format!(
                        "the store does not know the access key {key} of {} (InvalidAccessKeyId)",
                        file.display()
                    ),
                    "put the writer's current key pair in that file; with the iam backend, \
                     delete the file and re-run provision, which issues a new key",
                ));
                return skip_rest(self, "the writer credentials do not authenticate");
            }
            Ok(WriterCheck::WrongSecret) => {
                self.push(Check::fail(
                    names[0],
                    format!(
                        "the secret in {} is not the secret of access key {key} \
                         (SignatureDoesNotMatch)",
                        file.display()
                    ),
                    "put the key's current secret in that file (the minio backend's provision \
                     sets the writer's secret to the file's; with iam, delete the file and \
                     re-run provision)",
                ));
                return skip_rest(self, "the writer credentials do not authenticate");
            }
            Err(e) => {
                let skewed = e.store_code() == Some("RequestTimeTooSkewed");
                self.push(Check::fail(
                    names[0],
                    format!("the writer check failed: {e}"),
                    if skewed {
                        "synchronise the clock with NTP"
                    } else {
                        "check the store's logs and the writer's identity"
                    },
                ));
                return skip_rest(self, "the writer credentials could not be checked");
            }
        }
        let writer = anon.with_credentials(Some(creds));
        let b = self.cfg.bucket.clone();
        match writer
            .put_object(
                &b,
                WRITER_PROBE_KEY,
                "nix-binary-cache doctor: write probe, overwritten by every run (the writer \
                 may not delete it).\n",
                "text/plain",
            )
            .await
        {
            Ok(()) => self.push(Check::ok(
                names[1],
                format!("the writer may write (PUT {b}/{WRITER_PROBE_KEY})"),
            )),
            Err(e) => self.push(Check::fail(
                names[1],
                format!("the writer may not write: {e}"),
                format!(
                    "attach the writer policy (s3:PutObject on arn:aws:s3:::{b}/*) to the \
                     writer: re-run provision"
                ),
            )),
        }
        match writer.delete_object(&b, WRITER_PROBE_KEY).await {
            Ok(()) => self.push(Check::warn(
                names[2],
                format!("the writer may delete objects (DELETE {b}/{WRITER_PROBE_KEY} succeeded)"),
                "remove s3:DeleteObject from the writer's policy (provision's writer policy \
                 has no Delete): a leaked builder key could empty the cache",
            )),
            Err(Error::Store {
                status: 401 | 403, ..
            }) => self.push(Check::ok(
                names[2],
                "the writer may not delete (a leaked builder key cannot empty the cache)",
            )),
            Err(e) => self.push(Check::skip(names[2], format!("inconclusive: {e}"))),
        }
        self.writer = Some(writer);
    }

    /// The keys a client would trust: the configured ones, else the
    /// daemon's `trusted-public-keys`.
    fn client_keys(&self) -> (Vec<PublicKey>, &'static str) {
        if !self.cfg.public_keys.is_empty() {
            return (self.cfg.public_keys.clone(), "the configured public keys");
        }
        (self.conf_keys(), "trusted-public-keys of nix.conf")
    }

    fn conf_keys(&self) -> Vec<PublicKey> {
        nix_conf::effective_list(&self.conf, "trusted-public-keys", &[NIX_DEFAULT_KEY])
            .iter()
            .filter_map(|k| PublicKey::parse(k).ok())
            .collect()
    }

    fn signing_key(&mut self) {
        let name = "signing-key";
        let Some(file) = self.cfg.signing_key_file.clone() else {
            return self.push(Check::skip(
                name,
                "no signing key file given (--signing-key-file, or push.signingKeyFile)",
            ));
        };
        let key = match SecretKey::from_file(&file) {
            Ok(k) => k.public(),
            Err(e) if permission_denied(&e) => {
                return self.push(Check::skip(
                    name,
                    format!(
                        "{} is not readable by this user; run doctor as root to check the \
                         signing key",
                        file.display()
                    ),
                ));
            }
            Err(e) => {
                return self.push(Check::fail(
                    name,
                    e.to_string(),
                    "point the signing key file at the key push signs with (`keys generate` \
                     creates one)",
                ));
            }
        };
        self.signing_public = Some(key.clone());
        let (trusted, source) = self.client_keys();
        let trust_option = if self.cfg.from_manifest {
            "services.nixBinaryCache.trust.publicKeys".to_string()
        } else {
            "trusted-public-keys (and to --public-key here)".to_string()
        };
        let check = match trusted.iter().find(|k| k.name == key.name) {
            Some(k) if *k == key => Check::ok(
                name,
                format!("{} holds `{}`, one of {source}", file.display(), key.name),
            ),
            Some(other) => Check::fail(
                name,
                format!(
                    "{} holds another key than the trusted key named `{}` ({other}): clients \
                     reject everything it signs",
                    file.display(),
                    key.name
                ),
                format!(
                    "trust `{key}` instead ({trust_option}), or sign with the key that matches"
                ),
            ),
            None => Check::fail(
                name,
                format!(
                    "the key in {} (`{key}`) is not among {source}: clients reject everything \
                     it signs",
                    file.display()
                ),
                format!("add `{key}` to {trust_option} on every client"),
            ),
        };
        let check = match (check.status, fsutil::secret_mode_warning(&file)) {
            (Status::Ok, Some(w)) => Check::warn(
                name,
                format!("{}, but {w}", check.message),
                format!("chmod 600 {}", file.display()),
            ),
            _ => check,
        };
        self.push(check);
    }

    fn nix_conf_checks(&mut self) {
        let path = self.cfg.nix_conf.clone();
        let url = self.cfg.substituter_url.clone();
        let shown = if path.exists() {
            path.display().to_string()
        } else {
            format!("{} (missing, so Nix's defaults)", path.display())
        };
        let substituters =
            nix_conf::effective_list(&self.conf, "substituters", &["https://cache.nixos.org/"]);
        let trusted_subs = nix_conf::effective_list(&self.conf, "trusted-substituters", &[]);
        let listed = substituters.iter().any(|s| same_url(s, &url));
        // Keys: the configured ones, or the signing key's.
        let mut wanted = self.cfg.public_keys.clone();
        if wanted.is_empty()
            && let Some(k) = &self.signing_public
        {
            wanted.push(k.clone());
        }
        let key_args = if wanted.is_empty() {
            " --trusted-public-key KEY".to_string()
        } else {
            wanted
                .iter()
                .map(|k| format!(" --trusted-public-key {k}"))
                .collect()
        };
        let how = format!(
            "on NixOS enable services.nixBinaryCache.trust; elsewhere run as root \
             `nix-binary-cache configure --nix-conf {} --substituter {url}{key_args}`",
            path.display()
        );
        self.push(if listed {
            Check::ok(
                "nix-conf-substituter",
                format!("{shown} lists {url} in substituters"),
            )
        } else {
            Check::fail(
                "nix-conf-substituter",
                format!("{shown} does not list {url} in substituters (nor extra-substituters)"),
                how.clone(),
            )
        });

        let conf_keys = self.conf_keys();
        let missing: Vec<String> = wanted
            .iter()
            .filter(|k| !conf_keys.contains(k))
            .map(|k| k.to_string())
            .collect();
        self.push(if wanted.is_empty() {
            Check::skip(
                "nix-conf-keys",
                "no public keys given (--public-key, or trust.publicKeys) to look for",
            )
        } else if missing.is_empty() {
            Check::ok(
                "nix-conf-keys",
                format!(
                    "{shown} trusts {}",
                    wanted
                        .iter()
                        .map(|k| format!("`{}`", k.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        } else {
            Check::fail(
                "nix-conf-keys",
                format!(
                    "{shown} does not list {} in trusted-public-keys: Nix rejects the cache's \
                     paths",
                    missing.join(" ")
                ),
                how.clone(),
            )
        });

        // The current user.
        let user = &self.cfg.user;
        let trusted_users = nix_conf::effective_list(&self.conf, "trusted-users", &["root"]);
        let is_trusted = nix_conf::is_trusted(user, &trusted_users);
        let name = "nix-user";
        self.push(if listed {
            Check::ok(
                name,
                format!(
                    "`{}` (like every user of the daemon) substitutes from it",
                    user.name
                ),
            )
        } else if trusted_subs.iter().any(|s| same_url(s, &url)) {
            Check::ok(
                name,
                format!(
                    "`{}` may enable it (it is in trusted-substituters): --option \
                     extra-substituters {url}, or extra-substituters in the user's nix.conf",
                    user.name
                ),
            )
        } else if is_trusted {
            Check::warn(
                name,
                format!(
                    "`{}` is a trusted user, so its own nix.conf may add the cache, but other \
                     users cannot use it",
                    user.name
                ),
                how,
            )
        } else {
            Check::fail(
                name,
                format!(
                    "`{}` is not in trusted-users ({}) and the cache is neither in substituters \
                     nor in trusted-substituters: the daemon ignores it in the user's own \
                     nix.conf",
                    user.name,
                    trusted_users.join(" ")
                ),
                format!(
                    "have root add {url} to substituters (or trusted-substituters) of {}",
                    path.display()
                ),
            )
        });
    }

    async fn sample_narinfos(&mut self) {
        let name = "sample-narinfo";
        let b = self.cfg.bucket.clone();
        let anon = self.anon.clone().expect("reachable");
        let lister = self.writer.clone().unwrap_or_else(|| anon.clone());
        let keys: Vec<String> = match lister.list_top_level_page(&b, None, 1000).await {
            Ok((objects, _)) => objects
                .into_iter()
                .map(|o| o.key)
                .filter(|k| k.ends_with(".narinfo"))
                .take(SAMPLE)
                .collect(),
            Err(e) => {
                return self.push(Check::skip(
                    name,
                    if self.writer.is_some() {
                        format!("cannot list the bucket: {e}")
                    } else {
                        "cannot list the bucket anonymously (as it should be); give the writer \
                         credentials to check a sample of narinfos"
                            .to_string()
                    },
                ));
            }
        };
        if keys.is_empty() {
            return self.push(Check::skip(
                name,
                "the bucket holds no narinfo yet: push a path",
            ));
        }
        let (trusted, source) = self.client_keys();
        let mut signers: Vec<String> = Vec::new();
        for key in &keys {
            let problem = match anon.get_object(&b, key).await {
                Err(e) => Some((
                    format!("{key} is not readable anonymously: {e}"),
                    "the bucket policy must allow anonymous s3:GetObject on every object: \
                     re-run provision"
                        .to_string(),
                )),
                Ok(None) => None, // vanished meanwhile
                Ok(Some(bytes)) => {
                    self.check_narinfo(&anon, key, &bytes, &trusted, source, &mut signers)
                        .await
                }
            };
            if let Some((message, fix)) = problem {
                return self.push(Check::fail(name, message, fix));
            }
        }
        signers.sort();
        signers.dedup();
        self.push(Check::ok(
            name,
            format!(
                "{} narinfos verify (signed by {}) and their NARs exist",
                keys.len(),
                signers.join(", ")
            ),
        ));
    }

    /// The problem with one sampled narinfo, if any: (message, fix).
    async fn check_narinfo(
        &self,
        anon: &S3Client,
        key: &str,
        bytes: &[u8],
        trusted: &[PublicKey],
        source: &str,
        signers: &mut Vec<String>,
    ) -> Option<(String, String)> {
        let b = &self.cfg.bucket;
        let n = match NarInfo::parse_bytes(bytes) {
            Ok(n) => n,
            Err(e) => {
                return Some((
                    format!("{key} does not parse: {e}"),
                    "delete it and push the path again".into(),
                ));
            }
        };
        if n.store_dir() != self.cfg.store_dir {
            return Some((
                format!(
                    "{key} is for the store {}, not {}",
                    n.store_dir(),
                    self.cfg.store_dir
                ),
                "push from a Nix with the same store directory as the clients".into(),
            ));
        }
        let fp = n.fingerprint();
        let Some(k) = trusted
            .iter()
            .find(|k| n.sigs.iter().any(|s| k.verify(fp.as_bytes(), s)))
        else {
            let names: Vec<&str> = n
                .sigs
                .iter()
                .map(|s| s.split_once(':').map(|(n, _)| n).unwrap_or(s))
                .collect();
            return Some((
                format!(
                    "{key} has no valid signature from {source} (it is signed by: {})",
                    if names.is_empty() {
                        "nobody".into()
                    } else {
                        names.join(", ")
                    }
                ),
                format!(
                    "trust the key that signs the cache ({}), or add a trusted key's signature \
                     with `nix-binary-cache resign`",
                    self.option("trust.publicKeys", "--public-key")
                ),
            ));
        };
        signers.push(k.name.clone());
        match anon.head_object(b, &n.url).await {
            Ok(Some(meta)) if n.file_size.is_none_or(|s| s == meta.size) => None,
            Ok(Some(meta)) => Some((
                format!(
                    "{key}: its NAR {} has {} bytes, FileSize says {}",
                    n.url,
                    meta.size,
                    n.file_size.unwrap_or_default()
                ),
                "delete the narinfo and push the path again".into(),
            )),
            Ok(None) => Some((
                format!(
                    "{key}: its NAR {} is missing, so clients fail to fetch the path",
                    n.url
                ),
                "delete the narinfo and push the path again".into(),
            )),
            Err(e) => Some((
                format!("{key}: its NAR {} is not readable anonymously: {e}", n.url),
                "the bucket policy must allow anonymous s3:GetObject on every object: re-run \
                 provision"
                    .into(),
            )),
        }
    }
}

/// `AccessDenied` or the bare status, for messages.
fn code_or_status(resp: &Response, e: &S3Error) -> String {
    if e.code.is_empty() {
        format!("HTTP {}", resp.status.as_u16())
    } else {
        format!("HTTP {} {}", resp.status.as_u16(), e.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_thresholds() {
        assert_eq!(clock_check(3).status, Status::Ok);
        assert_eq!(clock_check(-299).status, Status::Ok);
        let w = clock_check(-6 * 60);
        assert_eq!(w.status, Status::Warn);
        assert!(w.message.contains("360 s ahead of"), "{}", w.message);
        let f = clock_check(16 * 60);
        assert_eq!(f.status, Status::Fail);
        assert!(f.message.contains("behind") && f.fix.unwrap().contains("NTP"));
    }

    #[test]
    fn cache_info_fields_and_urls() {
        let t = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 41\n";
        assert_eq!(cache_info_field(t, "StoreDir"), Some("/nix/store"));
        assert_eq!(cache_info_field(t, "Priority"), Some("41"));
        assert_eq!(cache_info_field(t, "Other"), None);
        assert!(same_url("http://h/b/", "http://h/b"));
        assert!(!same_url("http://h/b", "http://h/c"));
    }

    fn cfg(conf: &std::path::Path, user: UserInfo) -> DoctorConfig {
        DoctorConfig {
            endpoint: EndpointConfig::new("http://127.0.0.1:1").unwrap(),
            bucket: "nix-cache".into(),
            path_style: true,
            substituter_url: "http://127.0.0.1:1/nix-cache".into(),
            store_dir: "/nix/store".into(),
            writer_credentials_file: None,
            signing_key_file: None,
            public_keys: vec![SecretKey::generate("c-1").unwrap().public()],
            nix_conf: conf.to_path_buf(),
            user,
            from_manifest: false,
        }
    }

    fn conf_checks(text: &str, user: UserInfo) -> Vec<Check> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("nix.conf");
        let mut c = cfg(&p, user);
        let text = text.replace("KEY", &c.public_keys[0].to_string());
        std::fs::write(&p, text).unwrap();
        c.nix_conf = p;
        let mut doctor = Doctor::new(&c);
        doctor.nix_conf_checks();
        doctor.checks
    }

    #[test]
    fn nix_conf_as_the_daemon_sees_it() {
        let alice = UserInfo {
            uid: 1000,
            name: "alice".into(),
            groups: vec!["users".into()],
        };
        let s = |checks: &[Check]| checks.iter().map(|c| c.status).collect::<Vec<_>>();
        use Status::*;
        // Listed with extra- forms: every user substitutes.
        let c = conf_checks(
            "substituters = https://cache.nixos.org/\nextra-substituters = http://127.0.0.1:1/nix-cache/\n\
             extra-trusted-public-keys = KEY\n",
            alice.clone(),
        );
        assert_eq!(s(&c), [Ok, Ok, Ok]);
        // Replaced by a later `substituters =`: gone; the fix says how.
        let c = conf_checks(
            "extra-substituters = http://127.0.0.1:1/nix-cache\nsubstituters = https://cache.nixos.org/\n",
            alice.clone(),
        );
        assert_eq!(s(&c), [Fail, Fail, Fail]);
        assert!(c[0].fix.as_ref().unwrap().contains("configure --nix-conf"));
        assert!(c[1].message.contains("c-1:"), "{}", c[1].message);
        assert!(c[2].message.contains("alice"), "{}", c[2].message);
        // trusted-substituters lets an untrusted user opt in.
        let c = conf_checks(
            "trusted-substituters = http://127.0.0.1:1/nix-cache\ntrusted-public-keys = KEY\n",
            alice.clone(),
        );
        assert_eq!(s(&c), [Fail, Ok, Ok]);
        // A trusted user can add it alone: a warning.
        let c = conf_checks("trusted-users = root @users\n", alice);
        assert_eq!(c[2].status, Warn);
    }
}
