//! The MinIO admin payload encryption ("madmin" format).
//!
//! MinIO encrypts some admin request and response bodies (new user secrets,
//! policy attachments, user lists) with a key derived from the *secret key
//! of the credential that signs the request*, so a secret never crosses the
//! wire in clear even over plain http. The format is
//!
//! ```text
//! salt (32) ‖ algorithm id (1) ‖ stream nonce (8) ‖ sio stream
//! ```
//!
//! | id | key derivation | AEAD |
//! |----|----------------|------|
//! | 0x00 | Argon2id (t=1, m=64 MiB, p=4, 32 bytes) | AES-256-GCM |
//! | 0x01 | Argon2id (same) | ChaCha20-Poly1305 |
//! | 0x02 | PBKDF2-HMAC-SHA256 (8192 rounds, 32 bytes) | AES-256-GCM |
//!
//! The sio stream cuts the plaintext into 16 KiB fragments. Fragment `i`
//! (counting from 1) is sealed with the nonce `N ‖ LE32(i)` and the
//! associated data `flag ‖ T0`, where `T0` is the tag of sealing nothing
//! under `N ‖ LE32(0)` and `flag` is `0x80` on the last fragment and `0x00`
//! before it. The last fragment always exists, so an empty plaintext is
//! 41 + 16 = 57 bytes. The flag and the sequence number make truncation,
//! reordering and extension detectable.
//!
//! A MinIO server picks the id from its CPU and build (AES hardware: 0x00,
//! none: 0x01, FIPS build: 0x02), so [`decrypt`] accepts all three; we always
//! send 0x00, which every server reads.
//!
//! Argon2id with 64 MiB is deliberately slow (tens of milliseconds when
//! optimised). [`decrypt_with_key`] takes an already-derived key so that
//! callers that decrypt the same key's payloads many times (tests that flip
//! every byte of a ciphertext) pay for the derivation once.

use std::fmt;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;

/// Length of the random salt that starts every payload.
pub const SALT_LEN: usize = 32;
/// Length of the stream nonce after the algorithm id.
pub const NONCE_LEN: usize = 8;
/// Length of the whole header: salt, id, nonce.
pub const HEADER_LEN: usize = SALT_LEN + 1 + NONCE_LEN;
/// Plaintext bytes per fragment (sio-go's `BufSize`, 16 KiB).
pub const FRAGMENT_LEN: usize = 1 << 14;
/// Authentication tag appended to every fragment.
pub const TAG_LEN: usize = 16;

const FLAG_MORE: u8 = 0x00;
const FLAG_FINAL: u8 = 0x80;

/// A derived 256-bit key.
pub type Key = [u8; 32];

/// The key derivation and AEAD named by the id byte of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// 0x00: Argon2id + AES-256-GCM (what we send).
    Argon2idAesGcm,
    /// 0x01: Argon2id + ChaCha20-Poly1305 (servers without AES hardware).
    Argon2idChaCha20Poly1305,
    /// 0x02: PBKDF2-HMAC-SHA256 + AES-256-GCM (FIPS builds).
    Pbkdf2AesGcm,
}

impl Algorithm {
    /// The algorithm for an id byte, if it is one of the three defined.
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            0x00 => Some(Algorithm::Argon2idAesGcm),
            0x01 => Some(Algorithm::Argon2idChaCha20Poly1305),
            0x02 => Some(Algorithm::Pbkdf2AesGcm),
            _ => None,
        }
    }

    /// The id byte written into the header.
    pub fn id(self) -> u8 {
        match self {
            Algorithm::Argon2idAesGcm => 0x00,
            Algorithm::Argon2idChaCha20Poly1305 => 0x01,
            Algorithm::Pbkdf2AesGcm => 0x02,
        }
    }

    /// Derives the 256-bit key from the password (the signing secret key)
    /// and the payload's salt.
    pub fn derive_key(self, password: &[u8], salt: &[u8]) -> Key {
        let mut key = [0u8; 32];
        match self {
            Algorithm::Argon2idAesGcm | Algorithm::Argon2idChaCha20Poly1305 => {
                let params = argon2::Params::new(64 * 1024, 1, 4, Some(32))
                    .expect("the madmin Argon2id parameters are valid");
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                    .hash_password_into(password, salt, &mut key)
                    .expect("a 32-byte salt and a 32-byte output are within Argon2 limits");
            }
            Algorithm::Pbkdf2AesGcm => {
                pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, 8192, &mut key);
            }
        }
        key
    }
}

