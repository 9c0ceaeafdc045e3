//! Arbitrary bytes through the splitter, the frame decoder and every message parser.
#![no_main]

use aiesim_qmi::{
    Frame, Message, QmiResult, Splitter,
    ctl::{
        AllocateCid, AllocateCidResponse, GetVersionInfo, GetVersionInfoResponse, InternalProxyOpen,
        InternalProxyOpenResponse, ReleaseCid, ReleaseCidResponse, Sync, SyncIndication, SyncResponse,
    },
    dms::{
        GetCapabilities, GetCapabilitiesResponse, GetIds, GetIdsResponse, GetManufacturer, GetManufacturerResponse,
        GetModel, GetModelResponse, GetOperatingMode, GetOperatingModeResponse, GetRevision, GetRevisionResponse,
        SetOperatingMode, SetOperatingModeResponse,
    },
    nas, tlv, uim, wda, wds,
};
use libfuzzer_sys::fuzz_target;

/// Every message parser of every service on one TLV section.
fn parse_tlvs(tlvs: &[u8]) {
    let _ = GetVersionInfoResponse::read_tlvs(tlvs);
    let _ = GetIdsResponse::read_tlvs(tlvs);
    let _ = AllocateCidResponse::read_tlvs(tlvs);
    let _ = InternalProxyOpen::read_tlvs(tlvs);
    let _ = GetOperatingModeResponse::read_tlvs(tlvs);
    let _ = SetOperatingMode::read_tlvs(tlvs);
    let _ = GetCapabilitiesResponse::read_tlvs(tlvs);
    let _ = nas::RegisterIndications::read_tlvs(tlvs);
    let _ = nas::RegisterIndicationsResponse::read_tlvs(tlvs);
    let _ = nas::GetSignalStrength::read_tlvs(tlvs);
    let _ = nas::GetSignalStrengthResponse::read_tlvs(tlvs);
    let _ = nas::GetServingSystem::read_tlvs(tlvs);
    let _ = nas::GetServingSystemResponse::read_tlvs(tlvs);
    let _ = nas::ServingSystemIndication::read_tlvs(tlvs);
    let _ = nas::GetSystemInfo::read_tlvs(tlvs);
    let _ = nas::GetSystemInfoResponse::read_tlvs(tlvs);
    let _ = nas::SystemInfoIndication::read_tlvs(tlvs);
    let _ = nas::GetSignalInfo::read_tlvs(tlvs);
    let _ = nas::GetSignalInfoResponse::read_tlvs(tlvs);
    let _ = nas::SignalInfoIndication::read_tlvs(tlvs);
    let _ = nas::ConfigSignalInfo::read_tlvs(tlvs);
    let _ = nas::ConfigSignalInfoResponse::read_tlvs(tlvs);
    let _ = wds::SetEventReport::read_tlvs(tlvs);
    let _ = wds::SetEventReportResponse::read_tlvs(tlvs);
    let _ = wds::EventReportIndication::read_tlvs(tlvs);
    let _ = wds::StartNetwork::read_tlvs(tlvs);
    let _ = wds::StartNetworkResponse::read_tlvs(tlvs);
    let _ = wds::StopNetwork::read_tlvs(tlvs);
    let _ = wds::StopNetworkResponse::read_tlvs(tlvs);
    let _ = wds::GetPacketServiceStatus::read_tlvs(tlvs);
    let _ = wds::GetPacketServiceStatusResponse::read_tlvs(tlvs);
    let _ = wds::GetChannelRatesResponse::read_tlvs(tlvs);
    let _ = wds::PacketServiceStatusIndication::read_tlvs(tlvs);
    let _ = wds::GetCurrentSettings::read_tlvs(tlvs);
    let _ = wds::GetCurrentSettingsResponse::read_tlvs(tlvs);
    let _ = wds::SetIpFamily::read_tlvs(tlvs);
    let _ = wds::SetIpFamilyResponse::read_tlvs(tlvs);
    let _ = wda::SetDataFormat::read_tlvs(tlvs);
    let _ = wda::SetDataFormatResponse::read_tlvs(tlvs);
    let _ = wda::GetDataFormat::read_tlvs(tlvs);
    let _ = wda::GetDataFormatResponse::read_tlvs(tlvs);
    let _ = uim::RegisterEvents::read_tlvs(tlvs);
    let _ = uim::RegisterEventsResponse::read_tlvs(tlvs);
    let _ = uim::GetCardStatus::read_tlvs(tlvs);
    let _ = uim::GetCardStatusResponse::read_tlvs(tlvs);
    let _ = uim::CardStatusIndication::read_tlvs(tlvs);
    let _ = uim::GetSlotStatus::read_tlvs(tlvs);
    let _ = uim::GetSlotStatusResponse::read_tlvs(tlvs);
    let _ = uim::SlotStatusIndication::read_tlvs(tlvs);
    let _ = uim::OpenLogicalChannel::read_tlvs(tlvs);
    let _ = uim::OpenLogicalChannelResponse::read_tlvs(tlvs);
    let _ = uim::LogicalChannel::read_tlvs(tlvs);
    let _ = uim::LogicalChannelResponse::read_tlvs(tlvs);
    let _ = uim::SendApdu::read_tlvs(tlvs);
    let _ = uim::SendApduResponse::read_tlvs(tlvs);
    let _ = uim::RefreshIndication::read_tlvs(tlvs);
}

