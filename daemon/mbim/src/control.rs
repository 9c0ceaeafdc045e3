//! MBIM control messages: the 12-byte header, the fragment header and the nine message bodies.

use std::fmt;

use crate::{DecodeError, EncodeError, ProtocolError, Status, Uuid};

/// MessageType, MessageLength, TransactionId.
pub const HEADER_LEN: usize = 12;
/// TotalFragments, CurrentFragment.
pub const FRAGMENT_HEADER_LEN: usize = 8;
/// The smallest MaxControlTransfer MBIM allows a function to report (MBIM 1.0 §9.3.1).
pub const MIN_CONTROL_TRANSFER: usize = 64;
/// What libmbim falls back to when the device cannot tell (and what mbimcli sends in OPEN).
pub const DEFAULT_MAX_CONTROL_TRANSFER: usize = 4096;

/// The nine control message types; the high bit marks function-to-host messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessageType {
    Open,
    Close,
    Command,
    HostError,
    OpenDone,
    CloseDone,
    CommandDone,
    FunctionError,
    IndicateStatus,
}

impl MessageType {
    pub const ALL: [Self; 9] = [
        Self::Open,
        Self::Close,
        Self::Command,
        Self::HostError,
        Self::OpenDone,
        Self::CloseDone,
        Self::CommandDone,
        Self::FunctionError,
        Self::IndicateStatus,
    ];

    pub const fn code(self) -> u32 {
        match self {
            Self::Open => 0x0000_0001,
            Self::Close => 0x0000_0002,
            Self::Command => 0x0000_0003,
            Self::HostError => 0x0000_0004,
            Self::OpenDone => 0x8000_0001,
            Self::CloseDone => 0x8000_0002,
            Self::CommandDone => 0x8000_0003,
            Self::FunctionError => 0x8000_0004,
            Self::IndicateStatus => 0x8000_0007,
        }
    }

    pub const fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0x0000_0001 => Self::Open,
            0x0000_0002 => Self::Close,
            0x0000_0003 => Self::Command,
            0x0000_0004 => Self::HostError,
            0x8000_0001 => Self::OpenDone,
            0x8000_0002 => Self::CloseDone,
            0x8000_0003 => Self::CommandDone,
            0x8000_0004 => Self::FunctionError,
            0x8000_0007 => Self::IndicateStatus,
            _ => return None,
        })
    }

    /// Whether messages of this type carry a fragment header and may span several transfers.
    pub const fn is_fragmentable(self) -> bool {
        matches!(self, Self::Command | Self::CommandDone | Self::IndicateStatus)
    }

    /// Whether the host sends it (as opposed to the function).
    pub const fn from_host(self) -> bool {
        self.code() & 0x8000_0000 == 0
    }

    /// The shortest valid message (a continuation fragment for the fragmentable types); the
    /// others are always exactly this long.
    pub const fn min_len(self) -> usize {
        match self {
            Self::Close => HEADER_LEN,
            Self::Open | Self::HostError | Self::OpenDone | Self::CloseDone | Self::FunctionError => HEADER_LEN + 4,
            Self::Command | Self::CommandDone | Self::IndicateStatus => HEADER_LEN + FRAGMENT_HEADER_LEN,
        }
    }

    /// The spec's name, e.g. `COMMAND_DONE`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Open => "OPEN",
            Self::Close => "CLOSE",
            Self::Command => "COMMAND",
            Self::HostError => "HOST_ERROR",
            Self::OpenDone => "OPEN_DONE",
            Self::CloseDone => "CLOSE_DONE",
            Self::CommandDone => "COMMAND_DONE",
            Self::FunctionError => "FUNCTION_ERROR",
            Self::IndicateStatus => "INDICATE_STATUS",
        }
    }

    /// Bytes of the first fragment's payload before the information buffer.
    const fn body_header_len(self) -> usize {
        match self {
            Self::Command | Self::CommandDone => 16 + 4 + 4 + 4,
            Self::IndicateStatus => 16 + 4 + 4,
            _ => 0,
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a COMMAND reads or changes state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandType {
    Query,
    Set,
}

impl CommandType {
    pub const fn code(self) -> u32 {
        match self {
            Self::Query => 0,
            Self::Set => 1,
        }
    }

    pub const fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(Self::Query),
            1 => Some(Self::Set),
            _ => None,
        }
    }
}

impl fmt::Display for CommandType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Query => "query",
            Self::Set => "set",
        })
    }
}

/// A COMMAND: host to function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub service: Uuid,
    pub cid: u32,
    pub command_type: CommandType,
    pub info: Vec<u8>,
}

/// A COMMAND_DONE: the function's answer to one COMMAND.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandDone {
    pub service: Uuid,
    pub cid: u32,
    pub status: Status,
    pub info: Vec<u8>,
}

/// An INDICATE_STATUS: an unsolicited notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indication {
    pub service: Uuid,
    pub cid: u32,
    pub info: Vec<u8>,
}

