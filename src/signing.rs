//! Nix signing keys and narinfo signatures (Ed25519, via ed25519-dalek).
//!
//! The formats are Nix's own, so a key made here works with `nix store sign`
//! and a key made by `nix key generate-secret` works here:
//!
//! - secret key: `name:base64(seed32 ‖ public32)` (libsodium's 64-byte
//!   secret key layout);
//! - public key: `name:base64(public32)`;
//! - signature (a narinfo `Sig:` line): `name:base64(signature64)`, made over
//!   the path's [`fingerprint`].
//!
//! Verification looks the key up by *name*, as Nix does: a signature whose
//! key name is not trusted does not verify, whatever its bytes. The secret
//! half never reaches `Debug`, `Display` or an error message.

use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::error::{Error, Result};
use crate::fsutil::{self, Change};

/// An Ed25519 secret key with its Nix key name. `Debug` shows the name and
/// the public half only.
#[derive(Clone)]
pub struct SecretKey {
    /// The key name (e.g. `cache.example.org-1`); it prefixes every signature.
    pub name: String,
    key: SigningKey,
}

/// An Ed25519 public key with its Nix key name.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The key name; signatures are matched to keys by it.
    pub name: String,
    /// The 32 bytes of the Ed25519 public key.
    pub bytes: [u8; 32],
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("name", &self.name)
            .field("public", &self.public().to_string())
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl fmt::Display for PublicKey {
    /// `name:base64(public32)`, the form `trusted-public-keys` takes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, BASE64.encode(self.bytes))
    }
}

/// Checks a key name: not empty, no `:` (it separates name and key) and no
/// whitespace (nix.conf lists are whitespace-separated).
pub fn validate_key_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("the key name must not be empty; use e.g. `cache.example.org-1`".into());
    }
    if name.contains(':') {
        return Err(format!(
            "the key name `{name}` must not contain `:` (it separates the name from the key)"
        ));
    }
    if name.chars().any(char::is_whitespace) {
        return Err(format!(
            "the key name `{name}` must not contain whitespace (nix.conf lists are \
             whitespace-separated)"
        ));
    }
    Ok(())
}

