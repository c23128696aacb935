//! Entry points for the fuzz targets in `fuzz/` and for the regression test
//! that replays every input they ever found (`tests/fuzz_regressions.rs`).
//!
//! Each function takes raw bytes, feeds them to one parser of outside input
//! (what a store, a user's file or another tool hands us) and checks, beyond
//! "does not panic", the properties that parser promises: rendering what was
//! parsed parses to the same value, merging twice changes nothing, a planned
//! change re-planned is `Unchanged`, secrets are masked. A broken property
//! panics, which is what a fuzzer reports.
//!
//! Inputs that need several strings (a file and a profile name, a text and
//! settings) are split with [`parts`] on the byte `0xFF`, which never occurs
//! in UTF-8, so the fuzzer can reach every combination from one byte string
//! and a found input stays readable in a hex dump.
//!
//! The functions live in the library (not in `fuzz/`) so that the regression
//! test runs them on the stable toolchain in every CI run.

use crate::{aws_config, credentials, iam, manifest, narinfo, nix_conf, pathinfo, s3, signing};
use crate::{credentials::Credentials, http::Response, minio, provision};

/// A fuzz entry point.
pub type Entry = fn(&[u8]);

/// Every target by name (the file name under `fuzz/fuzz_targets/` and the
/// directory name under `fuzz/regressions/`).
pub const TARGETS: &[(&str, Entry)] = &[
    ("narinfo", narinfo),
    ("nix_conf", nix_conf),
    ("aws_config", aws_config),
    ("signing_keys", signing_keys),
    ("manifest", manifest),
    ("madmin_decrypt", madmin_decrypt),
    ("s3_xml", s3_xml),
    ("iam_xml", iam_xml),
    ("admin_error", admin_error),
    ("env_file", env_file),
    ("path_info", path_info),
    ("lifecycle", lifecycle),
    ("bucket_policy", bucket_policy),
    ("spool_entry", spool_entry),
];

/// Splits `data` on `0xFF` into exactly `n` parts (missing ones are empty,
/// the last one keeps any further separators).
pub fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.splitn(n, |&b| b == 0xFF).collect();
    out.resize(n, &[]);
    out
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// A narinfo from a bucket: parse; what parses renders to text that parses
/// to the same value, and rendering is stable.
pub fn narinfo(data: &[u8]) {
    let Ok(info) = narinfo::NarInfo::parse_bytes(data) else {
        return;
    };
    let rendered = info.render();
    let again = narinfo::NarInfo::parse(&rendered)
        .unwrap_or_else(|e| panic!("rendered narinfo does not parse: {e}\n{rendered}"));
    assert_eq!(again, info, "parse(render(x)) != x\n{rendered}");
    assert_eq!(again.render(), rendered, "render is not stable");
    // Derived values must not panic either.
    let _ = (info.hash_part(), info.store_dir(), info.fingerprint());
}

