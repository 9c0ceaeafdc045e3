//! What the ISD-R says about the eUICC itself: its EID (`GetEuiccData`), `EUICCInfo1` and 2, the
//! configured SM-DP+/SM-DS addresses, and the Rules Authorisation Table.

use aiesim_apdu::tlv::{Tag, TlvError, Writer};

use crate::{
    codec::{
        DecodeError, children, first, fixed, outer, required, t, uint, uint_bytes, unsigned_be, unsigned_be_bytes, utf8,
    },
    types::{BitString, Eid, Version},
};

pub(crate) const GET_EUICC_DATA: Tag = t(0xBF3E);
pub(crate) const EUICC_INFO1: Tag = t(0xBF20);
pub(crate) const EUICC_INFO2: Tag = t(0xBF22);
pub(crate) const CONFIGURED_ADDRESSES: Tag = t(0xBF3C);
pub(crate) const GET_RAT: Tag = t(0xBF43);
const EID: Tag = t(0x5A);
const PROFILE_VERSION: Tag = t(0x81);
const SVN: Tag = t(0x82);
const FIRMWARE: Tag = t(0x83);
const EXT_CARD_RESOURCE: Tag = t(0x84);
const UICC_CAPABILITY: Tag = t(0x85);
const JAVACARD_VERSION: Tag = t(0x86);
const GLOBALPLATFORM_VERSION: Tag = t(0x87);
const RSP_CAPABILITY: Tag = t(0x88);
const CI_PKID_VERIFICATION: Tag = t(0xA9);
const CI_PKID_SIGNING: Tag = t(0xAA);
const EUICC_CATEGORY: Tag = t(0x8B);
const PP_VERSION: Tag = t(0x04);
const SAS_ACCREDITATION: Tag = t(0x0C);
const OCTET_STRING: Tag = t(0x04);
const INSTALLED_APPS: Tag = t(0x81);
const FREE_NVM: Tag = t(0x82);
const FREE_VOLATILE: Tag = t(0x83);
const DEFAULT_DP: Tag = t(0x80);
const ROOT_DS: Tag = t(0x81);
const RAT_LIST: Tag = t(0xA0);
const SEQUENCE: Tag = t(0x30);
const PPR_IDS: Tag = t(0x80);
const ALLOWED_OPERATORS: Tag = t(0xA1);
const PPR_FLAGS: Tag = t(0x82);
const MCC_MNC: Tag = t(0x80);
const GID1: Tag = t(0x81);
const GID2: Tag = t(0x82);

/// The answer to `GetEuiccData` with tag list `5A`: `BF3E { 5A eid }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EuiccData {
    /// The eUICC's identifier.
    pub eid: Eid,
}

impl EuiccData {
    /// Encodes the response, as the simulated ISD-R sends it.
    pub fn encode(&self) -> Result<Vec<u8>, TlvError> {
        let Self { eid } = self;
        let mut w = Writer::new();
        w.put_constructed(GET_EUICC_DATA, |r| r.put(EID, &eid.0).map(drop))?;
        Ok(w.into_bytes())
    }

    /// Decodes the response.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let outer = outer(bytes, GET_EUICC_DATA)?;
        let fields = children(outer.value)?;
        let eid = fixed(required(&fields, EID, GET_EUICC_DATA)?, "16 bytes")?;
        Ok(Self { eid: Eid(eid) })
    }
}

/// Subject key identifiers of eSIM CA public keys, as `A9`/`AA` list them.
pub type PkIdList = Vec<Vec<u8>>;

fn decode_pkids(field: Option<aiesim_apdu::tlv::Tlv<'_>>) -> Result<PkIdList, DecodeError> {
    let Some(field) = field else { return Ok(Vec::new()) };
    children(field.value)?
        .into_iter()
        .filter(|id| id.tag == OCTET_STRING)
        .map(|id| Ok(id.value.to_vec()))
        .collect()
}

fn put_pkids(w: &mut Writer, tag: Tag, ids: &PkIdList) -> Result<(), TlvError> {
    w.put_constructed(tag, |list| {
        ids.iter().try_for_each(|id| list.put(OCTET_STRING, id).map(drop))
    })?;
    Ok(())
}

fn version(field: aiesim_apdu::tlv::Tlv<'_>) -> Result<Version, DecodeError> {
    fixed::<3>(field, "3 bytes").map(Version::from)
}

