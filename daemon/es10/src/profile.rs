//! Profiles on the eUICC: `ProfileInfoList` (`BF2D`) with its search criteria and tag list, and
//! `EnableProfile` (`BF31`) / `DisableProfile` (`BF32`) with their result codes.

use aiesim_apdu::tlv::{Tag, Tlv, TlvError, Writer};

use crate::{
    codec::{DecodeError, boolean, children, first, outer, required, small_uint, t, uint_bytes, utf8},
    types::{Aid, Iccid},
};

pub(crate) const PROFILE_INFO_LIST: Tag = t(0xBF2D);
pub(crate) const ENABLE_PROFILE: Tag = t(0xBF31);
pub(crate) const DISABLE_PROFILE: Tag = t(0xBF32);
const ICCID: Tag = t(0x5A);
const ISDP_AID: Tag = t(0x4F);
const STATE: Tag = t(0x9F70);
const NICKNAME: Tag = t(0x90);
const SERVICE_PROVIDER: Tag = t(0x91);
const PROFILE_NAME: Tag = t(0x92);
const ICON_TYPE: Tag = t(0x93);
const ICON: Tag = t(0x94);
const CLASS: Tag = t(0x95);
const PROFILE_INFO: Tag = t(0xE3);
const CHOICE_0: Tag = t(0xA0);
const TAG_LIST: Tag = t(0x5C);
const LIST_OK: Tag = t(0xA0);
/// The ASN.1's AUTOMATIC TAGS make the error alternative `[1]`, so cards send 81.
const LIST_ERROR: Tag = t(0x81);
/// What some simulators send for the error alternative; read, never written.
const LIST_ERROR_ALT: Tag = t(0x80);
const REFRESH_FLAG: Tag = t(0x81);
const RESULT: Tag = t(0x80);

/// Which profile an operation addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProfileId {
    /// By ICCID, `5A`.
    Iccid(Iccid),
    /// By the AID of its ISD-P, `4F`.
    IsdpAid(Aid),
}

impl ProfileId {
    fn put(&self, w: &mut Writer) -> Result<(), TlvError> {
        match self {
            Self::Iccid(iccid) => w.put(ICCID, &iccid.to_bcd()),
            Self::IsdpAid(aid) => w.put(ISDP_AID, aid.as_bytes()),
        }
        .map(drop)
    }

    fn decode(field: Tlv<'_>) -> Result<Self, DecodeError> {
        match children(field.value)?.as_slice() {
            [id] if id.tag == ICCID => Ok(Self::Iccid(iccid(*id)?)),
            [id] if id.tag == ISDP_AID => Ok(Self::IsdpAid(aid(*id)?)),
            _ => Err(DecodeError::Choice { tag: field.tag }),
        }
    }
}

fn iccid(field: Tlv<'_>) -> Result<Iccid, DecodeError> {
    Iccid::from_bcd(field.value).map_err(|source| DecodeError::Id { tag: field.tag, source })
}

fn aid(field: Tlv<'_>) -> Result<Aid, DecodeError> {
    Aid::new(field.value).map_err(|source| DecodeError::Id { tag: field.tag, source })
}

/// A profile's state (`9F70`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProfileState {
    /// 0.
    Disabled,
    /// 1.
    Enabled,
    /// A value SGP.22 does not define, kept so nothing is lost.
    Other(u8),
}

/// A profile's class (`95`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProfileClass {
    /// 0: a test profile.
    Test,
    /// 1: a provisioning profile, for downloading others.
    Provisioning,
    /// 2: an operational profile, the normal case.
    Operational,
    /// A value SGP.22 does not define.
    Other(u8),
}

/// The format of a profile's icon (`93`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IconType {
    /// 0.
    Jpg,
    /// 1.
    Png,
    /// A value SGP.22 does not define.
    Other(u8),
}

macro_rules! code_enum {
    ($name:ident { $($variant:ident = $code:literal),* }) => {
        impl $name {
            /// The enumerated value.
            pub fn code(self) -> u8 {
                match self {
                    $(Self::$variant => $code,)*
                    Self::Other(code) => code,
                }
            }

            /// The variant for `code`.
            pub fn from_code(code: u8) -> Self {
                match code {
                    $($code => Self::$variant,)*
                    other => Self::Other(other),
                }
            }
        }
    };
}

