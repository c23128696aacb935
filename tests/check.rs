//! `check MANIFEST`: the example manifest passes; every kind of mistake is
//! reported with the option path and a fix, all of them at once, exit 2;
//! schema errors carry line and column.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{cmd, ok, show};

fn example() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/manifest.toml"),
    )
    .unwrap()
}

/// The example with each `(from, to)` replacement applied at the start of
/// a line (so the commented module example at the top is left alone).
fn variant(edits: &[(&str, &str)]) -> String {
    let mut text = example();
    for (from, to) in edits {
        let from = format!("\n{from}");
        assert!(text.contains(&from), "the example has no line `{from}`");
        text = text.replacen(&from, &format!("\n{to}"), 1);
    }
    text
}

fn check_text(text: &str) -> (Output, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = common::write(dir.path(), "manifest.toml", text);
    let o = cmd().arg("check").arg(&path).output().unwrap();
    (o, path, dir)
}

/// Runs `check` and returns stderr, asserting exit 2.
fn failing(text: &str) -> String {
    let (o, path, _dir) = check_text(text);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(o.stdout.is_empty(), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        err.contains(path.to_str().unwrap()),
        "the file is not named: {err}"
    );
    err
}

#[test]
fn the_example_manifest_is_ok() {
    let (o, _, _dir) = check_text(&example());
    assert_eq!(ok(o).trim(), "ok");
    let m = nix_binary_cache::manifest::parse(&example()).unwrap();
    assert!(m.validate().is_empty());
    assert_eq!(m.push.unwrap().key_name, "s3.example.org-2");

    // The smallest manifest: only the cache; defaults fill the rest.
    let (o, _, _dir) = check_text(
        "version = 1\n[cache]\nendpoint = \"http://127.0.0.1:9000\"\nbucket = \"nix-cache\"\n",
    );
    assert_eq!(ok(o).trim(), "ok");
}

/// Edits to the example, the option path that must be named, and a piece
/// of the fix that must be in the message.
type Case = (
    &'static [(&'static str, &'static str)],
    &'static str,
    &'static str,
);

#[test]
fn each_mistake_names_the_option_and_the_fix() {
    let cases: &[Case] = &[
        (
            &[("version = 1", "version = 2")],
            "version",
            "reads version 1",
        ),
        (
            &[(
                "endpoint = \"https://s3.example.org\"",
                "endpoint = \"s3.example.org\"",
            )],
            "cache.endpoint",
            "https://",
        ),
        (
            &[(
                "endpoint = \"https://s3.example.org\"",
                "endpoint = \"http://s3.example.org\"",
            )],
            "cache.endpoint",
            "allowInsecureHttp",
        ),
        (
            &[("bucket = \"nix-cache\"", "bucket = \"Nix_Cache\"")],
            "cache.bucket",
            "lowercase",
        ),
        (
            &[("bucket = \"nix-cache\"", "bucket = \"nc\"")],
            "cache.bucket",
            "3 to 63",
        ),
        (
            &[(
                "substituterUrl = \"https://s3.example.org/nix-cache\"",
                "substituterUrl = \"nope\"",
            )],
            "cache.substituterUrl",
            "valid URL",
        ),
        (
            &[(
                "adminCredentialsFile = \"/run/secrets/minio-root\"",
                "adminCredentialsFile = \"/nix/store/abc-minio-root\"",
            )],
            "provision.adminCredentialsFile",
            "/nix/store",
        ),
        (
            &[(
                "writerCredentialsFile = \"/run/secrets/nix-cache-writer.env\"",
                "writerCredentialsFile = \"/nix/store/x-writer.env\"",
            )],
            "push.writerCredentialsFile",
            "/nix/store",
        ),
        (
            &[(
                "stateDir = \"/var/lib/nix-binary-cache\"",
                "stateDir = \"/var/lib/nix-binary-cache\"\nwriterCredentialsFile = \"/nix/store/y-w.env\"",
            )],
            "provision.writerCredentialsFile",
            "/nix/store",
        ),
        (
            &[(
                "signingKeyFile = \"/var/lib/nix-binary-cache/signing-key\"",
                "signingKeyFile = \"/nix/store/z-signing-key\"",
            )],
            "push.signingKeyFile",
            "not a Nix path literal",
        ),
        (
            &[(
                "signingKeyFile = \"/var/lib/nix-binary-cache/signing-key\"",
                "signingKeyFile = \"signing-key\"",
            )],
            "push.signingKeyFile",
            "absolute",
        ),
        (
            &[(
                "keyName = \"s3.example.org-2\"",
                "keyName = \"s3.example.org\"",
            )],
            "push.keyName",
            "-N",
        ),
        (
            &[("keyName = \"s3.example.org-2\"", "keyName = \"s3:1\"")],
            "push.keyName",
            "`:`",
        ),
        (
            &[(
                "publicKeys = [\"s3.example.org-2:1RUPVOxO4uOJcBaPnu0BmcozzNTKsMNZAn7+Oy1MHBE=\"]",
                "publicKeys = [\"s3.example.org-2:1RUPVOxO4uOJ\"]",
            )],
            "trust.publicKeys[0]",
            "keys public",
        ),
        (
            &[(
                "retiredPublicKeys = [\"s3.example.org-1:",
                "retiredPublicKeys = [\"s3.example.org-2:",
            )],
            "trust.retiredPublicKeys[0]",
            "first key of each name",
        ),
        (
            &[("compression = \"zstd\"", "compression = \"brotli\"")],
            "push.compression",
            "`zstd`, `xz`, `none`",
        ),
        (
            &[("compressionLevel = 3", "compressionLevel = 30")],
            "push.compressionLevel",
            "1 to 19",
        ),
        (
            // The example sets compressionLevel = 3; `none` takes no level.
            &[("compression = \"zstd\"", "compression = \"none\"")],
            "push.compressionLevel",
            "leave it unset",
        ),
        (&[("jobs = 4", "jobs = 0")], "push.jobs", "at least 1"),
        (
            &[("spoolMaxEntries = 10000", "spoolMaxEntries = 0")],
            "push.spoolMaxEntries",
            "at least 1",
        ),
        (
            &[(
                "writerUser = \"nix-cache-writer\"",
                "writerUser = \"nix cache\"",
            )],
            "provision.writerUser",
            "letters",
        ),
        (
            &[(
                "skipIfSubstitutable = [\"https://cache.nixos.org\"]",
                "skipIfSubstitutable = [\"cache.nixos.org\"]",
            )],
            "push.skipIfSubstitutable[0]",
            "valid URL",
        ),
    ];
    for (edits, field, fix) in cases {
        let err = failing(&variant(edits));
        let line = err
            .lines()
            .find(|l| l.contains(&format!(": {field}: ")))
            .unwrap_or_else(|| panic!("no problem for {field}:\n{err}"));
        assert!(line.contains(fix), "{field}: want {fix:?} in {line}");
        assert!(
            err.contains("1 problem in"),
            "{field}: expected exactly one problem:\n{err}"
        );
    }

    // http to loopback needs no opt-in; to a remote host it does.
    let (o, _, _d) = check_text(&variant(&[(
        "endpoint = \"https://s3.example.org\"",
        "endpoint = \"http://127.0.0.1:9000\"",
    )]));
    assert_eq!(ok(o).trim(), "ok");
    let (o, _, _d) = check_text(&variant(&[
        (
            "endpoint = \"https://s3.example.org\"",
            "endpoint = \"http://s3.lan:9000\"",
        ),
        ("allowInsecureHttp = false", "allowInsecureHttp = true"),
    ]));
    assert_eq!(ok(o).trim(), "ok");
}

