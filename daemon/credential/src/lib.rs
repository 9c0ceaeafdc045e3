//! The device's short-lived cloud credential: a compact JWS/JWT signed with ES256 by the eSIM.
//!
//! The IoT SAFE applet holds the device's P-256 key and never lets it out, so a credential is
//! built in two halves around one card command:
//!
//! 1. [`Unsigned::new`] checks a [`Header`] and [`Claims`] against a [`Policy`] (minutes of life,
//!    an audience that is the endpoint's origin from [`origin_of`], a real nonce) and encodes the
//!    signing input;
//! 2. the card signs [`Unsigned::digest`], SHA-256 computed here, and returns raw `r‖s`;
//! 3. [`Unsigned::sign_with`] appends it, giving the [`Jwt`] sent as `Authorization: Bearer`.
//!
//! With the `verify` feature (on by default), [`verify()`] checks a token the way the cloud does
//! and [`verifying_key_from_x5c`] reads the key of the certificate the token carries.
//!
//! Pure: no I/O, no clock (time is an argument), and no panic on any input.

mod claims;
mod header;
mod policy;
mod unsigned;
#[cfg(feature = "verify")]
pub mod verify;

pub use claims::{Claims, REGISTERED};
pub use header::Header;
pub use policy::{CredentialError, DEFAULT_MAX_LIFETIME_S, MIN_JTI_HEX_DIGITS, Policy, origin_of};
pub use unsigned::{Jwt, Unsigned};
#[cfg(feature = "verify")]
pub use verify::{Expect, VerifyError, unverified_header, verify, verifying_key_from_x5c};
