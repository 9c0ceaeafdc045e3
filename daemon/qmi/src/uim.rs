//! UIM (service 0x0B): card and slot status, refresh, and raw APDUs on logical channels
//! (the path to the eUICC's ISD-R).

use crate::{
    DecodeError, EncodeError, Message, MessageKind, Request, Service,
    message::{Body, body_message, empty_message, named_values},
    tlv,
};

pub const SEND_APDU: u16 = 0x003B;
pub const LOGICAL_CHANNEL: u16 = 0x003F;
pub const REGISTER_EVENTS: u16 = 0x002E;
pub const GET_CARD_STATUS: u16 = 0x002F;
pub const CARD_STATUS_INDICATION: u16 = 0x0032;
pub const REFRESH_INDICATION: u16 = 0x0033;
pub const OPEN_LOGICAL_CHANNEL: u16 = 0x0042;
pub const GET_SLOT_STATUS: u16 = 0x0047;
pub const SLOT_STATUS_INDICATION: u16 = 0x0048;

/// Events Register Events can turn on (`QmiUimEventRegistrationFlag` bits).
pub mod events {
    pub const CARD_STATUS: u32 = 1 << 0;
    pub const SAP_CONNECTION: u32 = 1 << 1;
    pub const EXTENDED_CARD_STATUS: u32 = 1 << 2;
    pub const CLOSE_OF_PROVISIONING_SESSIONS: u32 = 1 << 3;
    pub const PHYSICAL_SLOT_STATUS: u32 = 1 << 4;
    pub const SIM_BUSY_STATUS: u32 = 1 << 5;
    pub const REDUCED_CARD_STATUS: u32 = 1 << 6;
    pub const RECOVERY_COMPLETE: u32 = 1 << 7;
    pub const SUPPLY_VOLTAGE_VCC_STATUS: u32 = 1 << 8;
    pub const CARD_ACTIVATION_STATUS: u32 = 1 << 9;
    pub const REMOTE_SIMLOCK_CONFIGURATION: u32 = 1 << 10;
    pub const SIMLOCK_TEMPORARY_UNLOCK_STATUS: u32 = 1 << 11;
}

const TLV_EVENT_MASK: u8 = 0x01;
const TLV_EVENT_MASK_ANSWER: u8 = 0x10;

/// Chooses this client's UIM indications; `mask` is [`events`] bits and replaces the last one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegisterEvents {
    pub mask: u32,
}

impl Message for RegisterEvents {
    const SERVICE: Service = Service::UIM;
    const MESSAGE_ID: u16 = REGISTER_EVENTS;
    const KIND: MessageKind = MessageKind::Request;
    const NAME: &'static str = "UIM Register Events request";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        out.put_u32(TLV_EVENT_MASK, self.mask);
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        let mask = tlv::fixed::<4>(
            tlv::require(tlvs, TLV_EVENT_MASK, Self::NAME)?,
            TLV_EVENT_MASK,
            Self::NAME,
            "4",
        )?;
        Ok(Self {
            mask: u32::from_le_bytes(mask),
        })
    }
}

impl Request for RegisterEvents {
    type Response = RegisterEventsResponse;
}

/// The events the modem actually turned on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegisterEventsResponse {
    pub mask: Option<u32>,
}

impl Message for RegisterEventsResponse {
    const SERVICE: Service = Service::UIM;
    const MESSAGE_ID: u16 = REGISTER_EVENTS;
    const KIND: MessageKind = MessageKind::Response;
    const NAME: &'static str = "UIM Register Events response";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        out.put_opt(TLV_EVENT_MASK_ANSWER, self.mask, tlv::Writer::put_u32);
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            mask: tlv::find_u32(tlvs, TLV_EVENT_MASK_ANSWER, Self::NAME)?,
        })
    }
}

named_values!(
    /// `QmiUimCardState`.
    CardState(u8) {
        ABSENT = 0,
        PRESENT = 1,
        ERROR = 2,
    }
);

named_values!(
    /// `QmiUimPinState`.
    PinState(u8) {
        NOT_INITIALIZED = 0,
        ENABLED_NOT_VERIFIED = 1,
        ENABLED_VERIFIED = 2,
        DISABLED = 3,
        BLOCKED = 4,
        PERMANENTLY_BLOCKED = 5,
    }
);

