//! Arbitrary bytes through the journal's frame decoder; the good prefix must re-encode exactly.
#![no_main]

use aiesim_journal::{HEADER, MAX_RECORD, decode, encode_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((records, good)) = decode(data) else {
        return;
    };
    assert!(good <= data.len());
    if good == 0 {
        assert!(records.is_empty() && data.len() < HEADER.len());
        return;
    }
    let mut again = HEADER.to_vec();
    for record in &records {
        assert!(!record.is_empty() && record.len() <= MAX_RECORD);
        encode_frame(record, &mut again);
    }
    assert_eq!(again, data[..good]);
});