fn parse_all(frame: &Frame) {
    let _ = QmiResult::decode(&frame.tlvs);
    for t in tlv::iter(&frame.tlvs) {
        let _ = t;
    }
    let _ = GetVersionInfo::from_frame(frame);
    let _ = GetVersionInfoResponse::from_frame(frame);
    let _ = AllocateCid::from_frame(frame);
    let _ = AllocateCidResponse::from_frame(frame);
    let _ = ReleaseCid::from_frame(frame);
    let _ = ReleaseCidResponse::from_frame(frame);
    let _ = Sync::from_frame(frame);
    let _ = SyncResponse::from_frame(frame);
    let _ = SyncIndication::from_frame(frame);
    let _ = GetIds::from_frame(frame);
    let _ = GetIdsResponse::from_frame(frame);
    let _ = GetManufacturer::from_frame(frame);
    let _ = GetManufacturerResponse::from_frame(frame);
    let _ = GetModel::from_frame(frame);
    let _ = GetModelResponse::from_frame(frame);
    let _ = GetRevision::from_frame(frame);
    let _ = GetRevisionResponse::from_frame(frame);
    let _ = InternalProxyOpen::from_frame(frame);
    let _ = InternalProxyOpenResponse::from_frame(frame);
    let _ = GetCapabilities::from_frame(frame);
    let _ = GetOperatingMode::from_frame(frame);
    let _ = SetOperatingModeResponse::from_frame(frame);
    // Parsers also run on TLVs regardless of the header, to reach them with any bytes.
    parse_tlvs(&frame.tlvs);
    // Whatever decodes must encode back to a frame that decodes to itself.
    let bytes = frame.encode().expect("a decoded frame re-encodes");
    assert_eq!(&Frame::decode(&bytes).expect("re-encoded frame decodes"), frame);
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, so both whole and split deliveries are covered.
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut splitter = Splitter::with_max_frame_len(512);
    let mut rest = data;
    loop {
        let taken = splitter.push(&rest[..rest.len().min(chunk)]);
        rest = &rest[taken..];
        while let Some(frame) = splitter.next_frame() {
            if let Ok(frame) = frame.and_then(|bytes| Frame::decode(&bytes)) {
                parse_all(&frame);
            }
        }
        if rest.is_empty() {
            break;
        }
    }
    if let Ok(frame) = Frame::decode(data) {
        parse_all(&frame);
    }
    let _ = tlv::iter(data).count();
    parse_tlvs(data);
});
