//! QMUX frames: the marker, the QMUX header and the two SDU header shapes (CTL and services).

use std::fmt;

use crate::{DecodeError, EncodeError};

/// The interface-type byte that starts every QMUX frame.
pub const QMUX_MARKER: u8 = 0x01;
/// The longest possible frame: the marker plus a 16-bit length.
pub const MAX_FRAME_LEN: usize = 1 + u16::MAX as usize;
/// CTL is always addressed with client id 0.
pub const CTL_CLIENT_ID: u8 = 0x00;
/// Indications sent to every client of a service carry this client id.
pub const BROADCAST_CLIENT_ID: u8 = 0xFF;

/// Bytes of the QMUX header after the marker: length (2), control flags, service, client id.
const QMUX_HEADER_LEN: usize = 5;
/// CTL SDU header: flags, u8 transaction, message id (2), TLV length (2).
const CTL_SDU_HEADER_LEN: usize = 6;
/// Service SDU header: flags, u16 transaction, message id (2), TLV length (2).
const SERVICE_SDU_HEADER_LEN: usize = 7;

const CONTROL_FROM_HOST: u8 = 0x00;
const CONTROL_FROM_MODEM: u8 = 0x80;

const SERVICE_FLAG_COMPOUND: u8 = 0x01;

/// A QMI service number; a newtype so services this codec does not name still round-trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Service(pub u8);

impl Service {
    pub const CTL: Self = Self(0x00);
    pub const WDS: Self = Self(0x01);
    pub const DMS: Self = Self(0x02);
    pub const NAS: Self = Self(0x03);
    pub const QOS: Self = Self(0x04);
    pub const WMS: Self = Self(0x05);
    pub const PDS: Self = Self(0x06);
    pub const AUTH: Self = Self(0x07);
    pub const AT: Self = Self(0x08);
    pub const VOICE: Self = Self(0x09);
    pub const CAT2: Self = Self(0x0A);
    pub const UIM: Self = Self(0x0B);
    pub const PBM: Self = Self(0x0C);
    pub const LOC: Self = Self(0x10);
    pub const SAR: Self = Self(0x11);
    pub const IMS: Self = Self(0x12);
    pub const WDA: Self = Self(0x1A);
    pub const PDC: Self = Self(0x24);
    pub const DSD: Self = Self(0x2A);
    pub const UIM_HTTP: Self = Self(0x47);

    /// The short upper-case name libqmi and the specs use, if this codec knows it.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::CTL => "CTL",
            Self::WDS => "WDS",
            Self::DMS => "DMS",
            Self::NAS => "NAS",
            Self::QOS => "QOS",
            Self::WMS => "WMS",
            Self::PDS => "PDS",
            Self::AUTH => "AUTH",
            Self::AT => "AT",
            Self::VOICE => "VOICE",
            Self::CAT2 => "CAT2",
            Self::UIM => "UIM",
            Self::PBM => "PBM",
            Self::LOC => "LOC",
            Self::SAR => "SAR",
            Self::IMS => "IMS",
            Self::WDA => "WDA",
            Self::PDC => "PDC",
            Self::DSD => "DSD",
            Self::UIM_HTTP => "UIM_HTTP",
            _ => return None,
        })
    }

    const fn sdu_header_len(self) -> usize {
        if self.0 == Self::CTL.0 {
            CTL_SDU_HEADER_LEN
        } else {
            SERVICE_SDU_HEADER_LEN
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{:#04x}", self.0),
        }
    }
}

/// What an SDU is; the wire flags differ between CTL and the other services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    Request,
    Response,
    Indication,
}

impl MessageKind {
    const fn sdu_flags(self, service: Service) -> u8 {
        match (service.0 == Service::CTL.0, self) {
            (_, Self::Request) => 0x00,
            (true, Self::Response) => 0x01,
            // The same bit means "indication" to CTL and "response" to every other service.
            (true, Self::Indication) | (false, Self::Response) => 0x02,
            (false, Self::Indication) => 0x04,
        }
    }

    fn from_sdu_flags(service: Service, flags: u8) -> Result<Self, DecodeError> {
        if service == Service::CTL {
            return match flags {
                0x00 => Ok(Self::Request),
                0x01 => Ok(Self::Response),
                0x02 => Ok(Self::Indication),
                _ => Err(DecodeError::SduFlags { service, flags }),
            };
        }
        if flags & SERVICE_FLAG_COMPOUND != 0 {
            return Err(DecodeError::Compound { flags });
        }
        match flags {
            0x00 => Ok(Self::Request),
            0x02 => Ok(Self::Response),
            0x04 => Ok(Self::Indication),
            _ => Err(DecodeError::SduFlags { service, flags }),
        }
    }

    /// Requests travel host → modem; responses and indications modem → host.
    const fn control_flags(self) -> u8 {
        match self {
            Self::Request => CONTROL_FROM_HOST,
            Self::Response | Self::Indication => CONTROL_FROM_MODEM,
        }
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Request => "request",
            Self::Response => "response",
            Self::Indication => "indication",
        })
    }
}

/// One QMUX frame with its TLVs still as bytes (see [`crate::tlv`] and the typed messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub service: Service,
    pub client_id: u8,
    pub kind: MessageKind,
    /// One byte on the wire for CTL, two for the other services.
    pub transaction: u16,
    pub message_id: u16,
    pub tlvs: Vec<u8>,
}

