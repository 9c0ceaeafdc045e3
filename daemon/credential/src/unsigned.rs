//! Building a credential: the signing input and its SHA-256 for the card, then the compact JWT
//! once the card has returned `r‖s`.

use std::fmt;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest as _, Sha256};

use crate::{Claims, CredentialError, Header, Policy};

/// A checked header and claims set, encoded and waiting for the card's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsigned {
    input: String,
    digest: [u8; 32],
}

impl Unsigned {
    /// Checks the claims against the [default policy](Policy::default) and encodes them.
    pub fn new(header: &Header, claims: &Claims) -> Result<Self, CredentialError> {
        Self::with_policy(header, claims, &Policy::default())
    }

    /// Checks the claims against `policy` and encodes them.
    pub fn with_policy(header: &Header, claims: &Claims, policy: &Policy) -> Result<Self, CredentialError> {
        policy.check(header, claims)?;
        let header = serde_json::to_vec(header).map_err(CredentialError::Json)?;
        let claims = serde_json::to_vec(claims).map_err(CredentialError::Json)?;
        let mut input = URL_SAFE_NO_PAD.encode(header);
        input.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut input);
        let digest = Sha256::digest(input.as_bytes()).into();
        Ok(Self { input, digest })
    }

    /// `base64url(header) "." base64url(claims)`: the bytes the signature covers.
    pub fn signing_input(&self) -> &str {
        &self.input
    }

    /// SHA-256 of the signing input: what IoT SAFE Compute Signature is given as a precomputed
    /// hash.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// Appends the card's raw signature, `r‖s` as two 32-byte big-endian integers, giving the
    /// compact JWT.
    pub fn sign_with(self, raw_signature: [u8; 64]) -> Jwt {
        let Self { mut input, digest: _ } = self;
        input.push('.');
        URL_SAFE_NO_PAD.encode_string(raw_signature, &mut input);
        Jwt(input)
    }
}

/// A signed credential in compact serialisation.
#[derive(Clone, PartialEq, Eq)]
pub struct Jwt(String);

impl Jwt {
    /// The token, as sent after `Authorization: Bearer `.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The token as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }

    /// The whole `Authorization` header value, `Bearer <token>`.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

/// Shows only the length: a bearer token in a log can be replayed until it expires.
impl fmt::Debug for Jwt {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Jwt")
            .field("len", &self.0.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn claims() -> Claims {
        Claims {
            iss: "eid:89049032123451234512345678901235".into(),
            sub: "device".into(),
            aud: "https://metro.ai.example:8443".into(),
            iat: 1_000,
            nbf: 1_000,
            exp: 1_300,
            jti: "0123456789abcdef".into(),
            extra: BTreeMap::new(),
        }
    }

    #[test]
    fn digest_is_sha256_of_the_signing_input() {
        let unsigned = Unsigned::new(&Header::default(), &claims()).unwrap();
        let expected: [u8; 32] = Sha256::digest(unsigned.signing_input().as_bytes()).into();
        assert_eq!(unsigned.digest(), expected);
        assert!(
            unsigned
                .signing_input()
                .starts_with("eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.")
        );
        let other = Unsigned::new(&Header::default(), &Claims { exp: 1_301, ..claims() }).unwrap();
        assert_ne!(other.digest(), unsigned.digest());
    }

    #[test]
    fn signature_is_appended_as_86_base64url_characters() {
        let unsigned = Unsigned::new(&Header::default(), &claims()).unwrap();
        let input = unsigned.signing_input().to_owned();
        let mut raw = [0u8; 64];
        raw[0] = 0xFF;
        raw[63] = 0xFE;
        let jwt = unsigned.sign_with(raw);
        let (head, signature) = jwt.as_str().rsplit_once('.').unwrap();
        assert_eq!(head, input);
        assert_eq!(signature.len(), 86);
        assert!(signature.starts_with("_w") && signature.ends_with("_g"));
        assert_eq!(jwt.bearer(), format!("Bearer {}", jwt.as_str()));
        assert!(!format!("{jwt:?}").contains(signature));
    }

    #[test]
    fn policy_is_applied_before_encoding() {
        let long = Claims { exp: 1_601, ..claims() };
        assert!(matches!(
            Unsigned::new(&Header::default(), &long),
            Err(CredentialError::Lifetime { .. })
        ));
        assert!(Unsigned::with_policy(&Header::default(), &long, &Policy { max_lifetime_s: 601 }).is_ok());
    }
}
