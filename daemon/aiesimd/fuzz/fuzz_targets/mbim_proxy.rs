//! Arbitrary bytes as what an `mbim-proxy` client sends (mbimcli `--device-open-proxy`), in
//! fragments where the bytes say so: OPEN, the `PROXY_CONTROL` configuration, subscription lists
//! and commands, through the proxy's own rules. No command may reach the modem before the
//! handshake, no client may drop another party's notification wishes, and every answer the proxy
//! makes must encode.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| aiesimd::modem::mbim_proxy_replay_for_fuzzing(data));
