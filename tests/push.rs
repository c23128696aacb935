//! `push` end to end: a real SeaweedFS holds the cache, a real Nix 2.8
//! builds the paths and, in fresh store roots ("other machines"),
//! substitutes them, trusting our key and nothing else.

mod common;

use std::path::Path;
use std::process::Output;

use common::cache::{cache_url, check_narinfos, keys, make_cache_bucket, signing_key};
use common::nix::{TestNix, chain_expr, fresh_store};
use common::seaweed::Seaweed;
use common::{ok, show};

struct Setup {
    s: Seaweed,
    nix: TestNix,
    dir: tempfile::TempDir,
    key_file: std::path::PathBuf,
    public: String,
    creds: std::path::PathBuf,
}

fn setup(buckets: &[&str]) -> Setup {
    let s = Seaweed::start();
    for b in buckets {
        make_cache_bucket(&s, b);
    }
    let dir = tempfile::tempdir().unwrap();
    let (key_file, public) = signing_key(dir.path(), "test-cache-1");
    let creds = s.admin_env_file(dir.path());
    Setup {
        s,
        nix: TestNix::new(),
        dir,
        key_file,
        public,
        creds,
    }
}

impl Setup {
    fn push(&self, bucket: &str, extra: &[&str], paths: &[&str]) -> Output {
        self.nix
            .helper()
            .arg("push")
            .args(["--endpoint", &self.s.endpoint, "--bucket", bucket])
            .arg("--writer-credentials-file")
            .arg(&self.creds)
            .arg("--signing-key-file")
            .arg(&self.key_file)
            .args(extra)
            .args(paths)
            .output()
            .unwrap()
    }

    /// `nix copy` from the cache into a fresh store root, trusting `key`.
    fn copy_to_fresh(
        &self,
        bucket: &str,
        key: &str,
        paths: &[&str],
    ) -> (Output, tempfile::TempDir, String) {
        let (d, root) = fresh_store();
        let out = self
            .nix
            .command("nix")
            .args(["copy", "--from", &cache_url(&self.s, bucket), "--to", &root])
            .args(["--option", "trusted-public-keys", key])
            .args(paths)
            .output()
            .unwrap();
        (out, d, root)
    }

    /// A random file of `len` bytes added to the store.
    fn add_random(&self, name: &str, len: usize) -> String {
        let p = self.dir.path().join(name);
        let mut data = vec![0u8; len];
        getrandom::getrandom(&mut data).unwrap();
        std::fs::write(&p, data).unwrap();
        self.nix.add(&p)
    }
}

/// `a` and `b` are the same tree: the same entries, symlink targets,
/// bytes and executable bits (what a NAR holds).
fn same_tree(a: &Path, b: &Path) {
    if a.is_symlink() {
        assert_eq!(
            std::fs::read_link(a).unwrap(),
            std::fs::read_link(b).unwrap()
        );
    } else if a.is_dir() {
        let names = common::listing(a);
        assert_eq!(names, common::listing(b), "{}", b.display());
        for name in names {
            same_tree(&a.join(&name), &b.join(&name));
        }
    } else {
        assert!(
            std::fs::read(a).unwrap() == std::fs::read(b).unwrap(),
            "{} differs from {}",
            a.display(),
            b.display()
        );
        assert_eq!(
            common::mode(a) & 0o111,
            common::mode(b) & 0o111,
            "{}: executable bit",
            b.display()
        );
    }
}

