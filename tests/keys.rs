//! Signing keys against real Nix 2.8: keys made by us work in `nix store
//! sign`/`verify`, keys made by Nix work here, and our signatures are
//! byte-identical to the ones Nix adds.

mod common;

use std::path::Path;

use common::nix::{TestNix, chain_expr};
use common::ok;
use nix_binary_cache::signing::{self, PublicKey, SecretKey};

/// A salt unique to this test run, so each test builds paths of its own.
fn salt(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("keys-{tag}-{}-{nanos}", std::process::id())
}

/// Builds `n` chained derivations and returns the top path.
fn build_chain(nix: &TestNix, tag: &str, n: usize) -> String {
    nix.build_expr(&chain_expr(&salt(tag), n))
        .pop()
        .expect("nix-build printed a path")
}

/// Writes a secret key file with mode 0600.
fn write_key(path: &Path, key: &SecretKey) {
    nix_binary_cache::fsutil::write_atomic(path, key.to_file_string().as_bytes(), 0o600).unwrap();
}

/// A secret key made by `nix key generate-secret`, and its public key from
/// `nix key convert-secret-to-public`.
fn nix_generated_key(nix: &TestNix, dir: &Path, name: &str) -> (std::path::PathBuf, String) {
    let sk = ok(nix.run("nix", &["key", "generate-secret", "--key-name", name]));
    let path = dir.join(format!("{name}.sec"));
    std::fs::write(&path, &sk).unwrap();
    let out = nix
        .command("nix")
        .args(["key", "convert-secret-to-public"])
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
        .unwrap();
    (path, ok(out).trim().to_string())
}

/// `nix store verify` of one path requiring one trusted signature (a locally
/// built path is otherwise trusted as "ultimate" without any).
fn nix_verify(nix: &TestNix, path: &str, public: &str) -> bool {
    nix.run(
        "nix",
        &[
            "store",
            "verify",
            "--no-contents",
            "--sigs-needed",
            "1",
            "--trusted-public-keys",
            public,
            path,
        ],
    )
    .status
    .success()
}

/// One entry of `nix path-info --json --sigs`.
struct PathInfo {
    path: String,
    nar_hash_nix32: String,
    nar_size: u64,
    references: Vec<String>,
    sigs: Vec<String>,
}

/// Reads path metadata of `path`'s closure from Nix; the SRI `narHash` Nix
/// 2.8 prints is converted to `sha256:<nix32>` by `nix hash to-base32`.
fn path_infos(nix: &TestNix, path: &str) -> Vec<PathInfo> {
    let out = ok(nix.run(
        "nix",
        &["path-info", "--json", "--sigs", "--recursive", path],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .expect("Nix 2.8 prints an array")
        .iter()
        .map(|e| {
            let sri = e["narHash"].as_str().unwrap();
            let nix32 = ok(nix.run("nix", &["hash", "to-base32", sri]));
            PathInfo {
                path: e["path"].as_str().unwrap().to_string(),
                nar_hash_nix32: format!("sha256:{}", nix32.trim()),
                nar_size: e["narSize"].as_u64().unwrap(),
                references: e["references"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_string())
                    .collect(),
                sigs: e["signatures"]
                    .as_array()
                    .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default(),
            }
        })
        .collect()
}

#[test]
fn our_key_works_in_nix_store_sign_and_verify() {
    let nix = TestNix::new();
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate("ours-test-1").unwrap();
    let key_file = dir.path().join("ours.sec");
    write_key(&key_file, &key);
    let top = build_chain(&nix, "sign", 2);

    let public = key.public().to_string();
    assert!(!nix_verify(&nix, &top, &public), "unsigned path verified");
    ok(nix.run(
        "nix",
        &[
            "store",
            "sign",
            "--key-file",
            key_file.to_str().unwrap(),
            &top,
        ],
    ));
    assert!(
        nix_verify(&nix, &top, &public),
        "Nix rejects our key's signature"
    );

    // A foreign key with the same name must not verify it.
    let (_, foreign) = nix_generated_key(&nix, dir.path(), "ours-test-1");
    assert_ne!(foreign, public);
    assert!(!nix_verify(&nix, &top, &foreign), "a foreign key verified");
}

#[test]
fn nix_generated_key_is_read_by_us() {
    let nix = TestNix::new();
    let dir = tempfile::tempdir().unwrap();
    let (path, public) = nix_generated_key(&nix, dir.path(), "theirs-test-7");
    let key = SecretKey::from_file(&path).unwrap();
    assert_eq!(key.name, "theirs-test-7");
    assert_eq!(key.public().to_string(), public);
    assert_eq!(PublicKey::parse(&public).unwrap(), key.public());
    // Our serialisation is Nix's, byte for byte.
    assert_eq!(
        key.to_file_string(),
        std::fs::read_to_string(&path).unwrap().trim()
    );
}

#[test]
fn our_signatures_equal_nix_store_sign() {
    let nix = TestNix::new();
    let dir = tempfile::tempdir().unwrap();
    let (key_file, public) = nix_generated_key(&nix, dir.path(), "same-sig-1");
    let key = SecretKey::from_file(&key_file).unwrap();
    let top = build_chain(&nix, "fp", 3);
    ok(nix.run(
        "nix",
        &[
            "store",
            "sign",
            "--recursive",
            "--key-file",
            key_file.to_str().unwrap(),
            &top,
        ],
    ));

    let infos = path_infos(&nix, &top);
    assert_eq!(infos.len(), 3, "the chain has three paths");
    assert!(
        infos.iter().any(|i| !i.references.is_empty()),
        "the chain has references"
    );
    let trusted = [PublicKey::parse(&public).unwrap()];
    let foreign = [SecretKey::generate("same-sig-1").unwrap().public()];
    for info in &infos {
        let fp = signing::fingerprint(
            &info.path,
            &info.nar_hash_nix32,
            info.nar_size,
            &info.references,
        );
        let ours = key.sign(fp.as_bytes());
        assert!(
            info.sigs.contains(&ours),
            "{}: our signature {ours} is not among Nix's {:?}\nfingerprint {fp}",
            info.path,
            info.sigs
        );
        assert!(signing::verify_any(&fp, &info.sigs, &trusted));
        assert!(!signing::verify_any(&fp, &info.sigs, &foreign));
    }
}
