//! Key rotation that never breaks a client, against a real SeaweedFS and a
//! real Nix 2.8: `keys rotate` makes the next key, `resign` adds its
//! signature to every narinfo (resumably, also after kill -9), and
//! `keys retire` removes the old key's signatures only when every narinfo
//! keeps one from a still-trusted key.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::cache::{admin, block_on, cache_url, check_narinfos, provision_cache};
use common::nix::{TestNix, chain_expr, fresh_store};
use common::proxy::Proxy;
use common::seaweed::Seaweed;
use common::store::BUCKET;
use common::{cmd, mode, ok, show};
use nix_binary_cache::hash::NixHash;
use nix_binary_cache::narinfo::NarInfo;
use nix_binary_cache::nix32;
use nix_binary_cache::signing::{PublicKey, SecretKey};

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
        std::fs::read_to_string(dir.path().join("keys/cache.test-2.pub")).unwrap(),
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

// ---------------------------------------------------------------------
// The cache: a provisioned SeaweedFS bucket, a writer that may not delete,
// paths built by Nix and pushed by `push`.

struct Rig {
    s: Seaweed,
    /// Where the helper sends requests (the server, or a proxy before it).
    endpoint: String,
    dir: tempfile::TempDir,
    nix: TestNix,
    writer: PathBuf,
}

impl Rig {
    fn new() -> Rig {
        let s = Seaweed::start();
        let dir = tempfile::tempdir().unwrap();
        let writer = provision_cache(&s, dir.path(), BUCKET);
        Rig {
            endpoint: s.endpoint.clone(),
            s,
            dir,
            nix: TestNix::new(),
            writer,
        }
    }

    /// `keys generate`: the secret key file and the public key.
    fn key(&self, name: &str) -> (PathBuf, String) {
        let file = self.dir.path().join(format!("keys/{name}.sec"));
        let public = common::generate_key(&file, name);
        (file, public)
    }

    fn target(&self) -> Vec<String> {
        vec![
            "--endpoint".into(),
            self.endpoint.clone(),
            "--bucket".into(),
            BUCKET.into(),
            "--writer-credentials-file".into(),
            self.writer.display().to_string(),
        ]
    }

    fn push(&self, key_file: &Path, paths: &[&str]) {
        ok(self
            .nix
            .helper()
            .arg("push")
            .args(self.target())
            .arg("--signing-key-file")
            .arg(key_file)
            .args(paths)
            .output()
            .unwrap());
    }

    /// A command of the helper against the cache, with `trusted` keys.
    fn run(&self, args: &[&str], trusted: &[&str], extra: &[&str]) -> Output {
        let mut c = cmd();
        c.args(args).args(self.target());
        for k in trusted {
            c.args(["--trusted-public-key", k]);
        }
        let o = c.args(extra).output().unwrap();
        self.assert_no_secret(&o);
        o
    }

    fn resign(&self, key_file: &Path, trusted: &[&str], extra: &[&str]) -> Output {
        let key = key_file.to_str().unwrap();
        self.run(&["resign", "--signing-key-file", key], trusted, extra)
    }

    fn retire(&self, name: &str, trusted: &[&str], extra: &[&str]) -> Output {
        self.run(&["keys", "retire", name], trusted, extra)
    }

    fn assert_no_secret(&self, o: &Output) {
        let keys: Vec<String> = std::fs::read_dir(self.dir.path().join("keys"))
            .into_iter()
            .flatten()
            .filter_map(|f| {
                let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
                let (_, b64) = text.trim().split_once(':')?;
                (b64.len() > 60).then(|| b64[..40].to_string())
            })
            .collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        common::assert_no_secret(o, &keys, &self.writer);
    }

    /// `nix copy` from the cache into a fresh store root ("another
    /// machine"), trusting only `key`.
    fn copy(&self, key: &str, paths: &[&str]) -> Output {
        let (_d, root) = fresh_store();
        self.nix
            .command("nix")
            .args(["copy", "--from", &cache_url(&self.s, BUCKET), "--to", &root])
            .args(["--option", "trusted-public-keys", key])
            .args(paths)
            .output()
            .unwrap()
    }

