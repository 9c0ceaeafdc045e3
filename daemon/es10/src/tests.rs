//! Vectors from lpac traces, round trips of every request and response, malformed inputs and
//! a no-panic sweep.

use aiesim_apdu::{Response, StatusWord, tlv::Tag};

use crate::*;

/// Parses hex, ignoring spaces.
fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

const EID: &str = "89049032123451234512345678901235";
/// The ICCID lpac enabled in the trace, as its swapped-BCD bytes.
const ICCID_BCD: &str = "98001032547698103214";

fn tag(raw: u32) -> Tag {
    Tag::new(raw).unwrap()
}

fn iccid() -> Iccid {
    Iccid::new("89000123456789012341").unwrap()
}

#[test]
fn get_eid_as_lpac_sends_and_reads_it() {
    assert_eq!(Request::get_eid().encode().unwrap(), hex("BF3E035C015A"));
    let answer = hex(&format!("BF3E 12 5A10 {EID}"));
    let data = EuiccData::decode(&answer).unwrap();
    assert_eq!(data.eid.to_string(), EID);
    assert_eq!(data.encode().unwrap(), answer);
    assert_eq!(Request::decode(&hex("BF3E035C015A")), Ok(Request::get_eid()));
    assert!(matches!(
        EuiccData::decode(&hex("BF3E 03 5A01 89")),
        Err(DecodeError::Length { len: 1, .. })
    ));
    assert_eq!(
        EuiccData::decode(&hex("BF3E 00")),
        Err(DecodeError::Missing {
            tag: tag(0x5A),
            parent: tag(0xBF3E)
        })
    );
}

#[test]
fn enable_profile_byte_for_byte() {
    let request = Request::EnableProfile(ProfileOperation {
        id: ProfileId::Iccid(iccid()),
        refresh: false,
    });
    let payload = hex(&format!("BF3111 A00C 5A0A {ICCID_BCD} 810100"));
    assert_eq!(request.encode().unwrap(), payload);
    assert_eq!(Request::decode(&payload), Ok(request));
    // The whole APDU lpac sends on channel 1.
    let apdu = aiesim_apdu::Command::new(0x81, 0xE2, 0x91, 0x00)
        .with_data(payload)
        .encode()
        .unwrap();
    assert_eq!(apdu, hex(&format!("81E2910014 BF3111A00C5A0A{ICCID_BCD}810100")));

    assert_eq!(EnableResult::decode(&hex("BF3103800100")), Ok(EnableResult::Ok));
    assert_eq!(EnableResult::Ok.encode(), hex("BF3103800100"));
    assert_eq!(EnableResult::Ok.into_result(), Ok(()));
    assert_eq!(
        EnableResult::decode(&hex("BF3103800102")).unwrap().into_result(),
        Err(EnableResult::ProfileNotInDisabledState)
    );
    // 127 is undefinedError; an unassigned code stays visible.
    assert_eq!(
        EnableResult::decode(&hex("BF310380017F")),
        Ok(EnableResult::UndefinedError)
    );
    assert_eq!(EnableResult::decode(&hex("BF3103800106")), Ok(EnableResult::Other(6)));
    assert_eq!(EnableResult::Other(200).encode(), hex("BF3104 8002 00C8"));
    assert_eq!(
        EnableResult::decode(&EnableResult::Other(200).encode()),
        Ok(EnableResult::Other(200))
    );
    assert_eq!(
        EnableResult::CatBusy.to_string(),
        "the eUICC is busy with a proactive session; try again later (5)"
    );
    // A disable answer is not an enable answer.
    assert_eq!(
        EnableResult::decode(&hex("BF3203800100")),
        Err(DecodeError::UnexpectedTag {
            expected: tag(0xBF31),
            found: tag(0xBF32)
        })
    );
}

