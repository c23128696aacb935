//! Nix hash strings: `sha256:<nix32>` as narinfo files and fingerprints
//! carry them, and every other form Nix reads (`algo:` + base16, Nix32 or
//! base64, and SRI `algo-<base64>` as `nix path-info --json` prints it),
//! plus the structured `{"algorithm", "hash"}` form of newer JSON.
//!
//! Parsing normalises to bytes, so two spellings of one hash compare equal
//! (a push compares the NarHash it computed with the one Nix recorded).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::nix32;

/// Hash algorithms Nix knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algo {
    /// MD5 (16 bytes; only in old fixed-output derivations).
    Md5,
    /// SHA-1 (20 bytes).
    Sha1,
    /// SHA-256 (32 bytes): every NarHash Nix writes.
    Sha256,
    /// SHA-512 (64 bytes).
    Sha512,
}

impl Algo {
    /// The name Nix prints (`sha256`).
    pub fn name(self) -> &'static str {
        match self {
            Algo::Md5 => "md5",
            Algo::Sha1 => "sha1",
            Algo::Sha256 => "sha256",
            Algo::Sha512 => "sha512",
        }
    }

    /// Digest length in bytes.
    pub fn size(self) -> usize {
        match self {
            Algo::Md5 => 16,
            Algo::Sha1 => 20,
            Algo::Sha256 => 32,
            Algo::Sha512 => 64,
        }
    }

    /// The algorithm called `name`.
    pub fn parse(name: &str) -> Option<Algo> {
        Some(match name {
            "md5" => Algo::Md5,
            "sha1" => Algo::Sha1,
            "sha256" => Algo::Sha256,
            "sha512" => Algo::Sha512,
            _ => return None,
        })
    }
}

/// A digest with its algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NixHash {
    /// The algorithm.
    pub algo: Algo,
    /// The digest (`algo.size()` bytes).
    pub bytes: Vec<u8>,
}

impl NixHash {
    /// A SHA-256 digest.
    pub fn sha256(bytes: [u8; 32]) -> NixHash {
        NixHash {
            algo: Algo::Sha256,
            bytes: bytes.to_vec(),
        }
    }

    /// Parses `algo:<base16|nix32|base64>` or SRI `algo-<base64>`.
    pub fn parse(s: &str) -> Result<NixHash, String> {
        if let Some((algo, rest)) = s.split_once(':') {
            let algo = Algo::parse(algo)
                .ok_or_else(|| format!("`{algo}` is not a hash algorithm Nix knows"))?;
            return Self::parse_digest(algo, rest);
        }
        if let Some((algo, rest)) = s.split_once('-')
            && let Some(algo) = Algo::parse(algo)
        {
            return Self::from_base64(algo, rest);
        }
        Err(format!(
            "`{}` is not a hash (expected sha256:<nix32> or sha256-<base64>)",
            truncate(s)
        ))
    }

    /// Parses a digest of known algorithm in base16, Nix32 or base64,
    /// told apart by length as Nix does.
    pub fn parse_digest(algo: Algo, s: &str) -> Result<NixHash, String> {
        let size = algo.size();
        let bytes = if s.len() == size * 2 {
            hex::decode(s).map_err(|e| format!("bad base16 {} hash: {e}", algo.name()))?
        } else if s.len() == nix32::encoded_len(size) {
            nix32::decode(s).map_err(|e| format!("bad Nix32 {} hash: {e}", algo.name()))?
        } else if s.len() == size.div_ceil(3) * 4 {
            return Self::from_base64(algo, s);
        } else {
            return Err(format!(
                "a {} hash of {} characters is neither base16, Nix32 nor base64",
                algo.name(),
                s.len()
            ));
        };
        Ok(NixHash { algo, bytes })
    }

    fn from_base64(algo: Algo, s: &str) -> Result<NixHash, String> {
        let bytes = STANDARD
            .decode(s)
            .map_err(|e| format!("bad base64 {} hash: {e}", algo.name()))?;
        if bytes.len() != algo.size() {
            return Err(format!(
                "a {} hash has {} bytes, not {}",
                algo.name(),
                bytes.len(),
                algo.size()
            ));
        }
        Ok(NixHash { algo, bytes })
    }

    /// Parses the structured JSON form `{"algorithm": "sha256", "hash": ...}`
    /// (newer `nix path-info --json`), or a string in any form above.
    pub fn from_json(v: &serde_json::Value) -> Result<NixHash, String> {
        match v {
            serde_json::Value::String(s) => Self::parse(s),
            serde_json::Value::Object(o) => {
                let algo = o
                    .get("algorithm")
                    .and_then(|a| a.as_str())
                    .and_then(Algo::parse)
                    .ok_or("a structured hash needs a known `algorithm`")?;
                let digest = o
                    .get("hash")
                    .and_then(|h| h.as_str())
                    .ok_or("a structured hash needs a `hash` string")?;
                match Self::parse(digest) {
                    Ok(h) if h.algo == algo => Ok(h),
                    _ => Self::parse_digest(algo, digest),
                }
            }
            _ => Err("a hash must be a string or an object".into()),
        }
    }

    /// `algo:<nix32>`: the form narinfo files and fingerprints use.
    pub fn to_nix32_string(&self) -> String {
        format!("{}:{}", self.algo.name(), nix32::encode(&self.bytes))
    }

    /// The Nix32 digest alone (NAR object names).
    pub fn nix32_digest(&self) -> String {
        nix32::encode(&self.bytes)
    }

    /// SRI form `algo-<base64>`.
    pub fn to_sri(&self) -> String {
        format!("{}-{}", self.algo.name(), STANDARD.encode(&self.bytes))
    }
}

impl fmt::Display for NixHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_nix32_string())
    }
}

/// At most 80 characters of untrusted text, for error messages.
pub(crate) fn truncate(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_one_hash() {
        // `nix hash to-base16 / to-base32` of the same NAR hash, Nix 2.8.
        let forms = [
            "sha256-HDfQGvQL4ugGkd48w99EN3ppmvuxfGjwgJZLL9Bx/BM=",
            "sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw",
            "sha256:1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13",
            "sha256:HDfQGvQL4ugGkd48w99EN3ppmvuxfGjwgJZLL9Bx/BM=",
        ];
        let h = NixHash::parse(forms[0]).unwrap();
        for f in forms {
            assert_eq!(NixHash::parse(f).unwrap(), h, "{f}");
        }
        assert_eq!(h.to_nix32_string(), forms[1]);
        assert_eq!(h.to_sri(), forms[0]);
        let structured = serde_json::json!({"algorithm": "sha256", "format": "base64",
            "hash": "HDfQGvQL4ugGkd48w99EN3ppmvuxfGjwgJZLL9Bx/BM="});
        assert_eq!(NixHash::from_json(&structured).unwrap(), h);
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "",
            "sha256:",
            "sha257:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw",
            "sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dq",
            "sha256-AAAA",
            "md5-",
            "nonsense",
        ] {
            assert!(NixHash::parse(bad).is_err(), "{bad}");
        }
        // The message gives the length found and the one expected, in that order.
        let err = NixHash::parse("sha256-AAAA").unwrap_err();
        assert!(err.contains("has 3 bytes, not 32"), "{err}");
    }
}
