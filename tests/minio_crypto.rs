//! The madmin payload encryption against MinIO's Python SDK (the oracle),
//! both ways, plus the published madmin-go test vectors and byte-by-byte
//! tampering. The MinIO server itself never runs here.

mod common;

use nix_binary_cache::minio::crypto::{
    self, Algorithm, DecryptError, FRAGMENT_LEN, HEADER_LEN, Header, SALT_LEN, TAG_LEN,
};
use serde_json::{Value, json};

/// The sizes that matter to the 16 KiB framing: one byte, a fragment minus
/// one, exactly one, one more, exactly two, and many.
const SIZES: [usize; 6] = [1, 16383, 16384, 16385, 32768, 100000];

const PASSWORD: &str = "minio-root-secret/with+odd chars \"é\"";

/// Runs the SDK's crypto with `jobs`; one answer per job.
fn sdk_crypto(jobs: &[Value]) -> Vec<Value> {
    let answers = common::minio_sdk(&["crypto"], &[], &Value::from(jobs.to_vec()));
    let answers = answers.as_array().expect("a list of answers").clone();
    assert_eq!(answers.len(), jobs.len());
    answers
}

fn answer_bytes(v: &Value) -> Vec<u8> {
    match v.get("hex").and_then(Value::as_str) {
        Some(h) => hex::decode(h).unwrap(),
        None => panic!("the SDK failed: {v}"),
    }
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    getrandom::getrandom(&mut v).unwrap();
    v
}

/// sio framing: header, every plaintext byte, one tag per fragment, and at
/// least one (final) fragment.
fn expected_len(n: usize) -> usize {
    HEADER_LEN + n + n.div_ceil(FRAGMENT_LEN).max(1) * TAG_LEN
}

#[test]
fn our_ciphertext_is_read_by_the_sdk() {
    let mut sizes = vec![0];
    sizes.extend(SIZES);
    let payloads: Vec<Vec<u8>> = sizes.iter().map(|&n| random_bytes(n)).collect();
    let mut jobs = Vec::new();
    for p in &payloads {
        let ct = crypto::encrypt(p, PASSWORD);
        assert_eq!(ct.len(), expected_len(p.len()), "size {}", p.len());
        assert_eq!(ct[SALT_LEN], 0x00, "we always send id 0x00");
        jobs.push(json!({"op": "decrypt", "password": PASSWORD, "hex": hex::encode(&ct)}));
    }
    // Size 0 is our 57-byte form (a final empty fragment, as MinIO writes it).
    assert_eq!(expected_len(0), 57);
    // Id 0x01 (ChaCha20-Poly1305), which MinIO servers without AES hardware
    // send: the SDK reads it too, so our ChaCha framing is the same.
    let salt = [0x42u8; SALT_LEN];
    let header = Header {
        salt,
        algorithm: Algorithm::Argon2idChaCha20Poly1305,
        nonce: [0x17; 8],
    };
    let key = header.derive_key(PASSWORD.as_bytes());
    for p in &payloads[..3] {
        jobs.push(json!({"op": "decrypt", "password": PASSWORD,
            "hex": hex::encode(crypto::encrypt_with_key(p, &header, &key))}));
    }
    let answers = sdk_crypto(&jobs);
    for (i, p) in payloads.iter().enumerate() {
        assert!(
            answer_bytes(&answers[i]) == *p,
            "the SDK decrypted our {}-byte payload to something else",
            p.len()
        );
    }
    for (i, p) in payloads[..3].iter().enumerate() {
        assert!(
            answer_bytes(&answers[payloads.len() + i]) == *p,
            "ChaCha20-Poly1305, {} bytes",
            p.len()
        );
    }
}

#[test]
fn sdk_ciphertext_is_read_by_us() {
    let payloads: Vec<Vec<u8>> = SIZES.iter().map(|&n| random_bytes(n)).collect();
    let jobs: Vec<Value> = payloads
        .iter()
        .map(|p| json!({"op": "encrypt", "password": PASSWORD, "hex": hex::encode(p)}))
        .collect();
    let answers = sdk_crypto(&jobs);
    for (a, p) in answers.iter().zip(&payloads) {
        let ct = answer_bytes(a);
        assert_eq!(
            ct.len(),
            expected_len(p.len()),
            "the SDK frames {} bytes as we do",
            p.len()
        );
        assert!(crypto::is_encrypted(&ct));
        assert!(
            crypto::decrypt(&ct, PASSWORD).unwrap() == *p,
            "size {}",
            p.len()
        );
        assert_eq!(
            crypto::decrypt(&ct, "another secret"),
            Err(DecryptError::NotAuthentic)
        );
    }
}

