//! SGP.32's `GetEimConfigurationData` (`BF55`): the eIMs the eUICC trusts, and the one request
//! only an SGP.32 eUICC answers, which tells the two generations apart.

use aiesim_apdu::{
    Response,
    tlv::{Tag, Tlv, TlvError, Writer},
};

use crate::codec::{DecodeError, children, first, outer, required, t, uint, uint_bytes, utf8};

pub(crate) const GET_EIM_CONFIGURATION_DATA: Tag = t(0xBF55);
const LIST: Tag = t(0xA0);
const SEQUENCE: Tag = t(0x30);
const EIM_ID: Tag = t(0x80);
const EIM_FQDN: Tag = t(0x81);
const EIM_ID_TYPE: Tag = t(0x82);
const COUNTER_VALUE: Tag = t(0x83);
const ASSOCIATION_TOKEN: Tag = t(0x84);

/// One `EimConfigurationData`; the key material and protocol fields are skipped on decode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct EimConfiguration {
    /// `80`: the eIM's identifier.
    pub eim_id: String,
    /// `81`: where the IPA reaches it.
    pub eim_fqdn: Option<String>,
    /// `82`: oid (1), FQDN (2) or proprietary (3).
    pub eim_id_type: Option<u64>,
    /// `83`: the replay counter of eIM packages.
    pub counter_value: Option<u64>,
    /// `84`.
    pub association_token: Option<u64>,
}

/// `GetEimConfigurationData`'s answer: `BF55 { A0 { 30 config ... } }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct EimConfigurationList {
    /// The configured eIMs in card order.
    pub eims: Vec<EimConfiguration>,
}

impl EimConfigurationList {
    /// Encodes the response.
    pub fn encode(&self) -> Result<Vec<u8>, TlvError> {
        let Self { eims } = self;
        let mut w = Writer::new();
        w.put_constructed(GET_EIM_CONFIGURATION_DATA, |r| {
            r.put_constructed(LIST, |list| {
                eims.iter().try_for_each(|eim| {
                    let EimConfiguration {
                        eim_id,
                        eim_fqdn,
                        eim_id_type,
                        counter_value,
                        association_token,
                    } = eim;
                    list.put_constructed(SEQUENCE, |c| {
                        c.put(EIM_ID, eim_id.as_bytes())?;
                        if let Some(fqdn) = eim_fqdn {
                            c.put(EIM_FQDN, fqdn.as_bytes())?;
                        }
                        for (tag, number) in [
                            (EIM_ID_TYPE, eim_id_type),
                            (COUNTER_VALUE, counter_value),
                            (ASSOCIATION_TOKEN, association_token),
                        ] {
                            if let Some(number) = number {
                                c.put(tag, &uint_bytes(*number))?;
                            }
                        }
                        Ok(())
                    })
                    .map(drop)
                })
            })
            .map(drop)
        })?;
        Ok(w.into_bytes())
    }

    /// Decodes the response; a missing list reads as no eIMs.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let outer = outer(bytes, GET_EIM_CONFIGURATION_DATA)?;
        let fields = children(outer.value)?;
        let Some(list) = first(&fields, LIST) else {
            return Ok(Self::default());
        };
        let eims = children(list.value)?
            .into_iter()
            .map(|entry| {
                let fields = children(entry.value)?;
                let number = |tag| first(&fields, tag).map(uint).transpose();
                Ok(EimConfiguration {
                    eim_id: utf8(required(&fields, EIM_ID, entry.tag)?)?,
                    eim_fqdn: first(&fields, EIM_FQDN).map(utf8).transpose()?,
                    eim_id_type: number(EIM_ID_TYPE)?,
                    counter_value: number(COUNTER_VALUE)?,
                    association_token: number(ASSOCIATION_TOKEN)?,
                })
            })
            .collect::<Result<_, DecodeError>>()?;
        Ok(Self { eims })
    }
}

/// Which specification an eUICC follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EuiccGeneration {
    /// SGP.22: consumer, driven by an LPA.
    Sgp22,
    /// SGP.32: `IoT`, driven by an IPA on behalf of an eIM.
    Sgp32,
}

/// The generation an ISD-R's answer to `GetEimConfigurationData` reveals: a completed
/// `BF55` response means SGP.32; any error status or other content means SGP.22.
pub fn detect_generation(response: &Response) -> EuiccGeneration {
    let Response { data, sw } = response;
    let answered = sw.is_ok()
        && Tlv::parse_exact(data).is_ok_and(|tlv| tlv.tag == GET_EIM_CONFIGURATION_DATA)
        && EimConfigurationList::decode(data).is_ok();
    if answered {
        EuiccGeneration::Sgp32
    } else {
        EuiccGeneration::Sgp22
    }
}
