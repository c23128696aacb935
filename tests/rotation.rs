//! Key rotation that never breaks a client, against a real SeaweedFS and a
//! real Nix 2.8: `keys rotate` makes the next key, `resign` adds its
//! signature to every narinfo (resumably, also after kill -9), and
//! `keys retire` removes the old key's signatures only when every narinfo
//! keeps one from a still-trusted key.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{cmd, ok, show};
use nix_binary_cache::signing::SecretKey;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

/// Runs `keys rotate --secret-key-file OLD [extra]`.
fn rotate(old: &Path, extra: &[&str]) -> std::process::Output {
    cmd()
        .args(["keys", "rotate", "--secret-key-file"])
        .arg(old)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn rotate_makes_the_next_key_once_and_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let old_file = dir.path().join("keys/cache.test-1.sec");
    std::fs::create_dir_all(old_file.parent().unwrap()).unwrap();
    let old = SecretKey::generate("cache.test-1").unwrap();
    std::fs::write(&old_file, old.to_file_string()).unwrap();
    std::fs::set_permissions(
        &old_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let old_bytes = std::fs::read(&old_file).unwrap();

    let out = ok(rotate(&old_file, &[]));
    let new_file = dir.path().join("keys/cache.test-2.sec");
    let new = SecretKey::from_file(&new_file).unwrap();
    assert_eq!(new.name, "cache.test-2");
    assert_eq!(mode(&new_file), 0o600);
    assert_eq!(std::fs::read(&old_file).unwrap(), old_bytes, "old key kept");
    assert_ne!(new.public().bytes, old.public().bytes);
    // Both public keys are printed, as the overlap needs them.
    for k in [old.public().to_string(), new.public().to_string()] {
        assert!(out.contains(&format!("\n  {k}\n")), "{out}");
    }
    assert!(out.contains("cache.test-2.sec created"), "{out}");
    assert!(out.contains("resign") && out.contains("keys retire cache.test-1"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("keys/cache.test-2.sec.pub")).unwrap(),
        format!("{}\n", new.public())
    );
    // No secret in the output.
    for k in [&old, &new] {
        let b64 = k.to_file_string().split_once(':').unwrap().1.to_string();
        assert!(!out.contains(&b64[..24]));
    }

    // Again: the key made the first time is kept and reported unchanged.
    let new_bytes = std::fs::read(&new_file).unwrap();
    let out = ok(rotate(&old_file, &[]));
    assert!(out.contains("cache.test-2.sec unchanged"), "{out}");
    assert_eq!(std::fs::read(&new_file).unwrap(), new_bytes);

    // An explicit target that holds another key is never overwritten.
    let o = rotate(
        &old_file,
        &["--new-secret-key-file", old_file.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert_eq!(std::fs::read(&old_file).unwrap(), old_bytes);

    // An explicit new path in a new directory: created 0600 in a 0700 directory.
    let elsewhere = dir.path().join("new/dir/next.sec");
    ok(rotate(
        &old_file,
        &["--new-secret-key-file", elsewhere.to_str().unwrap()],
    ));
    assert_eq!(mode(&elsewhere), 0o600);
    assert_eq!(mode(elsewhere.parent().unwrap()), 0o700);

    // A key name without `-N` cannot be rotated: the message says what to do.
    let plain = dir.path().join("plain.sec");
    std::fs::write(
        &plain,
        SecretKey::generate("plain").unwrap().to_file_string(),
    )
    .unwrap();
    let o = rotate(&plain, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("keys generate --name plain-2"),
        "{}",
        show(&o)
    );
}
