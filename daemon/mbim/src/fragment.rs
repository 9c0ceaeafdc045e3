//! Reassembly of fragmented COMMAND, COMMAND_DONE and INDICATE_STATUS messages.

use crate::{
    ControlMessage, DecodeError, MessageType, ProtocolError,
    control::{FRAGMENT_HEADER_LEN, HEADER_LEN, RawMessage},
};

/// Why a transfer could not be added to a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    #[error("transfer could not be read as MBIM")]
    Decode {
        /// The transfer's transaction id, when its header could be read.
        transaction_id: Option<u32>,
        #[source]
        error: DecodeError,
    },
    #[error("fragment {got} of {message_type} transaction {transaction_id} arrived while fragment {expected} was due")]
    OutOfSequence {
        message_type: MessageType,
        transaction_id: u32,
        expected: u32,
        got: u32,
    },
    #[error("fragment {current} of {message_type} transaction {transaction_id} arrived twice")]
    Duplicate {
        message_type: MessageType,
        transaction_id: u32,
        current: u32,
    },
    #[error("{message_type} transaction {transaction_id} was announced in {expected} fragments, now in {got}")]
    TotalChanged {
        message_type: MessageType,
        transaction_id: u32,
        expected: u32,
        got: u32,
    },
    #[error(
        "{message_type} transaction {transaction_id} declares a {declared}-byte information buffer but its fragments carry {actual}"
    )]
    LengthMismatch {
        message_type: MessageType,
        transaction_id: u32,
        declared: usize,
        actual: usize,
    },
    #[error("{message_type} transaction {transaction_id} grows to {len} bytes; at most {max} are reassembled")]
    TooLarge {
        message_type: MessageType,
        transaction_id: u32,
        len: usize,
        max: usize,
    },
    #[error("{max} messages are already being reassembled; transaction {transaction_id} was dropped")]
    TooManyPartial { transaction_id: u32, max: usize },
}

impl FragmentError {
    /// The transaction the error concerns, to answer it with a HOST_ERROR / FUNCTION_ERROR.
    pub const fn transaction_id(&self) -> Option<u32> {
        match self {
            Self::Decode { transaction_id, .. } => *transaction_id,
            Self::OutOfSequence { transaction_id, .. }
            | Self::Duplicate { transaction_id, .. }
            | Self::TotalChanged { transaction_id, .. }
            | Self::LengthMismatch { transaction_id, .. }
            | Self::TooLarge { transaction_id, .. }
            | Self::TooManyPartial { transaction_id, .. } => Some(*transaction_id),
        }
    }

    /// The protocol error code MBIM uses for this failure.
    pub const fn protocol_error(&self) -> ProtocolError {
        match self {
            Self::Decode {
                error: DecodeError::LengthMismatch { .. } | DecodeError::InfoLengthMismatch { .. },
                ..
            }
            | Self::LengthMismatch { .. } => ProtocolError::LengthMismatch,
            Self::Decode { .. } => ProtocolError::Unknown,
            Self::OutOfSequence { .. } | Self::Duplicate { .. } | Self::TotalChanged { .. } => {
                ProtocolError::FragmentOutOfSequence
            }
            Self::TooLarge { .. } | Self::TooManyPartial { .. } => ProtocolError::MaxTransfer,
        }
    }
}

/// The default bound on one reassembled message.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 64 * 1024;
/// The default bound on messages reassembled at once.
pub const DEFAULT_MAX_PARTIAL: usize = 8;

#[derive(Debug, Clone)]
struct Partial {
    message_type: MessageType,
    transaction_id: u32,
    total: u32,
    next: u32,
    payload: Vec<u8>,
}

/// Turns transfers (whole messages or fragments) into whole [`ControlMessage`]s.
///
/// Fragments are matched by message type and transaction id, so it serves either end of the
/// link. Memory is bounded: one message never exceeds `max_message_len` bytes and at most
/// `max_partial` messages are incomplete at once. A failed message is dropped, except that a
/// duplicated fragment is only reported and reassembly goes on.
#[derive(Debug, Clone)]
pub struct Reassembler {
    partial: Vec<Partial>,
    max_message_len: usize,
    max_partial: usize,
}