/// A user's nix.conf and the settings `configure` writes into it: merging
/// keeps every byte outside the block, puts the block in exactly once, is
/// idempotent, and Nix reads back exactly the configured lists from it.
pub fn nix_conf(data: &[u8]) {
    let p = parts(data, 4);
    let conf = text(p[0]);
    let list = |b: &[u8]| -> Vec<String> {
        text(b)
            .split('\u{1}')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    let settings = nix_conf::CacheSettings {
        substituters: list(p[1]),
        trusted_public_keys: list(p[2]),
        secret_key_files: list(p[3]).into_iter().map(Into::into).collect(),
        connect_timeout: p[1].first().map(|&b| u32::from(b)),
        narinfo_cache_negative_ttl: p[2].first().map(|&b| u32::from(b)),
        fallback: p[3].len() % 2 == 1,
    };
    let _ = nix_conf::parse_conf(&conf);
    let old = nix_conf::find_block(&conf);
    if settings.validate().is_err() {
        // Refused settings are never written; the text still must not panic.
        let _ = nix_conf::remove_block(&conf);
        return;
    }
    let block = nix_conf::render_block(&settings);
    let Ok(merged) = nix_conf::merge_block(&conf, &block) else {
        assert!(old.is_err(), "merge failed on a text whose block was found");
        return;
    };
    match old.expect("merge succeeded, so the block was found") {
        Some(r) => assert_eq!(
            merged,
            format!("{}{block}{}", &conf[..r.start], &conf[r.end..]),
            "text outside the block changed"
        ),
        None => assert!(merged.starts_with(&conf), "text before the block changed"),
    }
    assert_eq!(
        nix_conf::current_block(&merged).expect("the merged text is readable"),
        Some(block.as_str()),
        "the block is not found as written"
    );
    assert_eq!(
        nix_conf::merge_block(&merged, &block).as_deref(),
        Ok(merged.as_str()),
        "merging twice changes the text"
    );
    // What Nix reads from the block is what was configured.
    let entries = nix_conf::parse_conf(&block);
    let read = |key: &str| nix_conf::effective_list(&entries, key, &[]);
    assert_eq!(read("substituters"), settings.substituters);
    assert_eq!(read("trusted-public-keys"), settings.trusted_public_keys);
    let files: Vec<String> = settings
        .secret_key_files
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    assert_eq!(read("secret-key-files"), files);
    let removed = nix_conf::remove_block(&merged).expect("the merged text is readable");
    assert_eq!(
        nix_conf::find_block(&removed),
        Ok(None),
        "remove left a block"
    );
}

/// An AWS shared credentials file and a profile merged into it: the profile
/// reads back, merging is idempotent, and the secret is masked for display.
pub fn aws_config(data: &[u8]) {
    let p = parts(data, 4);
    let file = text(p[0]);
    let profile = text(p[1]);
    let _ = aws_config::read_profile(&file, &profile);
    let _ = aws_config::mask_secrets(&file, None);
    // Values as `Credentials::parse_env` can produce them.
    let (id, secret) = (text(p[2]), text(p[3]));
    let usable = |v: &str| !v.is_empty() && v.trim() == v && !v.contains('\n');
    if aws_config::validate_profile_name(&profile).is_err() || !usable(&id) || !usable(&secret) {
        return;
    }
    let creds = Credentials::new(id.clone(), secret.clone());
    let merged = aws_config::merge_profile(&file, &profile, &creds);
    assert_eq!(
        aws_config::read_profile(&merged, &profile),
        Some(creds.clone()),
        "the merged profile does not read back\n{merged}"
    );
    assert_eq!(
        aws_config::merge_profile(&merged, &profile, &creds),
        merged,
        "merging twice changes the file"
    );
    let masked = aws_config::mask_secrets(&merged, Some(&secret));
    let secret_is_distinct = secret.len() >= 8
        && secret.bytes().all(|b| b.is_ascii_alphanumeric())
        && ![
            &file,
            &profile,
            &id,
            "aws_access_key_id",
            "aws_secret_access_key",
        ]
        .iter()
        .any(|s| s.contains(secret.as_str()));
    if secret_is_distinct {
        assert!(
            !masked.contains(&secret),
            "the secret survives masking\n{masked}"
        );
    }
}

/// Nix key files: what parses re-renders to the same text, and a parsed
/// secret key's signatures verify under its public half.
pub fn signing_keys(data: &[u8]) {
    let p = parts(data, 2);
    let s = text(p[0]);
    if let Ok(key) = signing::SecretKey::parse(&s) {
        assert_eq!(
            key.to_file_string(),
            s.trim(),
            "secret key does not re-render"
        );
        let again = signing::SecretKey::parse(&key.to_file_string()).expect("re-parse");
        assert_eq!(again.public(), key.public());
        let sig = key.sign(p[1]);
        assert!(key.public().verify(p[1], &sig), "own signature fails");
    }
    if let Ok(key) = signing::PublicKey::parse(&s) {
        assert_eq!(key.to_string(), s.trim(), "public key does not re-render");
        assert_eq!(signing::PublicKey::parse(&key.to_string()), Ok(key.clone()));
        // Arbitrary signature text must not panic.
        let _ = key.verify(p[0], &text(p[1]));
    }
    let name = s.trim();
    if signing::validate_key_name(name).is_ok() {
        let _ = signing::key_name_warning(name);
        if let Some(next) = signing::next_key_name(name) {
            assert!(signing::validate_key_name(&next).is_ok(), "{next}");
            assert_eq!(
                signing::key_generation(&next),
                signing::key_generation(name).map(|n| n + 1)
            );
        }
    }
}

/// A manifest: parse and validate; a parsed manifest serialises to TOML that
/// parses to the same value.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(m) = manifest::parse(text) else {
        return;
    };
    let _ = m.validate();
    let rendered = toml_edit::ser::to_string(&m).expect("a parsed manifest serialises");
    let again = manifest::parse(&rendered)
        .unwrap_or_else(|e| panic!("re-rendered manifest does not parse: {e}\n{rendered}"));
    assert_eq!(again, m, "parse(render(x)) != x\n{rendered}");
}

