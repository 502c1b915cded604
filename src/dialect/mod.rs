//! Registration wire dialects.
//!
//! Each wire dialect lives in its own submodule and turns request bytes into
//! `domain` values (or a `domain::FieldError` naming the refused field).
//! Dialect code is pure: no HTTP, no SQL, no I/O, no clock. It depends on
//! `domain` only; the `http` layer maps its errors to status codes and
//! response bodies.
//!
//! | module     | wire format                                        | spec                          |
//! |------------|----------------------------------------------------|-------------------------------|
//! | `uds`      | CUCM UDS `<token>` XML                             | protocol.md §1                |
//! | `spark`    | Webex `/register` JSON, webhook envelope, `X-Spark-Signature` | interface.md §4, protocol.md §6 |
//! | `acrobits` | Acrobits Push Token Reporter query / form / JSON   | interface.md §4, protocol.md §7 |
//! | `sip`      | raw SIP REGISTER: X-MPUSH, RFC 8599, Kazoo rules   | interface.md §4, protocol.md §8 |
//! | `native`   | pushrelay's own device JSON                        | interface.md §9               |
//!
//! Each produces whole `domain::Registration`s (device ids included) for
//! `register::Registrar`, the one way into the store.
//!
//! Error codes shared by the dialects: `too_large` (413), `malformed_*`,
//! `missing_field`, `duplicate_field`, `invalid_*` (400). Messages never
//! quote tokens, keys or signatures.

pub mod acrobits;
pub mod native;
pub mod sip;
pub mod spark;
pub mod uds;

use crate::domain::DevicePkid;

/// A device id that names a phone without showing its token: `<prefix>-`
/// and 16 hex digits of SHA-256 of the token.
pub fn hashed_device_id(prefix: &str, token: &str) -> DevicePkid {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(token.as_bytes());
    DevicePkid::parse(&format!("{prefix}-{}", &hex::encode(h)[..16])).expect("a hex id is a device id")
}
