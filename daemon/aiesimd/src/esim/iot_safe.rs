//! The security foundation: the card's GSMA IoT SAFE applet, which holds the device key. The
//! daemon reads the device certificate from it once and has it sign digests; the private key
//! never leaves the card, and nothing secret is ever written on the host.

use aiesim_apdu::{Command, Le, Response, StatusWord, exchange};
use aiesim_iot_safe::{
    Applet, ClassCoding, ObjectList, ObjectRef, Request, SignInput, SignParams, decode_file_info,
    object_list_continues, signature,
};

use super::{EsimError, card::Session};
use crate::modem::{Modem, ModemError};

/// The signing session number the daemon uses (cards offer at least one).
const SIGN_SESSION: u8 = 1;
/// Bytes asked for per Read File (short APDUs, with room to spare for odd cards).
const READ_CHUNK: u32 = 240;
/// Object list parts accepted before the card is taken to loop.
const MAX_LIST_PARTS: usize = 32;
/// A device certificate larger than this is refused rather than read.
const MAX_CERTIFICATE: u32 = 16 * 1024;

/// What the daemon keeps of the card's credential: public parts only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCredential {
    /// The applet's AID (GSMA's, or a vendor's).
    pub aid: Vec<u8>,
    pub coding: ClassCoding,
    /// The private key's reference on the card.
    pub key: ObjectRef,
    /// The X.509 device certificate, DER.
    pub certificate: Vec<u8>,
}

/// Selects the applet; its absence is a card without IoT SAFE, not a failure of the card.
async fn open<'a>(modem: &'a Modem, aid: &[u8]) -> Result<Session<'a>, EsimError> {
    match Session::open(modem, aid).await {
        Ok(session) => Ok(session),
        Err(ModemError::CardRefused(sw)) if sw == StatusWord::NOT_FOUND.0 => Err(EsimError::NoIotSafe),
        Err(error) => Err(error.into()),
    }
}

async fn send(session: &mut Session<'_>, applet: Applet, request: &Request) -> Result<Response, EsimError> {
    let command: Command = request.to_command(applet).map_err(EsimError::IotSafeRequest)?;
    Ok(exchange(&mut session.card, session.channel, &command).await?)
}

/// Reads the signing key's reference and the device certificate.
pub async fn load(modem: &Modem, aid: &[u8]) -> Result<DeviceCredential, EsimError> {
    let mut session = open(modem, aid).await?;
    let loaded = load_on(&mut session, aid).await;
    session.close().await;
    loaded
}

async fn load_on(session: &mut Session<'_>, aid: &[u8]) -> Result<DeviceCredential, EsimError> {
    // Cards disagree on the class of the applet's commands: proprietary first, then 0x.
    let mut coding = ClassCoding::Proprietary;
    let mut applet = Applet::new(coding, session.channel).map_err(EsimError::IotSafeRequest)?;
    let mut first = send(session, applet, &Request::GetObjectList { continuation: false }).await?;
    if first.sw == StatusWord::CLA_NOT_SUPPORTED {
        coding = ClassCoding::Interindustry;
        applet = Applet::new(coding, session.channel).map_err(EsimError::IotSafeRequest)?;
        first = send(session, applet, &Request::GetObjectList { continuation: false }).await?;
    }
    let mut data = Vec::new();
    let mut part = first;
    let mut parts = 0;
    while object_list_continues(part.sw) {
        parts += 1;
        if parts > MAX_LIST_PARTS {
            return Err(EsimError::ObjectListTooLong);
        }
        data.extend_from_slice(&part.data);
        part = send(session, applet, &Request::GetObjectList { continuation: true }).await?;
    }
    data.extend_from_slice(&part.into_result()?);
    let objects = ObjectList::decode(&data).map_err(EsimError::IotSafeResponse)?;
    let key = objects.signing_key().ok_or(EsimError::NoSigningKey)?;
    let key = match (&key.id, &key.label) {
        (Some(id), _) => ObjectRef::Id(id.clone()),
        (None, Some(label)) => ObjectRef::Label(label.clone()),
        (None, None) => return Err(EsimError::NoSigningKey),
    };
    let file = objects.certificate_file().ok_or(EsimError::NoCertificate)?;
    let file_ref = match (&file.id, &file.label) {
        (Some(id), _) => ObjectRef::Id(id.clone()),
        (None, Some(label)) => ObjectRef::Label(label.clone()),
        (None, None) => return Err(EsimError::NoCertificate),
    };
    let size = if let Some(size) = file.size {
        size
    } else {
        let info = send(session, applet, &Request::GetFileInfo(file_ref.clone())).await?;
        decode_file_info(&info.into_result()?)
            .map_err(EsimError::IotSafeResponse)?
            .size
            .ok_or(EsimError::NoCertificate)?
    };
    if size == 0 || size > MAX_CERTIFICATE {
        return Err(EsimError::CertificateSize(size));
    }
    let total = usize::try_from(size).map_err(|_| EsimError::CertificateSize(size))?;
    let mut certificate = Vec::with_capacity(total);
    while certificate.len() < total {
        let offset = u16::try_from(certificate.len()).map_err(|_| EsimError::CertificateSize(size))?;
        let left = u32::try_from(total - certificate.len()).map_err(|_| EsimError::CertificateSize(size))?;
        let want = left.min(READ_CHUNK);
        let len = Le::new(want).map_err(|_| EsimError::CertificateSize(size))?;
        let chunk = send(
            session,
            applet,
            &Request::ReadFile {
                file: file_ref.clone(),
                offset,
                len,
            },
        )
        .await?
        .into_result()?;
        if chunk.is_empty() {
            return Err(EsimError::CertificateSize(size));
        }
        certificate.extend_from_slice(&chunk);
    }
    certificate.truncate(total);
    Ok(DeviceCredential {
        aid: aid.to_vec(),
        coding,
        key,
        certificate,
    })
}

