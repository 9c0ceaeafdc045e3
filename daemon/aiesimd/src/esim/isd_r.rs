//! ES10 against the ISD-R: what the daemon reads of the eUICC and the profile switches it makes.
//! Each call opens its own channel to the ISD-R and closes it again, so no channel outlives a
//! modem reset unnoticed.

use aiesim_apdu::{StatusWord, store_data_chained};
use aiesim_es10::{
    ConfiguredAddresses, DisableResult, EnableResult, EuiccData, EuiccGeneration, EuiccInfo1, EuiccInfo2, ISD_R_AID,
    Iccid, ProfileId, ProfileInfo, ProfileInfoList, ProfileInfoListRequest, ProfileOperation, Request, STORE_DATA_CLA,
    detect_generation,
};

use super::{EsimError, card::Session};
use crate::modem::{Modem, ModemError};

/// Everything the daemon reads of the eUICC at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub eid: aiesim_es10::Eid,
    pub generation: EuiccGeneration,
    pub info: Option<EuiccInfo2>,
    pub info1: Option<EuiccInfo1>,
    pub addresses: Option<ConfiguredAddresses>,
    pub profiles: Vec<ProfileInfo>,
}

/// Opens the ISD-R; a card that has none is a plain SIM, not an error.
async fn open(modem: &Modem) -> Result<Session<'_>, EsimError> {
    match Session::open(modem, &ISD_R_AID).await {
        Ok(session) => Ok(session),
        Err(ModemError::CardRefused(sw)) if sw == StatusWord::NOT_FOUND.0 => Err(EsimError::NotEuicc),
        Err(error) => Err(error.into()),
    }
}

/// Sends one ES10 request and returns the response data (SW 9000), or the card's refusal.
async fn call(session: &mut Session<'_>, request: &Request) -> Result<Vec<u8>, EsimError> {
    let payload = request.encode().map_err(EsimError::Encode)?;
    let response = store_data_chained(&mut session.card, session.channel, STORE_DATA_CLA, &payload).await?;
    Ok(response.into_result()?)
}

pub async fn read(modem: &Modem) -> Result<Snapshot, EsimError> {
    let mut session = open(modem).await?;
    let read = read_on(&mut session).await;
    session.close().await;
    read
}

async fn read_on(session: &mut Session<'_>) -> Result<Snapshot, EsimError> {
    let eid = EuiccData::decode(&call(session, &Request::get_eid()).await?)?.eid;
    // The rest is informative: a card that refuses one of them is still usable.
    let info = match call(session, &Request::GetEuiccInfo2).await {
        Ok(data) => Some(EuiccInfo2::decode(&data)?),
        Err(EsimError::Card(error)) => {
            tracing::info!(%error, "the eUICC gives no EUICCInfo2");
            None
        }
        Err(error) => return Err(error),
    };
    let info1 = match call(session, &Request::GetEuiccInfo1).await {
        Ok(data) => Some(EuiccInfo1::decode(&data)?),
        Err(EsimError::Card(error)) => {
            tracing::info!(%error, "the eUICC gives no EUICCInfo1");
            None
        }
        Err(error) => return Err(error),
    };
    let addresses = match call(session, &Request::GetConfiguredAddresses).await {
        Ok(data) => Some(ConfiguredAddresses::decode(&data)?),
        Err(EsimError::Card(error)) => {
            tracing::info!(%error, "the eUICC gives no configured addresses");
            None
        }
        Err(error) => return Err(error),
    };
    let profiles = list(session).await?;
    // SGP.32 is told by a command only an IoT eUICC answers; its status word is the answer.
    let payload = Request::GetEimConfigurationData { eim_id: None }
        .encode()
        .map_err(EsimError::Encode)?;
    let probe = store_data_chained(&mut session.card, session.channel, STORE_DATA_CLA, &payload).await?;
    Ok(Snapshot {
        eid,
        generation: detect_generation(&probe),
        info,
        info1,
        addresses,
        profiles,
    })
}

async fn list(session: &mut Session<'_>) -> Result<Vec<ProfileInfo>, EsimError> {
    let data = call(session, &Request::ProfileInfoList(ProfileInfoListRequest::default())).await?;
    match ProfileInfoList::decode(&data)? {
        ProfileInfoList::Ok(profiles) => Ok(profiles),
        ProfileInfoList::Error(error) => Err(EsimError::ProfileList(error)),
    }
}

/// Enables (or disables) the profile `iccid`; the eUICC then asks the modem for a REFRESH.
pub async fn switch(modem: &Modem, iccid: &str, enable: bool) -> Result<(), EsimError> {
    let iccid: Iccid = iccid.parse().map_err(|_| EsimError::BadIccid(iccid.to_owned()))?;
    let operation = ProfileOperation {
        id: ProfileId::Iccid(iccid),
        refresh: true,
    };
    let mut session = open(modem).await?;
    let done = async {
        if enable {
            let data = call(&mut session, &Request::EnableProfile(operation)).await?;
            EnableResult::decode(&data)?.into_result().map_err(EsimError::Enable)
        } else {
            let data = call(&mut session, &Request::DisableProfile(operation)).await?;
            DisableResult::decode(&data)?.into_result().map_err(EsimError::Disable)
        }
    }
    .await;
    session.close().await;
    done
}