named_values!(
    /// Why a card is in error (`QmiUimCardError`; the first few are named).
    CardError(u8) {
        UNKNOWN = 0,
        POWER_DOWN = 1,
        POLL = 2,
        NO_ATR_RECEIVED = 3,
        VOLT_MISMATCH = 4,
        PARITY = 5,
        POSSIBLY_REMOVED = 6,
        TECHNICAL_PROBLEMS = 7,
    }
);

named_values!(
    /// `QmiUimCardApplicationType`.
    ApplicationType(u8) {
        UNKNOWN = 0,
        SIM = 1,
        USIM = 2,
        RUIM = 3,
        CSIM = 4,
        ISIM = 5,
    }
);

named_values!(
    /// `QmiUimCardApplicationState`.
    ApplicationState(u8) {
        UNKNOWN = 0,
        DETECTED = 1,
        PIN1_OR_UPIN_PIN_REQUIRED = 2,
        PUK1_OR_UPIN_PUK_REQUIRED = 3,
        CHECK_PERSONALIZATION_STATE = 4,
        PIN1_BLOCKED = 5,
        ILLEGAL = 6,
        READY = 7,
    }
);

named_values!(
    /// `QmiUimCardApplicationPersonalizationState`.
    PersonalizationState(u8) {
        UNKNOWN = 0,
        IN_PROGRESS = 1,
        READY = 2,
        CODE_REQUIRED = 3,
        PUK_CODE_REQUIRED = 4,
        PERMANENTLY_BLOCKED = 5,
    }
);

/// One application on a card.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Application {
    pub kind: ApplicationType,
    pub state: ApplicationState,
    pub personalization_state: PersonalizationState,
    /// `QmiUimCardApplicationPersonalizationFeature`.
    pub personalization_feature: u8,
    pub personalization_retries: u8,
    pub personalization_unblock_retries: u8,
    pub aid: Vec<u8>,
    pub upin_replaces_pin1: bool,
    pub pin1_state: PinState,
    pub pin1_retries: u8,
    pub puk1_retries: u8,
    pub pin2_state: PinState,
    pub pin2_retries: u8,
    pub puk2_retries: u8,
}

/// One card (one slot).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Card {
    pub state: CardState,
    pub upin_state: PinState,
    pub upin_retries: u8,
    pub upuk_retries: u8,
    pub error: CardError,
    pub applications: Vec<Application>,
}

/// The whole card status; an index is `slot << 8 | application`, [`CardStatus::NO_INDEX`] if none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CardStatus {
    pub index_gw_primary: u16,
    pub index_1x_primary: u16,
    pub index_gw_secondary: u16,
    pub index_1x_secondary: u16,
    pub cards: Vec<Card>,
}

impl CardStatus {
    pub const NO_INDEX: u16 = 0xFFFF;

    fn write(&self, out: &mut tlv::Writer, id: u8) -> Result<(), EncodeError> {
        let Self {
            index_gw_primary,
            index_1x_primary,
            index_gw_secondary,
            index_1x_secondary,
            cards,
        } = self;
        let mut v = tlv::Value::new();
        v.u16(*index_gw_primary)
            .u16(*index_1x_primary)
            .u16(*index_gw_secondary)
            .u16(*index_1x_secondary)
            .count_u8("the card list", cards.len())?;
        for card in cards {
            let Card {
                state,
                upin_state,
                upin_retries,
                upuk_retries,
                error,
                applications,
            } = card;
            v.u8(state.0)
                .u8(upin_state.0)
                .u8(*upin_retries)
                .u8(*upuk_retries)
                .u8(error.0)
                .count_u8("a card's application list", applications.len())?;
            for app in applications {
                let Application {
                    kind,
                    state,
                    personalization_state,
                    personalization_feature,
                    personalization_retries,
                    personalization_unblock_retries,
                    aid,
                    upin_replaces_pin1,
                    pin1_state,
                    pin1_retries,
                    puk1_retries,
                    pin2_state,
                    pin2_retries,
                    puk2_retries,
                } = app;
                v.u8(kind.0)
                    .u8(state.0)
                    .u8(personalization_state.0)
                    .u8(*personalization_feature)
                    .u8(*personalization_retries)
                    .u8(*personalization_unblock_retries)
                    .u8_prefixed("an application's AID", aid)?
                    .bool(*upin_replaces_pin1)
                    .u8(pin1_state.0)
                    .u8(*pin1_retries)
                    .u8(*puk1_retries)
                    .u8(pin2_state.0)
                    .u8(*pin2_retries)
                    .u8(*puk2_retries);
            }
        }
        out.put_value(id, &v)?;
        Ok(())
    }

