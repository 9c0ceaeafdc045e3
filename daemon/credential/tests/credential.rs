//! A token built as the daemon builds it, signed as the card signs, checked as the cloud checks.

#![cfg(feature = "verify")]

mod common;

use aiesim_credential::{
    Claims, CredentialError, Expect, Header, Policy, Unsigned, VerifyError, unverified_header, verify, verify::Part,
    verifying_key_from_x5c,
};
use common::{AUD, NOW, b64url, card_sign, certificate, claims, key, token, unb64url};
use p256::ecdsa::{Signature, SigningKey, signature::Verifier as _};

fn expect() -> Expect {
    Expect::new(AUD, NOW + 10)
}

/// Replaces one of the three parts of a token.
fn with_part(jwt: &str, index: usize, part: &str) -> String {
    let mut parts: Vec<&str> = jwt.split('.').collect();
    parts[index] = part;
    parts.join(".")
}

#[test]
fn a_card_signed_token_verifies_and_returns_its_claims() {
    let key = key();
    let jwt = token(&key, &Header::default(), &claims());
    let verified = verify(jwt.as_str(), key.verifying_key(), &expect()).unwrap();
    assert_eq!(verified, claims());
    assert_eq!(verified.extra["scope"], "chat");
}

#[test]
fn the_signature_covers_exactly_the_signing_input() {
    let key = key();
    let unsigned = Unsigned::new(&Header::default(), &claims()).unwrap();
    let input = unsigned.signing_input().to_owned();
    let raw = card_sign(&key, &unsigned.digest());
    let jwt = unsigned.sign_with(raw);
    assert_eq!(jwt.as_str(), format!("{input}.{}", b64url(raw)));
    // The cloud hashes the text itself: an ordinary ECDSA verification over the input agrees.
    let signature = Signature::from_slice(&raw).unwrap();
    key.verifying_key().verify(input.as_bytes(), &signature).unwrap();
}

#[test]
fn the_key_from_x5c_is_the_device_key() {
    let key = key();
    let der = certificate(&key);
    let header = Header {
        kid: Some("iot-safe-key-1".into()),
        x5c: Some(vec![der.clone(), vec![0x30, 0x00]]),
    };
    let jwt = token(&key, &header, &claims());
    assert_eq!(unverified_header(jwt.as_str()).unwrap(), header);
    let from_x5c = verifying_key_from_x5c(jwt.as_str()).unwrap();
    assert_eq!(from_x5c, *key.verifying_key());
    assert_eq!(verify(jwt.as_str(), &from_x5c, &expect()).unwrap(), claims());

    // Someone else's certificate gives someone else's key, which the signature does not match.
    let other = key_from_header(&common::key(), &key);
    assert!(matches!(
        verify(
            other.as_str(),
            &verifying_key_from_x5c(other.as_str()).unwrap(),
            &expect()
        ),
        Err(VerifyError::Signature(_))
    ));
}

/// A token signed by `signer` carrying the certificate of `holder`.
fn key_from_header(holder: &SigningKey, signer: &SigningKey) -> String {
    let header = Header {
        kid: None,
        x5c: Some(vec![certificate(holder)]),
    };
    token(signer, &header, &claims()).into_string()
}

#[test]
fn x5c_problems_are_told_apart() {
    let key = key();
    let bare = token(&key, &Header::default(), &claims());
    assert!(matches!(
        verifying_key_from_x5c(bare.as_str()),
        Err(VerifyError::NoCertificate)
    ));
    let garbage = Header {
        kid: None,
        x5c: Some(vec![b"not a certificate".to_vec()]),
    };
    let jwt = token(&key, &garbage, &claims());
    assert!(matches!(
        verifying_key_from_x5c(jwt.as_str()),
        Err(VerifyError::Certificate(_))
    ));
    // Still a valid token: the chain is informational until the verifier anchors it.
    assert!(verify(jwt.as_str(), key.verifying_key(), &expect()).is_ok());
}

#[test]
fn a_tampered_payload_is_refused() {
    let key = key();
    let jwt = token(&key, &Header::default(), &claims()).into_string();
    let widened = Claims {
        exp: NOW + 600,
        ..claims()
    };
    let forged = with_part(&jwt, 1, &b64url(serde_json::to_vec(&widened).unwrap()));
    assert!(matches!(
        verify(&forged, key.verifying_key(), &expect()),
        Err(VerifyError::Signature(_))
    ));
    let header = Header {
        kid: Some("x".into()),
        x5c: None,
    };
    let reheadered = with_part(&jwt, 0, &b64url(serde_json::to_vec(&header).unwrap()));
    assert!(matches!(
        verify(&reheadered, key.verifying_key(), &expect()),
        Err(VerifyError::Signature(_))
    ));
}

