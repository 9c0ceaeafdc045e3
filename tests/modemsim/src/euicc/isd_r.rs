//! The ISD-R: ES10 functions carried in STORE DATA chains, answered with two profiles that can
//! be enabled and disabled, and SGP.32's `GetEimConfigurationData` when the card is one.

use aiesim_apdu::Command;
use aiesim_es10::{
    Aid, BitString, ConfiguredAddresses, DecodeError, DisableResult, EimConfiguration, EimConfigurationList,
    EnableResult, EuiccData, EuiccInfo1, EuiccInfo2, ExtCardResource, Iccid, ProfileClass, ProfileId, ProfileInfo,
    ProfileInfoList, ProfileInfoListRequest, ProfileOperation, ProfileState, Rat, Request, SearchCriteria, Version,
};

use super::{Enabled, Error, Outbox, Refresh, fci, is_get_response, status};
use crate::world::{Applet, ISD_R_AID, sw};

/// STORE DATA P1: more blocks follow / the last block (SGP.22 §5.7.2).
const MORE_BLOCKS: u8 = 0x11;
const LAST_BLOCK: u8 = 0x91;
/// The largest ES10 request the card reassembles; bound packages are not simulated.
const MAX_PAYLOAD: usize = 16 * 1024;
/// What an SGP.22 eUICC answers for an ES10 function it does not implement.
const FUNCTION_NOT_SUPPORTED: u16 = 0x6A88;
/// The GSMA test CI's key identifier (SGP.26), which test eUICCs list.
const TEST_CI_PKID: [u8; 20] = [
    0xF5, 0x41, 0x72, 0xBD, 0xF9, 0x8A, 0x95, 0xD6, 0x5C, 0xBE, 0xB8, 0x8A, 0x38, 0xA1, 0xC1, 0x1D, 0x80, 0x0A, 0x85,
    0xC3,
];
/// The second profile's ICCID, a test profile beside the operational one.
const TEST_PROFILE_ICCID: &str = "8988211000000000025";

pub struct IsdR {
    eid: [u8; 16],
    sgp32: bool,
    profiles: Vec<ProfileInfo>,
    refresh: Refresh,
    /// The STORE DATA blocks received so far and the number the next must carry in P2.
    chain: Vec<u8>,
    next_block: u8,
    outbox: Outbox,
}

/// An ISD-P AID: the ISD-R's prefix, then the profile's number (`…89000010 00`, `…11 00`).
fn isdp_aid(number: u8) -> Option<Aid> {
    let mut aid = ISD_R_AID;
    aid[14] = number;
    Aid::new(&aid).ok()
}

impl IsdR {
    pub fn new(eid: [u8; 16], iccid: &str, sgp32: bool, refresh: Refresh) -> Result<Self, Error> {
        let operational = Iccid::new(iccid).map_err(|_| Error::Iccid(iccid.to_owned()))?;
        let test = Iccid::new(TEST_PROFILE_ICCID).map_err(|_| Error::Iccid(TEST_PROFILE_ICCID.to_owned()))?;
        let profile = |iccid, aid, state, name: &str, class| ProfileInfo {
            iccid: Some(iccid),
            isdp_aid: isdp_aid(aid),
            state: Some(state),
            nickname: None,
            service_provider_name: Some("aiesim".into()),
            profile_name: Some(name.into()),
            icon_type: None,
            icon: None,
            class: Some(class),
        };
        Ok(Self {
            eid,
            sgp32,
            profiles: vec![
                profile(
                    operational,
                    0x10,
                    ProfileState::Enabled,
                    "aiesim AI-eSIM",
                    ProfileClass::Operational,
                ),
                profile(test, 0x11, ProfileState::Disabled, "aiesim test", ProfileClass::Test),
            ],
            refresh,
            chain: Vec::new(),
            next_block: 0,
            outbox: Outbox::default(),
        })
    }

    /// One STORE DATA block; the last one runs the reassembled request.
    fn store_data(&mut self, command: &Command) -> Vec<u8> {
        let Command { p1, p2, data, .. } = command;
        if *p2 == 0 {
            self.chain.clear();
            self.next_block = 0;
        }
        if *p2 != self.next_block || !matches!(*p1, MORE_BLOCKS | LAST_BLOCK) {
            self.chain.clear();
            self.next_block = 0;
            return status(sw::WRONG_P1_P2);
        }
        if self.chain.len() + data.len() > MAX_PAYLOAD {
            self.chain.clear();
            self.next_block = 0;
            return status(0x6A84);
        }
        self.chain.extend_from_slice(data);
        if *p1 == MORE_BLOCKS {
            self.next_block = self.next_block.wrapping_add(1);
            return status(sw::OK);
        }
        let payload = std::mem::take(&mut self.chain);
        self.next_block = 0;
        match Request::decode(&payload) {
            Ok(request) => match self.run(request) {
                Ok(Some(response)) => self.outbox.send(response),
                Ok(None) => status(FUNCTION_NOT_SUPPORTED),
                Err(_) => status(0x6F00),
            },
            Err(DecodeError::UnknownRequest { .. }) => status(FUNCTION_NOT_SUPPORTED),
            Err(_) => status(sw::INCORRECT_DATA),
        }
    }

