//! The JOSE header: always ES256, always a JWT, optionally naming the key and carrying the
//! device certificate chain.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde::{Serialize, Serializer, ser::SerializeMap as _};

/// The protected header of a device credential.
///
/// `alg` and `typ` are not fields: the card only computes ECDSA P-256 over SHA-256, so any other
/// value could only be a mistake. They are always written as [`Header::ALG`] and [`Header::TYP`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// Names the key (`kid`), e.g. the IoT SAFE key label or the certificate's key identifier.
    pub kid: Option<String>,
    /// The device certificate chain (`x5c`), leaf first, each certificate as DER.
    pub x5c: Option<Vec<Vec<u8>>>,
}

impl Header {
    /// The only signature algorithm: ECDSA on P-256 with SHA-256, signature as raw `r‖s`.
    pub const ALG: &'static str = "ES256";
    /// The media type of the token.
    pub const TYP: &'static str = "JWT";
}

impl Serialize for Header {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Self { kid, x5c } = self;
        let len = 2 + usize::from(kid.is_some()) + usize::from(x5c.is_some());
        let mut map = serializer.serialize_map(Some(len))?;
        map.serialize_entry("alg", Self::ALG)?;
        map.serialize_entry("typ", Self::TYP)?;
        if let Some(kid) = kid {
            map.serialize_entry("kid", kid)?;
        }
        if let Some(chain) = x5c {
            // RFC 7515 §4.1.6: standard base64 with padding, not base64url.
            let chain: Vec<String> = chain.iter().map(|der| STANDARD.encode(der)).collect();
            map.serialize_entry("x5c", &chain)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_fields_come_first_and_absent_ones_are_left_out() {
        assert_eq!(
            serde_json::to_string(&Header::default()).unwrap(),
            r#"{"alg":"ES256","typ":"JWT"}"#
        );
        let header = Header {
            kid: Some("k-1".into()),
            x5c: Some(vec![vec![0xFB, 0xFF], vec![0x30]]),
        };
        assert_eq!(
            serde_json::to_string(&header).unwrap(),
            r#"{"alg":"ES256","typ":"JWT","kid":"k-1","x5c":["+/8=","MA=="]}"#
        );
    }
}