/// Why a payload could not be decrypted. Carries no key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecryptError {
    /// Shorter than the 41-byte header.
    ShortHeader(usize),
    /// The id byte names no known algorithm.
    UnknownAlgorithm(u8),
    /// A tag did not verify, a fragment is missing or truncated, or the
    /// stream ends without a final fragment (wrong password or tampering).
    NotAuthentic,
}

impl fmt::Display for DecryptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecryptError::ShortHeader(n) => write!(
                f,
                "the payload has {n} bytes, fewer than the {HEADER_LEN}-byte header of the \
                 MinIO admin encryption format"
            ),
            DecryptError::UnknownAlgorithm(id) => write!(
                f,
                "invalid encryption algorithm ID 0x{id:02x} (expected 0x00, 0x01 or 0x02)"
            ),
            DecryptError::NotAuthentic => write!(
                f,
                "the payload is not authentic: it was encrypted with another secret key, \
                 or altered or truncated on the way"
            ),
        }
    }
}

impl std::error::Error for DecryptError {}

/// The parsed 41-byte header of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Salt for the key derivation.
    pub salt: [u8; SALT_LEN],
    /// Key derivation and AEAD.
    pub algorithm: Algorithm,
    /// Stream nonce.
    pub nonce: [u8; NONCE_LEN],
}

impl Header {
    /// Reads the header at the start of `payload`.
    pub fn parse(payload: &[u8]) -> Result<Self, DecryptError> {
        if payload.len() < HEADER_LEN {
            return Err(DecryptError::ShortHeader(payload.len()));
        }
        let algorithm = Algorithm::from_id(payload[SALT_LEN])
            .ok_or(DecryptError::UnknownAlgorithm(payload[SALT_LEN]))?;
        Ok(Header {
            salt: payload[..SALT_LEN].try_into().expect("length checked"),
            algorithm,
            nonce: payload[SALT_LEN + 1..HEADER_LEN]
                .try_into()
                .expect("length checked"),
        })
    }

    /// Derives this payload's key from `password`.
    pub fn derive_key(&self, password: &[u8]) -> Key {
        self.algorithm.derive_key(password, &self.salt)
    }
}

/// True when `payload` looks like a madmin payload (as madmin's `IsEncrypted`).
pub fn is_encrypted(payload: &[u8]) -> bool {
    payload.len() > SALT_LEN && Algorithm::from_id(payload[SALT_LEN]).is_some()
}

/// Encrypts `plaintext` for a request signed with the secret key `password`:
/// id 0x00 with a fresh random salt and nonce.
pub fn encrypt(plaintext: &[u8], password: &str) -> Vec<u8> {
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::getrandom(&mut salt).expect("the OS random source is available");
    getrandom::getrandom(&mut nonce).expect("the OS random source is available");
    let algorithm = Algorithm::Argon2idAesGcm;
    let key = algorithm.derive_key(password.as_bytes(), &salt);
    encrypt_with_key(
        plaintext,
        &Header {
            salt,
            algorithm,
            nonce,
        },
        &key,
    )
}

/// Encrypts with a given header and key (deterministic; for tests and for
/// callers that derived the key already). Any of the three algorithms.
pub fn encrypt_with_key(plaintext: &[u8], header: &Header, key: &Key) -> Vec<u8> {
    let aead = StreamAead::new(header.algorithm, key, header.nonce);
    let fragments = plaintext.len().div_ceil(FRAGMENT_LEN).max(1);
    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + fragments * TAG_LEN);
    out.extend_from_slice(&header.salt);
    out.push(header.algorithm.id());
    out.extend_from_slice(&header.nonce);
    // An empty plaintext still gets one (empty) final fragment, as sio-go writes it.
    let mut chunks: Vec<&[u8]> = plaintext.chunks(FRAGMENT_LEN).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.into_iter().enumerate() {
        let seq = u32::try_from(i + 1).expect("fewer than 2^32 fragments fit in memory");
        out.extend_from_slice(&aead.seal(seq, i == last, chunk));
    }
    out
}

/// Decrypts a payload encrypted with the secret key `password` (any of the
/// three algorithm ids).
pub fn decrypt(payload: &[u8], password: &str) -> Result<Vec<u8>, DecryptError> {
    let header = Header::parse(payload)?;
    let key = header.derive_key(password.as_bytes());
    decrypt_with_key(payload, &key)
}

