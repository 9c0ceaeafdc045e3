//! The journal's bytes: header and frames, no I/O.

use crate::JournalError;

/// The first 8 bytes of every journal file.
pub const HEADER: &[u8; 8] = b"AIESIMJ1";

/// The largest record payload: 1 MiB.
pub const MAX_RECORD: usize = 1 << 20;

/// A frame's length and checksum fields.
const FRAME_HEAD: usize = 8;

/// Decodes a whole journal file: the payloads of the good frames, in order, and the byte length
/// of the good prefix, header included. Decoding stops at the first frame that is truncated,
/// oversized, zero-length or fails its checksum. Empty input, or input that is only the start of
/// the header, decodes to no records and a good length of 0. Never panics.
pub fn decode(bytes: &[u8]) -> Result<(Vec<&[u8]>, usize), JournalError> {
    let Some(mut rest) = bytes.strip_prefix(HEADER) else {
        return if HEADER.starts_with(bytes) {
            Ok((Vec::new(), 0))
        } else {
            Err(JournalError::BadHeader)
        };
    };
    let mut records = Vec::new();
    let mut good = HEADER.len();
    while let Some((head, body)) = rest.split_first_chunk::<FRAME_HEAD>() {
        let [l0, l1, l2, l3, c0, c1, c2, c3] = *head;
        let len = usize::try_from(u32::from_le_bytes([l0, l1, l2, l3])).unwrap_or(usize::MAX);
        let crc = u32::from_le_bytes([c0, c1, c2, c3]);
        if len == 0 || len > MAX_RECORD || len > body.len() {
            break;
        }
        let (payload, after) = body.split_at(len);
        if crc32c::crc32c(payload) != crc {
            break;
        }
        records.push(payload);
        good += FRAME_HEAD + len;
        rest = after;
    }
    Ok((records, good))
}

/// Appends one frame holding `payload` to `out`. The caller keeps `payload` within
/// 1..=[`MAX_RECORD`] bytes; [`decode`] stops at a frame that is not.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    push_frame(payload.len(), crc32c::crc32c(payload), payload, out);
}

/// [`encode_frame`] with the checksum already computed, so `append` can do it outside the lock.
pub(crate) fn push_frame(len: usize, crc: u32, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(len).expect("records are at most MAX_RECORD bytes");
    out.reserve(FRAME_HEAD + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal_of(records: &[&[u8]]) -> Vec<u8> {
        let mut out = HEADER.to_vec();
        for record in records {
            encode_frame(record, &mut out);
        }
        out
    }

    #[test]
    fn round_trip() {
        let bytes = journal_of(&[b"a", b"bc", &[7; 300]]);
        let (records, good) = decode(&bytes).unwrap();
        assert_eq!(records, [&b"a"[..], b"bc", &[7; 300]]);
        assert_eq!(good, bytes.len());
    }

    #[test]
    fn known_frame_bytes() {
        let mut out = Vec::new();
        encode_frame(b"123456789", &mut out);
        // 0xE3069283 is the CRC-32C check value of "123456789".
        assert_eq!(out[..8], [9, 0, 0, 0, 0x83, 0x92, 0x06, 0xE3]);
        assert_eq!(&out[8..], b"123456789");
    }

    #[test]
    fn header_cases() {
        assert_eq!(decode(b"").unwrap(), (vec![], 0));
        assert_eq!(decode(b"AIES").unwrap(), (vec![], 0));
        assert_eq!(decode(HEADER).unwrap(), (vec![], 8));
        assert!(matches!(decode(b"AIESIMJ2"), Err(JournalError::BadHeader)));
        assert!(matches!(decode(b"AIEX"), Err(JournalError::BadHeader)));
        assert!(matches!(decode(b"not a journal at all"), Err(JournalError::BadHeader)));
    }

    #[test]
    fn stops_at_bad_frames() {
        let good = journal_of(&[b"one", b"two"]);
        let cases: [(&str, Vec<u8>); 4] = [
            ("zero length", [0, 0, 0, 0, 0, 0, 0, 0].to_vec()),
            ("oversized", {
                let mut f = u32::try_from(MAX_RECORD + 1).unwrap().to_le_bytes().to_vec();
                f.extend_from_slice(&[0; 4]);
                f
            }),
            ("truncated payload", {
                let mut f = Vec::new();
                encode_frame(b"three", &mut f);
                f.pop();
                f
            }),
            ("bad checksum", {
                let mut f = Vec::new();
                encode_frame(b"three", &mut f);
                f[9] ^= 1;
                f
            }),
        ];
        for (what, tail) in cases {
            let mut bytes = good.clone();
            bytes.extend_from_slice(&tail);
            encode_frame(b"after", &mut bytes);
            let (records, len) = decode(&bytes).unwrap();
            assert_eq!(records, [&b"one"[..], b"two"], "{what}");
            assert_eq!(len, good.len(), "{what}");
        }
        for cut in good.len() - 3..good.len() {
            let (records, len) = decode(&good[..cut]).unwrap();
            assert_eq!(records, [&b"one"[..]]);
            assert_eq!(len, journal_of(&[b"one"]).len());
        }
    }

    #[test]
    fn accepts_a_record_of_exactly_max_size() {
        let big = vec![0xA5; MAX_RECORD];
        let bytes = journal_of(&[&big]);
        assert_eq!(decode(&bytes).unwrap(), (vec![&big[..]], bytes.len()));
    }

    /// xorshift64: reproducible noise without a dependency.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn random_bytes_never_panic_and_reencode() {
        let mut state = 0x9E37_79B9_7F4A_7C15;
        let valid = journal_of(&[b"alpha", b"beta", &[1; 40], b"gamma"]);
        for round in 0..20_000 {
            let mut bytes = if round % 2 == 0 {
                // Mutations of a valid journal reach the frame checks; pure noise mostly fails the header.
                let mut v = valid.clone();
                for _ in 0..=next(&mut state) % 4 {
                    let i = usize::try_from(next(&mut state) % v.len() as u64).unwrap();
                    v[i] ^= u8::try_from(next(&mut state) % 255 + 1).unwrap();
                }
                v.truncate(usize::try_from(next(&mut state) % (v.len() as u64 + 1)).unwrap());
                v
            } else {
                let len = usize::try_from(next(&mut state) % 64).unwrap();
                (0..len).map(|_| next(&mut state).to_le_bytes()[0]).collect()
            };
            if round % 3 == 0 && bytes.len() >= 8 {
                bytes[..8].copy_from_slice(HEADER);
            }
            let Ok((records, good)) = decode(&bytes) else { continue };
            assert!(good <= bytes.len());
            if good == 0 {
                assert!(records.is_empty() && bytes.len() < HEADER.len());
                continue;
            }
            let mut again = HEADER.to_vec();
            for record in &records {
                assert!(!record.is_empty() && record.len() <= MAX_RECORD);
                encode_frame(record, &mut again);
            }
            assert_eq!(again, bytes[..good]);
        }
    }
}
