//! `<hash>.narinfo`: a store path's metadata in a binary cache.
//!
//! Lines are `Key: Value`. Nix requires `StorePath`, `URL`, `NarHash` and
//! `NarSize` (> 0); the others are optional, `Sig` may repeat, and keys Nix
//! does not know are ignored. The parser here reads what other tools (and
//! a compromised writer) put in a bucket, so it is tolerant where Nix is
//! (unknown keys are kept, any number of `Sig` lines, a missing final
//! newline) and strict where a wrong value would matter: required fields,
//! hashes, sizes and store path names are checked, a known key given twice
//! is refused, and no input makes it panic (it is fuzzed).
//!
//! [`NarInfo::render`] writes the fields in the order Nix does, and
//! `parse(render(x)) == x` for every parsed `x`.

use std::fmt::Write as _;

use crate::hash::{NixHash, truncate};
use crate::pathinfo::{hash_part, is_base_name, split_store_path};
use crate::signing::{self, PublicKey, SecretKey};

/// A parsed narinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarInfo {
    /// Full store path.
    pub store_path: String,
    /// Where the (compressed) NAR is, relative to the cache root.
    pub url: String,
    /// `xz`, `zstd`, `none`, ...; `None` when absent, which Nix reads as bzip2.
    pub compression: Option<String>,
    /// Hash of the file at `url`.
    pub file_hash: Option<NixHash>,
    /// Size of the file at `url`.
    pub file_size: Option<u64>,
    /// Hash of the uncompressed NAR (what signatures cover).
    pub nar_hash: NixHash,
    /// Size of the uncompressed NAR (> 0).
    pub nar_size: u64,
    /// Referenced paths as base names (`<hash>-<name>`), in file order.
    pub references: Vec<String>,
    /// The deriver's base name; `None` for absent or `unknown-deriver`.
    pub deriver: Option<String>,
    /// Signatures (`keyname:base64`), in file order.
    pub sigs: Vec<String>,
    /// Content address, verbatim.
    pub ca: Option<String>,
    /// Keys this parser does not know, with their values, in file order.
    pub extra: Vec<(String, String)>,
}

/// Why a narinfo was refused; the message names the line or field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn err<T>(m: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(m.into()))
}

/// Values may not contain line breaks (they would start a new field).
fn clean(s: &str) -> bool {
    !s.contains(['\n', '\r'])
}

impl NarInfo {
    /// Parses narinfo bytes (must be UTF-8).
    pub fn parse_bytes(bytes: &[u8]) -> Result<NarInfo, ParseError> {
        match std::str::from_utf8(bytes) {
            Ok(s) => Self::parse(s),
            Err(e) => err(format!("not UTF-8 text ({e})")),
        }
    }

    /// Parses narinfo text.
    pub fn parse(text: &str) -> Result<NarInfo, ParseError> {
        #[derive(Default)]
        struct Seen {
            store_path: Option<String>,
            url: Option<String>,
            compression: Option<String>,
            file_hash: Option<NixHash>,
            file_size: Option<u64>,
            nar_hash: Option<NixHash>,
            nar_size: Option<u64>,
            references: Option<Vec<String>>,
            deriver: Option<Option<String>>,
            ca: Option<String>,
        }
        fn once<T>(slot: &mut Option<T>, key: &str, v: T) -> Result<(), ParseError> {
            if slot.is_some() {
                return err(format!("{key} appears twice"));
            }
            *slot = Some(v);
            Ok(())
        }
        fn size(key: &str, v: &str) -> Result<u64, ParseError> {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return err(format!("{key}: `{}` is not a size", truncate(v)));
            }
            v.parse()
                .or_else(|_| err(format!("{key}: `{}` is too large", truncate(v))))
        }
        fn hash(key: &str, v: &str) -> Result<NixHash, ParseError> {
            NixHash::parse(v).or_else(|m| err(format!("{key}: {m}")))
        }

