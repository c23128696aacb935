//! Signatures of the narinfos already in a cache: adding a new key's
//! (`resign`) and removing a retired key's (`keys retire`), so that a key
//! can be rotated without breaking any client.
//!
//! What keeps this safe:
//!
//! - **Nothing is vouched for that was not verified.** A narinfo is signed
//!   only when it already carries a valid signature from a trusted key and
//!   no signature by a trusted key name fails to verify; one that does not
//!   parse, or whose object key is not its store path's hash, is never
//!   written. Those are reported with what to do.
//! - **A retired key never leaves a narinfo unsigned.** `retire` first
//!   reads every narinfo (a verification pass that writes nothing) and
//!   refuses to start when any would be left without a valid signature from
//!   a still-trusted key; the write pass checks each narinfo again.
//! - **One PUT per narinfo, with only its `Sig:` lines changed**
//!   ([`rewrite_sigs`]: every other byte is kept), checked by parsing the
//!   result. The object is replaced whole, so an interrupted run (even
//!   `kill -9`) leaves each narinfo either as it was or re-signed. The PUT
//!   carries `If-Match` with the ETag read, so a concurrent push is never
//!   overwritten with older content: a changed narinfo is read again.
//! - **Idempotent and resumable.** A narinfo that already has a valid
//!   signature of the key is not rewritten; a second run writes nothing and
//!   an interrupted run is resumed by running it again.
//! - **Bounded memory.** The bucket is listed page by page (the next page
//!   is fetched while the current one is processed), `jobs` narinfos at a
//!   time; NARs are never read or re-uploaded.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::{Error, Result};
use crate::narinfo::{NarInfo, rewrite_sigs};
use crate::push::{Cache, NARINFO_CONTENT_TYPE};
use crate::s3::is_unsupported;
use crate::signing::{PublicKey, SecretKey};

/// Keys per listing page.
const PAGE: u32 = 1000;

/// Why a narinfo is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// It does not parse (the message says where).
    Unreadable(String),
    /// Its object key is not `<hash of its StorePath>.narinfo`.
    KeyMismatch(String),
    /// A signature by a trusted key name does not verify.
    BadSignature(String),
    /// No signature from a trusted key verifies; the names it is signed by.
    Untrusted(Vec<String>),
}

impl Skip {
    /// A short word for the summary.
    pub fn kind(&self) -> &'static str {
        match self {
            Skip::Unreadable(_) => "unreadable",
            Skip::KeyMismatch(_) => "misplaced",
            Skip::BadSignature(_) => "bad signature",
            Skip::Untrusted(_) => "no trusted signature",
        }
    }
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::Unreadable(m) => write!(
                f,
                "does not parse ({m}); Nix cannot use it either: delete it and push the path again"
            ),
            Skip::KeyMismatch(path) => write!(
                f,
                "holds the narinfo of {path}, which belongs under another name; delete it"
            ),
            Skip::BadSignature(name) => write!(
                f,
                "its signature by `{name}` does not verify: it was changed after signing, or \
                 signed by another key of that name; delete it and push the path again"
            ),
            Skip::Untrusted(names) if names.is_empty() => write!(
                f,
                "has no signature; push the path again, or sign it with `nix store sign` and \
                 push"
            ),
            Skip::Untrusted(names) => write!(
                f,
                "is signed only by {}, none of them a trusted key; give the key that signed it \
                 with --trusted-public-key if it is yours",
                names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// What the signatures of a narinfo say, checked against some keys (the
/// first key of each name counts, as in Nix).
#[derive(Debug, Default)]
struct SigCheck {
    /// Names whose signature verifies.
    valid: Vec<String>,
    /// Names of a known key whose signature does not verify.
    invalid: Vec<String>,
    /// Names no given key has.
    unknown: Vec<String>,
}

fn check_sigs(n: &NarInfo, sigs: &[String], keys: &[PublicKey]) -> SigCheck {
    let fingerprint = n.fingerprint();
    let mut c = SigCheck::default();
    for sig in sigs {
        let name = sig.split_once(':').map(|(n, _)| n).unwrap_or_default();
        match keys.iter().find(|k| k.name == name) {
            Some(k) if k.verify(fingerprint.as_bytes(), sig) => c.valid.push(name.into()),
            Some(_) => c.invalid.push(name.into()),
            None => c.unknown.push(name.into()),
        }
    }
    c
}

/// Parses a narinfo read at `object_key` and checks that it belongs there.
fn read(object_key: &str, bytes: &[u8]) -> std::result::Result<(NarInfo, String), Skip> {
    let text =
        std::str::from_utf8(bytes).map_err(|e| Skip::Unreadable(format!("not UTF-8 text: {e}")))?;
    let n = NarInfo::parse(text).map_err(|e| Skip::Unreadable(e.0))?;
    if format!("{}.narinfo", n.hash_part()) != object_key {
        return Err(Skip::KeyMismatch(n.store_path));
    }
    Ok((n, text.to_string()))
}

/// The rewritten text, checked: it parses, differs from `old` only in its
/// signatures, and carries exactly `want_sigs`.
fn checked_rewrite(old: &NarInfo, text: String, want_sigs: &[String]) -> Result<String> {
    match NarInfo::parse(&text) {
        Ok(new) if new.same_except_sigs(old) && new.sigs == want_sigs => Ok(text),
        _ => Err(Error::Other(format!(
            "re-signing the narinfo of {} produced an unexpected result; nothing was written \
             (please report this)",
            old.store_path
        ))),
    }
}

/// What `resign` does with one narinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResignPlan {
    /// It already has a valid signature of the key.
    AlreadySigned,
    /// Write this text: the old one plus the key's signature.
    Sign(String),
    /// Leave it alone.
    Skip(Skip),
}

