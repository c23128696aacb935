//! `keys`: the builder's signing key. `generate` makes it once and never
//! replaces it, so it can run at every activation; `public` prints what
//! clients must trust; `rotate` makes the next key (`-N` → `-(N+1)`) next to
//! the old one; `retire` removes a retired key's signatures from the cache.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::signing::{self, SecretKey};

/// Key subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create a signing key if it is missing; print its public key.
    ///
    /// An existing valid key is kept ("unchanged"); an existing file that is
    /// not a valid key is an error and is never overwritten. The public key
    /// is printed as the last line and written to the public key file.
    Generate(GenerateArgs),
    /// Print the public key of a secret key file (`name:base64`).
    Public(PublicArgs),
    /// Create the next signing key (`name-N` → `name-(N+1)`), keeping the old one.
    ///
    /// The new key is written to a new file (0600; an existing file is
    /// never overwritten: a second run finds the key made by the first and
    /// says `unchanged`), its public key next to it as `.pub`. Prints the
    /// public keys clients must trust during the overlap (old and new) and
    /// the steps that follow: trust, sign with the new key, `resign`, and
    /// after the overlap `keys retire`.
    Rotate(RotateArgs),
    /// Remove a retired key's signatures from every narinfo in the bucket.
    ///
    /// Run it after the overlap, when every client trusts the new key. A
    /// verification pass reads every narinfo first; if any narinfo would be
    /// left without a valid signature from a still-trusted key (give them
    /// with --trusted-public-key, or trust.publicKeys and
    /// trust.retiredPublicKeys of --manifest), nothing is written and those
    /// narinfos are listed: run `resign` first. Exit 0 when every narinfo
    /// is free of the key, 1 otherwise.
    Retire(crate::commands::resign::RetireArgs),
}

/// Arguments of `keys generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Key name, ending in `-N` for rotation (e.g. `cache.example.org-1`).
    #[arg(long)]
    pub name: String,
    /// Where the secret key lives (created 0600, its directory 0700).
    #[arg(long, value_name = "PATH")]
    pub secret_key_file: PathBuf,
    /// Where to write the public key (0644). Default: the secret key file's
    /// path with `.pub` appended.
    #[arg(long, value_name = "PATH")]
    pub public_key_file: Option<PathBuf>,
}

/// Arguments of `keys public`.
#[derive(Debug, clap::Args)]
pub struct PublicArgs {
    /// The secret key file.
    #[arg(value_name = "PATH")]
    pub secret_key_file: PathBuf,
}

/// Arguments of `keys rotate`.
#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// The current secret key file (kept as it is).
    #[arg(long, value_name = "PATH")]
    pub secret_key_file: PathBuf,
    /// Where to create the new secret key. Default: the current file's path
    /// with the old key name in its file name replaced by the new one
    /// (`…/cache.example.org-1.sec` → `…/cache.example.org-2.sec`, the path
    /// the Nix modules use), or `-N` appended.
    #[arg(long, value_name = "PATH")]
    pub new_secret_key_file: Option<PathBuf>,
}