/// `EUICCInfo1` (`BF20`): the SVN and the CI keys the eUICC verifies and signs with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EuiccInfo1 {
    /// The SGP.22 version the eUICC implements.
    pub svn: Version,
    /// CI key identifiers for verifying SM-DP+ certificates.
    pub ci_pkid_verification: PkIdList,
    /// CI key identifiers of the eUICC's own certificate chains.
    pub ci_pkid_signing: PkIdList,
}

impl EuiccInfo1 {
    /// Encodes the response.
    pub fn encode(&self) -> Result<Vec<u8>, TlvError> {
        let Self {
            svn,
            ci_pkid_verification,
            ci_pkid_signing,
        } = self;
        let mut w = Writer::new();
        w.put_constructed(EUICC_INFO1, |info| {
            info.put(SVN, &svn.to_bytes())?;
            put_pkids(info, CI_PKID_VERIFICATION, ci_pkid_verification)?;
            put_pkids(info, CI_PKID_SIGNING, ci_pkid_signing)
        })?;
        Ok(w.into_bytes())
    }

    /// Decodes the response; fields this crate does not know are skipped.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let outer = outer(bytes, EUICC_INFO1)?;
        let fields = children(outer.value)?;
        Ok(Self {
            svn: version(required(&fields, SVN, EUICC_INFO1)?)?,
            ci_pkid_verification: decode_pkids(first(&fields, CI_PKID_VERIFICATION))?,
            ci_pkid_signing: decode_pkids(first(&fields, CI_PKID_SIGNING))?,
        })
    }
}

/// ETSI TS 102 226's extended card resource information inside `EUICCInfo2`'s `84`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ExtCardResource {
    /// How many applications are installed (`81`).
    pub installed_applications: u64,
    /// Free non-volatile memory in bytes (`82`).
    pub free_nvm: u64,
    /// Free volatile memory in bytes (`83`).
    pub free_volatile: u64,
}

impl ExtCardResource {
    fn decode(content: &[u8]) -> Result<Self, DecodeError> {
        let fields = children(content)?;
        let number = |tag| first(&fields, tag).map_or(Ok(0), unsigned_be);
        Ok(Self {
            installed_applications: number(INSTALLED_APPS)?,
            free_nvm: number(FREE_NVM)?,
            free_volatile: number(FREE_VOLATILE)?,
        })
    }

    fn encode(&self) -> Result<Vec<u8>, TlvError> {
        let Self {
            installed_applications,
            free_nvm,
            free_volatile,
        } = *self;
        let mut w = Writer::new();
        w.put(INSTALLED_APPS, &unsigned_be_bytes(installed_applications))?
            .put(FREE_NVM, &unsigned_be_bytes(free_nvm))?
            .put(FREE_VOLATILE, &unsigned_be_bytes(free_volatile))?;
        Ok(w.into_bytes())
    }
}

/// `EUICCInfo2` (`BF22`), the fields the daemon reports; unknown fields are skipped on decode.
///
/// The three versions are required; everything else a card may leave out reads as `None` or
/// an empty list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EuiccInfo2 {
    /// `81`: the highest profile package version supported.
    pub profile_version: Version,
    /// `82`: the SGP.22 version implemented.
    pub svn: Version,
    /// `83`: the eUICC firmware version.
    pub firmware_version: Version,
    /// `84`: installed applications and free memory.
    pub ext_card_resource: Option<ExtCardResource>,
    /// `85`: `UICCCapability` bits (usimSupport is bit 1, javacard bit 14, ...).
    pub uicc_capability: Option<BitString>,
    /// `86`: the Java Card version.
    pub javacard_version: Option<Version>,
    /// `87`: the `GlobalPlatform` version.
    pub globalplatform_version: Option<Version>,
    /// `88`: `RspCapability` bits.
    pub rsp_capability: Option<BitString>,
    /// `A9`: CI keys for verification.
    pub ci_pkid_verification: PkIdList,
    /// `AA`: CI keys for signing.
    pub ci_pkid_signing: PkIdList,
    /// `8B`: basic (1), medium (2) or contactless (3).
    pub euicc_category: Option<u64>,
    /// `04`: the protection profile version.
    pub pp_version: Option<Version>,
    /// `0C`: the SAS accreditation number of the eUICC's production site.
    pub sas_accreditation_number: Option<String>,
}

