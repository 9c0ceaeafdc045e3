//! The GSMA `IoT` SAFE applet: one P-256 device key that signs on the card, its public key,
//! and the device certificate (self-issued from that key) in a file.

use aiesim_apdu::{Command, StatusWord};
use aiesim_iot_safe::{
    ApplicationInfo, FileObject, KeyObject, KeyType, Object, ObjectList, ObjectRef, PublicKey, Request, RequestError,
    STATE_ACTIVE, SignInput, SignMode, SignParams, crypto_function, encode_file_info, file_usage, hash, key_usage,
    signature::{self, SignatureForm},
    signature_algorithm,
};
use sha2::{Digest as _, Sha256};

use super::{Error, answer, fci, keys, status};
use crate::world::{Applet, sw};

const KEY_ID: [u8; 1] = [0x01];
const KEY_LABEL: &[u8] = b"device-key";
const CERTIFICATE_ID: [u8; 1] = [0x02];
const CERTIFICATE_LABEL: &[u8] = b"device-certificate";
/// Object list parts are kept small, as on cards with small buffers, so hosts exercise 6300.
const OBJECT_LIST_PART: usize = 64;
/// Verify Signature Update's "signature does not match".
const MISMATCH: u16 = 0x6D01;

pub struct IotSafe {
    aid: Vec<u8>,
    key: keys::CardKey,
    certificate: Vec<u8>,
    form: SignatureForm,
    object_list: Vec<Vec<u8>>,
    /// The object list part `CB 01 01` answers next.
    next_part: Option<usize>,
    session: Option<Session>,
}

/// The one signing or verifying session the applet holds (B7 = 1).
struct Session {
    number: u8,
    verify: bool,
    mode: SignMode,
    /// The text so far in full-text mode.
    text: Sha256,
    done: bool,
}

impl IotSafe {
    pub fn new(eid: [u8; 16], aid: Vec<u8>, der_signatures: bool) -> Result<Self, Error> {
        let key = keys::CardKey::generate();
        let certificate = certificate(&key, &eid).map_err(Error::Certificate)?;
        let list = object_list(certificate.len());
        let object_list = list.encode_parts(OBJECT_LIST_PART).map_err(Error::Encode)?;
        Ok(Self {
            aid,
            key,
            certificate,
            form: if der_signatures {
                SignatureForm::Der
            } else {
                SignatureForm::Short
            },
            object_list,
            next_part: None,
            session: None,
        })
    }

    fn run(&mut self, command: &Command, request: Request) -> Vec<u8> {
        match request {
            Request::GetApplicationData => match application_info().encode() {
                Ok(data) => exact_le(command, data),
                Err(_) => status(0x6F00),
            },
            Request::GetObjectList { continuation } => {
                let part = if continuation { self.next_part } else { Some(0) };
                let Some(part) = part.filter(|&p| p < self.object_list.len()) else {
                    return status(sw::CONDITIONS_NOT_SATISFIED);
                };
                let more = part + 1 < self.object_list.len();
                self.next_part = more.then_some(part + 1);
                let sw = if more {
                    StatusWord::MORE_DATA_AVAILABLE.0
                } else {
                    sw::OK
                };
                answer(self.object_list[part].clone(), sw)
            }
            Request::GetFileInfo(file) => {
                if !is_certificate(&file) {
                    return status(sw::NOT_FOUND);
                }
                match encode_file_info(&certificate_file(self.certificate.len())) {
                    Ok(data) => exact_le(command, data),
                    Err(_) => status(0x6F00),
                }
            }
            Request::ReadFile { file, offset, len } => {
                if !is_certificate(&file) {
                    return status(sw::NOT_FOUND);
                }
                let start = usize::from(offset);
                let Some(rest) = self.certificate.get(start..) else {
                    return status(sw::WRONG_P1_P2);
                };
                let len = usize::try_from(len.get()).unwrap_or(usize::MAX).min(256);
                answer(rest[..len.min(rest.len())].to_vec(), sw::OK)
            }
            Request::GetRandom { len } => {
                answer(keys::random(usize::try_from(len.get()).unwrap_or(0).min(256)), sw::OK)
            }
            Request::SignInit { session, key, params } => self.open(session, &key, params, false),
            Request::VerifyInit { session, key, params } => self.open(session, &key, params, true),
            Request::SignClose { session } => {
                // Closing a session that is not open is fine: hosts close stale ones blindly.
                if self.session.as_ref().is_some_and(|s| s.number == session) {
                    self.session = None;
                }
                status(sw::OK)
            }
            Request::SignUpdate { session, last, input } => self.sign(session, last, input),
            Request::VerifyUpdate {
                session,
                last,
                hash,
                signature,
            } => self.verify(session, last, &hash, &signature),
            Request::ReadPublicKey(key) => {
                if is_key(&key) {
                    answer(PublicKey(self.key.public()).encode(), sw::OK)
                } else {
                    status(sw::NOT_FOUND)
                }
            }
        }
    }