/// Decides what `resign` does with the narinfo `bytes` read at
/// `object_key`: sign with `key` when a signature of `trusted` verifies and
/// none by a trusted name (or `key`'s name) fails.
pub fn plan_resign(
    object_key: &str,
    bytes: &[u8],
    key: &SecretKey,
    trusted: &[PublicKey],
) -> Result<ResignPlan> {
    let (n, text) = match read(object_key, bytes) {
        Ok(r) => r,
        Err(skip) => return Ok(ResignPlan::Skip(skip)),
    };
    let own = key.public();
    let mut keys = vec![own.clone()];
    keys.extend(trusted.iter().filter(|k| k.name != own.name).cloned());
    let c = check_sigs(&n, &n.sigs, &keys);
    if let Some(name) = c.invalid.first() {
        return Ok(ResignPlan::Skip(Skip::BadSignature(name.clone())));
    }
    if c.valid.contains(&own.name) {
        return Ok(ResignPlan::AlreadySigned);
    }
    if c.valid.is_empty() {
        return Ok(ResignPlan::Skip(Skip::Untrusted(c.unknown)));
    }
    let sig = key.sign(n.fingerprint().as_bytes());
    let mut want = n.sigs.clone();
    want.push(sig.clone());
    let text = rewrite_sigs(&text, |_| false, Some(&sig));
    Ok(ResignPlan::Sign(checked_rewrite(&n, text, &want)?))
}

/// What `keys retire` does with one narinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetirePlan {
    /// It has no signature of the retired key.
    Absent,
    /// Write this text: the old one without the retired key's signatures.
    Remove(String),
    /// Removing the signature would leave it without a valid signature from
    /// a still-trusted key; the names of the signatures that would remain.
    Blocked(Vec<String>),
    /// Leave it alone.
    Skip(Skip),
}

/// Decides what `keys retire` does with the narinfo `bytes` read at
/// `object_key`: remove the signatures of `retired` when another signature
/// verifies under `still_trusted` (which must not hold `retired`).
pub fn plan_retire(
    object_key: &str,
    bytes: &[u8],
    retired: &str,
    still_trusted: &[PublicKey],
) -> Result<RetirePlan> {
    let (n, text) = match read(object_key, bytes) {
        Ok(r) => r,
        Err(skip) => return Ok(RetirePlan::Skip(skip)),
    };
    let is_retired = |s: &str| s.split_once(':').is_some_and(|(name, _)| name == retired);
    if !n.sigs.iter().any(|s| is_retired(s)) {
        return Ok(RetirePlan::Absent);
    }
    let rest: Vec<String> = n.sigs.iter().filter(|s| !is_retired(s)).cloned().collect();
    let c = check_sigs(&n, &rest, still_trusted);
    if c.valid.is_empty() {
        let names = rest
            .iter()
            .map(|s| s.split_once(':').map(|(n, _)| n).unwrap_or(s).to_string())
            .collect();
        return Ok(RetirePlan::Blocked(names));
    }
    let text = rewrite_sigs(&text, is_retired, None);
    Ok(RetirePlan::Remove(checked_rewrite(&n, text, &rest)?))
}

/// A decision about one narinfo: the text to write (if any) and what to
/// count once it is written.
pub struct Step<T> {
    /// The new text, `None` when nothing is to be written.
    pub write: Option<String>,
    /// The outcome to report.
    pub outcome: T,
}

