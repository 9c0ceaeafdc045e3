//! The token account and the operator's endpoints: the card's AI applet (docs/ai-applet.md),
//! read together with the ISD-R whenever the card changes, and debited by the biller.

use aiesim_ai_applet::{
    AID, AccountKey, AppletError, AppletInfo, Balance, Debit, Endpoints, Receipt, Request, Voucher,
};
use aiesim_apdu::{StatusWord, exchange};

use super::{EsimError, card::Session};
use crate::modem::{Modem, ModemError};

/// What the daemon reads of the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub balance: Balance,
    pub endpoints: Endpoints,
    pub info: AppletInfo,
    pub key: AccountKey,
}

async fn call(session: &mut Session<'_>, request: &Request) -> Result<Vec<u8>, EsimError> {
    let command = request.to_command(session.channel).map_err(EsimError::AiRequest)?;
    let response = exchange(&mut session.card, session.channel, &command).await?;
    AppletError::check(response.sw).map_err(EsimError::Ai)?;
    Ok(response.data)
}

async fn open(modem: &Modem) -> Result<Session<'_>, EsimError> {
    match Session::open(modem, &AID).await {
        Ok(session) => Ok(session),
        Err(ModemError::CardRefused(sw)) if sw == StatusWord::NOT_FOUND.0 => Err(EsimError::NoAiApplet),
        Err(error) => Err(error.into()),
    }
}

/// Reads the balance, the applet's identity and key, and the endpoint list; a card without the
/// applet is no error of the card.
pub async fn read(modem: &Modem) -> Result<Account, EsimError> {
    let mut session = open(modem).await?;
    let read = async {
        let decode = |e| EsimError::AiResponse(e);
        let info = AppletInfo::decode(&call(&mut session, &Request::GetData).await?).map_err(decode)?;
        let key = AccountKey::decode(&call(&mut session, &Request::GetAccountKey).await?).map_err(decode)?;
        let balance = Balance::decode(&call(&mut session, &Request::GetBalance).await?).map_err(decode)?;
        let endpoints = Endpoints::decode(&call(&mut session, &Request::GetEndpoints).await?).map_err(decode)?;
        Ok(Account {
            balance,
            endpoints,
            info,
            key,
        })
    }
    .await;
    session.close().await;
    read
}

/// Reads the balance and sequence only.
pub async fn balance(modem: &Modem) -> Result<Balance, EsimError> {
    let mut session = open(modem).await?;
    let read =
        async { Balance::decode(&call(&mut session, &Request::GetBalance).await?).map_err(EsimError::AiResponse) }
            .await;
    session.close().await;
    read
}

/// Redeems an operator voucher; the receipt is returned as the card gave it.
pub async fn top_up(modem: &Modem, voucher: Voucher, host_time: u64) -> Result<Receipt, EsimError> {
    let mut session = open(modem).await?;
    let request = Request::TopUp { voucher, host_time };
    let answer = async { Receipt::decode(&call(&mut session, &request).await?).map_err(EsimError::AiResponse) }.await;
    session.close().await;
    answer
}

/// Sends one DEBIT; the receipt is returned as the card gave it, for the caller to verify.
pub async fn debit(modem: &Modem, debit: Debit) -> Result<Receipt, EsimError> {
    let mut session = open(modem).await?;
    let answer =
        async { Receipt::decode(&call(&mut session, &Request::Debit(debit)).await?).map_err(EsimError::AiResponse) }
            .await;
    session.close().await;
    answer
}