    fn open(&mut self, number: u8, key: &ObjectRef, params: SignParams, verify: bool) -> Vec<u8> {
        let SignParams { mode, hash, algorithm } = params;
        if !is_key(key) {
            return status(sw::NOT_FOUND);
        }
        let supported = matches!(mode, SignMode::PrecomputedHash | SignMode::FullText)
            && hash == hash::SHA256
            && algorithm == signature_algorithm::ECDSA;
        if !supported {
            return status(sw::INCORRECT_DATA);
        }
        if self.session.is_some() {
            // One session at a time; the host closes a stale one first.
            return status(sw::CONDITIONS_NOT_SATISFIED);
        }
        self.session = Some(Session {
            number,
            verify,
            mode,
            text: Sha256::new(),
            done: false,
        });
        status(sw::OK)
    }

    /// The open session numbered `number` of the right kind, or the status word refusing it.
    fn session(&mut self, number: u8, verify: bool) -> Result<&mut Session, u16> {
        match &mut self.session {
            Some(session) if session.number == number && session.verify == verify && !session.done => Ok(session),
            _ => Err(sw::CONDITIONS_NOT_SATISFIED),
        }
    }

    fn sign(&mut self, number: u8, last: bool, input: SignInput) -> Vec<u8> {
        let session = match self.session(number, false) {
            Ok(session) => session,
            Err(sw) => return status(sw),
        };
        let digest = match (session.mode, input) {
            (SignMode::PrecomputedHash, SignInput::Hash(digest)) if last && digest.len() == 32 => digest,
            (SignMode::FullText, SignInput::Message(block)) => {
                session.text.update(&block);
                if !last {
                    return status(sw::OK);
                }
                session.text.clone().finalize().to_vec()
            }
            _ => return status(sw::INCORRECT_DATA),
        };
        session.done = true;
        match self.key.sign_prehash(&digest) {
            Some(raw) => answer(signature::encode(&raw, self.form), sw::OK),
            None => status(0x6F00),
        }
    }

    fn verify(&mut self, number: u8, last: bool, digest: &[u8], signature: &[u8]) -> Vec<u8> {
        let session = match self.session(number, true) {
            Ok(session) => session,
            Err(sw) => return status(sw),
        };
        if !last || session.mode != SignMode::PrecomputedHash || digest.len() != 32 {
            return status(sw::INCORRECT_DATA);
        }
        session.done = true;
        // The value of tag 33 in any of the forms cards send, as the daemon would pass it on.
        let mut field = vec![signature::SIGNATURE_TAG];
        field.extend_from_slice(&u8::try_from(signature.len()).unwrap_or(0).to_be_bytes());
        field.extend_from_slice(signature);
        let valid = signature::decode(&field).is_ok_and(|raw| keys::verify_prehash(&self.key.public(), digest, &raw));
        status(if valid { sw::OK } else { MISMATCH })
    }
}

/// Answers `data`, or 6Cxx with its length when Le asks for less (the host re-sends).
fn exact_le(command: &Command, data: Vec<u8>) -> Vec<u8> {
    match (command.le, u8::try_from(data.len())) {
        (Some(le), Ok(len)) if (le.get() as usize) < data.len() => status(0x6C00 | u16::from(len)),
        _ => answer(data, sw::OK),
    }
}

fn is_key(reference: &ObjectRef) -> bool {
    match reference {
        ObjectRef::Id(id) => id == &KEY_ID,
        ObjectRef::Label(label) => label == KEY_LABEL,
    }
}

fn is_certificate(reference: &ObjectRef) -> bool {
    match reference {
        ObjectRef::Id(id) => id == &CERTIFICATE_ID,
        ObjectRef::Label(label) => label == CERTIFICATE_LABEL,
    }
}

fn application_info() -> ApplicationInfo {
    ApplicationInfo {
        version: Some(vec![0x01, 0x00]),
        id: Some(b"aiesim".to_vec()),
        // One private key, one public key, one file, no secret keys.
        capacities: [Some(vec![1]), Some(vec![1]), Some(vec![1]), Some(vec![0])],
        crypto_functions: Some(crypto_function::SIGNATURE),
        hash_algorithms: Some(hash::SHA256),
        signature_algorithms: Some(signature_algorithm::ECDSA),
        max_sessions: Some(1),
    }
}

