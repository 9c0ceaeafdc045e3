//! The applet's commands: built by the daemon, read back by the simulated applet.

use aiesim_apdu::{ChannelError, Command, Le, with_channel};

use crate::{CardId, Debit, Voucher};

/// Instruction bytes, all outside ISO 7816-4's interindustry set.
pub mod ins {
    /// GET BALANCE.
    pub const GET_BALANCE: u8 = 0x50;
    /// DEBIT.
    pub const DEBIT: u8 = 0x52;
    /// TOP-UP.
    pub const TOP_UP: u8 = 0x54;
    /// GET ENDPOINTS.
    pub const GET_ENDPOINTS: u8 = 0x56;
    /// GET ACCOUNT KEY.
    pub const GET_ACCOUNT_KEY: u8 = 0x58;
    /// GET DATA (P1-P2 `00 01`: version and limits).
    pub const GET_DATA: u8 = 0xCA;
}

/// The class byte before the channel goes in: proprietary.
pub const CLA: u8 = 0x80;
/// GET DATA's P1-P2 for the applet information.
const GET_DATA_INFO: [u8; 2] = [0x00, 0x01];
/// DEBIT's data: amount, digest, nonce.
pub const DEBIT_DATA_LEN: usize = 8 + 32 + 16;
/// TOP-UP's data: voucher id, amount, expiry, card id, operator signature, host time.
pub const TOP_UP_DATA_LEN: usize = 16 + 8 + 8 + 16 + 64 + 8;

/// Why a command could not be built, or bytes not read as one of the applet's commands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the class byte cannot address the applet's logical channel")]
    Channel(#[source] ChannelError),
    #[error("class byte {cla:#04x} is not the applet's proprietary class")]
    Class { cla: u8 },
    #[error("instruction {ins:#04x} is not an AI applet instruction")]
    UnknownInstruction { ins: u8 },
    #[error("instruction {ins:#04x} does not take P1 = {p1:#04x}, P2 = {p2:#04x}")]
    Parameters { ins: u8, p1: u8, p2: u8 },
    #[error("instruction {ins:#04x} carries {len} data bytes instead of {expected}")]
    DataLength { ins: u8, len: usize, expected: usize },
}

/// One command of the AI applet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Request {
    /// `80 50 00 00 00`.
    GetBalance,
    /// `80 52 00 00 38 amount digest nonce 00`.
    Debit(Debit),
    /// `80 54 00 00 78 voucher host-time 00`.
    TopUp {
        /// The operator's voucher.
        voucher: Voucher,
        /// The host's clock in Unix seconds, which the card only lets move forward.
        host_time: u64,
    },
    /// `80 56 00 00 00`; long answers arrive through 61xx and GET RESPONSE.
    GetEndpoints,
    /// `80 58 00 00 00`.
    GetAccountKey,
    /// `80 CA 00 01 00`.
    GetData,
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(bytes);
    out
}

impl Request {
    /// The command APDU on logical channel `channel`.
    pub fn to_command(&self, channel: u8) -> Result<Command, RequestError> {
        let cla = with_channel(CLA, channel).map_err(RequestError::Channel)?;
        let (ins, [p1, p2], data) = match self {
            Self::GetBalance => (ins::GET_BALANCE, [0, 0], Vec::new()),
            Self::Debit(Debit { amount, digest, nonce }) => {
                let mut data = Vec::with_capacity(DEBIT_DATA_LEN);
                data.extend_from_slice(&amount.to_be_bytes());
                data.extend_from_slice(digest);
                data.extend_from_slice(nonce);
                (ins::DEBIT, [0, 0], data)
            }
            Self::TopUp { voucher, host_time } => {
                let Voucher {
                    id,
                    amount,
                    expiry,
                    card_id,
                    signature,
                } = voucher;
                let mut data = Vec::with_capacity(TOP_UP_DATA_LEN);
                data.extend_from_slice(id);
                data.extend_from_slice(&amount.to_be_bytes());
                data.extend_from_slice(&expiry.to_be_bytes());
                data.extend_from_slice(card_id);
                data.extend_from_slice(signature);
                data.extend_from_slice(&host_time.to_be_bytes());
                (ins::TOP_UP, [0, 0], data)
            }
            Self::GetEndpoints => (ins::GET_ENDPOINTS, [0, 0], Vec::new()),
            Self::GetAccountKey => (ins::GET_ACCOUNT_KEY, [0, 0], Vec::new()),
            Self::GetData => (ins::GET_DATA, GET_DATA_INFO, Vec::new()),
        };
        Ok(Command::new(cla, ins, p1, p2).with_data(data).with_le(Le::SHORT_MAX))
    }

    /// Reads a command as the applet does; any channel is accepted, only the proprietary class.
    pub fn from_command(command: &Command) -> Result<Self, RequestError> {
        let Command {
            cla,
            ins,
            p1,
            p2,
            data,
            le: _,
        } = command;
        let (ins, p1, p2) = (*ins, *p1, *p2);
        if cla & 0x80 == 0 || *cla == 0xFF {
            return Err(RequestError::Class { cla: *cla });
        }
        let expect = |expected_p: [u8; 2], len: usize| {
            if [p1, p2] != expected_p {
                return Err(RequestError::Parameters { ins, p1, p2 });
            }
            if data.len() != len {
                return Err(RequestError::DataLength {
                    ins,
                    len: data.len(),
                    expected: len,
                });
            }
            Ok(())
        };
        match ins {
            ins::GET_BALANCE => expect([0, 0], 0).map(|()| Self::GetBalance),
            ins::DEBIT => {
                expect([0, 0], DEBIT_DATA_LEN)?;
                Ok(Self::Debit(Debit {
                    amount: u64::from_be_bytes(array(&data[..8])),
                    digest: array(&data[8..40]),
                    nonce: array(&data[40..56]),
                }))
            }
            ins::TOP_UP => {
                expect([0, 0], TOP_UP_DATA_LEN)?;
                let card_id: CardId = array(&data[32..48]);
                Ok(Self::TopUp {
                    voucher: Voucher {
                        id: array(&data[..16]),
                        amount: u64::from_be_bytes(array(&data[16..24])),
                        expiry: u64::from_be_bytes(array(&data[24..32])),
                        card_id,
                        signature: array(&data[48..112]),
                    },
                    host_time: u64::from_be_bytes(array(&data[112..120])),
                })
            }
            ins::GET_ENDPOINTS => expect([0, 0], 0).map(|()| Self::GetEndpoints),
            ins::GET_ACCOUNT_KEY => expect([0, 0], 0).map(|()| Self::GetAccountKey),
            ins::GET_DATA => expect(GET_DATA_INFO, 0).map(|()| Self::GetData),
            _ => Err(RequestError::UnknownInstruction { ins }),
        }
    }
}