        let mut s = Seen::default();
        let mut sigs = Vec::new();
        let mut extra = Vec::new();
        for (n, line) in text.split('\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                return err(format!("line {}: expected `Key: Value`", n + 1));
            };
            let value = value.strip_prefix(' ').unwrap_or(value);
            if key.is_empty() || !clean(value) {
                return err(format!("line {}: expected `Key: Value`", n + 1));
            }
            match key {
                "StorePath" => {
                    if split_store_path(value).is_none() {
                        return err(format!(
                            "StorePath: `{}` is not a store path",
                            truncate(value)
                        ));
                    }
                    once(&mut s.store_path, key, value.to_string())?
                }
                "URL" => {
                    if value.is_empty() || value.contains(char::is_whitespace) {
                        return err("URL: must be non-empty and without spaces");
                    }
                    once(&mut s.url, key, value.to_string())?
                }
                "Compression" => {
                    if value.is_empty() || value.contains(char::is_whitespace) {
                        return err("Compression: must be one word");
                    }
                    once(&mut s.compression, key, value.to_string())?
                }
                "FileHash" => once(&mut s.file_hash, key, hash(key, value)?)?,
                "FileSize" => once(&mut s.file_size, key, size(key, value)?)?,
                "NarHash" => once(&mut s.nar_hash, key, hash(key, value)?)?,
                "NarSize" => once(&mut s.nar_size, key, size(key, value)?)?,
                "References" => {
                    let refs: Vec<String> = value.split_whitespace().map(str::to_string).collect();
                    if let Some(bad) = refs.iter().find(|r| !is_base_name(r)) {
                        return err(format!(
                            "References: `{}` is not a store path base name",
                            truncate(bad)
                        ));
                    }
                    once(&mut s.references, key, refs)?
                }
                "Deriver" => {
                    let d = match value {
                        "unknown-deriver" => None,
                        d if is_base_name(d) => Some(d.to_string()),
                        d => {
                            return err(format!(
                                "Deriver: `{}` is not a store path base name",
                                truncate(d)
                            ));
                        }
                    };
                    once(&mut s.deriver, key, d)?
                }
                "Sig" => {
                    if value.is_empty() || value.contains(char::is_whitespace) {
                        return err("Sig: must be `keyname:base64`");
                    }
                    sigs.push(value.to_string())
                }
                "CA" => once(&mut s.ca, key, value.to_string())?,
                _ => extra.push((key.to_string(), value.to_string())),
            }
        }
        let Some(store_path) = s.store_path else {
            return err("StorePath missing");
        };
        let Some(url) = s.url else {
            return err("URL missing");
        };
        let Some(nar_hash) = s.nar_hash else {
            return err("NarHash missing");
        };
        let nar_size = match s.nar_size {
            Some(n) if n > 0 => n,
            _ => return err("NarSize missing or zero"),
        };
        Ok(NarInfo {
            store_path,
            url,
            compression: s.compression,
            file_hash: s.file_hash,
            file_size: s.file_size,
            nar_hash,
            nar_size,
            references: s.references.unwrap_or_default(),
            deriver: s.deriver.flatten(),
            sigs,
            ca: s.ca,
            extra,
        })
    }

    /// The narinfo text, fields in Nix's order, every line ending in `\n`.
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(512);
        let mut line = |k: &str, v: &str| {
            let _ = writeln!(o, "{k}: {v}");
        };
        line("StorePath", &self.store_path);
        line("URL", &self.url);
        if let Some(c) = &self.compression {
            line("Compression", c);
        }
        if let Some(h) = &self.file_hash {
            line("FileHash", &h.to_nix32_string());
        }
        if let Some(n) = self.file_size {
            line("FileSize", &n.to_string());
        }
        line("NarHash", &self.nar_hash.to_nix32_string());
        line("NarSize", &self.nar_size.to_string());
        line("References", &self.references.join(" "));
        if let Some(d) = &self.deriver {
            line("Deriver", d);
        }
        for s in &self.sigs {
            line("Sig", s);
        }
        if let Some(ca) = &self.ca {
            line("CA", ca);
        }
        for (k, v) in &self.extra {
            line(k, v);
        }
        o
    }

    /// The hash part of the store path: the narinfo is `<hash>.narinfo`.
    pub fn hash_part(&self) -> &str {
        hash_part(&self.store_path).unwrap_or_default()
    }

    /// The store directory of the path (`/nix/store`).
    pub fn store_dir(&self) -> &str {
        split_store_path(&self.store_path)
            .map(|(d, _, _)| d)
            .unwrap_or_default()
    }

    /// The string its signatures cover (see [`signing::fingerprint`]).
    pub fn fingerprint(&self) -> String {
        signing::fingerprint(
            &self.store_path,
            &self.nar_hash.to_nix32_string(),
            self.nar_size,
            &self.reference_paths(),
        )
    }

    /// Adds `key`'s signature, replacing an older one by a key of the same
    /// name (re-signing is idempotent).
    pub fn sign(&mut self, key: &SecretKey) {
        let sig = key.sign(self.fingerprint().as_bytes());
        let prefix = format!("{}:", key.name);
        self.sigs.retain(|s| !s.starts_with(&prefix));
        self.sigs.push(sig);
    }

    /// True when a signature verifies under one of `trusted`, as Nix checks
    /// it (keys matched by name).
    pub fn verify(&self, trusted: &[PublicKey]) -> bool {
        signing::verify_any(&self.fingerprint(), &self.sigs, trusted)
    }

    /// References as full store paths, sorted (the fingerprint's order).
    pub fn reference_paths(&self) -> Vec<String> {
        let dir = self.store_dir();
        let mut v: Vec<String> = self
            .references
            .iter()
            .map(|r| format!("{dir}/{r}"))
            .collect();
        v.sort();
        v
    }
}

