//! Store path metadata from `nix path-info --json [--recursive]`, and store
//! path names.
//!
//! Nix has printed this JSON in several shapes and a push must read them
//! all: Nix 2.8 prints an array of objects that carry their `path` (an
//! invalid path is `{"path": ..., "valid": false}`); newer Nix prints an
//! object keyed by path (an invalid path maps to `null`), and from JSON
//! format version 2 on, references and deriver are base names, `ca` and the
//! hashes may be structured and signatures may be objects. Everything is
//! normalised to [`PathInfo`] with full paths and a parsed [`NixHash`].
//!
//! [`closure_order`] sorts a closure so that every path comes after the
//! paths it references: the order a push must publish narinfos in.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Command;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::hash::NixHash;
use crate::nix32;

/// The default Nix store directory.
pub const DEFAULT_STORE_DIR: &str = "/nix/store";

/// What Nix knows about one valid store path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    /// Full store path.
    pub path: String,
    /// Hash of the path's NAR serialisation.
    pub nar_hash: NixHash,
    /// Size of the NAR serialisation in bytes.
    pub nar_size: u64,
    /// Full store paths this path references (sorted; may include itself).
    pub references: Vec<String>,
    /// The derivation that built it, if known (full path).
    pub deriver: Option<String>,
    /// Signatures Nix holds for it (`keyname:base64`).
    pub signatures: Vec<String>,
    /// Content address (`fixed:r:sha256:...`, `text:sha256:...`) for
    /// content-addressed paths, which clients accept without a signature.
    pub ca: Option<String>,
}

impl PathInfo {
    /// The 32-character hash part of the path (the narinfo's name).
    pub fn hash_part(&self) -> &str {
        hash_part(&self.path).unwrap_or_default()
    }

    /// References other than the path itself.
    pub fn dependencies(&self) -> impl Iterator<Item = &String> {
        self.references.iter().filter(move |r| **r != self.path)
    }
}

/// The answer of `nix path-info`: the valid paths' info and the paths Nix
/// says are not valid (not in the store, e.g. garbage-collected).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathInfos {
    /// Info of every valid path, in Nix's output order.
    pub valid: Vec<PathInfo>,
    /// Paths that are not valid.
    pub invalid: Vec<String>,
}

/// Splits a store path into (store dir, hash part, name), checking the
/// hash part's alphabet and the name's characters as Nix does.
pub fn split_store_path(path: &str) -> Option<(&str, &str, &str)> {
    let (dir, base) = path.rsplit_once('/')?;
    if !dir.starts_with('/') {
        return None;
    }
    let (hash, name) = split_base_name(base)?;
    Some((dir, hash, name))
}

/// Splits `<hash>-<name>` and validates both parts.
pub fn split_base_name(base: &str) -> Option<(&str, &str)> {
    if base.len() < 34 || !base.is_char_boundary(32) || base.as_bytes()[32] != b'-' {
        return None;
    }
    let (hash, name) = (&base[..32], &base[33..]);
    let hash_ok = nix32::decode(hash).is_ok();
    let name_ok = name.len() <= 211
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b));
    (hash_ok && name_ok).then_some((hash, name))
}

/// True for a valid store path base name (`<32 nix32>-<name>`).
pub fn is_base_name(s: &str) -> bool {
    split_base_name(s).is_some()
}

/// The hash part of a full store path.
pub fn hash_part(path: &str) -> Option<&str> {
    split_store_path(path).map(|(_, h, _)| h)
}

/// The base name (`<hash>-<name>`) of a full store path.
pub fn base_name(path: &str) -> &str {
    path.rsplit_once('/').map(|(_, b)| b).unwrap_or(path)
}

/// A full path from a base name or a full path.
fn full_path(store_dir: &str, s: &str) -> String {
    if s.starts_with('/') {
        s.to_string()
    } else {
        format!("{}/{s}", store_dir.trim_end_matches('/'))
    }
}

/// Resolves a command-line argument to the store path it names: a store
/// path, a file inside one, or a symlink into the store (`./result`).
pub fn resolve_store_path(arg: &str, store_dir: &str) -> Result<String> {
    let prefix = format!("{}/", store_dir.trim_end_matches('/'));
    let within = |p: &str| -> Option<String> {
        let rest = p.strip_prefix(&prefix)?;
        let base = rest.split('/').next()?;
        is_base_name(base).then(|| format!("{prefix}{base}"))
    };
    if let Some(p) = within(arg) {
        return Ok(p);
    }
    let canonical = std::fs::canonicalize(arg).map_err(|e| {
        Error::config(
            "store path",
            format!("`{arg}` is neither a store path nor a link to one: {e}"),
        )
    })?;
    within(&canonical.to_string_lossy()).ok_or_else(|| {
        Error::config(
            "store path",
            format!(
                "`{arg}` resolves to {}, which is not in {store_dir}",
                canonical.display()
            ),
        )
    })
}

