//! Arbitrary bytes as an image an app passed: sniffing and header reading never panic, and
//! what they accept has a size and keeps its kind.
#![no_main]

use aiesim_dbus::{Image, ImageKind, image::inspect};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = inspect(data) {
        assert!(info.width > 0 && info.height > 0);
        assert_eq!(ImageKind::from_mime(info.kind.mime()), Some(info.kind));
        let image = Image::new(data.to_vec()).expect("what inspect accepts is an image");
        assert_eq!(image.info, info);
        assert_eq!(&*image.data, data);
    }
});