    fn read(value: &[u8], id: u8, message: &'static str) -> Result<Self, DecodeError> {
        let mut r = tlv::Reader::new(value, id, message);
        let index_gw_primary = r.u16()?;
        let index_1x_primary = r.u16()?;
        let index_gw_secondary = r.u16()?;
        let index_1x_secondary = r.u16()?;
        let count = r.count_u8()?;
        let cards = r.elements(count, |r| {
            let state = CardState(r.u8()?);
            let upin_state = PinState(r.u8()?);
            let upin_retries = r.u8()?;
            let upuk_retries = r.u8()?;
            let error = CardError(r.u8()?);
            let count = r.count_u8()?;
            let applications = r.elements(count, |r| {
                Ok(Application {
                    kind: ApplicationType(r.u8()?),
                    state: ApplicationState(r.u8()?),
                    personalization_state: PersonalizationState(r.u8()?),
                    personalization_feature: r.u8()?,
                    personalization_retries: r.u8()?,
                    personalization_unblock_retries: r.u8()?,
                    aid: r.u8_prefixed()?.to_vec(),
                    upin_replaces_pin1: r.bool()?,
                    pin1_state: PinState(r.u8()?),
                    pin1_retries: r.u8()?,
                    puk1_retries: r.u8()?,
                    pin2_state: PinState(r.u8()?),
                    pin2_retries: r.u8()?,
                    puk2_retries: r.u8()?,
                })
            })?;
            Ok(Card {
                state,
                upin_state,
                upin_retries,
                upuk_retries,
                error,
                applications,
            })
        })?;
        Ok(Self {
            index_gw_primary,
            index_1x_primary,
            index_gw_secondary,
            index_1x_secondary,
            cards,
        })
    }
}

const TLV_CARD_STATUS: u8 = 0x10;

/// What Get Card Status answers and the Card Status indication reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CardStatusInfo {
    pub card_status: Option<CardStatus>,
}

impl Body for CardStatusInfo {
    fn write_body(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        if let Some(status) = &self.card_status {
            status.write(out, TLV_CARD_STATUS)?;
        }
        Ok(())
    }

    fn read_body(tlvs: &[u8], message: &'static str) -> Result<Self, DecodeError> {
        Ok(Self {
            card_status: tlv::find(tlvs, TLV_CARD_STATUS)?
                .map(|v| CardStatus::read(v, TLV_CARD_STATUS, message))
                .transpose()?,
        })
    }
}

empty_message!(
    /// Asks for the state of every card and its applications.
    GetCardStatus, Service::UIM, GET_CARD_STATUS, Request, "UIM Get Card Status request"
);

impl Request for GetCardStatus {
    type Response = GetCardStatusResponse;
}

body_message!(
    GetCardStatusResponse(CardStatusInfo),
    Service::UIM,
    GET_CARD_STATUS,
    Response,
    "UIM Get Card Status response"
);
body_message!(
    /// Sent to clients registered for [`events::CARD_STATUS`].
    CardStatusIndication(CardStatusInfo), Service::UIM, CARD_STATUS_INDICATION, Indication, "UIM Card Status indication"
);

named_values!(
    /// `QmiUimPhysicalCardState`.
    PhysicalCardState(u32) {
        UNKNOWN = 0,
        ABSENT = 1,
        PRESENT = 2,
    }
);

named_values!(
    /// `QmiUimSlotState`.
    SlotState(u32) {
        INACTIVE = 0,
        ACTIVE = 1,
    }
);

named_values!(
    /// `QmiUimCardProtocol`.
    CardProtocol(u32) {
        UNKNOWN = 0,
        ICC = 1,
        UICC = 2,
    }
);

/// One physical slot's status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PhysicalSlotStatus {
    pub card_state: PhysicalCardState,
    pub slot_state: SlotState,
    pub logical_slot: u8,
    /// The ICCID as the card stores it (BCD, nibble-swapped).
    pub iccid: Vec<u8>,
}

/// One physical slot's card.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PhysicalSlotInformation {
    pub card_protocol: CardProtocol,
    pub valid_applications: u8,
    pub atr: Vec<u8>,
    pub is_euicc: bool,
}