#[test]
fn pushed_closure_substitutes_with_our_key_and_only_ours() {
    let t = setup(&["cache"]);
    let top = t.nix.build_expr(&chain_expr("push-e2e", 4)).remove(0);
    // 20 MiB of random data: incompressible, so a multipart upload.
    let big = t.add_random("big.bin", 20 * 1024 * 1024);
    let paths = t.nix.closure(&top);
    assert_eq!(paths.len(), 4);

    let out = t.push("cache", &[], &[&top, &big]);
    let stdout = ok(out);
    assert!(stdout.contains("uploaded 5 paths"), "{stdout}");
    let narinfos = check_narinfos(&t.s, "cache");
    assert_eq!(narinfos.len(), 5);
    for n in &narinfos {
        assert!(
            n.url.starts_with("nar/") && n.url.ends_with(".nar.zst"),
            "{}",
            n.url
        );
        assert_eq!(n.compression.as_deref(), Some("zstd"));
        assert_eq!(n.sigs.len(), 1);
    }
    let roots: Vec<String> = keys(&t.s, "cache")
        .into_iter()
        .filter(|k| k.starts_with("roots/"))
        .collect();
    assert_eq!(roots.len(), 1, "{roots:?}");
    let c = common::cache::admin(&t.s);
    let record: serde_json::Value = serde_json::from_slice(
        &common::cache::block_on(c.get_object("cache", &roots[0]))
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record["paths"], serde_json::json!([top, big]));

    // Another machine trusting our key gets every path, byte for byte.
    let mut all = paths.clone();
    all.push(big.clone());
    let all_refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let (out, _d, root) = t.copy_to_fresh("cache", &t.public, &all_refs);
    assert!(out.status.success(), "{}", show(&out));
    for p in &all {
        same_tree(
            Path::new(p),
            &Path::new(&root).join(p.trim_start_matches('/')),
        );
    }

    // Trusting only a foreign key, Nix refuses our paths.
    let (_, foreign) = signing_key(t.dir.path(), "foreign-1");
    let (out, _d2, _) = t.copy_to_fresh("cache", &foreign, &[&top]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lacks a valid signature"),
        "{}",
        show(&out)
    );
    // A key with our bytes under another name is not ours either.
    let renamed = format!("other-name-1:{}", t.public.split_once(':').unwrap().1);
    let (out, _d3, _) = t.copy_to_fresh("cache", &renamed, &[&top]);
    assert!(!out.status.success(), "{}", show(&out));

    // As a substituter: realise the top path in a fresh store root.
    let (_d4, root4) = fresh_store();
    let out = t
        .nix
        .command("nix-store")
        .args(["--store", &root4, "--realise", &top])
        .args(["--option", "substituters", &cache_url(&t.s, "cache")])
        .args(["--option", "trusted-public-keys", &t.public])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    same_tree(
        Path::new(&top),
        &Path::new(&root4).join(top.trim_start_matches('/')),
    );

    // A second push uploads nothing and says so; the bucket is unchanged
    // but for the new roots record.
    let before: Vec<String> = keys(&t.s, "cache")
        .into_iter()
        .filter(|k| !k.starts_with("roots/"))
        .collect();
    let stdout = ok(t.push("cache", &[], &[&top, &big]));
    assert!(
        stdout.contains("nothing uploaded: 5 of 5 paths already in the cache"),
        "{stdout}"
    );
    let after: Vec<String> = keys(&t.s, "cache")
        .into_iter()
        .filter(|k| !k.starts_with("roots/"))
        .collect();
    assert_eq!(before, after);
}

#[test]
fn skip_if_substitutable_leaves_upstream_paths_out() {
    let t = setup(&["cache", "upstream"]);
    let expr = chain_expr("push-upstream", 3);
    let top = t.nix.build_expr(&expr).remove(0);
    let paths = t.nix.closure(&top);
    let middle = paths
        .iter()
        .find(|p| p.ends_with("push-upstream-1"))
        .unwrap()
        .clone();
    // The upstream holds the lower two paths.
    ok(t.push("upstream", &[], &[&middle]));
    let upstream = cache_url(&t.s, "upstream");
    let stdout = ok(t.push("cache", &["--skip-if-substitutable", &upstream], &[&top]));
    assert!(stdout.contains("uploaded 1 path:"), "{stdout}");
    assert!(stdout.contains("2 served by an upstream cache"), "{stdout}");
    let ours = check_narinfos(&t.s, "cache");
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0].store_path, top);

    // A client with both caches gets everything.
    let (_d, root) = fresh_store();
    let out = t
        .nix
        .command("nix-store")
        .args(["--store", &root, "--realise", &top])
        .args([
            "--option",
            "substituters",
            &format!("{} {upstream}", cache_url(&t.s, "cache")),
        ])
        .args(["--option", "trusted-public-keys", &t.public])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
}

