//! Mutated and random tokens through the verifier: nothing panics, and no changed token verifies.

#![cfg(feature = "verify")]

mod common;

use aiesim_credential::{Expect, Header, unverified_header, verify, verifying_key_from_x5c};
use common::{AUD, NOW, certificate, claims, key, token};

/// Marsaglia's xorshift64: the same mutations on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let Self(state) = self;
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(bound.max(1)).unwrap()).unwrap()
    }
}

/// Characters a mutation draws from: the base64url alphabet, the separators and some that must
/// never be accepted.
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \"{}";

fn mutate(rng: &mut XorShift, token: &str) -> String {
    let mut bytes = token.as_bytes().to_vec();
    for _ in 0..=rng.below(3) {
        let at = rng.below(bytes.len());
        match rng.below(5) {
            0 => bytes[at] = ALPHABET[rng.below(ALPHABET.len())],
            1 => {
                bytes.remove(at);
            }
            2 => bytes.insert(at, ALPHABET[rng.below(ALPHABET.len())]),
            3 => bytes.truncate(at),
            _ => {
                let from = rng.below(bytes.len());
                let len = rng.below(16).min(bytes.len() - from);
                let chunk = bytes[from..from + len].to_vec();
                bytes.splice(at..at, chunk);
            }
        }
        if bytes.is_empty() {
            break;
        }
    }
    // Invalid UTF-8 cannot reach a &str; the sweep stays within what a caller could pass.
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn no_mutated_token_verifies_and_none_panics() {
    let key = key();
    let header = Header {
        kid: Some("k".into()),
        x5c: Some(vec![certificate(&key)]),
    };
    let original = token(&key, &header, &claims()).into_string();
    let expect = Expect::new(AUD, NOW);
    assert!(verify(&original, key.verifying_key(), &expect).is_ok());
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut changed = 0;
    for _ in 0..10_000 {
        let mutated = mutate(&mut rng, &original);
        let _ = unverified_header(&mutated);
        let _ = verifying_key_from_x5c(&mutated);
        let result = verify(&mutated, key.verifying_key(), &expect);
        if mutated != original {
            changed += 1;
            assert!(result.is_err(), "a mutated token verified: {mutated}");
            // Every refusal renders as a sentence without panicking.
            assert!(!result.unwrap_err().to_string().is_empty());
        }
    }
    assert!(changed > 9_500, "only {changed} mutations changed the token");
}

#[test]
fn random_text_never_panics() {
    let key = key();
    let expect = Expect::new(AUD, NOW);
    let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
    for _ in 0..10_000 {
        let len = rng.below(300);
        let text: String = (0..len)
            .map(|_| char::from(ALPHABET[rng.below(ALPHABET.len())]))
            .collect();
        assert!(verify(&text, key.verifying_key(), &expect).is_err());
        let _ = unverified_header(&text);
        let _ = verifying_key_from_x5c(&text);
    }
    for text in ["..", "é.é.é", "\u{0}.\u{0}.\u{0}", "eyJ9.eyJ9.eyJ9"] {
        assert!(verify(text, key.verifying_key(), &expect).is_err());
    }
}
