//! MS_BASIC_CONNECT_EXTENSIONS (`3d01dcc5-fef5-4d05-0d3a-bef7058e9aaf`): SIM slots and reset.

use crate::{
    DecodeError, Message, Request, Uuid,
    basic_connect::count,
    info::{Reader, Writer},
    message::{values, words_message},
};

pub const PROVISIONED_CONTEXTS: u32 = 1;
pub const NETWORK_DENYLIST: u32 = 2;
pub const LTE_ATTACH_CONFIGURATION: u32 = 3;
pub const LTE_ATTACH_INFO: u32 = 4;
pub const SYS_CAPS: u32 = 5;
pub const DEVICE_CAPS: u32 = 6;
pub const DEVICE_SLOT_MAPPINGS: u32 = 7;
pub const SLOT_INFO_STATUS: u32 = 8;
pub const PCO: u32 = 9;
pub const DEVICE_RESET: u32 = 10;
pub const BASE_STATIONS_INFO: u32 = 11;
pub const LOCATION_INFO_STATUS: u32 = 12;
pub const VERSION: u32 = 15;

const SERVICE: Uuid = Uuid::MS_BASIC_CONNECT_EXTENSIONS;

values!(
    /// `MbimUiccSlotState`.
    SlotState {
        UNKNOWN = 0 => "unknown",
        OFF_EMPTY = 1 => "off-empty",
        OFF = 2 => "off",
        EMPTY = 3 => "empty",
        NOT_READY = 4 => "not-ready",
        ACTIVE = 5 => "active",
        ERROR = 6 => "error",
        ACTIVE_ESIM = 7 => "active-esim",
        ACTIVE_ESIM_NO_PROFILES = 8 => "active-esim-no-profiles",
    }
);

words_message!(
    /// Asks which SIM slot each executor (modem stack) uses.
    DeviceSlotMappingsQuery, SERVICE, DEVICE_SLOT_MAPPINGS, Query, false,
    "MS_BASIC_CONNECT_EXTENSIONS DEVICE_SLOT_MAPPINGS query", {}
);

/// Maps executor `i` to SIM slot `slots[i]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceSlotMappingsSet {
    pub slots: Vec<u32>,
}

/// The slot each executor uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceSlotMappingsResponse {
    pub slots: Vec<u32>,
}

/// Declares the two messages that share the slot map layout.
macro_rules! slot_map {
    ($name:ident, $kind:ident, $label:literal) => {
        impl Message for $name {
            const SERVICE: Uuid = SERVICE;
            const CID: u32 = DEVICE_SLOT_MAPPINGS;
            const KIND: crate::Kind = crate::Kind::$kind;
            const NAME: &'static str = $label;

            fn write(&self, out: &mut Writer) {
                let Self { slots } = self;
                out.u32(count(slots.len()))
                    .ref_struct_array(slots.iter().map(|s| s.to_le_bytes().to_vec()).collect());
            }

            fn read(info: &mut Reader<'_>) -> Result<Self, DecodeError> {
                let n = info.u32()?;
                let slots = info
                    .ref_struct_array("SlotMap", n)?
                    .into_iter()
                    .map(|e| Reader::new(e, Self::NAME).u32())
                    .collect::<Result<_, _>>()?;
                Ok(Self { slots })
            }
        }
    };
}

slot_map!(
    DeviceSlotMappingsSet,
    Set,
    "MS_BASIC_CONNECT_EXTENSIONS DEVICE_SLOT_MAPPINGS set"
);
slot_map!(
    DeviceSlotMappingsResponse,
    Response,
    "MS_BASIC_CONNECT_EXTENSIONS DEVICE_SLOT_MAPPINGS response"
);

impl Request for DeviceSlotMappingsQuery {
    type Response = DeviceSlotMappingsResponse;
}

impl Request for DeviceSlotMappingsSet {
    type Response = DeviceSlotMappingsResponse;
}

words_message!(
    /// Asks for the state of one SIM slot.
    SlotInfoStatusQuery, SERVICE, SLOT_INFO_STATUS, Query, false,
    "MS_BASIC_CONNECT_EXTENSIONS SLOT_INFO_STATUS query", {
        slot_index: u32,
    }
);
words_message!(
    /// The state of one SIM slot; also a notification.
    SlotInfoStatusResponse, SERVICE, SLOT_INFO_STATUS, Response, true,
    "MS_BASIC_CONNECT_EXTENSIONS SLOT_INFO_STATUS response", {
        slot_index: u32,
        state: SlotState,
    }
);

impl Request for SlotInfoStatusQuery {
    type Response = SlotInfoStatusResponse;
}

words_message!(
    /// Resets the modem.
    DeviceResetSet, SERVICE, DEVICE_RESET, Set, false, "MS_BASIC_CONNECT_EXTENSIONS DEVICE_RESET set", {}
);
words_message!(
    /// The reset was accepted.
    DeviceResetResponse, SERVICE, DEVICE_RESET, Response, false,
    "MS_BASIC_CONNECT_EXTENSIONS DEVICE_RESET response", {}
);

impl Request for DeviceResetSet {
    type Response = DeviceResetResponse;
}
