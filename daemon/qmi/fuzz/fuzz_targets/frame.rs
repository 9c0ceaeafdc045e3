//! Arbitrary bytes through the splitter, the frame decoder and every message parser.
#![no_main]

use aiesim_qmi::{
    Frame, Message, QmiResult, Splitter,
    ctl::{
        AllocateCid, AllocateCidResponse, GetVersionInfo, GetVersionInfoResponse, ReleaseCid, ReleaseCidResponse, Sync,
        SyncIndication, SyncResponse,
    },
    dms::{
        GetIds, GetIdsResponse, GetManufacturer, GetManufacturerResponse, GetModel, GetModelResponse, GetRevision,
        GetRevisionResponse,
    },
    tlv,
};
use libfuzzer_sys::fuzz_target;

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
    // Parsers also run on TLVs regardless of the header, to reach them with any bytes.
    let _ = GetVersionInfoResponse::read_tlvs(&frame.tlvs);
    let _ = GetIdsResponse::read_tlvs(&frame.tlvs);
    let _ = AllocateCidResponse::read_tlvs(&frame.tlvs);
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
});