/// Calls `f` with the key of every narinfo at the top level of the bucket,
/// `jobs` at a time, page by page (the next page is listed while the
/// current one is processed). Stops at the first error.
pub async fn for_each_narinfo<F, Fut>(cache: &Cache, jobs: usize, f: F) -> Result<()>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let list = |token: Option<String>| async move {
        let (objects, next) = cache
            .client
            .list_top_level_page(&cache.bucket, token.as_deref(), PAGE)
            .await?;
        let keys: Vec<String> = objects
            .into_iter()
            .map(|o| o.key)
            .filter(|k| k.ends_with(".narinfo"))
            .collect();
        Ok::<_, Error>((keys, next))
    };
    let mut page = list(None).await?;
    loop {
        let (keys, next) = page;
        let work = futures::stream::iter(keys)
            .map(&f)
            .buffer_unordered(jobs.max(1))
            .try_collect::<()>();
        match next {
            None => return work.await,
            Some(token) => {
                let (done, listed) = tokio::join!(work, list(Some(token)));
                done?;
                page = listed?;
            }
        }
    }
}

/// Reads the narinfo `key`, decides with `plan` and writes the result with
/// one conditional PUT; a narinfo that changed in between is read and
/// decided again. `None`: it vanished.
pub async fn update<T>(
    cache: &Cache,
    key: &str,
    dry_run: bool,
    conditional: &AtomicBool,
    plan: impl Fn(&[u8]) -> Result<Step<T>>,
) -> Result<Option<T>> {
    for _ in 0..5 {
        let Some((bytes, etag)) = cache
            .client
            .get_object_with_etag(&cache.bucket, key)
            .await?
        else {
            return Ok(None);
        };
        let step = plan(&bytes)?;
        let Some(text) = step.write else {
            return Ok(Some(step.outcome));
        };
        if dry_run {
            return Ok(Some(step.outcome));
        }
        if conditional.load(Ordering::Relaxed) && !etag.is_empty() {
            match cache
                .client
                .put_object_if_match(
                    &cache.bucket,
                    key,
                    text.clone(),
                    NARINFO_CONTENT_TYPE,
                    &etag,
                )
                .await
            {
                Ok(true) => return Ok(Some(step.outcome)),
                Ok(false) => continue, // changed meanwhile: read it again
                Err(e) if is_unsupported(&e) => {
                    if conditional.swap(false, Ordering::Relaxed) {
                        eprintln!(
                            "warning: the store does not support conditional writes (If-Match); \
                             a push running at the same time could have its narinfo rewritten \
                             with the older text"
                        );
                    }
                }
                Err(e) => return Err(e),
            }
        }
        cache
            .client
            .put_object(&cache.bucket, key, text, NARINFO_CONTENT_TYPE)
            .await?;
        return Ok(Some(step.outcome));
    }
    Err(Error::Other(format!(
        "{}/{key} kept changing while it was being rewritten; run again",
        cache.bucket
    )))
}

/// Counts of a run, by outcome, and a progress display on a terminal.
pub struct Tally {
    counts: Mutex<BTreeMap<String, u64>>,
    bar: ProgressBar,
}

