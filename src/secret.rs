//! `Secret<T>`: a value that never prints and is wiped when dropped.
//!
//! Architecture invariant: every secret (device keys, .p8 keys, certificates,
//! service accounts, admin tokens, passwords) lives in a type from this module
//! or in a type with a hand-written redacted `Debug` and no `Display`.
//! Depends on nothing else in the crate.

use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A secret value. `Debug` prints `Secret(<redacted>)`; there is no `Display`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Secret<T: Zeroize>(T);

impl<T: Zeroize> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }
    /// The only way to read the value: grep for `expose()` to audit uses.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl From<String> for Secret<String> {
    fn from(s: String) -> Self {
        Secret::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2".to_string());
        let shown = format!("{s:?} {:#?}", s);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(s.expose(), "hunter2");
    }
}
