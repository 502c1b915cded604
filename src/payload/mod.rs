//! Payload builders: a call event (plus, for UDS devices, the device's key)
//! turned into the exact content to push.
//!
//! Everything here is pure (no I/O, no clock, no randomness except through
//! `jwe::encrypt`) and depends only on `domain` and `jwe`.
//!
//! `for_call` is the one place that maps a device's dialect and its
//! provider's `Shape` to its payload: one exhaustive `match` on
//! `DialectData` and one on `Shape`, so a new dialect (or a new shape) does
//! not compile until it has a payload. A new provider picks an existing
//! shape and needs nothing here.
//!
//! - `v2`: the CUCM/UDS V2 JSON (protocol.md §2) and its APNs/FCM wrappers.
//! - `plain`: Spark/Webex, Acrobits, SIP and MizuTech payloads, and cancels.

pub mod plain;
pub mod v2;

use crate::domain::{CallEvent, DialectData, MessageNote, PushKey, Registration, SipFormat};
pub use crate::domain::{Content, Shape};
use std::collections::BTreeMap;

/// The call wake-up payload for one device: its dialect decides the format,
/// its provider's `shape` the wrapping.
pub fn for_call(event: &CallEvent, reg: &Registration, shape: Shape) -> Content {
    match (&reg.data, shape) {
        (DialectData::Uds { key, .. }, _) | (DialectData::Native { key: Some(key) }, _) => v2_jwe(event, key, shape),
        (DialectData::Spark { .. }, Shape::Apns) => Content::ApnsVoip { body: plain::webex_voip(event) },
        (DialectData::Sip { binding, .. }, Shape::Apns) if binding.format == SipFormat::Mpush => Content::ApnsVoip { body: plain::mizu(event) },
        (DialectData::Sip { binding, .. }, Shape::Data) if binding.format == SipFormat::Mpush => Content::Data { data: plain::mizu_data(event) },
        (DialectData::Sip { binding, .. }, Shape::Apns) if binding.format == SipFormat::Rfc8599Alert => {
            Content::ApnsAlert { body: plain::call_alert(event), collapse_id: Some(event.call_id.as_str().chars().take(64).collect()) }
        }
        // Acrobits, RFC 8599 / Kazoo SIP, native devices without a key (and
        // every dialect as data): the plain call payload.
        (DialectData::Spark { .. } | DialectData::Acrobits { .. } | DialectData::Sip { .. } | DialectData::Native { key: None }, _) => {
            plain_call(event, shape)
        }
    }
}

/// The V2 JSON encrypted as a compact JWE with the device key (UDS devices,
/// native devices registered with a key).
fn v2_jwe(event: &CallEvent, key: &PushKey, shape: Shape) -> Content {
    let jwe = crate::jwe::encrypt(key, &v2::build(event));
    match shape {
        Shape::Apns => Content::ApnsVoip { body: v2::apns_body(&jwe) },
        Shape::Data => Content::Data { data: BTreeMap::from([("body".to_string(), jwe)]) },
    }
}

/// The plain call payload: APNs VoIP JSON or data.
fn plain_call(event: &CallEvent, shape: Shape) -> Content {
    match shape {
        Shape::Apns => Content::ApnsVoip { body: plain::apns_voip(event) },
        Shape::Data => Content::Data { data: plain::fcm_data(event) },
    }
}

/// A message alert (seeds/000) for a device: an APNs alert on its message
/// token, or a data message `type: message`; `None` for an APNs device
/// without a message token (never a VoIP push).
pub fn for_message(note: &MessageNote, reg: &Registration, shape: Shape) -> Option<Content> {
    match shape {
        Shape::Data => Some(Content::Data { data: plain::message_data(note) }),
        Shape::Apns => reg
            .msg()
            .map(|_| Content::ApnsAlert { body: plain::message_alert(note), collapse_id: note.id.as_ref().map(|id| id.chars().take(64).collect()) }),
    }
}

/// What a test push looks like on the phone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestKind {
    /// A VoIP push (`<bundle>.voip`): what a call sends.
    Voip,
    /// A visible alert (`<bundle>`).
    Alert,
}

/// A test push (`POST /v1/apps/{app}/test-push`): marked `"test": true` so
/// an app can tell it from a call.
pub fn for_test(kind: TestKind, shape: Shape) -> Content {
    match (shape, kind) {
        (Shape::Data, _) => Content::Data { data: BTreeMap::from([("type".to_string(), "test".to_string())]) },
        (Shape::Apns, TestKind::Voip) => Content::ApnsVoip { body: br#"{"aps":{},"type":"test","test":true}"#.to_vec() },
        (Shape::Apns, TestKind::Alert) => Content::ApnsAlert {
            body: br#"{"aps":{"alert":{"title":"pushrelay","body":"Test push"}},"type":"test","test":true}"#.to_vec(),
            collapse_id: None,
        },
    }
}

/// What a cancel sends to a device: never a VoIP push on APNs. APNs devices
/// with a message token get an alert there; data devices a data message
/// `type: cancel`; APNs devices with only a VoIP token get nothing (`None`:
/// reported `skipped`).
pub fn for_cancel(call_id: &str, push_id: &str, reg: &Registration, shape: Shape) -> Option<Content> {
    match shape {
        Shape::Data => Some(Content::Data { data: plain::cancel_data(call_id, push_id) }),
        Shape::Apns => reg
            .msg()
            .map(|_| Content::ApnsAlert { body: plain::cancel_alert(call_id, push_id), collapse_id: Some(call_id.chars().take(64).collect()) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::*;

    fn reg(channel: Channel, key: PushKey) -> Registration {
        Registration {
            user: UserId::parse("alice").unwrap(),
            device: DevicePkid::parse("d1").unwrap(),
            channel,
            token: DeviceToken::for_channel(channel, if channel == Channel::Fcm { "fcm:tok" } else { "00112233445566778899aabbccddeeff" }).unwrap(),
            subscription_keys: None,
            app: AppId::parse("com.example.app").unwrap(),
            data: DialectData::Uds { key, version: PayloadVersion::V2 },
        }
    }

    fn event() -> CallEvent {
        CallEvent {
            call_id: CallId::new(),
            user: UserId::parse("alice").unwrap(),
            device: None,
            push_id: PushId::parse("p-1").unwrap(),
            display_name: "Alice".into(),
            display_number: "1001".into(),
            hunt_pilot_dn: String::new(),
            actor: None,
            ring: RingWindow::starting_now(1_764_057_600_000, 30),
        }
    }

    #[test]
    fn uds_apns_devices_get_the_v2_jwe_in_data() {
        let key = PushKey::from_bytes([9; 32]);
        let Content::ApnsVoip { body } = for_call(&event(), &reg(Channel::ApnsDev, key.clone()), Shape::Apns) else { panic!() };
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["aps"], serde_json::json!({}));
        let plain = crate::jwe::decrypt(v["data"].as_str().unwrap(), key.as_bytes()).unwrap();
        assert_eq!(plain, v2::build(&event()));
    }

    #[test]
    fn uds_fcm_devices_get_the_jwe_as_data_body() {
        let key = PushKey::from_bytes([3; 32]);
        let Content::Data { data } = for_call(&event(), &reg(Channel::Fcm, key.clone()), Shape::Data) else { panic!() };
        assert_eq!(data.keys().collect::<Vec<_>>(), vec!["body"]);
        assert!(crate::jwe::decrypt(&data["body"], key.as_bytes()).is_ok());
    }
}