/// A madmin payload. The key derivation (Argon2id, 64 MiB) is skipped: the
/// key is fixed, as after [`minio::crypto::Header::derive_key`]. Raw input
/// must not decrypt (or panic); input used as plaintext round-trips, and any
/// one changed or dropped byte of its ciphertext is refused.
pub fn madmin_decrypt(data: &[u8]) {
    use minio::crypto::{self, Algorithm, Header};
    let key = [0x42u8; 32];
    let _ = crypto::is_encrypted(data);
    let _ = crypto::decrypt_with_key(data, &key);

    let Some((&control, plaintext)) = data.split_first() else {
        return;
    };
    let algorithm = Algorithm::from_id(control % 3).expect("ids 0..=2 exist");
    let header = Header {
        salt: [control; 32],
        algorithm,
        nonce: [control.wrapping_add(1); 8],
    };
    let sealed = crypto::encrypt_with_key(plaintext, &header, &key);
    assert_eq!(Header::parse(&sealed), Ok(header));
    assert_eq!(
        crypto::decrypt_with_key(&sealed, &key).as_deref(),
        Ok(plaintext),
        "round trip"
    );
    // Tamper with one byte past the header, chosen by the input.
    let body = sealed.len() - 41;
    let at = 41 + usize::from(control) * 257 % body;
    let mut bad = sealed.clone();
    bad[at] ^= 0x01;
    assert!(
        crypto::decrypt_with_key(&bad, &key).is_err(),
        "flipped byte"
    );
    bad.remove(at);
    assert!(
        crypto::decrypt_with_key(&bad, &key).is_err(),
        "dropped byte"
    );
}

fn response(status_byte: u8, body: &[u8]) -> Response {
    let status = http::StatusCode::from_u16(300 + u16::from(status_byte) % 300)
        .expect("300..600 are valid statuses");
    Response {
        status,
        headers: http::HeaderMap::new(),
        body: bytes::Bytes::copy_from_slice(body),
    }
}

/// S3 answers: an error body and a ListObjectsV2 page.
pub fn s3_xml(data: &[u8]) {
    let (status, body) = data.split_first().unwrap_or((&0, &[]));
    let e = s3::S3Error::from_response(&response(*status, body));
    assert_eq!(e.status, 300 + u16::from(*status) % 300);
    if let Ok((objects, next)) = s3::parse_list_page(&text(body)) {
        let _ = (objects.len(), next);
    }
}

/// IAM answers: an error body, a result element, a policy document.
pub fn iam_xml(data: &[u8]) {
    let xml = text(data);
    let _ = iam::parse_error(&xml);
    let _ = iam::parse_result::<iam::User>(&xml);
    let _ = iam::parse_result::<iam::PolicyVersionMeta>(&xml);
    if let Ok(doc) = iam::decode_policy_document(&xml) {
        // A document the store returned is read the same when sent back.
        let sent = serde_json::to_string(&doc).expect("a JSON value serialises");
        assert_eq!(iam::decode_policy_document(&sent), Ok(doc));
    }
}

/// MinIO admin error answers (JSON, XML or nothing).
pub fn admin_error(data: &[u8]) {
    let (status, body) = data.split_first().unwrap_or((&0, &[]));
    let e = minio::admin::AdminError::from_response(&response(*status, body));
    assert!(!e.code.is_empty(), "an admin error always has a code");
    if let Ok(info) = serde_json::from_slice::<minio::admin::UserInfo>(body) {
        let _ = (info.policies(), info.is_enabled());
    }
    let _ = minio::admin::split_policies(&text(body));
}

/// Env files (writer and admin credentials): what parses as credentials is
/// written back by [`Credentials::to_env`] to a file that reads the same.
pub fn env_file(data: &[u8]) {
    let t = text(data);
    let _ = credentials::parse_env_lines(&t);
    if let Ok(creds) = Credentials::parse_env(&t) {
        let written = creds.to_env();
        assert_eq!(
            Credentials::parse_env(&written),
            Ok(creds),
            "the written env file reads differently"
        );
    }
}

/// `nix path-info --json` output (both shapes), then the closure order a
/// push uploads in (which must refuse cycles, not loop).
pub fn path_info(data: &[u8]) {
    let Ok(infos) = pathinfo::parse_json(&text(data), pathinfo::DEFAULT_STORE_DIR) else {
        return;
    };
    for i in &infos.valid {
        assert!(pathinfo::split_store_path(&i.path).is_some(), "{}", i.path);
        let _ = (i.hash_part(), i.dependencies().count());
    }
    let n = infos.valid.len();
    if let Ok(order) = pathinfo::closure_order(infos.valid) {
        assert!(order.len() <= n);
    }
}

/// A bucket's lifecycle configuration: the planned configuration, read back,
/// plans `Unchanged`.
pub fn lifecycle(data: &[u8]) {
    use provision::lifecycle::{LifecycleChange, plan};
    let (days, xml) = data.split_first().unwrap_or((&1, &[]));
    let days = u32::from(*days).max(1);
    let xml = text(xml);
    if let Ok(LifecycleChange::Put { xml: planned, .. }) = plan(Some(&xml), days) {
        assert_eq!(
            plan(Some(&planned), days),
            Ok(LifecycleChange::Unchanged),
            "the planned configuration does not converge\n{planned}"
        );
    }
}