#[test]
fn disable_profile_by_aid_with_refresh() {
    let aid = Aid::new(&hex("A0000005591010FFFFFFFF8900001000")).unwrap();
    let request = Request::DisableProfile(ProfileOperation {
        id: ProfileId::IsdpAid(aid),
        refresh: true,
    });
    let payload = request.encode().unwrap();
    assert_eq!(payload, hex("BF3217 A012 4F10 A0000005591010FFFFFFFF8900001000 8101FF"));
    assert_eq!(Request::decode(&payload), Ok(request));
    for (code, result) in [
        (0, DisableResult::Ok),
        (1, DisableResult::IccidOrAidNotFound),
        (2, DisableResult::ProfileNotInEnabledState),
        (3, DisableResult::DisallowedByPolicy),
        (5, DisableResult::CatBusy),
        (127, DisableResult::UndefinedError),
        (4, DisableResult::Other(4)),
    ] {
        let bytes = result.encode();
        assert_eq!(bytes, [0xBF, 0x32, 0x03, 0x80, 0x01, code]);
        assert_eq!(DisableResult::decode(&bytes), Ok(result));
    }
    // An empty choice or a missing refresh flag is not a request.
    assert_eq!(
        Request::decode(&hex("BF3205 A000 810100")),
        Err(DecodeError::Choice { tag: tag(0xA0) })
    );
    assert_eq!(
        Request::decode(&hex(&format!("BF320E A00C 5A0A {ICCID_BCD}"))),
        Err(DecodeError::Missing {
            tag: tag(0x81),
            parent: tag(0xBF32)
        })
    );
}

fn two_profiles() -> ProfileInfoList {
    ProfileInfoList::Ok(vec![
        ProfileInfo {
            iccid: Some(iccid()),
            isdp_aid: Some(Aid::new(&hex("A0000005591010FFFFFFFF8900001000")).unwrap()),
            state: Some(ProfileState::Enabled),
            nickname: Some("work".into()),
            service_provider_name: Some("AI Mobile".into()),
            profile_name: Some("AI data".into()),
            icon_type: Some(IconType::Png),
            icon: Some(vec![0x89, 0x50, 0x4E, 0x47]),
            class: Some(ProfileClass::Operational),
        },
        ProfileInfo {
            iccid: Some(Iccid::new("8944500102198304826").unwrap()),
            state: Some(ProfileState::Disabled),
            class: Some(ProfileClass::Test),
            ..ProfileInfo::default()
        },
    ])
}

#[test]
fn profile_list_as_a_card_sends_it() {
    // Written out by hand in the order lpac's trace shows.
    let bytes = hex(&format!(
        "BF2D 31 A0 2F E3 2D 5A0A {ICCID_BCD} 4F10 A0000005591010FFFFFFFF8900001000 9F7001 01 \
         9102 4149 9202 4149 950102"
    ));
    let ProfileInfoList::Ok(profiles) = ProfileInfoList::decode(&bytes).unwrap() else {
        panic!("not a list")
    };
    let [profile] = profiles.as_slice() else {
        panic!("{profiles:?}")
    };
    assert_eq!(profile.iccid.as_ref().map(Iccid::as_str), Some("89000123456789012341"));
    assert_eq!(profile.state, Some(ProfileState::Enabled));
    assert_eq!(profile.service_provider_name.as_deref(), Some("AI"));
    assert_eq!(profile.class, Some(ProfileClass::Operational));
    assert_eq!(profile.nickname, None);

    let list = two_profiles();
    let encoded = list.encode().unwrap();
    assert_eq!(ProfileInfoList::decode(&encoded), Ok(list));
}