impl EuiccInfo2 {
    /// Encodes the response, fields in SGP.22 order.
    pub fn encode(&self) -> Result<Vec<u8>, TlvError> {
        let Self {
            profile_version,
            svn,
            firmware_version,
            ext_card_resource,
            uicc_capability,
            javacard_version,
            globalplatform_version,
            rsp_capability,
            ci_pkid_verification,
            ci_pkid_signing,
            euicc_category,
            pp_version,
            sas_accreditation_number,
        } = self;
        let mut w = Writer::new();
        w.put_constructed(EUICC_INFO2, |info| {
            info.put(PROFILE_VERSION, &profile_version.to_bytes())?
                .put(SVN, &svn.to_bytes())?
                .put(FIRMWARE, &firmware_version.to_bytes())?;
            if let Some(resource) = ext_card_resource {
                info.put(EXT_CARD_RESOURCE, &resource.encode()?)?;
            }
            if let Some(bits) = uicc_capability {
                info.put(UICC_CAPABILITY, &bits.to_content())?;
            }
            if let Some(version) = javacard_version {
                info.put(JAVACARD_VERSION, &version.to_bytes())?;
            }
            if let Some(version) = globalplatform_version {
                info.put(GLOBALPLATFORM_VERSION, &version.to_bytes())?;
            }
            if let Some(bits) = rsp_capability {
                info.put(RSP_CAPABILITY, &bits.to_content())?;
            }
            put_pkids(info, CI_PKID_VERIFICATION, ci_pkid_verification)?;
            put_pkids(info, CI_PKID_SIGNING, ci_pkid_signing)?;
            if let Some(category) = euicc_category {
                info.put(EUICC_CATEGORY, &uint_bytes(*category))?;
            }
            if let Some(version) = pp_version {
                info.put(PP_VERSION, &version.to_bytes())?;
            }
            if let Some(number) = sas_accreditation_number {
                info.put(SAS_ACCREDITATION, number.as_bytes())?;
            }
            Ok(())
        })?;
        Ok(w.into_bytes())
    }

    /// Decodes the response.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let outer = outer(bytes, EUICC_INFO2)?;
        let fields = children(outer.value)?;
        let optional_version = |tag| first(&fields, tag).map(version).transpose();
        let bits = |tag| {
            first(&fields, tag)
                .map(|field| {
                    BitString::from_content(field.value).ok_or(DecodeError::Length {
                        tag,
                        len: field.value.len(),
                        expected: "an unused-bits count of 0 to 7 and the bits",
                    })
                })
                .transpose()
        };
        Ok(Self {
            profile_version: version(required(&fields, PROFILE_VERSION, EUICC_INFO2)?)?,
            svn: version(required(&fields, SVN, EUICC_INFO2)?)?,
            firmware_version: version(required(&fields, FIRMWARE, EUICC_INFO2)?)?,
            ext_card_resource: first(&fields, EXT_CARD_RESOURCE)
                .map(|field| ExtCardResource::decode(field.value))
                .transpose()?,
            uicc_capability: bits(UICC_CAPABILITY)?,
            javacard_version: optional_version(JAVACARD_VERSION)?,
            globalplatform_version: optional_version(GLOBALPLATFORM_VERSION)?,
            rsp_capability: bits(RSP_CAPABILITY)?,
            ci_pkid_verification: decode_pkids(first(&fields, CI_PKID_VERIFICATION))?,
            ci_pkid_signing: decode_pkids(first(&fields, CI_PKID_SIGNING))?,
            euicc_category: first(&fields, EUICC_CATEGORY).map(uint).transpose()?,
            pp_version: optional_version(PP_VERSION)?,
            sas_accreditation_number: first(&fields, SAS_ACCREDITATION).map(utf8).transpose()?,
        })
    }
}

/// `EuiccConfiguredAddresses` (`BF3C`): where the eUICC looks for profiles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ConfiguredAddresses {
    /// `80`: the default SM-DP+ address, if one is set.
    pub default_dp_address: Option<String>,
    /// `81`: the root SM-DS address.
    pub root_ds_address: Option<String>,
}

impl ConfiguredAddresses {
    /// Encodes the response.
    pub fn encode(&self) -> Result<Vec<u8>, TlvError> {
        let Self {
            default_dp_address,
            root_ds_address,
        } = self;
        let mut w = Writer::new();
        w.put_constructed(CONFIGURED_ADDRESSES, |r| {
            if let Some(dp) = default_dp_address {
                r.put(DEFAULT_DP, dp.as_bytes())?;
            }
            if let Some(ds) = root_ds_address {
                r.put(ROOT_DS, ds.as_bytes())?;
            }
            Ok(())
        })?;
        Ok(w.into_bytes())
    }