/// Parses the output of `nix path-info --json`, whichever shape it has.
/// `store_dir` completes base names (JSON v2+ carries its own `storeDir`).
pub fn parse_json(text: &str, store_dir: &str) -> Result<PathInfos, String> {
    let root: Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
    let mut out = PathInfos::default();
    match root {
        Value::Array(items) => {
            for item in items {
                let path = item
                    .get("path")
                    .and_then(Value::as_str)
                    .ok_or("an entry has no `path`")?
                    .to_string();
                if item.get("valid").and_then(Value::as_bool) == Some(false) {
                    out.invalid.push(full_path(store_dir, &path));
                } else {
                    out.valid.push(parse_entry(&path, &item, store_dir)?);
                }
            }
        }
        Value::Object(map) => {
            for (path, item) in map {
                if item.is_null() {
                    out.invalid.push(full_path(store_dir, &path));
                } else {
                    out.valid.push(parse_entry(&path, &item, store_dir)?);
                }
            }
        }
        _ => return Err("expected a JSON array or object".into()),
    }
    Ok(out)
}

fn parse_entry(path: &str, v: &Value, default_store_dir: &str) -> Result<PathInfo, String> {
    let store_dir = v
        .get("storeDir")
        .and_then(Value::as_str)
        .unwrap_or(default_store_dir);
    let path = full_path(store_dir, path);
    if split_store_path(&path).is_none() {
        return Err(format!("`{path}` is not a store path"));
    }
    let ctx = |m: String| format!("{path}: {m}");
    let nar_hash = NixHash::from_json(v.get("narHash").unwrap_or(&Value::Null))
        .map_err(|m| ctx(format!("narHash: {m}")))?;
    let nar_size = v
        .get("narSize")
        .and_then(Value::as_u64)
        .ok_or_else(|| ctx("no numeric narSize".into()))?;
    let mut references = Vec::new();
    for r in v
        .get("references")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let r = r
            .as_str()
            .ok_or_else(|| ctx("a reference is not a string".into()))?;
        let full = full_path(store_dir, r);
        if split_store_path(&full).is_none() {
            return Err(ctx(format!("reference `{r}` is not a store path")));
        }
        references.push(full);
    }
    references.sort();
    references.dedup();
    let deriver = v
        .get("deriver")
        .and_then(Value::as_str)
        .map(|d| full_path(store_dir, d));
    let signatures = v
        .get("signatures")
        .and_then(Value::as_array)
        .map(|sigs| sigs.iter().filter_map(signature_string).collect())
        .unwrap_or_default();
    let ca = match v.get("ca") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(structured) => Some(ca_string(structured).map_err(|m| ctx(format!("ca: {m}")))?),
    };
    Ok(PathInfo {
        path,
        nar_hash,
        nar_size,
        references,
        deriver,
        signatures,
        ca,
    })
}

/// A signature as a string (`name:sig`), from either JSON form.
fn signature_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => Some(format!(
            "{}:{}",
            o.get("keyName")?.as_str()?,
            o.get("sig")?.as_str()?
        )),
        _ => None,
    }
}

/// The narinfo form of a structured content address
/// (`{"method": "nar", "hash": ...}` → `fixed:r:sha256:<nix32>`).
fn ca_string(v: &Value) -> Result<String, String> {
    let method = v
        .get("method")
        .and_then(Value::as_str)
        .ok_or("no `method`")?;
    let hash = NixHash::from_json(v.get("hash").ok_or("no `hash`")?)?;
    let h = hash.to_nix32_string();
    Ok(match method {
        "nar" => format!("fixed:r:{h}"),
        "flat" => format!("fixed:{h}"),
        "text" => format!("text:{h}"),
        "git" => format!("fixed:git:{h}"),
        other => return Err(format!("unknown method `{other}`")),
    })
}

