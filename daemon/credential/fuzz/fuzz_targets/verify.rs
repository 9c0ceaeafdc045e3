//! Arbitrary text through the token splitter, the header and claims decoders, the x5c key
//! reader and the verifier, under a fixed key that nothing random can sign for.
#![no_main]

use std::sync::LazyLock;

use aiesim_credential::{Expect, unverified_header, verify, verifying_key_from_x5c};
use libfuzzer_sys::fuzz_target;
use p256::ecdsa::{SigningKey, VerifyingKey};

static KEY: LazyLock<VerifyingKey> = LazyLock::new(|| {
    let secret = SigningKey::from_slice(&[0x42; 32]).expect("0x42… is a valid P-256 scalar");
    *secret.verifying_key()
});

fuzz_target!(|text: &str| {
    let expect = Expect::new("https://metro.ai.example:8443", 1_767_225_600);
    // A forged ECDSA signature from random input would be a break of P-256, not a parser bug.
    assert!(verify(text, &KEY, &expect).is_err());
    // A seed token may carry its own valid certificate and signature, so no verdict is asserted.
    if let Ok(key) = verifying_key_from_x5c(text) {
        let _ = verify(text, &key, &expect);
    }
    let _ = unverified_header(text);
});