/// What a control message says, without its transaction id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Open { max_control_transfer: u32 },
    Close,
    Command(Command),
    HostError(ProtocolError),
    OpenDone(Status),
    CloseDone(Status),
    CommandDone(CommandDone),
    FunctionError(ProtocolError),
    IndicateStatus(Indication),
}

impl Body {
    pub const fn message_type(&self) -> MessageType {
        match self {
            Self::Open { .. } => MessageType::Open,
            Self::Close => MessageType::Close,
            Self::Command(_) => MessageType::Command,
            Self::HostError(_) => MessageType::HostError,
            Self::OpenDone(_) => MessageType::OpenDone,
            Self::CloseDone(_) => MessageType::CloseDone,
            Self::CommandDone(_) => MessageType::CommandDone,
            Self::FunctionError(_) => MessageType::FunctionError,
            Self::IndicateStatus(_) => MessageType::IndicateStatus,
        }
    }
}

/// One whole control message (reassembled, if it came in fragments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlMessage {
    pub transaction_id: u32,
    pub body: Body,
}

impl ControlMessage {
    pub const fn new(transaction_id: u32, body: Body) -> Self {
        Self { transaction_id, body }
    }

    pub const fn message_type(&self) -> MessageType {
        self.body.message_type()
    }

    /// Reads one unfragmented message; `bytes` must be exactly the message.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let raw = RawMessage::decode(bytes)?;
        if raw.total != 1 || raw.current != 0 {
            return Err(DecodeError::Fragmented {
                total: raw.total,
                current: raw.current,
            });
        }
        Self::from_payload(raw.message_type, raw.transaction_id, raw.payload)
    }

    /// Builds the message from its type and the bytes after the (fragment) header.
    pub(crate) fn from_payload(
        message_type: MessageType,
        transaction_id: u32,
        payload: &[u8],
    ) -> Result<Self, DecodeError> {
        let word = |at: usize| -> Result<u32, DecodeError> {
            payload
                .get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or(DecodeError::TooShort {
                    message_type,
                    len: HEADER_LEN + payload.len(),
                    min: HEADER_LEN + at + 4,
                })
        };
        let body = match message_type {
            MessageType::Open => Body::Open {
                max_control_transfer: word(0)?,
            },
            MessageType::Close => Body::Close,
            MessageType::HostError => Body::HostError(ProtocolError::from_code(word(0)?)),
            MessageType::OpenDone => Body::OpenDone(Status::from_code(word(0)?)),
            MessageType::CloseDone => Body::CloseDone(Status::from_code(word(0)?)),
            MessageType::FunctionError => Body::FunctionError(ProtocolError::from_code(word(0)?)),
            MessageType::Command | MessageType::CommandDone | MessageType::IndicateStatus => {
                let header_len = message_type.body_header_len();
                // The last word before the information buffer is its length.
                let declared = word(header_len - 4)? as usize;
                let mut service = [0; 16];
                service.copy_from_slice(&payload[..16]);
                let service = Uuid(service);
                let cid = word(16)?;
                let info = &payload[header_len..];
                if declared != info.len() {
                    return Err(DecodeError::InfoLengthMismatch {
                        declared,
                        actual: info.len(),
                    });
                }
                let info = info.to_vec();
                match message_type {
                    MessageType::Command => {
                        let code = word(20)?;
                        let command_type = CommandType::from_code(code)
                            .ok_or(DecodeError::UnknownCommandType { command_type: code })?;
                        Body::Command(Command {
                            service,
                            cid,
                            command_type,
                            info,
                        })
                    }
                    MessageType::CommandDone => Body::CommandDone(CommandDone {
                        service,
                        cid,
                        status: Status::from_code(word(20)?),
                        info,
                    }),
                    _ => Body::IndicateStatus(Indication { service, cid, info }),
                }
            }
        };
        Ok(Self { transaction_id, body })
    }

    /// The bytes after the header (and fragment header): what fragments split between them.
    fn payload(&self) -> Result<Vec<u8>, EncodeError> {
        fn info_len(info: &[u8]) -> Result<[u8; 4], EncodeError> {
            u32::try_from(info.len())
                .map(u32::to_le_bytes)
                .map_err(|_| EncodeError::TooLong {
                    what: "the information buffer",
                    len: info.len(),
                    max: u32::MAX as usize,
                })
        }
        Ok(match &self.body {
            Body::Open { max_control_transfer } => max_control_transfer.to_le_bytes().to_vec(),
            Body::Close => Vec::new(),
            Body::HostError(error) | Body::FunctionError(error) => error.code().to_le_bytes().to_vec(),
            Body::OpenDone(status) | Body::CloseDone(status) => status.code().to_le_bytes().to_vec(),
            Body::Command(Command {
                service,
                cid,
                command_type,
                info,
            }) => [
                &service.0[..],
                &cid.to_le_bytes(),
                &command_type.code().to_le_bytes(),
                &info_len(info)?,
                info,
            ]
            .concat(),
            Body::CommandDone(CommandDone {
                service,
                cid,
                status,
                info,
            }) => [
                &service.0[..],
                &cid.to_le_bytes(),
                &status.code().to_le_bytes(),
                &info_len(info)?,
                info,
            ]
            .concat(),
            Body::IndicateStatus(Indication { service, cid, info }) => {
                [&service.0[..], &cid.to_le_bytes(), &info_len(info)?, info].concat()
            }
        })
    }

    /// Writes the message as one transfer, however long it is.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let payload = self.payload()?;
        let fragment = self.message_type().is_fragmentable().then_some((1, 0));
        frame(self.message_type(), self.transaction_id, fragment, &payload)
    }

    /// Writes the message as fragments of at most `max_control_transfer` bytes each.
    pub fn encode_fragments(&self, max_control_transfer: usize) -> Result<Vec<Vec<u8>>, EncodeError> {
        if max_control_transfer < MIN_CONTROL_TRANSFER {
            return Err(EncodeError::MaxControlTransfer {
                max: max_control_transfer,
                min: MIN_CONTROL_TRANSFER,
            });
        }
        let message_type = self.message_type();
        if !message_type.is_fragmentable() {
            return Ok(vec![self.encode()?]);
        }
        let payload = self.payload()?;
        let chunk = max_control_transfer - HEADER_LEN - FRAGMENT_HEADER_LEN;
        let chunks: Vec<&[u8]> = payload.chunks(chunk).collect();
        let total = u32::try_from(chunks.len()).map_err(|_| EncodeError::TooLong {
            what: "the fragment count",
            len: chunks.len(),
            max: u32::MAX as usize,
        })?;
        (0..total)
            .zip(chunks)
            .map(|(current, data)| frame(message_type, self.transaction_id, Some((total, current)), data))
            .collect()
    }
}

