//! Registration wire dialects.
//!
//! Each wire dialect lives in its own submodule and turns request bytes into
//! `domain` values (or a `domain::FieldError` naming the refused field).
//! Dialect code is pure: no HTTP, no SQL, no I/O, no clock. It depends on
//! `domain` only; the `http` layer maps its errors to status codes and
//! response bodies.

pub mod acrobits;
pub mod spark;
pub mod uds;
