//! The ES10 requests the daemon sends as STORE DATA payloads, and their decoding on the
//! simulated ISD-R.

use aiesim_apdu::tlv::{Tlv, TlvError, Writer};

use crate::{
    codec::{DecodeError, children, first, t, utf8},
    eim::GET_EIM_CONFIGURATION_DATA,
    euicc::{CONFIGURED_ADDRESSES, EUICC_INFO1, EUICC_INFO2, GET_EUICC_DATA, GET_RAT},
    profile::{DISABLE_PROFILE, ENABLE_PROFILE, PROFILE_INFO_LIST, ProfileInfoListRequest, ProfileOperation},
};

const TAG_LIST: aiesim_apdu::tlv::Tag = t(0x5C);
const SEARCH: aiesim_apdu::tlv::Tag = t(0xA0);
const EIM_ID: aiesim_apdu::tlv::Tag = t(0x80);
/// The tag list of `GetEID`: just the EID.
const EID_TAG: u8 = 0x5A;

/// One ES10 request, the STORE DATA payload that [`aiesim_apdu::store_data_chained`] sends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Request {
    /// `BF3E { 5C tags }`; `GetEID` asks for tag list `5A`.
    GetEuiccData {
        /// The tags asked for, concatenated.
        tag_list: Vec<u8>,
    },
    /// `BF20 00`.
    GetEuiccInfo1,
    /// `BF22 00`.
    GetEuiccInfo2,
    /// `BF3C 00`.
    GetConfiguredAddresses,
    /// `BF2D { [A0 criteria] [5C tags] }`.
    ProfileInfoList(ProfileInfoListRequest),
    /// `BF31 { A0 { 5A | 4F } 81 refresh }`.
    EnableProfile(ProfileOperation),
    /// `BF32 { A0 { 5A | 4F } 81 refresh }`.
    DisableProfile(ProfileOperation),
    /// `BF43 00`.
    GetRat,
    /// `BF55 { [A0 { 80 eimId }] }`; only an SGP.32 eUICC answers it.
    GetEimConfigurationData {
        /// Restricts the answer to one eIM.
        eim_id: Option<String>,
    },
}

impl Request {
    /// `GetEID`: `BF3E 03 5C 01 5A`.
    pub fn get_eid() -> Self {
        Self::GetEuiccData {
            tag_list: vec![EID_TAG],
        }
    }

    /// The STORE DATA payload.
    pub fn encode(&self) -> Result<Vec<u8>, TlvError> {
        let mut w = Writer::new();
        match self {
            Self::GetEuiccData { tag_list } => {
                w.put_constructed(GET_EUICC_DATA, |r| r.put(TAG_LIST, tag_list).map(drop))?;
            }
            Self::GetEuiccInfo1 => drop(w.put(EUICC_INFO1, &[])?),
            Self::GetEuiccInfo2 => drop(w.put(EUICC_INFO2, &[])?),
            Self::GetConfiguredAddresses => drop(w.put(CONFIGURED_ADDRESSES, &[])?),
            Self::ProfileInfoList(request) => request.put(&mut w)?,
            Self::EnableProfile(operation) => operation.put(&mut w, ENABLE_PROFILE)?,
            Self::DisableProfile(operation) => operation.put(&mut w, DISABLE_PROFILE)?,
            Self::GetRat => drop(w.put(GET_RAT, &[])?),
            Self::GetEimConfigurationData { eim_id } => {
                w.put_constructed(GET_EIM_CONFIGURATION_DATA, |r| {
                    if let Some(id) = eim_id {
                        r.put_constructed(SEARCH, |s| s.put(EIM_ID, id.as_bytes()).map(drop))?;
                    }
                    Ok(())
                })?;
            }
        }
        Ok(w.into_bytes())
    }

    /// Reads a STORE DATA payload (the chain already joined) as a request.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let outer = Tlv::parse_exact(bytes)?;
        if !outer.tag.is_constructed() {
            return Err(DecodeError::UnknownRequest { tag: outer.tag });
        }
        let fields = children(outer.value)?;
        let tag = outer.tag;
        Ok(match tag {
            GET_EUICC_DATA => Self::GetEuiccData {
                tag_list: crate::codec::required(&fields, TAG_LIST, tag)?.value.to_vec(),
            },
            EUICC_INFO1 => Self::GetEuiccInfo1,
            EUICC_INFO2 => Self::GetEuiccInfo2,
            CONFIGURED_ADDRESSES => Self::GetConfiguredAddresses,
            PROFILE_INFO_LIST => Self::ProfileInfoList(ProfileInfoListRequest::decode_fields(&fields)?),
            ENABLE_PROFILE => Self::EnableProfile(ProfileOperation::decode_fields(&fields, tag)?),
            DISABLE_PROFILE => Self::DisableProfile(ProfileOperation::decode_fields(&fields, tag)?),
            GET_RAT => Self::GetRat,
            GET_EIM_CONFIGURATION_DATA => Self::GetEimConfigurationData {
                eim_id: match first(&fields, SEARCH) {
                    None => None,
                    Some(search) => {
                        let criteria = children(search.value)?;
                        let id = first(&criteria, EIM_ID).ok_or(DecodeError::Choice { tag: search.tag })?;
                        Some(utf8(id)?)
                    }
                },
            },
            _ => return Err(DecodeError::UnknownRequest { tag }),
        })
    }
}
