//! Vectors that follow the reference table, the ⚠ variants, round trips and a no-panic sweep.

use std::fmt::Write as _;

use aiesim_apdu::{Command, Le, StatusWord};

use crate::*;

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

fn applet() -> Applet {
    Applet::new(ClassCoding::Proprietary, 2).unwrap()
}

fn apdu(request: &Request, applet: Applet) -> Vec<u8> {
    request.to_command(applet).unwrap().encode().unwrap()
}

fn id(byte: u8) -> ObjectRef {
    ObjectRef::Id(vec![byte])
}

#[test]
fn commands_as_the_table_spells_them() {
    let a = applet();
    let hash = [0xAB; 32];
    for (request, expected) in [
        (Request::GetApplicationData, "82CB000000".to_owned()),
        (Request::GetObjectList { continuation: false }, "82CB010000".into()),
        (Request::GetObjectList { continuation: true }, "82CB010100".into()),
        (Request::GetFileInfo(id(2)), "82CBC30003 830102 00".into()),
        (
            Request::GetFileInfo(ObjectRef::Label(b"cert".to_vec())),
            "82CBC30006 7304 63657274 00".into(),
        ),
        (
            Request::ReadFile {
                file: id(2),
                offset: 0x01F4,
                len: Le::new(0xF0).unwrap(),
            },
            "82B001F403 830102 F0".into(),
        ),
        (
            Request::GetRandom {
                len: Le::new(16).unwrap(),
            },
            "828400001 0".replace(' ', ""),
        ),
        (
            Request::SignInit {
                session: 1,
                key: id(1),
                params: SignParams::ECDSA_SHA256_PRECOMPUTED,
            },
            "822A00010D 840101 A10103 91020001 920104".into(),
        ),
        (Request::SignClose { session: 1 }, "822A0101".into()),
        (
            Request::SignUpdate {
                session: 1,
                last: true,
                input: SignInput::Hash(hash.to_vec()),
            },
            format!("822B800122 9E20 {} 00", "AB".repeat(32)),
        ),
        (Request::ReadPublicKey(id(1)), "82CD000003 850101 00".into()),
        (
            Request::VerifyInit {
                session: 1,
                key: ObjectRef::Label(b"k".to_vec()),
                params: SignParams::ECDSA_SHA256_PRECOMPUTED,
            },
            "822C00010D 75016B A10103 91020001 920104".into(),
        ),
    ] {
        let bytes = apdu(&request, a);
        assert_eq!(bytes, hex(&expected), "{request:?}");
        assert_eq!(Request::from_command(&Command::decode(&bytes).unwrap()), Ok(request));
    }
}

#[test]
fn class_coding_and_channels() {
    assert_eq!(Applet::new(ClassCoding::Proprietary, 1).unwrap().cla(), 0x81);
    assert_eq!(Applet::new(ClassCoding::Interindustry, 3).unwrap().cla(), 0x03);
    // Channel 5 moves into the further interindustry coding, keeping the proprietary bit.
    assert_eq!(Applet::new(ClassCoding::Proprietary, 5).unwrap().cla(), 0xC1);
    assert_eq!(Applet::new(ClassCoding::Interindustry, 5).unwrap().cla(), 0x41);
    assert!(matches!(
        Applet::new(ClassCoding::Proprietary, 20),
        Err(RequestError::Channel(_))
    ));
    assert_eq!(ClassCoding::default(), ClassCoding::Proprietary);
}

#[test]
fn every_request_round_trips() {
    let a = Applet::new(ClassCoding::Interindustry, 1).unwrap();
    for request in [
        Request::SignUpdate {
            session: 2,
            last: false,
            input: SignInput::Message(b"header.payload".to_vec()),
        },
        Request::VerifyUpdate {
            session: 1,
            last: true,
            hash: vec![1; 32],
            signature: vec![2; 64],
        },
        Request::ReadFile {
            file: ObjectRef::Label(b"device-cert".to_vec()),
            offset: 0,
            len: Le::SHORT_MAX,
        },
    ] {
        let command = request.to_command(a).unwrap();
        assert_eq!(command.cla, 0x01);
        assert_eq!(Request::from_command(&command), Ok(request));
    }
}

