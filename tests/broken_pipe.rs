//! The helper's output piped into a reader that has gone (`... | head -1`,
//! `... | grep -q`): it stops quietly with the status a SIGPIPE death
//! gives (141), without a panic message or backtrace.

mod common;

use std::process::Stdio;

#[test]
fn closed_stdout_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    common::ok(
        common::cmd()
            .args([
                "keys",
                "generate",
                "--name",
                "pipe.example.org-1",
                "--secret-key-file",
            ])
            .arg(&key)
            .output()
            .unwrap(),
    );
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = common::cmd()
        .args(["keys", "public"])
        .arg(&key)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(141), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