/// `text` (a narinfo) with its `Sig:` lines whose value `drop` selects
/// removed and `add` (a `Sig:` value) added after the last `Sig:` line, or
/// at the end when there is none. Every other byte is kept as it was, so
/// re-signing changes nothing but signatures, whatever tool wrote the file.
/// Callers parse the result to check it (see [`NarInfo::same_except_sigs`]).
pub fn rewrite_sigs(text: &str, drop: impl Fn(&str) -> bool, add: Option<&str>) -> String {
    let mut out = String::with_capacity(text.len() + 120);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    fn sig_value(line: &str) -> Option<&str> {
        let v = line.strip_prefix("Sig:")?.trim_end_matches('\n');
        Some(v.strip_prefix(' ').unwrap_or(v))
    }
    let last_sig = lines.iter().rposition(|l| sig_value(l).is_some());
    let push_added = |out: &mut String| {
        if let Some(sig) = add {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str("Sig: ");
            out.push_str(sig);
            out.push('\n');
        }
    };
    for (i, line) in lines.iter().enumerate() {
        match sig_value(line) {
            Some(v) if drop(v) => {}
            _ => out.push_str(line),
        }
        if Some(i) == last_sig {
            push_added(&mut out);
        }
    }
    if last_sig.is_none() {
        push_added(&mut out);
    }
    out
}

