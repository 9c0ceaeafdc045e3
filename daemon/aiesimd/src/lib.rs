//! aiesimd: the aiesim daemon as a library, so that its parts are tested on their own.
//!
//! The core (`broker`, `ledger`, `router`) is plain Rust and never knows who called it; the
//! D-Bus front end in `service` only translates. The modem, the cloud, the clock and the
//! caller's identity come in through traits so tests control them.

pub mod broker;
pub mod clock;
pub mod cloud;
pub mod config;
pub mod esim;
pub mod fastpath;
pub mod identity;
pub mod ledger;
pub mod modem;
pub mod router;
pub mod service;