code_enum!(ProfileState { Disabled = 0, Enabled = 1 });
code_enum!(ProfileClass { Test = 0, Provisioning = 1, Operational = 2 });
code_enum!(IconType { Jpg = 0, Png = 1 });

/// What `ProfileInfoList` may be restricted to (`A0 { 4F | 5A | 95 }`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SearchCriteria {
    /// Only the profile in this ISD-P.
    IsdpAid(Aid),
    /// Only the profile with this ICCID.
    Iccid(Iccid),
    /// Only profiles of this class.
    ProfileClass(ProfileClass),
}

/// The `ProfileInfoList` request: `BF2D 00` lists everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ProfileInfoListRequest {
    /// Which profiles to list; `None` lists all.
    pub search: Option<SearchCriteria>,
    /// `5C`: the tags each `ProfileInfo` should carry, concatenated (`5A 9F70 92`); `None` for
    /// the card's default set.
    pub tag_list: Option<Vec<u8>>,
}

impl ProfileInfoListRequest {
    pub(crate) fn put(&self, w: &mut Writer) -> Result<(), TlvError> {
        let Self { search, tag_list } = self;
        w.put_constructed(PROFILE_INFO_LIST, |r| {
            if let Some(search) = search {
                r.put_constructed(CHOICE_0, |c| {
                    match search {
                        SearchCriteria::IsdpAid(aid) => c.put(ISDP_AID, aid.as_bytes()),
                        SearchCriteria::Iccid(iccid) => c.put(ICCID, &iccid.to_bcd()),
                        SearchCriteria::ProfileClass(class) => c.put(CLASS, &uint_bytes(class.code().into())),
                    }
                    .map(drop)
                })?;
            }
            if let Some(tags) = tag_list {
                r.put(TAG_LIST, tags)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    pub(crate) fn decode_fields(fields: &[Tlv<'_>]) -> Result<Self, DecodeError> {
        let search = first(fields, CHOICE_0)
            .map(|field| match children(field.value)?.as_slice() {
                [c] if c.tag == ISDP_AID => Ok(SearchCriteria::IsdpAid(aid(*c)?)),
                [c] if c.tag == ICCID => Ok(SearchCriteria::Iccid(iccid(*c)?)),
                [c] if c.tag == CLASS => Ok(SearchCriteria::ProfileClass(ProfileClass::from_code(small_uint(*c)?))),
                _ => Err(DecodeError::Choice { tag: field.tag }),
            })
            .transpose()?;
        Ok(Self {
            search,
            tag_list: first(fields, TAG_LIST).map(|field| field.value.to_vec()),
        })
    }
}

/// One `E3` `ProfileInfo`; every field is optional because the tag list may leave it out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ProfileInfo {
    /// `5A`.
    pub iccid: Option<Iccid>,
    /// `4F`: the ISD-P holding the profile.
    pub isdp_aid: Option<Aid>,
    /// `9F70`.
    pub state: Option<ProfileState>,
    /// `90`: the user's name for it.
    pub nickname: Option<String>,
    /// `91`.
    pub service_provider_name: Option<String>,
    /// `92`.
    pub profile_name: Option<String>,
    /// `93`.
    pub icon_type: Option<IconType>,
    /// `94`: the icon image.
    pub icon: Option<Vec<u8>>,
    /// `95`.
    pub class: Option<ProfileClass>,
}

impl ProfileInfo {
    fn put(&self, w: &mut Writer) -> Result<(), TlvError> {
        let Self {
            iccid,
            isdp_aid,
            state,
            nickname,
            service_provider_name,
            profile_name,
            icon_type,
            icon,
            class,
        } = self;
        w.put_constructed(PROFILE_INFO, |p| {
            if let Some(iccid) = iccid {
                p.put(ICCID, &iccid.to_bcd())?;
            }
            if let Some(aid) = isdp_aid {
                p.put(ISDP_AID, aid.as_bytes())?;
            }
            if let Some(state) = state {
                p.put(STATE, &uint_bytes(state.code().into()))?;
            }
            for (tag, text) in [
                (NICKNAME, nickname),
                (SERVICE_PROVIDER, service_provider_name),
                (PROFILE_NAME, profile_name),
            ] {
                if let Some(text) = text {
                    p.put(tag, text.as_bytes())?;
                }
            }
            if let Some(icon_type) = icon_type {
                p.put(ICON_TYPE, &uint_bytes(icon_type.code().into()))?;
            }
            if let Some(icon) = icon {
                p.put(ICON, icon)?;
            }
            if let Some(class) = class {
                p.put(CLASS, &uint_bytes(class.code().into()))?;
            }
            Ok(())
        })?;
        Ok(())
    }

    fn decode(field: Tlv<'_>) -> Result<Self, DecodeError> {
        let fields = children(field.value)?;
        let text = |tag| first(&fields, tag).map(utf8).transpose();
        let code = |tag| first(&fields, tag).map(small_uint).transpose();
        Ok(Self {
            iccid: first(&fields, ICCID).map(iccid).transpose()?,
            isdp_aid: first(&fields, ISDP_AID).map(aid).transpose()?,
            state: code(STATE)?.map(ProfileState::from_code),
            nickname: text(NICKNAME)?,
            service_provider_name: text(SERVICE_PROVIDER)?,
            profile_name: text(PROFILE_NAME)?,
            icon_type: code(ICON_TYPE)?.map(IconType::from_code),
            icon: first(&fields, ICON).map(|f| f.value.to_vec()),
            class: code(CLASS)?.map(ProfileClass::from_code),
        })
    }
}

/// Why the eUICC refused to list profiles (`ProfileInfoListError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ProfileInfoListError {
    #[error("the eUICC rejected the search criteria or tag list as incorrect input (1)")]
    IncorrectInputValues,
    #[error("the eUICC cannot list profiles while a profile change is ongoing (11)")]
    ProfileChangeOngoing,
    #[error("the eUICC failed to list profiles with an undefined error (127)")]
    UndefinedError,
    #[error("the eUICC failed to list profiles with error code {0}")]
    Other(u8),
}

code_enum!(ProfileInfoListError {
    IncorrectInputValues = 1,
    ProfileChangeOngoing = 11,
    UndefinedError = 127
});

/// The `ProfileInfoList` response: the profiles or the reason there are none.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProfileInfoList {
    /// `A0`: the profiles, in card order.
    Ok(Vec<ProfileInfo>),
    /// `81` (or `80`): the error code.
    Error(ProfileInfoListError),
}

impl ProfileInfoList {
    /// Encodes the response.
    pub fn encode(&self) -> Result<Vec<u8>, TlvError> {
        let mut w = Writer::new();
        w.put_constructed(PROFILE_INFO_LIST, |r| match self {
            Self::Ok(profiles) => r
                .put_constructed(LIST_OK, |list| profiles.iter().try_for_each(|p| p.put(list)))
                .map(drop),
            Self::Error(error) => r.put(LIST_ERROR, &uint_bytes(error.code().into())).map(drop),
        })?;
        Ok(w.into_bytes())
    }

    /// Decodes the response; unknown fields inside a `ProfileInfo` are skipped, and entries
    /// other than `E3` in the list are ignored.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let outer = outer(bytes, PROFILE_INFO_LIST)?;
        let fields = children(outer.value)?;
        if let Some(list) = first(&fields, LIST_OK) {
            let profiles = children(list.value)?
                .into_iter()
                .filter(|entry| entry.tag == PROFILE_INFO)
                .map(ProfileInfo::decode)
                .collect::<Result<_, _>>()?;
            return Ok(Self::Ok(profiles));
        }
        match first(&fields, LIST_ERROR).or_else(|| first(&fields, LIST_ERROR_ALT)) {
            Some(code) => Ok(Self::Error(ProfileInfoListError::from_code(small_uint(code)?))),
            None => Err(DecodeError::Choice { tag: PROFILE_INFO_LIST }),
        }
    }
}

/// `EnableProfile` or `DisableProfile`: which profile, and whether the eUICC should REFRESH.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProfileOperation {
    /// The profile.
    pub id: ProfileId,
    /// `81`: ask the device for a REFRESH (UICC reset) after the switch.
    pub refresh: bool,
}