/// Prefixes `payload` with the header and, for fragmentable types, the fragment header.
fn frame(
    message_type: MessageType,
    transaction_id: u32,
    fragment: Option<(u32, u32)>,
    payload: &[u8],
) -> Result<Vec<u8>, EncodeError> {
    let len = HEADER_LEN + fragment.map_or(0, |_| FRAGMENT_HEADER_LEN) + payload.len();
    let length = u32::try_from(len).map_err(|_| EncodeError::TooLong {
        what: "the message",
        len,
        max: u32::MAX as usize,
    })?;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&message_type.code().to_le_bytes());
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&transaction_id.to_le_bytes());
    if let Some((total, current)) = fragment {
        out.extend_from_slice(&total.to_le_bytes());
        out.extend_from_slice(&current.to_le_bytes());
    }
    out.extend_from_slice(payload);
    Ok(out)
}

/// One transfer as read from the wire: a whole message or one fragment of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawMessage<'a> {
    pub message_type: MessageType,
    pub transaction_id: u32,
    /// 1 and 0 for the types without a fragment header.
    pub total: u32,
    pub current: u32,
    /// Everything after the header and the fragment header.
    pub payload: &'a [u8],
}

impl<'a> RawMessage<'a> {
    /// Reads the headers of one transfer; `bytes` must be exactly the transfer.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let header = bytes.get(..HEADER_LEN).ok_or(DecodeError::Truncated {
            needed: HEADER_LEN,
            available: bytes.len(),
        })?;
        let word = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let code = word(header, 0);
        let message_type =
            MessageType::from_code(code).ok_or(DecodeError::UnknownMessageType { message_type: code })?;
        let declared = word(header, 4) as usize;
        if declared != bytes.len() {
            return Err(DecodeError::LengthMismatch {
                declared,
                actual: bytes.len(),
            });
        }
        if bytes.len() < message_type.min_len() {
            return Err(DecodeError::TooShort {
                message_type,
                len: bytes.len(),
                min: message_type.min_len(),
            });
        }
        let transaction_id = word(header, 8);
        if !message_type.is_fragmentable() {
            if bytes.len() != message_type.min_len() {
                return Err(DecodeError::FixedLength {
                    message_type,
                    len: bytes.len(),
                    expected: message_type.min_len(),
                });
            }
            return Ok(Self {
                message_type,
                transaction_id,
                total: 1,
                current: 0,
                payload: &bytes[HEADER_LEN..],
            });
        }
        let total = word(bytes, HEADER_LEN);
        let current = word(bytes, HEADER_LEN + 4);
        if total == 0 || current >= total {
            return Err(DecodeError::FragmentHeader { total, current });
        }
        let payload = &bytes[HEADER_LEN + FRAGMENT_HEADER_LEN..];
        // The first fragment must hold everything up to the information buffer.
        let min = message_type.body_header_len();
        if current == 0 && payload.len() < min {
            return Err(DecodeError::TooShort {
                message_type,
                len: bytes.len(),
                min: HEADER_LEN + FRAGMENT_HEADER_LEN + min,
            });
        }
        Ok(Self {
            message_type,
            transaction_id,
            total,
            current,
            payload,
        })
    }

    /// The InformationBufferLength a first fragment declares.
    pub(crate) fn declared_info_len(&self) -> Option<usize> {
        let at = self.message_type.body_header_len().checked_sub(4)?;
        let b = self.payload.get(at..at + 4)?;
        (self.current == 0).then(|| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    pub(crate) fn body_header_len(&self) -> usize {
        self.message_type.body_header_len()
    }
}
