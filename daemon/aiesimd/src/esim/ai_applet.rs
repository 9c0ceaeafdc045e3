//! The token account and the operator's endpoints: the card's AI applet (docs/ai-applet.md),
//! read together with the ISD-R whenever the card changes.

use aiesim_ai_applet::{AID, AppletError, Balance, Endpoints, Request};
use aiesim_apdu::{StatusWord, exchange};

use super::{EsimError, card::Session};
use crate::modem::{Modem, ModemError};

/// What the daemon reads of the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub balance: Balance,
    pub endpoints: Endpoints,
}

async fn call(session: &mut Session<'_>, request: &Request) -> Result<Vec<u8>, EsimError> {
    let command = request.to_command(session.channel).map_err(EsimError::AiRequest)?;
    let response = exchange(&mut session.card, session.channel, &command).await?;
    AppletError::check(response.sw).map_err(EsimError::Ai)?;
    Ok(response.data)
}

/// Reads the balance and the endpoint list; a card without the applet is no error of the card.
pub async fn read(modem: &Modem) -> Result<Account, EsimError> {
    let mut session = match Session::open(modem, &AID).await {
        Ok(session) => session,
        Err(ModemError::CardRefused(sw)) if sw == StatusWord::NOT_FOUND.0 => return Err(EsimError::NoAiApplet),
        Err(error) => return Err(error.into()),
    };
    let read = async {
        let balance =
            Balance::decode(&call(&mut session, &Request::GetBalance).await?).map_err(EsimError::AiResponse)?;
        let endpoints =
            Endpoints::decode(&call(&mut session, &Request::GetEndpoints).await?).map_err(EsimError::AiResponse)?;
        Ok(Account { balance, endpoints })
    }
    .await;
    session.close().await;
    read
}
