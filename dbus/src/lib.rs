//! The aiesim D-Bus contract as Rust: bus names, error names, the stream event format of
//! `Broker.Chat`, the request options as `a{sv}` ([`ChatDict`]), and typed zbus proxies for
//! apps. The plain types come from `aiesim-wire`, which has no D-Bus binding, so the daemon's
//! core can use them without zbus.
//!
//! The introspection XML under `dbus/interfaces/` is the single source of truth; the tests of
//! this crate check the proxies against it.

pub mod image_fd;
pub mod options;
pub mod proxy;

pub use aiesim_wire::{
    ChatOptions, Content, ErrorName, Image, ImageError, ImageInfo, ImageKind, Message, Part, Priority, StreamEvent,
    Usage, error, event, image,
};
pub use options::{ChatDict, ImageLimits, OptionsError};

/// Well-known bus name of the daemon.
pub const BUS_NAME: &str = "org.aiesim.AiEsim1";
/// Root object, with `org.freedesktop.DBus.ObjectManager` and the Broker.
pub const ROOT_PATH: &str = "/org/aiesim/AiEsim1";
/// Prefix of request objects (`/org/aiesim/AiEsim1/Request/N`).
pub const REQUEST_PATH_PREFIX: &str = "/org/aiesim/AiEsim1/Request";
/// Prefix of modem objects (`/org/aiesim/AiEsim1/Modem/N`).
pub const MODEM_PATH_PREFIX: &str = "/org/aiesim/AiEsim1/Modem";

/// Interface names.
pub mod iface {
    pub const BROKER: &str = "org.aiesim.AiEsim1.Broker";
    pub const REQUEST: &str = "org.aiesim.AiEsim1.Request";
    pub const MODEM: &str = "org.aiesim.AiEsim1.Modem";
    pub const FASTPATH: &str = "org.aiesim.AiEsim1.Fastpath";
    pub const BUDGET: &str = "org.aiesim.AiEsim1.Budget";
    pub const ENDPOINTS: &str = "org.aiesim.AiEsim1.Endpoints";
    pub const DAEMON: &str = "org.aiesim.AiEsim1.Daemon";
}