#[test]
fn profile_list_tolerates_unknown_fields_and_reads_errors() {
    // An unknown B6 field inside E3 and an unknown entry in the list are skipped.
    let bytes = hex("BF2D 06 A0 04 E3 05 9F70");
    assert!(
        ProfileInfoList::decode(&bytes).is_err(),
        "a truncated entry must be an error"
    );
    let bytes = hex("BF2D 0E A0 0C E3 08 9F7001 00 B600 9900 0400");
    let ProfileInfoList::Ok(profiles) = ProfileInfoList::decode(&bytes).unwrap() else {
        panic!("not a list")
    };
    assert_eq!(
        profiles,
        [ProfileInfo {
            state: Some(ProfileState::Disabled),
            ..ProfileInfo::default()
        }]
    );
    let error = ProfileInfoList::Error(ProfileInfoListError::IncorrectInputValues);
    assert_eq!(error.encode().unwrap(), hex("BF2D03 810101"));
    assert_eq!(ProfileInfoList::decode(&hex("BF2D03 810101")), Ok(error));
    // The 80 some simulators send is read too.
    assert_eq!(
        ProfileInfoList::decode(&hex("BF2D03 80017F")),
        Ok(ProfileInfoList::Error(ProfileInfoListError::UndefinedError))
    );
    assert_eq!(
        ProfileInfoList::decode(&hex("BF2D00")),
        Err(DecodeError::Choice { tag: tag(0xBF2D) })
    );
    // A short ICCID or a bad nibble is reported with its field.
    assert_eq!(
        ProfileInfoList::decode(&hex("BF2D 0E A0 0C E3 0A 5A08 0000000000000000")),
        Err(DecodeError::Id {
            tag: tag(0x5A),
            source: IdError::IccidBytes { len: 8 }
        })
    );
    assert!(matches!(
        ProfileInfoList::decode(&hex("BF2D 10 A0 0E E3 0C 5A0A 9800103254769810321A")),
        Err(DecodeError::Id {
            source: IdError::IccidNibble { nibble: 0xA },
            ..
        })
    ));
}

#[test]
fn profile_list_requests() {
    assert_eq!(
        Request::ProfileInfoList(ProfileInfoListRequest::default())
            .encode()
            .unwrap(),
        hex("BF2D00")
    );
    let request = Request::ProfileInfoList(ProfileInfoListRequest {
        search: Some(SearchCriteria::ProfileClass(ProfileClass::Operational)),
        tag_list: Some(hex("5A 9F70 92")),
    });
    let bytes = request.encode().unwrap();
    assert_eq!(bytes, hex("BF2D0B A003 950102 5C04 5A9F7092"));
    assert_eq!(Request::decode(&bytes), Ok(request));
    let by_iccid = Request::ProfileInfoList(ProfileInfoListRequest {
        search: Some(SearchCriteria::Iccid(iccid())),
        tag_list: None,
    });
    assert_eq!(Request::decode(&by_iccid.encode().unwrap()), Ok(by_iccid));
}

fn info2() -> EuiccInfo2 {
    EuiccInfo2 {
        profile_version: Version::new(2, 3, 1),
        svn: Version::new(2, 2, 2),
        firmware_version: Version::new(1, 4, 0),
        ext_card_resource: Some(ExtCardResource {
            installed_applications: 3,
            free_nvm: 0x0001_8000,
            free_volatile: 0x2000,
        }),
        uicc_capability: Some(BitString::from_bits(&[1, 2, 14])),
        javacard_version: Some(Version::new(3, 0, 5)),
        globalplatform_version: Some(Version::new(2, 3, 0)),
        rsp_capability: Some(BitString::from_bits(&[0, 1, 2, 3])),
        ci_pkid_verification: vec![vec![0x81; 20]],
        ci_pkid_signing: vec![vec![0x81; 20], vec![0xF5; 20]],
        euicc_category: Some(2),
        pp_version: Some(Version::new(1, 0, 0)),
        sas_accreditation_number: Some("AI-SIM-0001".into()),
    }
}

#[test]
fn euicc_info2_round_trip_and_hand_vector() {
    let info = info2();
    assert_eq!(EuiccInfo2::decode(&info.encode().unwrap()), Ok(info));

    // Only the mandatory versions, an unknown field (99) and a ppVersion.
    let bytes = hex("BF22 18 8103020301 8203020202 8303010400 9900 0403010000 8400");
    let info = EuiccInfo2::decode(&bytes).unwrap();
    assert_eq!(info.svn.to_string(), "2.2.2");
    assert_eq!(info.pp_version, Some(Version::new(1, 0, 0)));
    assert_eq!(info.ext_card_resource, Some(ExtCardResource::default()));
    assert!(info.ci_pkid_signing.is_empty());

    // extCardResource values are plain big-endian numbers.
    let bytes = hex("BF22 1D 8103020301 8203020202 8303010400 840C 810103 8203018000 83022000");
    let resource = EuiccInfo2::decode(&bytes).unwrap().ext_card_resource.unwrap();
    assert_eq!(
        resource,
        ExtCardResource {
            installed_applications: 3,
            free_nvm: 0x18000,
            free_volatile: 0x2000
        }
    );
    assert_eq!(
        EuiccInfo2::decode(&hex("BF22 09 8103020301 82020202")),
        Err(DecodeError::Length {
            tag: tag(0x82),
            len: 2,
            expected: "3 bytes"
        })
    );
    assert_eq!(
        EuiccInfo2::decode(&hex("BF22 0A 8103020301 8203020202")),
        Err(DecodeError::Missing {
            tag: tag(0x83),
            parent: tag(0xBF22)
        })
    );
}

