//! Checking a credential as the cloud does: header, signature, audience and validity window.
//! The daemon never needs this; the test cloud and the tests do.

use std::fmt;

use base64::{
    DecodeError, Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use p256::{
    ecdsa::{Signature, VerifyingKey, signature::Verifier as _},
    pkcs8::{DecodePublicKey as _, spki},
};
use serde::Deserialize;
use x509_cert::{
    Certificate,
    der::{self, Decode as _, Encode as _},
};

use crate::{Claims, DEFAULT_MAX_LIFETIME_S, Header};

/// The longest token looked at; a chain of a few certificates fits many times over.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// The clock difference between device and cloud tolerated unless told otherwise.
pub const DEFAULT_LEEWAY_S: u64 = 30;

/// What the verifier requires of a token besides a good signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// The verifier's own origin; `aud` must equal it byte for byte.
    pub aud: String,
    /// The verifier's clock, in seconds since the Unix epoch.
    pub now: u64,
    /// Seconds of clock difference forgiven on `nbf` and `exp`.
    pub leeway_s: u64,
    /// The longest `exp − iat` accepted, so a token minted for days is refused even if the card
    /// signed it.
    pub max_lifetime_s: u64,
}

impl Expect {
    /// Expects `aud` at `now`, with [`DEFAULT_LEEWAY_S`] and [`DEFAULT_MAX_LIFETIME_S`].
    pub fn new(aud: impl Into<String>, now: u64) -> Self {
        Self {
            aud: aud.into(),
            now,
            leeway_s: DEFAULT_LEEWAY_S,
            max_lifetime_s: DEFAULT_MAX_LIFETIME_S,
        }
    }
}

/// Which part of a token failed to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The protected header.
    Header,
    /// The claims set.
    Claims,
    /// The signature.
    Signature,
    /// The certificate at this index of `x5c`.
    Certificate(usize),
}

impl fmt::Display for Part {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Header => formatter.write_str("header"),
            Self::Claims => formatter.write_str("claims set"),
            Self::Signature => formatter.write_str("signature"),
            Self::Certificate(index) => write!(formatter, "x5c certificate {index}"),
        }
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("the token is {len} bytes long, more than the {max} accepted")]
    TooLong { len: usize, max: usize },
    /// Not `header.claims.signature`.
    #[error("the token is not three non-empty parts separated by dots")]
    Shape,
    /// A part is not canonical base64url (or, for `x5c`, padded standard base64).
    #[error("the {part} is not valid base64")]
    Base64 {
        part: Part,
        #[source]
        source: DecodeError,
    },
    /// The header is not a JSON object of the known parameters, each at most once.
    #[error("the header is not a JSON object of alg, typ, kid and x5c")]
    Header(#[source] serde_json::Error),
    /// Anything but ES256, `none` included.
    #[error("the token's algorithm is {alg:?}, and only ES256 is accepted")]
    Algorithm { alg: String },
    /// A `typ` other than JWT.
    #[error("the token's type is {typ:?}, not JWT")]
    Type { typ: String },
    /// The signature is not the 64 bytes of `r‖s`.
    #[error("the signature is {len} bytes long, not the 64 of r and s")]
    SignatureLength { len: usize },
    /// `r` or `s` is zero or not below the group order.
    #[error("the signature is not a valid P-256 ECDSA signature")]
    SignatureValue(#[source] p256::ecdsa::Error),
    /// The signature does not match the signing input under the key.
    #[error("the signature does not verify with the device key")]
    Signature(#[source] p256::ecdsa::Error),
    /// The claims set is not JSON of the expected claims.
    #[error("the claims set is not a JSON object of the registered claims and extra strings")]
    Claims(#[source] serde_json::Error),
    /// Minted for another endpoint.
    #[error("the token is for `{aud}`, not `{expected}`")]
    Audience { aud: String, expected: String },
    /// `exp − iat` is not in `(0, max]`.
    #[error("a token issued at {iat} and expiring at {exp} does not live between 1 and {max} seconds")]
    Lifetime { iat: u64, exp: u64, max: u64 },
    /// `nbf` is later than now plus the leeway.
    #[error("the token is not valid before {nbf}, and it is {now}")]
    NotYetValid { nbf: u64, now: u64 },
    /// `exp` is at or before now minus the leeway.
    #[error("the token expired at {exp}, and it is {now}")]
    Expired { exp: u64, now: u64 },
    /// The header has no certificate to take a key from.
    #[error("the header carries no x5c certificate")]
    NoCertificate,
    /// The leaf certificate is not X.509 DER.
    #[error("the leaf certificate is not a DER X.509 certificate")]
    Certificate(#[source] der::Error),
    /// The leaf certificate's key is not on P-256.
    #[error("the leaf certificate's key is not a P-256 public key")]
    PublicKey(#[source] spki::Error),
}

/// The header as it arrives; anything unknown, `crit` included, is refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    alg: String,
    typ: Option<String>,
    kid: Option<String>,
    x5c: Option<Vec<String>>,
}

/// Splits a compact token into its three base64url parts.
fn split(jwt: &str) -> Result<[&str; 3], VerifyError> {
    if jwt.len() > MAX_TOKEN_LEN {
        return Err(VerifyError::TooLong {
            len: jwt.len(),
            max: MAX_TOKEN_LEN,
        });
    }
    let mut parts = jwt.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(header), Some(claims), Some(signature), None)
            if !header.is_empty() && !claims.is_empty() && !signature.is_empty() =>
        {
            Ok([header, claims, signature])
        }
        _ => Err(VerifyError::Shape),
    }
}

fn base64url(part: Part, text: &str) -> Result<Vec<u8>, VerifyError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|source| VerifyError::Base64 { part, source })
}

