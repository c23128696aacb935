//! The cache's settings in a `nix.conf`, as one marked block that we own.
//!
//! NixOS gets these settings from the module (`nix.settings`); everywhere
//! else (plain Nix, a home-manager user without the module's `nix.settings`)
//! `configure` writes them between two marker lines and leaves every other
//! line and comment alone, byte for byte. The block uses the `extra-` forms
//! of list settings, which *append* to whatever the rest of the file (or an
//! included file) sets, so a user's own `substituters` line stays valid; and
//! it goes at the end of the file, after any base keys (Nix applies `extra-`
//! keys in order, see nix#9487).
//!
//! The daemon ignores substituters and keys from an untrusted user's own
//! `nix.conf`; [`untrusted_user_warning`] says so instead of letting the
//! settings fail silently. Parsing helpers here ([`parse_conf`],
//! [`effective_list`]) are also what `doctor` uses to read the daemon's view.

use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::signing::PublicKey;

/// First line of the managed block.
pub const BEGIN_MARKER: &str = "# BEGIN nix-binary-cache (managed)";
/// Last line of the managed block.
pub const END_MARKER: &str = "# END nix-binary-cache";

/// What the managed block sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheSettings {
    /// Substituter URLs (`extra-substituters`).
    pub substituters: Vec<String>,
    /// Public keys, `name:base64` (`extra-trusted-public-keys`).
    pub trusted_public_keys: Vec<String>,
    /// Secret key files that sign locally built paths (`extra-secret-key-files`).
    pub secret_key_files: Vec<PathBuf>,
    /// `connect-timeout` in seconds, so an unreachable cache costs little.
    pub connect_timeout: Option<u32>,
    /// `narinfo-cache-negative-ttl` in seconds.
    pub narinfo_cache_negative_ttl: Option<u32>,
    /// `fallback = true`: build locally when the cache fails.
    pub fallback: bool,
}

impl CacheSettings {
    /// Checks every value; the message names the flag/option (`field`
    /// prefixes are the CLI's) and what to do.
    pub fn validate(&self) -> Result<(), (String, String)> {
        // Nix cuts every nix.conf line at its first `#`, wherever it is.
        let files: Vec<String> = self
            .secret_key_files
            .iter()
            .map(|f| f.to_string_lossy().into_owned())
            .collect();
        for (flag, values) in [
            ("--substituter", &self.substituters),
            ("--trusted-public-key", &self.trusted_public_keys),
            ("--secret-key-file", &files),
        ] {
            if let Some(v) = values.iter().find(|v| v.contains('#')) {
                return Err((
                    flag.into(),
                    format!("`{v}` contains `#`, which starts a comment in nix.conf"),
                ));
            }
        }
        if self.substituters.is_empty() {
            return Err(("--substituter".into(), "give at least one cache URL".into()));
        }
        for s in &self.substituters {
            let ok = url::Url::parse(s).is_ok_and(|u| u.has_host() || u.scheme() == "file");
            if !ok || s.chars().any(char::is_whitespace) {
                return Err((
                    "--substituter".into(),
                    format!("`{s}` is not a URL; write it like https://s3.example.org/nix-cache"),
                ));
            }
        }
        if self.trusted_public_keys.is_empty() {
            return Err((
                "--trusted-public-key".into(),
                "give at least one public key (`keys public` prints it); a cache whose \
                 signatures nobody trusts is never used"
                    .into(),
            ));
        }
        for k in &self.trusted_public_keys {
            PublicKey::parse(k)
                .map_err(|m| ("--trusted-public-key".into(), format!("`{k}` {m}")))?;
            // The parser forgives surrounding whitespace; a nix.conf list
            // would split there.
            if k.chars().any(char::is_whitespace) {
                return Err((
                    "--trusted-public-key".into(),
                    format!("`{k}` contains whitespace; give the key as `name:base64`"),
                ));
            }
        }
        for f in &self.secret_key_files {
            let text = f.to_string_lossy();
            if !f.is_absolute() || text.chars().any(char::is_whitespace) {
                return Err((
                    "--secret-key-file".into(),
                    format!("`{text}` must be an absolute path without whitespace"),
                ));
            }
        }
        Ok(())
    }
}

