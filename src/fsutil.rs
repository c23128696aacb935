//! Files written the safe way: temp file in the same directory, fsync,
//! rename, fsync of the directory. A crash leaves either the old file or the
//! new one, never half of one; secrets are created 0600 from the first byte.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// Mode for files that hold secrets.
pub const SECRET_MODE: u32 = 0o600;
/// Mode for directories that hold secrets.
pub const SECRET_DIR_MODE: u32 = 0o700;

/// Writes `bytes` to `path` atomically with permission bits `mode`.
///
/// The temporary file is created with `mode` already applied, so a secret is
/// never readable by others, not even for a moment.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = write_temp(path, bytes, mode)?;
    let result = fs::rename(&tmp, path).io_context("rename into place", path);
    finish_temp(path, &tmp, result)
}

/// Like [`write_atomic`], but never replaces an existing file: the complete
/// temporary file is hard-linked to `path`, which fails with an
/// `AlreadyExists` I/O error when something is already there, even when
/// another process created it a moment ago. For files that must never be
/// overwritten, such as a generated signing key.
pub fn write_new_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = write_temp(path, bytes, mode)?;
    let result = fs::hard_link(&tmp, path).io_context("create", path);
    let _ = fs::remove_file(&tmp);
    finish_temp(path, &tmp, result)
}

/// Writes `bytes` to a fresh temporary file next to `path`, synced to disk,
/// with exactly `mode`.
fn write_temp(path: &Path, bytes: &[u8], mode: u32) -> Result<std::path::PathBuf> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid_file(path, "is not a file path"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .io_context("create", &tmp)?;
        // The umask may have removed bits we asked for; set them exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .io_context("chmod", &tmp)?;
        f.write_all(bytes).io_context("write", &tmp)?;
        f.sync_all().io_context("fsync", &tmp)
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Removes a failed temporary file or syncs the directory after success.
fn finish_temp(path: &Path, tmp: &Path, result: Result<()>) -> Result<()> {
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    } else if let Ok(d) = File::open(parent_dir(path)) {
        let _ = d.sync_all();
    }
    result
}

/// `text` with `section` appended as a paragraph of its own: after a
/// newline and one blank line, unless `text` is empty. The existing bytes
/// are kept; used to add our block to a user's config file.
pub fn append_section(text: &str, section: &str) -> String {
    let mut out = text.to_string();
    if !out.is_empty() {
        if !out.ends_with('\n') {
            out.push('\n');
        }
        if !out.ends_with("\n\n") {
            out.push('\n');
        }
    }
    out.push_str(section);
    out
}

/// What an idempotent write did; printed as one word per file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The file did not exist.
    Created,
    /// The file existed with other content or mode.
    Updated,
    /// The file already held exactly this; nothing was written.
    Unchanged,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Change::Created => "created",
            Change::Updated => "updated",
            Change::Unchanged => "unchanged",
        })
    }
}

/// Writes `bytes` with `mode` only when the file differs (content or mode),
/// atomically; a second call with the same input touches nothing.
pub fn write_if_changed(path: &Path, bytes: &[u8], mode: u32) -> Result<Change> {
    let change = match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            return Err(Error::invalid_file(path, "is a directory; expected a file"));
        }
        Ok(meta) => {
            if meta.mode() & 0o7777 == mode && fs::read(path).io_context("read", path)? == bytes {
                return Ok(Change::Unchanged);
            }
            Change::Updated
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Change::Created,
        Err(e) => return Err(Error::io("inspect", path, e)),
    };
    write_atomic(path, bytes, mode)?;
    Ok(change)
}

/// Creates `dir` (and missing parents) with `mode` on the directories it
/// creates; existing directories are left as they are.
pub fn create_dir_all_mode(dir: &Path, mode: u32) -> Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all_mode(parent, mode)?;
    }
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {
            fs::set_permissions(dir, fs::Permissions::from_mode(mode)).io_context("chmod", dir)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(Error::io("create directory", dir, e)),
    }
}

/// The directory that holds `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Reads a file that must be a regular file, naming it in every error.
pub fn read_regular(path: &Path) -> Result<Vec<u8>> {
    let meta = fs::metadata(path).io_context("read", path)?;
    if meta.is_dir() {
        return Err(Error::invalid_file(path, "is a directory; expected a file"));
    }
    fs::read(path).io_context("read", path)
}

/// Reads a file that must be a regular file and valid UTF-8.
pub fn read_text(path: &Path) -> Result<String> {
    String::from_utf8(read_regular(path)?)
        .map_err(|_| Error::invalid_file(path, "is not valid UTF-8 text"))
}

/// A warning for a secret file readable by others, if it is; files under
/// systemd's `$CREDENTIALS_DIRECTORY` are managed by systemd and skipped.
pub fn secret_mode_warning(path: &Path) -> Option<String> {
    if let Some(creds) = std::env::var_os("CREDENTIALS_DIRECTORY")
        && path.starts_with(creds)
    {
        return None;
    }
    let mode = fs::metadata(path).ok()?.mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "warning: {} holds a secret but has mode {mode:04o}; run `chmod 600 {}`",
            path.display(),
            path.display()
        )
    })
}

/// True when `path` lies in the Nix store (world-readable: no secrets there).
pub fn is_in_nix_store(path: &Path) -> bool {
    path.starts_with(crate::pathinfo::DEFAULT_STORE_DIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_sets_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        write_atomic(&p, b"one", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        write_atomic(&p, b"two", 0o644).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o644);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn new_atomic_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        write_new_atomic(&p, b"first", 0o600).unwrap();
        let err = write_new_atomic(&p, b"second", 0o600).unwrap_err();
        assert!(
            matches!(&err, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists),
            "{err}"
        );
        assert_eq!(fs::read(&p).unwrap(), b"first");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn write_if_changed_reports_and_skips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        assert_eq!(write_if_changed(&p, b"a", 0o644).unwrap(), Change::Created);
        assert_eq!(
            write_if_changed(&p, b"a", 0o644).unwrap(),
            Change::Unchanged
        );
        assert_eq!(write_if_changed(&p, b"a", 0o600).unwrap(), Change::Updated);
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert_eq!(write_if_changed(&p, b"b", 0o600).unwrap(), Change::Updated);
        assert_eq!(fs::read(&p).unwrap(), b"b");
        assert!(write_if_changed(dir.path(), b"b", 0o600).is_err());
    }

    #[test]
    fn atomic_write_into_missing_dir_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing/secret");
        let err = write_atomic(&p, b"x", 0o600).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn dir_created_with_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b");
        create_dir_all_mode(&p, 0o700).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o700);
        assert_eq!(
            fs::metadata(p.parent().unwrap()).unwrap().mode() & 0o777,
            0o700
        );
    }
}