/// The trailing generation number of a key name (`cache.example.org-1` → 1),
/// which key rotation increments; `None` when the name has no `-N` suffix.
pub fn key_generation(name: &str) -> Option<u64> {
    let (_, n) = name.rsplit_once('-')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// The name of the next key in a rotation (`cache.example.org-1` →
/// `cache.example.org-2`); `None` when the name has no `-N` suffix.
pub fn next_key_name(name: &str) -> Option<String> {
    let n = key_generation(name)?;
    let (base, _) = name.rsplit_once('-')?;
    Some(format!("{base}-{}", n.checked_add(1)?))
}

/// A warning when `name` does not end in `-N` (rotation needs the number).
pub fn key_name_warning(name: &str) -> Option<String> {
    key_generation(name).is_none().then(|| {
        format!(
            "warning: the key name `{name}` does not end in `-N` (e.g. `{name}-1`); key \
             rotation derives the next name from that number"
        )
    })
}

/// Splits `name:base64` and decodes the base64 half. Messages never quote
/// the data (it may be a secret).
fn split_key(text: &str, what: &str) -> std::result::Result<(String, Vec<u8>), String> {
    let text = text.trim();
    let Some((name, data)) = text.split_once(':') else {
        return Err(format!(
            "is not a Nix {what} (expected `name:base64`, found no `:`)"
        ));
    };
    if name.is_empty() {
        return Err(format!(
            "is not a Nix {what}: the key name before `:` is empty"
        ));
    }
    validate_key_name(name)?;
    let bytes = BASE64.decode(data).map_err(|_| {
        format!("is not a Nix {what}: the part after `:` is not valid base64 (truncated?)")
    })?;
    Ok((name.to_string(), bytes))
}

impl SecretKey {
    /// A new key named `name`, its seed from the operating system's random
    /// source.
    pub fn generate(name: &str) -> Result<SecretKey> {
        validate_key_name(name).map_err(|m| Error::config("key name", m))?;
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed)
            .map_err(|e| Error::Other(format!("the OS random source failed: {e}")))?;
        let key = SigningKey::from_bytes(&seed);
        seed.fill(0);
        Ok(SecretKey {
            name: name.to_string(),
            key,
        })
    }

    /// Parses `name:base64(seed32 ‖ public32)`; surrounding whitespace is
    /// ignored. The embedded public half must match the seed, so a corrupted
    /// file is caught here rather than by every client later.
    pub fn parse(text: &str) -> std::result::Result<SecretKey, String> {
        let (name, bytes) = split_key(text, "secret key")?;
        if bytes.len() != 64 {
            return Err(format!(
                "is not a Nix secret key: the key is {} bytes long, expected 64 \
                 (32-byte seed and 32-byte public key); was it truncated, or is it a public key?",
                bytes.len()
            ));
        }
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&bytes[..32]);
        let key = SigningKey::from_bytes(&seed);
        seed.fill(0);
        if key.verifying_key().as_bytes()[..] != bytes[32..] {
            return Err(
                "is not a valid Nix secret key: its public half does not match its seed \
                 (the file is corrupted)"
                    .into(),
            );
        }
        Ok(SecretKey { name, key })
    }

    /// Reads a secret key file. Every error names the file; a file readable by
    /// group or others gets a warning on stderr.
    pub fn from_file(path: &Path) -> Result<SecretKey> {
        let text = fsutil::read_text(path)?;
        if let Some(w) = fsutil::secret_mode_warning(path) {
            eprintln!("{w}");
        }
        SecretKey::parse(&text).map_err(|m| Error::invalid_file(path, m))
    }

    /// The file form `name:base64(seed32 ‖ public32)`, without a trailing
    /// newline (as `nix key generate-secret` writes it).
    pub fn to_file_string(&self) -> String {
        format!(
            "{}:{}",
            self.name,
            BASE64.encode(self.key.to_keypair_bytes())
        )
    }

    /// The public half, with the same name.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            bytes: self.key.verifying_key().to_bytes(),
        }
    }

    /// Signs `msg` (a [`fingerprint`]), returning the narinfo `Sig:` value
    /// `name:base64(signature64)`.
    pub fn sign(&self, msg: &[u8]) -> String {
        let sig: Signature = self.key.sign(msg);
        format!("{}:{}", self.name, BASE64.encode(sig.to_bytes()))
    }
}

impl PublicKey {
    /// Parses `name:base64(public32)`.
    pub fn parse(text: &str) -> std::result::Result<PublicKey, String> {
        let (name, bytes) = split_key(text, "public key")?;
        let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            format!(
                "is not a Nix public key: the key is {} bytes long, expected 32",
                bytes.len()
            )
        })?;
        VerifyingKey::from_bytes(&bytes)
            .map_err(|_| "is not a valid Ed25519 public key".to_string())?;
        Ok(PublicKey { name, bytes })
    }

    /// True when `sig` (`name:base64(signature64)`) is this key's signature
    /// of `msg`. A signature carrying another key name never verifies, as in
    /// Nix, which looks keys up by name.
    pub fn verify(&self, msg: &[u8], sig: &str) -> bool {
        let Some((name, data)) = sig.trim().split_once(':') else {
            return false;
        };
        if name != self.name {
            return false;
        }
        let Ok(sig_bytes) = BASE64.decode(data) else {
            return false;
        };
        let Ok(sig_bytes) = <[u8; 64]>::try_from(sig_bytes.as_slice()) else {
            return false;
        };
        let Ok(key) = VerifyingKey::from_bytes(&self.bytes) else {
            return false;
        };
        key.verify_strict(msg, &Signature::from_bytes(&sig_bytes))
            .is_ok()
    }
}