impl ProfileOperation {
    pub(crate) fn put(&self, w: &mut Writer, tag: Tag) -> Result<(), TlvError> {
        let Self { id, refresh } = self;
        w.put_constructed(tag, |r| {
            r.put_constructed(CHOICE_0, |c| id.put(c))?;
            // DER writes TRUE as FF; lpac sends 81 01 00 for false.
            r.put(REFRESH_FLAG, &[if *refresh { 0xFF } else { 0x00 }])?;
            Ok(())
        })?;
        Ok(())
    }

    pub(crate) fn decode_fields(fields: &[Tlv<'_>], parent: Tag) -> Result<Self, DecodeError> {
        Ok(Self {
            id: ProfileId::decode(required(fields, CHOICE_0, parent)?)?,
            refresh: boolean(required(fields, REFRESH_FLAG, parent)?)?,
        })
    }
}

/// Builds `tag { 80 code }`: a result code never needs more than two content bytes.
fn result_response(tag: Tag, code: u8) -> Vec<u8> {
    let content = uint_bytes(code.into());
    let mut w = Writer::new();
    // Two short fields cannot exceed a length field, so put cannot fail here.
    let built = w.put_constructed(tag, |r| r.put(RESULT, &content).map(drop)).is_ok();
    debug_assert!(built);
    w.into_bytes()
}

fn decode_result(bytes: &[u8], tag: Tag) -> Result<u8, DecodeError> {
    let outer = outer(bytes, tag)?;
    let fields = children(outer.value)?;
    small_uint(required(&fields, RESULT, tag)?)
}

/// `EnableProfile`'s `enableResult`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum EnableResult {
    #[error("the eUICC enabled the profile")]
    Ok,
    #[error("the eUICC has no profile with that ICCID or ISD-P AID (1)")]
    IccidOrAidNotFound,
    #[error("the profile cannot be enabled because it is not disabled (2)")]
    ProfileNotInDisabledState,
    #[error("the profile policy rules forbid enabling the profile (3)")]
    DisallowedByPolicy,
    #[error("the eUICC refused to re-enable the profile it just disabled (4)")]
    WrongProfileReenabling,
    #[error("the eUICC is busy with a proactive session; try again later (5)")]
    CatBusy,
    #[error("the eUICC failed to enable the profile with an undefined error (127)")]
    UndefinedError,
    #[error("the eUICC failed to enable the profile with result code {0}")]
    Other(u8),
}

