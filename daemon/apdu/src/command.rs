//! Command APDUs (ISO 7816-4 §5.1): the four cases, in short and extended length form.

/// Instruction bytes of the commands this crate builds.
pub mod ins {
    /// MANAGE CHANNEL (open or close a logical channel).
    pub const MANAGE_CHANNEL: u8 = 0x70;
    /// SELECT (here: by DF name, i.e. AID).
    pub const SELECT: u8 = 0xA4;
    /// GET RESPONSE, which fetches data announced by 61xx.
    pub const GET_RESPONSE: u8 = 0xC0;
    /// STORE DATA, which carries every ES10 function to the ISD-R.
    pub const STORE_DATA: u8 = 0xE2;
}

/// The largest data field any command can carry (extended Lc).
pub const MAX_DATA_LEN: usize = 65_535;
/// The largest data field a short command can carry.
pub const MAX_SHORT_DATA_LEN: usize = 255;

/// Ne, the most response bytes the command asks for: 1 to 65 536.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Le(u32);

impl Le {
    /// 256, written 00 in short form: "as much as a short response holds".
    pub const SHORT_MAX: Self = Self(256);
    /// 65 536, written 0000 in extended form.
    pub const EXTENDED_MAX: Self = Self(65_536);

    /// Ne = `ne`, which must be 1 to 65 536.
    pub const fn new(ne: u32) -> Result<Self, CommandError> {
        if ne == 0 || ne > 65_536 {
            Err(CommandError::LeOutOfRange { ne })
        } else {
            Ok(Self(ne))
        }
    }

    /// The Ne of a short Le byte, or of the SW2 of 61xx/6Cxx: 00 means 256.
    pub const fn from_short(byte: u8) -> Self {
        Self(if byte == 0 { 256 } else { byte as u32 })
    }

    /// The Ne of a two-byte extended Le: 0000 means 65 536.
    pub const fn from_extended(value: u16) -> Self {
        Self(if value == 0 { 65_536 } else { value as u32 })
    }

    /// Ne as a number of bytes.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The short Le byte, if Ne fits one.
    fn short_byte(self) -> Option<u8> {
        match self.0 {
            256 => Some(0),
            ne => u8::try_from(ne).ok(),
        }
    }

    /// The two-byte extended Le; every Ne fits, 65 536 being the one that does not fit a u16.
    fn extended_bytes(self) -> [u8; 2] {
        u16::try_from(self.0).map_or([0, 0], u16::to_be_bytes)
    }
}

/// How Lc and Le are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Length {
    /// One-byte Lc and Le: data up to 255 bytes, Ne up to 256.
    Short,
    /// `00` then two-byte Lc and Le: data up to 65 535 bytes, Ne up to 65 536.
    Extended,
}

/// What a SELECT by AID asks the card to return (its P2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SelectP2 {
    /// P2 = 00: first occurrence, return the FCI (sent with Le = 00).
    Fci,
    /// P2 = 0C: first occurrence, no response data (sent without Le).
    NoResponseData,
}

/// A command APDU: header, optional data field, optional Le.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Command {
    /// Class byte; [`crate::exchange()`] rewrites its channel bits.
    pub cla: u8,
    /// Instruction byte, see [`ins`].
    pub ins: u8,
    /// First parameter byte.
    pub p1: u8,
    /// Second parameter byte.
    pub p2: u8,
    /// The data field; empty means no Lc.
    pub data: Vec<u8>,
    /// Ne; `None` means no Le field.
    pub le: Option<Le>,
}

/// Why a command APDU could not be encoded or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("Le must ask for 1 to 65536 bytes, not {ne}")]
    LeOutOfRange { ne: u32 },
    #[error("the data field is {len} bytes long; a command carries at most 65535")]
    DataTooLong { len: usize },
    #[error("the data field is {len} bytes long; a short command carries at most 255")]
    DataTooLongForShort { len: usize },
    #[error("Le asks for {ne} bytes; a short command asks for at most 256")]
    LeTooLargeForShort { ne: u32 },
    #[error("an AID is 5 to 16 bytes long, not {len}")]
    AidLength { len: usize },
    #[error("a command APDU needs its 4 header bytes but only {len} are present")]
    Truncated { len: usize },
    #[error("Lc announces {lc} data bytes but {remaining} bytes follow it")]
    LcMismatch { lc: usize, remaining: usize },
    #[error("the {body_len} bytes after the header fit none of the four command cases")]
    Malformed { body_len: usize },
}