#[test]
fn euicc_info1_addresses_and_rat() {
    let info = EuiccInfo1 {
        svn: Version::new(2, 2, 0),
        ci_pkid_verification: vec![vec![1; 20]],
        ci_pkid_signing: vec![],
    };
    let bytes = info.encode().unwrap();
    assert_eq!(bytes[..8], hex("BF20 1F 82 03 020200"));
    assert_eq!(EuiccInfo1::decode(&bytes), Ok(info));

    let addresses = ConfiguredAddresses {
        default_dp_address: Some("smdp.example".into()),
        root_ds_address: Some("lpa.ds.gsma.com".into()),
    };
    let bytes = addresses.encode().unwrap();
    assert_eq!(bytes[..5], hex("BF3C 1F 80 0C"));
    assert_eq!(ConfiguredAddresses::decode(&bytes), Ok(addresses));
    assert_eq!(
        ConfiguredAddresses::decode(&hex("BF3C 03 8101 FF")),
        Err(DecodeError::Utf8 { tag: tag(0x81) })
    );

    let rat = Rat {
        rules: vec![RatRule {
            ppr_ids: BitString::from_bits(&[1]),
            allowed_operators: vec![OperatorId {
                mcc_mnc: hex("E1FFFF"),
                gid1: None,
                gid2: Some(vec![1]),
            }],
            ppr_flags: BitString::from_bits(&[0]),
        }],
    };
    let bytes = rat.encode().unwrap();
    assert_eq!(Rat::decode(&bytes), Ok(rat));
    assert_eq!(Rat::decode(&hex("BF4300")), Ok(Rat::default()));
    for request in [
        Request::GetEuiccInfo1,
        Request::GetEuiccInfo2,
        Request::GetConfiguredAddresses,
        Request::GetRat,
    ] {
        let bytes = request.encode().unwrap();
        assert_eq!(bytes.len(), 3);
        assert_eq!(Request::decode(&bytes), Ok(request));
    }
    assert_eq!(Request::GetEuiccInfo2.encode().unwrap(), hex("BF2200"));
    assert_eq!(Request::GetConfiguredAddresses.encode().unwrap(), hex("BF3C00"));
    assert_eq!(Request::GetRat.encode().unwrap(), hex("BF4300"));
}

#[test]
fn sgp32_detection_by_eim_configuration() {
    let request = Request::GetEimConfigurationData { eim_id: None };
    assert_eq!(request.encode().unwrap(), hex("BF5500"));
    let filtered = Request::GetEimConfigurationData {
        eim_id: Some("eim1".into()),
    };
    let bytes = filtered.encode().unwrap();
    assert_eq!(bytes, hex("BF5508 A006 8004 65696D31"));
    assert_eq!(Request::decode(&bytes), Ok(filtered));

    let list = EimConfigurationList {
        eims: vec![EimConfiguration {
            eim_id: "eim1".into(),
            eim_fqdn: Some("eim.example".into()),
            eim_id_type: Some(2),
            counter_value: Some(300),
            association_token: None,
        }],
    };
    let bytes = list.encode().unwrap();
    assert_eq!(EimConfigurationList::decode(&bytes), Ok(list));
    assert_eq!(detect_generation(&Response::ok(bytes.clone())), EuiccGeneration::Sgp32);
    assert_eq!(
        detect_generation(&Response::ok(hex("BF5502 A000"))),
        EuiccGeneration::Sgp32
    );
    // An SGP.22 ISD-R refuses the unknown tag, or answers with something else.
    for refusal in [StatusWord(0x6A88), StatusWord(0x6A80), StatusWord(0x6D00)] {
        assert_eq!(detect_generation(&Response::status(refusal)), EuiccGeneration::Sgp22);
    }
    assert_eq!(detect_generation(&Response::ok(hex("BF2200"))), EuiccGeneration::Sgp22);
    assert_eq!(detect_generation(&Response::ok(Vec::new())), EuiccGeneration::Sgp22);
    assert_eq!(
        detect_generation(&Response::new(bytes, StatusWord(0x6F00))),
        EuiccGeneration::Sgp22
    );
    assert_eq!(
        EimConfigurationList::decode(&hex("BF55 04 A002 3000")),
        Err(DecodeError::Missing {
            tag: tag(0x80),
            parent: tag(0x30)
        })
    );
}