/// Runs `nix path-info --json` on `paths` (with `--recursive`: their
/// closures). Paths are passed in batches so that a long queue never hits
/// the argument length limit. Paths that are not valid are listed in
/// [`PathInfos::invalid`], whichever way the Nix version reports them.
pub fn query(paths: &[String], recursive: bool, store_dir: &str) -> Result<PathInfos> {
    let mut all = PathInfos::default();
    let mut seen = BTreeSet::new();
    for batch in paths.chunks(2000) {
        let infos = match run_path_info(batch, recursive, store_dir) {
            Ok(infos) => infos,
            // `--recursive` fails outright on an invalid path (Nix 2.8);
            // without it, Nix reports which paths are invalid.
            Err(e) if recursive => {
                let flat = run_path_info(batch, false, store_dir)?;
                if flat.invalid.is_empty() {
                    return Err(e);
                }
                let valid: Vec<String> = flat.valid.into_iter().map(|p| p.path).collect();
                let mut infos = if valid.is_empty() {
                    PathInfos::default()
                } else {
                    run_path_info(&valid, true, store_dir)?
                };
                infos.invalid.extend(flat.invalid);
                infos
            }
            Err(e) => return Err(e),
        };
        for info in infos.valid {
            if seen.insert(info.path.clone()) {
                all.valid.push(info);
            }
        }
        all.invalid.extend(infos.invalid);
    }
    Ok(all)
}

