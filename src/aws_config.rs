//! One profile in an AWS shared credentials file (`~/.aws/credentials`).
//!
//! Our own push and uploader read the writer credentials file directly;
//! this is only for Nix itself talking S3 (`nix copy --to s3://…`, or the
//! `s3://` substituter of a private cache), which reads the AWS default
//! chain. We set `aws_access_key_id` and `aws_secret_access_key` of one
//! profile and keep every other profile, key and comment byte for byte.
//! Secrets are masked in anything meant for display ([`mask_secrets`]).

use crate::credentials::Credentials;

const ACCESS_KEY: &str = "aws_access_key_id";
const SECRET_KEY: &str = "aws_secret_access_key";
/// A session token belongs to temporary credentials; next to static keys it
/// would make every request fail, so it is dropped from our profile.
const SESSION_TOKEN: &str = "aws_session_token";

/// Placeholder for a secret in displayed text.
pub const MASK: &str = "********";

/// Checks a profile name: not empty, no brackets, no whitespace at either
/// end, no line breaks.
pub fn validate_profile_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.trim() != name || name.contains(['[', ']', '\n', '\r']) {
        return Err(format!(
            "`{name}` is not a usable profile name (no brackets, line breaks or surrounding \
             spaces); e.g. `nix-binary-cache`"
        ));
    }
    Ok(())
}

/// The section name of a `[name]` header line.
fn section_name(line: &str) -> Option<&str> {
    let t = line.trim();
    t.strip_prefix('[')?.strip_suffix(']').map(str::trim)
}

/// The lower-cased key and the trimmed value of a `key = value` line.
fn key_value(line: &str) -> Option<(String, &str)> {
    let t = line.trim_start();
    if t.starts_with('#') || t.starts_with(';') {
        return None;
    }
    let (k, v) = t.split_once('=')?;
    Some((k.trim().to_ascii_lowercase(), v.trim()))
}

/// The key pair of `profile` in `text`, if both keys are set.
pub fn read_profile(text: &str, profile: &str) -> Option<Credentials> {
    let mut current: Option<&str> = None;
    let (mut id, mut secret) = (None, None);
    for line in text.lines() {
        if let Some(name) = section_name(line) {
            current = Some(name);
        } else if current == Some(profile)
            && let Some((k, v)) = key_value(line)
        {
            match k.as_str() {
                ACCESS_KEY => id = id.or(Some(v)),
                SECRET_KEY => secret = secret.or(Some(v)),
                _ => {}
            }
        }
    }
    Some(Credentials::new(id?, secret?))
}

