//! A private Nix environment for tests: its own nix.conf (no substituters,
//! so nothing but loopback is contacted; negative narinfo caching off), its
//! own XDG cache, and helpers for separate store roots ("other machines").

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Settings every test Nix runs with.
pub const TEST_NIX_CONF: &str = "\
experimental-features = nix-command
substituters =
narinfo-cache-negative-ttl = 0
narinfo-cache-positive-ttl = 0
require-sigs = true
sandbox = false
build-users-group =
";

/// A private Nix configuration and cache directory.
pub struct TestNix {
    /// Holds `nix.conf` (passed as `NIX_CONF_DIR`) and the XDG cache.
    pub dir: tempfile::TempDir,
}

impl TestNix {
    /// A fresh environment with [`TEST_NIX_CONF`].
    pub fn new() -> TestNix {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("conf")).unwrap();
        std::fs::write(dir.path().join("conf/nix.conf"), TEST_NIX_CONF).unwrap();
        std::fs::create_dir_all(dir.path().join("cache")).unwrap();
        TestNix { dir }
    }

    /// The directory holding nix.conf.
    pub fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("conf")
    }

    /// A `Command` for a Nix tool (`nix`, `nix-store`, `nix-build`, ...)
    /// in this environment.
    pub fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.env("NIX_CONF_DIR", self.conf_dir())
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env_remove("NIX_REMOTE")
            .env("NIX_PATH", "");
        c
    }

    /// Same as [`TestNix::command`] for the helper binary, so that the
    /// `nix` it spawns sees this environment too.
    pub fn helper(&self) -> Command {
        let mut c = super::cmd();
        c.env("NIX_CONF_DIR", self.conf_dir())
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env_remove("NIX_REMOTE");
        c
    }

    /// Runs `tool args...` and returns its output.
    pub fn run(&self, tool: &str, args: &[&str]) -> Output {
        self.command(tool).args(args).output().expect("nix runs")
    }

    /// Adds a file to the store with `nix-store --add`, returning its path.
    pub fn add(&self, path: &Path) -> String {
        super::ok(self.run("nix-store", &["--add", path.to_str().unwrap()]))
            .trim()
            .to_string()
    }

    /// The closure of `path` (`nix-store --query --requisites`),
    /// dependencies first.
    pub fn closure(&self, path: &str) -> Vec<String> {
        super::ok(self.run("nix-store", &["--query", "--requisites", path]))
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `nix copy` of `paths` from the binary cache at `url` into a fresh
    /// store root (another machine), trusting `public_key` and nothing
    /// else; signatures are required ([`TEST_NIX_CONF`]).
    pub fn substitute<S: AsRef<std::ffi::OsStr>>(
        &self,
        url: &str,
        public_key: &str,
        paths: &[S],
    ) -> Output {
        let (_d, root) = fresh_store();
        self.command("nix")
            .args(["copy", "--from", url, "--to", &root])
            .args(["--option", "trusted-public-keys", public_key])
            .args(paths)
            .output()
            .unwrap()
    }

    /// Builds a derivation from a Nix expression string (a shell builder
    /// using only `/bin/sh`, no nixpkgs), returning the output paths.
    pub fn build_expr(&self, expr: &str) -> Vec<String> {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("default.nix");
        std::fs::write(&f, expr).unwrap();
        let out = super::ok(self.run("nix-build", &["--no-out-link", f.to_str().unwrap()]));
        out.lines().map(str::to_string).collect()
    }
}

impl Default for TestNix {
    fn default() -> Self {
        Self::new()
    }
}

/// A Nix expression with `n` chained derivations (each referencing the
/// previous one) whose contents include `salt`, so every test builds paths
/// of its own. The last derivation is the attribute `top`.
pub fn chain_expr(salt: &str, n: usize) -> String {
    let mut s = String::from(
        "let\n  mk = name: deps: text: derivation {\n    inherit name;\n    system = builtins.currentSystem;\n    builder = \"/bin/sh\";\n    args = [ \"-c\" ''\n      /bin/mkdir -p $out/bin $out/share\n      echo \"${text}\" > $out/share/data\n      for d in ${toString deps}; do echo \"$d\" >> $out/share/deps; done\n      printf '#!/bin/sh\\necho hello\\n' > $out/bin/hello\n      /bin/chmod +x $out/bin/hello\n    '' ];\n  };\n",
    );
    s.push_str(&format!("  d0 = mk \"{salt}-0\" [ ] \"{salt} 0\";\n"));
    for i in 1..n {
        s.push_str(&format!(
            "  d{i} = mk \"{salt}-{i}\" [ d{} ] \"{salt} {i}\";\n",
            i - 1
        ));
    }
    s.push_str(&format!("in d{}\n", n - 1));
    s
}

/// A store root of its own: another machine for substitution tests.
pub fn fresh_store() -> (tempfile::TempDir, String) {
    let d = tempfile::tempdir().unwrap();
    let s = d.path().join("store-root").display().to_string();
    (d, s)
}
