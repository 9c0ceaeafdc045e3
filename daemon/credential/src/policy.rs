//! What the device is willing to sign: a short lifetime, an audience that is an origin, a real
//! nonce; and [`origin_of`], which derives the audience from an endpoint URL.

use url::Url;

use crate::{Claims, Header, claims::REGISTERED};

/// The longest lifetime a credential gets unless the policy says otherwise: ten minutes.
pub const DEFAULT_MAX_LIFETIME_S: u64 = 600;

/// The fewest hex digits a `jti` may have: 64 bits, so nonces do not repeat by chance.
pub const MIN_JTI_HEX_DIGITS: usize = 16;

/// Why a credential was not built, or an endpoint URL gave no origin.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// `exp − iat` is not in `(0, max]`.
    #[error("a token issued at {iat} and expiring at {exp} would not live between 1 and {max} seconds")]
    Lifetime { iat: u64, exp: u64, max: u64 },
    /// `nbf` is at or after `exp`: the token would never be valid.
    #[error("the token is not valid before {nbf} and expires at {exp}, so it would never be valid")]
    NeverValid { nbf: u64, exp: u64 },
    /// The audience is a URL but not in origin form.
    #[error("the audience `{aud}` is not an origin; the origin of that URL is `{origin}`")]
    AudienceNotOrigin { aud: String, origin: String },
    /// The text does not parse as a URL.
    #[error("`{url}` is not a URL")]
    Url {
        url: String,
        #[source]
        source: url::ParseError,
    },
    /// Only http and https endpoints have an origin the cloud can check.
    #[error("`{url}` is a {scheme} URL, not http or https")]
    Scheme { url: String, scheme: String },
    /// A URL without a host has no origin.
    #[error("`{url}` names no host")]
    NoHost { url: String },
    /// A claim that identifies the device or the token is empty.
    #[error("the `{name}` claim is empty")]
    Empty { name: &'static str },
    /// The nonce is too short or not hex.
    #[error("the nonce `{jti}` is not hex of at least {MIN_JTI_HEX_DIGITS} digits")]
    Nonce { jti: String },
    /// An extra claim would shadow a registered one.
    #[error("the extra claim `{name}` uses the name of a registered claim")]
    ReservedClaim { name: String },
    /// An extra claim with an empty name.
    #[error("an extra claim has an empty name")]
    EmptyClaimName,
    /// `x5c` is present but holds no certificate.
    #[error("the header's certificate chain is present but empty")]
    EmptyChain,
    /// `serde_json` refused the header or the claims; with these types it never does.
    #[error("the header or the claims could not be written as JSON")]
    Json(#[source] serde_json::Error),
}

/// Derives the origin, `scheme://host[:port]`, of an http(s) endpoint URL.
///
/// The host is lower-cased (and IDNA-encoded), the scheme's default port is left out, and path,
/// query, fragment and user information are dropped:
/// `https://Metro.AI.example:8443/v1?x=1` gives `https://metro.ai.example:8443`.
pub fn origin_of(url: &str) -> Result<String, CredentialError> {
    let parsed = Url::parse(url).map_err(|source| CredentialError::Url {
        url: url.to_owned(),
        source,
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(CredentialError::Scheme {
            url: url.to_owned(),
            scheme: parsed.scheme().to_owned(),
        });
    }
    if parsed.host().is_none() {
        return Err(CredentialError::NoHost { url: url.to_owned() });
    }
    Ok(parsed.origin().ascii_serialization())
}

/// The rules a credential must meet before the card is asked to sign it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The longest `exp − iat` allowed, in seconds.
    pub max_lifetime_s: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_lifetime_s: DEFAULT_MAX_LIFETIME_S,
        }
    }
}

