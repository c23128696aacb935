//! The Nix Archive (NAR) serializer: the bytes `nix-store --dump` prints,
//! produced natively from the file system and streamed into any
//! [`Write`], so a push never holds a NAR in memory or spawns Nix for it.
//!
//! Format (Nix manual, "Nix Archive"): every token is `str(s)` = u64
//! little-endian length, the bytes, zero padding to a multiple of 8. An
//! object is `( type regular [executable ""] contents <data> )`,
//! `( type symlink target <target> )` or `( type directory { entry ( name
//! <name> node <object> ) } )` with entries sorted by name *as bytes*. Only
//! the owner's execute bit survives; times, owners and other mode bits do
//! not. Sockets, devices and FIFOs cannot be archived (Nix refuses them too).
//!
//! The async side of a push runs [`dump`] on a blocking thread and moves
//! the bytes on from there (see `push::upload`).

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The magic string at the start of every NAR.
pub const MAGIC: &[u8] = b"nix-archive-1";

/// Buffer between the serializer and the sink: file contents stream through
/// in chunks of this size, the small tokens are coalesced.
const BUFFER: usize = 256 * 1024;

/// Serializes the file, symlink or directory at `path` as a NAR into `out`
/// and returns the number of bytes written.
///
/// The error names the file that could not be read or archived.
pub fn dump<W: Write>(path: &Path, out: W) -> io::Result<u64> {
    let mut w = NarWriter {
        out: BufWriter::with_capacity(BUFFER, out),
        written: 0,
    };
    w.str(MAGIC)?;
    w.object(path)?;
    w.out.flush()?;
    Ok(w.written)
}

struct NarWriter<W: Write> {
    out: BufWriter<W>,
    written: u64,
}

/// Adds the file name to an I/O error, keeping its kind.
fn at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn padding(len: u64) -> usize {
    ((8 - len % 8) % 8) as usize
}

impl<W: Write> NarWriter<W> {
    fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        self.raw(&[0u8; 8][..padding(len)])
    }

    fn str(&mut self, s: &[u8]) -> io::Result<()> {
        self.raw(&(s.len() as u64).to_le_bytes())?;
        self.raw(s)?;
        self.pad(s.len() as u64)
    }

    fn object(&mut self, path: &Path) -> io::Result<()> {
        let meta = fs::symlink_metadata(path).map_err(|e| at(path, e))?;
        let ft = meta.file_type();
        self.str(b"(")?;
        self.str(b"type")?;
        if ft.is_file() {
            self.str(b"regular")?;
            if meta.permissions().mode() & 0o100 != 0 {
                self.str(b"executable")?;
                self.str(b"")?;
            }
            self.str(b"contents")?;
            self.contents(path, meta.len())?;
        } else if ft.is_symlink() {
            let target = fs::read_link(path).map_err(|e| at(path, e))?;
            self.str(b"symlink")?;
            self.str(b"target")?;
            self.str(target.as_os_str().as_bytes())?;
        } else if ft.is_dir() {
            self.str(b"directory")?;
            let mut names = Vec::new();
            for entry in fs::read_dir(path).map_err(|e| at(path, e))? {
                names.push(entry.map_err(|e| at(path, e))?.file_name());
            }
            // Bytewise order, as Nix's std::map<std::string, ...> iterates.
            names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            for name in names {
                self.str(b"entry")?;
                self.str(b"(")?;
                self.str(b"name")?;
                self.str(name.as_bytes())?;
                self.str(b"node")?;
                self.object(&path.join(&name))?;
                self.str(b")")?;
            }
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: cannot archive a socket, device or FIFO",
                    path.display()
                ),
            ));
        }
        self.str(b")")
    }

    /// `str(data)` for a regular file of `len` bytes, streamed. A file that
    /// changes size while it is read is an error, not a corrupt NAR.
    fn contents(&mut self, path: &Path, len: u64) -> io::Result<()> {
        self.raw(&len.to_le_bytes())?;
        let file = File::open(path).map_err(|e| at(path, e))?;
        let copied = io::copy(&mut file.take(len), &mut self.out).map_err(|e| at(path, e))?;
        self.written += copied;
        if copied != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: shrank from {len} to {copied} bytes while it was archived",
                    path.display()
                ),
            ));
        }
        self.pad(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nar(path: &Path) -> Vec<u8> {
        let mut v = Vec::new();
        let n = dump(path, &mut v).unwrap();
        assert_eq!(n as usize, v.len());
        v
    }

    /// The tokens of a NAR, for readable assertions.
    fn tokens(mut b: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let len = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
            out.push(String::from_utf8_lossy(&b[8..8 + len]).into_owned());
            b = &b[8 + len + padding(len as u64)..];
        }
        out
    }

    #[test]
    fn regular_file_layout() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        fs::write(&f, "hello\n").unwrap();
        let bytes = nar(&f);
        // The magic as the format spec shows it.
        assert_eq!(&bytes[..8], &13u64.to_le_bytes());
        assert_eq!(&bytes[8..21], MAGIC);
        assert_eq!(&bytes[21..24], &[0, 0, 0]);
        assert_eq!(
            tokens(&bytes),
            [
                "nix-archive-1",
                "(",
                "type",
                "regular",
                "contents",
                "hello\n",
                ")"
            ]
        );
        assert_eq!(bytes.len() % 8, 0);
    }

    #[test]
    fn directory_sorted_bytewise_with_executable_and_symlink() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("b"), "").unwrap();
        fs::write(root.join("B"), "x").unwrap();
        fs::set_permissions(root.join("B"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("b", root.join("a")).unwrap();
        let t = tokens(&nar(&root));
        let names: Vec<&str> = t
            .windows(2)
            .filter(|w| w[0] == "name")
            .map(|w| w[1].as_str())
            .collect();
        assert_eq!(names, ["B", "a", "b"]);
        assert!(t.contains(&"executable".to_string()));
        assert!(t.contains(&"symlink".to_string()));
    }

    #[test]
    fn refuses_fifo() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("fifo");
        // mkfifo is coreutils: its absence would hide the check, so it fails the test.
        let made = std::process::Command::new("mkfifo").arg(&p).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo {}", p.display());
        let e = dump(&p, io::sink()).unwrap_err();
        assert!(e.to_string().contains("fifo"), "{e}");
        // The file name contains "fifo" too: check that the refusal says why.
        assert!(e.to_string().contains("cannot archive"), "{e}");
        // A socket is refused the same way (no tool needed to make one).
        let sock = d.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let e = dump(&sock, io::sink()).unwrap_err();
        assert!(e.to_string().contains("cannot archive a socket"), "{e}");
    }
}