/// What Get Slot Status answers and the Slot Status indication reports; the lists are per
/// physical slot, in slot order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotStatus {
    pub physical_slot_status: Option<Vec<PhysicalSlotStatus>>,
    pub physical_slot_information: Option<Vec<PhysicalSlotInformation>>,
    /// Each slot's EID (empty for a card that is not an eUICC).
    pub slot_eids: Option<Vec<Vec<u8>>>,
}

const TLV_PHYSICAL_SLOT_STATUS: u8 = 0x10;
const TLV_PHYSICAL_SLOT_INFORMATION: u8 = 0x11;
const TLV_SLOT_EIDS: u8 = 0x12;

impl Body for SlotStatus {
    fn write_body(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        let Self {
            physical_slot_status,
            physical_slot_information,
            slot_eids,
        } = self;
        if let Some(slots) = physical_slot_status {
            let mut v = tlv::Value::new();
            v.count_u8("the slot status list", slots.len())?;
            for PhysicalSlotStatus {
                card_state,
                slot_state,
                logical_slot,
                iccid,
            } in slots
            {
                v.u32(card_state.0)
                    .u32(slot_state.0)
                    .u8(*logical_slot)
                    .u8_prefixed("an ICCID", iccid)?;
            }
            out.put_value(TLV_PHYSICAL_SLOT_STATUS, &v)?;
        }
        if let Some(slots) = physical_slot_information {
            let mut v = tlv::Value::new();
            v.count_u8("the slot information list", slots.len())?;
            for PhysicalSlotInformation {
                card_protocol,
                valid_applications,
                atr,
                is_euicc,
            } in slots
            {
                v.u32(card_protocol.0)
                    .u8(*valid_applications)
                    .u8_prefixed("an ATR", atr)?
                    .bool(*is_euicc);
            }
            out.put_value(TLV_PHYSICAL_SLOT_INFORMATION, &v)?;
        }
        if let Some(eids) = slot_eids {
            let mut v = tlv::Value::new();
            v.count_u8("the EID list", eids.len())?;
            for eid in eids {
                v.u8_prefixed("an EID", eid)?;
            }
            out.put_value(TLV_SLOT_EIDS, &v)?;
        }
        Ok(())
    }

    fn read_body(tlvs: &[u8], message: &'static str) -> Result<Self, DecodeError> {
        let list = |id, element: &mut dyn FnMut(&mut tlv::Reader<'_>) -> Result<(), DecodeError>| {
            tlv::find(tlvs, id)?
                .map(|v| {
                    let mut r = tlv::Reader::new(v, id, message);
                    let count = r.count_u8()?;
                    (0..count).try_for_each(|_| element(&mut r))
                })
                .transpose()
                .map(|o| o.is_some())
        };
        let mut status = Vec::new();
        let has_status = list(TLV_PHYSICAL_SLOT_STATUS, &mut |r| {
            status.push(PhysicalSlotStatus {
                card_state: PhysicalCardState(r.u32()?),
                slot_state: SlotState(r.u32()?),
                logical_slot: r.u8()?,
                iccid: r.u8_prefixed()?.to_vec(),
            });
            Ok(())
        })?;
        let mut information = Vec::new();
        let has_information = list(TLV_PHYSICAL_SLOT_INFORMATION, &mut |r| {
            information.push(PhysicalSlotInformation {
                card_protocol: CardProtocol(r.u32()?),
                valid_applications: r.u8()?,
                atr: r.u8_prefixed()?.to_vec(),
                is_euicc: r.bool()?,
            });
            Ok(())
        })?;
        let mut eids = Vec::new();
        let has_eids = list(TLV_SLOT_EIDS, &mut |r| {
            eids.push(r.u8_prefixed()?.to_vec());
            Ok(())
        })?;
        Ok(Self {
            physical_slot_status: has_status.then_some(status),
            physical_slot_information: has_information.then_some(information),
            slot_eids: has_eids.then_some(eids),
        })
    }
}

empty_message!(
    /// Asks for every physical slot: card presence, ICCID, ATR, eUICC and EID.
    GetSlotStatus, Service::UIM, GET_SLOT_STATUS, Request, "UIM Get Slot Status request"
);

impl Request for GetSlotStatus {
    type Response = GetSlotStatusResponse;
}

body_message!(
    GetSlotStatusResponse(SlotStatus),
    Service::UIM,
    GET_SLOT_STATUS,
    Response,
    "UIM Get Slot Status response"
);
body_message!(
    /// Sent to clients registered for [`events::PHYSICAL_SLOT_STATUS`].
    SlotStatusIndication(SlotStatus), Service::UIM, SLOT_STATUS_INDICATION, Indication, "UIM Slot Status indication"
);

