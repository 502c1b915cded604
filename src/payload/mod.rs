//! Payload builders: a call event (plus, for UDS devices, the device's key)
//! turned into the exact bytes to push.
//!
//! Everything here is pure (no I/O, no clock, no randomness except through
//! `jwe::encrypt`) and depends only on `domain` and `jwe`.
//!
//! `for_call` is the one place that maps a device's dialect to its payload
//! format: one exhaustive `match` on `DialectData`, so a new dialect does
//! not compile until it has a payload.
//!
//! - `v2`: the CUCM/UDS V2 JSON (protocol.md §2) and its APNs/FCM wrappers.
//! - `plain`: Spark/Webex, Acrobits, SIP and MizuTech payloads, and cancels.

pub mod plain;
pub mod v2;

use crate::domain::{CallEvent, DialectData, MessageNote, PushKey, Provider, Registration, SipFormat};
use std::collections::BTreeMap;

/// What to push, in the provider's own shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// An APNs VoIP push: the JSON body (topic `<bundle>.voip`, priority 10).
    ApnsVoip { body: Vec<u8> },
    /// An FCM data-only message (`android.priority: HIGH`).
    FcmData { data: BTreeMap<String, String> },
    /// An APNs alert (cancels, messages, calls to alert-only devices) to the
    /// device's message token when it has one, topic `<bundle>`.
    ApnsAlert { body: Vec<u8>, collapse_id: Option<String> },
}


/// The call wake-up payload for one device: the dialect decides the format.
pub fn for_call(event: &CallEvent, reg: &Registration) -> Content {
    let apns = reg.channel.provider() == Provider::Apns;
    match &reg.data {
        DialectData::Uds { key, .. } => uds_v2_jwe(event, key, apns),
        DialectData::Spark { .. } if apns => Content::ApnsVoip { body: plain::webex_voip(event) },
        DialectData::Sip { binding, .. } if binding.format == SipFormat::Mpush => {
            if apns {
                Content::ApnsVoip { body: plain::mizu(event) }
            } else {
                Content::FcmData { data: plain::mizu_data(event) }
            }
        }
        DialectData::Sip { binding, .. } if apns && binding.format == SipFormat::Rfc8599Alert => {
            Content::ApnsAlert { body: plain::call_alert(event), collapse_id: Some(event.call_id.as_str().chars().take(64).collect()) }
        }
        // Acrobits, RFC 8599 / Kazoo SIP (and every dialect on FCM): the plain call payload.
        DialectData::Spark { .. } | DialectData::Acrobits { .. } | DialectData::Sip { .. } => plain_call(event, apns),
    }
}

/// UDS devices: the V2 JSON, encrypted as a compact JWE with the device key.
fn uds_v2_jwe(event: &CallEvent, key: &PushKey, apns: bool) -> Content {
    let jwe = crate::jwe::encrypt(key, &v2::build(event));
    if apns {
        Content::ApnsVoip { body: v2::apns_body(&jwe) }
    } else {
        Content::FcmData { data: BTreeMap::from([("body".to_string(), jwe)]) }
    }
}

/// The plain call payload: APNs VoIP JSON or FCM data.
fn plain_call(event: &CallEvent, apns: bool) -> Content {
    if apns {
        Content::ApnsVoip { body: plain::apns_voip(event) }
    } else {
        Content::FcmData { data: plain::fcm_data(event) }
    }
}

/// What a cancel sends to a device: never a VoIP push on APNs. APNs devices
/// with a message token get an alert there; FCM devices a data message
/// `type: cancel`; APNs devices with only a VoIP token get nothing (`None`:
/// reported `skipped`).
/// A message alert (seeds/000) for a device: an APNs alert on its message
/// token, or an FCM data message `type: message`; `None` for an APNs
/// device without a message token (never a VoIP push).
pub fn for_message(note: &MessageNote, reg: &Registration) -> Option<Content> {
    match reg.channel.provider() {
        Provider::Fcm => Some(Content::FcmData { data: plain::message_data(note) }),
        Provider::Apns => reg.msg().map(|_| Content::ApnsAlert {
            body: plain::message_alert(note),
            collapse_id: note.id.as_ref().map(|id| id.chars().take(64).collect()),
        }),
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
pub fn for_test(kind: TestKind, provider: Provider) -> Content {
    match (provider, kind) {
        (Provider::Fcm, _) => Content::FcmData { data: BTreeMap::from([("type".to_string(), "test".to_string())]) },
        (Provider::Apns, TestKind::Voip) => Content::ApnsVoip { body: br#"{"aps":{},"type":"test","test":true}"#.to_vec() },
        (Provider::Apns, TestKind::Alert) => Content::ApnsAlert {
            body: br#"{"aps":{"alert":{"title":"pushrelay","body":"Test push"}},"type":"test","test":true}"#.to_vec(),
            collapse_id: None,
        },
    }
}

pub fn for_cancel(call_id: &str, push_id: &str, reg: &Registration) -> Option<Content> {
    match reg.channel.provider() {
        Provider::Fcm => Some(Content::FcmData { data: plain::cancel_data(call_id, push_id) }),
        Provider::Apns => reg.msg().map(|_| Content::ApnsAlert {
            body: plain::cancel_alert(call_id, push_id),
            collapse_id: Some(call_id.chars().take(64).collect()),
        }),
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
        let Content::ApnsVoip { body } = for_call(&event(), &reg(Channel::ApnsDev, key.clone())) else { panic!() };
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["aps"], serde_json::json!({}));
        let plain = crate::jwe::decrypt(v["data"].as_str().unwrap(), key.as_bytes()).unwrap();
        assert_eq!(plain, v2::build(&event()));
    }

    #[test]
    fn uds_fcm_devices_get_the_jwe_as_data_body() {
        let key = PushKey::from_bytes([3; 32]);
        let Content::FcmData { data } = for_call(&event(), &reg(Channel::Fcm, key.clone())) else { panic!() };
        assert_eq!(data.keys().collect::<Vec<_>>(), vec!["body"]);
        assert!(crate::jwe::decrypt(&data["body"], key.as_bytes()).is_ok());
    }

}