/// The SDK writes the header alone (41 bytes, no fragment) for an empty
/// payload, and reads that form back itself. MinIO (sio-go) requires a final
/// fragment and refuses it, so we refuse it too, while the SDK reads our
/// 57-byte form.
#[test]
fn sdk_header_only_empty_payload_is_refused() {
    let answers = sdk_crypto(&[json!({"op": "encrypt", "password": PASSWORD, "hex": ""})]);
    let ct = answer_bytes(&answers[0]);
    assert_eq!(ct.len(), HEADER_LEN, "the SDK quirk this test documents");
    assert_eq!(
        crypto::decrypt(&ct, PASSWORD),
        Err(DecryptError::NotAuthentic)
    );
    let back =
        sdk_crypto(&[json!({"op": "decrypt", "password": PASSWORD, "hex": hex::encode(&ct)})]);
    assert_eq!(answer_bytes(&back[0]), b"", "the SDK accepts its own form");
}

/// Every single-byte change, truncation at every structural boundary (and
/// at a spread of other lengths), an appended byte and swapped fragments are
/// detected. The key is derived once (Argon2id is slow); the salt bytes,
/// which change the key, go through the full password path.
///
/// Every byte is flipped in a one-fragment payload; in a two-fragment one,
/// every byte of the header, around the fragment boundary and of the final
/// fragment, and every 37th byte elsewhere (each decryption of the 16 KiB
/// first fragment costs as much as the whole small case).
#[test]
fn tampering_with_any_byte_is_detected() {
    let small = random_bytes(1000);
    let small_ct = crypto::encrypt(&small, PASSWORD);
    let small_key = Header::parse(&small_ct)
        .unwrap()
        .derive_key(PASSWORD.as_bytes());
    assert_eq!(
        crypto::decrypt_with_key(&small_ct, &small_key).unwrap(),
        small
    );
    for i in SALT_LEN..small_ct.len() {
        for flip in [0x01u8, 0x80] {
            let mut bad = small_ct.clone();
            bad[i] ^= flip;
            assert!(
                crypto::decrypt_with_key(&bad, &small_key).is_err(),
                "flipping bit {flip:#x} of byte {i} of {} went unnoticed",
                small_ct.len()
            );
        }
    }

    let plaintext = random_bytes(FRAGMENT_LEN + 100);
    let ct = crypto::encrypt(&plaintext, PASSWORD);
    let header = Header::parse(&ct).unwrap();
    let key = header.derive_key(PASSWORD.as_bytes());
    assert_eq!(crypto::decrypt_with_key(&ct, &key).unwrap(), plaintext);
    let boundary = HEADER_LEN + FRAGMENT_LEN + TAG_LEN;
    let positions = (SALT_LEN..HEADER_LEN + 48)
        .chain(boundary - TAG_LEN - 48..ct.len())
        .chain((HEADER_LEN..ct.len()).step_by(37));
    for i in positions {
        let mut bad = ct.clone();
        bad[i] ^= 0x01;
        assert!(
            crypto::decrypt_with_key(&bad, &key).is_err(),
            "flipping byte {i} of {} went unnoticed",
            ct.len()
        );
    }
    for i in (0..SALT_LEN).step_by(5).chain([SALT_LEN - 1]) {
        let mut bad = ct.clone();
        bad[i] ^= 0x80;
        assert_eq!(
            crypto::decrypt(&bad, PASSWORD),
            Err(DecryptError::NotAuthentic),
            "salt byte {i}"
        );
    }
    let lengths = (0..=HEADER_LEN + 2 * TAG_LEN)
        .chain(boundary - TAG_LEN - 2..=boundary + TAG_LEN + 2)
        .chain(ct.len() - TAG_LEN - 2..ct.len())
        .chain((0..ct.len()).step_by(211));
    for len in lengths {
        assert!(
            crypto::decrypt_with_key(&ct[..len], &key).is_err(),
            "truncation to {len} bytes went unnoticed"
        );
    }
    let mut longer = ct.clone();
    longer.push(0);
    assert!(crypto::decrypt_with_key(&longer, &key).is_err());
    // Swapping the two fragments is caught by the sequence number and flag.
    let body = &ct[HEADER_LEN..];
    let (first, second) = body.split_at(FRAGMENT_LEN + TAG_LEN);
    let mut swapped = ct[..HEADER_LEN].to_vec();
    swapped.extend_from_slice(second);
    swapped.extend_from_slice(first);
    assert!(crypto::decrypt_with_key(&swapped, &key).is_err());
}