    /// The response to one ES10 function; `None` for one this card does not implement.
    fn run(&mut self, request: Request) -> Result<Option<Vec<u8>>, aiesim_apdu::tlv::TlvError> {
        let response = match request {
            Request::GetEuiccData { tag_list } => {
                if tag_list.contains(&0x5A) {
                    EuiccData {
                        eid: aiesim_es10::Eid(self.eid),
                    }
                    .encode()?
                } else {
                    // Nothing else of GetEuiccData is simulated: an empty answer.
                    vec![0xBF, 0x3E, 0x00]
                }
            }
            Request::GetEuiccInfo1 => EuiccInfo1 {
                svn: Version::new(2, 2, 2),
                ci_pkid_verification: vec![TEST_CI_PKID.to_vec()],
                ci_pkid_signing: vec![TEST_CI_PKID.to_vec()],
            }
            .encode()?,
            Request::GetEuiccInfo2 => self.euicc_info2().encode()?,
            Request::GetConfiguredAddresses => ConfiguredAddresses {
                default_dp_address: Some("smdpp.aiesim.test".into()),
                root_ds_address: Some("lpa.ds.gsma.com".into()),
            }
            .encode()?,
            Request::GetRat => Rat::default().encode()?,
            Request::ProfileInfoList(request) => self.profile_list(&request).encode()?,
            Request::EnableProfile(operation) => self.enable(&operation).encode(),
            Request::DisableProfile(operation) => self.disable(&operation).encode(),
            Request::GetEimConfigurationData { eim_id } => {
                if !self.sgp32 {
                    return Ok(None);
                }
                let eim = EimConfiguration {
                    eim_id: "aiesim-eim".into(),
                    eim_fqdn: Some("eim.aiesim.test".into()),
                    eim_id_type: Some(2),
                    counter_value: Some(0),
                    association_token: None,
                };
                let eims = if eim_id.is_none_or(|id| id == eim.eim_id) {
                    vec![eim]
                } else {
                    Vec::new()
                };
                EimConfigurationList { eims }.encode()?
            }
        };
        Ok(Some(response))
    }

    fn euicc_info2(&self) -> EuiccInfo2 {
        let installed = u64::try_from(self.profiles.len()).unwrap_or(0);
        EuiccInfo2 {
            profile_version: Version::new(2, 3, 1),
            svn: Version::new(2, 2, 2),
            firmware_version: Version::new(1, 0, 0),
            ext_card_resource: Some(ExtCardResource {
                installed_applications: installed,
                free_nvm: 512 * 1024,
                free_volatile: 8 * 1024,
            }),
            // usimSupport, isimSupport, csimSupport, akaMilenage, javacard, gba-authentication-usim.
            uicc_capability: Some(BitString::from_bits(&[1, 2, 3, 5, 14, 17])),
            javacard_version: Some(Version::new(3, 0, 5)),
            globalplatform_version: Some(Version::new(2, 3, 1)),
            // additionalProfile, crlSupport, testProfileSupport.
            rsp_capability: Some(BitString::from_bits(&[0, 1, 3])),
            ci_pkid_verification: vec![TEST_CI_PKID.to_vec()],
            ci_pkid_signing: vec![TEST_CI_PKID.to_vec()],
            euicc_category: Some(2),
            pp_version: Some(Version::new(1, 0, 0)),
            sas_accreditation_number: Some("AIESIM-SIM-01".into()),
        }
    }

    fn profile_list(&self, request: &ProfileInfoListRequest) -> ProfileInfoList {
        let ProfileInfoListRequest { search, tag_list } = request;
        let Some(tags) = tag_list.as_deref().map(tags) else {
            return ProfileInfoList::Ok(self.matching(search.as_ref()).cloned().collect());
        };
        let Some(tags) = tags else {
            return ProfileInfoList::Error(aiesim_es10::ProfileInfoListError::IncorrectInputValues);
        };
        ProfileInfoList::Ok(
            self.matching(search.as_ref())
                .map(|profile| only(profile, &tags))
                .collect(),
        )
    }

