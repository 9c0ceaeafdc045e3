//! Arbitrary bytes as the body of `Broker.Chat` (`a{sv}`) and `Broker.Ask` (`sa{sv}`), in either
//! byte order: whatever the options parser accepts must survive the trip back through the
//! dictionary and the wire that apps use.
#![no_main]

use aiesim_dbus::ChatDict as _;
use std::collections::HashMap;

use aiesim_dbus::{ChatOptions, ImageLimits};
use libfuzzer_sys::fuzz_target;
use zbus::{
    OwnedVariant,
    wire::{
        BE, LE,
        serialized::{Context, Data},
        to_bytes,
    },
};

type Dict = HashMap<String, OwnedVariant>;

/// The daemon's defaults; bodies without file descriptors never reach them.
const LIMITS: ImageLimits = ImageLimits {
    max_image_bytes: 4 << 20,
    max_request_bytes: 8 << 20,
    max_images: 8,
};

fuzz_target!(|data: &[u8]| {
    // Header byte: bit 0 picks the byte order, as the message header's first byte does.
    let Some((&header, body)) = data.split_first() else {
        return;
    };
    let context = Context::new(if header & 1 == 0 { LE } else { BE }, 0);
    let body = Data::new(body, context);

    if let Ok((dict, _)) = body.deserialize::<Dict>() {
        if let Ok(opts) = ChatOptions::from_chat(&dict, &LIMITS) {
            let again = wire_trip(context, &opts.to_chat_dict().expect("parsed options encode"));
            assert_eq!(ChatOptions::from_chat(&again, &LIMITS), Ok(opts));
        }
        check_ask("What is the capital of France?", &dict, context);
    }
    if let Ok(((prompt, dict), _)) = body.deserialize::<(String, Dict)>() {
        check_ask(&prompt, &dict, context);
    }
});

fn check_ask(prompt: &str, dict: &Dict, context: Context) {
    if let Ok(opts) = ChatOptions::from_ask(prompt, dict, &LIMITS) {
        let again = wire_trip(context, &opts.to_ask_dict());
        assert_eq!(ChatOptions::from_ask(prompt, &again, &LIMITS), Ok(opts));
    }
}

/// Encodes `dict` as an app would send it and decodes it as the daemon would receive it.
fn wire_trip(context: Context, dict: &Dict) -> Dict {
    let bytes = to_bytes(context, dict).expect("an options dictionary encodes");
    bytes.deserialize::<Dict>().expect("an encoded dictionary decodes").0
}
