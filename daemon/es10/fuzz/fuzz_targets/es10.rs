//! Arbitrary bytes through every ES10 decoder; whatever decodes must survive re-encoding.
#![no_main]

use aiesim_apdu::Response;
use aiesim_es10::{
    ConfiguredAddresses, DisableResult, EimConfigurationList, EnableResult, EuiccData, EuiccInfo1, EuiccInfo2,
    ProfileInfoList, Rat, Request, detect_generation,
};
use libfuzzer_sys::fuzz_target;

macro_rules! round_trip {
    ($data:expr, $($ty:ty),*) => {$(
        if let Ok(value) = <$ty>::decode($data) {
            let encoded = value.encode().expect("a decoded value fits a length field");
            assert_eq!(<$ty>::decode(&encoded), Ok(value));
        }
    )*};
}

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = Request::decode(data) {
        let encoded = request.encode().expect("a decoded request fits a length field");
        assert_eq!(Request::decode(&encoded), Ok(request));
    }
    round_trip!(
        data,
        EuiccData,
        EuiccInfo1,
        EuiccInfo2,
        ConfiguredAddresses,
        Rat,
        ProfileInfoList,
        EimConfigurationList
    );
    if let Ok(result) = EnableResult::decode(data) {
        assert_eq!(EnableResult::decode(&result.encode()), Ok(result));
    }
    if let Ok(result) = DisableResult::decode(data) {
        assert_eq!(DisableResult::decode(&result.encode()), Ok(result));
    }
    let _ = detect_generation(&Response::ok(data));
});