fn parse_header(encoded: &str) -> Result<Header, VerifyError> {
    let json = base64url(Part::Header, encoded)?;
    let RawHeader { alg, typ, kid, x5c } = serde_json::from_slice(&json).map_err(VerifyError::Header)?;
    if alg != Header::ALG {
        return Err(VerifyError::Algorithm { alg });
    }
    if let Some(typ) = typ.filter(|typ| typ != Header::TYP) {
        return Err(VerifyError::Type { typ });
    }
    let x5c = x5c
        .map(|chain| {
            chain
                .iter()
                .enumerate()
                .map(|(index, text)| {
                    STANDARD.decode(text).map_err(|source| VerifyError::Base64 {
                        part: Part::Certificate(index),
                        source,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    Ok(Header { kid, x5c })
}

/// Decodes the header without checking the signature, e.g. to pick a key by `kid`.
///
/// Refuses the token already if its algorithm is not ES256.
pub fn unverified_header(jwt: &str) -> Result<Header, VerifyError> {
    let [header, _, _] = split(jwt)?;
    parse_header(header)
}

/// Verifies a token with `key` and the expectations, returning its claims.
///
/// The signature is checked before the claims are parsed. `iss` and `sub` are returned for the
/// caller to check against whatever it knows of the device.
pub fn verify(jwt: &str, key: &VerifyingKey, expect: &Expect) -> Result<Claims, VerifyError> {
    let [header, claims, signature] = split(jwt)?;
    parse_header(header)?;
    let raw = base64url(Part::Signature, signature)?;
    if raw.len() != 64 {
        return Err(VerifyError::SignatureLength { len: raw.len() });
    }
    let signature = Signature::from_slice(&raw).map_err(VerifyError::SignatureValue)?;
    // The signing input is the token up to its second dot, exactly as received.
    let signed = &jwt[..header.len() + 1 + claims.len()];
    key.verify(signed.as_bytes(), &signature)
        .map_err(VerifyError::Signature)?;
    let claims: Claims = serde_json::from_slice(&base64url(Part::Claims, claims)?).map_err(VerifyError::Claims)?;
    check(&claims, expect)?;
    Ok(claims)
}

fn check(claims: &Claims, expect: &Expect) -> Result<(), VerifyError> {
    let Expect {
        aud,
        now,
        leeway_s,
        max_lifetime_s,
    } = expect;
    let (now, leeway_s, max) = (*now, *leeway_s, *max_lifetime_s);
    if claims.aud != *aud {
        return Err(VerifyError::Audience {
            aud: claims.aud.clone(),
            expected: aud.clone(),
        });
    }
    let (iat, nbf, exp) = (claims.iat, claims.nbf, claims.exp);
    if exp <= iat || exp - iat > max {
        return Err(VerifyError::Lifetime { iat, exp, max });
    }
    if now.saturating_add(leeway_s) < nbf {
        return Err(VerifyError::NotYetValid { nbf, now });
    }
    if exp.saturating_add(leeway_s) <= now {
        return Err(VerifyError::Expired { exp, now });
    }
    Ok(())
}

/// The public key of the leaf certificate in the token's `x5c`.
///
/// This only reads the key: it neither validates the chain nor checks that the certificate
/// belongs to the claimed `iss`. A verifier that trusts this key must first anchor the chain.
pub fn verifying_key_from_x5c(jwt: &str) -> Result<VerifyingKey, VerifyError> {
    let Header { kid: _, x5c } = unverified_header(jwt)?;
    let chain = x5c.unwrap_or_default();
    let leaf = chain.first().ok_or(VerifyError::NoCertificate)?;
    let certificate = Certificate::from_der(leaf).map_err(VerifyError::Certificate)?;
    let spki = certificate
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(VerifyError::Certificate)?;
    VerifyingKey::from_public_key_der(&spki).map_err(VerifyError::PublicKey)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect() -> Expect {
        Expect::new("https://metro.ai.example", 1_100)
    }

    fn claims() -> Claims {
        Claims {
            iss: "eid:1".into(),
            sub: "device".into(),
            aud: "https://metro.ai.example".into(),
            iat: 1_000,
            nbf: 1_000,
            exp: 1_300,
            jti: "0123456789abcdef".into(),
            extra: std::collections::BTreeMap::new(),
        }
    }

    #[test]
    fn window_edges_honour_the_leeway() {
        let at = |now| Expect { now, ..expect() };
        assert!(check(&claims(), &at(970)).is_ok());
        assert!(matches!(
            check(&claims(), &at(969)),
            Err(VerifyError::NotYetValid { nbf: 1_000, now: 969 })
        ));
        assert!(check(&claims(), &at(1_329)).is_ok());
        assert!(matches!(
            check(&claims(), &at(1_330)),
            Err(VerifyError::Expired { exp: 1_300, now: 1_330 })
        ));
        let strict = Expect {
            leeway_s: 0,
            now: 1_300,
            ..expect()
        };
        assert!(matches!(check(&claims(), &strict), Err(VerifyError::Expired { .. })));
        let far = Expect {
            leeway_s: u64::MAX,
            now: u64::MAX - 1,
            ..expect()
        };
        assert!(check(&claims(), &far).is_ok(), "saturates instead of overflowing");
    }

    #[test]
    fn split_needs_exactly_three_non_empty_parts() {
        assert!(split("a.b.c").is_ok());
        for bad in ["", "a.b", "a.b.c.d", "a..c", ".b.c", "a.b.", "...", "abc"] {
            assert!(matches!(split(bad), Err(VerifyError::Shape)), "{bad:?}");
        }
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(split(&long), Err(VerifyError::TooLong { .. })));
    }

    #[test]
    fn header_refuses_other_algorithms_types_and_parameters() {
        let header = |json: &str| parse_header(&URL_SAFE_NO_PAD.encode(json));
        assert!(header(r#"{"alg":"ES256"}"#).is_ok());
        assert!(header(r#"{"alg":"ES256","typ":"JWT","kid":"k","x5c":["MA=="]}"#).is_ok());
        for alg in ["none", "HS256", "RS256", "ES384", "es256", "ES256 "] {
            let json = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
            assert!(matches!(header(&json), Err(VerifyError::Algorithm { alg: found }) if found == alg));
        }
        assert!(matches!(
            header(r#"{"alg":"ES256","typ":"JWE"}"#),
            Err(VerifyError::Type { .. })
        ));
        for bad in [
            r#"{"typ":"JWT"}"#,
            r#"{"alg":"ES256","alg":"none"}"#,
            r#"{"alg":"ES256","crit":["exp"]}"#,
            r#"{"alg":"ES256","jku":"https://evil.example/keys"}"#,
            r#"{"alg":null}"#,
            r#"["ES256"]"#,
            "not json",
        ] {
            assert!(matches!(header(bad), Err(VerifyError::Header(_))), "{bad}");
        }
        assert!(matches!(
            header(r#"{"alg":"ES256","x5c":["MA"]}"#),
            Err(VerifyError::Base64 {
                part: Part::Certificate(0),
                ..
            })
        ));
    }
}