fn key_object() -> KeyObject {
    KeyObject {
        label: Some(KEY_LABEL.to_vec()),
        id: Some(KEY_ID.to_vec()),
        access: None,
        state: Some(STATE_ACTIVE),
        key_type: Some(KeyType::P256Persistent),
        usage: Some(key_usage::GENERAL),
        crypto_functions: Some(crypto_function::SIGNATURE),
        signature_algorithms: Some(signature_algorithm::ECDSA),
        hash_algorithms: Some(hash::SHA256),
    }
}

fn certificate_file(size: usize) -> FileObject {
    FileObject {
        label: Some(CERTIFICATE_LABEL.to_vec()),
        id: Some(CERTIFICATE_ID.to_vec()),
        access: None,
        state: Some(STATE_ACTIVE),
        usage: Some(file_usage::CERTIFICATE),
        size: u32::try_from(size).ok(),
    }
}

fn object_list(certificate_len: usize) -> ObjectList {
    ObjectList {
        objects: vec![
            Object::PrivateKey(key_object()),
            Object::PublicKey(key_object()),
            Object::File(certificate_file(certificate_len)),
        ],
    }
}

/// The device certificate: self-issued by the card's key, named after the EID.
fn certificate(key: &keys::CardKey, eid: &[u8; 16]) -> Result<Vec<u8>, rcgen::Error> {
    let eid_hex = aiesim_es10::Eid(*eid).to_string();
    let key_id = Sha256::digest(key.public());
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, format!("aiesim device {eid_hex}"));
    name.push(rcgen::DnType::OrganizationName, "aiesim");
    params.distinguished_name = name;
    // A positive 16-byte serial derived from the key, so it is unique per card.
    let mut serial = key_id[..16].to_vec();
    serial[0] &= 0x7F;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(key_id[..20].to_vec());
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2049, 12, 31);
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params.self_signed(key)?.der().to_vec())
}

fn request_error(error: &RequestError) -> u16 {
    match error {
        RequestError::UnknownInstruction { .. } => sw::INS_NOT_SUPPORTED,
        RequestError::Parameters { .. } => sw::WRONG_P1_P2,
        RequestError::UnexpectedData { .. } => sw::WRONG_LENGTH,
        RequestError::Tlv(_)
        | RequestError::Channel(_)
        | RequestError::MissingField { .. }
        | RequestError::FieldLength { .. }
        | RequestError::Reference { .. } => sw::INCORRECT_DATA,
    }
}

/// `8x` and `0x` in either channel coding; the GSM class `A0` and the like are refused.
fn class_accepted(cla: u8) -> bool {
    cla != 0xFF && (cla & 0x40 != 0 || cla & 0x20 == 0)
}