/// `len` bytes from the card's random number generator (IoT SAFE GET RANDOM).
pub async fn random(modem: &Modem, credential: &DeviceCredential, len: u16) -> Result<Vec<u8>, EsimError> {
    let mut session = open(modem, &credential.aid).await?;
    let drawn = async {
        let applet = Applet::new(credential.coding, session.channel).map_err(EsimError::IotSafeRequest)?;
        let le = Le::new(u32::from(len)).map_err(|_| EsimError::RandomLength { asked: len, got: 0 })?;
        let bytes = send(&mut session, applet, &Request::GetRandom { len: le })
            .await?
            .into_result()?;
        if bytes.len() == usize::from(len) {
            Ok(bytes)
        } else {
            Err(EsimError::RandomLength {
                asked: len,
                got: bytes.len(),
            })
        }
    }
    .await;
    session.close().await;
    drawn
}

/// Has the card sign a SHA-256 `digest` with the device key: ECDSA P-256, raw r‖s.
pub async fn sign(modem: &Modem, credential: &DeviceCredential, digest: &[u8; 32]) -> Result<[u8; 64], EsimError> {
    let mut session = open(modem, &credential.aid).await?;
    let signed = sign_on(&mut session, credential, digest).await;
    session.close().await;
    signed
}

async fn sign_on(
    session: &mut Session<'_>,
    credential: &DeviceCredential,
    digest: &[u8; 32],
) -> Result<[u8; 64], EsimError> {
    let applet = Applet::new(credential.coding, session.channel).map_err(EsimError::IotSafeRequest)?;
    // A session left open by a crashed run would refuse the new one; closing is always allowed.
    let _ = send(session, applet, &Request::SignClose { session: SIGN_SESSION }).await?;
    send(
        session,
        applet,
        &Request::SignInit {
            session: SIGN_SESSION,
            key: credential.key.clone(),
            params: SignParams::ECDSA_SHA256_PRECOMPUTED,
        },
    )
    .await?
    .into_result()?;
    let answer = send(
        session,
        applet,
        &Request::SignUpdate {
            session: SIGN_SESSION,
            last: true,
            input: SignInput::Hash(digest.to_vec()),
        },
    )
    .await?;
    let closed = send(session, applet, &Request::SignClose { session: SIGN_SESSION }).await;
    if let Err(error) = closed {
        tracing::debug!(error = %crate::broker::chain(&error), "could not close the signing session");
    }
    signature::decode(&answer.into_result()?).map_err(EsimError::Signature)
}
