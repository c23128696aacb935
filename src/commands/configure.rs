//! `configure`: the trust role outside NixOS. Writes the cache's settings
//! into a nix.conf as a managed block and, where Nix itself must talk S3,
//! one profile into an AWS shared credentials file. Both edits keep every
//! foreign line, are idempotent, and can be previewed as a diff.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::aws_config;
use crate::credentials::Credentials;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{self, Change};
use crate::nix_conf::{self, CacheSettings, UserInfo};

/// Arguments of `configure`.
#[derive(Debug, clap::Args)]
pub struct ConfigureArgs {
    /// The nix.conf to edit (e.g. /etc/nix/nix.conf, or ~/.config/nix/nix.conf
    /// for a trusted user). Only the managed block is written.
    #[arg(long, value_name = "PATH", requires = "substituters")]
    pub nix_conf: Option<PathBuf>,
    /// Cache URL to substitute from (repeatable); added with `extra-substituters`.
    #[arg(long = "substituter", value_name = "URL", requires = "nix_conf")]
    pub substituters: Vec<String>,
    /// Public key that signs for the cache, `name:base64` (repeatable).
    #[arg(long = "trusted-public-key", value_name = "KEY", requires = "nix_conf")]
    pub trusted_public_keys: Vec<String>,
    /// Secret key file with which Nix signs what this machine builds
    /// (`extra-secret-key-files`).
    #[arg(long, value_name = "PATH", requires = "nix_conf")]
    pub secret_key_file: Option<PathBuf>,
    /// Seconds before an unreachable cache is given up (0: leave Nix's default).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub connect_timeout: u32,
    /// Seconds Nix remembers that a path was missing from the cache
    /// (Nix's default: 3600). Not written unless given.
    #[arg(long, value_name = "N")]
    pub narinfo_cache_negative_ttl: Option<u32>,
    /// AWS shared credentials file to merge a profile into (for Nix's own
    /// `s3://` access; kept 0600).
    #[arg(long, value_name = "PATH", requires = "writer_credentials_file")]
    pub aws_credentials_file: Option<PathBuf>,
    /// Profile name in the AWS credentials file.
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub aws_profile: String,
    /// Env file with the key pair to put in the profile.
    #[arg(long, value_name = "PATH", requires = "aws_credentials_file")]
    pub writer_credentials_file: Option<PathBuf>,
    /// Print what would change as a unified diff (secrets masked); write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `configure`.
pub fn run(a: ConfigureArgs) -> Result<ExitCode> {
    if a.nix_conf.is_none() && a.aws_credentials_file.is_none() {
        return Err(Error::config(
            "configure",
            "nothing to do: give --nix-conf (with --substituter and --trusted-public-key) \
             and/or --aws-credentials-file with --writer-credentials-file",
        ));
    }
    // Check every input before touching any file.
    let settings = CacheSettings {
        substituters: a.substituters.clone(),
        trusted_public_keys: a.trusted_public_keys.clone(),
        secret_key_files: a.secret_key_file.iter().cloned().collect(),
        connect_timeout: (a.connect_timeout > 0).then_some(a.connect_timeout),
        narinfo_cache_negative_ttl: a.narinfo_cache_negative_ttl,
        fallback: true,
    };
    if a.nix_conf.is_some() {
        settings
            .validate()
            .map_err(|(field, message)| Error::config(field, message))?;
    }
    let aws = match (&a.aws_credentials_file, &a.writer_credentials_file) {
        (Some(file), Some(writer)) => {
            aws_config::validate_profile_name(&a.aws_profile)
                .map_err(|m| Error::config("--aws-profile", m))?;
            Some((file, Credentials::from_env_file(writer)?))
        }
        _ => None,
    };

    if let Some(path) = &a.nix_conf {
        configure_nix_conf(path, &settings, a.dry_run)?;
    }
    if let Some((file, creds)) = aws {
        configure_aws(file, &a.aws_profile, &creds, a.dry_run)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the managed block into `path`; prints what it did and warns when
/// the daemon will ignore the file.
pub fn configure_nix_conf(path: &Path, settings: &CacheSettings, dry_run: bool) -> Result<Change> {
    let target = edit_target(path)?;
    let (old, current_mode) = read_existing(&target)?;
    let new = nix_conf::merge_block(&old, &nix_conf::render_block(settings))
        .map_err(|m| Error::invalid_file(&target, m))?;
    let change = apply(
        &target,
        (&old, current_mode),
        &new,
        current_mode.unwrap_or(0o644),
        0o755,
        dry_run,
        &format!("nix.conf {}", path.display()),
        |t| t.to_string(),
    )?;
    let daemon_conf = nix_conf::daemon_conf_path();
    // Read as the daemon (and `doctor`) reads it: includes followed.
    let (daemon_entries, _) = nix_conf::read_conf_file(&daemon_conf);
    if let Some(w) =
        nix_conf::untrusted_user_warning(path, &daemon_conf, &daemon_entries, &UserInfo::current())
    {
        eprintln!("{w}");
    }
    Ok(change)
}

/// Merges `creds` into `profile` of the credentials file at `path` (0600).
pub fn configure_aws(
    path: &Path,
    profile: &str,
    creds: &Credentials,
    dry_run: bool,
) -> Result<Change> {
    let target = edit_target(path)?;
    let (old, current_mode) = read_existing(&target)?;
    let new = aws_config::merge_profile(&old, profile, creds);
    let secret = &creds.secret_access_key;
    let changed =
        aws_config::read_profile(&old, profile).is_none_or(|c| c.secret_access_key != *secret);
    apply(
        &target,
        (&old, current_mode),
        &new,
        fsutil::SECRET_MODE,
        fsutil::SECRET_DIR_MODE,
        dry_run,
        &format!("aws credentials {} [{profile}]", path.display()),
        |t| aws_config::mask_secrets(t, changed.then_some(secret.as_str())),
    )
}

/// Writes `new` with `mode` over `old`, the text and mode [`read_existing`]
/// found at `target` (or, under `--dry-run`, prints the diff of their
/// `display` forms) and prints one status line for `label`.
#[allow(clippy::too_many_arguments)]
fn apply(
    target: &Path,
    (old, current_mode): (&str, Option<u32>),
    new: &str,
    mode: u32,
    dir_mode: u32,
    dry_run: bool,
    label: &str,
    display: impl Fn(&str) -> String,
) -> Result<Change> {
    if dry_run {
        // The decision `write_if_changed` makes, from what was read already.
        let mode_differs = current_mode.is_some_and(|m| m != mode);
        let change = match current_mode {
            None => Change::Created,
            Some(_) if old != new || mode_differs => Change::Updated,
            Some(_) => Change::Unchanged,
        };
        if old != new {
            let (old_shown, new_shown) = (display(old), display(new));
            let name = target.display().to_string();
            let diff = similar::TextDiff::from_lines(&old_shown, &new_shown);
            print!(
                "{}",
                diff.unified_diff()
                    .context_radius(3)
                    .header(&name, &format!("{name} (new)"))
            );
        }
        if mode_differs {
            println!("mode of {} would become {mode:04o}", target.display());
        }
        match change {
            Change::Unchanged => println!("{label}: unchanged"),
            c => println!("{label}: would be {c}"),
        }
        return Ok(change);
    }
    fsutil::create_dir_all_mode(fsutil::parent_dir(target), dir_mode)?;
    let change = fsutil::write_if_changed(target, new.as_bytes(), mode)?;
    println!("{label}: {change}");
    Ok(change)
}

/// The file to write for `path`: the path itself, or the file a symlink
/// points to (a dotfile manager's link stays a link). Links into the Nix
/// store are refused: home-manager (or NixOS) generates those files.
pub fn edit_target(path: &Path) -> Result<PathBuf> {
    let store_refusal = || {
        Error::invalid_file(
            path,
            "is a link into the Nix store, so home-manager (or NixOS) manages it: use the \
             module's nix.settings (or the nix-binary-cache module's trust options) instead \
             of editing it",
        )
    };
    if fsutil::is_in_nix_store(path) {
        return Err(store_refusal());
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            let resolved = std::fs::canonicalize(path).io_context("resolve the link", path)?;
            if fsutil::is_in_nix_store(&resolved) {
                return Err(store_refusal());
            }
            Ok(resolved)
        }
        Ok(m) if m.is_dir() => Err(Error::invalid_file(path, "is a directory; expected a file")),
        _ => Ok(path.to_path_buf()),
    }
}

/// The text and mode of an existing file, or empty text and no mode when it
/// is missing.
fn read_existing(path: &Path) -> Result<(String, Option<u32>)> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(meta) => Ok((fsutil::read_text(path)?, Some(meta.mode() & 0o7777))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((String::new(), None)),
        Err(e) => Err(Error::io("inspect", path, e)),
    }
}
