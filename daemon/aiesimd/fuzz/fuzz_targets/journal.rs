//! Arbitrary bytes as the ledger's journal file: the frame decoder, then every good frame as a
//! ledger record replayed into a fresh ledger. Neither may panic, whatever a torn write, a bad
//! disk or a hostile file holds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // As a whole file, and as bare records (the header skipped).
    let mut file = aiesim_journal::HEADER.to_vec();
    file.extend_from_slice(data);
    for bytes in [data, file.as_slice()] {
        if let Ok((records, good)) = aiesim_journal::decode(bytes) {
            assert!(good <= bytes.len());
            let _ = aiesimd::ledger::replay_for_fuzzing(&records);
        }
    }
    // Each split of the input into two records.
    let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let _ = aiesimd::ledger::replay_for_fuzzing(&[&data[..cut], &data[cut..]]);
});