/// Makes sure `path` holds a secret key named `name`: generates one when the
/// file is missing (atomically, mode 0600, its directory created 0700), and
/// otherwise reads the existing key, which is never overwritten. An existing
/// file that is not a valid key, or holds a key with another name, is an
/// error that names the file.
pub fn ensure_secret_key_file(path: &Path, name: &str) -> Result<(SecretKey, Change)> {
    validate_key_name(name).map_err(|m| Error::config("key name", m))?;
    if let Some(key) = read_existing_key(path, name)? {
        return Ok((key, Change::Unchanged));
    }
    fsutil::create_dir_all_mode(fsutil::parent_dir(path), fsutil::SECRET_DIR_MODE)?;
    let key = SecretKey::generate(name)?;
    match fsutil::write_new_atomic(path, key.to_file_string().as_bytes(), fsutil::SECRET_MODE) {
        Ok(()) => Ok((key, Change::Created)),
        // Another process created it between our look and our write: theirs wins.
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
            match read_existing_key(path, name)? {
                Some(key) => Ok((key, Change::Unchanged)),
                None => Err(Error::invalid_file(
                    path,
                    "appeared and vanished while it was created",
                )),
            }
        }
        Err(e) => Err(e),
    }
}

/// The key at `path` if the file exists; an error if it exists but is not a
/// key named `name`.
fn read_existing_key(path: &Path, name: &str) -> Result<Option<SecretKey>> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("inspect", path, e)),
        Ok(_) => {}
    }
    let key = SecretKey::from_file(path).map_err(|e| match e {
        Error::InvalidFile { path, message } => Error::InvalidFile {
            path,
            message: format!(
                "{message}; it is kept as it is (a key is never overwritten): move it away \
                 to generate a new one"
            ),
        },
        e => e,
    })?;
    if key.name != name {
        return Err(Error::invalid_file(
            path,
            format!(
                "holds the key `{}`, not `{name}`; a key is never overwritten: use the name \
                 `{}`, or another file for the new key",
                key.name, key.name
            ),
        ));
    }
    Ok(Some(key))
}

/// The string Nix signs for a store path (`ValidPathInfo::fingerprint`):
/// `1;<path>;<narHash>;<narSize>;<references sorted, joined by ",">`.
///
/// `nar_hash` must already be in Nix's `sha256:<nix32>` form, the form of a
/// narinfo's `NarHash:` line. Nix 2.8's `nix path-info --json` prints it as
/// SRI (`sha256-<base64>`): convert it to Nix32 first. `references` are full
/// store paths. Nix refuses a fingerprint for `nar_size == 0`; callers check
/// sizes when they read path metadata.
pub fn fingerprint(
    store_path: &str,
    nar_hash: &str,
    nar_size: u64,
    references: &[String],
) -> String {
    let mut refs: Vec<&str> = references.iter().map(String::as_str).collect();
    refs.sort_unstable();
    refs.dedup();
    format!("1;{store_path};{nar_hash};{nar_size};{}", refs.join(","))
}