/// Decrypts a payload with an already-derived key (see [`Header::derive_key`]).
///
/// Follows sio-go's reader: the body is cut into 16400-byte pieces, the last
/// piece (whatever is left, 16..=16400 bytes) must carry the final flag. A
/// header with no fragment at all (the 41-byte form the Python SDK writes for
/// an empty plaintext) is refused, as MinIO itself refuses it.
pub fn decrypt_with_key(payload: &[u8], key: &Key) -> Result<Vec<u8>, DecryptError> {
    let header = Header::parse(payload)?;
    let aead = StreamAead::new(header.algorithm, key, header.nonce);
    let mut body = &payload[HEADER_LEN..];
    let mut out = Vec::with_capacity(body.len());
    let mut seq: u32 = 0;
    loop {
        seq = seq.checked_add(1).ok_or(DecryptError::NotAuthentic)?;
        let is_final = body.len() <= FRAGMENT_LEN + TAG_LEN;
        let take = if is_final {
            body.len()
        } else {
            FRAGMENT_LEN + TAG_LEN
        };
        if take < TAG_LEN {
            return Err(DecryptError::NotAuthentic);
        }
        let (piece, rest) = body.split_at(take);
        out.extend_from_slice(&aead.open(seq, is_final, piece)?);
        body = rest;
        if is_final {
            return Ok(out);
        }
    }
}

/// One sio stream: the AEAD, the stream nonce and the associated-data seed.
struct StreamAead {
    cipher: Cipher,
    nonce: [u8; NONCE_LEN],
    /// `T0`: the tag of sealing nothing under sequence number 0.
    seed: [u8; TAG_LEN],
}

enum Cipher {
    Aes(Box<Aes256Gcm>),
    ChaCha(Box<ChaCha20Poly1305>),
}

impl StreamAead {
    fn new(algorithm: Algorithm, key: &Key, nonce: [u8; NONCE_LEN]) -> Self {
        let cipher = match algorithm {
            Algorithm::Argon2idAesGcm | Algorithm::Pbkdf2AesGcm => {
                Cipher::Aes(Box::new(Aes256Gcm::new(key.into())))
            }
            Algorithm::Argon2idChaCha20Poly1305 => {
                Cipher::ChaCha(Box::new(ChaCha20Poly1305::new(key.into())))
            }
        };
        let mut s = StreamAead {
            cipher,
            nonce,
            seed: [0; TAG_LEN],
        };
        let tag = s.raw_seal(0, &[], &[]);
        s.seed.copy_from_slice(&tag);
        s
    }