/// Renders the managed block, marker lines included, ending in a newline.
pub fn render_block(s: &CacheSettings) -> String {
    let mut out = String::new();
    out.push_str(BEGIN_MARKER);
    out.push('\n');
    out.push_str(
        "# Written by `nix-binary-cache configure`; edits inside this block are replaced.\n",
    );
    let list = |out: &mut String, key: &str, items: &[String]| {
        if !items.is_empty() {
            out.push_str(&format!("{key} = {}\n", items.join(" ")));
        }
    };
    list(&mut out, "extra-substituters", &s.substituters);
    list(
        &mut out,
        "extra-trusted-public-keys",
        &s.trusted_public_keys,
    );
    let files: Vec<String> = s
        .secret_key_files
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    list(&mut out, "extra-secret-key-files", &files);
    if let Some(t) = s.connect_timeout {
        out.push_str(&format!("connect-timeout = {t}\n"));
    }
    if let Some(t) = s.narinfo_cache_negative_ttl {
        out.push_str(&format!("narinfo-cache-negative-ttl = {t}\n"));
    }
    if s.fallback {
        out.push_str("fallback = true\n");
    }
    out.push_str(END_MARKER);
    out.push('\n');
    out
}

/// The byte range of the managed block in `text` (from the start of the
/// BEGIN line to the end of the END line, its newline included), `None`
/// when there is none. Errors name the line of a broken or doubled block.
pub fn find_block(text: &str) -> Result<Option<Range<usize>>, String> {
    let mut begin: Option<(usize, usize)> = None; // (byte offset, line number)
    let mut found: Option<Range<usize>> = None;
    let mut offset = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim();
        if trimmed == BEGIN_MARKER {
            if let Some((_, first)) = begin {
                return Err(format!(
                    "line {}: a second `{BEGIN_MARKER}` before the `{END_MARKER}` of line {first}; \
                     remove the broken block by hand",
                    n + 1
                ));
            }
            if found.is_some() {
                return Err(format!(
                    "line {}: a second managed block; remove one of them by hand",
                    n + 1
                ));
            }
            begin = Some((offset, n + 1));
        } else if trimmed == END_MARKER {
            let Some((start, _)) = begin.take() else {
                return Err(format!(
                    "line {}: `{END_MARKER}` without a `{BEGIN_MARKER}` before it; remove it by hand",
                    n + 1
                ));
            };
            found = Some(start..offset + line.len());
        }
        offset += line.len();
    }
    if let Some((_, line)) = begin {
        return Err(format!(
            "line {line}: `{BEGIN_MARKER}` without a `{END_MARKER}` after it; remove the \
             broken block by hand"
        ));
    }
    Ok(found)
}

/// The managed block of `text`, if it has one.
pub fn current_block(text: &str) -> Result<Option<&str>, String> {
    Ok(find_block(text)?.map(|r| &text[r]))
}

/// `text` with its managed block replaced by `block` (a [`render_block`]
/// result), or `block` appended after a blank line when there is none.
/// Every byte outside the block is kept; the result of merging the same
/// block again is identical.
pub fn merge_block(text: &str, block: &str) -> Result<String, String> {
    if let Some(range) = find_block(text)? {
        let mut out = String::with_capacity(text.len() + block.len());
        out.push_str(&text[..range.start]);
        out.push_str(block);
        out.push_str(&text[range.end..]);
        return Ok(out);
    }
    Ok(crate::fsutil::append_section(text, block))
}

/// `text` without its managed block (and without the blank line that
/// [`merge_block`] put before it).
pub fn remove_block(text: &str) -> Result<String, String> {
    let Some(range) = find_block(text)? else {
        return Ok(text.to_string());
    };
    let mut head = &text[..range.start];
    if head.ends_with("\n\n") {
        head = &head[..head.len() - 1];
    }
    Ok(format!("{head}{}", &text[range.end..]))
}