/// A bucket policy document: the planned document, read back, plans
/// `Unchanged` (public or not).
pub fn bucket_policy(data: &[u8]) {
    use provision::policy::{BucketPolicyChange, plan_bucket_policy};
    let (flag, doc) = data.split_first().unwrap_or((&0, &[]));
    let Ok(current) = serde_json::from_slice::<serde_json::Value>(doc) else {
        return;
    };
    let public = flag % 2 == 1;
    let next = match plan_bucket_policy(Some(&current), "nix-cache", public) {
        BucketPolicyChange::Unchanged => return,
        BucketPolicyChange::Delete => None,
        BucketPolicyChange::Put(doc) => Some(doc),
    };
    assert_eq!(
        plan_bucket_policy(next.as_ref(), "nix-cache", public),
        BucketPolicyChange::Unchanged,
        "the planned policy does not converge: {next:?}"
    );
}

/// The upload queue's files, which the post-build hook, an admin or a crash
/// may leave in any state: an entry file, its state file, and the text of
/// `$OUT_PATHS` (also used as an entry's file name). What parses as an entry
/// or a state is written back to a file that reads the same; the paths read
/// from `$OUT_PATHS` are non-empty words, and the entry `enqueue` makes of
/// them reads back; a name as `enqueue` makes it has the age it was made at.
pub fn spool_entry(data: &[u8]) {
    use crate::push::queue::{
        ENTRY_VERSION, Entry, EntryState, age_of, entry_name, is_entry_name, split_out_paths,
    };
    let p = parts(data, 3);
    if let Ok(entry) = Entry::parse(p[0]) {
        assert_eq!(entry.version, ENTRY_VERSION, "another version was read");
        assert!(!entry.paths.is_empty(), "an entry without paths was read");
        let written = entry.to_bytes();
        assert_eq!(
            Entry::parse(&written).as_ref(),
            Ok(&entry),
            "the written entry reads differently\n{}",
            text(&written)
        );
        if entry.check_paths(pathinfo::DEFAULT_STORE_DIR).is_ok() {
            for path in &entry.paths {
                assert_eq!(
                    pathinfo::resolve_store_path(path, pathinfo::DEFAULT_STORE_DIR)
                        .ok()
                        .as_ref(),
                    Some(path),
                    "a checked path is not the store path push uploads"
                );
            }
        }
    }
    if let Ok(state) = EntryState::parse(p[1]) {
        let written = state.to_bytes();
        assert_eq!(
            EntryState::parse(&written),
            Ok(state),
            "the written state reads differently\n{}",
            text(&written)
        );
    }

    let out_paths = text(p[2]);
    let paths = split_out_paths(&out_paths);
    assert!(
        paths
            .iter()
            .all(|p| !p.is_empty() && !p.contains(char::is_whitespace)),
        "{paths:?}"
    );
    let kept: String = out_paths.chars().filter(|c| !c.is_whitespace()).collect();
    assert_eq!(paths.concat(), kept, "a character was lost or added");
    assert_eq!(split_out_paths(&paths.join(" ")), paths, "not stable");
    if !paths.is_empty() {
        let drv = text(p[1]);
        let entry = Entry::new(paths, Some(&drv));
        assert_eq!(
            Entry::parse(&entry.to_bytes()),
            Ok(entry),
            "what enqueue writes does not read back"
        );
    }

    // File names: any name's age must not panic; a name as enqueue makes
    // it is an entry's name and has the age it was made at.
    let _ = age_of(&out_paths);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .expect("the clock is after 1970");
    let mut seed = [0u8; 8];
    for (i, b) in p[2].iter().take(8).enumerate() {
        seed[i] = *b;
    }
    let millis = u64::from_le_bytes(seed) % (now.as_millis() as u64 + 1);
    let name = entry_name(u128::from(millis), u32::from(seed[0]), [seed[1]; 4]);
    assert!(is_entry_name(&name), "{name}");
    let later = entry_name(u128::from(millis) + 1, 0, [0; 4]);
    assert!(later > name, "{later} sorts before {name}");
    let age = age_of(&name).unwrap_or_else(|| panic!("{name} has no age"));
    let expected = now.saturating_sub(std::time::Duration::from_millis(millis));
    assert!(
        age >= expected && age - expected < std::time::Duration::from_secs(60),
        "{name}: age {age:?}, expected {expected:?}"
    );
}