    fn full_nonce(&self, seq: u32) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..NONCE_LEN].copy_from_slice(&self.nonce);
        n[NONCE_LEN..].copy_from_slice(&seq.to_le_bytes());
        n
    }

    fn associated_data(&self, is_final: bool) -> [u8; 1 + TAG_LEN] {
        let mut ad = [0u8; 1 + TAG_LEN];
        ad[0] = if is_final { FLAG_FINAL } else { FLAG_MORE };
        ad[1..].copy_from_slice(&self.seed);
        ad
    }

    fn raw_seal(&self, seq: u32, msg: &[u8], aad: &[u8]) -> Vec<u8> {
        let nonce = self.full_nonce(seq);
        let payload = Payload { msg, aad };
        match &self.cipher {
            Cipher::Aes(c) => c.encrypt((&nonce).into(), payload),
            Cipher::ChaCha(c) => c.encrypt((&nonce).into(), payload),
        }
        .expect("AEAD sealing of a fragment cannot fail")
    }

    fn seal(&self, seq: u32, is_final: bool, chunk: &[u8]) -> Vec<u8> {
        self.raw_seal(seq, chunk, &self.associated_data(is_final))
    }

    fn open(&self, seq: u32, is_final: bool, piece: &[u8]) -> Result<Vec<u8>, DecryptError> {
        let nonce = self.full_nonce(seq);
        let ad = self.associated_data(is_final);
        let payload = Payload {
            msg: piece,
            aad: &ad,
        };
        match &self.cipher {
            Cipher::Aes(c) => c.decrypt((&nonce).into(), payload),
            Cipher::ChaCha(c) => c.decrypt((&nonce).into(), payload),
        }
        .map_err(|_| DecryptError::NotAuthentic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(algorithm: Algorithm) -> Header {
        Header {
            salt: [7; SALT_LEN],
            algorithm,
            nonce: [9; NONCE_LEN],
        }
    }

    #[test]
    fn ciphertext_sizes_follow_sio_framing() {
        let key = [1u8; 32];
        let h = header(Algorithm::Argon2idAesGcm);
        for (n, body) in [
            (0, 16),
            (1, 17),
            (16383, 16399),
            (16384, 16400),
            (16385, 16417),
            (32768, 32800),
        ] {
            let ct = encrypt_with_key(&vec![0x5a; n], &h, &key);
            assert_eq!(ct.len(), HEADER_LEN + body, "plaintext of {n} bytes");
            assert_eq!(decrypt_with_key(&ct, &key).unwrap(), vec![0x5a; n]);
        }
    }

    #[test]
    fn all_three_algorithms_round_trip() {
        let key = [3u8; 32];
        let text = vec![0xa5u8; 40000];
        for a in [
            Algorithm::Argon2idAesGcm,
            Algorithm::Argon2idChaCha20Poly1305,
            Algorithm::Pbkdf2AesGcm,
        ] {
            let ct = encrypt_with_key(&text, &header(a), &key);
            assert_eq!(ct[SALT_LEN], a.id());
            assert!(is_encrypted(&ct));
            assert_eq!(decrypt_with_key(&ct, &key).unwrap(), text, "{a:?}");
        }
    }

    #[test]
    fn aes_and_chacha_ciphertexts_differ() {
        let key = [3u8; 32];
        let a = encrypt_with_key(b"x", &header(Algorithm::Argon2idAesGcm), &key);
        let c = encrypt_with_key(b"x", &header(Algorithm::Argon2idChaCha20Poly1305), &key);
        assert_ne!(a[HEADER_LEN..], c[HEADER_LEN..]);
    }

    #[test]
    fn structural_damage_is_refused() {
        let key = [2u8; 32];
        let h = header(Algorithm::Argon2idAesGcm);
        let ct = encrypt_with_key(&vec![1u8; 20000], &h, &key);
        // Header only (the SDK's form for an empty payload): no final fragment.
        assert_eq!(
            decrypt_with_key(&ct[..HEADER_LEN], &key),
            Err(DecryptError::NotAuthentic)
        );
        assert_eq!(
            decrypt_with_key(&ct[..HEADER_LEN - 1], &key),
            Err(DecryptError::ShortHeader(HEADER_LEN - 1))
        );
        // Dropping the final fragment leaves a full fragment flagged "more".
        assert_eq!(
            decrypt_with_key(&ct[..HEADER_LEN + FRAGMENT_LEN + TAG_LEN], &key),
            Err(DecryptError::NotAuthentic)
        );
        // A trailing byte or a missing byte breaks the last tag.
        let mut longer = ct.clone();
        longer.push(0);
        assert_eq!(
            decrypt_with_key(&longer, &key),
            Err(DecryptError::NotAuthentic)
        );
        assert_eq!(
            decrypt_with_key(&ct[..ct.len() - 1], &key),
            Err(DecryptError::NotAuthentic)
        );
        // Unknown id.
        let mut bad = ct.clone();
        bad[SALT_LEN] = 3;
        assert_eq!(
            decrypt_with_key(&bad, &key),
            Err(DecryptError::UnknownAlgorithm(3))
        );
        assert!(!is_encrypted(&bad));
        // Wrong key.
        assert_eq!(
            decrypt_with_key(&ct, &[0u8; 32]),
            Err(DecryptError::NotAuthentic)
        );
    }

    #[test]
    fn password_round_trip_and_wrong_password() {
        let ct = encrypt(b"{\"secretKey\":\"s\"}", "admin-secret");
        assert_eq!(ct[SALT_LEN], 0x00);
        assert_eq!(
            decrypt(&ct, "admin-secret").unwrap(),
            b"{\"secretKey\":\"s\"}"
        );
        assert_eq!(
            decrypt(&ct, "other-secret"),
            Err(DecryptError::NotAuthentic)
        );
        // Fresh salt and nonce every time.
        assert_ne!(ct, encrypt(b"{\"secretKey\":\"s\"}", "admin-secret"));
    }

    #[test]
    fn pbkdf2_key_is_deterministic() {
        let a = Algorithm::Pbkdf2AesGcm.derive_key(b"pw", &[0; 32]);
        assert_eq!(a, Algorithm::Pbkdf2AesGcm.derive_key(b"pw", &[0; 32]));
        assert_ne!(a, Algorithm::Pbkdf2AesGcm.derive_key(b"pw", &[1; 32]));
    }
}