#[test]
fn malformed_commands() {
    let decode = |text: &str| Request::from_command(&Command::decode(&hex(text)).unwrap());
    assert_eq!(
        decode("80CA000000"),
        Err(RequestError::UnknownInstruction { ins: 0xCA })
    );
    assert_eq!(
        decode("80CB020000"),
        Err(RequestError::Parameters {
            ins: 0xCB,
            p1: 0x02,
            p2: 0
        })
    );
    assert_eq!(
        decode("802A000103 A10103"),
        Err(RequestError::MissingField { ins: 0x2A, tag: 0x84 })
    );
    assert_eq!(
        decode("802A000106 840101 A10103"),
        Err(RequestError::MissingField { ins: 0x2A, tag: 0x91 })
    );
    assert_eq!(
        decode("802A00010D 840101 A1020303 910100 920104"),
        Err(RequestError::FieldLength {
            tag: 0xA1,
            len: 2,
            expected: "1 byte"
        })
    );
    assert!(matches!(decode("80B0000002 8302"), Err(RequestError::Tlv(_))));
    assert_eq!(decode("80B0000002 8300"), Err(RequestError::Reference { len: 0 }));
    assert_eq!(
        decode("80CB000001 00 00"),
        Err(RequestError::UnexpectedData { ins: 0xCB, len: 1 })
    );
    assert_eq!(
        decode("802B400103 9E0100"),
        Err(RequestError::Parameters {
            ins: 0x2B,
            p1: 0x40,
            p2: 1
        })
    );
    assert_eq!(
        Request::GetFileInfo(ObjectRef::Id(Vec::new())).to_command(applet()),
        Err(RequestError::Reference { len: 0 })
    );
    // A one-byte hash mask is read as the same algorithm.
    assert_eq!(
        decode("802A00010C 840101 A10103 910101 920104"),
        Ok(Request::SignInit {
            session: 1,
            key: id(1),
            params: SignParams::ECDSA_SHA256_PRECOMPUTED
        })
    );
}

fn raw_signature() -> [u8; 64] {
    let mut raw = [0; 64];
    for (i, byte) in raw.iter_mut().enumerate() {
        *byte = u8::try_from(i).unwrap().wrapping_mul(7).wrapping_add(0x81);
    }
    raw
}

#[test]
fn signature_length_variants_all_normalise() {
    let raw = raw_signature();
    let rs = raw.iter().fold(String::new(), |mut out, b| {
        write!(out, "{b:02X}").unwrap();
        out
    });
    for form in [format!("3340{rs}"), format!("330040{rs}"), format!("338140{rs}")] {
        assert_eq!(signature::decode(&hex(&form)), Ok(raw), "{}", &form[..6]);
    }
    for form in [
        signature::SignatureForm::Short,
        signature::SignatureForm::ZeroPrefixed,
        signature::SignatureForm::Ber,
        signature::SignatureForm::Der,
    ] {
        assert_eq!(signature::decode(&signature::encode(&raw, form)), Ok(raw), "{form:?}");
    }
    assert_eq!(
        signature::encode(&raw, signature::SignatureForm::Ber)[..3],
        [0x33, 0x81, 0x40]
    );
}