#[test]
fn a_tampered_signature_is_refused() {
    let key = key();
    let jwt = token(&key, &Header::default(), &claims()).into_string();
    let mut raw = unb64url(jwt.rsplit('.').next().unwrap());
    raw[40] ^= 0x01;
    let flipped = with_part(&jwt, 2, &b64url(&raw));
    assert!(matches!(
        verify(&flipped, key.verifying_key(), &expect()),
        Err(VerifyError::Signature(_))
    ));
    let zero = with_part(&jwt, 2, &b64url([0u8; 64]));
    assert!(matches!(
        verify(&zero, key.verifying_key(), &expect()),
        Err(VerifyError::SignatureValue(_))
    ));
    let short = with_part(&jwt, 2, &b64url(&raw[..63]));
    assert!(matches!(
        verify(&short, key.verifying_key(), &expect()),
        Err(VerifyError::SignatureLength { len: 63 })
    ));
    // A DER signature, as some libraries produce by mistake, is not r‖s.
    let der = with_part(&jwt, 2, &b64url([0x30; 70]));
    assert!(matches!(
        verify(&der, key.verifying_key(), &expect()),
        Err(VerifyError::SignatureLength { len: 70 })
    ));
    let padded = format!("{jwt}=");
    assert!(matches!(
        verify(&padded, key.verifying_key(), &expect()),
        Err(VerifyError::Base64 {
            part: Part::Signature,
            ..
        })
    ));
    let other = common::key();
    assert!(matches!(
        verify(&jwt, other.verifying_key(), &expect()),
        Err(VerifyError::Signature(_))
    ));
}

#[test]
fn alg_none_and_other_algorithms_are_refused() {
    let key = key();
    let jwt = token(&key, &Header::default(), &claims()).into_string();
    let claims_part = jwt.split('.').nth(1).unwrap();
    let signature_part = jwt.rsplit('.').next().unwrap();
    for alg in ["none", "None", "HS256", "ES384", "EdDSA"] {
        let header = b64url(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
        let swapped = format!("{header}.{claims_part}.{signature_part}");
        assert!(
            matches!(verify(&swapped, key.verifying_key(), &expect()), Err(VerifyError::Algorithm { alg: a }) if a == alg),
            "{alg}"
        );
    }
    // The classic unsecured form has an empty signature.
    let unsecured = format!("{}.{claims_part}.", b64url(r#"{"alg":"none"}"#));
    assert!(matches!(
        verify(&unsecured, key.verifying_key(), &expect()),
        Err(VerifyError::Shape)
    ));
}

#[test]
fn the_wrong_audience_is_refused() {
    let key = key();
    let jwt = token(&key, &Header::default(), &claims());
    let elsewhere = Expect::new("https://province.ai.example:8443", NOW);
    assert!(matches!(
        verify(jwt.as_str(), key.verifying_key(), &elsewhere),
        Err(VerifyError::Audience { aud, expected }) if aud == AUD && expected == "https://province.ai.example:8443"
    ));
    // Byte for byte: a trailing slash is another audience.
    let slash = Expect::new(format!("{AUD}/"), NOW);
    assert!(matches!(
        verify(jwt.as_str(), key.verifying_key(), &slash),
        Err(VerifyError::Audience { .. })
    ));
}

#[test]
fn expired_and_not_yet_valid_tokens_are_refused() {
    let key = key();
    let jwt = token(&key, &Header::default(), &claims());
    let at = |now| Expect::new(AUD, now);
    assert!(verify(jwt.as_str(), key.verifying_key(), &at(NOW + 300 + 29)).is_ok());
    assert!(matches!(
        verify(jwt.as_str(), key.verifying_key(), &at(NOW + 300 + 30)),
        Err(VerifyError::Expired { exp, .. }) if exp == NOW + 300
    ));
    assert!(matches!(
        verify(jwt.as_str(), key.verifying_key(), &at(NOW + 86_400)),
        Err(VerifyError::Expired { .. })
    ));
    assert!(verify(jwt.as_str(), key.verifying_key(), &at(NOW - 30)).is_ok());
    assert!(matches!(
        verify(jwt.as_str(), key.verifying_key(), &at(NOW - 31)),
        Err(VerifyError::NotYetValid { nbf, .. }) if nbf == NOW
    ));
    let no_leeway = Expect {
        leeway_s: 0,
        ..at(NOW - 1)
    };
    assert!(matches!(
        verify(jwt.as_str(), key.verifying_key(), &no_leeway),
        Err(VerifyError::NotYetValid { .. })
    ));
}

#[test]
fn a_lifetime_too_long_is_refused_by_both_sides() {
    let key = key();
    let day = Claims {
        exp: NOW + 86_400,
        ..claims()
    };
    assert!(matches!(
        Unsigned::new(&Header::default(), &day),
        Err(CredentialError::Lifetime { max: 600, .. })
    ));
    // A device configured to sign long tokens still meets a verifier that refuses them.
    let lax = Policy { max_lifetime_s: 86_400 };
    let unsigned = Unsigned::with_policy(&Header::default(), &day, &lax).unwrap();
    let raw = card_sign(&key, &unsigned.digest());
    let jwt = unsigned.sign_with(raw);
    assert!(matches!(
        verify(jwt.as_str(), key.verifying_key(), &expect()),
        Err(VerifyError::Lifetime { max: 600, .. })
    ));
    let accepting = Expect {
        max_lifetime_s: 86_400,
        ..expect()
    };
    assert!(verify(jwt.as_str(), key.verifying_key(), &accepting).is_ok());
}

#[test]
fn claims_are_parsed_only_after_the_signature_holds() {
    let key = key();
    let jwt = token(&key, &Header::default(), &claims()).into_string();
    let junk = with_part(&jwt, 1, &b64url("not json"));
    assert!(matches!(
        verify(&junk, key.verifying_key(), &expect()),
        Err(VerifyError::Signature(_))
    ));
}