    /// Decodes the response; SGP.22 makes the root SM-DS mandatory, but a missing one is tolerated.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let outer = outer(bytes, CONFIGURED_ADDRESSES)?;
        let fields = children(outer.value)?;
        Ok(Self {
            default_dp_address: first(&fields, DEFAULT_DP).map(utf8).transpose()?,
            root_ds_address: first(&fields, ROOT_DS).map(utf8).transpose()?,
        })
    }
}

/// An operator a profile policy rule allows (`OperatorId`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct OperatorId {
    /// `80`: MCC and MNC, three bytes of swapped BCD.
    pub mcc_mnc: Vec<u8>,
    /// `81`: group identifier 1.
    pub gid1: Option<Vec<u8>>,
    /// `82`: group identifier 2.
    pub gid2: Option<Vec<u8>>,
}

/// One rule of the Rules Authorisation Table (`ProfilePolicyAuthorisationRule`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RatRule {
    /// `80`: which PPRs the rule covers.
    pub ppr_ids: BitString,
    /// `A1`: the operators allowed to set them.
    pub allowed_operators: Vec<OperatorId>,
    /// `82`: consentRequired is bit 0.
    pub ppr_flags: BitString,
}

/// `GetRAT`'s answer (`BF43 { A0 { 30 rule ... } }`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Rat {
    /// The rules in card order.
    pub rules: Vec<RatRule>,
}

impl Rat {
    /// Encodes the response.
    pub fn encode(&self) -> Result<Vec<u8>, TlvError> {
        let Self { rules } = self;
        let mut w = Writer::new();
        w.put_constructed(GET_RAT, |r| {
            r.put_constructed(RAT_LIST, |list| {
                rules.iter().try_for_each(|rule| {
                    let RatRule {
                        ppr_ids,
                        allowed_operators,
                        ppr_flags,
                    } = rule;
                    list.put_constructed(SEQUENCE, |seq| {
                        seq.put(PPR_IDS, &ppr_ids.to_content())?;
                        seq.put_constructed(ALLOWED_OPERATORS, |ops| {
                            allowed_operators.iter().try_for_each(|op| {
                                let OperatorId { mcc_mnc, gid1, gid2 } = op;
                                ops.put_constructed(SEQUENCE, |o| {
                                    o.put(MCC_MNC, mcc_mnc)?;
                                    if let Some(gid1) = gid1 {
                                        o.put(GID1, gid1)?;
                                    }
                                    if let Some(gid2) = gid2 {
                                        o.put(GID2, gid2)?;
                                    }
                                    Ok(())
                                })
                                .map(drop)
                            })
                        })?;
                        seq.put(PPR_FLAGS, &ppr_flags.to_content()).map(drop)
                    })
                    .map(drop)
                })
            })
            .map(drop)
        })?;
        Ok(w.into_bytes())
    }

    /// Decodes the response.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let outer = outer(bytes, GET_RAT)?;
        let fields = children(outer.value)?;
        let Some(list) = first(&fields, RAT_LIST) else {
            return Ok(Self::default());
        };
        let bits = |field: Option<aiesim_apdu::tlv::Tlv<'_>>, tag| match field {
            None => Ok(BitString::default()),
            Some(field) => BitString::from_content(field.value).ok_or(DecodeError::Length {
                tag,
                len: field.value.len(),
                expected: "an unused-bits count of 0 to 7 and the bits",
            }),
        };
        let mut rules = Vec::new();
        for rule in children(list.value)? {
            let rule_fields = children(rule.value)?;
            let mut allowed_operators = Vec::new();
            if let Some(ops) = first(&rule_fields, ALLOWED_OPERATORS) {
                for op in children(ops.value)? {
                    let op_fields = children(op.value)?;
                    allowed_operators.push(OperatorId {
                        mcc_mnc: required(&op_fields, MCC_MNC, op.tag)?.value.to_vec(),
                        gid1: first(&op_fields, GID1).map(|f| f.value.to_vec()),
                        gid2: first(&op_fields, GID2).map(|f| f.value.to_vec()),
                    });
                }
            }
            rules.push(RatRule {
                ppr_ids: bits(first(&rule_fields, PPR_IDS), PPR_IDS)?,
                allowed_operators,
                ppr_flags: bits(first(&rule_fields, PPR_FLAGS), PPR_FLAGS)?,
            });
        }
        Ok(Self { rules })
    }
}
