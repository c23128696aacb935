//! The native NAR serializer and Nix32 against the real Nix 2.8: the bytes
//! must equal `nix-store --dump`, the encodings `nix-hash --to-base32`.

mod common;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use common::nix::{TestNix, chain_expr};
use nix_binary_cache::{nar, nix32};

fn nix_dump(nix: &TestNix, path: &Path) -> Vec<u8> {
    let out = nix.run("nix-store", &["--dump", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", common::show(&out));
    out.stdout
}

fn ours(path: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    nar::dump(path, &mut v).unwrap();
    v
}

#[track_caller]
fn same(nix: &TestNix, path: &Path) {
    let theirs = nix_dump(nix, path);
    let mine = ours(path);
    assert!(
        theirs == mine,
        "NAR of {} differs: nix {} bytes, ours {} bytes, first difference at {:?}",
        path.display(),
        theirs.len(),
        mine.len(),
        theirs.iter().zip(&mine).position(|(a, b)| a != b)
    );
}

#[test]
fn single_objects_match_nix_store_dump() {
    let nix = TestNix::new();
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    // Every padding length, and a file larger than the serializer's buffer.
    for len in [0usize, 1, 7, 8, 9, 15, 16, 17, 1000, 600_000] {
        let f = p.join(format!("file-{len}"));
        fs::write(
            &f,
            (0..len).map(|i| (i * 31 % 251) as u8).collect::<Vec<_>>(),
        )
        .unwrap();
        same(&nix, &f);
    }
    let exe = p.join("exe");
    fs::write(&exe, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    same(&nix, &exe);
    // Only the owner's x bit counts.
    let group_x = p.join("group-x");
    fs::write(&group_x, "x").unwrap();
    fs::set_permissions(&group_x, fs::Permissions::from_mode(0o615)).unwrap();
    same(&nix, &group_x);
    let link = p.join("link");
    symlink("../some/where/not-existing", &link).unwrap();
    same(&nix, &link);
    let empty = p.join("empty-dir");
    fs::create_dir(&empty).unwrap();
    same(&nix, &empty);
}

#[test]
fn tree_with_awkward_names_matches_nix_store_dump() {
    let nix = TestNix::new();
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    fs::create_dir_all(root.join("nested/deeper/empty")).unwrap();
    fs::create_dir_all(root.join("also-empty")).unwrap();
    // Bytewise order differs from text/locale order for these: upper case
    // before lower case, '_' between them, '-' and '.' before digits,
    // multi-byte UTF-8 after everything ASCII, "10" before "9".
    for name in [
        "a", "B", "_x", "Z", "é", "e", "10", "9", "a-b", "a.b", "a_b", ".hidden", "ß", "~",
    ] {
        fs::write(root.join(name), name).unwrap();
    }
    fs::write(root.join("nested/deeper/file"), "deep\n").unwrap();
    fs::write(root.join("nested/empty-file"), "").unwrap();
    let tool = root.join("nested/tool");
    fs::write(&tool, "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o555)).unwrap();
    symlink("deeper/file", root.join("nested/rel-link")).unwrap();
    symlink("/absolute/target", root.join("abs-link")).unwrap();
    symlink("nested", root.join("dir-link")).unwrap();
    same(&nix, &root);
}

#[test]
fn built_store_paths_match_and_hash_as_nix_says() {
    let nix = TestNix::new();
    let outs = nix.build_expr(&chain_expr("nar-test", 2));
    let top = Path::new(&outs[0]);
    same(&nix, top);
    // The NarHash Nix recorded is the SHA-256 of our bytes.
    use sha2::Digest;
    let digest = sha2::Sha256::digest(ours(top));
    let recorded = common::ok(nix.run("nix-store", &["--query", "--hash", &outs[0]]));
    assert_eq!(
        recorded.trim(),
        format!("sha256:{}", nix32::encode(&digest))
    );
}

#[test]
fn nix32_matches_nix_hash() {
    let nix = TestNix::new();
    for (algo, len) in [
        ("md5", 16usize),
        ("sha1", 20),
        ("sha256", 32),
        ("sha512", 64),
    ] {
        for seed in 0..4u8 {
            let bytes: Vec<u8> = (0..len)
                .map(|i| {
                    (i as u8)
                        .wrapping_mul(97)
                        .wrapping_add(seed.wrapping_mul(53))
                        ^ 0xa5
                })
                .collect();
            let hex = hex::encode(&bytes);
            let theirs = common::ok(nix.run("nix-hash", &["--type", algo, "--to-base32", &hex]));
            assert_eq!(theirs.trim(), nix32::encode(&bytes), "{algo} {hex}");
            assert_eq!(nix32::decode(theirs.trim()).unwrap(), bytes);
        }
    }
}
