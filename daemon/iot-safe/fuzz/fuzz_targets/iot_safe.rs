//! Arbitrary bytes through every IoT SAFE decoder: commands as the applet reads them, and
//! every response the daemon parses; whatever decodes must survive re-encoding.
#![no_main]

use aiesim_apdu::{Command, StatusWord};
use aiesim_iot_safe::{
    Applet, ApplicationInfo, ClassCoding, ObjectList, PublicKey, Request, decode_file_info, encode_file_info,
    signature, verify_result,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(command) = Command::decode(data) {
        if let Ok(request) = Request::from_command(&command) {
            let applet = Applet::new(ClassCoding::Proprietary, 1).expect("channel 1 exists");
            let again = request.to_command(applet).expect("a decoded request encodes");
            assert_eq!(Request::from_command(&again), Ok(request));
        }
    }
    if let Ok(info) = ApplicationInfo::decode(data) {
        assert_eq!(ApplicationInfo::decode(&info.encode().expect("fits")), Ok(info));
    }
    if let Ok(list) = ObjectList::decode(data) {
        assert_eq!(ObjectList::decode(&list.encode().expect("fits")), Ok(list.clone()));
        let _ = (list.signing_key(), list.certificate_file(), list.encode_parts(64));
    }
    // Bare file fields may add up past what one C3 container can hold: decoding them is fine,
    // and encoding them is then an error, not a value to compare.
    if let Ok(file) = decode_file_info(data) {
        if let Ok(bytes) = encode_file_info(&file) {
            assert_eq!(decode_file_info(&bytes), Ok(file));
        }
    }
    if let Ok(key) = PublicKey::decode(data) {
        assert_eq!(PublicKey::decode(&key.encode()), Ok(key));
    }
    if let Ok(raw) = signature::decode(data) {
        assert_eq!(
            signature::decode(&signature::encode(&raw, signature::SignatureForm::Der)),
            Ok(raw)
        );
    }
    if let [sw1, sw2, ..] = *data {
        let _ = verify_result(StatusWord::new(sw1, sw2));
    }
});
