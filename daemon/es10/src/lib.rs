//! ES10 (SGP.22 / SGP.32) as the ISD-R speaks it: each request is the payload of a STORE DATA
//! chain, each response a BER-TLV the card returns. Bytes in, typed values out, no I/O.
//!
//! Both sides use these types, so the simulated ISD-R builds exactly what the daemon reads:
//!
//! * [`Request`] encodes what the daemon sends and decodes it on the simulator;
//! * [`EuiccData`] (the EID), [`EuiccInfo1`], [`EuiccInfo2`], [`ConfiguredAddresses`], [`Rat`],
//!   [`ProfileInfoList`], [`EnableResult`], [`DisableResult`] and [`EimConfigurationList`]
//!   encode and decode the responses;
//! * [`detect_generation`] tells an SGP.32 eUICC from an SGP.22 one by its answer to
//!   `GetEimConfigurationData`.
//!
//! Decoders skip fields they do not know and never panic; encoders fail only when a value
//! exceeds what a BER length field can announce.

mod codec;
mod eim;
mod euicc;
mod profile;
mod request;
mod types;

pub use codec::DecodeError;
pub use eim::{EimConfiguration, EimConfigurationList, EuiccGeneration, detect_generation};
pub use euicc::{
    ConfiguredAddresses, EuiccData, EuiccInfo1, EuiccInfo2, ExtCardResource, OperatorId, PkIdList, Rat, RatRule,
};
pub use profile::{
    DisableResult, EnableResult, IconType, ProfileClass, ProfileId, ProfileInfo, ProfileInfoList, ProfileInfoListError,
    ProfileInfoListRequest, ProfileOperation, ProfileState, SearchCriteria,
};
pub use request::Request;
pub use types::{Aid, BitString, Eid, Iccid, IdError, Version};

/// The ISD-R's AID (SGP.02/SGP.22), which every ES10 request is sent to.
pub const ISD_R_AID: [u8; 16] = [
    0xA0, 0x00, 0x00, 0x05, 0x59, 0x10, 0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x89, 0x00, 0x00, 0x01, 0x00,
];

/// The class byte of ES10 STORE DATA before the channel goes in: `80`, so `81` on channel 1.
pub const STORE_DATA_CLA: u8 = 0x80;

#[cfg(test)]
mod tests;