#[test]
fn der_signatures_are_converted() {
    // r with a high bit needs a 00 pad; s with leading zero bytes is short.
    let r = format!("00{}", "9A".repeat(32));
    let s = "11".repeat(30);
    let der = format!("30 43 0221 {r} 021E {s}");
    let mut expected = [0; 64];
    expected[..32].fill(0x9A);
    expected[34..].fill(0x11);
    assert_eq!(signature::decode(&hex(&der)), Ok(expected));
    assert_eq!(signature::decode(&hex(&format!("3345 {der}"))), Ok(expected));
    assert_eq!(hex(&der), signature::to_der(&expected));
    // Too long a scalar, trailing bytes, a wrong inner tag, and a length that lies.
    let long = format!("3045 0221 01{} 0220 {}", "9A".repeat(32), "11".repeat(32));
    assert_eq!(
        signature::decode(&hex(&long)),
        Err(SignatureError::ScalarTooLong { len: 33 })
    );
    assert_eq!(
        signature::decode(&hex(&format!("{der} 00"))),
        Err(SignatureError::Der { offset: 69 })
    );
    assert_eq!(
        signature::decode(&hex("3006 0401 01 0201 01")),
        Err(SignatureError::Der { offset: 2 })
    );
    assert_eq!(
        signature::decode(&hex("3341 0102")),
        Err(SignatureError::LengthMismatch {
            announced: 0x41,
            available: 2
        })
    );
    assert_eq!(signature::decode(&hex("9000")), Err(SignatureError::NoSignatureTag));
    assert_eq!(
        signature::decode(&hex("3303 010203")),
        Err(SignatureError::UnknownForm { len: 3 })
    );
}

fn card_objects() -> ObjectList {
    ObjectList {
        objects: vec![
            Object::PrivateKey(KeyObject {
                label: Some(b"general".to_vec()),
                id: Some(vec![0x05]),
                state: Some(STATE_ACTIVE),
                key_type: Some(KeyType::P256Volatile),
                usage: Some(key_usage::GENERAL),
                crypto_functions: Some(crypto_function::SIGNATURE),
                ..KeyObject::default()
            }),
            Object::PrivateKey(KeyObject {
                label: Some(b"ecdh".to_vec()),
                id: Some(vec![0x03]),
                key_type: Some(KeyType::P256Persistent),
                crypto_functions: Some(crypto_function::KEY_AGREEMENT),
                ..KeyObject::default()
            }),
            Object::PrivateKey(KeyObject {
                label: Some(b"tls".to_vec()),
                id: Some(vec![0x01]),
                access: Some(vec![0x01]),
                state: Some(STATE_ACTIVE),
                key_type: Some(KeyType::P256Persistent),
                usage: Some(key_usage::TLS13),
                crypto_functions: Some(crypto_function::SIGNATURE | crypto_function::KEY_AGREEMENT),
                signature_algorithms: Some(signature_algorithm::ECDSA),
                hash_algorithms: Some(hash::SHA256),
            }),
            Object::PublicKey(KeyObject {
                id: Some(vec![0x01]),
                key_type: Some(KeyType::P256Persistent),
                ..KeyObject::default()
            }),
            Object::File(FileObject {
                label: Some(b"ca".to_vec()),
                id: Some(vec![0x03]),
                usage: Some(file_usage::GENERAL),
                size: Some(400),
                ..FileObject::default()
            }),
            Object::File(FileObject {
                label: Some(b"device-cert".to_vec()),
                id: Some(vec![0x02]),
                access: Some(vec![0x01]),
                state: Some(STATE_ACTIVE),
                usage: Some(file_usage::CERTIFICATE),
                size: Some(0x01F4),
            }),
            Object::SecretKey(KeyObject {
                id: Some(vec![0x09]),
                ..KeyObject::default()
            }),
        ],
    }
}

#[test]
fn object_list_by_hand_in_any_order() {
    // A C1 written with its fields shuffled, an unknown C5, and a C3 with a one-byte size.
    let bytes = hex("C1 14 4B0113 6101 01 840101 7403 746C73 4A0101 4E0102 \
         C5 02 0000 \
         C3 0C 210102 830102 2001 80 4A0101");
    let list = ObjectList::decode(&bytes).unwrap();
    assert_eq!(list.objects.len(), 2);
    let key = list.signing_key().unwrap();
    assert_eq!(
        (key.id.as_deref(), key.label.as_deref()),
        (Some(&[1][..]), Some(&b"tls"[..]))
    );
    assert_eq!(key.usage, Some(key_usage::TLS12));
    let cert = list.certificate_file().unwrap();
    assert_eq!((cert.id.as_deref(), cert.size), (Some(&[2][..]), Some(0x80)));
    assert!(matches!(
        ObjectList::decode(&hex("C1 05 4B0113 61")),
        Err(ResponseError::Tlv(_))
    ));
    assert_eq!(
        ObjectList::decode(&hex("C1 04 4A020101")),
        Err(ResponseError::FieldLength {
            tag: 0x4A,
            len: 2,
            expected: "1 byte"
        })
    );
}

