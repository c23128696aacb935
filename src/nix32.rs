//! Nix's base-32 ("Nix32"): the encoding of store path hashes, `NarHash`,
//! `FileHash` and NAR object names in a binary cache.
//!
//! It is not RFC 4648 base32: the alphabet omits `e o u t` (so that no
//! rude words appear in store paths) and the characters come out most
//! significant first over the *little-endian* byte order. No crate
//! implements it, so it is hand-written here and tested against
//! `nix-hash --to-base32`.

/// The 32 digits, in value order.
const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Length of the Nix32 form of `n` bytes: ⌈8n/5⌉ (52 for SHA-256).
pub fn encoded_len(n: usize) -> usize {
    (n * 8).div_ceil(5)
}

/// Encodes bytes as Nix32.
pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let (i, j) = (b / 8, b % 8);
        let low = bytes[i] >> j;
        let high = if i + 1 < bytes.len() && j > 3 {
            bytes[i + 1] << (8 - j)
        } else {
            0
        };
        out.push(ALPHABET[((low | high) & 31) as usize] as char);
    }
    out
}

/// The value of one Nix32 digit.
fn digit(c: u8) -> Option<u8> {
    ALPHABET.iter().position(|&a| a == c).map(|p| p as u8)
}

/// Decodes Nix32 text. Fails on characters outside the alphabet, on a
/// length no byte string encodes to, and on set bits beyond the last byte
/// (Nix refuses those too), so every accepted string has one meaning.
pub fn decode(s: &str) -> Result<Vec<u8>, String> {
    let s = s.as_bytes();
    let n_bytes = s.len() * 5 / 8;
    if encoded_len(n_bytes) != s.len() {
        return Err(format!(
            "{} characters is not the length of a Nix32 string",
            s.len()
        ));
    }
    let mut out = vec![0u8; n_bytes];
    for (n, &c) in s.iter().rev().enumerate() {
        let d = digit(c).ok_or_else(|| {
            format!(
                "`{}` is not a Nix32 digit (0-9 and a-z without e, o, t, u)",
                c.escape_ascii()
            )
        })?;
        let b = n * 5;
        let (i, j) = (b / 8, b % 8);
        // `i` is always in range: the length check above ensures it.
        out[i] |= d << j;
        let carry = ((d as u16) >> (8 - j)) as u8;
        if i + 1 < n_bytes {
            out[i + 1] |= carry;
        } else if carry != 0 {
            return Err("the Nix32 string has bits set beyond its last byte".into());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values printed by Nix 2.8: `nix-hash --type sha256 --to-base32 HEX`.
    const VECTORS: &[(&str, &str)] = &[
        (
            "1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13",
            "04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw",
        ),
        (
            "0000000000000000000000000000000000000001",
            "04000000000000000000000000000000",
        ),
        (
            "ffffffffffffffffffffffffffffffff",
            "7zzzzzzzzzzzzzzzzzzzzzzzzz",
        ),
    ];

    #[test]
    fn matches_nix() {
        for (hex, nix32) in VECTORS {
            let bytes = hex::decode(hex).unwrap();
            assert_eq!(encode(&bytes), *nix32);
            assert_eq!(decode(nix32).unwrap(), bytes);
        }
    }

    #[test]
    fn round_trips_every_length() {
        for len in 0..70usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let s = encode(&bytes);
            assert_eq!(s.len(), encoded_len(len));
            assert_eq!(decode(&s).unwrap(), bytes, "length {len}");
        }
    }

    #[test]
    fn refuses_bad_input() {
        assert!(decode("e4000000000000000000000000000000").is_err()); // 'e' is not a digit
        assert!(decode("040000000000000000000000000000").is_err()); // 30: no byte count
        assert!(decode("z").is_err());
        // 2 characters encode 1 byte; a top digit above 7 sets a 9th bit.
        assert!(decode("80").is_err());
        assert_eq!(decode("7z").unwrap(), vec![0xff]);
        assert!(decode("é").is_err());
    }
}
