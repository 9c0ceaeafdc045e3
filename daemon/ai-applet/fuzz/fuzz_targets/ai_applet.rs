//! Arbitrary bytes through every AI applet decoder; whatever decodes must survive re-encoding.
#![no_main]

use aiesim_ai_applet::{AccountKey, AppletError, AppletInfo, Balance, Endpoints, Receipt, Request};
use aiesim_apdu::{Command, StatusWord};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(command) = Command::decode(data) {
        if let Ok(request) = Request::from_command(&command) {
            let again = request.to_command(0).expect("channel 0 exists");
            assert_eq!(Request::from_command(&again), Ok(request));
        }
    }
    if let Ok(balance) = Balance::decode(data) {
        assert_eq!(balance.encode(), data);
    }
    if let Ok(receipt) = Receipt::decode(data) {
        assert_eq!(receipt.encode(), data);
    }
    if let Ok(key) = AccountKey::decode(data) {
        assert_eq!(key.encode(), data);
    }
    if let Ok(info) = AppletInfo::decode(data) {
        assert_eq!(AppletInfo::decode(&info.encode().expect("fits")), Ok(info));
    }
    if let Ok(list) = Endpoints::decode(data) {
        assert_eq!(Endpoints::decode(&list.encode().expect("fits")), Ok(list));
    }
    if let [sw1, sw2, ..] = *data {
        let _ = AppletError::check(StatusWord::new(sw1, sw2));
    }
});