impl Tally {
    /// An empty tally; a spinner on stderr when it is a terminal.
    pub fn new(what: &str) -> Tally {
        let bar = if std::io::stderr().is_terminal() {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(&format!(
                    "{{spinner}} {what}: {{pos}} narinfos {{msg}}"
                ))
                .expect("the progress template is valid"),
            );
            b
        } else {
            ProgressBar::hidden()
        };
        Tally {
            counts: Mutex::default(),
            bar,
        }
    }

    /// Counts one narinfo under `outcome`.
    pub fn add(&self, outcome: &str) {
        *self
            .counts
            .lock()
            .expect("the tally lock is not poisoned")
            .entry(outcome.to_string())
            .or_default() += 1;
        self.bar.inc(1);
    }

    /// Prints a line about one narinfo (above the spinner, if any).
    pub fn note(&self, line: String) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    /// How many were counted under `outcome`.
    pub fn get(&self, outcome: &str) -> u64 {
        self.counts
            .lock()
            .expect("the tally lock is not poisoned")
            .get(outcome)
            .copied()
            .unwrap_or(0)
    }

    /// All counts, and the total.
    pub fn finish(&self) -> (BTreeMap<String, u64>, u64) {
        self.bar.finish_and_clear();
        let c = self
            .counts
            .lock()
            .expect("the tally lock is not poisoned")
            .clone();
        let total = c.values().sum();
        (c, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::NixHash;

    fn narinfo(key: &SecretKey) -> (String, String) {
        let mut n = NarInfo {
            store_path: "/nix/store/35h2xr9qqvgrkgfzppsx3d5ykmhm1s8w-refer".into(),
            url: "nar/x.nar.zst".into(),
            compression: Some("zstd".into()),
            file_hash: None,
            file_size: Some(100),
            nar_hash: NixHash::parse("sha256:0964p82ixw0hff3l7b1ypc21cdp1dayj5wcwy9sbf88p4f7y1bqd")
                .unwrap(),
            nar_size: 216,
            references: vec!["35h2xr9qqvgrkgfzppsx3d5ykmhm1s8w-refer".into()],
            deriver: None,
            sigs: vec![],
            ca: None,
            extra: vec![("System".into(), "x86_64-linux".into())],
        };
        n.sign(key);
        (format!("{}.narinfo", n.hash_part()), n.render())
    }

    #[test]
    fn resign_adds_once_and_only_after_verifying() {
        let (k1, k2) = (
            SecretKey::generate("c-1").unwrap(),
            SecretKey::generate("c-2").unwrap(),
        );
        let (key, text) = narinfo(&k1);
        let trusted = [k1.public()];
        let ResignPlan::Sign(signed) = plan_resign(&key, text.as_bytes(), &k2, &trusted).unwrap()
        else {
            panic!("not signed")
        };
        let n = NarInfo::parse(&signed).unwrap();
        assert_eq!(
            signed.replace(&format!("Sig: {}\n", n.sigs[1]), ""),
            text,
            "only a Sig line is added"
        );
        assert!(n.verify(&[k2.public()]) && n.verify(&[k1.public()]));
        assert_eq!(
            plan_resign(&key, signed.as_bytes(), &k2, &trusted).unwrap(),
            ResignPlan::AlreadySigned
        );
        // Not trusted: the old key is not given.
        assert_eq!(
            plan_resign(&key, text.as_bytes(), &k2, &[]).unwrap(),
            ResignPlan::Skip(Skip::Untrusted(vec!["c-1".into()]))
        );
        // Changed after signing: never vouched for.
        let tampered = text.replace("NarSize: 216", "NarSize: 217");
        assert_eq!(
            plan_resign(&key, tampered.as_bytes(), &k2, &trusted).unwrap(),
            ResignPlan::Skip(Skip::BadSignature("c-1".into()))
        );
        // Unparseable, or under the wrong name.
        assert!(matches!(
            plan_resign(&key, b"garbage", &k2, &trusted).unwrap(),
            ResignPlan::Skip(Skip::Unreadable(_))
        ));
        assert!(matches!(
            plan_resign("other.narinfo", text.as_bytes(), &k2, &trusted).unwrap(),
            ResignPlan::Skip(Skip::KeyMismatch(_))
        ));
        // A stale signature under the new key's name (another key of that
        // name signed it): refused as well.
        let impostor = SecretKey::generate("c-2").unwrap();
        let mut n = NarInfo::parse(&text).unwrap();
        n.sign(&impostor);
        assert_eq!(
            plan_resign(&key, n.render().as_bytes(), &k2, &trusted).unwrap(),
            ResignPlan::Skip(Skip::BadSignature("c-2".into()))
        );
    }

    #[test]
    fn retire_removes_only_with_another_trusted_signature() {
        let (k1, k2) = (
            SecretKey::generate("c-1").unwrap(),
            SecretKey::generate("c-2").unwrap(),
        );
        let (key, text) = narinfo(&k1);
        // Only the retired key signs it: blocked.
        assert_eq!(
            plan_retire(&key, text.as_bytes(), "c-1", &[k2.public()]).unwrap(),
            RetirePlan::Blocked(vec![])
        );
        let ResignPlan::Sign(both) =
            plan_resign(&key, text.as_bytes(), &k2, &[k1.public()]).unwrap()
        else {
            panic!()
        };
        let RetirePlan::Remove(only2) =
            plan_retire(&key, both.as_bytes(), "c-1", &[k2.public()]).unwrap()
        else {
            panic!()
        };
        let n = NarInfo::parse(&only2).unwrap();
        assert_eq!(n.sigs.len(), 1);
        assert!(n.verify(&[k2.public()]) && !n.verify(&[k1.public()]));
        assert_eq!(
            plan_retire(&key, only2.as_bytes(), "c-1", &[k2.public()]).unwrap(),
            RetirePlan::Absent
        );
        // The other signature is there but its key is not trusted: blocked.
        assert_eq!(
            plan_retire(&key, both.as_bytes(), "c-1", &[]).unwrap(),
            RetirePlan::Blocked(vec!["c-2".into()])
        );
    }
}
