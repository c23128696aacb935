//! `configure` against real Nix 2.8 (`nix show-config` reads what we wrote)
//! and the AWS CLI (reads the profile we merged): foreign lines survive byte
//! for byte, a second run changes nothing, bad input changes nothing, and no
//! secret is printed.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::nix::{TEST_NIX_CONF, TestNix};
use common::{cmd, mode, ok, show};
use nix_binary_cache::signing::SecretKey;

const URL: &str = "http://127.0.0.1:1/test-cache";

fn configure(args: &[&str]) -> Output {
    cmd().arg("configure").args(args).output().unwrap()
}

/// `--nix-conf CONF --substituter SUB [--trusted-public-key KEY] EXTRA...`
/// (no key flag when `key` is empty).
fn conf_args<'a>(conf: &'a str, sub: &'a str, key: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--nix-conf", conf, "--substituter", sub];
    if !key.is_empty() {
        v.extend(["--trusted-public-key", key]);
    }
    v.extend(extra);
    v
}

fn public_key(name: &str) -> String {
    SecretKey::generate(name).unwrap().public().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `nix show-config --json` of `nix`'s configuration, as JSON.
fn show_config(nix: &TestNix) -> serde_json::Value {
    let o = nix.run("nix", &["show-config", "--json"]);
    assert!(
        !stderr(&o).contains("unknown setting"),
        "Nix did not understand a setting: {}",
        show(&o)
    );
    serde_json::from_str(&ok(o)).unwrap()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn nix_reads_the_managed_block_and_keeps_foreign_lines() {
    let nix = TestNix::new();
    let conf = nix.conf_dir().join("nix.conf");
    let foreign =
        format!("# my own settings\n{TEST_NIX_CONF}max-jobs = 3 # inline comment\n\n# end of mine");
    std::fs::write(&conf, &foreign).unwrap();
    let key = public_key("cfg-test-1");
    let retired = public_key("cfg-test-0");
    let key_dir = tempfile::tempdir().unwrap();
    let secret_file = key_dir.path().join("signing.sec");
    let conf_s = conf.to_str().unwrap();
    let args = [
        "--nix-conf",
        conf_s,
        "--substituter",
        URL,
        "--trusted-public-key",
        &key,
        "--trusted-public-key",
        &retired,
        "--secret-key-file",
        secret_file.to_str().unwrap(),
        "--connect-timeout",
        "7",
        "--narinfo-cache-negative-ttl",
        "0",
    ];
    let out = ok(configure(&args));
    assert!(out.contains(": updated"), "{out}");

    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(text.starts_with(&foreign), "foreign text changed:\n{text}");
    let c = show_config(&nix);
    assert_eq!(strings(&c["substituters"]["value"]), [URL]);
    let keys = strings(&c["trusted-public-keys"]["value"]);
    assert!(keys.contains(&key) && keys.contains(&retired), "{keys:?}");
    assert_eq!(
        strings(&c["secret-key-files"]["value"]),
        [secret_file.to_str().unwrap()]
    );
    assert_eq!(c["connect-timeout"]["value"], 7);
    assert_eq!(c["narinfo-cache-negative-ttl"]["value"], 0);
    assert_eq!(c["fallback"]["value"], true);
    assert_eq!(c["max-jobs"]["value"], 3);

    // Second run: byte-identical, not even rewritten, and says so.
    let mtime = std::fs::metadata(&conf).unwrap().mtime_nsec();
    let out = ok(configure(&args));
    assert!(out.contains(": unchanged"), "{out}");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), text);
    assert_eq!(std::fs::metadata(&conf).unwrap().mtime_nsec(), mtime);

    // Retiring a key edits the block only.
    let out = ok(configure(&conf_args(conf_s, URL, &key, &[])));
    assert!(out.contains(": updated"), "{out}");
    let after = std::fs::read_to_string(&conf).unwrap();
    assert!(after.starts_with(&foreign));
    assert!(!after.contains(&retired));
    let keys = strings(&show_config(&nix)["trusted-public-keys"]["value"]);
    assert!(keys.contains(&key) && !keys.contains(&retired), "{keys:?}");
}

