//! Fragmentation and reassembly: order, duplicates, wrong totals, interleaving and bounds.

mod support;

use aiesim_mbim::{
    Body, ControlMessage, FragmentError, Message, MessageType, ProtocolError, Reassembler, Splitter, Status,
    uicc::ApduResponse,
};

/// A `COMMAND_DONE` whose 300-byte response needs several 64-byte fragments.
fn big(tid: u32, fill: u8) -> ControlMessage {
    let response = ApduResponse {
        status: 144,
        response: vec![fill; 300],
    };
    ControlMessage::new(tid, Body::CommandDone(response.to_command_done(Status::None).unwrap()))
}

fn fragments(message: &ControlMessage) -> Vec<Vec<u8>> {
    let f = message.encode_fragments(64).unwrap();
    assert!(f.len() >= 5, "the test needs a message of several fragments");
    f
}

#[test]
fn in_order() {
    let message = big(7, 0xaa);
    let frags = fragments(&message);
    let mut r = Reassembler::new();
    for f in &frags[..frags.len() - 1] {
        assert_eq!(r.push(f), Ok(None));
        assert_eq!(r.pending(), 1);
    }
    assert_eq!(r.push(frags.last().unwrap()), Ok(Some(message)));
    assert_eq!(r.pending(), 0);
}

#[test]
fn out_of_order_is_reported_and_dropped() {
    let message = big(7, 0xaa);
    let frags = fragments(&message);
    let mut r = Reassembler::new();
    r.push(&frags[0]).unwrap();
    let err = r.push(&frags[2]).unwrap_err();
    assert_eq!(
        err,
        FragmentError::OutOfSequence {
            message_type: MessageType::CommandDone,
            transaction_id: 7,
            expected: 1,
            got: 2
        }
    );
    assert_eq!(err.protocol_error(), ProtocolError::FragmentOutOfSequence);
    assert_eq!(err.transaction_id(), Some(7));
    assert_eq!(r.pending(), 0);
    // A continuation without its start is out of sequence too.
    assert!(matches!(
        r.push(&frags[1]),
        Err(FragmentError::OutOfSequence {
            expected: 0,
            got: 1,
            ..
        })
    ));
    // The whole message, resent in order, still gets through.
    let mut out = None;
    for f in &frags {
        out = r.push(f).unwrap();
    }
    assert_eq!(out, Some(message));
}

#[test]
fn duplicates_are_reported_and_ignored() {
    let message = big(9, 0x55);
    let frags = fragments(&message);
    let mut r = Reassembler::new();
    r.push(&frags[0]).unwrap();
    r.push(&frags[1]).unwrap();
    assert_eq!(
        r.push(&frags[1]),
        Err(FragmentError::Duplicate {
            message_type: MessageType::CommandDone,
            transaction_id: 9,
            current: 1
        })
    );
    assert!(matches!(
        r.push(&frags[0]),
        Err(FragmentError::Duplicate { current: 0, .. })
    ));
    let mut out = None;
    for f in &frags[2..] {
        out = r.push(f).unwrap();
    }
    assert_eq!(out, Some(message));
}

#[test]
fn a_changed_total_drops_the_message() {
    let frags = fragments(&big(3, 1));
    let mut r = Reassembler::new();
    r.push(&frags[0]).unwrap();
    let mut wrong = frags[1].clone();
    wrong[12] += 1; // TotalFragments
    assert!(matches!(
        r.push(&wrong),
        Err(FragmentError::TotalChanged { transaction_id: 3, .. })
    ));
    assert_eq!(r.pending(), 0);
}

#[test]
fn too_few_bytes_for_the_declared_length() {
    let frags = fragments(&big(4, 2));
    let mut r = Reassembler::new();
    // Announce one fragment fewer and stop early: the information buffer comes up short.
    let total = u32::try_from(frags.len() - 1).unwrap();
    let mut last = Ok(None);
    for f in &frags[..frags.len() - 1] {
        let mut f = f.clone();
        f[12..16].copy_from_slice(&total.to_le_bytes());
        last = r.push(&f);
    }
    let err = last.unwrap_err();
    assert!(
        matches!(err, FragmentError::LengthMismatch { transaction_id: 4, .. }),
        "{err}"
    );
    assert_eq!(err.protocol_error(), ProtocolError::LengthMismatch);
}

