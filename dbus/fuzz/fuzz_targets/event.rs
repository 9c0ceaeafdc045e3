//! Arbitrary text as a line of the `Broker.Chat` stream: whatever parses must print back as
//! exactly one line that parses to the same event.
#![no_main]

use aiesim_dbus::StreamEvent;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(event) = StreamEvent::from_line(line) {
        let printed = event.to_line();
        assert_eq!(printed.find('\n'), Some(printed.len() - 1), "not one line: {printed:?}");
        assert_eq!(StreamEvent::from_line(&printed).ok(), Some(event));
    }
});