impl Frame {
    /// Reads exactly one frame; `bytes` must hold the whole frame and nothing after it.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (&marker, rest) = bytes.split_first().ok_or(DecodeError::Truncated {
            needed: 1,
            available: 0,
        })?;
        if marker != QMUX_MARKER {
            return Err(DecodeError::NotQmux { marker });
        }
        let header = rest.get(..QMUX_HEADER_LEN).ok_or(DecodeError::Truncated {
            needed: 1 + QMUX_HEADER_LEN,
            available: bytes.len(),
        })?;
        let declared = usize::from(u16::from_le_bytes([header[0], header[1]]));
        if declared != rest.len() {
            return Err(DecodeError::LengthMismatch {
                declared,
                actual: rest.len(),
            });
        }
        let control = header[2];
        if control != CONTROL_FROM_HOST && control != CONTROL_FROM_MODEM {
            return Err(DecodeError::ControlFlags { flags: control });
        }
        let service = Service(header[3]);
        let client_id = header[4];
        let sdu = &rest[QMUX_HEADER_LEN..];
        let sdu_header_len = service.sdu_header_len();
        let sdu_header = sdu.get(..sdu_header_len).ok_or(DecodeError::Truncated {
            needed: 1 + QMUX_HEADER_LEN + sdu_header_len,
            available: bytes.len(),
        })?;
        let kind = MessageKind::from_sdu_flags(service, sdu_header[0])?;
        if kind.control_flags() != control {
            return Err(DecodeError::DirectionMismatch { kind, control });
        }
        // The transaction is the only field whose width differs between the two shapes.
        let (transaction, ids) = if service == Service::CTL {
            (u16::from(sdu_header[1]), &sdu_header[2..])
        } else {
            (u16::from_le_bytes([sdu_header[1], sdu_header[2]]), &sdu_header[3..])
        };
        let message_id = u16::from_le_bytes([ids[0], ids[1]]);
        let tlv_len = usize::from(u16::from_le_bytes([ids[2], ids[3]]));
        let tlvs = &sdu[sdu_header_len..];
        if tlv_len != tlvs.len() {
            return Err(DecodeError::TlvLengthMismatch {
                declared: tlv_len,
                actual: tlvs.len(),
            });
        }
        Ok(Self {
            service,
            client_id,
            kind,
            transaction,
            message_id,
            tlvs: tlvs.to_vec(),
        })
    }

    /// Writes the frame with the control flags and SDU shape its service and kind call for.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let Self {
            service,
            client_id,
            kind,
            transaction,
            message_id,
            tlvs,
        } = self;
        let sdu_header_len = service.sdu_header_len();
        let tlv_len = u16::try_from(tlvs.len()).map_err(|_| EncodeError::TooLong {
            what: "the TLV section",
            len: tlvs.len(),
            max: usize::from(u16::MAX),
        })?;
        let after_marker = QMUX_HEADER_LEN + sdu_header_len + tlvs.len();
        let length = u16::try_from(after_marker).map_err(|_| EncodeError::TooLong {
            what: "the QMUX frame",
            len: after_marker,
            max: usize::from(u16::MAX),
        })?;
        let mut out = Vec::with_capacity(1 + after_marker);
        out.push(QMUX_MARKER);
        out.extend_from_slice(&length.to_le_bytes());
        out.push(kind.control_flags());
        out.push(service.0);
        out.push(*client_id);
        out.push(kind.sdu_flags(*service));
        if *service == Service::CTL {
            let transaction = u8::try_from(*transaction).map_err(|_| EncodeError::CtlTransaction {
                transaction: *transaction,
            })?;
            out.push(transaction);
        } else {
            out.extend_from_slice(&transaction.to_le_bytes());
        }
        out.extend_from_slice(&message_id.to_le_bytes());
        out.extend_from_slice(&tlv_len.to_le_bytes());
        out.extend_from_slice(tlvs);
        Ok(out)
    }
}

/// What the start of a buffer says about the frame there, for the [`crate::Splitter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderCheck {
    /// Not enough bytes yet to tell.
    NeedMore,
    /// No frame starts here.
    Invalid,
    /// A frame of this many bytes (marker included) is complete at the start of the buffer.
    Complete(usize),
}

/// Checks the header at the start of `buf` as far as the bytes present allow.
pub(crate) fn check_header(buf: &[u8], max_frame_len: usize) -> HeaderCheck {
    if buf.first() != Some(&QMUX_MARKER) {
        return HeaderCheck::Invalid;
    }
    if let Some(&control) = buf.get(3) {
        if control != CONTROL_FROM_HOST && control != CONTROL_FROM_MODEM {
            return HeaderCheck::Invalid;
        }
    }
    let (Some(&lo), Some(&hi)) = (buf.get(1), buf.get(2)) else {
        return HeaderCheck::NeedMore;
    };
    let declared = usize::from(u16::from_le_bytes([lo, hi]));
    let total = 1 + declared;
    if total > max_frame_len {
        return HeaderCheck::Invalid;
    }
    let Some(&service) = buf.get(4) else {
        return HeaderCheck::NeedMore;
    };
    let sdu_header_len = Service(service).sdu_header_len();
    // The TLV length is the last two bytes of either SDU header shape.
    let tlv_len_at = QMUX_HEADER_LEN + sdu_header_len - 1;
    if declared < QMUX_HEADER_LEN + sdu_header_len {
        return HeaderCheck::Invalid;
    }
    let (Some(&lo), Some(&hi)) = (buf.get(tlv_len_at), buf.get(tlv_len_at + 1)) else {
        return HeaderCheck::NeedMore;
    };
    // Two independent lengths agreeing is what tells a frame from garbage holding a 0x01.
    if usize::from(u16::from_le_bytes([lo, hi])) != declared - QMUX_HEADER_LEN - sdu_header_len {
        return HeaderCheck::Invalid;
    }
    if buf.len() < total {
        HeaderCheck::NeedMore
    } else {
        HeaderCheck::Complete(total)
    }
}
