//! The aiesim API's plain types: what a request asks for ([`ChatOptions`]), what its stream
//! carries ([`StreamEvent`]) and the names of its errors ([`ErrorName`]). No D-Bus binding:
//! the daemon's core (broker, ledger, router, cloud client) uses these, and `aiesim-dbus`
//! maps them onto the bus.

mod chat;
pub mod error;
pub mod event;
pub mod image;

pub use chat::{ChatOptions, Content, Message, Part, Priority};
pub use error::ErrorName;
pub use event::{StreamEvent, Usage};
pub use image::{Image, ImageError, ImageInfo, ImageKind};
