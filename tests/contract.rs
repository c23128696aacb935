//! The Nix↔helper contract, from the Rust side: the manifest the NixOS
//! module produces for the README example (`tests/golden/readme-manifest.toml`,
//! regenerated and compared by `tests/eval-modules.sh`) is accepted by the
//! schema, writes every key the schema has, passes `nix-binary-cache check`,
//! and, pointed at a real SeaweedFS, drives `provision --manifest`.
//!
//! Only the values the rig has to change are replaced (endpoint, URLs, file
//! paths), on the parsed TOML, so every other key reaches the helper exactly
//! as the module wrote it.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::seaweed::Seaweed;
use common::{cmd, ok, show};
use nix_binary_cache::credentials::Credentials;
use nix_binary_cache::http::{Endpoint, EndpointConfig};
use nix_binary_cache::manifest;
use nix_binary_cache::s3::S3Client;

const GOLDEN: &str = include_str!("golden/readme-manifest.toml");

/// Dotted paths of every key of a JSON object (nulls skipped: an unset
/// option is absent from the TOML).
fn key_paths(v: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let Some(map) = v.as_object() {
        for (k, v) in map {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                serde_json::Value::Null => {}
                serde_json::Value::Object(_) => key_paths(v, &path, out),
                _ => {
                    out.insert(path);
                }
            }
        }
    }
}

/// Dotted paths of every key of a TOML document.
fn toml_paths(doc: &toml_edit::DocumentMut) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (k, item) in doc.iter() {
        match item.as_table() {
            Some(t) => out.extend(t.iter().map(|(kk, _)| format!("{k}.{kk}"))),
            None => {
                out.insert(k.to_string());
            }
        }
    }
    out
}

#[test]
fn golden_manifest_fits_the_schema_and_writes_every_key() {
    let m = manifest::parse(GOLDEN).unwrap_or_else(|e| panic!("golden manifest: {e}"));
    assert_eq!(m.validate(), vec![], "the golden manifest has problems");
    assert!(
        m.provision.is_some() && m.trust.is_some() && m.push.is_some(),
        "the README example enables every role"
    );

    // The module writes every key, defaults included, so the helper never
    // falls back to a default of its own: every key the parsed manifest has
    // (serde names them as the options are named; unset options are null)
    // is in the file.
    let mut schema = BTreeSet::new();
    key_paths(&serde_json::to_value(&m).unwrap(), "", &mut schema);
    let doc: toml_edit::DocumentMut = GOLDEN.parse().unwrap();
    let written = toml_paths(&doc);
    let missing: Vec<_> = schema.difference(&written).collect();
    assert!(
        missing.is_empty(),
        "keys of src/manifest.rs that nix/manifest.nix does not write: {missing:?}"
    );
}

/// Replaces the value of `section.key`, which must exist already.
fn replace(doc: &mut toml_edit::DocumentMut, section: &str, key: &str, value: &str) {
    let table = doc[section]
        .as_table_mut()
        .unwrap_or_else(|| panic!("no [{section}] in the golden manifest"));
    assert!(
        table.contains_key(key),
        "{section}.{key} is not in the golden manifest"
    );
    table[key] = toml_edit::value(value);
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn golden_manifest_checks_and_provisions_seaweedfs() {
    let sw = Seaweed::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let writer_file = state.join("writer.env");

    let mut doc: toml_edit::DocumentMut = GOLDEN.parse().unwrap();
    let keys_before = toml_paths(&doc);
    let bucket = doc["cache"]["bucket"].as_str().unwrap().to_string();
    replace(&mut doc, "cache", "endpoint", &sw.endpoint);
    replace(
        &mut doc,
        "cache",
        "substituterUrl",
        &format!("{}/{bucket}", sw.endpoint),
    );
    let admin_file = sw.admin_env_file(dir.path());
    replace(
        &mut doc,
        "provision",
        "adminCredentialsFile",
        path_str(&admin_file),
    );
    replace(&mut doc, "provision", "stateDir", path_str(&state));
    let key_file = dir.path().join("keys/s3.example.org-1.sec");
    replace(&mut doc, "push", "signingKeyFile", path_str(&key_file));
    replace(
        &mut doc,
        "push",
        "writerCredentialsFile",
        path_str(&writer_file),
    );
    replace(
        &mut doc,
        "push",
        "spoolDir",
        path_str(&dir.path().join("spool")),
    );
    assert_eq!(toml_paths(&doc), keys_before, "only values were replaced");
    let manifest_file = dir.path().join("manifest.toml");
    std::fs::write(&manifest_file, doc.to_string()).unwrap();

    // What the module's checkPhase runs.
    let o = cmd().arg("check").arg(&manifest_file).output().unwrap();
    assert!(o.status.success(), "check refused it:\n{}", show(&o));

    // What the provision unit runs.
    let run = || {
        cmd()
            .args(["provision", "--manifest", path_str(&manifest_file)])
            .output()
            .unwrap()
    };
    let first = ok(run());
    assert!(
        first.lines().any(|l| l.contains("created")),
        "a fresh store gets created resources:\n{first}"
    );
    let second = ok(run());
    let changed: Vec<&str> = second
        .lines()
        .filter(|l| l.contains("created") || l.contains("updated"))
        .collect();
    assert!(
        changed.is_empty(),
        "a second run changed the store: {changed:?}\n{second}"
    );
    for out in [&first, &second] {
        assert!(
            !out.contains(&sw.admin_secret),
            "the admin secret reached the output"
        );
    }

    // The store is a cache as the manifest describes it: nix-cache-info
    // with the module's priority, readable anonymously, writable by the
    // writer whose credentials provision kept in the state directory.
    let endpoint = Endpoint::new(EndpointConfig::new(&sw.endpoint).unwrap()).unwrap();
    let anon = S3Client::new(endpoint, None, true);
    let info = anon.get_object(&bucket, "nix-cache-info").await.unwrap();
    assert_eq!(
        info.as_deref(),
        Some(&b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 41\n"[..])
    );
    assert!(
        anon.put_object(&bucket, "anonymous", "x", "text/plain")
            .await
            .is_err(),
        "anonymous writes must be refused"
    );
    let writer = anon.with_credentials(Some(Credentials::from_env_file(&writer_file).unwrap()));
    writer
        .put_object(&bucket, "contract-test", "x", "text/plain")
        .await
        .unwrap();
}