    fn matching<'a>(&'a self, search: Option<&'a SearchCriteria>) -> impl Iterator<Item = &'a ProfileInfo> {
        self.profiles.iter().filter(move |profile| match search {
            None => true,
            Some(SearchCriteria::Iccid(iccid)) => profile.iccid.as_ref() == Some(iccid),
            Some(SearchCriteria::IsdpAid(aid)) => profile.isdp_aid.as_ref() == Some(aid),
            Some(SearchCriteria::ProfileClass(class)) => profile.class == Some(*class),
        })
    }

    fn find(&self, id: &ProfileId) -> Option<usize> {
        self.profiles.iter().position(|profile| match id {
            ProfileId::Iccid(iccid) => profile.iccid.as_ref() == Some(iccid),
            ProfileId::IsdpAid(aid) => profile.isdp_aid.as_ref() == Some(aid),
        })
    }

    fn enable(&mut self, operation: &ProfileOperation) -> EnableResult {
        let ProfileOperation { id, refresh: _ } = operation;
        let Some(target) = self.find(id) else {
            return EnableResult::IccidOrAidNotFound;
        };
        if self.profiles[target].state == Some(ProfileState::Enabled) {
            return EnableResult::ProfileNotInDisabledState;
        }
        // One profile is enabled at a time: enabling one disables the other.
        for (index, profile) in self.profiles.iter_mut().enumerate() {
            profile.state = Some(if index == target {
                ProfileState::Enabled
            } else {
                ProfileState::Disabled
            });
        }
        let enabled = self.profiles[target].iccid.as_ref().map(ToString::to_string);
        self.refresh.raise(enabled.map_or(Enabled::Nothing, Enabled::Profile));
        EnableResult::Ok
    }

    fn disable(&mut self, operation: &ProfileOperation) -> DisableResult {
        let ProfileOperation { id, refresh: _ } = operation;
        let Some(target) = self.find(id) else {
            return DisableResult::IccidOrAidNotFound;
        };
        if self.profiles[target].state != Some(ProfileState::Enabled) {
            return DisableResult::ProfileNotInEnabledState;
        }
        self.profiles[target].state = Some(ProfileState::Disabled);
        self.refresh.raise(Enabled::Nothing);
        DisableResult::Ok
    }
}

/// The tags of a `5C` tag list (one to three bytes each, BER rules); `None` if it is malformed.
fn tags(list: &[u8]) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    let mut rest = list;
    while let [first, tail @ ..] = rest {
        let mut tag = u32::from(*first);
        rest = tail;
        if first & 0x1F == 0x1F {
            loop {
                let [next, tail @ ..] = rest else { return None };
                tag = tag << 8 | u32::from(*next);
                rest = tail;
                if next & 0x80 == 0 {
                    break;
                }
                if tag > 0xFF_FFFF {
                    return None;
                }
            }
        }
        out.push(tag);
    }
    Some(out)
}

/// `profile` with only the fields a tag list asks for.
fn only(profile: &ProfileInfo, tags: &[u32]) -> ProfileInfo {
    let ProfileInfo {
        iccid,
        isdp_aid,
        state,
        nickname,
        service_provider_name,
        profile_name,
        icon_type,
        icon,
        class,
    } = profile;
    let keep = |tag: u32| tags.contains(&tag);
    ProfileInfo {
        iccid: iccid.clone().filter(|_| keep(0x5A)),
        isdp_aid: isdp_aid.clone().filter(|_| keep(0x4F)),
        state: state.filter(|_| keep(0x9F70)),
        nickname: nickname.clone().filter(|_| keep(0x90)),
        service_provider_name: service_provider_name.clone().filter(|_| keep(0x91)),
        profile_name: profile_name.clone().filter(|_| keep(0x92)),
        icon_type: icon_type.filter(|_| keep(0x93)),
        icon: icon.clone().filter(|_| keep(0x94)),
        class: class.filter(|_| keep(0x95)),
    }
}

impl Applet for IsdR {
    fn name(&self) -> &'static str {
        "isd-r"
    }

    fn aid(&self) -> &[u8] {
        &ISD_R_AID
    }

    fn select(&mut self) -> Vec<u8> {
        self.chain.clear();
        self.next_block = 0;
        self.outbox.clear();
        fci(&ISD_R_AID)
    }

    fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        let Ok(command) = Command::decode(apdu) else {
            return status(sw::WRONG_LENGTH);
        };
        if is_get_response(&command) {
            let le = command.le.map_or(256, |le| le.get() as usize);
            return self.outbox.get_response(le);
        }
        self.outbox.clear();
        match command.ins {
            _ if command.cla & 0x80 == 0 => status(sw::CLA_NOT_SUPPORTED),
            aiesim_apdu::ins::STORE_DATA => self.store_data(&command),
            _ => status(sw::INS_NOT_SUPPORTED),
        }
    }
}

