//! The typed-message contract shared by every service module.

use crate::{
    Command, CommandDone, CommandType, DecodeError, EncodeError, Indication, Status, Uuid,
    info::{Reader, Writer},
};

/// Which control message carries a typed information buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A COMMAND of type query.
    Query,
    /// A COMMAND of type set.
    Set,
    /// A COMMAND_DONE; also an INDICATE_STATUS when [`Message::NOTIFICATION`] is true.
    Response,
}

impl Kind {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::Set => "set",
            Self::Response => "response",
        }
    }
}

/// A typed MBIM message: one (service, CID, kind) and its information buffer.
pub trait Message: Sized {
    const SERVICE: Uuid;
    const CID: u32;
    const KIND: Kind;
    /// Whether the device also sends this layout as an INDICATE_STATUS.
    const NOTIFICATION: bool = false;
    /// What logs and errors call it, e.g. "BASIC_CONNECT DEVICE_CAPS response".
    const NAME: &'static str;

    /// Appends this message's fields to an information buffer.
    fn write(&self, out: &mut Writer);

    /// Reads this message from an information buffer; trailing bytes are ignored, as newer
    /// devices may append fields.
    fn read(info: &mut Reader<'_>) -> Result<Self, DecodeError>;

    fn to_info(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Writer::new();
        self.write(&mut out);
        out.finish()
    }

    fn from_info(info: &[u8]) -> Result<Self, DecodeError> {
        Self::read(&mut Reader::new(info, Self::NAME))
    }

    /// The COMMAND carrying this query or set.
    fn to_command(&self) -> Result<Command, EncodeError> {
        let command_type = match Self::KIND {
            Kind::Query => CommandType::Query,
            Kind::Set => CommandType::Set,
            Kind::Response => return Err(wrong_kind::<Self>("COMMAND")),
        };
        Ok(Command {
            service: Self::SERVICE,
            cid: Self::CID,
            command_type,
            info: self.to_info()?,
        })
    }

    /// Reads this query or set from a COMMAND, checking that the COMMAND really is it.
    fn from_command(command: &Command) -> Result<Self, DecodeError> {
        check::<Self>(command.service, command.cid)?;
        let expected = match Self::KIND {
            Kind::Query => CommandType::Query,
            Kind::Set => CommandType::Set,
            Kind::Response => {
                return Err(DecodeError::WrongKind {
                    expected: Self::NAME,
                    actual: "COMMAND",
                });
            }
        };
        if command.command_type != expected {
            return Err(DecodeError::WrongKind {
                expected: Self::NAME,
                actual: match command.command_type {
                    CommandType::Query => "query COMMAND",
                    CommandType::Set => "set COMMAND",
                },
            });
        }
        Self::from_info(&command.info)
    }

    /// The COMMAND_DONE carrying this response with `status`.
    fn to_command_done(&self, status: Status) -> Result<CommandDone, EncodeError> {
        if Self::KIND != Kind::Response {
            return Err(wrong_kind::<Self>("COMMAND_DONE"));
        }
        Ok(CommandDone {
            service: Self::SERVICE,
            cid: Self::CID,
            status,
            info: self.to_info()?,
        })
    }

    /// Reads this response from a COMMAND_DONE (whatever its status; check that first).
    fn from_command_done(done: &CommandDone) -> Result<Self, DecodeError> {
        check::<Self>(done.service, done.cid)?;
        if Self::KIND != Kind::Response {
            return Err(DecodeError::WrongKind {
                expected: Self::NAME,
                actual: "COMMAND_DONE",
            });
        }
        Self::from_info(&done.info)
    }

    /// The INDICATE_STATUS carrying this notification.
    fn to_indication(&self) -> Result<Indication, EncodeError> {
        if Self::KIND != Kind::Response || !Self::NOTIFICATION {
            return Err(wrong_kind::<Self>("INDICATE_STATUS"));
        }
        Ok(Indication {
            service: Self::SERVICE,
            cid: Self::CID,
            info: self.to_info()?,
        })
    }

    fn from_indication(indication: &Indication) -> Result<Self, DecodeError> {
        check::<Self>(indication.service, indication.cid)?;
        if Self::KIND != Kind::Response || !Self::NOTIFICATION {
            return Err(DecodeError::WrongKind {
                expected: Self::NAME,
                actual: "INDICATE_STATUS",
            });
        }
        Self::from_info(&indication.info)
    }
}

/// A query or set and the response type it is answered with.
pub trait Request: Message {
    type Response: Message;
}

fn wrong_kind<M: Message>(wanted: &'static str) -> EncodeError {
    EncodeError::WrongKind {
        message: M::NAME,
        kind: M::KIND.name(),
        wanted,
    }
}

fn check<M: Message>(service: Uuid, cid: u32) -> Result<(), DecodeError> {
    if service == M::SERVICE && cid == M::CID {
        Ok(())
    } else {
        Err(DecodeError::WrongMessage {
            expected: M::NAME,
            service,
            cid,
        })
    }
}

impl Command {
    /// Whether this COMMAND is the typed request `M`, for dispatching on it.
    pub fn is<M: Message>(&self) -> bool {
        self.service == M::SERVICE
            && self.cid == M::CID
            && matches!(
                (M::KIND, self.command_type),
                (Kind::Query, CommandType::Query) | (Kind::Set, CommandType::Set)
            )
    }
}

/// A 32-bit field: a plain `u32` or one of the value newtypes.
pub trait Word: Copy {
    fn from_word(word: u32) -> Self;
    fn word(self) -> u32;
}

impl Word for u32 {
    fn from_word(word: u32) -> Self {
        word
    }

    fn word(self) -> u32 {
        self
    }
}

/// Declares a u32 newtype with named values; unknown values still round-trip.
macro_rules! values {
    ($(#[$doc:meta])* $name:ident { $($konst:ident = $value:literal => $nick:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name(pub u32);

        impl $name {
            $(pub const $konst: Self = Self($value);)*

            /// The nickname mbimcli prints, if the value is known.
            pub const fn nick(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some($nick),)*
                    _ => None,
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                match self.nick() {
                    Some(nick) => f.write_str(nick),
                    None => write!(f, "{:#x}", self.0),
                }
            }
        }

        impl $crate::message::Word for $name {
            fn from_word(word: u32) -> Self {
                Self(word)
            }

            fn word(self) -> u32 {
                self.0
            }
        }
    };
}
pub(crate) use values;

/// Declares a message whose information buffer is nothing but 32-bit fields.
macro_rules! words_message {
    (
        $(#[$doc:meta])* $name:ident, $service:expr, $cid:expr, $kind:ident, $notification:literal, $label:literal,
        { $($(#[$fdoc:meta])* $field:ident: $ty:ty,)* }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $ty,)*
        }

        impl $crate::Message for $name {
            const SERVICE: $crate::Uuid = $service;
            const CID: u32 = $cid;
            const KIND: $crate::Kind = $crate::Kind::$kind;
            const NOTIFICATION: bool = $notification;
            const NAME: &'static str = $label;

            #[allow(unused_variables, reason = "messages without fields write nothing")]
            fn write(&self, out: &mut $crate::info::Writer) {
                let Self { $($field,)* } = self;
                $(out.u32($crate::message::Word::word(*$field));)*
            }

            #[allow(unused_variables, reason = "messages without fields ignore the buffer")]
            fn read(info: &mut $crate::info::Reader<'_>) -> Result<Self, $crate::DecodeError> {
                Ok(Self { $($field: $crate::message::Word::from_word(info.u32()?),)* })
            }
        }
    };
}
pub(crate) use words_message;