const TLV_SLOT: u8 = 0x01;
const TLV_OPEN_AID: u8 = 0x10;
const TLV_OPEN_FCI: u8 = 0x11;
const TLV_CHANNEL_ID: u8 = 0x10;
const TLV_CARD_RESULT: u8 = 0x11;
const TLV_SELECT_RESPONSE: u8 = 0x12;

fn read_slot(tlvs: &[u8], message: &'static str) -> Result<u8, DecodeError> {
    let [slot] = tlv::fixed(tlv::require(tlvs, TLV_SLOT, message)?, TLV_SLOT, message, "1")?;
    Ok(slot)
}

fn find_u8_prefixed(tlvs: &[u8], id: u8, message: &'static str) -> Result<Option<Vec<u8>>, DecodeError> {
    tlv::find(tlvs, id)?
        .map(|v| tlv::Reader::new(v, id, message).u8_prefixed().map(<[u8]>::to_vec))
        .transpose()
}

fn put_u8_prefixed(out: &mut tlv::Writer, id: u8, what: &'static str, bytes: Option<&[u8]>) -> Result<(), EncodeError> {
    if let Some(bytes) = bytes {
        let mut v = tlv::Value::new();
        v.u8_prefixed(what, bytes)?;
        out.put_value(id, &v)?;
    }
    Ok(())
}

/// Opens a logical channel on `slot` (1-based) and selects `aid` on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenLogicalChannel {
    pub slot: u8,
    pub aid: Option<Vec<u8>>,
    /// Which template the SELECT asks for (0 none, 1 FCP, 2 FCI, 3 FMD...).
    pub file_control_information: Option<u8>,
}

impl Message for OpenLogicalChannel {
    const SERVICE: Service = Service::UIM;
    const MESSAGE_ID: u16 = OPEN_LOGICAL_CHANNEL;
    const KIND: MessageKind = MessageKind::Request;
    const NAME: &'static str = "UIM Open Logical Channel request";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        let Self {
            slot,
            aid,
            file_control_information,
        } = self;
        out.put_u8(TLV_SLOT, *slot);
        put_u8_prefixed(out, TLV_OPEN_AID, "an AID", aid.as_deref())?;
        out.put_opt(TLV_OPEN_FCI, *file_control_information, tlv::Writer::put_u8);
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            slot: read_slot(tlvs, Self::NAME)?,
            aid: find_u8_prefixed(tlvs, TLV_OPEN_AID, Self::NAME)?,
            file_control_information: tlv::find_u8(tlvs, TLV_OPEN_FCI, Self::NAME)?,
        })
    }
}

impl Request for OpenLogicalChannel {
    type Response = OpenLogicalChannelResponse;
}

/// A channel opened (or the card's status words when it refused, e.g. 6A82 for an unknown AID).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelResult {
    pub channel_id: Option<u8>,
    /// `(SW1, SW2)`.
    pub card_result: Option<(u8, u8)>,
    /// The SELECT response data (FCI), without the status words.
    pub select_response: Option<Vec<u8>>,
}

impl Body for ChannelResult {
    fn write_body(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        let Self {
            channel_id,
            card_result,
            select_response,
        } = self;
        out.put_opt(TLV_CHANNEL_ID, *channel_id, tlv::Writer::put_u8);
        if let Some((sw1, sw2)) = card_result {
            out.put_fixed(TLV_CARD_RESULT, &[*sw1, *sw2]);
        }
        put_u8_prefixed(
            out,
            TLV_SELECT_RESPONSE,
            "a SELECT response",
            select_response.as_deref(),
        )
    }

    fn read_body(tlvs: &[u8], message: &'static str) -> Result<Self, DecodeError> {
        Ok(Self {
            channel_id: tlv::find_u8(tlvs, TLV_CHANNEL_ID, message)?,
            card_result: tlv::find(tlvs, TLV_CARD_RESULT)?
                .map(|v| tlv::fixed::<2>(v, TLV_CARD_RESULT, message, "2").map(|[a, b]| (a, b)))
                .transpose()?,
            select_response: find_u8_prefixed(tlvs, TLV_SELECT_RESPONSE, message)?,
        })
    }
}

