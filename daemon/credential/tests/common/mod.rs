//! Shared by the integration tests: real P-256 keys, a device certificate, and a card stand-in
//! that signs a precomputed SHA-256 as IoT SAFE does.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::collections::BTreeMap;

use aiesim_credential::{Claims, Header, Jwt, Unsigned};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey, signature::Signer as _, signature::hazmat::PrehashSigner as _};
use rand_core::OsRng;

pub const AUD: &str = "https://metro.ai.example:8443";
pub const NOW: u64 = 1_767_225_600;

/// A fresh device key, as a card generates one.
pub fn key() -> SigningKey {
    SigningKey::random(&mut OsRng)
}

/// Claims for [`AUD`], issued at [`NOW`], living five minutes.
pub fn claims() -> Claims {
    Claims {
        iss: "eid:89049032123451234512345678901235".into(),
        sub: "device".into(),
        aud: AUD.into(),
        iat: NOW,
        nbf: NOW,
        exp: NOW + 300,
        jti: "5f3c9a0e7b1d4c2a8e6f0b9d3a1c7e5f".into(),
        extra: BTreeMap::from([("scope".into(), "chat".into())]),
    }
}

/// What the card does: ECDSA over the digest it is handed, answering `r‖s`.
pub fn card_sign(key: &SigningKey, digest: &[u8; 32]) -> [u8; 64] {
    let signature: Signature = key.sign_prehash(digest).expect("a 32-byte digest is signable");
    signature.to_bytes().into()
}

/// Builds and signs a token the way the daemon will.
pub fn token(key: &SigningKey, header: &Header, claims: &Claims) -> Jwt {
    let unsigned = Unsigned::new(header, claims).expect("the test claims meet the policy");
    let raw = card_sign(key, &unsigned.digest());
    unsigned.sign_with(raw)
}

/// The key as rcgen needs it to issue the device certificate.
struct CertKey<'a>(&'a SigningKey, Vec<u8>);

impl rcgen::PublicKeyData for CertKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.1
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for CertKey<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let signature: Signature = self.0.sign(msg);
        Ok(signature.to_der().as_bytes().to_vec())
    }
}

/// A self-issued device certificate for `key`, as DER.
pub fn certificate(key: &SigningKey) -> Vec<u8> {
    let point = VerifyingKey::from(key).to_encoded_point(false).as_bytes().to_vec();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("no names to check");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "aiesim test device");
    // rcgen without a crypto backend cannot draw a serial; a positive one from the key will do.
    let mut serial = point[1..17].to_vec();
    serial[0] &= 0x7F;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    params
        .self_signed(&CertKey(key, point))
        .expect("the test certificate signs")
        .der()
        .to_vec()
}

/// Base64url without padding, independently of the crate's encoder.
pub fn b64url(bytes: impl AsRef<[u8]>) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding.
pub fn unb64url(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .expect("valid base64url")
}