#[test]
fn object_list_round_trip_parts_and_selection() {
    let list = card_objects();
    let bytes = list.encode().unwrap();
    assert_eq!(ObjectList::decode(&bytes), Ok(list.clone()));
    // Cut at container boundaries: every part decodes alone, and together they are the list.
    let parts = list.encode_parts(40).unwrap();
    assert!(parts.len() > 2, "{}", parts.len());
    assert!(parts.iter().all(|part| part.len() <= 40));
    assert_eq!(parts.concat(), bytes);
    assert!(parts.iter().all(|part| ObjectList::decode(part).is_ok()));
    assert!(object_list_continues(StatusWord(0x6300)));
    assert!(!object_list_continues(StatusWord::OK));

    // The persistent TLS key wins over the earlier general-purpose volatile one; the
    // key-agreement-only key never qualifies.
    assert_eq!(list.signing_key().and_then(|k| k.id.clone()), Some(vec![0x01]));
    assert_eq!(list.certificate_file().and_then(|f| f.id.clone()), Some(vec![0x02]));
    let no_keys = ObjectList {
        objects: vec![list.objects[1].clone(), list.objects[4].clone()],
    };
    assert_eq!(no_keys.signing_key(), None);
    assert_eq!(no_keys.certificate_file(), None);
    // An inactive or RSA key does not sign for the daemon.
    let mut inactive = KeyObject {
        state: Some(0x02),
        key_type: Some(KeyType::P256Persistent),
        crypto_functions: Some(crypto_function::SIGNATURE),
        ..KeyObject::default()
    };
    assert!(!inactive.can_sign_p256());
    inactive.state = None;
    assert!(inactive.can_sign_p256());
    inactive.key_type = Some(KeyType::Rsa2048);
    assert!(!inactive.can_sign_p256());
}

#[test]
fn application_info_and_file_info() {
    let bytes = hex("1002 0100 1103 414243 B101 04 B301 08 9001 07 91020007 9201 04 B701 02 EE01 00");
    let info = ApplicationInfo::decode(&bytes).unwrap();
    assert_eq!(info.version, Some(vec![1, 0]));
    assert_eq!(info.capacities[0], Some(vec![4]));
    assert_eq!(info.capacities[1], None);
    assert_eq!(info.capacities[2], Some(vec![8]));
    assert_eq!(info.hash_algorithms, Some(7));
    assert_eq!(info.max_sessions, Some(2));
    assert_eq!(ApplicationInfo::decode(&info.encode().unwrap()), Ok(info));

    // Size in two bytes, inside C3 or bare.
    let wrapped = decode_file_info(&hex("C3 07 830102 20020320")).unwrap();
    let bare = decode_file_info(&hex("830102 20020320")).unwrap();
    assert_eq!(wrapped, bare);
    assert_eq!(wrapped.size, Some(0x0320));
    let file = card_objects().certificate_file().cloned().unwrap();
    assert_eq!(decode_file_info(&encode_file_info(&file).unwrap()), Ok(file));
    assert_eq!(
        decode_file_info(&hex("2000")),
        Err(ResponseError::FieldLength {
            tag: 0x20,
            len: 0,
            expected: "1 to 4 bytes"
        })
    );
}

#[test]
fn public_keys_and_verification() {
    let mut point = [0x42; 65];
    point[0] = 0x04;
    let key = PublicKey(point);
    let bytes = key.encode();
    assert_eq!(bytes[..7], hex("3445 4943 8641 04"));
    assert_eq!(PublicKey::decode(&bytes), Ok(key));
    // 86 directly in 34 is accepted too.
    let mut flat = hex("3443 8641");
    flat.extend_from_slice(&point);
    assert_eq!(PublicKey::decode(&flat), Ok(key));
    let mut compressed = hex("3445 4943 8641 02");
    compressed.extend_from_slice(&[0; 64]);
    assert_eq!(PublicKey::decode(&compressed), Err(ResponseError::NotUncompressedPoint));
    assert_eq!(
        PublicKey::decode(&hex("8501 01")),
        Err(ResponseError::MissingField { tag: 0x34 })
    );

    assert_eq!(verify_result(StatusWord::OK), Ok(true));
    assert_eq!(verify_result(StatusWord(0x6D01)), Ok(false));
    assert!(verify_result(StatusWord(0x6A88)).is_err());
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let Self(state) = self;
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % bound as u64).unwrap()
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