/// `key = value` assignments of a nix.conf in file order, comments (`#` to
/// the end of the line) and blank lines dropped. `include` lines are not
/// followed.
pub fn parse_conf(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or("").trim();
            let (k, v) = line.split_once('=')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// The assignments of the nix.conf at `path`, in the order Nix applies
/// them, with `include` and `!include` lines followed (relative paths are
/// relative to the including file; `!include` of a missing file is
/// ignored, as in Nix). A missing top-level file has no assignments (Nix
/// then uses its defaults). The notes say which files were read or missed.
pub fn read_conf_file(path: &Path) -> (Vec<(String, String)>, Vec<String>) {
    fn walk(
        path: &Path,
        optional: bool,
        depth: u32,
        out: &mut Vec<(String, String)>,
        notes: &mut Vec<String>,
    ) {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                if !(optional && e.kind() == std::io::ErrorKind::NotFound) {
                    notes.push(format!("{}: {e}", path.display()));
                }
                return;
            }
        };
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            let include = line
                .strip_prefix("!include")
                .map(|r| (r, true))
                .or_else(|| line.strip_prefix("include").map(|r| (r, false)));
            match include {
                Some((rest, optional))
                    if rest.starts_with(char::is_whitespace) && !rest.contains('=') =>
                {
                    if depth >= 8 {
                        notes.push(format!("{}: includes nested too deep", path.display()));
                        continue;
                    }
                    let target = crate::fsutil::parent_dir(path).join(rest.trim());
                    walk(&target, optional, depth + 1, out, notes);
                }
                _ => out.extend(parse_conf(line)),
            }
        }
    }
    let mut out = Vec::new();
    let mut notes = Vec::new();
    walk(path, false, 0, &mut out, &mut notes);
    (out, notes)
}

/// The value of the list setting `key` after all assignments: `key = ...`
/// replaces the list, `extra-key = ...` appends, as Nix does. `default` is
/// the value before any assignment.
pub fn effective_list(entries: &[(String, String)], key: &str, default: &[&str]) -> Vec<String> {
    let extra = format!("extra-{key}");
    let mut value: Vec<String> = default.iter().map(|s| s.to_string()).collect();
    for (k, v) in entries {
        let items = v.split_whitespace().map(str::to_string);
        if k == key {
            value = items.collect();
        } else if *k == extra {
            value.extend(items);
        }
    }
    value
}

/// The nix.conf the daemon reads: `$NIX_CONF_DIR/nix.conf`, else
/// `/etc/nix/nix.conf`.
pub fn daemon_conf_path() -> PathBuf {
    std::env::var_os("NIX_CONF_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/nix"))
        .join("nix.conf")
}

/// The user running this process, as the daemon sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// Numeric user id.
    pub uid: u32,
    /// Login name (from /etc/passwd, else `$USER`, else the number).
    pub name: String,
    /// Names of the primary and supplementary groups.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The current process's user, read from `/proc/self` and `/etc/passwd`
    /// / `/etc/group` (no libc calls, so no `unsafe`).
    pub fn current() -> UserInfo {
        use std::os::unix::fs::MetadataExt;
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| -> Vec<u32> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| {
                    v.split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        // Effective ids: the second value of `Uid:`/`Gid:`.
        let uid = field("Uid:")
            .get(1)
            .copied()
            .or_else(|| std::fs::metadata("/proc/self").ok().map(|m| m.uid()))
            .unwrap_or(u32::MAX);
        let mut gids = field("Gid:")
            .get(1)
            .copied()
            .into_iter()
            .collect::<Vec<_>>();
        gids.extend(field("Groups:"));
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
        let name = id_to_name(&passwd, uid)
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| uid.to_string());
        let mut groups: Vec<String> = gids.iter().filter_map(|g| id_to_name(&group, *g)).collect();
        // Membership lists in /etc/group count too (e.g. without a login session).
        for line in group.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                groups.push(f[0].to_string());
            }
        }
        groups.sort();
        groups.dedup();
        UserInfo { uid, name, groups }
    }
}

/// The name for numeric id `id` in a passwd/group style file.
fn id_to_name(file: &str, id: u32) -> Option<String> {
    file.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[2].parse() == Ok(id)).then(|| f[0].to_string())
    })
}

/// True when `user` matches `trusted-users` (names, `@group`, or `*`).
pub fn is_trusted(user: &UserInfo, trusted_users: &[String]) -> bool {
    user.uid == 0
        || trusted_users.iter().any(|t| {
            t == "*"
                || *t == user.name
                || t.strip_prefix('@')
                    .is_some_and(|g| user.groups.iter().any(|ug| ug == g))
        })
}