/// True when one of `sigs` verifies `fingerprint` under a key of `trusted`.
/// As in Nix, each signature is checked against the first trusted key with
/// its name.
pub fn verify_any(fingerprint: &str, sigs: &[String], trusted: &[PublicKey]) -> bool {
    sigs.iter().any(|sig| {
        let name = sig.split_once(':').map(|(n, _)| n).unwrap_or_default();
        trusted
            .iter()
            .find(|k| k.name == name)
            .is_some_and(|k| k.verify(fingerprint.as_bytes(), sig))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_public_half_check() {
        let k = SecretKey::generate("test-1").unwrap();
        let text = k.to_file_string();
        let back = SecretKey::parse(&format!("{text}\n")).unwrap();
        assert_eq!(back.public(), k.public());
        assert_eq!(back.to_file_string(), text);

        // Flip a bit of the public half: the mismatch is caught.
        let mut raw = BASE64.decode(text.split_once(':').unwrap().1).unwrap();
        raw[40] ^= 1;
        let bad = format!("test-1:{}", BASE64.encode(&raw));
        let err = SecretKey::parse(&bad).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
    }

    #[test]
    fn parse_errors_name_the_problem_and_not_the_secret() {
        let k = SecretKey::generate("test-1").unwrap();
        let text = k.to_file_string();
        let b64 = text.split_once(':').unwrap().1;
        let cases = [
            (b64.to_string(), "no `:`"),
            (format!("test-1:{}", &b64[..41]), "base64"),
            (format!("test-1:{}", &b64[..40]), "30 bytes"),
            (format!("test-1:{}!", &b64[..43]), "base64"),
            (format!("test-1:{}", BASE64.encode([7u8; 48])), "48 bytes"),
            (format!(":{b64}"), "empty"),
            (format!("te st:{b64}"), "whitespace"),
        ];
        for (input, want) in cases {
            let err = SecretKey::parse(&input).unwrap_err();
            assert!(err.contains(want), "{input}: {err}");
            assert!(!err.contains(&b64[..20]), "secret leaked: {err}");
        }
        // A public key is not a secret key.
        let err = SecretKey::parse(&k.public().to_string()).unwrap_err();
        assert!(err.contains("32 bytes"), "{err}");
    }

    #[test]
    fn debug_hides_the_secret() {
        let k = SecretKey::generate("test-1").unwrap();
        let secret_b64 = k.to_file_string().split_once(':').unwrap().1.to_string();
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(&secret_b64[..20]), "{dbg}");
        assert!(dbg.contains("test-1"));
    }

    #[test]
    fn sign_and_verify_by_name() {
        let k = SecretKey::generate("cache-1").unwrap();
        let fp = fingerprint("/nix/store/x-a", "sha256:0abc", 8, &[]);
        let sig = k.sign(fp.as_bytes());
        assert!(sig.starts_with("cache-1:"));
        assert_eq!(sig.len(), "cache-1:".len() + 88);
        let pk = k.public();
        assert!(pk.verify(fp.as_bytes(), &sig));
        assert!(!pk.verify(b"other", &sig));
        // Same bytes, other name: not trusted.
        let renamed = PublicKey {
            name: "cache-2".into(),
            ..pk.clone()
        };
        assert!(!renamed.verify(fp.as_bytes(), &sig));
        let other = SecretKey::generate("cache-1").unwrap().public();
        assert!(!verify_any(
            &fp,
            std::slice::from_ref(&sig),
            &[renamed.clone(), other.clone()]
        ));
        assert!(verify_any(
            &fp,
            &["junk".into(), sig.clone()],
            &[renamed, pk.clone()]
        ));
        assert!(!verify_any(&fp, &[], &[pk]));
    }

    #[test]
    fn public_key_parse_and_display() {
        let text = "test-cache-1:2txHk7Z/i+G9GrFhTMcS2HGOQD+VFytZl0S+BZq6fGE=";
        let pk = PublicKey::parse(text).unwrap();
        assert_eq!(pk.name, "test-cache-1");
        assert_eq!(pk.to_string(), text);
        assert!(PublicKey::parse("test-cache-1:AAAA").is_err());
        assert!(PublicKey::parse("no-colon").is_err());
    }

    #[test]
    fn fingerprint_sorts_references() {
        let fp = fingerprint(
            "/nix/store/b-x",
            "sha256:1z6l",
            216,
            &["/nix/store/z-y".into(), "/nix/store/a-x".into()],
        );
        assert_eq!(
            fp,
            "1;/nix/store/b-x;sha256:1z6l;216;/nix/store/a-x,/nix/store/z-y"
        );
        assert!(fingerprint("/nix/store/b-x", "sha256:1", 1, &[]).ends_with(";1;"));
    }

    #[test]
    fn key_names_and_rotation() {
        assert_eq!(key_generation("cache.example.org-1"), Some(1));
        assert_eq!(key_generation("cache-12"), Some(12));
        assert_eq!(key_generation("cache"), None);
        assert_eq!(key_generation("cache-"), None);
        assert_eq!(key_generation("cache-1a"), None);
        assert_eq!(
            next_key_name("s3.example.org-1").as_deref(),
            Some("s3.example.org-2")
        );
        assert_eq!(next_key_name("plain"), None);
        assert!(key_name_warning("plain").is_some());
        assert!(key_name_warning("plain-3").is_none());
        assert!(validate_key_name("a:b").is_err());
        assert!(validate_key_name("a\tb").is_err());
        assert!(validate_key_name("").is_err());
        assert!(validate_key_name("cache.example.org-1").is_ok());
    }
}
