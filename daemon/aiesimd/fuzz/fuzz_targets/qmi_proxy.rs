//! Arbitrary bytes as what a `qmi-proxy` client sends (qmicli `--device-open-proxy`): the
//! Internal Proxy Open handshake, Allocate/Release CID and requests, through the proxy's own
//! rules. Nothing may reach the modem before the handshake or on a client id the client was not
//! given, and every answer the proxy makes must encode.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| aiesimd::modem::qmi_proxy_replay_for_fuzzing(data));