/// A warning when `user` is not trusted by the daemon whose configuration is
/// `daemon_conf` (its assignments, includes followed: [`read_conf_file`],
/// as `doctor` reads it) and `edited` is not that file: the daemon ignores
/// substituters and keys from an untrusted user's nix.conf. The warning
/// says what to do instead.
pub fn untrusted_user_warning(
    edited: &Path,
    daemon_conf_path: &Path,
    daemon_conf: &[(String, String)],
    user: &UserInfo,
) -> Option<String> {
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    if same(edited, daemon_conf_path) {
        return None;
    }
    let trusted = effective_list(daemon_conf, "trusted-users", &["root"]);
    if is_trusted(user, &trusted) {
        return None;
    }
    Some(format!(
        "warning: user `{}` is not in `trusted-users` of the Nix daemon ({}: {}), so when Nix \
         runs through the daemon it ignores the substituters and trusted-public-keys of {}.\n\
         \x20 To use the cache, have an administrator add them to the system configuration: on \
         NixOS enable the module's trust role (or nix.settings.extra-substituters and \
         extra-trusted-public-keys); elsewhere run `nix-binary-cache configure --nix-conf {}` \
         as root. Alternatively the administrator lists the URL in `trusted-substituters` and \
         the key in `trusted-public-keys`, which lets untrusted users opt in.",
        user.name,
        daemon_conf_path.display(),
        trusted.join(" "),
        edited.display(),
        daemon_conf_path.display(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "test-cache-1:2txHk7Z/i+G9GrFhTMcS2HGOQD+VFytZl0S+BZq6fGE=";

    fn settings() -> CacheSettings {
        CacheSettings {
            substituters: vec!["https://s3.example.org/nix-cache".into()],
            trusted_public_keys: vec![KEY.into()],
            secret_key_files: vec![],
            connect_timeout: Some(5),
            narinfo_cache_negative_ttl: None,
            fallback: true,
        }
    }

    #[test]
    fn block_renders_extra_settings() {
        let b = render_block(&settings());
        assert!(b.starts_with(BEGIN_MARKER));
        assert!(b.ends_with(&format!("{END_MARKER}\n")));
        assert!(b.contains("\nextra-substituters = https://s3.example.org/nix-cache\n"));
        assert!(b.contains(&format!("\nextra-trusted-public-keys = {KEY}\n")));
        assert!(b.contains("\nconnect-timeout = 5\n"));
        assert!(b.contains("\nfallback = true\n"));
        assert!(!b.contains("secret-key-files"));
        assert!(!b.contains("negative-ttl"));
    }

    #[test]
    fn values_with_a_comment_sign_are_refused() {
        assert!(settings().validate().is_ok());
        let mut s = settings();
        s.secret_key_files = vec!["/var/lib/a#b/key".into()];
        let (flag, message) = s.validate().unwrap_err();
        assert_eq!(flag, "--secret-key-file");
        assert!(message.contains("starts a comment"), "{message}");
        let mut s = settings();
        s.substituters.push("https://s3.example.org/c#frag".into());
        assert_eq!(s.validate().unwrap_err().0, "--substituter");
    }

    #[test]
    fn merge_appends_replaces_and_is_idempotent() {
        let foreign =
            "# my settings\nsubstituters = https://cache.nixos.org/  # main\nmax-jobs = 4";
        let block = render_block(&settings());
        let once = merge_block(foreign, &block).unwrap();
        assert!(once.starts_with(
            "# my settings\nsubstituters = https://cache.nixos.org/  # main\nmax-jobs = 4\n\n"
        ));
        assert!(once.ends_with(&block));
        assert_eq!(merge_block(&once, &block).unwrap(), once);

        // A changed block replaces the old one in place; foreign lines after it stay.
        let moved = format!("{once}keep-outputs = true\n");
        let mut s2 = settings();
        s2.connect_timeout = Some(9);
        let b2 = render_block(&s2);
        let merged = merge_block(&moved, &b2).unwrap();
        assert_eq!(merged, moved.replace(&block, &b2));
        assert!(merged.ends_with("keep-outputs = true\n"));
        assert_eq!(current_block(&merged).unwrap(), Some(b2.as_str()));

        // Removing the block restores the original (plus its final newline).
        assert_eq!(remove_block(&once).unwrap(), format!("{foreign}\n"));
        assert_eq!(merge_block("", &block).unwrap(), block);
    }

    #[test]
    fn broken_blocks_are_reported_with_line() {
        let block = render_block(&settings());
        let no_end = format!("a = b\n{BEGIN_MARKER}\nx = y\n");
        assert!(merge_block(&no_end, &block).unwrap_err().contains("line 2"));
        let no_begin = format!("a = b\n{END_MARKER}\n");
        assert!(
            merge_block(&no_begin, &block)
                .unwrap_err()
                .contains("line 2")
        );
        let twice = format!("{block}{block}");
        assert!(merge_block(&twice, &block).unwrap_err().contains("line"));
    }

    #[test]
    fn effective_lists_follow_nix_rules() {
        let e = parse_conf(
            "trusted-users = root alice # admins\nextra-trusted-users = @wheel\n#trusted-users = bob\n",
        );
        assert_eq!(
            effective_list(&e, "trusted-users", &["root"]),
            ["root", "alice", "@wheel"]
        );
        let e = parse_conf("extra-trusted-users = carol\n");
        assert_eq!(
            effective_list(&e, "trusted-users", &["root"]),
            ["root", "carol"]
        );
        let e = parse_conf("extra-trusted-users = carol\ntrusted-users =\n");
        assert!(effective_list(&e, "trusted-users", &["root"]).is_empty());
    }

    #[test]
    fn includes_are_followed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(
            d.path().join("nix.conf"),
            "substituters = a\ninclude sub/more.conf # ours\n!include missing.conf\n\
             extra-substituters = c\n",
        )
        .unwrap();
        std::fs::write(d.path().join("sub/more.conf"), "extra-substituters = b\n").unwrap();
        let (e, notes) = read_conf_file(&d.path().join("nix.conf"));
        assert_eq!(effective_list(&e, "substituters", &[]), ["a", "b", "c"]);
        assert!(notes.is_empty(), "{notes:?}");
        std::fs::remove_file(d.path().join("sub/more.conf")).unwrap();
        let (e, notes) = read_conf_file(&d.path().join("nix.conf"));
        assert_eq!(effective_list(&e, "substituters", &[]), ["a", "c"]);
        assert!(notes[0].contains("more.conf"), "{notes:?}");
        let (e, notes) = read_conf_file(&d.path().join("none.conf"));
        assert!(e.is_empty() && notes.len() == 1);
    }

    #[test]
    fn trust_checks_names_groups_and_root() {
        let alice = UserInfo {
            uid: 1000,
            name: "alice".into(),
            groups: vec!["users".into(), "wheel".into()],
        };
        assert!(is_trusted(&alice, &["@wheel".into()]));
        assert!(is_trusted(&alice, &["alice".into()]));
        assert!(is_trusted(&alice, &["*".into()]));
        assert!(!is_trusted(&alice, &["root".into(), "@nixbld".into()]));
        let root = UserInfo {
            uid: 0,
            name: "root".into(),
            groups: vec![],
        };
        assert!(is_trusted(&root, &[]));

        let dir = tempfile::tempdir().unwrap();
        let daemon = dir.path().join("nix.conf");
        let user_conf = dir.path().join("user.conf");
        let conf = |text: &str| parse_conf(text);
        let w =
            untrusted_user_warning(&user_conf, &daemon, &conf("trusted-users = root\n"), &alice)
                .expect("alice is not trusted");
        assert!(
            w.contains("alice") && w.contains("trusted-substituters"),
            "{w}"
        );
        assert!(
            untrusted_user_warning(
                &user_conf,
                &daemon,
                &conf("trusted-users = @wheel\n"),
                &alice
            )
            .is_none()
        );
        // Editing the daemon's own file: no warning.
        std::fs::write(&daemon, "").unwrap();
        assert!(untrusted_user_warning(&daemon, &daemon, &[], &alice).is_none());
        // trusted-users set in an included file counts, as the daemon reads it.
        std::fs::write(&daemon, "include trusted.conf\n").unwrap();
        std::fs::write(dir.path().join("trusted.conf"), "trusted-users = alice\n").unwrap();
        let (entries, notes) = read_conf_file(&daemon);
        assert!(notes.is_empty(), "{notes:?}");
        assert!(untrusted_user_warning(&user_conf, &daemon, &entries, &alice).is_none());
    }

    #[test]
    fn validation_names_the_flag() {
        let mut s = settings();
        s.trusted_public_keys = vec!["nokey".into()];
        assert_eq!(s.validate().unwrap_err().0, "--trusted-public-key");
        let mut s = settings();
        s.substituters = vec!["not a url".into()];
        assert_eq!(s.validate().unwrap_err().0, "--substituter");
        let mut s = settings();
        s.secret_key_files = vec!["relative".into()];
        assert_eq!(s.validate().unwrap_err().0, "--secret-key-file");
        assert!(settings().validate().is_ok());
    }
}
