//! `resign` and `keys retire`: add a new key's signature to every narinfo
//! of the bucket, and remove a retired key's. The engine is
//! [`crate::resign`]; this file resolves flags and manifest and prints.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use crate::commands::cache_args::{CacheArgs, CacheLocation, required};
use crate::credentials::Credentials;
use crate::error::{Error, Result};
use crate::push::Cache;
use crate::resign::{self, ResignPlan, RetirePlan, Step, Tally};
use crate::signing::{PublicKey, SecretKey};

/// Flags of the commands that rewrite narinfos as the writer.
#[derive(Debug, Clone, clap::Args)]
pub struct RewriteArgs {
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Env file with the writer's AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
    /// (it lists, reads and writes narinfos; it never deletes).
    #[arg(long, value_name = "PATH")]
    pub writer_credentials_file: Option<PathBuf>,
    /// A public key (`name:base64`) whose signatures are trusted;
    /// repeatable. Default: trust.publicKeys and trust.retiredPublicKeys of
    /// the manifest.
    #[arg(long = "trusted-public-key", value_name = "KEY")]
    pub trusted_public_keys: Vec<String>,
    /// Narinfos processed at once.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub jobs: usize,
    /// Read everything and report what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `resign` (its help text is on the command in `cli.rs`).
#[derive(Debug, clap::Args)]
pub struct ResignArgs {
    #[command(flatten)]
    pub target: RewriteArgs,
    /// The secret key whose signature is added. Default: push.signingKeyFile
    /// of the manifest.
    #[arg(long, value_name = "PATH")]
    pub signing_key_file: Option<PathBuf>,
}

/// Arguments of `keys retire`.
#[derive(Debug, clap::Args)]
pub struct RetireArgs {
    /// Name of the retired key (e.g. `cache.example.org-1`).
    #[arg(value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub target: RewriteArgs,
}

/// The bucket as the writer, and the trusted keys.
struct Resolved {
    location: CacheLocation,
    cache: Cache,
    trusted: Vec<PublicKey>,
}

impl RewriteArgs {
    fn resolve(&self) -> Result<Resolved> {
        if self.jobs == 0 {
            return Err(Error::config("--jobs", "must be at least 1"));
        }
        let location = self.cache.resolve()?;
        let creds_file = required(
            location.writer_credentials_file(self.writer_credentials_file.clone()),
            "--writer-credentials-file",
            "push.writerCredentialsFile",
        )?;
        let creds = Credentials::from_env_file(&creds_file)?;
        let trusted = location.trusted_keys(&self.trusted_public_keys, "--trusted-public-key")?;
        let cache = Cache::new(location.client(Some(creds))?, location.bucket.clone());
        Ok(Resolved {
            location,
            cache,
            trusted,
        })
    }
}

/// "3 signed, 2 already signed" from the counts, in `order`, then any other.
fn summary(counts: &std::collections::BTreeMap<String, u64>, order: &[&str]) -> String {
    let mut parts: Vec<String> = order
        .iter()
        .filter_map(|k| counts.get(*k).map(|n| format!("{n} {k}")))
        .collect();
    parts.extend(
        counts
            .iter()
            .filter(|(k, _)| !order.contains(&k.as_str()))
            .map(|(k, n)| format!("{n} skipped ({k})")),
    );
    if parts.is_empty() {
        "nothing to do".into()
    } else {
        parts.join(", ")
    }
}

/// Runs `resign`.
pub fn run(args: ResignArgs) -> Result<ExitCode> {
    let r = args.target.resolve()?;
    let key_file = required(
        r.location.signing_key_file(args.signing_key_file.clone()),
        "--signing-key-file",
        "push.signingKeyFile",
    )?;
    let key = SecretKey::from_file(&key_file)?;
    if let Some(k) = r.trusted.iter().find(|k| k.name == key.name)
        && *k != key.public()
    {
        return Err(Error::invalid_file(
            &key_file,
            format!(
                "holds a key named `{}`, but the trusted key of that name is another key \
                 ({k}); clients would reject its signatures: trust `{}` instead",
                key.name,
                key.public()
            ),
        ));
    }
    if r.trusted.iter().all(|k| k.name == key.name) {
        return Err(Error::config(
            "--trusted-public-key",
            "give the public keys whose signatures the narinfos already carry (e.g. the old \
             key `keys rotate` printed), or --manifest with trust.publicKeys: resign adds a \
             signature only where a trusted one verifies",
        ));
    }
    let dry_run = args.target.dry_run;
    let tally = Tally::new(if dry_run {
        "resign (dry run)"
    } else {
        "resign"
    });
    let signed = if dry_run { "would sign" } else { "signed" };
    let conditional = AtomicBool::new(true);
    crate::cli::block_on(resign::for_each_narinfo(
        &r.cache,
        args.target.jobs,
        |object_key| {
            let (r, key, tally, conditional) = (&r, &key, &tally, &conditional);
            async move {
                let outcome = resign::update(&r.cache, &object_key, dry_run, conditional, |b| {
                    Ok(
                        match resign::plan_resign(&object_key, b, key, &r.trusted)? {
                            ResignPlan::AlreadySigned => Step {
                                write: None,
                                outcome: Ok("already signed"),
                            },
                            ResignPlan::Sign(text) => Step {
                                write: Some(text),
                                outcome: Ok(signed),
                            },
                            ResignPlan::Skip(s) => Step {
                                write: None,
                                outcome: Err(s),
                            },
                        },
                    )
                })
                .await?;
                match outcome {
                    None => {}
                    Some(Ok(what)) => tally.add(what),
                    Some(Err(skip)) => {
                        tally.note(format!("skipped {object_key}: {skip}"));
                        tally.add(skip.kind());
                    }
                }
                Ok(())
            }
        },
    ))?;
    let (counts, total) = tally.finish();
    println!(
        "resign {} with {}: {total} narinfos: {}",
        r.cache.bucket,
        key.name,
        summary(&counts, &[signed, "already signed"])
    );
    let done = tally.get(signed) + tally.get("already signed");
    Ok(crate::cli::exit_status(done == total))
}

/// Runs `keys retire`.
pub fn retire(args: RetireArgs) -> Result<ExitCode> {
    crate::signing::validate_key_name(&args.name).map_err(|m| Error::config("NAME", m))?;
    let r = args.target.resolve()?;
    let name = args.name.as_str();
    if !args.target.trusted_public_keys.is_empty() && r.trusted.iter().any(|k| k.name == name) {
        return Err(Error::config(
            "--trusted-public-key",
            format!("`{name}` is the key being retired: list only the keys that stay trusted"),
        ));
    }
    if let Some(p) = r.location.manifest.as_ref().and_then(|m| m.push.as_ref())
        && p.key_name == name
    {
        return Err(Error::config(
            "NAME",
            format!(
                "`{name}` is push.keyName, the key new pushes are signed with: switch push to \
                 the new key first"
            ),
        ));
    }
    // From the manifest, the retired key may still be listed (in
    // trust.retiredPublicKeys): it does not count as a remaining signer.
    let still_trusted: Vec<PublicKey> = r.trusted.into_iter().filter(|k| k.name != name).collect();
    if still_trusted.is_empty() {
        return Err(Error::config(
            "--trusted-public-key",
            "give the public keys that stay trusted (e.g. the new key), or --manifest with \
             trust.publicKeys: a narinfo only loses the retired key's signature when one of \
             theirs verifies",
        ));
    }
    let jobs = args.target.jobs;
    let cache = &r.cache;
    let conditional = AtomicBool::new(true);

    // Pass 1: read everything, write nothing.
    let check = retire_pass(cache, jobs, name, &still_trusted, &conditional, false)?;
    let (counts, total) = check.finish();
    let order = ["would remove", "without the key", "blocked"];
    let blocked = check.get("blocked");
    if blocked > 0 {
        println!(
            "keys retire {name}: {total} narinfos: {}",
            summary(&counts, &order)
        );
        eprintln!(
            "error: refusing to retire `{name}`: {blocked} narinfos (listed above) would be \
             left without a valid signature from a still-trusted key ({}); nothing was \
             written. Run `nix-binary-cache resign` with the new key first.",
            still_trusted
                .iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(crate::cli::exit_status(false));
    }
    if args.target.dry_run {
        println!(
            "keys retire {name} (dry run): {total} narinfos: {}",
            summary(&counts, &order)
        );
        return Ok(exit_for(total, &counts, &order));
    }

    // Pass 2: each narinfo read and decided again, then rewritten.
    let write = retire_pass(cache, jobs, name, &still_trusted, &conditional, true)?;
    let (counts, total) = write.finish();
    let order = ["removed", "without the key", "blocked"];
    println!(
        "keys retire {name}: {total} narinfos: {}",
        summary(&counts, &order)
    );
    Ok(exit_for(total, &counts, &order))
}

/// One pass of `keys retire` over the bucket: each narinfo read, decided,
/// and (with `write`) rewritten; the tally counts the outcomes.
fn retire_pass(
    cache: &Cache,
    jobs: usize,
    name: &str,
    still_trusted: &[PublicKey],
    conditional: &AtomicBool,
    write: bool,
) -> Result<Tally> {
    let tally = Tally::new(if write { "retire" } else { "retire: checking" });
    let removed = if write { "removed" } else { "would remove" };
    crate::cli::block_on(resign::for_each_narinfo(cache, jobs, |object_key| {
        let tally = &tally;
        async move {
            let outcome = resign::update(cache, &object_key, !write, conditional, |b| {
                let plan = resign::plan_retire(&object_key, b, name, still_trusted)?;
                Ok(Step {
                    write: match &plan {
                        RetirePlan::Remove(text) => Some(text.clone()),
                        _ => None,
                    },
                    outcome: plan,
                })
            })
            .await?;
            count_retire(tally, &object_key, name, outcome, removed);
            Ok(())
        }
    }))?;
    Ok(tally)
}

/// 0 when every narinfo was handled (removed or without the key), else 1.
fn exit_for(
    total: u64,
    counts: &std::collections::BTreeMap<String, u64>,
    order: &[&str],
) -> ExitCode {
    let handled: u64 = order[..2].iter().filter_map(|k| counts.get(*k)).sum();
    crate::cli::exit_status(handled == total)
}

fn count_retire(
    tally: &Tally,
    object_key: &str,
    name: &str,
    outcome: Option<RetirePlan>,
    removed: &str,
) {
    match outcome {
        None => {}
        Some(RetirePlan::Absent) => tally.add("without the key"),
        Some(RetirePlan::Remove(_)) => tally.add(removed),
        Some(RetirePlan::Blocked(rest)) => {
            let rest = if rest.is_empty() {
                "no other signature".to_string()
            } else {
                format!(
                    "its other signatures ({}) are not from a trusted key",
                    rest.join(", ")
                )
            };
            tally.note(format!(
                "blocked {object_key}: signed by `{name}` and {rest}; run resign first"
            ));
            tally.add("blocked");
        }
        Some(RetirePlan::Skip(skip)) => {
            tally.note(format!("skipped {object_key}: {skip}"));
            tally.add(skip.kind());
        }
    }
}