#[cfg(test)]
mod tests {
    use aiesim_apdu::{Response, StatusWord};
    use aiesim_es10::{EuiccGeneration, detect_generation};

    use super::*;
    use crate::euicc::{
        Config,
        test_support::{Card, configured, world},
    };

    fn es10(card: &mut Card, request: &Request) -> Response {
        card.store_data(&request.encode().unwrap())
    }

    fn by_iccid(iccid: &str, refresh: bool) -> ProfileOperation {
        ProfileOperation {
            id: ProfileId::Iccid(Iccid::new(iccid).unwrap()),
            refresh,
        }
    }

    fn states(card: &mut Card) -> Vec<(String, ProfileState)> {
        let response = es10(card, &Request::ProfileInfoList(ProfileInfoListRequest::default()));
        assert_eq!(response.sw, StatusWord::OK);
        let ProfileInfoList::Ok(profiles) = ProfileInfoList::decode(&response.data).unwrap() else {
            panic!("the profile list failed");
        };
        profiles
            .into_iter()
            .map(|p| (p.iccid.unwrap().as_str().to_owned(), p.state.unwrap()))
            .collect()
    }

    #[test]
    fn get_eid_and_the_card_descriptions() {
        let mut world = world();
        let eid = world.uicc.eid;
        let mut card = Card::open(&mut world, &ISD_R_AID);
        let response = es10(&mut card, &Request::get_eid());
        assert_eq!(EuiccData::decode(&response.data).unwrap().eid.0, eid);

        let info1 = EuiccInfo1::decode(&es10(&mut card, &Request::GetEuiccInfo1).data).unwrap();
        assert_eq!(info1.svn, Version::new(2, 2, 2));
        assert_eq!(info1.ci_pkid_verification, [TEST_CI_PKID.to_vec()]);
        let info2 = EuiccInfo2::decode(&es10(&mut card, &Request::GetEuiccInfo2).data).unwrap();
        assert!(info2.uicc_capability.unwrap().get(14), "javacard is set");
        assert_eq!(info2.ext_card_resource.unwrap().installed_applications, 2);
        let addresses = ConfiguredAddresses::decode(&es10(&mut card, &Request::GetConfiguredAddresses).data).unwrap();
        assert_eq!(addresses.root_ds_address.as_deref(), Some("lpa.ds.gsma.com"));
        assert_eq!(
            Rat::decode(&es10(&mut card, &Request::GetRat).data).unwrap(),
            Rat::default()
        );
    }

    #[test]
    fn profiles_list_enable_and_disable_with_their_results() {
        let mut world = world();
        let iccid = world.uicc.iccid.clone();
        let mut card = Card::open(&mut world, &ISD_R_AID);
        assert_eq!(
            states(&mut card),
            [
                (iccid.clone(), ProfileState::Enabled),
                (TEST_PROFILE_ICCID.to_owned(), ProfileState::Disabled)
            ]
        );

        let enable = |card: &mut Card, iccid| {
            EnableResult::decode(&es10(card, &Request::EnableProfile(by_iccid(iccid, false))).data).unwrap()
        };
        let disable = |card: &mut Card, iccid| {
            DisableResult::decode(&es10(card, &Request::DisableProfile(by_iccid(iccid, true))).data).unwrap()
        };
        assert_eq!(enable(&mut card, &iccid), EnableResult::ProfileNotInDisabledState);
        assert_eq!(
            enable(&mut card, "8988211000000000099"),
            EnableResult::IccidOrAidNotFound
        );
        assert_eq!(
            disable(&mut card, TEST_PROFILE_ICCID),
            DisableResult::ProfileNotInEnabledState
        );
        assert_eq!(
            disable(&mut card, "8988211000000000099"),
            DisableResult::IccidOrAidNotFound
        );
        assert!(!card.world().take_changes().card, "refusals refresh nothing");

        assert_eq!(enable(&mut card, TEST_PROFILE_ICCID), EnableResult::Ok);
        assert_eq!(
            states(&mut card),
            [
                (iccid.clone(), ProfileState::Disabled),
                (TEST_PROFILE_ICCID.to_owned(), ProfileState::Enabled)
            ]
        );
        assert!(card.world().take_changes().card, "a profile switch is a card change");
        assert!(!card.world().take_changes().card);
        assert_eq!(
            card.world().uicc.iccid,
            TEST_PROFILE_ICCID,
            "the modem reads the new ICCID"
        );

        assert_eq!(disable(&mut card, TEST_PROFILE_ICCID), DisableResult::Ok);
        assert!(card.world().take_changes().card);
        assert_eq!(
            card.world().uicc.iccid,
            TEST_PROFILE_ICCID,
            "no other profile is enabled"
        );
        // By ISD-P AID, the other alternative of the choice.
        let by_aid = ProfileOperation {
            id: ProfileId::IsdpAid(isdp_aid(0x10).unwrap()),
            refresh: false,
        };
        let result = es10(&mut card, &Request::EnableProfile(by_aid)).data;
        assert_eq!(EnableResult::decode(&result).unwrap(), EnableResult::Ok);
        assert_eq!(states(&mut card)[0], (iccid, ProfileState::Enabled));
    }