#[test]
fn malformed_requests() {
    for (bytes, expected) in [
        ("BF2100", DecodeError::UnknownRequest { tag: tag(0xBF21) }),
        ("5A00", DecodeError::UnknownRequest { tag: tag(0x5A) }),
        (
            "BF3E00",
            DecodeError::Missing {
                tag: tag(0x5C),
                parent: tag(0xBF3E),
            },
        ),
    ] {
        assert_eq!(Request::decode(&hex(bytes)), Err(expected), "{bytes}");
    }
    assert!(matches!(Request::decode(&hex("BF3E035C01")), Err(DecodeError::Tlv(_))));
    assert!(matches!(Request::decode(&hex("BF22 00 00")), Err(DecodeError::Tlv(_))));
    assert!(matches!(Request::decode(&[]), Err(DecodeError::Tlv(_))));
}

/// Marsaglia's xorshift64: the same pseudo-random bytes on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let Self(state) = self;
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    fn below(&mut self, bound: u64) -> usize {
        usize::try_from(self.next() % bound).unwrap()
    }
}

/// Every decoder on `bytes`; whatever decodes must re-encode to something that decodes the same.
fn decode_everything(bytes: &[u8]) {
    if let Ok(request) = Request::decode(bytes) {
        assert_eq!(Request::decode(&request.encode().unwrap()), Ok(request));
    }
    macro_rules! round_trip {
        ($($ty:ty),*) => {$(
            if let Ok(value) = <$ty>::decode(bytes) {
                assert_eq!(<$ty>::decode(&value.encode().unwrap()), Ok(value));
            }
        )*};
    }
    round_trip!(
        EuiccData,
        EuiccInfo1,
        EuiccInfo2,
        ConfiguredAddresses,
        Rat,
        ProfileInfoList,
        EimConfigurationList
    );
    if let Ok(result) = EnableResult::decode(bytes) {
        assert_eq!(EnableResult::decode(&result.encode()), Ok(result));
    }
    if let Ok(result) = DisableResult::decode(bytes) {
        assert_eq!(DisableResult::decode(&result.encode()), Ok(result));
    }
    let _ = detect_generation(&Response::ok(bytes));
}

#[test]
fn random_and_mutated_bytes_never_panic() {
    let mut rng = XorShift(0x00E5_1A10);
    let seeds: Vec<Vec<u8>> = [
        Request::get_eid().encode().unwrap(),
        two_profiles().encode().unwrap(),
        info2().encode().unwrap(),
        EnableResult::Ok.encode(),
        hex(&format!("BF3111 A00C 5A0A {ICCID_BCD} 810100")),
        hex("BF5508 A006 8004 65696D31"),
    ]
    .into();
    for round in 0..30_000 {
        let bytes = if round % 2 == 0 {
            let len = rng.below(80);
            (0..len).map(|_| rng.next().to_le_bytes()[0]).collect()
        } else {
            // Flip, cut or extend a valid encoding so decoding goes deep before failing.
            let mut bytes = seeds[rng.below(seeds.len() as u64)].clone();
            for _ in 0..=rng.below(3) {
                match rng.below(3) {
                    0 if !bytes.is_empty() => {
                        let at = rng.below(bytes.len() as u64);
                        bytes[at] = rng.next().to_le_bytes()[0];
                    }
                    1 => bytes.truncate(rng.below(bytes.len() as u64 + 1)),
                    _ => bytes.push(rng.next().to_le_bytes()[0]),
                }
            }
            bytes
        };
        decode_everything(&bytes);
    }
}