impl Policy {
    /// Checks a header and claims against the policy.
    pub fn check(&self, header: &Header, claims: &Claims) -> Result<(), CredentialError> {
        let Header { kid: _, x5c } = header;
        if x5c.as_ref().is_some_and(Vec::is_empty) {
            return Err(CredentialError::EmptyChain);
        }
        let Claims {
            iss,
            sub,
            aud,
            iat,
            nbf,
            exp,
            jti,
            extra,
        } = claims;
        let (iat, nbf, exp) = (*iat, *nbf, *exp);
        let max = self.max_lifetime_s;
        if exp <= iat || exp - iat > max {
            return Err(CredentialError::Lifetime { iat, exp, max });
        }
        if nbf >= exp {
            return Err(CredentialError::NeverValid { nbf, exp });
        }
        for (name, value) in [("iss", iss), ("sub", sub)] {
            if value.is_empty() {
                return Err(CredentialError::Empty { name });
            }
        }
        if jti.len() < MIN_JTI_HEX_DIGITS || !jti.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(CredentialError::Nonce { jti: jti.clone() });
        }
        let origin = origin_of(aud)?;
        if origin != *aud {
            return Err(CredentialError::AudienceNotOrigin {
                aud: aud.clone(),
                origin,
            });
        }
        for name in extra.keys() {
            if name.is_empty() {
                return Err(CredentialError::EmptyClaimName);
            }
            if REGISTERED.contains(&name.as_str()) {
                return Err(CredentialError::ReservedClaim { name: name.clone() });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn origin_keeps_scheme_host_and_non_default_port() {
        for (url, origin) in [
            ("https://metro.ai.example:8443/v1", "https://metro.ai.example:8443"),
            (
                "https://Metro.AI.example:8443/v1/chat?x=1#f",
                "https://metro.ai.example:8443",
            ),
            ("https://national.ai.example:443/v1", "https://national.ai.example"),
            ("http://127.0.0.2:80/", "http://127.0.0.2"),
            ("http://127.0.0.2:8080", "http://127.0.0.2:8080"),
            ("https://user:secret@edge.example/v1", "https://edge.example"),
            ("http://[::1]:9000/v1", "http://[::1]:9000"),
        ] {
            assert_eq!(origin_of(url).unwrap(), origin, "{url}");
        }
    }

    #[test]
    fn origin_refuses_what_has_none() {
        assert!(matches!(
            origin_of("metro.ai.example/v1"),
            Err(CredentialError::Url { .. })
        ));
        assert!(matches!(origin_of(""), Err(CredentialError::Url { .. })));
        assert!(matches!(origin_of("https://"), Err(CredentialError::Url { .. })));
        assert!(matches!(
            origin_of("ftp://metro.ai.example/"),
            Err(CredentialError::Scheme { scheme, .. }) if scheme == "ftp"
        ));
        assert!(matches!(
            origin_of("file:///etc/passwd"),
            Err(CredentialError::Scheme { .. })
        ));
        assert!(matches!(
            origin_of("data:text/plain,hi"),
            Err(CredentialError::Scheme { .. })
        ));
    }

    fn claims() -> Claims {
        Claims {
            iss: "eid:89049032123451234512345678901235".into(),
            sub: "device".into(),
            aud: "https://metro.ai.example:8443".into(),
            iat: 1_000,
            nbf: 1_000,
            exp: 1_600,
            jti: "0123456789abcdef".into(),
            extra: BTreeMap::new(),
        }
    }

    fn check(claims: &Claims) -> Result<(), CredentialError> {
        Policy::default().check(&Header::default(), claims)
    }

    #[test]
    fn accepts_ten_minutes_and_refuses_a_second_more_or_no_life() {
        assert!(check(&claims()).is_ok());
        let too_long = Claims { exp: 1_601, ..claims() };
        assert!(matches!(
            check(&too_long),
            Err(CredentialError::Lifetime {
                iat: 1_000,
                exp: 1_601,
                max: 600
            })
        ));
        for exp in [1_000, 999, 0] {
            let dead = Claims {
                exp,
                nbf: 0,
                ..claims()
            };
            assert!(
                matches!(check(&dead), Err(CredentialError::Lifetime { .. })),
                "exp {exp}"
            );
        }
        let short = Policy { max_lifetime_s: 60 };
        assert!(matches!(
            short.check(&Header::default(), &claims()),
            Err(CredentialError::Lifetime { max: 60, .. })
        ));
        let never = Claims { nbf: 1_600, ..claims() };
        assert!(matches!(check(&never), Err(CredentialError::NeverValid { .. })));
    }

    #[test]
    fn audience_must_be_exactly_an_origin() {
        for aud in [
            "https://metro.ai.example:8443/",
            "https://metro.ai.example:8443/v1",
            "HTTPS://metro.ai.example:8443",
        ] {
            let claims = Claims {
                aud: aud.into(),
                ..claims()
            };
            assert!(
                matches!(&check(&claims), Err(CredentialError::AudienceNotOrigin { origin, .. }) if origin == "https://metro.ai.example:8443"),
                "{aud}"
            );
        }
        let claims = Claims {
            aud: "metro".into(),
            ..claims()
        };
        assert!(matches!(check(&claims), Err(CredentialError::Url { .. })));
    }

    #[test]
    fn refuses_weak_nonces_empty_identity_and_shadowing_extras() {
        for jti in ["", "0123456789abcde", "0123456789abcdeg", "0123456789abcdef "] {
            let claims = Claims {
                jti: jti.into(),
                ..claims()
            };
            assert!(matches!(check(&claims), Err(CredentialError::Nonce { .. })), "{jti:?}");
        }
        let anonymous = Claims {
            iss: String::new(),
            ..claims()
        };
        assert!(matches!(check(&anonymous), Err(CredentialError::Empty { name: "iss" })));
        for name in REGISTERED {
            let mut claims = claims();
            claims.extra.insert(name.into(), "x".into());
            assert!(
                matches!(check(&claims), Err(CredentialError::ReservedClaim { .. })),
                "{name}"
            );
        }
        let mut nameless = claims();
        nameless.extra.insert(String::new(), "x".into());
        assert!(matches!(check(&nameless), Err(CredentialError::EmptyClaimName)));
        let mut scoped = claims();
        scoped.extra.insert("scope".into(), "chat".into());
        assert!(check(&scoped).is_ok());
    }

    #[test]
    fn refuses_an_empty_chain() {
        let header = Header {
            kid: None,
            x5c: Some(Vec::new()),
        };
        assert!(matches!(
            Policy::default().check(&header, &claims()),
            Err(CredentialError::EmptyChain)
        ));
    }
}
