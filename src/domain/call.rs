use super::{DevicePkid, FieldError, UserId};
use std::fmt;

/// The backend's id for one call (`pushid`), echoed in the V2 payload so the
/// app can find the call (`getCallIdByNotificationId`).
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct PushId(String);

impl PushId {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        if raw.is_empty() || raw.chars().count() > 256 || raw.chars().any(|c| c.is_control()) {
            return Err(FieldError::new("pushid", "invalid_pushid", "pushid must be 1 to 256 printable characters"));
        }
        Ok(Self(raw.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PushId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PushId({:?})", self.0)
    }
}

/// pushrelay's id for one call event (a UUID; new ones are time-ordered,
/// version 7), used by `GET /v1/calls/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct CallId(String);

impl CallId {
    pub fn new() -> Self {
        Self(super::time_ordered_uuid().to_string())
    }
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        uuid::Uuid::parse_str(raw).map(|u| Self(u.to_string())).map_err(|_| FieldError::new("call_id", "invalid_call_id", "call_id must be a UUID"))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for CallId {
    fn default() -> Self {
        Self::new()
    }
}

/// When ringing stops. Every push, retry and expiry is bounded by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingWindow {
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
}

impl RingWindow {
    pub const MAX_SECONDS: u32 = 300;

    pub fn starting_now(now_ms: i64, ring_seconds: u32) -> Self {
        Self { starts_at_ms: now_ms, ends_at_ms: now_ms + i64::from(ring_seconds) * 1000 }
    }
    /// `ring_seconds` from a request: 1..=300.
    pub fn parse_seconds(raw: i64) -> Result<u32, FieldError> {
        if (1..=i64::from(Self::MAX_SECONDS)).contains(&raw) {
            Ok(raw as u32)
        } else {
            Err(FieldError::new("ring_seconds", "invalid_ring_seconds", "ring_seconds must be between 1 and 300"))
        }
    }
    /// `apns-expiration`: ring end in epoch seconds, rounded up.
    pub fn ends_at_epoch_seconds(&self) -> i64 {
        (self.ends_at_ms + 999).div_euclid(1000)
    }
    /// Milliseconds left at `now_ms` (0 once the window closed).
    pub fn remaining_ms(&self, now_ms: i64) -> i64 {
        (self.ends_at_ms - now_ms).max(0)
    }
}

/// One incoming call to announce to a user's devices.
#[derive(Clone, Debug)]
pub struct CallEvent {
    pub call_id: CallId,
    pub user: UserId,
    pub device: Option<DevicePkid>,
    pub push_id: PushId,
    pub display_name: String,
    pub display_number: String,
    pub hunt_pilot_dn: String,
    /// Who caused the call, when the source says (Webex `actorId`).
    pub actor: Option<String>,
    pub ring: RingWindow,
}

/// Longest caller-supplied text (display name, number, hunt pilot).
pub const MAX_CALL_TEXT: usize = 1024;

impl CallEvent {
    /// The one constructor: a call for every device of `user`, with no caller
    /// details yet (set them with `CallEvent::text`-checked values).
    pub fn new(user: UserId, push_id: PushId, ring: RingWindow) -> Self {
        Self {
            call_id: CallId::new(),
            user,
            device: None,
            push_id,
            display_name: String::new(),
            display_number: String::new(),
            hunt_pilot_dn: String::new(),
            actor: None,
            ring,
        }
    }

    /// A caller-supplied text field: at most `MAX_CALL_TEXT` printable
    /// characters (absent = empty), the same rule for every call source.
    pub fn text(field: &'static str, v: Option<String>) -> Result<String, FieldError> {
        let v = v.unwrap_or_default();
        if v.chars().count() > MAX_CALL_TEXT || v.chars().any(char::is_control) {
            return Err(FieldError::new(field, "invalid_field", format!("{field} must be at most {MAX_CALL_TEXT} printable characters")));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_end_rounds_up_to_whole_seconds() {
        let w = RingWindow::starting_now(1_764_057_600_001, 30);
        assert_eq!(w.ends_at_ms, 1_764_057_630_001);
        assert_eq!(w.ends_at_epoch_seconds(), 1_764_057_631);
        assert_eq!(RingWindow::starting_now(1_764_057_600_000, 30).ends_at_epoch_seconds(), 1_764_057_630);
    }

    #[test]
    fn ring_seconds_out_of_range_is_rejected() {
        assert!(RingWindow::parse_seconds(0).is_err());
        assert!(RingWindow::parse_seconds(301).is_err());
        assert_eq!(RingWindow::parse_seconds(30).unwrap(), 30);
    }
}

/// A message to tell a person about (seeds/000's `messages` webhook): an
/// alert titled "New Message" with the sender's address as its body.
#[derive(Clone, Debug)]
pub struct MessageNote {
    /// The message's id (collapses repeats on the phone), when known.
    pub id: Option<String>,
    /// Who sent it.
    pub from: super::Email,
}