impl NarInfo {
    /// True when `self` and `other` differ at most in their signatures.
    pub fn same_except_sigs(&self, other: &NarInfo) -> bool {
        let strip = |n: &NarInfo| NarInfo {
            sigs: Vec::new(),
            ..n.clone()
        };
        strip(self) == strip(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // In the shape `nix copy --to file://...` writes, with two Sig lines and
    // a key this parser does not know.
    const SAMPLE: &str = "StorePath: /nix/store/35h2xr9qqvgrkgfzppsx3d5ykmhm1s8w-refer
URL: nar/1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3.nar.xz
Compression: xz
FileHash: sha256:1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3
FileSize: 260
NarHash: sha256:0964p82ixw0hff3l7b1ypc21cdp1dayj5wcwy9sbf88p4f7y1bqd
NarSize: 216
References: 35h2xr9qqvgrkgfzppsx3d5ykmhm1s8w-refer xmlf96i37p4wk3j4bar8d4ybj0cfczxi-testsrc
Deriver: 8lyqhvnwvl5wzn1w5ly1hvmn4fa0x8h1-refer.drv
Sig: a-1:AAAA
Sig: b-1:BBBB
System: x86_64-linux
";

    #[test]
    fn parses_and_round_trips() {
        let n = NarInfo::parse(SAMPLE).unwrap();
        assert_eq!(n.hash_part(), "35h2xr9qqvgrkgfzppsx3d5ykmhm1s8w");
        assert_eq!(n.compression.as_deref(), Some("xz"));
        assert_eq!(n.file_size, Some(260));
        assert_eq!(n.nar_size, 216);
        assert_eq!(n.references.len(), 2);
        assert_eq!(n.sigs, ["a-1:AAAA", "b-1:BBBB"]);
        assert_eq!(
            n.extra,
            [("System".to_string(), "x86_64-linux".to_string())]
        );
        assert_eq!(n.render(), SAMPLE);
        assert_eq!(NarInfo::parse(&n.render()).unwrap(), n);
        assert_eq!(
            n.reference_paths()[1],
            "/nix/store/xmlf96i37p4wk3j4bar8d4ybj0cfczxi-testsrc"
        );
    }

    #[test]
    fn sign_and_verify() {
        let mut n = NarInfo::parse(SAMPLE).unwrap();
        assert!(
            n.fingerprint().starts_with(
                "1;/nix/store/35h2xr9qqvgrkgfzppsx3d5ykmhm1s8w-refer;sha256:0964p82ix"
            )
        );
        assert!(n.fingerprint().ends_with(
            ";216;/nix/store/35h2xr9qqvgrkgfzppsx3d5ykmhm1s8w-refer,\
             /nix/store/xmlf96i37p4wk3j4bar8d4ybj0cfczxi-testsrc"
        ));
        let key = SecretKey::generate("test-1").unwrap();
        let other = SecretKey::generate("other-1").unwrap();
        assert!(!n.verify(&[key.public()]));
        n.sign(&key);
        n.sign(&key);
        assert_eq!(n.sigs.len(), 3);
        assert!(n.verify(&[key.public()]));
        assert!(!n.verify(&[other.public()]));
        n.nar_size += 1;
        assert!(!n.verify(&[key.public()]));
    }

    #[test]
    fn minimal_and_tolerant() {
        let t = "StorePath: /nix/store/35h2xr9qqvgrkgfzppsx3d5ykmhm1s8w-refer\nURL: nar/x.nar\n\
                 NarHash: sha256-HDfQGvQL4ugGkd48w99EN3ppmvuxfGjwgJZLL9Bx/BM=\nNarSize: 1\nReferences: \n\
                 Deriver: unknown-deriver";
        let n = NarInfo::parse(t).unwrap();
        assert!(n.references.is_empty() && n.deriver.is_none() && n.compression.is_none());
    }

    #[test]
    fn strict_on_what_matters() {
        let without = |key: &str| {
            SAMPLE
                .lines()
                .filter(|l| !l.starts_with(key))
                .collect::<Vec<_>>()
                .join("\n")
        };
        for (key, msg) in [
            ("StorePath", "StorePath missing"),
            ("URL", "URL missing"),
            ("NarHash", "NarHash missing"),
            ("NarSize", "NarSize missing or zero"),
        ] {
            assert_eq!(NarInfo::parse(&without(key)).unwrap_err().0, msg);
        }
        for (from, to) in [
            ("NarSize: 216", "NarSize: 0"),
            ("NarSize: 216", "NarSize: -1"),
            ("NarSize: 216", "NarSize: 99999999999999999999999"),
            ("FileSize: 260", "FileSize: 2 60"),
            ("Compression: xz", "Compression: xz\nCompression: zstd"),
            ("URL: nar", "URL nar"),
            ("References: 35h2", "References: ../35h2"),
            ("Deriver: 8ly", "Deriver: /8ly"),
            ("NarHash: sha256:0964", "NarHash: sha256:e964"),
            ("StorePath: /nix/store/35h2", "StorePath: nix/store/35h2"),
            ("Sig: a-1:AAAA", "Sig: "),
        ] {
            let t = SAMPLE.replacen(from, to, 1);
            assert_ne!(t, SAMPLE);
            assert!(NarInfo::parse(&t).is_err(), "accepted: {to}");
        }
    }

    /// Random mutations of valid narinfos: never a panic, and whatever is
    /// accepted renders to text that parses back to the same value.
    #[test]
    fn mutations_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let base = SAMPLE.as_bytes();
        for _ in 0..20_000 {
            let mut b = base.to_vec();
            for _ in 0..(next() % 6 + 1) {
                let i = (next() as usize) % b.len().max(1);
                match next() % 4 {
                    0 => b[i] = next() as u8,
                    1 => {
                        b.remove(i);
                    }
                    2 => b.insert(i, b": \n-/0a"[(next() % 7) as usize]),
                    _ => b.truncate(i),
                }
                if b.is_empty() {
                    break;
                }
            }
            if let Ok(n) = NarInfo::parse_bytes(&b) {
                assert_eq!(NarInfo::parse(&n.render()).unwrap(), n);
            }
        }
    }

    #[test]
    fn rewrite_sigs_touches_only_signatures() {
        // Add after the last Sig line, keeping every other byte.
        let t = rewrite_sigs(SAMPLE, |_| false, Some("c-1:CCCC"));
        assert_eq!(
            t,
            SAMPLE.replace("Sig: b-1:BBBB\n", "Sig: b-1:BBBB\nSig: c-1:CCCC\n")
        );
        let n = NarInfo::parse(&t).unwrap();
        assert_eq!(n.sigs, ["a-1:AAAA", "b-1:BBBB", "c-1:CCCC"]);
        assert!(n.same_except_sigs(&NarInfo::parse(SAMPLE).unwrap()));

        // Drop one key's signatures and replace another.
        let t = rewrite_sigs(SAMPLE, |s| s.starts_with("a-1:"), None);
        assert_eq!(t, SAMPLE.replace("Sig: a-1:AAAA\n", ""));
        let t = rewrite_sigs(SAMPLE, |s| s.starts_with("b-1:"), Some("b-1:NEW"));
        assert_eq!(t, SAMPLE.replace("b-1:BBBB", "b-1:NEW"));

        // No Sig line and no final newline: appended on a line of its own.
        let bare = "StorePath: /nix/store/35h2xr9qqvgrkgfzppsx3d5ykmhm1s8w-refer\nURL: nar/x\n\
                    NarHash: sha256:0964p82ixw0hff3l7b1ypc21cdp1dayj5wcwy9sbf88p4f7y1bqd\nNarSize: 216";
        let t = rewrite_sigs(bare, |_| true, Some("k-1:KKKK"));
        assert_eq!(t, format!("{bare}\nSig: k-1:KKKK\n"));
        assert_eq!(NarInfo::parse(&t).unwrap().sigs, ["k-1:KKKK"]);
        assert_eq!(rewrite_sigs(bare, |_| true, None), bare);
    }
}
