//! Test support shared by the integration tests: a real SeaweedFS S3 server
//! on loopback, a private Nix environment, and helpers to run the binary.
//!
//! Everything here talks to 127.0.0.1 only.

#![allow(dead_code)]

pub mod cache;
pub mod minio_standin;
pub mod nix;
pub mod proxy;
pub mod queue;
pub mod seaweed;
pub mod store;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The helper binary built by cargo for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nix-binary-cache"))
}

/// A `Command` for the helper binary with a clean, loopback-only environment.
pub fn cmd() -> Command {
    let mut c = Command::new(bin());
    c.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("NO_COLOR", "1");
    c
}

/// Stdout and stderr of an output, for assertion messages.
pub fn show(o: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Asserts success and returns stdout as text.
#[track_caller]
pub fn ok(o: Output) -> String {
    assert!(o.status.success(), "command failed:\n{}", show(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, text).unwrap();
    p
}

/// The Python venv made by `scripts/setup.sh` (SeaweedFS, the MinIO SDK, awscli).
pub fn venv() -> PathBuf {
    if let Some(v) = std::env::var_os("NBC_VENV") {
        return PathBuf::from(v);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache")
        });
    let v = cache.join("nix-binary-cache-dev/venv");
    assert!(
        v.join("bin/weed").exists(),
        "no test venv at {}: run scripts/setup.sh (or scripts/test.sh) first",
        v.display()
    );
    v
}

/// Runs `tests/minio_sdk.py` (MinIO's Python SDK, the oracle) with `args`,
/// `env` and the JSON `input` on stdin; returns its JSON answer.
pub fn minio_sdk(
    args: &[&str],
    env: &[(&str, &str)],
    input: &serde_json::Value,
) -> serde_json::Value {
    use std::io::Write;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/minio_sdk.py");
    let mut child = Command::new(venv().join("bin/python"))
        .arg(script)
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the venv python runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(input).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "minio_sdk.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("minio_sdk.py answers JSON")
}

/// Runs the helper with `args` under `strace -f -v -e trace=execve`, and
/// returns its stdout+stderr and the trace: the argv and environment of
/// every program it (or anything it spawns) executes, for checking that no
/// secret is passed on a command line. The command must succeed.
pub fn traced_run(args: &[&str]) -> (String, String) {
    let mut c = cmd();
    c.args(args);
    let (status, out, trace) = traced(&c);
    assert!(status.success(), "{args:?} failed:\n{out}");
    (out, trace)
}

/// Runs `command` (program, arguments, environment changes and working
/// directory as set on it) under `strace -f -v -e trace=execve`; returns
/// its exit status, stdout+stderr and the trace.
pub fn traced(command: &Command) -> (std::process::ExitStatus, String, String) {
    require_tool("strace", "-V");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("strace.log");
    let mut c = Command::new("strace");
    c.args(["-f", "-v", "-s", "65536", "-e", "trace=execve", "-o"])
        .arg(&log)
        .arg(command.get_program())
        .args(command.get_args());
    for (k, v) in command.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    if let Some(d) = command.get_current_dir() {
        c.current_dir(d);
    }
    let o = c.output().unwrap();
    let trace = std::fs::read_to_string(&log).unwrap();
    assert!(trace.contains("execve("), "strace logged nothing: {trace}");
    let mut out = String::from_utf8_lossy(&o.stdout).into_owned();
    out.push_str(&String::from_utf8_lossy(&o.stderr));
    (o.status, out, trace)
}

/// Fails the test unless `tool` runs (`tool probe`). The tests need the
/// tools scripts/setup.sh installs; a test that passed without them would
/// have checked nothing.
pub fn require_tool(tool: &str, probe: &str) {
    assert!(
        Command::new(tool).arg(probe).output().is_ok(),
        "{tool} is not installed: run scripts/setup.sh, which installs what the tests need"
    );
}

/// The names of the entries of `dir`, sorted: to check that nothing
/// (no temporary or partial file) was left behind.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Asserts that none of `secrets`, nor the secret of the env file
/// `writer_file` when it exists, reached a run's stdout or stderr.
#[track_caller]
pub fn assert_no_secret(o: &Output, secrets: &[&str], writer_file: &Path) {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    for s in secrets {
        assert!(!all.contains(s), "a secret leaked:\n{all}");
    }
    if let Ok(text) = std::fs::read_to_string(writer_file)
        && let Ok(w) = nix_binary_cache::credentials::Credentials::parse_env(&text)
    {
        assert!(
            !all.contains(&w.secret_access_key),
            "writer secret leaked:\n{all}"
        );
    }
}

/// The permission bits of `path` (with setuid, setgid and sticky): what
/// a test compares with 0o600 for a file that holds a secret.
#[track_caller]
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The JSON document a `--json` run printed.
#[track_caller]
pub fn json_stdout(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|err| panic!("not JSON ({err}):\n{}", show(o)))
}

/// A string unique to this moment and process, so that every test builds
/// store paths of its own (`tag` says which test).
pub fn salt(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{tag}-{}-{nanos}", std::process::id())
}

/// Runs `keys generate --name NAME --secret-key-file FILE`, asserting
/// success; returns the public key it prints last.
pub fn generate_key(file: &Path, name: &str) -> String {
    let out = ok(cmd()
        .args(["keys", "generate", "--name", name, "--secret-key-file"])
        .arg(file)
        .output()
        .unwrap());
    out.lines().last().expect("a public key line").to_string()
}
