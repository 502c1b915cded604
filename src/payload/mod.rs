//! Payload builders: a call event (plus, for UDS devices, the device's key)
//! turned into the exact bytes to push.
//!
//! Everything here is pure (no I/O, no clock, no randomness except through
//! `jwe::encrypt`) and depends only on `domain` and `jwe`.
//!
//! - `v2`: the CUCM/UDS V2 JSON (protocol.md §2) and its APNs/FCM wrappers.

pub mod v2;