#[test]
fn a_moved_block_is_updated_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nix.conf");
    let key = public_key("moved-1");
    ok(configure(&conf_args(
        conf.to_str().unwrap(),
        URL,
        &key,
        &[],
    )));
    assert_eq!(mode(&conf), 0o644);
    // The user moves our block between their own lines and makes the file 0640.
    let block = std::fs::read_to_string(&conf).unwrap();
    let edited = format!("# top\nkeep-outputs = true\n{block}# bottom\nkeep-derivations = true\n");
    std::fs::write(&conf, &edited).unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o640)).unwrap();

    ok(configure(&conf_args(
        conf.to_str().unwrap(),
        "http://127.0.0.1:2/other",
        &key,
        &[],
    )));
    let after = std::fs::read_to_string(&conf).unwrap();
    assert_eq!(
        after,
        edited.replace(URL, "http://127.0.0.1:2/other"),
        "only the block may change"
    );
    assert_eq!(mode(&conf), 0o640, "the file's mode is the user's");
}

#[test]
fn dry_run_shows_a_diff_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nix.conf");
    std::fs::write(&conf, "# mine\n").unwrap();
    let creds = dir.path().join("aws/credentials");
    let writer = write_writer_env(dir.path(), "writer-id", "Sup3rSecretWriterValue");
    let key = public_key("dry-1");
    let argv: Vec<&str> = vec![
        "--nix-conf",
        conf.to_str().unwrap(),
        "--substituter",
        URL,
        "--trusted-public-key",
        &key,
        "--aws-credentials-file",
        creds.to_str().unwrap(),
        "--aws-profile",
        "nbc",
        "--writer-credentials-file",
        writer.to_str().unwrap(),
    ];
    let mut dry = argv.clone();
    dry.push("--dry-run");
    let o = configure(&dry);
    let out = ok(o.clone());
    assert!(
        out.contains(&format!("+extra-substituters = {URL}")),
        "{out}"
    );
    assert!(out.contains(" # mine"), "{out}");
    assert!(
        out.contains("+[nbc]") && out.contains("+aws_access_key_id = writer-id"),
        "{out}"
    );
    assert!(
        out.contains("would be updated") && out.contains("would be created"),
        "{out}"
    );
    assert!(!out.contains("Sup3rSecretWriterValue") && !stderr(&o).contains("Sup3rSecret"));
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "# mine\n");
    assert!(!creds.exists() && !creds.parent().unwrap().exists());

    // Once written, a dry run has nothing to show.
    ok(configure(&argv));
    let out = ok(configure(&dry));
    assert!(!out.contains("---") && !out.contains("+++"), "{out}");
    assert_eq!(out.matches("unchanged").count(), 2, "{out}");

    // A credentials file others can read: only its mode would change, and
    // the dry run leaves even that alone.
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = ok(configure(&dry));
    assert!(
        out.contains(&format!("mode of {} would become 0600", creds.display())),
        "{out}"
    );
    assert!(out.contains("[nbc]: would be updated"), "{out}");
    assert!(!out.contains("---") && !out.contains("+++"), "{out}");
    assert_eq!(mode(&creds), 0o644);
    ok(configure(&argv));
    assert_eq!(mode(&creds), 0o600);

    // A changed secret shows as changed, masked.
    write_writer_env(dir.path(), "writer-id", "An0therSecretValue");
    let o = configure(&dry);
    let out = ok(o.clone());
    assert!(
        out.contains("+aws_secret_access_key = ******** (new)"),
        "{out}"
    );
    assert!(out.contains("-aws_secret_access_key = ********\n"), "{out}");
    for s in ["Sup3rSecretWriterValue", "An0therSecretValue"] {
        assert!(!out.contains(s) && !stderr(&o).contains(s), "{}", show(&o));
    }
}