    #[test]
    fn profile_lists_honour_search_criteria_and_tag_lists() {
        let mut world = world();
        let mut card = Card::open(&mut world, &ISD_R_AID);
        let request = Request::ProfileInfoList(ProfileInfoListRequest {
            search: Some(SearchCriteria::ProfileClass(ProfileClass::Test)),
            tag_list: Some(vec![0x5A, 0x9F, 0x70]),
        });
        let ProfileInfoList::Ok(profiles) = ProfileInfoList::decode(&es10(&mut card, &request).data).unwrap() else {
            panic!("the profile list failed");
        };
        assert_eq!(
            profiles,
            [ProfileInfo {
                iccid: Some(Iccid::new(TEST_PROFILE_ICCID).unwrap()),
                state: Some(ProfileState::Disabled),
                ..ProfileInfo::default()
            }]
        );
    }

    #[test]
    fn store_data_chains_are_reassembled() {
        let mut world = world();
        let mut card = Card::open(&mut world, &ISD_R_AID);
        // A search by ICCID padded with a long tag list of repeats spans three blocks.
        let mut tag_list = vec![0x5A; 600];
        tag_list.extend_from_slice(&[0x9F, 0x70]);
        let request = Request::ProfileInfoList(ProfileInfoListRequest {
            search: Some(SearchCriteria::Iccid(Iccid::new(TEST_PROFILE_ICCID).unwrap())),
            tag_list: Some(tag_list),
        });
        let payload = request.encode().unwrap();
        assert!(payload.len() > 2 * aiesim_apdu::MAX_STORE_DATA_BLOCK);
        let response = card.store_data(&payload);
        assert_eq!(response.sw, StatusWord::OK);
        let ProfileInfoList::Ok(profiles) = ProfileInfoList::decode(&response.data).unwrap() else {
            panic!("the profile list failed");
        };
        assert_eq!(profiles.len(), 1);
        assert_eq!(profiles[0].state, Some(ProfileState::Disabled));
        assert_eq!(profiles[0].profile_name, None, "only the listed tags");

        // A block out of order breaks the chain.
        let first = Command::new(0x80, 0xE2, MORE_BLOCKS, 0).with_data(&payload[..255]);
        assert_eq!(card.send(&first).sw, StatusWord::OK);
        let skipped = Command::new(0x80, 0xE2, LAST_BLOCK, 2).with_data(&payload[255..300]);
        assert_eq!(card.send(&skipped).sw, StatusWord::INCORRECT_P1_P2);
        assert_eq!(
            card.send(&Command::new(0x00, 0xE2, LAST_BLOCK, 0)).sw,
            StatusWord::CLA_NOT_SUPPORTED
        );
    }

    #[test]
    fn sgp32_is_detected_only_when_switched_on() {
        let mut world = world();
        let mut card = Card::open(&mut world, &ISD_R_AID);
        let request = Request::GetEimConfigurationData { eim_id: None };
        let response = es10(&mut card, &request);
        assert_eq!(detect_generation(&response), EuiccGeneration::Sgp32);
        let list = EimConfigurationList::decode(&response.data).unwrap();
        assert_eq!(list.eims[0].eim_id, "aiesim-eim");

        let mut world = configured(&Config {
            sgp32: false,
            ..Config::default()
        });
        let mut card = Card::open(&mut world, &ISD_R_AID);
        let response = es10(&mut card, &request);
        assert_eq!(response.sw, StatusWord(FUNCTION_NOT_SUPPORTED));
        assert_eq!(detect_generation(&response), EuiccGeneration::Sgp22);
    }
}
