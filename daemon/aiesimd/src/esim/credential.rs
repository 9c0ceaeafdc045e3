//! The device's cloud credential, signed on the card: an ES256 JWT bound to the endpoint's
//! origin, valid for minutes, carrying the device certificate read from the IoT SAFE applet.
//!
//! Every request gets a token of its own (a new `jti`), so the cloud can refuse any token it has
//! seen before. The card's signature stays off the request path: after a token is used, the
//! next one for the same endpoint is signed in the background and kept for at most a minute.
//! Nothing is signed while no request is made.

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
/// How long a token signed ahead is kept for a request to come.
const FRESH: Duration = Duration::from_secs(60);
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
    /// Per audience: one unused token signed ahead, for the EID it names, and when it was signed.
    spare: HashMap<String, Spare>,
}

struct Spare {
    token: String,
    eid: String,
    signed: SystemTime,
}

/// Bearer tokens signed by the eSIM's IoT SAFE applet.
pub struct CardCredentials(Arc<Inner>);

struct Inner {
    modem: Arc<Modem>,
    esim: watch::Receiver<EsimState>,
    aid: Vec<u8>,
    requirement: Requirement,
    cache: Mutex<Cache>,
}

impl CardCredentials {
    pub fn new(modem: Arc<Modem>, esim: watch::Receiver<EsimState>, aid: Vec<u8>, requirement: Requirement) -> Self {
        Self(Arc::new(Inner {
            modem,
            esim,
            aid,
            requirement,
            cache: Mutex::new(Cache {
                credential: None,
                spare: HashMap::new(),
            }),
        }))
    }

    async fn token(&self, base_url: &str) -> Result<Option<String>, CredentialError> {
        let audience = origin_of(base_url).map_err(CredentialError::Audience)?;
        let token = self.0.token(&audience).await?;
        if token.is_some() {
            // Sign the next one now, while the answer streams, not when the next request waits.
            let inner = Arc::clone(&self.0);
            tokio::spawn(async move { inner.sign_ahead(audience).await });
        }
        Ok(token)
    }
}

impl Inner {
    /// A spare token when one is fresh and names the card that is in; else one signed now.
    async fn token(&self, audience: &str) -> Result<Option<String>, CredentialError> {
        self.settle().await;
        let eid = self.esim.borrow().eid.clone();
        if eid.is_empty() {
            return match self.requirement {
                Requirement::Required => Err(CredentialError::NoIdentity),
                Requirement::IfAvailable => Ok(None),
            };
        }
        // One signing at a time: the card signs one thing at a time anyway.
        let mut cache = self.cache.lock().await;
        if let Some(spare) = cache.spare.remove(audience) {
            if spare.eid == eid && is_fresh(spare.signed) {
                return Ok(Some(spare.token));
            }
        }
        self.sign(&mut cache, audience, &eid).await
    }

    /// Keeps one token for `audience` ready; failures only mean the next request signs its own.
    async fn sign_ahead(&self, audience: String) {
        let eid = self.esim.borrow().eid.clone();
        let mut cache = self.cache.lock().await;
        if eid.is_empty()
            || cache
                .spare
                .get(&audience)
                .is_some_and(|s| s.eid == eid && is_fresh(s.signed))
        {
            return;
        }
        match self.sign(&mut cache, &audience, &eid).await {
            Ok(Some(token)) => {
                let spare = Spare {
                    token,
                    eid,
                    signed: SystemTime::now(),
                };
                cache.spare.insert(audience, spare);
            }
            Ok(None) => {}
            Err(error) => tracing::debug!(error = %crate::broker::chain(&error), "no token signed ahead"),
        }
    }

    /// A new token for `audience`, naming the card `eid`, signed on the card now.
    async fn sign(&self, cache: &mut Cache, audience: &str, eid: &str) -> Result<Option<String>, CredentialError> {
        let now = SystemTime::now();
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
            aud: audience.to_owned(),
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
        Ok(Some(unsigned.sign_with(signature).into_string()))
    }

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

fn is_fresh(signed: SystemTime) -> bool {
    signed.elapsed().is_ok_and(|age| age < FRESH)
}

/// 16 random bytes from the kernel, in hex.
fn nonce() -> std::io::Result<[u8; 16]> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}