fn write_writer_env(dir: &Path, id: &str, secret: &str) -> PathBuf {
    let p = dir.join("writer.env");
    std::fs::write(
        &p,
        format!("AWS_ACCESS_KEY_ID={id}\nAWS_SECRET_ACCESS_KEY={secret}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// `aws configure get KEY --profile P` with the given credentials file:
/// the AWS CLI is the oracle for the file we wrote (it reads it locally).
fn aws_get(creds: &Path, profile: &str, key: &str) -> String {
    let aws = common::venv().join("bin/aws");
    let o = Command::new(aws)
        .args(["configure", "get", key, "--profile", profile])
        .env("AWS_SHARED_CREDENTIALS_FILE", creds)
        .env("AWS_CONFIG_FILE", creds.with_file_name("no-config"))
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    ok(o).trim().to_string()
}

#[test]
fn aws_profile_is_merged_and_read_by_the_aws_cli() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    let foreign = "# managed by me\n[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = defaultsecret\n\n; work\n[work]\naws_access_key_id=AKIAWORK\naws_secret_access_key=worksecret\nregion = eu-west-1\n";
    std::fs::write(&creds, foreign).unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
    let writer = write_writer_env(dir.path(), "nbc-writer", "WriterSecret123");
    let args = [
        "--aws-credentials-file",
        creds.to_str().unwrap(),
        "--aws-profile",
        "nix-cache",
        "--writer-credentials-file",
        writer.to_str().unwrap(),
    ];
    let o = configure(&args);
    let out = ok(o.clone());
    assert!(out.contains("[nix-cache]: updated"), "{out}");
    assert!(!out.contains("WriterSecret123") && !stderr(&o).contains("WriterSecret123"));
    let text = std::fs::read_to_string(&creds).unwrap();
    assert!(text.starts_with(foreign), "{text}");
    assert_eq!(mode(&creds), 0o600, "the credentials file must be 0600");

    for (profile, key, want) in [
        ("nix-cache", "aws_access_key_id", "nbc-writer"),
        ("nix-cache", "aws_secret_access_key", "WriterSecret123"),
        ("work", "aws_secret_access_key", "worksecret"),
        ("default", "aws_access_key_id", "AKIADEFAULT"),
    ] {
        assert_eq!(aws_get(&creds, profile, key), want, "[{profile}] {key}");
    }

    let out = ok(configure(&args));
    assert!(out.contains("unchanged"), "{out}");
    assert_eq!(std::fs::read_to_string(&creds).unwrap(), text);

    // A new secret replaces only our profile's secret line.
    write_writer_env(dir.path(), "nbc-writer", "RotatedSecret456");
    let out = ok(configure(&args));
    assert!(out.contains("updated"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&creds).unwrap(),
        text.replace("WriterSecret123", "RotatedSecret456")
    );
    assert_eq!(
        aws_get(&creds, "nix-cache", "aws_secret_access_key"),
        "RotatedSecret456"
    );

    // A missing file (and ~/.aws) is created 0600 / 0700.
    let fresh = dir.path().join("home/.aws/credentials");
    ok(configure(&[
        "--aws-credentials-file",
        fresh.to_str().unwrap(),
        "--writer-credentials-file",
        writer.to_str().unwrap(),
    ]));
    assert_eq!(mode(&fresh), 0o600);
    assert_eq!(mode(fresh.parent().unwrap()), 0o700);
    assert_eq!(
        aws_get(&fresh, "default", "aws_access_key_id"),
        "nbc-writer"
    );
}

#[test]
fn a_nix_conf_from_the_store_is_refused() {
    let nix = TestNix::new();
    let dir = tempfile::tempdir().unwrap();
    let src = common::write(dir.path(), "hm-nix.conf", "substituters =\n");
    let store_file = nix.add(&src);
    let link = dir.path().join("nix.conf");
    std::os::unix::fs::symlink(&store_file, &link).unwrap();
    let o = configure(&conf_args(
        link.to_str().unwrap(),
        URL,
        &public_key("hm-1"),
        &[],
    ));
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = stderr(&o);
    assert!(
        err.contains("home-manager") && err.contains("nix.settings") && err.contains("nix.conf"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        PathBuf::from(&store_file)
    );

    // A link elsewhere (a dotfile manager) is followed and stays a link.
    let real = common::write(dir.path(), "dotfiles/nix.conf", "# dotfiles\n");
    let link2 = dir.path().join("linked.conf");
    std::os::unix::fs::symlink(&real, &link2).unwrap();
    ok(configure(&conf_args(
        link2.to_str().unwrap(),
        URL,
        &public_key("hm-1"),
        &[],
    )));
    assert!(
        std::fs::symlink_metadata(&link2)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(std::fs::read_to_string(&real).unwrap().contains(URL));
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let conf = common::write(dir.path(), "nix.conf", "# mine\n");
    let key = public_key("bad-1");
    let c = conf.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (conf_args(c, URL, "bad-1:AAAA", &[]), "--trusted-public-key"),
        (conf_args(c, URL, "nocolon", &[]), "--trusted-public-key"),
        (conf_args(c, "not a url", &key, &[]), "--substituter"),
        (conf_args(c, URL, "", &[]), "--trusted-public-key"),
        (
            conf_args(c, URL, &key, &["--secret-key-file", "rel/key"]),
            "--secret-key-file",
        ),
        (vec!["--substituter", URL], "--nix-conf"),
        (vec![], "nothing to do"),
    ];
    for (args, want) in &cases {
        let o = configure(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", show(&o));
        assert!(
            stderr(&o).contains(want),
            "{args:?}: want {want}: {}",
            show(&o)
        );
    }
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "# mine\n");

    // A broken managed block is reported with its line and left alone.
    let broken = "# mine\n# BEGIN nix-binary-cache (managed)\nextra-substituters = x\n";
    std::fs::write(&conf, broken).unwrap();
    let o = configure(&conf_args(c, URL, &key, &[]));
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        stderr(&o).contains("line 2") && stderr(&o).contains(c),
        "{}",
        show(&o)
    );
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), broken);

    // A directory where nix.conf should be.
    let o = configure(&conf_args(dir.path().to_str().unwrap(), URL, &key, &[]));
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(stderr(&o).contains("is a directory"), "{}", show(&o));

    // A writer credentials file without the secret: named, nothing written,
    // and the part that is there is not echoed.
    let writer = common::write(
        dir.path(),
        "writer.env",
        "AWS_ACCESS_KEY_ID=only-id\nAWS_SECRET=HalfSecretValue\n",
    );
    let creds = dir.path().join("credentials");
    let o = configure(&[
        "--aws-credentials-file",
        creds.to_str().unwrap(),
        "--writer-credentials-file",
        writer.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(stderr(&o).contains("writer.env") && stderr(&o).contains("AWS_SECRET_ACCESS_KEY"));
    assert!(!stderr(&o).contains("HalfSecretValue"));
    assert!(!creds.exists());
    // The flags belong together.
    let o = configure(&["--aws-credentials-file", creds.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        stderr(&o).contains("--writer-credentials-file"),
        "{}",
        show(&o)
    );

    // No temporary files left anywhere.
    assert_eq!(common::listing(dir.path()), ["nix.conf", "writer.env"]);
}

#[test]
fn an_untrusted_user_is_told_the_daemon_ignores_the_file() {
    common::require_tool("setpriv", "--version");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let daemon_dir = dir.path().join("etc-nix");
    std::fs::create_dir(&daemon_dir).unwrap();
    std::fs::set_permissions(&daemon_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let user_conf = dir.path().join("user-nix.conf");
    let key = public_key("untrusted-1");
    let run_as_nobody = |trusted: &str| {
        std::fs::write(
            daemon_dir.join("nix.conf"),
            format!("trusted-users = {trusted}\n"),
        )
        .unwrap();
        std::fs::set_permissions(
            daemon_dir.join("nix.conf"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(common::bin())
            .args([
                "configure",
                "--nix-conf",
                user_conf.to_str().unwrap(),
                "--substituter",
                URL,
            ])
            .args(["--trusted-public-key", &key])
            .env("NIX_CONF_DIR", &daemon_dir)
            .env("HOME", dir.path())
            .output()
            .unwrap()
    };
    let o = run_as_nobody("root @wheel");
    assert!(o.status.success(), "{}", show(&o));
    let err = stderr(&o);
    assert!(
        err.contains("warning") && err.contains("nobody") && err.contains("trusted-users"),
        "{err}"
    );
    assert!(
        err.contains("trusted-substituters") && err.contains("as root"),
        "{err}"
    );
    assert!(std::fs::read_to_string(&user_conf).unwrap().contains(URL));

    for trusted in ["root nobody", "@nogroup", "*"] {
        let o = run_as_nobody(trusted);
        assert!(o.status.success(), "{}", show(&o));
        assert!(!stderr(&o).contains("warning"), "{trusted}: {}", show(&o));
    }
}

#[test]
fn no_secret_in_argv_env_or_output() {
    let dir = tempfile::tempdir().unwrap();
    let secret = nix_binary_cache::credentials::random_secret();
    let writer = write_writer_env(dir.path(), "writer-id", &secret);
    let creds = dir.path().join("credentials");
    for extra in [&["--dry-run"][..], &[], &["--dry-run"]] {
        let mut args = vec![
            "configure",
            "--aws-credentials-file",
            creds.to_str().unwrap(),
        ];
        args.extend(["--writer-credentials-file", writer.to_str().unwrap()]);
        args.extend(extra);
        let (out, trace) = common::traced_run(&args);
        for text in [trace, out] {
            assert!(!text.contains(&secret), "the secret leaked: {text}");
        }
    }
    assert!(std::fs::read_to_string(&creds).unwrap().contains(&secret));
}
