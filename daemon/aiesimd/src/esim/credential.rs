//! The device's cloud credential, signed on the card: an ES256 JWT bound to the endpoint's
//! origin, valid for minutes, carrying the device certificate read from the IoT SAFE applet.
//!
//! Tokens are cached per endpoint for a fraction of their life, so a burst of requests costs
//! one card signature rather than one each; the cloud sees a fresh token at least every minute.

use std::{
    collections::HashMap,
    io::Read as _,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aiesim_credential::{Claims, Header, Unsigned, origin_of};
use tokio::sync::{Mutex, watch};

use super::{DeviceCredential, EsimAvailability, EsimError, EsimState, iot_safe};
use crate::{
    cloud::{CredentialFuture, Credentials},
    modem::Modem,
};

/// How long a token is valid.
const LIFETIME: Duration = Duration::from_secs(300);
/// How long a token is reused before a new one is signed.
const REUSE: Duration = Duration::from_secs(60);
/// How long a request waits for the eSIM to be read (just after start or a card change).
const SETTLE: Duration = Duration::from_secs(5);

/// Whether requests must carry a card-signed credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Sign when the card has IoT SAFE; send none when it has not.
    IfAvailable,
    /// Refuse to send a request without one.
    Required,
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("the endpoint's URL has no origin a credential can name")]
    Audience(#[source] aiesim_credential::CredentialError),
    #[error("the eSIM is not ready, so there is no device identity to sign for")]
    NoIdentity,
    #[error("the card could not provide the device credential")]
    Card(#[source] EsimError),
    #[error("the credential could not be built")]
    Build(#[source] aiesim_credential::CredentialError),
    #[error("no randomness for the token's nonce")]
    Nonce(#[source] std::io::Error),
}

struct Cache {
    credential: Option<DeviceCredential>,
    /// Per audience: the token and when it stops being reused.
    tokens: HashMap<String, (String, SystemTime)>,
}

/// Bearer tokens signed by the eSIM's IoT SAFE applet.
pub struct CardCredentials {
    modem: Arc<Modem>,
    esim: watch::Receiver<EsimState>,
    aid: Vec<u8>,
    requirement: Requirement,
    cache: Mutex<Cache>,
}

impl CardCredentials {
    pub fn new(modem: Arc<Modem>, esim: watch::Receiver<EsimState>, aid: Vec<u8>, requirement: Requirement) -> Self {
        Self {
            modem,
            esim,
            aid,
            requirement,
            cache: Mutex::new(Cache {
                credential: None,
                tokens: HashMap::new(),
            }),
        }
    }

    async fn token(&self, base_url: &str) -> Result<Option<String>, CredentialError> {
        let audience = origin_of(base_url).map_err(CredentialError::Audience)?;
        self.settle().await;
        let eid = self.esim.borrow().eid.clone();
        if eid.is_empty() {
            return match self.requirement {
                Requirement::Required => Err(CredentialError::NoIdentity),
                Requirement::IfAvailable => Ok(None),
            };
        }
        let now = SystemTime::now();
        // One signing at a time: concurrent requests wait for the token the first one makes.
        let mut cache = self.cache.lock().await;
        if let Some((token, until)) = cache.tokens.get(&audience) {
            if now < *until {
                return Ok(Some(token.clone()));
            }
        }
        let credential = match cache.credential.clone() {
            Some(credential) => credential,
            None => match iot_safe::load(&self.modem, &self.aid).await {
                Ok(credential) => {
                    cache.credential = Some(credential.clone());
                    credential
                }
                Err(EsimError::NoIotSafe | EsimError::NotEuicc) if self.requirement == Requirement::IfAvailable => {
                    return Ok(None);
                }
                Err(error) => return Err(CredentialError::Card(error)),
            },
        };
        let issued = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = Claims {
            iss: format!("eid:{eid}"),
            sub: "aiesimd".to_owned(),
            aud: audience.clone(),
            iat: issued,
            nbf: issued,
            exp: issued + LIFETIME.as_secs(),
            jti: self.jti(&credential).await?,
            extra: std::collections::BTreeMap::new(),
        };
        let header = Header {
            kid: None,
            x5c: Some(vec![credential.certificate.clone()]),
        };
        let unsigned = Unsigned::new(&header, &claims).map_err(CredentialError::Build)?;
        let signature = match iot_safe::sign(&self.modem, &credential, &unsigned.digest()).await {
            Ok(signature) => signature,
            Err(error) => {
                // The card may have changed (a reset, another profile): read it again next time.
                cache.credential = None;
                return Err(CredentialError::Card(error));
            }
        };
        let token = unsigned.sign_with(signature).into_string();
        cache.tokens.insert(audience, (token.clone(), now + REUSE));
        Ok(Some(token))
    }
}

impl CardCredentials {
    /// The token's unique id: 16 bytes of the card's randomness mixed (XOR) with the host's, so
    /// it is unpredictable as long as either source is.
    async fn jti(&self, credential: &DeviceCredential) -> Result<String, CredentialError> {
        use std::fmt::Write as _;
        let mut bytes = nonce().map_err(CredentialError::Nonce)?;
        let card = iot_safe::random(&self.modem, credential, 16)
            .await
            .map_err(CredentialError::Card)?;
        for (b, c) in bytes.iter_mut().zip(card) {
            *b ^= c;
        }
        Ok(bytes.iter().fold(String::new(), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        }))
    }

    /// Waits (briefly) while the eSIM is being read, so the first request after start-up or a
    /// card change is not sent without a credential it could have had.
    async fn settle(&self) {
        let modem = self.modem.state();
        let mut esim = self.esim.clone();
        let unsettled = |s: &EsimState| {
            s.availability == EsimAvailability::Reading
                || (s.availability == EsimAvailability::Absent && super::card_key(&modem.borrow()).is_some())
        };
        let _ = tokio::time::timeout(SETTLE, esim.wait_for(|s| !unsettled(s))).await;
    }
}

impl Credentials for CardCredentials {
    fn bearer<'a>(&'a self, base_url: &'a str) -> CredentialFuture<'a> {
        Box::pin(async move {
            self.token(base_url)
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })
    }
}

/// 16 random bytes from the kernel, in hex.
fn nonce() -> std::io::Result<[u8; 16]> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}