impl Applet for IotSafe {
    fn name(&self) -> &'static str {
        "iot-safe"
    }

    fn aid(&self) -> &[u8] {
        &self.aid
    }

    fn select(&mut self) -> Vec<u8> {
        self.next_part = None;
        self.session = None;
        fci(&self.aid)
    }

    fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        let Ok(command) = Command::decode(apdu) else {
            return status(sw::WRONG_LENGTH);
        };
        if !class_accepted(command.cla) {
            return status(sw::CLA_NOT_SUPPORTED);
        }
        match Request::from_command(&command) {
            Ok(request) => self.run(&command, request),
            Err(error) => status(request_error(&error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use aiesim_apdu::{Le, Response};
    use aiesim_iot_safe::{Applet as Channel, ClassCoding, decode_file_info};
    use p256::ecdsa::{Signature, VerifyingKey, signature::Verifier as _, signature::hazmat::PrehashVerifier as _};
    use x509_cert::der::{Decode as _, Encode as _};

    use super::*;
    use crate::euicc::{
        Config,
        test_support::{Card, configured, world},
    };

    fn send(card: &mut Card, coding: ClassCoding, request: &Request) -> Response {
        let applet = Channel::new(coding, card.channel).unwrap();
        card.send(&request.to_command(applet).unwrap())
    }

    fn ask(card: &mut Card, request: &Request) -> Response {
        send(card, ClassCoding::Proprietary, request)
    }

    fn objects(card: &mut Card) -> (ObjectList, usize) {
        let mut data = Vec::new();
        let mut parts = 0;
        let mut continuation = false;
        loop {
            let response = ask(card, &Request::GetObjectList { continuation });
            data.extend_from_slice(&response.data);
            parts += 1;
            if !aiesim_iot_safe::object_list_continues(response.sw) {
                assert_eq!(response.sw, StatusWord::OK);
                return (ObjectList::decode(&data).unwrap(), parts);
            }
            continuation = true;
        }
    }

    fn public_key(card: &mut Card) -> VerifyingKey {
        let response = ask(card, &Request::ReadPublicKey(ObjectRef::Id(KEY_ID.to_vec())));
        assert_eq!(response.sw, StatusWord::OK);
        VerifyingKey::from_sec1_bytes(&PublicKey::decode(&response.data).unwrap().0).unwrap()
    }

    fn sign(card: &mut Card, digest: &[u8]) -> Response {
        assert_eq!(ask(card, &Request::SignClose { session: 1 }).sw, StatusWord::OK);
        let init = Request::SignInit {
            session: 1,
            key: ObjectRef::Id(KEY_ID.to_vec()),
            params: SignParams::ECDSA_SHA256_PRECOMPUTED,
        };
        assert_eq!(ask(card, &init).sw, StatusWord::OK);
        let update = Request::SignUpdate {
            session: 1,
            last: true,
            input: SignInput::Hash(digest.to_vec()),
        };
        let response = ask(card, &update);
        assert_eq!(
            ask(card, &update).sw,
            StatusWord::CONDITIONS_NOT_SATISFIED,
            "one signature per session"
        );
        assert_eq!(ask(card, &Request::SignClose { session: 1 }).sw, StatusWord::OK);
        response
    }

    #[test]
    fn the_object_list_names_the_key_and_the_certificate() {
        let mut world = world();
        let mut card = Card::open(&mut world, &aiesim_iot_safe::AID);
        let (list, parts) = objects(&mut card);
        assert!(parts > 1, "the list comes in parts with 6300");
        let key = list.signing_key().unwrap();
        assert_eq!(key.id.as_deref(), Some(&KEY_ID[..]));
        assert_eq!(key.label.as_deref(), Some(KEY_LABEL));
        let file = list.certificate_file().unwrap();
        assert_eq!(file.id.as_deref(), Some(&CERTIFICATE_ID[..]));
        assert_eq!(list.objects.len(), 3);
        assert!(matches!(list.objects[1], Object::PublicKey(_)));

        // A continuation with nothing announced is refused.
        assert_eq!(
            ask(&mut card, &Request::GetObjectList { continuation: true }).sw,
            StatusWord::CONDITIONS_NOT_SATISFIED
        );
        // Le too short: 6Cxx, and the exchange re-sends with the right Le.
        let mut command = Request::GetApplicationData
            .to_command(Channel::new(ClassCoding::Proprietary, card.channel).unwrap())
            .unwrap();
        command.le = Some(Le::new(4).unwrap());
        let info = ApplicationInfo::decode(&card.send(&command).data).unwrap();
        assert_eq!(info, application_info());
    }

    #[test]
    fn the_certificate_reads_in_chunks_and_carries_the_card_key() {
        let mut world = world();
        let eid = world.uicc.eid;
        let mut card = Card::open(&mut world, &aiesim_iot_safe::AID);
        let file = ObjectRef::Id(CERTIFICATE_ID.to_vec());
        let info = ask(&mut card, &Request::GetFileInfo(file.clone()));
        let size = decode_file_info(&info.data).unwrap().size.unwrap() as usize;
        let mut der = Vec::new();
        while der.len() < size {
            let response = ask(
                &mut card,
                &Request::ReadFile {
                    file: file.clone(),
                    offset: u16::try_from(der.len()).unwrap(),
                    len: Le::new(100).unwrap(),
                },
            );
            assert_eq!(response.sw, StatusWord::OK);
            assert!(!response.data.is_empty() && response.data.len() <= 100);
            der.extend_from_slice(&response.data);
        }
        assert_eq!(der.len(), size);
        let past_end = Request::ReadFile {
            file: ObjectRef::Label(CERTIFICATE_LABEL.to_vec()),
            offset: u16::try_from(size + 1).unwrap(),
            len: Le::SHORT_MAX,
        };
        assert_eq!(ask(&mut card, &past_end).sw, StatusWord::INCORRECT_P1_P2);

        let certificate = x509_cert::Certificate::from_der(&der).unwrap();
        let tbs = &certificate.tbs_certificate;
        let point = tbs.subject_public_key_info.subject_public_key.raw_bytes();
        let key = public_key(&mut card);
        assert_eq!(point, key.to_encoded_point(false).as_bytes());
        let eid_hex = aiesim_es10::Eid(eid).to_string();
        assert!(tbs.subject.to_string().contains(&format!("CN=aiesim device {eid_hex}")));
        assert_eq!(tbs.subject, tbs.issuer, "self-issued");
        // The card's key signed it.
        let signature = Signature::from_der(certificate.signature.raw_bytes()).unwrap();
        key.verify(&tbs.to_der().unwrap(), &signature).unwrap();
    }

    #[test]
    fn signatures_verify_with_the_card_key_in_both_forms() {
        let digest = Sha256::digest(b"header.payload");
        let mut world = world();
        let mut card = Card::open(&mut world, &aiesim_iot_safe::AID);
        let key = public_key(&mut card);
        let response = sign(&mut card, &digest);
        assert_eq!(response.sw, StatusWord::OK);
        assert_eq!(response.data[..2], [0x33, 0x40], "raw r‖s by default");
        let raw = signature::decode(&response.data).unwrap();
        key.verify_prehash(&digest, &Signature::from_slice(&raw).unwrap())
            .unwrap();
        let other = Sha256::digest(b"something else");
        assert!(
            key.verify_prehash(&other, &Signature::from_slice(&raw).unwrap())
                .is_err()
        );

        let mut world = configured(&Config {
            der_signatures: true,
            ..Config::default()
        });
        let mut card = Card::open(&mut world, &aiesim_iot_safe::AID);
        let key = public_key(&mut card);
        // Interindustry class works as well as proprietary.
        let random = send(
            &mut card,
            ClassCoding::Interindustry,
            &Request::GetRandom {
                len: Le::new(32).unwrap(),
            },
        );
        assert_eq!(random.data.len(), 32);
        let response = sign(&mut card, &digest);
        assert_eq!((response.data[0], response.data[2]), (0x33, 0x30), "DER inside tag 33");
        let raw = signature::decode(&response.data).unwrap();
        key.verify_prehash(&digest, &Signature::from_slice(&raw).unwrap())
            .unwrap();
    }

    #[test]
    fn verify_signature_and_refusals() {
        let digest = Sha256::digest(b"message");
        let mut world = world();
        let mut card = Card::open(&mut world, &aiesim_iot_safe::AID);
        let raw = signature::decode(&sign(&mut card, &digest).data).unwrap();
        let verify = |card: &mut Card, signature: &[u8]| {
            let init = Request::VerifyInit {
                session: 1,
                key: ObjectRef::Id(KEY_ID.to_vec()),
                params: SignParams::ECDSA_SHA256_PRECOMPUTED,
            };
            assert_eq!(ask(card, &init).sw, StatusWord::OK);
            let update = Request::VerifyUpdate {
                session: 1,
                last: true,
                hash: digest.to_vec(),
                signature: signature.to_vec(),
            };
            let sw = ask(card, &update).sw;
            ask(card, &Request::SignClose { session: 1 });
            sw
        };
        assert_eq!(verify(&mut card, &raw), StatusWord::OK);
        let mut forged = raw;
        forged[10] ^= 1;
        assert_eq!(verify(&mut card, &forged), StatusWord(MISMATCH));

        let unknown_key = Request::SignInit {
            session: 1,
            key: ObjectRef::Id(vec![0x09]),
            params: SignParams::ECDSA_SHA256_PRECOMPUTED,
        };
        assert_eq!(ask(&mut card, &unknown_key).sw, StatusWord::NOT_FOUND);
        let update_without_init = Request::SignUpdate {
            session: 1,
            last: true,
            input: SignInput::Hash(digest.to_vec()),
        };
        assert_eq!(
            ask(&mut card, &update_without_init).sw,
            StatusWord::CONDITIONS_NOT_SATISFIED
        );
        let gsm_class = Command::new(0xA0 | card.channel, 0xCB, 0, 0).with_le(Le::SHORT_MAX);
        assert_eq!(card.send(&gsm_class).sw, StatusWord::CLA_NOT_SUPPORTED);
        assert_eq!(
            card.send(&Command::new(0x80, 0xEE, 0, 0)).sw,
            StatusWord::INS_NOT_SUPPORTED
        );
    }

    #[test]
    fn the_aid_is_configurable() {
        let aid = [
            0xA0, 0x00, 0x00, 0x00, 0x30, 0x53, 0xF1, 0x24, 0x01, 0x77, 0x01, 0x01, 0x49, 0x53, 0x41,
        ];
        let mut world = configured(&Config {
            iot_safe_aid: aid.to_vec(),
            ..Config::default()
        });
        assert!(world.uicc.open_channel(&aiesim_iot_safe::AID).is_err());
        let mut card = Card::open(&mut world, &aid);
        assert!(objects(&mut card).0.signing_key().is_some());
    }
}