#[test]
fn all_problems_are_reported_at_once() {
    let err = failing(&variant(&[
        ("version = 1", "version = 0"),
        ("bucket = \"nix-cache\"", "bucket = \"-bad-\""),
        ("jobs = 4", "jobs = 0"),
        ("keyName = \"s3.example.org-2\"", "keyName = \"plain\""),
    ]));
    for field in ["version", "cache.bucket", "push.jobs", "push.keyName"] {
        assert!(
            err.contains(&format!(": {field}: ")),
            "{field} missing:\n{err}"
        );
    }
    assert!(err.contains("4 problems in"), "{err}");
}

#[test]
fn schema_errors_point_at_line_and_column() {
    // An unknown field (a typo, or a module newer than the helper).
    let text = variant(&[("jobs = 4", "jobs = 4\nretries = 3")]);
    let line = text.lines().position(|l| l == "retries = 3").unwrap() + 1;
    let err = failing(&text);
    assert!(err.contains(&format!("line {line}, column 1")), "{err}");
    assert!(
        err.contains("unknown field `retries`") && err.contains("`jobs`"),
        "{err}"
    );

    // A type error.
    let text = variant(&[("jobs = 4", "jobs = \"four\"")]);
    let line = text.lines().position(|l| l == "jobs = \"four\"").unwrap() + 1;
    let err = failing(&text);
    assert!(err.contains(&format!("line {line}, column 8")), "{err}");
    assert!(err.contains("invalid type"), "{err}");

    // An unknown backend.
    let err = failing(&variant(&[("backend = \"minio\"", "backend = \"ceph\"")]));
    assert!(
        err.contains("unknown variant `ceph`") && err.contains("column 11"),
        "{err}"
    );

    // A missing required field.
    let err = failing(&variant(&[("bucket = \"nix-cache\"\n", "")]));
    assert!(
        err.contains("missing field `bucket`") && err.contains("line "),
        "{err}"
    );

    // Not TOML at all.
    let err = failing("version = 1\n[cache\n");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn unreadable_manifests_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let o = cmd().arg("check").arg(dir.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is a directory"));
    let missing = dir.path().join("missing.toml");
    let o = cmd().arg("check").arg(&missing).output().unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("missing.toml"),
        "{}",
        show(&o)
    );
}
