//! The claims set: who the device is, which endpoint the token is for, and when it is valid.

use std::{collections::BTreeMap, fmt};

use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{self, MapAccess, Visitor},
    ser::SerializeMap as _,
};

/// The registered claims a credential always carries, in the order they are written.
pub const REGISTERED: [&str; 7] = ["iss", "sub", "aud", "iat", "nbf", "exp", "jti"];

/// The claims of a device credential. Times are seconds since the Unix epoch.
///
/// Serialised in a fixed order: the registered claims as in [`REGISTERED`], then
/// [`extra`](Self::extra) sorted by name, so the same claims always give the same bytes.
/// Deserialising refuses a repeated name, a missing registered claim and any extra claim that is
/// not a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The device identity, e.g. `eid:` followed by the EID's 32 hex digits.
    pub iss: String,
    /// The subject the token acts for (the device itself, or an app on it).
    pub sub: String,
    /// The endpoint's origin, `scheme://host[:port]`, exactly as [`crate::origin_of`] writes it.
    pub aud: String,
    /// Issued at.
    pub iat: u64,
    /// Not valid before.
    pub nbf: u64,
    /// Not valid at or after.
    pub exp: u64,
    /// A fresh nonce in hex, so the cloud can refuse a replayed token.
    pub jti: String,
    /// Further string claims such as `scope`; none may use a registered name.
    pub extra: BTreeMap<String, String>,
}

impl Serialize for Claims {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Self {
            iss,
            sub,
            aud,
            iat,
            nbf,
            exp,
            jti,
            extra,
        } = self;
        let mut map = serializer.serialize_map(Some(REGISTERED.len() + extra.len()))?;
        map.serialize_entry("iss", iss)?;
        map.serialize_entry("sub", sub)?;
        map.serialize_entry("aud", aud)?;
        map.serialize_entry("iat", iat)?;
        map.serialize_entry("nbf", nbf)?;
        map.serialize_entry("exp", exp)?;
        map.serialize_entry("jti", jti)?;
        for (name, value) in extra {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Claims {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ClaimsVisitor)
    }
}

struct ClaimsVisitor;

/// Stores a claim once; a second occurrence is an error because JSON parsers disagree on which
/// of two duplicates wins.
fn once<T, E: de::Error>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), E> {
    if slot.replace(value).is_some() {
        return Err(E::duplicate_field(name));
    }
    Ok(())
}

impl<'de> Visitor<'de> for ClaimsVisitor {
    type Value = Claims;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JWT claims set")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Claims, A::Error> {
        let (mut iss, mut sub, mut aud, mut jti) = (None, None, None, None);
        let (mut iat, mut nbf, mut exp) = (None, None, None);
        let mut extra = BTreeMap::new();
        while let Some(name) = map.next_key::<String>()? {
            match name.as_str() {
                "iss" => once(&mut iss, "iss", map.next_value::<String>()?)?,
                "sub" => once(&mut sub, "sub", map.next_value::<String>()?)?,
                "aud" => once(&mut aud, "aud", map.next_value::<String>()?)?,
                "jti" => once(&mut jti, "jti", map.next_value::<String>()?)?,
                "iat" => once(&mut iat, "iat", map.next_value::<u64>()?)?,
                "nbf" => once(&mut nbf, "nbf", map.next_value::<u64>()?)?,
                "exp" => once(&mut exp, "exp", map.next_value::<u64>()?)?,
                _ => {
                    let value = map.next_value::<String>()?;
                    if extra.contains_key(&name) {
                        return Err(de::Error::custom(format_args!("duplicate claim `{name}`")));
                    }
                    extra.insert(name, value);
                }
            }
        }
        Ok(Claims {
            iss: iss.ok_or_else(|| de::Error::missing_field("iss"))?,
            sub: sub.ok_or_else(|| de::Error::missing_field("sub"))?,
            aud: aud.ok_or_else(|| de::Error::missing_field("aud"))?,
            iat: iat.ok_or_else(|| de::Error::missing_field("iat"))?,
            nbf: nbf.ok_or_else(|| de::Error::missing_field("nbf"))?,
            exp: exp.ok_or_else(|| de::Error::missing_field("exp"))?,
            jti: jti.ok_or_else(|| de::Error::missing_field("jti"))?,
            extra,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Claims {
        Claims {
            iss: "eid:89049032123451234512345678901235".into(),
            sub: "device".into(),
            aud: "https://metro.ai.example:8443".into(),
            iat: 1_700_000_000,
            nbf: 1_700_000_000,
            exp: 1_700_000_300,
            jti: "00112233445566778899aabbccddeeff".into(),
            extra: BTreeMap::from([("zone".into(), "metro".into()), ("scope".into(), "chat".into())]),
        }
    }

    #[test]
    fn serialises_in_fixed_order_with_extras_sorted_last() {
        assert_eq!(
            serde_json::to_string(&sample()).unwrap(),
            concat!(
                r#"{"iss":"eid:89049032123451234512345678901235","sub":"device","#,
                r#""aud":"https://metro.ai.example:8443","iat":1700000000,"nbf":1700000000,"#,
                r#""exp":1700000300,"jti":"00112233445566778899aabbccddeeff","scope":"chat","zone":"metro"}"#
            )
        );
    }

    #[test]
    fn round_trips() {
        let json = serde_json::to_vec(&sample()).unwrap();
        assert_eq!(serde_json::from_slice::<Claims>(&json).unwrap(), sample());
    }

    #[test]
    fn refuses_duplicates_missing_claims_and_non_string_extras() {
        let base = r#""iss":"a","sub":"b","aud":"c","iat":1,"nbf":1,"exp":2,"jti":"00""#;
        assert!(serde_json::from_str::<Claims>(&format!("{{{base}}}")).is_ok());
        for bad in [
            format!(r#"{{{base},"aud":"d"}}"#),
            format!(r#"{{{base},"exp":9}}"#),
            format!(r#"{{{base},"scope":"a","scope":"b"}}"#),
            format!(r#"{{{base},"scope":1}}"#),
            format!(r#"{{{base},"scope":null}}"#),
            r#"{"iss":"a","sub":"b","aud":"c","iat":1,"nbf":1,"jti":"00"}"#.to_owned(),
            r#"{"iss":"a","sub":"b","aud":"c","iat":1.5,"nbf":1,"exp":2,"jti":"00"}"#.to_owned(),
            r#"{"iss":"a","sub":"b","aud":"c","iat":-1,"nbf":1,"exp":2,"jti":"00"}"#.to_owned(),
            r#"["iss"]"#.to_owned(),
        ] {
            assert!(serde_json::from_str::<Claims>(&bad).is_err(), "accepted {bad}");
        }
    }
}