#[test]
fn xz_and_none_substitute() {
    let t = setup(&["cache-xz", "cache-none"]);
    let top = t.nix.build_expr(&chain_expr("push-codecs", 2)).remove(0);
    let big = t.add_random("mid.bin", 10 * 1024 * 1024);
    for (bucket, codec, ext) in [
        ("cache-xz", "xz", ".nar.xz"),
        ("cache-none", "none", ".nar"),
    ] {
        let stdout = ok(t.push(bucket, &["--compression", codec], &[&top, &big]));
        assert!(stdout.contains("uploaded 3 paths"), "{stdout}");
        for n in check_narinfos(&t.s, bucket) {
            assert!(n.url.ends_with(ext), "{}", n.url);
            assert_eq!(n.compression.as_deref(), Some(codec));
        }
        let (out, _d, _) = t.copy_to_fresh(bucket, &t.public, &[&top, &big]);
        assert!(out.status.success(), "{codec}: {}", show(&out));
    }
}

#[test]
fn no_closure_refuses_paths_whose_references_are_missing() {
    let t = setup(&["cache"]);
    let top = t.nix.build_expr(&chain_expr("push-noclosure", 2)).remove(0);
    let out = t.push("cache", &["--no-closure"], &[&top]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is neither in the cache nor upstream"),
        "{}",
        show(&out)
    );
    assert!(check_narinfos(&t.s, "cache").is_empty());
    // With the closure pushed first, --no-closure works.
    let dep = t.nix.closure(&top).into_iter().find(|p| *p != top).unwrap();
    ok(t.push("cache", &["--no-closure"], &[&dep]));
    let stdout = ok(t.push("cache", &["--no-closure"], &[&top]));
    assert!(stdout.contains("uploaded 1 path:"), "{stdout}");
}