/// The four `decryptDataTests` vectors published with madmin-go (the Go
/// library MinIO's server and `mc` use), as data: password, ciphertext. The
/// plaintexts are all-zero strings of 0, 256, 32 and 256 bytes.
#[test]
fn madmin_go_vectors_decrypt() {
    let vectors: [(&str, &str, usize); 4] = [
        (
            "",
            "828aa81599df0651c0461adb82283e8b89956baee9f6e719947ef9cddc849028001dc9d3ac0938f66b07bacc9751437e1985f8a9763c240e81",
            0,
        ),
        (
            "",
            concat!(
                "1793c71df6647860437134073c15688cbb15961dc0758c7ee1225e66e79c724c00d790dba9c671eae89da2c736d858286ac9bd027abacc6443",
                "0375cd41b63b67c070c7fba475a8dd66ae65ba905176c48cbe6f734fc74df87343d8ccff54bada4aeb0a04bd021633ebe6c4768e23f5dea142",
                "561d4fe3f90ed59d13dc5fb3a585dadec1742325291b9c81692bdd3420b2428127f8195e0ecd9a1c9237712ed67af7339fbbf7ff3ee1c516e1",
                "f81e69d933e057b30997e7274a2c9698e07c39f0e8d6818858f34c8191871b5a52bea9061806bd029024bfc1d9c1f230904968d6c9e10fddcb",
                "c006ba97356ff243570fd96df07dd6894e215a6b24c4ed730369519289ebd877aff6ccbd2265985e4ab1a2b7930bab9cfb767b97348a639ddf",
                "8db81bf5151da7e8f3d9638a1b86eb1dd78cc6a526f10a414c78638f",
            ),
            256,
        ),
        (
            "xPl.8/rhR\"Q_1xLt",
            concat!(
                "b5c016e93b84b473fc8a37af94936563630c36d6df1841d23a86ee51ca161f9e00ac19116b32f643ff6a56a212b265d8c56",
                "195bb0d12ce199e13dfdc5272f80c1564da2c6fc2fa18da91d8062de02af5cdafea491c6f3cae1f",
            ),
            32,
        ),
        (
            "7h5oU4$te{;K}fgqlI^]",
            concat!(
                "c58edf7cfd557b6b655de6f48b1a3049d8d049dadb3a7bfa9ac9ccbb5baf37ec00f83086a26f43b7d6bc9075ad0",
                "38bf5741f118d502ebe94165e4072ba7f98535d6b1e3b6ae67a98115d146d9b4d90e4df4ae82df9cfa17ed7cd42",
                "465181559f7ddf09c98beec521bb4478e0cb73c4e0827af8688ff4e7a07327a10d5a180035e6ddb16d974a85257",
                "981cd9e0360a20f7b4d653190267dfb241148f018ae180568042e864b9e1b5bc05425a3abc2b0324f50c72d5679",
                "8f924405dfc0f8523f4bb564ed65af8e1b1c82a7a0640552ecf81985d95d0993d99172592ddc1393dfa63e8f0b3",
                "d744b2cc4b73384ca4693f0c1aec0e9b00e85f2937e891105d67da8f59c14ca96608e0425c42f9c1e7c2a8b3413",
                "e1381784f9cfe01de7c47cea1f8d7a7d88f5d4aca783cf55332b47f957a6b9a65269d7eb606b877b",
            ),
            256,
        ),
    ];
    for (password, ct_hex, n) in vectors {
        let ct = hex::decode(ct_hex).unwrap();
        assert_eq!(ct.len(), expected_len(n));
        assert!(crypto::is_encrypted(&ct));
        assert_eq!(
            crypto::decrypt(&ct, password).unwrap(),
            vec![0u8; n],
            "vector with {n} bytes"
        );
        assert!(crypto::decrypt(&ct, "not the password").is_err());
    }
}

/// Id 0x02 (FIPS builds) derives its key with PBKDF2-HMAC-SHA256; the SDK
/// cannot decrypt it, so the key derivation is checked against Python's
/// hashlib and the AES-GCM framing is the one tested above.
#[test]
fn pbkdf2_key_matches_python_hashlib() {
    let salt = random_bytes(SALT_LEN);
    let answers =
        sdk_crypto(&[json!({"op": "pbkdf2", "password": PASSWORD, "salt": hex::encode(&salt)})]);
    assert_eq!(
        Algorithm::Pbkdf2AesGcm
            .derive_key(PASSWORD.as_bytes(), &salt)
            .to_vec(),
        answer_bytes(&answers[0])
    );
    // And a whole id-0x02 payload decrypts through the password path.
    let header = Header {
        salt: salt.clone().try_into().unwrap(),
        algorithm: Algorithm::Pbkdf2AesGcm,
        nonce: [5; 8],
    };
    let ct = crypto::encrypt_with_key(b"fips", &header, &header.derive_key(PASSWORD.as_bytes()));
    assert_eq!(crypto::decrypt(&ct, PASSWORD).unwrap(), b"fips");
}