impl Command {
    /// A case 1 command (header only); add data and Le with [`Command::with_data`] and
    /// [`Command::with_le`].
    pub fn new(cla: u8, ins: u8, p1: u8, p2: u8) -> Self {
        Self {
            cla,
            ins,
            p1,
            p2,
            data: Vec::new(),
            le: None,
        }
    }

    /// The command with `data` as its data field.
    #[must_use]
    pub fn with_data(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.data = data.into();
        self
    }

    /// The command with Le = `le`.
    #[must_use]
    pub fn with_le(mut self, le: Le) -> Self {
        self.le = Some(le);
        self
    }

    /// SELECT by DF name: `00 A4 04 P2 Lc AID [00]`, on the basic channel until
    /// [`crate::exchange()`] or [`crate::with_channel`] moves it.
    pub fn select_by_aid(aid: &[u8], p2: SelectP2) -> Result<Self, CommandError> {
        if !(5..=16).contains(&aid.len()) {
            return Err(CommandError::AidLength { len: aid.len() });
        }
        let command = Self::new(0x00, ins::SELECT, 0x04, 0x00).with_data(aid);
        Ok(match p2 {
            SelectP2::Fci => command.with_le(Le::SHORT_MAX),
            SelectP2::NoResponseData => Self { p2: 0x0C, ..command },
        })
    }

    /// GET RESPONSE `00 C0 00 00 Le`, on the basic channel until moved.
    pub fn get_response(le: Le) -> Self {
        Self::new(0x00, ins::GET_RESPONSE, 0x00, 0x00).with_le(le)
    }

    /// The length form [`Command::encode`] picks: short whenever the data and Le fit it.
    pub fn length(&self) -> Length {
        let Self { data, le, .. } = self;
        if data.len() <= MAX_SHORT_DATA_LEN && le.is_none_or(|le| le.get() <= 256) {
            Length::Short
        } else {
            Length::Extended
        }
    }

    /// Encodes in the form [`Command::length`] picks.
    pub fn encode(&self) -> Result<Vec<u8>, CommandError> {
        self.encode_as(self.length())
    }

    /// Encodes in the given form, failing if the data or Le does not fit it.
    pub fn encode_as(&self, length: Length) -> Result<Vec<u8>, CommandError> {
        let Self {
            cla,
            ins,
            p1,
            p2,
            data,
            le,
        } = self;
        let len = data.len();
        let lc = u16::try_from(len).map_err(|_| CommandError::DataTooLong { len })?;
        let mut out = Vec::with_capacity(4 + 3 + len + 3);
        out.extend_from_slice(&[*cla, *ins, *p1, *p2]);
        match length {
            Length::Short => {
                if !data.is_empty() {
                    let lc = u8::try_from(lc).map_err(|_| CommandError::DataTooLongForShort { len })?;
                    out.push(lc);
                    out.extend_from_slice(data);
                }
                if let Some(le) = le {
                    let byte = le
                        .short_byte()
                        .ok_or(CommandError::LeTooLargeForShort { ne: le.get() })?;
                    out.push(byte);
                }
            }
            Length::Extended => {
                if !data.is_empty() {
                    out.push(0);
                    out.extend_from_slice(&lc.to_be_bytes());
                    out.extend_from_slice(data);
                }
                if let Some(le) = le {
                    // Without Lc, the 00 marker moves in front of Le.
                    if data.is_empty() {
                        out.push(0);
                    }
                    out.extend_from_slice(&le.extended_bytes());
                }
            }
        }
        Ok(out)
    }

    /// Decodes any of the four cases in either length form.
    pub fn decode(bytes: &[u8]) -> Result<Self, CommandError> {
        Self::decode_with_length(bytes).map(|(command, _)| command)
    }