#[test]
fn interleaved_transactions_and_directions() {
    let a = big(1, 0xa1);
    let b = big(2, 0xb2);
    // A host COMMAND and a device INDICATE_STATUS may share a transaction id.
    let c = ControlMessage::new(
        1,
        Body::IndicateStatus(
            ApduResponse {
                status: 0,
                response: vec![0xc3; 200],
            }
            .to_command_done(Status::None)
            .map(|d| aiesim_mbim::Indication {
                service: d.service,
                cid: d.cid,
                info: d.info,
            })
            .unwrap(),
        ),
    );
    let (fa, fb, fc) = (fragments(&a), fragments(&b), c.encode_fragments(64).unwrap());
    let mut r = Reassembler::new();
    let mut out = Vec::new();
    for i in 0..fa.len().max(fb.len()).max(fc.len()) {
        for f in [&fa, &fb, &fc] {
            if let Some(f) = f.get(i) {
                out.extend(r.push(f).unwrap());
            }
        }
    }
    out.sort_by_key(|m| (m.transaction_id, m.message_type()));
    let mut want = vec![a, b, c];
    want.sort_by_key(|m| (m.transaction_id, m.message_type()));
    assert_eq!(out, want);
}

#[test]
fn memory_is_bounded() {
    // An oversized message is refused on its first fragment, from its declared length.
    let frags = fragments(&big(5, 0));
    let mut r = Reassembler::with_limits(200, 2);
    let err = r.push(&frags[0]).unwrap_err();
    assert!(matches!(
        err,
        FragmentError::TooLarge {
            transaction_id: 5,
            max: 200,
            ..
        }
    ));
    assert_eq!(err.protocol_error(), ProtocolError::MaxTransfer);
    assert_eq!(r.pending(), 0);
    // A first fragment that under-declares is caught as the fragments pile up.
    let mut lying = frags[0].clone();
    lying[44..48].copy_from_slice(&8_u32.to_le_bytes());
    r.push(&lying).unwrap();
    let mut result = Ok(None);
    for f in &frags[1..] {
        result = r.push(f);
        if result.is_err() {
            break;
        }
    }
    assert!(matches!(result, Err(FragmentError::TooLarge { .. })), "{result:?}");
    // At most two messages are in flight.
    let mut r = Reassembler::with_limits(64 * 1024, 2);
    r.push(&fragments(&big(10, 0))[0]).unwrap();
    r.push(&fragments(&big(11, 0))[0]).unwrap();
    assert_eq!(
        r.push(&fragments(&big(12, 0))[0]),
        Err(FragmentError::TooManyPartial {
            transaction_id: 12,
            max: 2
        })
    );
    r.clear();
    assert_eq!(r.pending(), 0);
}

#[test]
fn splitter_then_reassembler_over_a_byte_stream() {
    let messages = [big(1, 1), big(2, 2), support::samples().remove(0).message];
    let mut stream = vec![0xff, 0x00, 0x13];
    for m in &messages {
        for f in m.encode_fragments(64).unwrap() {
            stream.extend(f);
        }
    }
    let mut splitter = Splitter::new();
    let mut r = Reassembler::new();
    let mut out = Vec::new();
    let mut garbage = 0;
    for chunk in stream.chunks(7) {
        splitter.push(chunk);
        while let Some(transfer) = splitter.next_transfer() {
            match transfer {
                Ok(t) => out.extend(r.push(&t).unwrap()),
                Err(aiesim_mbim::DecodeError::Garbage { skipped }) => garbage += skipped,
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert_eq!(garbage, 3);
    assert_eq!(out, messages);
}