#[test]
fn corrupt_store_path_is_not_published() {
    use std::os::unix::fs::PermissionsExt;
    let t = setup(&["cache"]);
    let small = t.add_random("corrupt-small.bin", 1000);
    let large = t.add_random("corrupt-large.bin", 12 * 1024 * 1024);
    // Change the files behind Nix's back (the store is writable by root
    // here): the NAR no longer matches the NarHash Nix recorded.
    for p in [&small, &large] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut data = std::fs::read(p).unwrap();
        data[0] ^= 1;
        std::fs::write(p, data).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o444)).unwrap();
    }
    let out = t.push("cache", &[], &[&small, &large]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("do not match Nix's database"), "{err}");
    // Nothing was published, not even the NAR objects.
    let left: Vec<String> = keys(&t.s, "cache")
        .into_iter()
        .filter(|k| k != "nix-cache-info")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn bad_input_is_named_and_secrets_stay_out_of_output() {
    let t = setup(&["cache"]);
    let top = t.nix.build_expr(&chain_expr("push-bad", 1)).remove(0);
    // A missing flag names the flag.
    let out = t
        .nix
        .helper()
        .args(["push", "--bucket", "cache", &top])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--endpoint"));
    // Not a store path.
    let out = t.push("cache", &[], &["/etc/hostname"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/etc/hostname"));
    // A path that is not valid in the store.
    let out = t.push(
        "cache",
        &[],
        &["/nix/store/00000000000000000000000000000000-missing"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid"));
    // Wrong credentials: a store error, exit 3, the secret never printed.
    let wrong = t.dir.path().join("wrong.env");
    std::fs::write(
        &wrong,
        format!(
            "AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY=WRONGSECRETwrongsecret1234\n",
            t.s.admin_key
        ),
    )
    .unwrap();
    let out = t
        .nix
        .helper()
        .args(["push", "--endpoint", &t.s.endpoint, "--bucket", "cache"])
        .arg("--writer-credentials-file")
        .arg(&wrong)
        .arg("--signing-key-file")
        .arg(&t.key_file)
        .arg(&top)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let all = show(&out);
    assert!(!all.contains("WRONGSECRETwrongsecret1234"));
    assert!(!all.contains(&t.s.admin_secret));
    let key_text = std::fs::read_to_string(&t.key_file).unwrap();
    assert!(!all.contains(key_text.split_once(':').unwrap().1));
    assert!(check_narinfos(&t.s, "cache").is_empty());
}

#[test]
fn manifest_drives_push_enqueue_and_the_uploader() {
    let t = setup(&["cache", "upstream"]);
    let top = t.nix.build_expr(&chain_expr("push-manifest", 2)).remove(0);
    let dep = t.nix.closure(&top).into_iter().find(|p| *p != top).unwrap();
    ok(t.push("upstream", &[], &[&dep]));
    let spool = t.dir.path().join("spool");
    let manifest = |key_name: &str| {
        format!(
            "version = 1\n[cache]\nendpoint = \"{}\"\nbucket = \"cache\"\n\
             [push]\nkeyName = \"{key_name}\"\nsigningKeyFile = \"{}\"\n\
             writerCredentialsFile = \"{}\"\ncompression = \"xz\"\ncompressionLevel = 2\n\
             jobs = 2\nskipIfSubstitutable = [\"{}\"]\nspoolDir = \"{}\"\nspoolMaxEntries = 5\n",
            t.s.endpoint,
            t.key_file.display(),
            t.creds.display(),
            cache_url(&t.s, "upstream"),
            spool.display()
        )
    };
    let good = common::write(t.dir.path(), "manifest.toml", &manifest("test-cache-1"));
    // The key file must hold the key the manifest names.
    let wrong = common::write(t.dir.path(), "wrong.toml", &manifest("other-cache-1"));
    let out = t
        .nix
        .helper()
        .args(["push", "--manifest"])
        .arg(&wrong)
        .arg(&top)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("push.keyName"));

    // The hook and the uploader take everything from the manifest.
    let out = t
        .nix
        .helper()
        .args(["enqueue", "--manifest"])
        .arg(&good)
        .env("OUT_PATHS", &top)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(std::fs::read_dir(spool.join("queue")).unwrap().count(), 1);
    let out = t
        .nix
        .helper()
        .args(["upload-queue", "--once", "--manifest"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 served by an upstream cache"));
    let narinfos = check_narinfos(&t.s, "cache");
    assert_eq!(narinfos.len(), 1);
    assert_eq!(narinfos[0].compression.as_deref(), Some("xz"));
    // A flag overrides the manifest.
    let other = t
        .nix
        .build_expr(&chain_expr("push-manifest-2", 1))
        .remove(0);
    let out = t
        .nix
        .helper()
        .args(["push", "--compression", "none", "--manifest"])
        .arg(&good)
        .arg(&other)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        check_narinfos(&t.s, "cache")
            .iter()
            .any(|n| n.store_path == other && n.compression.as_deref() == Some("none"))
    );
}

/// An IAM identity on the test SeaweedFS with `actions` on the bucket,
/// written to an env file.
fn identity(t: &Setup, name: &str, bucket: &str, actions: &[&str]) -> std::path::PathBuf {
    use nix_binary_cache::credentials::Credentials;
    use nix_binary_cache::http::{Endpoint, EndpointConfig};
    use nix_binary_cache::iam::IamClient;
    let iam = IamClient::new(
        Endpoint::new(EndpointConfig::new(&t.s.endpoint).unwrap()).unwrap(),
        Credentials::new(&t.s.admin_key, &t.s.admin_secret),
    );
    let creds = common::cache::block_on(async {
        iam.create_user(name).await.unwrap();
        let p = iam
            .create_policy(
                &format!("{name}-policy"),
                &serde_json::json!({"Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow", "Action": actions,
                    "Resource": [format!("arn:aws:s3:::{bucket}"),
                                 format!("arn:aws:s3:::{bucket}/*")]}]}),
            )
            .await
            .unwrap();
        iam.attach_user_policy(name, &p.arn).await.unwrap();
        iam.create_access_key(name).await.unwrap()
    });
    // New keys take a moment to be honoured.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let p = t.dir.path().join(format!("{name}.env"));
    creds.write_env_file(&p).unwrap();
    p
}

#[test]
fn least_privilege_writer_pushes_and_a_refused_store_stops_early() {
    let t = setup(&["cache"]);
    let top = t.nix.build_expr(&chain_expr("push-writer", 3)).remove(0);
    let big = t.add_random("writer-big.bin", 12 * 1024 * 1024);
    // The writer policy provisioning grants: no delete, no bucket admin.
    let writer = identity(
        &t,
        "writer",
        "cache",
        &[
            "s3:GetObject",
            "s3:PutObject",
            "s3:ListBucket",
            "s3:GetBucketLocation",
            "s3:AbortMultipartUpload",
        ],
    );
    let push_as = |creds: &Path, paths: &[&str]| {
        t.nix
            .helper()
            .args(["push", "--endpoint", &t.s.endpoint, "--bucket", "cache"])
            .arg("--writer-credentials-file")
            .arg(creds)
            .arg("--signing-key-file")
            .arg(&t.key_file)
            .args(paths)
            .output()
            .unwrap()
    };
    let stdout = ok(push_as(&writer, &[&top, &big]));
    assert!(stdout.contains("uploaded 4 paths"), "{stdout}");
    assert_eq!(check_narinfos(&t.s, "cache").len(), 4);

    // An identity that may read but not write: the first refused upload
    // stops the push; the other paths are not tried, nothing is published.
    let reader = identity(&t, "reader", "cache", &["s3:GetObject", "s3:ListBucket"]);
    let others: Vec<String> = (0..6)
        .map(|i| t.add_random(&format!("refused-{i}.bin"), 1000))
        .collect();
    let refs: Vec<&str> = others.iter().map(String::as_str).collect();
    let out = push_as(&reader, &refs);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AccessDenied"), "{err}");
    assert!(
        err.contains("not attempted after the store failed"),
        "{err}"
    );
    assert!(
        err.matches("AccessDenied").count() <= 4,
        "one error per job at most, not one per path:\n{err}"
    );
    assert_eq!(check_narinfos(&t.s, "cache").len(), 4);
}

#[test]
fn progress_is_a_bar_on_a_terminal_and_a_line_per_path_otherwise() {
    let t = setup(&["cache-lines", "cache-tty"]);
    let top = t.nix.build_expr(&chain_expr("push-progress", 2)).remove(0);
    let big = t.add_random("progress.bin", 24 * 1024 * 1024);
    let mut paths = t.nix.closure(&top);
    paths.push(big.clone());

    // Not a terminal (a service's journal, a CI log): one plain line per
    // uploaded path on stderr, the summary on stdout.
    let out = t.push("cache-lines", &[], &[&top, &big]);
    let stdout = ok(out.clone());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("uploaded 3 paths"), "{stdout}");
    for p in &paths {
        assert!(stderr.contains(&format!("uploaded {p} (")), "{p}: {stderr}");
    }
    assert!(
        !stderr.contains('\x1b'),
        "escape codes in a log: {stderr:?}"
    );

    // A terminal: script(1) runs the same push on a pseudo-terminal. The
    // bar shows bytes and the path count; the per-path lines are not shown.
    let mut push = t.nix.helper();
    push.arg("push")
        .args(["--endpoint", &t.s.endpoint, "--bucket", "cache-tty"])
        .arg("--writer-credentials-file")
        .arg(&t.creds)
        .arg("--signing-key-file")
        .arg(&t.key_file)
        .args([&top, &big]);
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_str().unwrap().replace('\'', r"'\''"));
    let line: Vec<String> = std::iter::once(push.get_program())
        .chain(push.get_args())
        .map(quote)
        .collect();
    let mut script = std::process::Command::new("script");
    script
        .args(["-qefc", &line.join(" "), "/dev/null"])
        .stdin(std::process::Stdio::null());
    for (k, v) in push.get_envs() {
        match v {
            Some(v) => script.env(k, v),
            None => script.env_remove(k),
        };
    }
    let out = script.output().unwrap();
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", show(&out));
    assert!(tty.contains("uploaded 3 paths"), "{tty:?}");
    assert!(tty.contains("/3 paths"), "no bar: {tty:?}");
    assert!(tty.contains("MiB"), "no byte count in the bar: {tty:?}");
    for p in &paths {
        assert!(!tty.contains(&format!("uploaded {p} (")), "{p}: {tty:?}");
    }
    assert_eq!(check_narinfos(&t.s, "cache-tty").len(), 3);
}