fn run_path_info(paths: &[String], recursive: bool, store_dir: &str) -> Result<PathInfos> {
    let mut cmd = Command::new("nix");
    cmd.args([
        "--extra-experimental-features",
        "nix-command",
        "path-info",
        "--json",
    ]);
    if recursive {
        cmd.arg("--recursive");
    }
    cmd.arg("--").args(paths);
    let shown = format!(
        "nix path-info --json{} ({} paths)",
        if recursive { " --recursive" } else { "" },
        paths.len()
    );
    let out = cmd.output().map_err(|e| Error::Nix {
        command: shown.clone(),
        message: format!("cannot run nix: {e} (is Nix installed and on PATH?)"),
    })?;
    if !out.status.success() {
        return Err(Error::Nix {
            command: shown,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    parse_json(&text, store_dir).map_err(|message| Error::Nix {
        command: shown,
        message: format!("unreadable output: {message}"),
    })
}

/// Orders `infos` so that every path comes after the paths it references
/// (self-references ignored); ties are broken by path, so the order is
/// deterministic. References outside `infos` are ignored (a `--no-closure`
/// push, or paths an upstream cache serves). A cycle, which a valid Nix
/// store cannot hold, is an error naming a path on it.
pub fn closure_order(infos: Vec<PathInfo>) -> Result<Vec<PathInfo>> {
    let index: HashMap<String, usize> = infos
        .iter()
        .enumerate()
        .map(|(i, p)| (p.path.clone(), i))
        .collect();
    let mut pending: Vec<usize> = vec![0; infos.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); infos.len()];
    for (i, info) in infos.iter().enumerate() {
        for dep in info.dependencies() {
            if let Some(&j) = index.get(dep) {
                pending[i] += 1;
                dependents[j].push(i);
            }
        }
    }
    let mut ready: BTreeMap<&str, usize> = infos
        .iter()
        .enumerate()
        .filter(|(i, _)| pending[*i] == 0)
        .map(|(i, p)| (p.path.as_str(), i))
        .collect();
    let mut order = Vec::with_capacity(infos.len());
    while let Some((_, i)) = ready.pop_first() {
        order.push(i);
        for &d in &dependents[i] {
            pending[d] -= 1;
            if pending[d] == 0 {
                ready.insert(infos[d].path.as_str(), d);
            }
        }
    }
    if order.len() != infos.len() {
        let stuck = (0..infos.len()).find(|i| pending[*i] > 0).unwrap_or(0);
        return Err(Error::Nix {
            command: "nix path-info".into(),
            message: format!("reference cycle through {}", infos[stuck].path),
        });
    }
    let mut slots: Vec<Option<PathInfo>> = infos.into_iter().map(Some).collect();
    Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "/nix/store/6h9lcbx523532ax1c5g2351w9bm8ykhy-f.txt";
    const B: &str = "/nix/store/g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-bar";
    const C: &str = "/nix/store/n5wkd9frr45pa74if5gpz9j7mifg27fh-foo";

    #[test]
    fn nix_2_8_array() {
        // Verbatim output of Nix 2.8 for a valid and an invalid path.
        let text = r#"[{"path":"/nix/store/6h9lcbx523532ax1c5g2351w9bm8ykhy-f.txt","narHash":"sha256-HDfQGvQL4ugGkd48w99EN3ppmvuxfGjwgJZLL9Bx/BM=","narSize":120,"references":[],"ca":"fixed:r:sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw","registrationTime":1796017538},{"path":"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x","valid":false}]"#;
        let p = parse_json(text, DEFAULT_STORE_DIR).unwrap();
        assert_eq!(p.invalid, ["/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x"]);
        assert_eq!(p.valid.len(), 1);
        let v = &p.valid[0];
        assert_eq!(v.path, A);
        assert_eq!(v.nar_size, 120);
        assert_eq!(
            v.nar_hash.to_nix32_string(),
            "sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw"
        );
        assert_eq!(v.hash_part(), "6h9lcbx523532ax1c5g2351w9bm8ykhy");
    }

    #[test]
    fn newer_object_formats() {
        // Object keyed by full path (JSON v1, newer Nix), null = invalid.
        let v1 = format!(
            r#"{{"{B}": {{"ca":null,"deriver":"/nix/store/g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-bar.drv",
              "narHash":"sha256-FePFYIlMuycIXPZbWi7LGEiMmZSX9FMbaQenWBzm1Sc=","narSize":34878,
              "references":["{B}","{C}"],"signatures":["k:s"],"version":1}},
              "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x": null}}"#
        );
        let p = parse_json(&v1, DEFAULT_STORE_DIR).unwrap();
        assert_eq!(p.valid[0].references, [B, C]);
        assert_eq!(p.valid[0].dependencies().collect::<Vec<_>>(), [C]);
        assert_eq!(p.invalid.len(), 1);
        // v3: base names, structured ca and hash, signature objects.
        let v3 = r#"{"g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-bar": {
            "ca": {"hash": "sha256-EMIJ+giQ/gLIWoxmPKjno3zHZrxbGymgzGGyZvZBIdM=", "method": "nar"},
            "deriver": "g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-bar.drv",
            "narHash": {"algorithm": "sha256", "format": "base64", "hash": "FePFYIlMuycIXPZbWi7LGEiMmZSX9FMbaQenWBzm1Sc="},
            "narSize": 34878,
            "references": ["g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-bar", "n5wkd9frr45pa74if5gpz9j7mifg27fh-foo"],
            "signatures": [{"keyName": "asdf", "sig": "AAAA"}],
            "storeDir": "/nix/store", "ultimate": true, "version": 3}}"#;
        let p3 = parse_json(v3, "/elsewhere").unwrap();
        let e = &p3.valid[0];
        assert_eq!(e.path, B);
        assert_eq!(e.references, [B, C]);
        assert_eq!(
            e.deriver.as_deref(),
            Some("/nix/store/g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-bar.drv")
        );
        assert_eq!(e.signatures, ["asdf:AAAA"]);
        assert!(e.ca.as_deref().unwrap().starts_with("fixed:r:sha256:"));
        assert_eq!(e.nar_hash, p.valid[0].nar_hash);
    }

    #[test]
    fn refuses_bad_json() {
        for bad in [
            "",
            "3",
            r#"[{"narHash":"x"}]"#,
            r#"[{"path":"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x","narHash":"nope","narSize":1}]"#,
            r#"[{"path":"not-a-path","narHash":"sha256-HDfQGvQL4ugGkd48w99EN3ppmvuxfGjwgJZLL9Bx/BM=","narSize":1}]"#,
        ] {
            assert!(parse_json(bad, DEFAULT_STORE_DIR).is_err(), "{bad}");
        }
    }

    fn info(path: &str, refs: &[&str]) -> PathInfo {
        PathInfo {
            path: path.into(),
            nar_hash: NixHash::sha256([0; 32]),
            nar_size: 8,
            references: refs.iter().map(|r| r.to_string()).collect(),
            deriver: None,
            signatures: vec![],
            ca: None,
        }
    }

    #[test]
    fn dependencies_first() {
        // C -> B -> A, C -> A; B refers to itself; D is outside the set.
        let d = "/nix/store/0000000000000000000000000000000d-d";
        let order =
            closure_order(vec![info(C, &[A, B, d]), info(B, &[A, B]), info(A, &[])]).unwrap();
        let paths: Vec<&str> = order.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, [A, B, C]);
        assert!(closure_order(vec![info(A, &[B]), info(B, &[A])]).is_err());
    }

    #[test]
    fn store_path_names() {
        assert!(split_store_path(A).is_some());
        assert!(split_store_path("/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x").is_none());
        assert!(split_store_path("/nix/store/6h9lcbx523532ax1c5g2351w9bm8ykhy-").is_none());
        assert!(split_store_path("/nix/store/6h9lcbx523532ax1c5g2351w9bm8ykhy-a/b").is_none());
        assert!(split_store_path("/nix/store/6h9lcbx523532ax1c5g2351w9bm8ykhy-.x").is_none());
        assert!(split_store_path("relative/6h9lcbx523532ax1c5g2351w9bm8ykhy-x").is_none());
        assert_eq!(
            resolve_store_path(&format!("{A}/bin/x"), DEFAULT_STORE_DIR).unwrap(),
            A
        );
    }
}