body_message!(
    OpenLogicalChannelResponse(ChannelResult),
    Service::UIM,
    OPEN_LOGICAL_CHANNEL,
    Response,
    "UIM Open Logical Channel response"
);

const TLV_CLOSE_AID: u8 = 0x10;
const TLV_CLOSE_CHANNEL_ID: u8 = 0x11;
const TLV_CLOSE_FCI: u8 = 0x12;
const TLV_TERMINATE_APPLICATION: u8 = 0x13;

/// Closes `channel_id` (the libqmi name is "Logical Channel": it can also open by AID).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogicalChannel {
    pub slot: u8,
    pub aid: Option<Vec<u8>>,
    pub channel_id: Option<u8>,
    pub file_control_information: Option<u8>,
    pub terminate_application: Option<bool>,
}

impl Message for LogicalChannel {
    const SERVICE: Service = Service::UIM;
    const MESSAGE_ID: u16 = LOGICAL_CHANNEL;
    const KIND: MessageKind = MessageKind::Request;
    const NAME: &'static str = "UIM Logical Channel request";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        let Self {
            slot,
            aid,
            channel_id,
            file_control_information,
            terminate_application,
        } = self;
        out.put_u8(TLV_SLOT, *slot);
        put_u8_prefixed(out, TLV_CLOSE_AID, "an AID", aid.as_deref())?;
        out.put_opt(TLV_CLOSE_CHANNEL_ID, *channel_id, tlv::Writer::put_u8)
            .put_opt(TLV_CLOSE_FCI, *file_control_information, tlv::Writer::put_u8)
            .put_opt(TLV_TERMINATE_APPLICATION, *terminate_application, tlv::Writer::put_bool);
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            slot: read_slot(tlvs, Self::NAME)?,
            aid: find_u8_prefixed(tlvs, TLV_CLOSE_AID, Self::NAME)?,
            channel_id: tlv::find_u8(tlvs, TLV_CLOSE_CHANNEL_ID, Self::NAME)?,
            file_control_information: tlv::find_u8(tlvs, TLV_CLOSE_FCI, Self::NAME)?,
            terminate_application: tlv::find_bool(tlvs, TLV_TERMINATE_APPLICATION, Self::NAME)?,
        })
    }
}

impl Request for LogicalChannel {
    type Response = LogicalChannelResponse;
}

body_message!(
    LogicalChannelResponse(ChannelResult),
    Service::UIM,
    LOGICAL_CHANNEL,
    Response,
    "UIM Logical Channel response"
);

const TLV_APDU: u8 = 0x02;
const TLV_APDU_CHANNEL: u8 = 0x10;
const TLV_PROCEDURE_BYTES: u8 = 0x11;
const TLV_APDU_RESPONSE: u8 = 0x10;

/// One command APDU on a logical channel (`channel_id` absent: the basic channel).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendApdu {
    pub slot: u8,
    pub apdu: Vec<u8>,
    pub channel_id: Option<u8>,
    /// Whether the modem should return procedure bytes (61xx/6Cxx) instead of handling them.
    pub procedure_bytes: Option<u8>,
}

impl Message for SendApdu {
    const SERVICE: Service = Service::UIM;
    const MESSAGE_ID: u16 = SEND_APDU;
    const KIND: MessageKind = MessageKind::Request;
    const NAME: &'static str = "UIM Send APDU request";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        let Self {
            slot,
            apdu,
            channel_id,
            procedure_bytes,
        } = self;
        out.put_u8(TLV_SLOT, *slot);
        let mut v = tlv::Value::new();
        v.u16_prefixed("an APDU", apdu)?;
        out.put_value(TLV_APDU, &v)?;
        out.put_opt(TLV_APDU_CHANNEL, *channel_id, tlv::Writer::put_u8).put_opt(
            TLV_PROCEDURE_BYTES,
            *procedure_bytes,
            tlv::Writer::put_u8,
        );
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        let apdu = tlv::Reader::new(tlv::require(tlvs, TLV_APDU, Self::NAME)?, TLV_APDU, Self::NAME)
            .u16_prefixed()?
            .to_vec();
        Ok(Self {
            slot: read_slot(tlvs, Self::NAME)?,
            apdu,
            channel_id: tlv::find_u8(tlvs, TLV_APDU_CHANNEL, Self::NAME)?,
            procedure_bytes: tlv::find_u8(tlvs, TLV_PROCEDURE_BYTES, Self::NAME)?,
        })
    }
}