    /// Every narinfo of the bucket: object key → text.
    fn narinfos(&self) -> BTreeMap<String, String> {
        let c = admin(&self.s);
        block_on(async {
            let mut out = BTreeMap::new();
            for o in c.list_all(BUCKET, "").await.unwrap() {
                if o.key.ends_with(".narinfo") {
                    let b = c.get_object(BUCKET, &o.key).await.unwrap().unwrap();
                    out.insert(o.key, String::from_utf8(b.to_vec()).unwrap());
                }
            }
            out
        })
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn salt(tag: &str) -> String {
    common::salt(&format!("rot-{tag}"))
}

/// Each narinfo verifies under `keys` (all of them, one signature each).
#[track_caller]
fn assert_signed_by(narinfos: &BTreeMap<String, String>, keys: &[&str]) {
    for (k, text) in narinfos {
        let n = NarInfo::parse(text).unwrap_or_else(|e| panic!("{k}: {e}\n{text}"));
        assert_eq!(n.sigs.len(), keys.len(), "{k}: {text}");
        for key in keys {
            let pk = PublicKey::parse(key).unwrap();
            assert!(n.verify(&[pk]), "{k} is not signed by {key}:\n{text}");
        }
    }
}

#[test]
fn rotation_end_to_end_never_breaks_a_client() {
    let r = Rig::new();
    let (key1, pub1) = r.key("rot.test-1");
    let top = r.nix.build_expr(&chain_expr(&salt("e2e"), 3)).remove(0);
    r.push(&key1, &[&top]);
    let before = r.narinfos();
    assert!(before.len() >= 3, "{before:?}");
    assert_signed_by(&before, &[&pub1]);
    check_narinfos(&r.s, BUCKET);

    // Rotate: a -2 key next to the -1 key.
    let out = ok(cmd()
        .args(["keys", "rotate", "--secret-key-file"])
        .arg(&key1)
        .output()
        .unwrap());
    let key2 = r.dir.path().join("keys/rot.test-2.sec");
    let pub2 = SecretKey::from_file(&key2).unwrap().public().to_string();
    assert!(out.contains(&pub1) && out.contains(&pub2), "{out}");

    // Before resign a client trusting only -2 cannot substitute.
    let o = r.copy(&pub2, &[&top]);
    assert!(!o.status.success(), "substituted without a -2 signature");

    // Dry run: reports, writes nothing.
    let o = r.resign(&key2, &[&pub1], &["--dry-run"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        stdout(&o).contains(&format!("{} would sign", before.len())),
        "{}",
        show(&o)
    );
    assert_eq!(r.narinfos(), before);

    let o = r.resign(&key2, &[&pub1], &[]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        stdout(&o).contains(&format!("{} signed", before.len())),
        "{}",
        show(&o)
    );
    let resigned = r.narinfos();
    assert_signed_by(&resigned, &[&pub1, &pub2]);
    // Only a Sig line was added; the NARs are the same objects.
    for (k, text) in &before {
        let new = NarInfo::parse(&resigned[k]).unwrap();
        assert!(new.same_except_sigs(&NarInfo::parse(text).unwrap()));
        let added = format!("Sig: {}\n", new.sigs[1]);
        assert!(added.starts_with("Sig: rot.test-2:"), "{added}");
        assert_eq!(
            resigned[k].replace(&added, ""),
            *text,
            "more than a Sig line changed"
        );
    }
    check_narinfos(&r.s, BUCKET);

    // Again: nothing to do, nothing written.
    let o = r.resign(&key2, &[&pub1], &[]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        stdout(&o).contains(&format!("{} already signed", before.len()))
            && !stdout(&o).contains(" signed,"),
        "{}",
        show(&o)
    );
    assert_eq!(r.narinfos(), resigned);

    // During the overlap both kinds of clients substitute.
    for key in [&pub2, &pub1] {
        let o = r.copy(key, &[&top]);
        assert!(o.status.success(), "trusting {key}: {}", show(&o));
    }

    // A path pushed by a builder still on -1: retire refuses, writes nothing.
    let late = r.nix.build_expr(&chain_expr(&salt("late"), 1)).remove(0);
    r.push(&key1, &[&late]);
    let with_late = r.narinfos();
    let o = r.retire("rot.test-1", &[&pub2], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("blocked") && err.contains("nothing was written") && err.contains("resign"),
        "{err}"
    );
    assert_eq!(r.narinfos(), with_late);

    // The retired key may not be given as still trusted.
    let o = r.retire("rot.test-1", &[&pub1, &pub2], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));

    // From here on the manifest the modules write: push signs with -2,
    // -1 is retired but still trusted. resign picks up the new narinfo
    // only; retire then goes through.
    let manifest = common::write(
        r.dir.path(),
        "manifest.toml",
        &format!(
            "version = 1\n[cache]\nendpoint = \"{}\"\nbucket = \"{BUCKET}\"\n\
             [trust]\npublicKeys = [\"{pub2}\"]\nretiredPublicKeys = [\"{pub1}\"]\n\
             [push]\nkeyName = \"rot.test-2\"\nsigningKeyFile = \"{}\"\n\
             writerCredentialsFile = \"{}\"\n",
            r.s.endpoint,
            key2.display(),
            r.writer.display()
        ),
    );
    let m = ["--manifest", manifest.to_str().unwrap()];
    let o = cmd().arg("resign").args(m).output().unwrap();
    assert!(stdout(&o).contains("1 signed"), "{}", show(&o));
    let all_signed = r.narinfos();
    let o = cmd()
        .args(["keys", "retire", "rot.test-1", "--dry-run"])
        .args(m)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    assert!(stdout(&o).contains("would remove"), "{}", show(&o));
    assert_eq!(r.narinfos(), all_signed);
    // The key push signs with cannot be retired.
    let o = cmd()
        .args(["keys", "retire", "rot.test-2"])
        .args(m)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(show(&o).contains("push.keyName"), "{}", show(&o));
    let o = cmd()
        .args(["keys", "retire", "rot.test-1"])
        .args(m)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let after = r.narinfos();
    assert!(
        stdout(&o).contains(&format!("{} removed", after.len())),
        "{}",
        show(&o)
    );
    assert_signed_by(&after, &[&pub2]);
    check_narinfos(&r.s, BUCKET);

    // After retire only -2 works.
    let o = r.copy(&pub2, &[&top, &late]);
    assert!(o.status.success(), "{}", show(&o));
    let o = r.copy(&pub1, &[&top]);
    assert!(
        !o.status.success(),
        "a client trusting only the retired key still substitutes"
    );

    // Retire again: nothing to do.
    let o = r.retire("rot.test-1", &[&pub2], &[]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(stdout(&o).contains("without the key"), "{}", show(&o));
    assert_eq!(r.narinfos(), after);
}

/// A synthetic path's narinfo, signed by `key`, with a NAR object of a few
/// bytes that is not a real NAR (resign never reads NARs): for tests that
/// need many narinfos fast, or broken ones.
fn synthetic(i: usize, key: &SecretKey) -> NarInfo {
    use sha2::Digest;
    let digest: [u8; 32] = sha2::Sha256::digest(format!("synthetic {i}")).into();
    let hash_part = nix32::encode(&digest[..20]);
    let mut n = NarInfo {
        store_path: format!("/nix/store/{hash_part}-synthetic-{i}"),
        url: format!("nar/{}.nar", nix32::encode(&digest)),
        compression: Some("none".into()),
        file_hash: Some(NixHash::sha256(digest)),
        file_size: Some(16),
        nar_hash: NixHash::sha256(digest),
        nar_size: 16,
        references: vec![],
        deriver: None,
        sigs: vec![],
        ca: None,
        extra: vec![],
    };
    n.sign(key);
    n
}

/// Writes `(object key, text)` pairs and their NAR objects as the admin.
fn put_all(s: &Seaweed, items: Vec<(String, String, Option<String>)>) {
    use futures::StreamExt;
    let c = admin(s);
    block_on(
        futures::stream::iter(items).for_each_concurrent(16, |(key, text, nar)| {
            let c = c.clone();
            async move {
                if let Some(nar) = nar {
                    c.put_object(BUCKET, &nar, vec![7u8; 16], "application/x-nix-nar")
                        .await
                        .unwrap();
                }
                c.put_object(BUCKET, &key, text, "text/x-nix-narinfo")
                    .await
                    .unwrap();
            }
        }),
    );
}

fn entry(n: &NarInfo) -> (String, String, Option<String>) {
    (
        format!("{}.narinfo", n.hash_part()),
        n.render(),
        Some(n.url.clone()),
    )
}

#[test]
fn resign_never_vouches_for_what_it_cannot_verify() {
    let r = Rig::new();
    let (key1_file, pub1) = r.key("rot.check-1");
    let (key2_file, pub2) = r.key("rot.check-2");
    let key1 = SecretKey::from_file(&key1_file).unwrap();
    let foreign = SecretKey::generate("someone-else-1").unwrap();

    let good = synthetic(0, &key1);
    let untrusted = synthetic(1, &foreign);
    let mut tampered = synthetic(2, &key1);
    tampered.nar_size += 1;
    let misplaced = synthetic(3, &key1);
    let mut unsigned = synthetic(4, &key1);
    unsigned.sigs.clear();
    let mut items = vec![
        entry(&good),
        entry(&untrusted),
        entry(&tampered),
        entry(&unsigned),
    ];
    let misplaced_key = format!("{}.narinfo", synthetic(5, &key1).hash_part());
    items.push((misplaced_key.clone(), misplaced.render(), None));
    items.push((
        "garbage.narinfo".into(),
        "StorePath: nonsense\n".into(),
        None,
    ));
    put_all(&r.s, items);
    let before = r.narinfos();

    // Without trusted keys there is nothing it may vouch for.
    let o = r.resign(&key2_file, &[], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(show(&o).contains("--trusted-public-key"), "{}", show(&o));

    let o = r.resign(&key2_file, &[&pub1], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = show(&o);
    assert!(stdout(&o).contains("6 narinfos: 1 signed"), "{out}");
    let err = String::from_utf8_lossy(&o.stderr);
    for (key, why) in [
        (
            format!("{}.narinfo", untrusted.hash_part()),
            "`someone-else-1`, none of them a trusted key",
        ),
        (
            format!("{}.narinfo", tampered.hash_part()),
            "signature by `rot.check-1` does not verify",
        ),
        (
            format!("{}.narinfo", unsigned.hash_part()),
            "has no signature",
        ),
        (misplaced_key.clone(), "belongs under another name"),
        ("garbage.narinfo".to_string(), "does not parse"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.starts_with(&format!("skipped {key}: ")) && l.contains(why)),
            "{key}: {why}\n{err}"
        );
    }
    let after = r.narinfos();
    for (k, text) in &before {
        if *k == format!("{}.narinfo", good.hash_part()) {
            assert_signed_by(
                &BTreeMap::from([(k.clone(), after[k].clone())]),
                &[&pub1, &pub2],
            );
        } else {
            assert_eq!(after[k], *text, "{k} was rewritten");
        }
    }
}

#[test]
fn resign_killed_mid_way_resumes_and_leaves_every_narinfo_valid() {
    let mut r = Rig::new();
    let (key1_file, pub1) = r.key("rot.kill-1");
    let (key2_file, pub2) = r.key("rot.kill-2");
    let key1 = SecretKey::from_file(&key1_file).unwrap();
    const N: usize = 400;
    put_all(&r.s, (0..N).map(|i| entry(&synthetic(i, &key1))).collect());

    // Through a proxy that counts the PUTs: kill -9 after some of them.
    let proxy = Proxy::start(&r.s.endpoint);
    r.endpoint = proxy.endpoint.clone();
    let mut child = cmd()
        .args(["resign", "--signing-key-file", key2_file.to_str().unwrap()])
        .args(r.target())
        .args(["--trusted-public-key", &pub1, "--jobs", "4"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    loop {
        let puts = proxy
            .requests()
            .iter()
            .filter(|q| q.method == "PUT")
            .count();
        if puts >= 40 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "resign finished before it was killed"
        );
        assert!(start.elapsed().as_secs() < 60, "resign made no progress");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "resign finished before it was killed"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // Every narinfo is whole: the old signature verifies everywhere, the
    // new one where it was written.
    let k2 = PublicKey::parse(&pub2).unwrap();
    let k1 = PublicKey::parse(&pub1).unwrap();
    let mid = r.narinfos();
    assert_eq!(mid.len(), N);
    let mut signed = 0;
    for (k, text) in &mid {
        let n = NarInfo::parse(text).unwrap_or_else(|e| panic!("{k}: {e}"));
        assert!(n.verify(std::slice::from_ref(&k1)), "{k}");
        if n.sigs.len() == 2 {
            assert!(n.verify(std::slice::from_ref(&k2)), "{k}");
            signed += 1;
        } else {
            assert_eq!(n.sigs.len(), 1, "{k}");
        }
    }
    assert!(
        signed > 0 && signed < N,
        "killed mid-way, yet {signed} of {N} signed"
    );

    // Run again: the rest is signed, nothing twice.
    r.endpoint = r.s.endpoint.clone();
    let o = r.resign(&key2_file, &[&pub1], &[]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        stdout(&o).contains(&format!("{} signed, {signed} already signed", N - signed)),
        "{}",
        show(&o)
    );
    assert_signed_by(&r.narinfos(), &[&pub1, &pub2]);
}