/// Runs a `keys` subcommand.
pub fn run(c: KeysCommand) -> Result<ExitCode> {
    match c {
        KeysCommand::Generate(a) => generate(a),
        KeysCommand::Public(a) => {
            println!("{}", SecretKey::from_file(&a.secret_key_file)?.public());
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Rotate(a) => rotate(a),
        KeysCommand::Retire(a) => crate::commands::resign::retire(a),
    }
}

/// The default public key file, next to the secret one: `NAME.sec` gives
/// `NAME.pub` (the layout the modules use); any other file name gets `.pub`
/// appended.
fn default_public_key_file(secret_key_file: &Path) -> PathBuf {
    if secret_key_file.extension().is_some_and(|e| e == "sec") {
        return secret_key_file.with_extension("pub");
    }
    let mut p = secret_key_file.as_os_str().to_os_string();
    p.push(".pub");
    PathBuf::from(p)
}

/// The default file of the key after `old` (a key named `old_name`, file
/// `old_file`): the old name in the file name replaced by `new_name`, or
/// `-N` (the new generation) appended.
fn default_new_key_file(old_file: &Path, old_name: &str, new_name: &str) -> PathBuf {
    let file_name = old_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let new_file_name = match file_name.rfind(old_name) {
        Some(i) => format!(
            "{}{new_name}{}",
            &file_name[..i],
            &file_name[i + old_name.len()..]
        ),
        None => {
            let n = signing::key_generation(new_name).unwrap_or_default();
            format!("{file_name}-{n}")
        }
    };
    old_file.with_file_name(new_file_name)
}

/// Writes `public` to `public_file`, by default next to `secret_file`
/// ([`default_public_key_file`]), mode 0644; prints what changed.
fn write_public_key_file(
    secret_file: &Path,
    public_file: Option<PathBuf>,
    public: &str,
) -> Result<()> {
    let pub_file = public_file.unwrap_or_else(|| default_public_key_file(secret_file));
    fsutil::create_dir_all_mode(fsutil::parent_dir(&pub_file), 0o755)?;
    let change = fsutil::write_if_changed(&pub_file, format!("{public}\n").as_bytes(), 0o644)?;
    println!("public key {}: {change}", pub_file.display());
    Ok(())
}

fn rotate(a: RotateArgs) -> Result<ExitCode> {
    let old = SecretKey::from_file(&a.secret_key_file)?;
    let new_name = signing::next_key_name(&old.name).ok_or_else(|| {
        Error::invalid_file(
            &a.secret_key_file,
            format!(
                "holds the key `{}`, whose name does not end in `-N`, so the next name cannot \
                 be derived; create the new key with `keys generate --name {}-2 \
                 --secret-key-file NEW` and follow the same steps",
                old.name, old.name
            ),
        )
    })?;
    let new_file = a
        .new_secret_key_file
        .unwrap_or_else(|| default_new_key_file(&a.secret_key_file, &old.name, &new_name));
    let (new, change) = signing::ensure_secret_key_file(&new_file, &new_name)?;
    let (old_public, new_public) = (old.public().to_string(), new.public().to_string());
    println!(
        "old key {}: {} (kept; it stays trusted until retired)",
        old.name,
        a.secret_key_file.display()
    );
    println!("new key {new_name}: {} {change}", new_file.display());
    write_public_key_file(&new_file, None, &new_public)?;
    println!(
        "\nTrust both public keys during the overlap:\n  {old_public}\n  {new_public}\n\n\
         Next steps:\n\
         1. On every machine that uses the cache, add `{new_public}` to trust.publicKeys and \
         move `{old_public}` to trust.retiredPublicKeys (without the modules: \
         trusted-public-keys), then switch.\n\
         2. Sign new pushes with the new key: push.keyName = \"{new_name}\" and \
         push.signingKeyFile = \"{nf}\" (or push --signing-key-file {nf}).\n\
         3. Add the new key's signature to what the cache already holds: \
         nix-binary-cache resign --signing-key-file {nf} --trusted-public-key {old_public} \
         --endpoint … --bucket … --writer-credentials-file … (or --manifest).\n\
         4. When every client trusts the new key: nix-binary-cache keys retire {old_name} \
         --trusted-public-key {new_public} … (or --manifest), then remove the old key from \
         trust.retiredPublicKeys and delete {of}.",
        nf = new_file.display(),
        old_name = old.name,
        of = a.secret_key_file.display(),
    );
    Ok(ExitCode::SUCCESS)
}

fn generate(a: GenerateArgs) -> Result<ExitCode> {
    signing::validate_key_name(&a.name).map_err(|m| Error::config("--name", m))?;
    if let Some(w) = signing::key_name_warning(&a.name) {
        eprintln!("{w}");
    }
    let (key, change) = signing::ensure_secret_key_file(&a.secret_key_file, &a.name)?;
    println!("secret key {}: {change}", a.secret_key_file.display());
    let public = key.public().to_string();
    write_public_key_file(&a.secret_key_file, a.public_key_file, &public)?;
    println!("{public}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_file_sits_next_to_the_secret() {
        let f = default_public_key_file;
        assert_eq!(f(Path::new("/k/c-1.sec")), Path::new("/k/c-1.pub"));
        assert_eq!(
            f(Path::new("/k/signing-key")),
            Path::new("/k/signing-key.pub")
        );
    }

    #[test]
    fn new_key_file_follows_the_old_one() {
        let f = |old: &str| {
            default_new_key_file(Path::new(old), "cache.example.org-1", "cache.example.org-2")
        };
        assert_eq!(
            f("/var/lib/k/cache.example.org-1.sec"),
            Path::new("/var/lib/k/cache.example.org-2.sec")
        );
        assert_eq!(
            f("/var/lib/k/signing-key"),
            Path::new("/var/lib/k/signing-key-2")
        );
        assert_eq!(f("key"), Path::new("key-2"));
    }
}