impl Request for SendApdu {
    type Response = SendApduResponse;
}

/// The response APDU: data followed by SW1 SW2.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendApduResponse {
    pub apdu_response: Option<Vec<u8>>,
}

impl Message for SendApduResponse {
    const SERVICE: Service = Service::UIM;
    const MESSAGE_ID: u16 = SEND_APDU;
    const KIND: MessageKind = MessageKind::Response;
    const NAME: &'static str = "UIM Send APDU response";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        if let Some(apdu) = &self.apdu_response {
            let mut v = tlv::Value::new();
            v.u16_prefixed("an APDU response", apdu)?;
            out.put_value(TLV_APDU_RESPONSE, &v)?;
        }
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            apdu_response: tlv::find(tlvs, TLV_APDU_RESPONSE)?
                .map(|v| {
                    tlv::Reader::new(v, TLV_APDU_RESPONSE, Self::NAME)
                        .u16_prefixed()
                        .map(<[u8]>::to_vec)
                })
                .transpose()?,
        })
    }
}

named_values!(
    /// `QmiUimRefreshStage`.
    RefreshStage(u8) {
        WAIT_FOR_OK = 0,
        START = 1,
        END_WITH_SUCCESS = 2,
        END_WITH_FAILURE = 3,
    }
);

named_values!(
    /// `QmiUimRefreshMode`.
    RefreshMode(u8) {
        RESET = 0,
        INIT = 1,
        INIT_FCN = 2,
        FCN = 3,
        INIT_FULL_FCN = 4,
        APP_RESET = 5,
        THREEGPP_SESSION_RESET = 6,
    }
);

named_values!(
    /// `QmiUimSessionType` (the provisioning sessions and the card slots).
    SessionType(u8) {
        PRIMARY_GW_PROVISIONING = 0,
        PRIMARY_1X_PROVISIONING = 1,
        SECONDARY_GW_PROVISIONING = 2,
        SECONDARY_1X_PROVISIONING = 3,
        NONPROVISIONING_SLOT_1 = 4,
        NONPROVISIONING_SLOT_2 = 5,
        CARD_SLOT_1 = 6,
        CARD_SLOT_2 = 7,
    }
);

/// A file the refresh touches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshFile {
    pub file_id: u16,
    pub path: Vec<u8>,
}

/// A SIM refresh (e.g. after a profile switch on the eUICC).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshEvent {
    pub stage: RefreshStage,
    pub mode: RefreshMode,
    pub session_type: SessionType,
    pub aid: Vec<u8>,
    pub files: Vec<RefreshFile>,
}

const TLV_REFRESH_EVENT: u8 = 0x10;

/// Sent to clients that registered for refreshes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshIndication {
    pub event: Option<RefreshEvent>,
}

impl Message for RefreshIndication {
    const SERVICE: Service = Service::UIM;
    const MESSAGE_ID: u16 = REFRESH_INDICATION;
    const KIND: MessageKind = MessageKind::Indication;
    const NAME: &'static str = "UIM Refresh indication";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        if let Some(RefreshEvent {
            stage,
            mode,
            session_type,
            aid,
            files,
        }) = &self.event
        {
            let mut v = tlv::Value::new();
            v.u8(stage.0)
                .u8(mode.0)
                .u8(session_type.0)
                .u8_prefixed("the refreshed AID", aid)?
                .count_u16("the refreshed file list", files.len())?;
            for RefreshFile { file_id, path } in files {
                v.u16(*file_id).u8_prefixed("a file path", path)?;
            }
            out.put_value(TLV_REFRESH_EVENT, &v)?;
        }
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        let event = tlv::find(tlvs, TLV_REFRESH_EVENT)?
            .map(|v| {
                let mut r = tlv::Reader::new(v, TLV_REFRESH_EVENT, Self::NAME);
                let stage = RefreshStage(r.u8()?);
                let mode = RefreshMode(r.u8()?);
                let session_type = SessionType(r.u8()?);
                let aid = r.u8_prefixed()?.to_vec();
                let count = r.count_u16()?;
                let files = r.elements(count, |r| {
                    Ok(RefreshFile {
                        file_id: r.u16()?,
                        path: r.u8_prefixed()?.to_vec(),
                    })
                })?;
                Ok::<_, DecodeError>(RefreshEvent {
                    stage,
                    mode,
                    session_type,
                    aid,
                    files,
                })
            })
            .transpose()?;
        Ok(Self { event })
    }
}