fn decode_everything(bytes: &[u8]) {
    if let Ok(command) = Command::decode(bytes) {
        if let Ok(request) = Request::from_command(&command) {
            let again = request.to_command(applet()).unwrap();
            assert_eq!(Request::from_command(&again), Ok(request));
        }
    }
    if let Ok(info) = ApplicationInfo::decode(bytes) {
        assert_eq!(ApplicationInfo::decode(&info.encode().unwrap()), Ok(info));
    }
    if let Ok(list) = ObjectList::decode(bytes) {
        assert_eq!(ObjectList::decode(&list.encode().unwrap()), Ok(list.clone()));
        let _ = (list.signing_key(), list.certificate_file());
    }
    if let Ok(file) = decode_file_info(bytes) {
        assert_eq!(decode_file_info(&encode_file_info(&file).unwrap()), Ok(file));
    }
    if let Ok(key) = PublicKey::decode(bytes) {
        assert_eq!(PublicKey::decode(&key.encode()), Ok(key));
    }
    if let Ok(raw) = signature::decode(bytes) {
        assert_eq!(
            signature::decode(&signature::encode(&raw, signature::SignatureForm::Der)),
            Ok(raw)
        );
    }
}

#[test]
fn random_and_mutated_bytes_never_panic() {
    let mut rng = XorShift(0x1075_AFE0);
    let seeds = [
        card_objects().encode().unwrap(),
        signature::encode(&raw_signature(), signature::SignatureForm::Der),
        signature::encode(&raw_signature(), signature::SignatureForm::ZeroPrefixed),
        PublicKey([4; 65]).encode(),
        apdu(
            &Request::SignInit {
                session: 1,
                key: id(1),
                params: SignParams::ECDSA_SHA256_PRECOMPUTED,
            },
            applet(),
        ),
        hex("1002 0100 1103 414243 B701 02"),
    ];
    for round in 0..30_000 {
        let bytes: Vec<u8> = if round % 2 == 0 {
            (0..rng.below(90)).map(|_| rng.byte()).collect()
        } else {
            let mut bytes = seeds[rng.below(seeds.len())].clone();
            for _ in 0..=rng.below(3) {
                match rng.below(3) {
                    0 if !bytes.is_empty() => {
                        let at = rng.below(bytes.len());
                        bytes[at] = rng.byte();
                    }
                    1 => bytes.truncate(rng.below(bytes.len() + 1)),
                    _ => bytes.push(rng.byte()),
                }
            }
            bytes
        };
        decode_everything(&bytes);
    }
}

/// Found by `cargo fuzz` (artifacts/iot_safe/crash-76471c…): a signature whose DER form is
/// exactly 64 bytes was read back as raw r‖s. Whatever parses whole as DER is DER.
#[test]
fn a_64_byte_der_signature_is_not_taken_for_raw() {
    let mut raw = [0u8; 64];
    raw[0] = 0x30;
    raw[2] = 0x92;
    raw[3] = 0x01;
    raw[38] = 0x34;
    raw[39] = 0x04;
    raw[61] = 0x92;
    raw[62] = 0x01;
    let der = signature::encode(&raw, signature::SignatureForm::Der);
    assert_eq!(der.len(), 2 + 64, "the case needs a 64-byte DER body");
    assert_eq!(signature::decode(&der), Ok(raw));
    // Real raw r‖s stays raw.
    let plain = [0x11u8; 64];
    assert_eq!(
        signature::decode(&signature::encode(&plain, signature::SignatureForm::Short)),
        Ok(plain)
    );
}