code_enum!(EnableResult {
    Ok = 0,
    IccidOrAidNotFound = 1,
    ProfileNotInDisabledState = 2,
    DisallowedByPolicy = 3,
    WrongProfileReenabling = 4,
    CatBusy = 5,
    UndefinedError = 127
});

/// `DisableProfile`'s `disableResult`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DisableResult {
    #[error("the eUICC disabled the profile")]
    Ok,
    #[error("the eUICC has no profile with that ICCID or ISD-P AID (1)")]
    IccidOrAidNotFound,
    #[error("the profile cannot be disabled because it is not enabled (2)")]
    ProfileNotInEnabledState,
    #[error("the profile policy rules forbid disabling the profile (3)")]
    DisallowedByPolicy,
    #[error("the eUICC is busy with a proactive session; try again later (5)")]
    CatBusy,
    #[error("the eUICC failed to disable the profile with an undefined error (127)")]
    UndefinedError,
    #[error("the eUICC failed to disable the profile with result code {0}")]
    Other(u8),
}

code_enum!(DisableResult {
    Ok = 0,
    IccidOrAidNotFound = 1,
    ProfileNotInEnabledState = 2,
    DisallowedByPolicy = 3,
    CatBusy = 5,
    UndefinedError = 127
});

macro_rules! result_codec {
    ($name:ident, $tag:expr) => {
        impl $name {
            /// `Ok(())` for success, otherwise the refusal as an error.
            pub fn into_result(self) -> Result<(), Self> {
                if self == Self::Ok { Ok(()) } else { Err(self) }
            }

            /// Encodes the response (`tag { 80 code }`), as the simulated ISD-R sends it.
            pub fn encode(self) -> Vec<u8> {
                result_response($tag, self.code())
            }

            /// Decodes the response.
            pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
                decode_result(bytes, $tag).map(Self::from_code)
            }
        }
    };
}

result_codec!(EnableResult, ENABLE_PROFILE);
result_codec!(DisableResult, DISABLE_PROFILE);