impl Default for Reassembler {
    fn default() -> Self {
        Self::new()
    }
}

impl Reassembler {
    pub fn new() -> Self {
        Self::with_limits(DEFAULT_MAX_MESSAGE_LEN, DEFAULT_MAX_PARTIAL)
    }

    pub fn with_limits(max_message_len: usize, max_partial: usize) -> Self {
        Self {
            partial: Vec::new(),
            max_message_len,
            max_partial: max_partial.max(1),
        }
    }

    /// How many messages are waiting for more fragments.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// Forgets every incomplete message (after a CLOSE, a reset or a fragment timeout).
    pub fn clear(&mut self) {
        self.partial.clear();
    }

    /// Adds one transfer; returns the message it completes, if any.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Option<ControlMessage>, FragmentError> {
        let raw = RawMessage::decode(bytes).map_err(|error| FragmentError::Decode {
            transaction_id: (bytes.len() >= HEADER_LEN)
                .then(|| u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]])),
            error,
        })?;
        let RawMessage {
            message_type,
            transaction_id,
            total,
            current,
            payload,
        } = raw;
        let position = self
            .partial
            .iter()
            .position(|p| p.message_type == message_type && p.transaction_id == transaction_id);
        let Some(position) = position else {
            if current != 0 {
                return Err(FragmentError::OutOfSequence {
                    message_type,
                    transaction_id,
                    expected: 0,
                    got: current,
                });
            }
            if total == 1 {
                return Self::complete(message_type, transaction_id, payload).map(Some);
            }
            if self.partial.len() >= self.max_partial {
                return Err(FragmentError::TooManyPartial {
                    transaction_id,
                    max: self.max_partial,
                });
            }
            // A first fragment tells the final size, so an oversized message is refused at once.
            let declared = raw.declared_info_len().unwrap_or(0);
            let len = HEADER_LEN + FRAGMENT_HEADER_LEN + raw.body_header_len() + declared;
            self.check_len(message_type, transaction_id, len.max(HEADER_LEN + payload.len()))?;
            self.partial.push(Partial {
                message_type,
                transaction_id,
                total,
                next: 1,
                payload: payload.to_vec(),
            });
            return Ok(None);
        };
        let partial = &mut self.partial[position];
        if total != partial.total {
            let expected = partial.total;
            self.partial.remove(position);
            return Err(FragmentError::TotalChanged {
                message_type,
                transaction_id,
                expected,
                got: total,
            });
        }
        if current < partial.next {
            return Err(FragmentError::Duplicate {
                message_type,
                transaction_id,
                current,
            });
        }
        if current > partial.next {
            let expected = partial.next;
            self.partial.remove(position);
            return Err(FragmentError::OutOfSequence {
                message_type,
                transaction_id,
                expected,
                got: current,
            });
        }
        let len = HEADER_LEN + partial.payload.len() + payload.len();
        if let Err(error) = self.check_len(message_type, transaction_id, len) {
            self.partial.remove(position);
            return Err(error);
        }
        let partial = &mut self.partial[position];
        partial.payload.extend_from_slice(payload);
        partial.next += 1;
        if partial.next < partial.total {
            return Ok(None);
        }
        let partial = self.partial.remove(position);
        Self::complete(message_type, transaction_id, &partial.payload).map(Some)
    }

    fn check_len(&self, message_type: MessageType, transaction_id: u32, len: usize) -> Result<(), FragmentError> {
        if len > self.max_message_len {
            return Err(FragmentError::TooLarge {
                message_type,
                transaction_id,
                len,
                max: self.max_message_len,
            });
        }
        Ok(())
    }

    fn complete(
        message_type: MessageType,
        transaction_id: u32,
        payload: &[u8],
    ) -> Result<ControlMessage, FragmentError> {
        ControlMessage::from_payload(message_type, transaction_id, payload).map_err(|error| match error {
            DecodeError::InfoLengthMismatch { declared, actual } => FragmentError::LengthMismatch {
                message_type,
                transaction_id,
                declared,
                actual,
            },
            error => FragmentError::Decode {
                transaction_id: Some(transaction_id),
                error,
            },
        })
    }
}
