//! The plain call payloads of devices that carry no key (Spark, Acrobits,
//! SIP): pushrelay's choice of shape, documented in the README.
//!
//! - Spark/Webex (protocol §6): `{"aps":{},"webex":{"callId","actorId","personId","event":"incoming_call"}}`.
//! - Acrobits / SIP (RFC 8599, Kazoo) on APNs: `{"aps":{},"call":{…}}`;
//!   on FCM: data `{"type":"incomingcall", …}` (all strings).
//! - MizuTech X-MPUSH devices (seeds/001, protocol §8.1): the Mizu payload.

use crate::domain::{CallEvent, MessageNote};
use serde_json::json;
use std::collections::BTreeMap;

/// The call fields every plain payload carries.
fn call_fields(event: &CallEvent) -> serde_json::Value {
    json!({
        "type": "incomingcall",
        "call_id": event.push_id.as_str(),
        "pushid": event.push_id.as_str(),
        "displayname": event.display_name,
        "displaynumber": event.display_number,
        "ringexpiretime": event.ring.ends_at_ms.to_string(),
    })
}

pub fn webex_voip(event: &CallEvent) -> Vec<u8> {
    let mut webex = json!({
        "callId": event.push_id.as_str(),
        "personId": event.user.as_str(),
        "event": "incoming_call",
    });
    if let Some(actor) = &event.actor {
        webex["actorId"] = json!(actor);
    }
    serde_json::to_vec(&json!({ "aps": {}, "webex": webex })).expect("json")
}

pub fn apns_voip(event: &CallEvent) -> Vec<u8> {
    serde_json::to_vec(&json!({ "aps": {}, "call": call_fields(event) })).expect("json")
}

pub fn fcm_data(event: &CallEvent) -> BTreeMap<String, String> {
    string_map(call_fields(event))
}

/// A JSON object as FCM data: every value a string.
fn string_map(v: serde_json::Value) -> BTreeMap<String, String> {
    let serde_json::Value::Object(m) = v else { return BTreeMap::new() };
    m.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect()
}

/// An incoming call as an APNs alert, for devices that registered only a
/// regular (`remote`) token: a visible notification with the call fields,
/// replaced by the cancel alert (same collapse id) when the call ends.
pub fn call_alert(event: &CallEvent) -> Vec<u8> {
    let from = if event.display_name.is_empty() { event.display_number.as_str() } else { event.display_name.as_str() };
    let body = if from.is_empty() { "Incoming call".to_string() } else { format!("Incoming call from {from}") };
    serde_json::to_vec(&json!({
        "aps": { "alert": { "title": "Incoming call", "body": body }, "sound": "default" },
        "call": call_fields(event)
    }))
    .expect("json")
}

/// Who is calling, as the MizuTech payload names it: (from, from user name).
fn mizu_from(event: &CallEvent) -> (&str, &str) {
    let from = if event.display_number.is_empty() { event.display_name.as_str() } else { event.display_number.as_str() };
    let name = if event.display_name.is_empty() { from } else { event.display_name.as_str() };
    (from, name)
}

/// The MizuTech `data` fields (seeds/001): `ntype` 0 is a call.
fn mizu_fields(event: &CallEvent) -> serde_json::Value {
    let (from, name) = mizu_from(event);
    json!({
        "ntype": 0,
        "nfromusername": name,
        "nfrom": event.display_number,
        "nmsg": format!("Incoming call from {from}"),
        "ncallid": event.push_id.as_str(),
        "ntousr": event.user.as_str()
    })
}

/// The MizuTech payload (body only; its `headers` go in HTTP headers).
pub fn mizu(event: &CallEvent) -> Vec<u8> {
    let (from, _) = mizu_from(event);
    serde_json::to_vec(&json!({
        "aps": {
            "alert": { "title": format!("Incoming call from {from}"), "body": format!("Incoming VoIP call from {from}") },
            "content-available": 1,
            "sound": "default",
            "badge": 1
        },
        "data": mizu_fields(event)
    }))
    .expect("json")
}

/// The MizuTech fields as an FCM data message (string values, as FCM
/// data must be), for X-MPUSH devices whose token is an FCM token.
pub fn mizu_data(event: &CallEvent) -> BTreeMap<String, String> {
    string_map(mizu_fields(event))
}

/// A call-ended alert for a message token (never VoIP: iOS 13+ kills an
/// app that gets a VoIP push without reporting a call).
pub fn cancel_alert(call_id: &str, push_id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "aps": { "alert": { "title": "Call ended", "body": "Call ended" }, "sound": "default" },
        "type": "cancel",
        "call_id": call_id,
        "pushid": push_id
    }))
    .expect("json")
}

/// The FCM data message of a cancel.
pub fn cancel_data(call_id: &str, push_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("type".to_string(), "cancel".to_string()),
        ("call_id".to_string(), call_id.to_string()),
        ("pushid".to_string(), push_id.to_string()),
    ])
}

/// Title of a message alert (seeds/000).
pub const MESSAGE_TITLE: &str = "New Message";

/// seeds/000's message alert: "New Message", the sender's address as body.
pub fn message_alert(note: &MessageNote) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "aps": { "alert": { "title": MESSAGE_TITLE, "body": note.from.as_str() }, "sound": "default" },
        "type": "message"
    }))
    .expect("json")
}

/// The FCM data message of a message alert.
pub fn message_data(note: &MessageNote) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("type".to_string(), "message".to_string()),
        ("title".to_string(), MESSAGE_TITLE.to_string()),
        ("body".to_string(), note.from.as_str().to_string()),
    ])
}
