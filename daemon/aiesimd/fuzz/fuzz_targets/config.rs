//! Arbitrary bytes as the daemon's configuration file: parsed, validated and its errors printed.
#![no_main]

use aiesimd::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml_str(text) {
        Ok(config) => {
            config.validate().expect("a loaded configuration is valid");
            let _ = format!("{config:?}");
        }
        Err(e) => {
            // The daemon prints the whole chain at start-up.
            let mut source: Option<&dyn std::error::Error> = Some(&e);
            while let Some(s) = source {
                let _ = s.to_string();
                source = s.source();
            }
        }
    }
});
