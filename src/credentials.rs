//! Access key pairs and the env files that carry them.
//!
//! One format for every backend: `AWS_ACCESS_KEY_ID=...` and
//! `AWS_SECRET_ACCESS_KEY=...` lines (the writer credentials file, the admin
//! credentials file), or `MINIO_ROOT_USER` / `MINIO_ROOT_PASSWORD` as
//! `services.minio` writes them. Values never appear in `Debug` output or in
//! errors.

use std::fmt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::fsutil;

/// An access key id and its secret. `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The access key id (not secret; appears in logs).
    pub access_key_id: String,
    /// The secret access key (never logged).
    pub secret_access_key: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// A key pair from its two parts.
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
        }
    }

    /// Reads an env file, accepting the AWS or the MinIO variable names.
    pub fn from_env_file(path: &Path) -> Result<Self> {
        let text = fsutil::read_text(path)?;
        if let Some(w) = fsutil::secret_mode_warning(path) {
            eprintln!("{w}");
        }
        Self::parse_env(&text).map_err(|m| Error::invalid_file(path, m))
    }

    /// Parses env-file text; the error message names the missing variable.
    pub fn parse_env(text: &str) -> std::result::Result<Self, String> {
        let vars = parse_env_lines(text)?;
        let get = |k: &str| {
            vars.iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let (id, secret) = match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(s)) => (id, s),
            _ => match (get("MINIO_ROOT_USER"), get("MINIO_ROOT_PASSWORD")) {
                (Some(id), Some(s)) => (id, s),
                _ => {
                    return Err("expected AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                                (or MINIO_ROOT_USER and MINIO_ROOT_PASSWORD) lines"
                        .into());
                }
            },
        };
        if id.is_empty() || secret.is_empty() {
            return Err("the access key id and the secret must not be empty".into());
        }
        Ok(Credentials::new(id, secret))
    }

    /// The env-file form written for builders; it reads back as the same
    /// credentials (see [`env_value`]).
    pub fn to_env(&self) -> String {
        format!(
            "AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\n",
            env_value(&self.access_key_id),
            env_value(&self.secret_access_key)
        )
    }

    /// Writes the env file atomically with mode 0600 (directory 0700 if new).
    pub fn write_env_file(&self, path: &Path) -> Result<()> {
        fsutil::create_dir_all_mode(fsutil::parent_dir(path), fsutil::SECRET_DIR_MODE)?;
        fsutil::write_atomic(path, self.to_env().as_bytes(), fsutil::SECRET_MODE)
    }
}

/// A value as an env-file line holds it: bare when [`parse_env_lines`]
/// reads it back unchanged, else in single quotes (surrounding whitespace,
/// or quotes at both ends, would otherwise be stripped).
fn env_value(v: &str) -> std::borrow::Cow<'_, str> {
    if v.trim() == v && unquote(v).is_none() {
        v.into()
    } else {
        format!("'{v}'").into()
    }
}

/// The inside of a value in matching single or double quotes.
fn unquote(v: &str) -> Option<&str> {
    ['"', '\'']
        .into_iter()
        .find_map(|q| v.strip_prefix(q)?.strip_suffix(q))
}

/// Parses `KEY=value` lines: `#` comments, blank lines, an optional `export `
/// prefix and single or double quotes around the value are accepted.
pub fn parse_env_lines(text: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("line {}: expected KEY=value", n + 1));
        };
        let v = v.trim();
        let v = unquote(v).unwrap_or(v);
        out.push((k.trim().to_string(), v.to_string()));
    }
    Ok(out)
}

/// A strong random secret for a generated identity (40 characters from an
/// alphabet every store accepts).
pub fn random_secret() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(40);
    let mut buf = [0u8; 64];
    while out.len() < 40 {
        getrandom::getrandom(&mut buf).expect("the OS random source is available");
        for b in buf {
            // Rejection sampling keeps the distribution uniform.
            if (b as usize) < 256 - 256 % ALPHABET.len() && out.len() < 40 {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_aws_and_minio_forms() {
        let c = Credentials::parse_env(
            "# c\nexport AWS_ACCESS_KEY_ID=\"a\"\nAWS_SECRET_ACCESS_KEY='b'\n",
        )
        .unwrap();
        assert_eq!(c, Credentials::new("a", "b"));
        let c = Credentials::parse_env("MINIO_ROOT_USER=u\nMINIO_ROOT_PASSWORD=p").unwrap();
        assert_eq!(c, Credentials::new("u", "p"));
        assert!(Credentials::parse_env("AWS_ACCESS_KEY_ID=a\n").is_err());
        assert!(Credentials::parse_env("garbage\n").is_err());
    }

    #[test]
    fn awkward_values_read_back_unchanged() {
        for v in ["plain", " lead", "trail ", "'sq'", "\"dq\"", "'", "a'b\"c"] {
            let c = Credentials::new("id", v);
            assert_eq!(Credentials::parse_env(&c.to_env()).unwrap(), c, "{v:?}");
        }
    }

    #[test]
    fn debug_hides_secret() {
        let c = Credentials::new("id", "topsecretvalue");
        assert!(!format!("{c:?}").contains("topsecretvalue"));
    }

    #[test]
    fn random_secrets_differ() {
        let a = random_secret();
        assert_eq!(a.len(), 40);
        assert_ne!(a, random_secret());
    }
}