/// `text` with `profile` holding `creds`: an existing section gets its two
/// key lines set (lines that already hold the right value are kept as they
/// are), a missing one is appended. All other lines stay byte for byte;
/// merging the same credentials again returns the same text.
pub fn merge_profile(text: &str, profile: &str, creds: &Credentials) -> String {
    let access_line = format!("{ACCESS_KEY} = {}\n", creds.access_key_id);
    let secret_line = format!("{SECRET_KEY} = {}\n", creds.secret_access_key);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let Some(header) = lines.iter().position(|l| section_name(l) == Some(profile)) else {
        return crate::fsutil::append_section(
            text,
            &format!("[{profile}]\n{access_line}{secret_line}"),
        );
    };
    let end = lines[header + 1..]
        .iter()
        .position(|l| section_name(l).is_some())
        .map_or(lines.len(), |i| header + 1 + i);

    let mut out = String::with_capacity(text.len() + 128);
    for l in &lines[..=header] {
        out.push_str(l);
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    let has = |key: &str| {
        lines[header + 1..end]
            .iter()
            .any(|l| key_value(l).is_some_and(|(k, _)| k == key))
    };
    // Keys the section lacks go right under its header.
    if !has(ACCESS_KEY) {
        out.push_str(&access_line);
    }
    if !has(SECRET_KEY) {
        out.push_str(&secret_line);
    }
    let (mut seen_access, mut seen_secret) = (false, false);
    for l in &lines[header + 1..end] {
        let kv = key_value(l);
        let (want_line, want_value, seen, value) = match kv.as_ref().map(|(k, v)| (k.as_str(), *v))
        {
            Some((ACCESS_KEY, v)) => (&access_line, &creds.access_key_id, &mut seen_access, v),
            Some((SECRET_KEY, v)) => (&secret_line, &creds.secret_access_key, &mut seen_secret, v),
            Some((SESSION_TOKEN, _)) => continue,
            _ => {
                out.push_str(l);
                continue;
            }
        };
        if std::mem::replace(seen, true) {
            continue; // a duplicate line would be ambiguous: keep the first only
        }
        if value == want_value {
            out.push_str(l);
            if !l.ends_with('\n') {
                out.push('\n');
            }
        } else {
            out.push_str(want_line);
        }
    }
    for l in &lines[end..] {
        out.push_str(l);
    }
    out
}

/// `text` with the values of secret keys (`aws_secret_access_key`,
/// `aws_session_token`) replaced by [`MASK`]; a value equal to `new_secret`
/// shows as `******** (new)`, so a diff still says that it changes.
pub fn mask_secrets(text: &str, new_secret: Option<&str>) -> String {
    text.split_inclusive('\n')
        .map(|line| match key_value(line) {
            Some((k, v)) if k == SECRET_KEY || k == SESSION_TOKEN => {
                let indent = &line[..line.len() - line.trim_start().len()];
                let mark = if Some(v) == new_secret && !v.is_empty() {
                    format!("{MASK} (new)")
                } else {
                    MASK.to_string()
                };
                let nl = if line.ends_with('\n') { "\n" } else { "" };
                format!("{indent}{k} = {mark}{nl}")
            }
            _ => line.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOREIGN: &str = "\
# my AWS setup
[default]
aws_access_key_id = AKIADEFAULT
aws_secret_access_key = defaultsecret ; old
region=eu-west-1

; work account
[work]
aws_access_key_id=AKIAWORK
aws_secret_access_key=worksecret
";

    #[test]
    fn appends_a_new_profile_and_is_idempotent() {
        let c = Credentials::new("writer", "s3cr3t-value");
        let once = merge_profile(FOREIGN, "nix-cache", &c);
        assert!(once.starts_with(FOREIGN));
        assert!(once.ends_with(
            "\n\n[nix-cache]\naws_access_key_id = writer\naws_secret_access_key = s3cr3t-value\n"
        ));
        assert_eq!(merge_profile(&once, "nix-cache", &c), once);
        assert_eq!(read_profile(&once, "nix-cache"), Some(c.clone()));
        assert_eq!(
            read_profile(&once, "work"),
            Some(Credentials::new("AKIAWORK", "worksecret"))
        );
        assert_eq!(
            merge_profile("", "p", &c),
            "[p]\naws_access_key_id = writer\naws_secret_access_key = s3cr3t-value\n"
        );
    }

    #[test]
    fn updates_an_existing_profile_in_place() {
        let c = Credentials::new("AKIAWORK", "newsecret");
        let merged = merge_profile(FOREIGN, "work", &c);
        // The id line was right and is kept byte for byte; the secret changes.
        assert_eq!(
            merged,
            FOREIGN.replace(
                "aws_secret_access_key=worksecret\n",
                "aws_secret_access_key = newsecret\n"
            )
        );
        assert_eq!(merge_profile(&merged, "work", &c), merged);

        // Missing keys go under the header; a session token goes; other lines stay.
        let text = "[p]\nregion = x\naws_session_token = tok\n[q]\na = b\n";
        let merged = merge_profile(text, "p", &c);
        assert_eq!(
            merged,
            "[p]\naws_access_key_id = AKIAWORK\naws_secret_access_key = newsecret\nregion = x\n[q]\na = b\n"
        );
    }

    #[test]
    fn masks_every_secret() {
        let c = Credentials::new("writer", "s3cr3t-value");
        let merged = merge_profile(FOREIGN, "nix-cache", &c);
        let masked = mask_secrets(&merged, Some("s3cr3t-value"));
        for s in ["s3cr3t-value", "worksecret", "defaultsecret"] {
            assert!(!masked.contains(s), "{s} in {masked}");
        }
        assert!(masked.contains("aws_secret_access_key = ******** (new)\n"));
        assert!(masked.contains("AKIAWORK"));
        assert_eq!(masked.lines().count(), merged.lines().count());
    }

    #[test]
    fn profile_names_are_checked() {
        assert!(validate_profile_name("nix-cache").is_ok());
        for bad in ["", " p", "a]b", "a\nb"] {
            assert!(validate_profile_name(bad).is_err(), "{bad:?}");
        }
    }
}
