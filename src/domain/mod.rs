//! Parsed domain values. Raw strings become these types at the edge
//! (`dialect::*`, `http::*`, `config`); everything past the edge takes them
//! as given and never re-checks a string.
//!
//! Architecture invariant: `domain` depends only on std, serde, crypto
//! parsing crates and `secret`. It knows nothing about HTTP, SQL or XML.

/// An enum whose variants have names (stored, on the wire, in metric
/// labels): the variants, `ALL` and `as_str` come from one list, so a new
/// variant is in every string table (parsing, labels, the console) by
/// construction.
macro_rules! named {
    ($(#[$m:meta])* $vis:vis enum $name:ident { $($(#[$vm:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        $vis enum $name {
            $($(#[$vm])* $variant),+
        }

        impl $name {
            /// Every variant, in declaration order: the one list every
            /// string table iterates.
            pub const ALL: [$name; [$(stringify!($variant)),+].len()] = [$($name::$variant),+];

            /// Its name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }
    };
}

mod call;
mod channel;
mod content;
mod credentials;
pub mod credentials_cert;
mod endpoint;
mod error;
mod ids;
mod outcome;
mod push_key;
mod registration;
mod tenant;
mod token;

pub use call::{CallEvent, CallId, MessageNote, PushId, RingWindow};
pub use channel::{Channel, CredentialKind, Dialect, PayloadVersion, Provider};
pub use content::{Content, Shape};
pub use credentials::WebexCredentials;
pub use endpoint::{is_public, AllowedHosts, EndpointHost};
pub use error::FieldError;
pub use ids::{AppId, BundleId, DevicePkid, Email, UserId};
pub use outcome::{CallReport, Delivery, Outcome, STORE_UNAVAILABLE};
pub use push_key::PushKey;
pub use registration::{Device, DeviceSet, DialectData, MessageToken, Registration, SipBinding, SipFormat, UnreadableDevice};
pub use tenant::{Reach, Scope, TenantId};
pub use token::{DeviceToken, SubscriptionKeys};

/// Milliseconds since the Unix epoch, the one time unit stored and compared.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A fresh random (version 4) UUID: call ids, `apns-id`, request ids,
/// callback ids. Drawn from the thread's CSPRNG (`rand`'s `ThreadRng`,
/// seeded from the OS): `Uuid::new_v4` asks the kernel (`getrandom`) for
/// every id, four system calls per call. (A JWE's IV still comes from the
/// OS, `jwe::encrypt`.)
pub fn random_uuid() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

/// A fresh time-ordered (version 7) UUID: the current millisecond, then 74
/// random bits from the thread's CSPRNG. Call ids are these, so a new call
/// lands at the end of the calls table's key index, on the page the last
/// call touched, instead of on a random page of it (every page a batch
/// touches is another 4 kB written to the SQLite WAL).
pub fn time_ordered_uuid() -> uuid::Uuid {
    uuid::Builder::from_unix_timestamp_millis(now_ms().max(0) as u64, &rand::random()).into_uuid()
}

#[cfg(test)]
mod tests {
    #[test]
    fn time_ordered_uuids_are_version_7_sort_by_time_and_differ() {
        let a = super::time_ordered_uuid();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = super::time_ordered_uuid();
        assert_eq!(a.get_version(), Some(uuid::Version::SortRand));
        assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
        assert!(a.to_string() < b.to_string(), "{a} then {b}");
        assert_ne!(super::time_ordered_uuid(), super::time_ordered_uuid());
    }

    #[test]
    fn random_uuids_are_version_4_and_differ() {
        let (a, b) = (super::random_uuid(), super::random_uuid());
        assert_eq!(a.get_version(), Some(uuid::Version::Random));
        assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
        assert_ne!(a, b);
    }
}