    /// Decodes and also says which form the bytes used; a case 1 command counts as short.
    pub fn decode_with_length(bytes: &[u8]) -> Result<(Self, Length), CommandError> {
        let Some((&[cla, ins, p1, p2], body)) = bytes.split_first_chunk::<4>() else {
            return Err(CommandError::Truncated { len: bytes.len() });
        };
        let (data, le, length) = match body {
            [] => (&[][..], None, Length::Short),
            [le] => (&[][..], Some(Le::from_short(*le)), Length::Short),
            [lc, rest @ ..] if *lc != 0 => {
                let lc = usize::from(*lc);
                match rest.len().checked_sub(lc) {
                    Some(0) => (rest, None, Length::Short),
                    Some(1) => (&rest[..lc], Some(Le::from_short(rest[lc])), Length::Short),
                    _ => {
                        return Err(CommandError::LcMismatch {
                            lc,
                            remaining: rest.len(),
                        });
                    }
                }
            }
            [0, hi, lo] => (
                &[][..],
                Some(Le::from_extended(u16::from_be_bytes([*hi, *lo]))),
                Length::Extended,
            ),
            [0, hi, lo, rest @ ..] => {
                let lc = usize::from(u16::from_be_bytes([*hi, *lo]));
                match rest.len().checked_sub(lc) {
                    // An extended Lc of 0000 is not a data field of zero bytes: nothing may follow.
                    _ if lc == 0 => return Err(CommandError::Malformed { body_len: body.len() }),
                    Some(0) => (rest, None, Length::Extended),
                    Some(2) => {
                        let le = u16::from_be_bytes([rest[lc], rest[lc + 1]]);
                        (&rest[..lc], Some(Le::from_extended(le)), Length::Extended)
                    }
                    _ => {
                        return Err(CommandError::LcMismatch {
                            lc,
                            remaining: rest.len(),
                        });
                    }
                }
            }
            _ => return Err(CommandError::Malformed { body_len: body.len() }),
        };
        let command = Self {
            cla,
            ins,
            p1,
            p2,
            data: data.to_vec(),
            le,
        };
        Ok((command, length))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{XorShift, hex};

    const ISD_R: &str = "A0000005591010FFFFFFFF8900000100";

    fn le(ne: u32) -> Le {
        Le::new(ne).unwrap()
    }

    #[test]
    fn encodes_the_four_short_cases() {
        let case1 = Command::new(0x00, 0x70, 0x80, 0x01);
        assert_eq!(case1.encode().unwrap(), hex("00708001"));
        let case2 = Command::new(0x00, 0x70, 0x00, 0x00).with_le(Le::from_short(1));
        assert_eq!(case2.encode().unwrap(), hex("0070000001"));
        let case3 = Command::new(0x81, ins::STORE_DATA, 0x91, 0x00).with_data(hex("BF3E035C015A"));
        assert_eq!(case3.encode().unwrap(), hex("81E2910006BF3E035C015A"));
        let case4 = Command::select_by_aid(&hex(ISD_R), SelectP2::Fci).unwrap();
        assert_eq!(case4.encode().unwrap(), hex(&format!("00A4040010{ISD_R}00")));
        for command in [case1, case2, case3, case4] {
            assert_eq!(Command::decode(&command.encode().unwrap()).unwrap(), command);
        }
    }

    #[test]
    fn decodes_the_select_lpac_sends() {
        let (command, length) = Command::decode_with_length(&hex(&format!("01A4040010{ISD_R}"))).unwrap();
        assert_eq!(length, Length::Short);
        let expected = Command::select_by_aid(&hex(ISD_R), SelectP2::NoResponseData).unwrap();
        assert_eq!(
            command,
            Command {
                cla: 0x01,
                p2: 0x00,
                ..expected.clone()
            }
        );
        assert_eq!(expected.encode().unwrap(), hex(&format!("00A4040C10{ISD_R}")));
    }

    #[test]
    fn le_of_256_and_65536_are_written_as_zero() {
        let get = Command::get_response(Le::SHORT_MAX);
        assert_eq!(get.encode().unwrap(), hex("00C0000000"));
        assert_eq!(get.encode_as(Length::Extended).unwrap(), hex("00C00000000100"));
        let all = Command::new(0x00, 0xB0, 0x00, 0x00).with_le(Le::EXTENDED_MAX);
        assert_eq!(all.length(), Length::Extended);
        assert_eq!(all.encode().unwrap(), hex("00B00000000000"));
        assert_eq!(Command::decode(&hex("00B00000000000")).unwrap(), all);
        assert_eq!(Command::decode(&hex("00C0000000")).unwrap(), get);
    }

    #[test]
    fn extended_length_is_chosen_when_short_does_not_fit() {
        let data = vec![0x5A; 300];
        let case3 = Command::new(0x80, 0xE2, 0x91, 0x00).with_data(data.clone());
        let bytes = case3.encode().unwrap();
        assert_eq!(bytes[..7], hex("80E29100 00012C"));
        assert_eq!(bytes.len(), 7 + 300);
        assert_eq!(
            Command::decode_with_length(&bytes).unwrap(),
            (case3.clone(), Length::Extended)
        );

        let case4 = case3.with_le(Le::from_short(0));
        let bytes = case4.encode().unwrap();
        assert_eq!(bytes[307..], hex("0100"));
        assert_eq!(Command::decode(&bytes).unwrap(), case4);

        let case2 = Command::new(0x00, 0xB0, 0x00, 0x00).with_le(Le::new(1000).unwrap());
        assert_eq!(case2.encode().unwrap(), hex("00B00000 0003E8"));

        // Forcing extended on small commands is allowed and decodes back the same.
        let small = Command::new(0x00, 0xCB, 0x00, 0x00)
            .with_data(hex("8301"))
            .with_le(Le::from_short(0x10));
        let bytes = small.encode_as(Length::Extended).unwrap();
        assert_eq!(bytes, hex("00CB0000 000002 8301 0010"));
        assert_eq!(Command::decode_with_length(&bytes).unwrap(), (small, Length::Extended));
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let huge = Command::new(0, 0, 0, 0).with_data(vec![0; 65_536]);
        assert_eq!(huge.encode(), Err(CommandError::DataTooLong { len: 65_536 }));
        let long = Command::new(0, 0, 0, 0).with_data(vec![0; 256]);
        assert_eq!(
            long.encode_as(Length::Short),
            Err(CommandError::DataTooLongForShort { len: 256 })
        );
        let big_le = Command::new(0, 0, 0, 0).with_le(Le::new(257).unwrap());
        assert_eq!(
            big_le.encode_as(Length::Short),
            Err(CommandError::LeTooLargeForShort { ne: 257 })
        );
        assert_eq!(Le::new(0), Err(CommandError::LeOutOfRange { ne: 0 }));
        assert_eq!(Le::new(65_537), Err(CommandError::LeOutOfRange { ne: 65_537 }));
        assert_eq!(
            Command::select_by_aid(&[0xA0; 17], SelectP2::Fci),
            Err(CommandError::AidLength { len: 17 })
        );
        assert_eq!(
            Command::select_by_aid(&[0xA0; 4], SelectP2::Fci),
            Err(CommandError::AidLength { len: 4 })
        );
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert_eq!(Command::decode(&hex("00A404")), Err(CommandError::Truncated { len: 3 }));
        assert_eq!(
            Command::decode(&hex("00A40400 05 A000")),
            Err(CommandError::LcMismatch { lc: 5, remaining: 2 })
        );
        assert_eq!(
            Command::decode(&hex("00A40400 02 A00000 00")),
            Err(CommandError::LcMismatch { lc: 2, remaining: 4 })
        );
        assert_eq!(
            Command::decode(&hex("00A40400 0000")),
            Err(CommandError::Malformed { body_len: 2 })
        );
        assert_eq!(
            Command::decode(&hex("00A40400 000000 AA")),
            Err(CommandError::Malformed { body_len: 4 })
        );
        assert_eq!(
            Command::decode(&hex("00A40400 000003 AABB")),
            Err(CommandError::LcMismatch { lc: 3, remaining: 2 })
        );
        assert_eq!(
            Command::decode(&hex("00A40400 000001 AA 00")),
            Err(CommandError::LcMismatch { lc: 1, remaining: 2 })
        );
    }

    #[test]
    fn random_commands_round_trip_in_both_forms() {
        let mut rng = XorShift::new(0x00A9_D0C0);
        for _ in 0..2_000 {
            let len = match rng.below(4) {
                0 => 0,
                1 => rng.below(256),
                2 => 200 + rng.below(200),
                _ => rng.below(70_000),
            };
            let ne = match rng.below(3) {
                0 => None,
                1 => Some(le(1 + u32::try_from(rng.below(256)).unwrap())),
                _ => Some(le(1 + u32::try_from(rng.below(65_536)).unwrap())),
            };
            let [cla, ins, p1, p2] = rng.next_u64().to_le_bytes()[..4].try_into().unwrap();
            let command = Command {
                cla,
                ins,
                p1,
                p2,
                data: rng.bytes(len),
                le: ne,
            };
            for length in [Length::Short, Length::Extended] {
                match command.encode_as(length) {
                    Ok(bytes) => {
                        let (back, used) = Command::decode_with_length(&bytes).unwrap();
                        assert_eq!(back, command);
                        assert_eq!(back.encode_as(used).unwrap(), bytes);
                    }
                    Err(CommandError::DataTooLong { .. }) => assert!(len > MAX_DATA_LEN),
                    Err(CommandError::DataTooLongForShort { .. } | CommandError::LeTooLargeForShort { .. }) => {
                        assert_eq!(length, Length::Short);
                        assert_eq!(command.length(), Length::Extended);
                    }
                    Err(other) => panic!("unexpected {other}"),
                }
            }
        }
    }
}
