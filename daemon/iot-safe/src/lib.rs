//! The GSMA `IoT` SAFE (IoT.05) applet interface: bytes in, typed values out, no I/O.
//!
//! The daemon builds [`Request`]s into commands for an [`Applet`] on a logical channel and
//! parses the answers; the simulated applet reads the same commands back with
//! [`Request::from_command`] and builds its answers with the same types:
//!
//! * [`ApplicationInfo`], [`ObjectList`] (C1–C4 containers, 6300 continuation),
//!   [`decode_file_info`], [`PublicKey`];
//! * [`signature::decode`] accepts every signature form cards send and always yields P-256's
//!   64-byte r‖s;
//! * [`ObjectList::signing_key`] and [`ObjectList::certificate_file`] pick the device's
//!   credential.
//!
//! Where host libraries disagree on an encoding, every variant seen is accepted on decode.

mod command;
mod response;
pub mod signature;

pub use command::{
    AID, Applet, ClassCoding, ObjectRef, Request, RequestError, SignInput, SignMode, SignParams, hash, ins,
    signature_algorithm,
};
pub use response::{
    ApplicationInfo, FileObject, KeyObject, KeyType, Object, ObjectList, PublicKey, ResponseError, STATE_ACTIVE,
    crypto_function, decode_file_info, encode_file_info, file_usage, key_usage, object_list_continues, verify_result,
};
pub use signature::SignatureError;

#[cfg(test)]
mod tests;
